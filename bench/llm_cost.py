"""LLM cost at the paper's scale, from measurements: the prompt stream a run sends, replayed through
a model of vLLM's prefix cache, and the GPU-hours that follow.

1. **The prompt stream.** From a storage root where the LLM stages have run (default: the bundled
   sample, run here first with ``lewin run`` if the root has no ledger), the prompts the stages
   send are rebuilt with the stages' own functions (label inputs, per-user inputs with their notes,
   per-record inputs, judge inputs from synth_*), in the order the stages send them
   (``jobs.llm.SEND_ORDER``: writers, then judges, a user's prompts back to back), rendered through
   the target model's chat template and tokenizer (the bundled SmolLM2 GGUF's by default, any
   Hugging Face tokenizer with ``--tokenizer``), with each reply's measured length from the ledger.
2. **The cache.** The sample has a handful of users; the paper has 429,711, far more than a KV
   cache holds. So the stream is replayed for ``--sim-users`` users, each a copy of a real one
   made unique right where its prompts stop sharing tokens with other users' (so copies share
   exactly what different users share: the system message, the label instructions), through
   ``lewin.udfs.prefix_cache`` with ``--kv-tokens`` of cache, twice: in the stage's order, and in
   the order it sent before (artifact by artifact, each artifact's prompts in ledger-key order).
3. **Sizing.** Measured tokens per prompt and per reply, per-user prompts scaled to the history
   budget, counts scaled to the paper's, prefill of cached tokens saved, at a stated throughput.

    python bench/llm_cost.py [--root lewin-data] [--sim-users 3000] [--kv-tokens 2400000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

from pyspark.sql import functions as F

PAPER_USERS = 429_711
PAPER_RECORDS = 5_540_000  # kept after all filtering (the label calls are at least this many)
PAPER_SCENARIOS = 2_054_579
PAPER_QA = 2_677_248
# Throughput assumed (no GPU here): Llama-3.3-70B-Instruct FP8 on one 8xH100 node, vLLM TP 8,
# offline batch: prompt tokens computed per second, tokens generated per second (the node).
PREFILL_TPS = 30_000
DECODE_TPS = 3_000
NODE_GPUS = 8
# KV cache of that node: 8 x 80 GB x 0.9 - ~70 GB of FP8 weights = ~500 GB; Llama-3.3-70B keeps
# 80 layers x 8 KV heads x 128 dims x 2 (K, V) x 1 byte = 160 KiB per token -> ~3.0 M tokens, of
# which ~0.6 M hold the running batch (256 sequences of ~2.5 K tokens): ~2.4 M tokens cached.
KV_TOKENS = 2_400_000

PER_USER = ("persona", "profile", "stories", "writing_style")
# The reply a capable model writes to each prompt, in tokens (the lengths the prompts ask for:
# a persona under 100 words, a profile of 100-400, a story paragraph each, three QA items, a label
# reason under 20 words, a judge's scores and reasons under 15 words). The CPU model writes far
# less, so its measured replies would understate the cost; both are printed.
TARGET_REPLY_TOKENS = {"quality": 30, "user_notes": 200, "persona": 130, "profile": 530, "stories": 400,
                       "writing_style": 100, "scenario": 250, "social_qa": 350, "judge": 60}


def ensure_run(root: Path, overrides: list[str]) -> None:
    """A storage root with the LLM stages done: run the Quickstart's `lewin run` there if not."""
    if (root / "llm_ledger").exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    sets = [x for o in overrides for x in ("--set", o)]
    print(f"running `lewin {' '.join(sets)} run` in {root} (the bundled sample) ...", flush=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lewin.jobs.cli", *sets, "run"], cwd=root.parent, check=True,
                   env=dict(os.environ, LEWIN_CONFIG=""))
    print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)


def tokenizer(name: str | None):
    """(messages -> token ids through the target model's chat template, text -> token count)."""
    if name:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name)
        return (lambda messages: list(tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)),
                lambda text: len(tok(text, add_special_tokens=False)["input_ids"]))
    import jinja2
    import llama_cpp

    from lewin.udfs.llm_backends import default_gguf

    vocab = llama_cpp.Llama(model_path=default_gguf(), vocab_only=True, verbose=False)
    template = jinja2.Environment().from_string(vocab.metadata["tokenizer.chat_template"])
    return (lambda messages: vocab.tokenize(template.render(messages=list(messages), add_generation_prompt=True).encode(),
                                            add_bos=False, special=True),
            lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=False)))


def prompt_stream(root: Path, overrides: list[str]) -> tuple[list[dict], dict]:
    """Every prompt the run sends (labels, writers, judges) with its ledger reply length, in the
    stage's order; and the run's measured facts (chars per record, notes and stories per user)."""
    from lewin.jobs.engine import get_engine
    from lewin.jobs.llm import (SEND_ORDER, LlmResult, Send, experience_records, judge_send, prompt_options,
                                record_inputs, send_frame, timeline_records, user_inputs)
    from lewin.jobs.stage import RunContext
    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import load_config

    cfg = load_config(None, [f"storage.root={root}", *overrides])
    engine = get_engine(cfg.engine)
    store = TableStore(engine, cfg.storage)
    ctx = RunContext(store, cfg, "llm", "bench-llm-cost")
    try:
        scrubbed = store.read("silver_records_scrubbed").select("record_id", "source", "user_id", "event_ts", "text")
        records = ctx.materialize("b_records", timeline_records(store, cfg))
        per_user = ctx.materialize("b_user", user_inputs(ctx, records, LlmResult("bench")))
        per_record = ctx.materialize("b_record", record_inputs(experience_records(records, cfg)))
        arts = list(cfg.llm.artifacts)
        inputs = {a: per_user if a in PER_USER else per_record for a in arts}
        phases = {
            "label": [Send("quality", record_inputs(scrubbed))],
            "write": [Send(a, inputs[a]) for a in arts],
            "judge": [judge_send(ctx, a, inputs[a])[1] for a in arts],
        }
        ledger = store.read("llm_ledger").select("ledger_key", "status", "tokens_out")
        stream = []
        for phase, sends in phases.items():
            frame = send_frame(cfg, sends).join(ledger, "ledger_key", "left")
            rows = frame.orderBy(*SEND_ORDER).select("artifact", "source", "user_id", "_group", "input_id", "ledger_key",
                                                      "context", "status", "tokens_out").collect()
            stream += [dict(r.asDict(), phase=phase) for r in rows]
        facts = {
            "chars_per_record": store.read("users").select(F.explode("records").alias("r"))
            .agg(F.avg(F.least(F.length("r.text"), F.lit(cfg.llm.record_max_chars)))).first()[0],
            "notes": {r["artifact"]: r["n"] for r in store.read("llm_ledger").where(F.col("artifact") == "user_notes")
                      .groupBy("artifact").agg(F.count(F.lit(1)).alias("n")).collect()},
            "notes_tokens": store.read("llm_ledger").where(F.col("artifact") == "user_notes")
            .agg(F.avg("tokens_in"), F.avg("tokens_out")).first(),
            "cfg": cfg,
        }
    finally:
        ctx.drop_scratch()
    opts = {a: prompt_options(cfg, a) for a in {r["artifact"] for r in stream}}
    from lewin.udfs.llm_prompts import render, source_block

    for r in stream:
        ctx_json = json.loads(r["context"])
        r["messages"] = render(r["artifact"], ctx_json, opts[r["artifact"]])
        src = ctx_json["source"] if r["artifact"].startswith("judge_") else ctx_json
        r["source_text"] = source_block(src, opts[r["artifact"]])
    return stream, facts


def distilled_labels(root: Path) -> tuple[float, dict]:
    """label_calls_ratio (records the LLM labelled / records labelled) and the newest label
    model's held-out agreement, from a root labelled with llm.labels=distilled (delta-rs)."""
    from deltalake import DeltaTable

    labels = DeltaTable(str(root / "record_labels")).to_pyarrow_table(columns=["labeller"]).column("labeller").to_pylist()
    models = DeltaTable(str(root / "label_models")).to_pyarrow_table().to_pylist()
    model = max(models, key=lambda m: m["created_at"])
    figures = json.loads(model["holdout_metrics"])["all"]
    ratio = labels.count("llm") / len(labels)
    return ratio, {"label_records": len(labels), "label_holdout": figures["holdout"],
                   "label_agreement_classifier": f"{figures['classifier']['keep_accuracy']:.3f}",
                   "label_agreement": f"{figures['routed']['keep_accuracy']:.3f}", "label_calls_ratio": f"{ratio:.4f}"}


def lcp(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def split_points(stream: list[dict]) -> None:
    """Each prompt's ``split``: the longest token prefix it shares with any other user's prompt
    of the same artifact (system message, shared instructions): where a copy becomes unique."""
    by_art = defaultdict(list)
    for r in stream:
        by_art[r["artifact"]].append(r)
    for rows in by_art.values():
        for r in rows:
            others = [o["tokens"] for o in rows if (o["source"], o["user_id"]) != (r["source"], r["user_id"])]
            r["split"] = max((lcp(r["tokens"], o) for o in others), default=0)
    # prompts of one group share one split, so a copy's prompts still share the group's prefix
    by_group = defaultdict(list)
    for r in stream:
        by_group[(r["phase"] == "label", r["source"], r["user_id"], r["_group"])].append(r)
    for rows in by_group.values():
        s = min(r["split"] for r in rows)
        for r in rows:
            r["split"] = s


def replay(stream: list[dict], order: str, sim_users: int, kv_tokens: int, wave_users: int | None = None):
    """The stream for ``sim_users`` copies of its users, in the stage's order (``stage``: labels
    user by user, then waves of ``wave_users`` users, writers then judges, user by user) or the
    previous one (``artifact``: artifact by artifact, ledger-key order), through the cache model."""
    from lewin.udfs.prefix_cache import PrefixCache

    # the users the stage synthesises for (each with its own label prompts)
    users = sorted({(r["source"], r["user_id"]) for r in stream if r["artifact"] in PER_USER})
    copies = [(k, users[k % len(users)]) for k in range(sim_users)]
    by_user = defaultdict(list)
    for r in stream:
        by_user[(r["source"], r["user_id"])].append(r)
    cache = PrefixCache(kv_tokens)

    def copy_of(r, k):
        t = r["tokens"]
        return t[:r["split"]] + [-(k + 1)] + t[r["split"]:]

    if order == "stage":
        # labels for every user, then wave by wave (llm.wave_users): the wave's writer prompts, then
        # its judges; users in key order (a copy's key sorts like a fresh user's), a user's prompts as sent
        ordered = sorted(copies, key=lambda c: _stable(f"user{c[0]}"))
        waves = [ordered] if wave_users is None else [ordered[i:i + wave_users] for i in range(0, len(ordered), wave_users)]
        for wave_phases, groups in ((["label"], [ordered]), (["write", "judge"], waves)):
            for wave in groups:
                for phase in wave_phases:
                    for k, u in wave:
                        for r in by_user[u]:
                            if r["phase"] == phase:
                                cache.request(copy_of(r, k), r["tokens_out"] or 0, r["artifact"])
    else:
        arts = []
        for r in stream:
            if r["artifact"] not in arts:
                arts.append(r["artifact"])
        writers = [a for a in arts if not a.startswith("judge_")]
        for phase_arts in ([a for a in arts if a == "quality"],
                           *[[a, f"judge_{a}"] for a in writers if a != "quality"]):
            for a in phase_arts:
                todo = [(k, r) for k, u in copies for r in by_user[u] if r["artifact"] == a]
                todo.sort(key=lambda x: _stable(f"{x[1]['ledger_key']}:{x[0]}"))
                for k, r in todo:
                    cache.request(copy_of(r, k), r["tokens_out"] or 0, a)
    return cache


def _stable(s: str) -> int:
    return zlib.crc32(s.encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("bench/out/llm_cost/lewin-data"))
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config overrides of the run (default: the Quickstart's demo profile)")
    ap.add_argument("--tokenizer", help="a Hugging Face tokenizer (name or path) instead of the bundled SmolLM2 GGUF's")
    ap.add_argument("--sim-users", type=int, default=10_000)
    ap.add_argument("--kv-tokens", type=int, default=KV_TOKENS)
    ap.add_argument("--label-root", type=Path, default=None,
                    help="a storage root labelled with llm.labels=distilled (bench/label_distill.py's): its "
                         "label_calls_ratio and held-out agreement replace llm labelling's (1 call per record)")
    args = ap.parse_args()
    overrides = args.overrides or ["llm.profile=demo"]
    root = args.root.resolve()
    ensure_run(root, overrides)

    t = time.perf_counter()
    stream, facts = prompt_stream(root, overrides)
    tok, count = tokenizer(args.tokenizer)
    for r in stream:
        r["tokens"] = tok(r["messages"])
        r["source_tokens"] = count(r["source_text"])
    split_points(stream)
    users = len({(r["source"], r["user_id"]) for r in stream if r["artifact"] in PER_USER})
    print(f"prompt stream: {len(stream)} prompts of {users} users with per-user artifacts, "
          f"{len({(r['source'], r['user_id']) for r in stream})} users in all ({time.perf_counter() - t:.0f} s)")

    results = {}
    for order in ("stage", "artifact"):
        t = time.perf_counter()
        results[order] = replay(stream, order, args.sim_users, args.kv_tokens, facts["cfg"].llm.wave_users)
        print(f"replayed {args.sim_users} users in {order} order: {time.perf_counter() - t:.0f} s")
    cache = results["stage"]
    print(f"\nprefix cache ({args.kv_tokens:,} KV tokens, {args.sim_users} users, stage order; before: artifact order)")
    print(f"{'artifact':<22}{'prompts':>9}{'prompt tok':>13}{'cached':>12}{'computed':>12}{'output':>10}{'hit':>7}{'before':>8}")
    for a, st in cache.stats.items():
        before = results["artifact"].stats[a].hit_rate
        print(f"{a:<22}{st.prompts:>9,}{st.prompt_tokens:>13,}{st.cached_tokens:>12,}{st.computed_tokens:>12,}"
              f"{st.output_tokens:>10,}{st.hit_rate:>7.2f}{before:>8.2f}")
    per_user_tags = [*PER_USER, *(f"judge_{a}" for a in PER_USER)]
    hit_per_user = cache.total(per_user_tags).hit_rate
    hit_total = cache.total().hit_rate
    before_per_user = results["artifact"].total(per_user_tags).hit_rate
    before_total = results["artifact"].total().hit_rate

    # --- sizing ------------------------------------------------------------------------------
    cfg = facts["cfg"]
    paper = __import__("lewin.schemas.config", fromlist=["LlmConfig"]).LlmConfig()  # the paper's defaults
    measured = defaultdict(lambda: {"n": 0, "tok": 0, "src_chars": 0, "src_tok": 0, "out": 0, "out_n": 0})
    for r in stream:
        m = measured[r["artifact"]]
        m["n"] += 1
        m["tok"] += len(r["tokens"])
        m["src_chars"] += len(r["source_text"])
        m["src_tok"] += r["source_tokens"]
        if r["status"] == "ok" and r["tokens_out"] is not None:
            m["out"] += r["tokens_out"]
            m["out_n"] += 1
    chars_per_token = sum(m["src_chars"] for m in measured.values()) / max(1, sum(m["src_tok"] for m in measured.values()))
    src_tokens = {a: m["src_tok"] / m["n"] for a, m in measured.items()}
    stories_per_user = measured["judge_stories"]["n"] / max(1, measured["stories"]["n"])
    # per-user prompts at the paper's history budget; per-record prompts as measured
    hist_tokens = paper.history_max_chars / chars_per_token
    per_user_records = PAPER_RECORDS / PAPER_USERS
    user_chars = per_user_records * facts["chars_per_record"]
    older = max(0.0, user_chars - paper.history_max_chars / 2)
    notes_per_user = math.ceil(older / (paper.history_max_chars - paper.record_max_chars)) if user_chars > paper.history_max_chars else 0
    label_ratio, label_figures = 1.0, None
    if args.label_root is not None:
        label_ratio, label_figures = distilled_labels(args.label_root.resolve())
    counts = {"quality": PAPER_RECORDS * label_ratio, "scenario": PAPER_SCENARIOS, "social_qa": PAPER_SCENARIOS,
              "judge_scenario": PAPER_SCENARIOS, "judge_social_qa": PAPER_QA,
              "judge_stories": PAPER_USERS * stories_per_user}
    for a in PER_USER:
        counts[a] = counts[f"judge_{a}"] = PAPER_USERS
    rows = []
    if notes_per_user:
        nt = facts["notes_tokens"]
        notes_in = (paper.history_max_chars - paper.record_max_chars) / chars_per_token + 150  # chunk + instructions
        notes_out = nt[1] or 0
        rows.append(("user_notes", PAPER_USERS * notes_per_user, notes_in, notes_out, 0.0))
    for a, m in measured.items():
        if a not in counts:
            continue
        per_prompt = m["tok"] / m["n"]
        if a in PER_USER or a.removeprefix("judge_") in PER_USER:
            per_prompt = per_prompt - src_tokens[a] + hist_tokens
        out = m["out"] / max(1, m["out_n"])
        rows.append((a, counts[a], per_prompt, out, cache.stats[a].hit_rate))
    budgets = paper.reply_budgets
    target = {**TARGET_REPLY_TOKENS, **{a: TARGET_REPLY_TOKENS["judge"] for a, *_ in rows if a.startswith("judge_")}}
    print(f"\nsizing at the paper's scale ({PAPER_USERS:,} users, {PAPER_RECORDS:,} records, {PAPER_SCENARIOS:,} scenarios, "
          f"{PAPER_QA:,} QA); GPU-hours = {NODE_GPUS} x (computed prompt tokens / {PREFILL_TPS:,} + output tokens / "
          f"{DECODE_TPS:,}) / 3600")
    print(f"{'prompt':<22}{'prompts':>11}{'tok in':>8}{'hit':>6}{'in (M)':>9}{'computed (M)':>13}"
          f"{'out':>6}{'target':>7}{'out (M)':>9}{'GPU-h':>8}{'measured':>9}{'@budget':>9}")

    def gpu_hours(computed_tokens: float, out_tokens: float) -> float:
        return NODE_GPUS * (computed_tokens / PREFILL_TPS + out_tokens / DECODE_TPS) / 3600

    tot = defaultdict(float)
    for a, n, tin, tout, hit in rows:
        din, comp = n * tin, n * tin * (1 - hit)
        tgt = target["judge" if a.startswith("judge_") else a]
        cells = {"in": din, "comp": comp, "out": n * tgt, "gh": gpu_hours(comp, n * tgt),
                 "ghm": gpu_hours(comp, n * tout), "ghb": gpu_hours(comp, n * budgets["judge" if a.startswith("judge_") else a])}
        for k, v in cells.items():
            tot[k] += v
        print(f"{a:<22}{n:>11,.0f}{tin:>8.0f}{hit:>6.2f}{din / 1e6:>9,.0f}{comp / 1e6:>13,.0f}{tout:>6.0f}{tgt:>7}"
              f"{cells['out'] / 1e6:>9,.0f}{cells['gh']:>8,.0f}{cells['ghm']:>9,.0f}{cells['ghb']:>9,.0f}")
    print(f"{'total':<22}{'':>11}{'':>8}{'':>6}{tot['in'] / 1e6:>9,.0f}{tot['comp'] / 1e6:>13,.0f}{'':>6}{'':>7}"
          f"{tot['out'] / 1e6:>9,.0f}{tot['gh']:>8,.0f}{tot['ghm']:>9,.0f}{tot['ghb']:>9,.0f}")
    print(f"(measured: prompt tokens through the chat template, reply tokens from the ledger ({cfg.llm.engine.model}), "
          f"{chars_per_token:.2f} source chars per token, {facts['chars_per_record']:.0f} chars per record, "
          f"{per_user_records:.1f} records per user -> {notes_per_user} notes prompts per user, {stories_per_user:.1f} "
          f"stories judged per user (llm.max_stories={cfg.llm.max_stories}); per-user prompts "
          f"carry {hist_tokens:.0f} history tokens (the {paper.history_max_chars:,}-char budget); "
          f"'out': the CPU model's mean reply, 'target': the reply the prompt asks for of a capable model (GPU-h), "
          f"'measured': GPU-h with the CPU model's replies, '@budget': every reply as long as its max_tokens; "
          f"label calls ratio {label_ratio:.3f})")

    if label_figures is not None:
        for k, v in label_figures.items():
            print(f"{k}: {v}")
    print(f"prefix_cache_hit_per_user_before: {before_per_user:.3f}")
    print(f"prefix_cache_hit_total_before: {before_total:.3f}")
    print(f"prefix_cache_hit_per_user: {hit_per_user:.3f}")
    print(f"prefix_cache_hit_total: {hit_total:.3f}")
    print(f"gpu_hours_paper_scale_at_budget: {tot['ghb']:.0f}")
    print(f"gpu_hours_paper_scale_cpu_model_replies: {tot['ghm']:.0f}")
    print(f"gpu_hours_paper_scale: {tot['gh']:.0f}")  # at the reply lengths a capable model writes


if __name__ == "__main__":
    main()
