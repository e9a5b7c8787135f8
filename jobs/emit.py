"""Job: gold artifacts + user timelines -> training shards, MCQ evaluation sets, manifest.

gold_* + users (+ the kept Reddit comments with their parent ids, the item catalogue ``silver_items``)
  -> six task builders (lewin.udfs.training_tasks) -> samples with a stable sample_id
  -> split by user (seeded hash) -> balanced per (task, source) -> ``shard_samples`` (Delta)
  -> held-out samples -> MCQ items (distractors through the LLM ledger) -> ``mcq_items`` (Delta)
  -> files: shards/{train,test}/{parquet,jsonl}/part-NNNNN.*, mcq/<task>.jsonl, dataset_info.json
     (LlamaFactory), README.md (the Hugging Face dataset card, lewin.udfs.dataset_card), manifest.json
     (last: its presence says every file it lists is there).

Everything is built from scrubbed tables only. Files are written to a fresh folder and swapped in
at the end, so a crash leaves the previous shards intact; the same input and seed give
byte-identical files (rows ordered by sample_id, fixed schemas, no timestamps in the files).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
import shutil
import statistics
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from lewin.jobs import llm as llm_job
from lewin.jobs.users import kept_records
from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.jobs.tables import TableStore
from lewin.schemas import shards as S
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig
from lewin.udfs import dataset_card, fs, mcq
from lewin.udfs import training_tasks as tasks

log = logging.getLogger(__name__)

_DISTRACTOR_INPUT = StructType([StructField(n, StringType()) for n in ("input_id", "user_id", "source", "context")])
_ARROW_SHARD = pa.schema([
    ("sample_id", pa.string()), ("task", pa.string()), ("source", pa.string()), ("user_id", pa.string()),
    ("split", pa.string()), ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("artifact_ids", pa.list_(pa.string())), ("prompt_version", pa.string()),
])


@dataclass
class EmitResult:
    run_id: str
    candidates: int = 0
    kept: int = 0
    counts: dict = field(default_factory=dict)  # split -> task -> source -> n
    mcq: dict = field(default_factory=dict)  # task -> questions
    mcq_dropped: int = 0
    mcq_dropped_by_task: dict = field(default_factory=dict)  # task -> questions without enough distinct options
    distractors_out_of_budget: dict = field(default_factory=dict)  # task -> engine replies outside the word budget
    distractor_plan: list = field(default_factory=list)  # per slot: engine, model, round, seed
    distractor_calls: int = 0
    out_dir: str | None = None

    def funnel(self) -> Funnel:
        # in = candidate samples; kept = in the shards; rejected = left out by the per-task balance
        return Funnel(stage="emit", source="all", records_in=self.candidates, kept=self.kept,
                      rejected=self.candidates - self.kept,
                      detail={"counts": self.counts, "mcq": self.mcq, "mcq_dropped": self.mcq_dropped,
                              "mcq_dropped_by_task": self.mcq_dropped_by_task,
                              "distractors_out_of_budget": self.distractors_out_of_budget,
                              "distractor_plan": self.distractor_plan,
                              "distractor_calls": self.distractor_calls, "out_dir": str(self.out_dir)})


def out_dir(cfg: LewinConfig) -> str:
    """Where the shard files go: ``emit.out_dir``, else ``<storage.root>/shards`` (any location
    ``lewin.udfs.fs`` writes)."""
    return fs.location(cfg.emit.out_dir) if cfg.emit.out_dir else fs.join(cfg.storage.root_location, "shards")


def _gold(store: TableStore, artifact: str) -> DataFrame:
    name = f"gold_{artifact}"
    if not store.exists(name):
        return store.spark.createDataFrame([], T.JUDGED)
    return store.read(name)


def task_rows(store: TableStore, cfg: LewinConfig) -> DataFrame:
    """Every candidate sample of the enabled tasks (TASK_COLUMNS), before split and balance."""
    ec = cfg.emit
    users = store.read("users")
    items = store.read("silver_items").select("item_id", "title") if store.exists("silver_items") else None
    persona, profile = _gold(store, "persona"), _gold(store, "profile")
    parts = []
    for task in ec.tasks:
        if task == "profile_generation":
            parts.append(tasks.profile_generation(persona, profile))
        elif task == "scenario_generation":
            parts.append(tasks.scenario_generation(_gold(store, "scenario")))
        elif task == "social_qa":
            parts.append(tasks.social_qa(_gold(store, "social_qa"), persona, profile))
        elif task == "writing_imitation":
            parts.append(tasks.writing_imitation(users, _gold(store, "writing_style"), items, ec.seed, ec.history_records,
                                                 ec.history_record_chars))
        elif task == "personalized_commenting" and store.exists("record_labels"):
            # which parent a comment answers is carried into silver (parent_id); texts are the scrubbed ones
            scrubbed = kept_records(store)
            parents = scrubbed.where(F.col("parent_id").isNotNull()).select("record_id", "parent_id")
            parts.append(tasks.personalized_commenting(scrubbed, parents, ec.history_records, ec.history_record_chars))
        elif task == "item_selection":
            parts.append(tasks.item_selection(users, persona, items, ec.seed, ec.item_history, ec.item_candidates))
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def cell_caps(counts: dict[tuple[str, str], int], cfg: LewinConfig) -> dict[tuple[str, str], int]:
    """Per (task, source) caps: each task gets max_per_task x weight (default: the median task's
    candidate count), split evenly over its sources by water-filling."""
    totals: dict[str, dict[str, int]] = defaultdict(dict)
    for (task, source), n in counts.items():
        if n > 0:
            totals[task][source] = n
    if not totals:
        return {}
    base = cfg.emit.max_per_task or int(statistics.median_low([sum(v.values()) for v in totals.values()]))
    caps = {}
    for task, by_source in totals.items():
        budget = max(1, int(round(base * cfg.emit.task_weights.get(task, 1.0))))
        left = dict(by_source)
        while left:
            share = budget // len(left)
            small = {s: n for s, n in left.items() if n <= share}
            if not small:  # every remaining source has more than its share: split the rest evenly
                for i, s in enumerate(sorted(left)):
                    caps[(task, s)] = share + (1 if i < budget - share * len(left) else 0)
                break
            for s, n in small.items():
                caps[(task, s)] = n
                budget -= n
                del left[s]
    return caps


def _write_if_changed(ctx: RunContext, table: str, rows: DataFrame, schema: StructType, key: str) -> bool:
    """Replace ``table`` with ``rows`` unless they hold the same content (a rerun writes nothing)."""
    store = ctx.store
    new = ctx.materialize(f"new_{table}", rows.select(*[F.col(f.name).cast(f.dataType) for f in schema.fields]))
    fp = lambda df: df.select(key, F.sha2(F.to_json(F.struct(*[c for c in df.columns])), 256).alias("_fp"))  # noqa: E731
    changed = not store.exists(table)
    if not changed:
        cur = store.read(table)
        a, b = fp(new), fp(cur)
        changed = bool(a.exceptAll(b).limit(1).count() or b.exceptAll(a).limit(1).count())
    if changed:
        store.overwrite(table, new)
    return changed


# --- MCQ ----------------------------------------------------------------------------------------------
def slot_config(cfg: LewinConfig, engine, seed: int, max_tokens: int | None = None) -> LewinConfig:
    """``cfg`` with ``engine`` as the writer, sampling at ``seed`` and (when given) the distractor
    reply budget: what one distractor slot's calls run with (its ledger rows are its own: the
    ledger key holds the model and the sampling)."""
    llm = cfg.llm.model_copy(update={
        "engine": engine, "sampling": cfg.llm.sampling.model_copy(update={"seed": seed}),
        "max_tokens": {**cfg.llm.max_tokens, **({"distractor": max_tokens} if max_tokens else {})}})
    return cfg.model_copy(update={"llm": llm})


def distractor_budgets(cfg: LewinConfig) -> dict[str, tuple[int, int]]:
    return {**mcq.word_budgets(cfg.llm.profile_min_words, cfg.llm.profile_max_words), **cfg.emit.distractor_word_budgets}


def distractor_slots(cfg: LewinConfig) -> list[dict]:
    """One entry per distractor slot (mcq_options - 1): its engine (``emit.distractor_engines``,
    else ``llm.engine``), the round (> 0: the engine list started over) and the seed."""
    engines = cfg.emit.distractor_engines or [cfg.llm.engine]
    plan = mcq.slot_plan(len(engines), cfg.emit.mcq_options - 1, cfg.llm.sampling.seed)
    repeats = len(engines) < cfg.emit.mcq_options - 1
    return [{"slot": k, "engine_index": e, "kind": engines[e].kind, "model": engines[e].model, "round": r, "seed": seed,
             "origin": f"engine:{engines[e].model}" + (f"#{r}" if repeats else ""), "engine": engines[e]}
            for k, (e, r, seed) in enumerate(plan)]


def _distractor_answers(ctx: RunContext, questions: list[dict], result: EmitResult) -> dict[str, list[tuple[str, str]]]:
    """Per question, the in-budget distractors of every slot, in slot order: (text, origin). Each
    slot's prompts go through the LLM ledger with the slot's engine and seed (resumable; a rerun
    sends nothing)."""
    from lewin.schemas.llm import _text_tokens

    cfg, store = ctx.cfg, ctx.store
    budgets = distractor_budgets(cfg)
    tasks_here = sorted({q["task"] for q in questions})
    # one reply budget for every task of a slot: the longest task's words, as tokens
    max_words = max(budgets.get(t, (1, 100))[1] for t in tasks_here)
    slots = distractor_slots(cfg)
    result.distractor_plan = [{k: v for k, v in s.items() if k != "engine"} for s in slots]
    found: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    out_of_budget: Counter = Counter()
    by_id = {q["sample_id"]: q for q in questions}
    for s in slots:
        rows = []
        for q in questions:
            budget = budgets.get(q["task"], (1, 100))
            rows.append((f"{q['sample_id']}#{s['slot']}", q["user_id"], q["source"],
                         json.dumps({"system": q["messages"][0]["content"], "request": q["public_prompt"],
                                     "length": mcq.length_phrase(budget), "task": q["task"],
                                     "reply_max_tokens": _text_tokens(words=budget[1])})))
        slot_ctx = copy.copy(ctx)  # the same run, scratch tables and ledger; the slot's engine and seed
        slot_ctx.cfg = slot_config(cfg, s["engine"], s["seed"], _text_tokens(words=max_words))
        inputs = ctx.materialize("distractor_inputs", store.spark.createDataFrame(rows, _DISTRACTOR_INPUT))
        sent, replies = llm_job.generate(slot_ctx, "distractor", inputs)
        result.distractor_calls += sent.sent
        for r in replies.collect():
            sid, _ = r["input_id"].rsplit("#", 1)
            text = json.loads(r["output"])["text"]
            task = by_id[sid]["task"]
            if not mcq.in_budget(text, budgets.get(task)):
                out_of_budget[task] += 1
                continue
            found[sid].append((s["slot"], text, s["origin"]))
    result.distractors_out_of_budget = dict(sorted(out_of_budget.items()))
    return {sid: [(t, o) for _, t, o in sorted(v)] for sid, v in found.items()}


def build_mcq(ctx: RunContext, result: EmitResult) -> list[dict]:
    store, cfg = ctx.store, ctx.cfg
    ec = cfg.emit
    cap = ec.mcq_max_per_task
    samples = store.read("shard_samples")
    test = samples.where(F.col("split") == "test")
    rank = F.row_number().over(Window.partitionBy("task").orderBy(F.sha2(F.concat_ws(":", F.lit(ec.seed), "sample_id"), 256)))
    picked = [r.asDict(recursive=True) for r in test.withColumn("_r", rank).where(F.col("_r") <= cap).drop("_r").collect()]
    questions = [q for q in picked if q["task"] != "item_selection"]
    # distractors: one per slot (engine x round), through the ledger
    engine_answers: dict[str, list[tuple[str, str]]] = {}
    if cfg.llm.enabled and questions:
        engine_answers = _distractor_answers(ctx, questions, result)
    # opt-in fallback: other users' real answers to the same task
    pool: dict[str, list[tuple[str, str]]] = {}
    if ec.distractor_fill_other_users:
        for t in sorted({q["task"] for q in questions}):
            rows = samples.where(F.col("task") == t).select("user_id", F.element_at("messages", -1)["content"].alias("a")).orderBy(
                F.sha2(F.concat_ws(":", F.lit(ec.seed), "user_id", "a"), 256)).limit(500).collect()
            pool[t] = [(r["user_id"], r["a"]) for r in rows]
    items: list[dict] = []
    dropped: Counter = Counter()
    by_task: dict[str, list[dict]] = defaultdict(list)
    for q in picked:
        by_task[q["task"]].append(q)
    for task, qs in sorted(by_task.items()):
        n_opt = ec.item_candidates if task == "item_selection" else ec.mcq_options
        where = mcq.balanced_positions([q["sample_id"] for q in qs], n_opt, ec.seed)
        for q in qs:
            system, user, answer = (m["content"] for m in q["messages"])
            to = where[q["sample_id"]]
            if task == "item_selection":
                user, options = mcq.move_item_answer(q["prompt_head"], q["candidates"], q["answer_index"], to)
                origins = ["real" if i == to else "pool" for i in range(len(options))]
            else:
                fallback = [(a, "other_user") for u, a in pool.get(task, []) if u != q["user_id"]]
                chosen = mcq.choose_options(answer, engine_answers.get(q["sample_id"], []), fallback, n_opt, to)
                if chosen is None:
                    dropped[task] += 1
                    continue
                options, origins = chosen
            items.append({"mcq_id": q["sample_id"], "task": task, "source": q["source"], "user_id": q["user_id"],
                          "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
                          "options": options, "answer_index": to, "origins": origins})
    for it in items:
        S.McqRecord.model_validate(it)
    result.mcq_dropped = sum(dropped.values())
    result.mcq_dropped_by_task = dict(sorted(dropped.items()))
    result.mcq = dict(Counter(it["task"] for it in items))
    return items


# --- files ---------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_split(store: TableStore, cfg: LewinConfig, split: str, root: Path) -> list[dict]:
    rows = store.read("shard_samples").where(F.col("split") == split)
    n = rows.count()
    if n == 0:
        return []
    # hash buckets sized at 90% of the bound keep every shard under it in practice, without a global sort
    n_shards = max(1, math.ceil(n / (0.9 * cfg.emit.shard_max_records)))
    rows = rows.withColumn("_shard", F.pmod(F.xxhash64("sample_id"), F.lit(n_shards)))
    files = []
    for i in range(n_shards):
        part = rows.where(F.col("_shard") == i).select(*tasks.SHARD_COLUMNS).orderBy("sample_id")
        table = pa.Table.from_pylist([r.asDict(recursive=True) for r in part.collect()], schema=_ARROW_SHARD)
        files += _write_part(table, root, split, i)
    return files


def _write_part(table: pa.Table, root: Path, split: str, i: int) -> list[dict]:
    """One shard as ``<split>/parquet/part-<i>.parquet`` and ``<split>/jsonl/part-<i>.jsonl``, with
    the manifest's entry (path, rows, bytes, sha256) of each."""
    files = []
    for kind in ("parquet", "jsonl"):
        path = root / split / kind / f"part-{i:05d}.{kind}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "parquet":
            pq.write_table(table, path, compression="zstd")
        else:
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                for rec in table.to_pylist():
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        files.append({"path": str(path.relative_to(root)), "rows": table.num_rows, "bytes": path.stat().st_size,
                      "sha256": _sha256(path)})
    return files


def dataset_info(splits: list[str], name: str = "lewin") -> dict:
    """LlamaFactory's registry: sharegpt formatting over the `messages` column, one entry per
    split and format (``<name>_<split>``, ``<name>_<split>_jsonl``)."""
    entry = lambda folder: {"file_name": folder, "formatting": "sharegpt", "columns": {"messages": "messages"},  # noqa: E731
                            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                     "assistant_tag": "assistant", "system_tag": "system"}}
    info = {}
    for s in splits:
        info[f"{name}_{s}"] = entry(f"{s}/parquet")
        info[f"{name}_{s}_jsonl"] = entry(f"{s}/jsonl")
    return info


@functools.lru_cache(maxsize=1)
def _code_version() -> str:
    """``<version>+<sha256 prefix>`` of every source file of the package (code, prompts, lists):
    which code made the shards, also between two installs of one release."""
    pkg = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for sub in ("jobs", "udfs", "schemas"):
        files = sorted(p for p in (pkg / sub).rglob("*")
                       if p.suffix in (".py", ".j2", ".yaml", ".txt", ".json") and p.is_file()
                       and "__pycache__" not in p.parts and "sample_data" not in p.parts)
        for p in files:
            h.update(p.relative_to(pkg).as_posix().encode() + b"\0" + p.read_bytes())
    try:
        v = metadata.version("lewin")
    except metadata.PackageNotFoundError:
        v = "unknown"
    return f"{v}+{h.hexdigest()[:12]}"


def write_files(store: TableStore, cfg: LewinConfig, items: list[dict], result: EmitResult) -> str:
    final = out_dir(cfg)
    staging = _staging(final)
    _write_tree(store, cfg, items, result, staging)
    return _publish(staging, final)


def _staging(final: str) -> Path:
    # built in a local folder (beside the output when it is local, so the swap is a rename)
    return Path(final + ".tmp") if fs.scheme(final) is None else Path(tempfile.mkdtemp(prefix="lewin-emit-"))


def _publish(staging: Path, final: str) -> str:
    """Replace ``final`` by the folder built in ``staging``: a rename locally; on an object store
    the files with ``manifest.json`` last, so a reader who finds a manifest finds every file."""
    if staging.parent == Path(final).parent:
        old = Path(final + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if Path(final).exists():
            Path(final).rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        # an object store has no rename: replace the folder, the manifest last so that a reader who
        # finds a manifest finds every file it lists
        fs.rm(final)
        manifest = (staging / "manifest.json").read_bytes()
        (staging / "manifest.json").unlink()
        fs.put_tree(str(staging), final)
        fs.write_bytes(fs.join(final, "manifest.json"), manifest)
        shutil.rmtree(staging, ignore_errors=True)
    return final


def write_sharegpt_tree(final: str, records: list[dict], *, name: str, manifest: dict) -> str:
    """A ShareGPT dataset folder like the six tasks' shards (``lewin patterns``' role-play records):
    ``{train,test}/{parquet,jsonl}/part-00000.*`` of ``records`` (each with ``split`` and
    ``messages``), ``dataset_info.json`` with the entries ``<name>_<split>`` (LlamaFactory) and
    ``manifest.json`` with the files' rows, sizes and hashes; replaced whole, like the shards."""
    staging = _staging(final)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    files = []
    for split in ("train", "test"):
        rows = sorted((r for r in records if r["split"] == split), key=lambda r: r["sample_id"])
        if not rows:
            continue
        files += _write_part(pa.Table.from_pylist(rows), staging, split, 0)
    splits = sorted({f["path"].split("/")[0] for f in files})
    (staging / "dataset_info.json").write_text(json.dumps(dataset_info(splits, name), indent=2) + "\n", encoding="utf-8")
    (staging / "manifest.json").write_text(json.dumps({**manifest, "lewin_code_version": _code_version(), "files": files},
                                                      indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return _publish(staging, final)


def _write_tree(store: TableStore, cfg: LewinConfig, items: list[dict], result: EmitResult, tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = []
    for split in ("train", "test"):
        files += _write_split(store, cfg, split, tmp)
    mcq_dir = tmp / "mcq"
    mcq_dir.mkdir()
    by_task: dict[str, list[dict]] = defaultdict(list)
    for it in sorted(items, key=lambda x: (x["task"], x["mcq_id"])):
        by_task[it["task"]].append(it)
    mcq_stats = {}
    for task, its in by_task.items():
        path = mcq_dir / f"{task}.jsonl"
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for it in its:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        files.append({"path": str(path.relative_to(tmp)), "rows": len(its), "bytes": path.stat().st_size, "sha256": _sha256(path)})
        mcq_stats[task] = {"questions": len(its), "options": len(its[0]["options"]),
                           "answer_positions": dict(sorted(Counter(i["answer_index"] for i in its).items())),
                           "origins": dict(sorted(Counter(o for i in its for o in i["origins"]).items()))}
    splits = sorted({f["path"].split("/")[0] for f in files if f["path"].split("/")[0] in ("train", "test")})
    (tmp / "dataset_info.json").write_text(json.dumps(dataset_info(splits), indent=2) + "\n", encoding="utf-8")
    total = sum(n for t in result.counts.values() for s in t.values() for n in s.values()) or 1
    per_task, per_source = Counter(), Counter()
    for split in result.counts.values():
        for t, by_src in split.items():
            for s, n in by_src.items():
                per_task[t] += n
                per_source[s] += n
    upstream = {name: store.version(name) for name in
                ["users", "silver_records_scrubbed", "record_labels"] + [f"gold_{a}" for a in ("persona", "profile", "writing_style", "scenario", "social_qa")]
                if store.exists(name)}
    manifest = {
        "lewin_code_version": _code_version(),
        "task_prompt_versions": tasks.TASK_VERSIONS,
        "config": cfg.emit.model_dump(mode="json", exclude={"out_dir"}),
        "upstream_delta_versions": upstream,
        "counts": result.counts,
        "mix": {"task_share": {k: round(v / total, 4) for k, v in sorted(per_task.items())},
                "source_share": {k: round(v / total, 4) for k, v in sorted(per_source.items())}},
        "candidates_before_balance": result.candidates,
        "mcq": mcq_stats,
        "mcq_dropped_too_few_options": result.mcq_dropped,
        "distractor_plan": result.distractor_plan,  # which engine, round and seed filled each option slot
        "files": files,
        **provenance(store, cfg),
    }
    write_card_and_manifest(tmp, manifest)


def write_card_and_manifest(folder: Path, manifest: dict) -> None:
    """The dataset card (README.md, rendered from the manifest and listed in its files), then
    manifest.json: the manifest stays the last file written."""
    card = folder / dataset_card.CARD_FILE
    card.write_text(dataset_card.render(manifest), encoding="utf-8")
    manifest["files"].append({"path": card.name, "rows": None, "bytes": card.stat().st_size, "sha256": _sha256(card)})
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def provenance(store: TableStore, cfg: LewinConfig) -> dict:
    """What the dataset card reports beyond the shards, from the tables as they are now (the same
    tables give the same figures): per source the records at each step of the funnel; PII settings
    and replacements per type; per LLM artifact the items synthesised, judged and kept, with the
    models and prompt versions that made them. One Spark job over small aggregates."""
    from functools import reduce

    from lewin.schemas.config import LLM_ARTIFACTS
    from lewin.udfs import sources

    parts = []

    def add(section, table, k1, k2=None, n=None, df=None):
        if df is None and not store.exists(table):
            return
        df = store.read(table) if df is None else df
        n = F.count(F.lit(1)) if n is None else n
        keys = [F.col(k1).cast("string").alias("k1"), (F.col(k2) if k2 else F.lit(None)).cast("string").alias("k2")]
        parts.append(df.groupBy(*keys).agg(n.cast("long").alias("n")).select(F.lit(section).alias("section"), "k1", "k2", "n"))

    for table in sorted({st.bronze_table for spec in sources.SOURCES.values() for st in spec.streams}):
        add("bronze", table, "source")
    add("quarantined", "quarantine", "source")
    add("rejected", "rejected", "source", "stage")
    add("rejected_rules", "rejected", "source", "rule")
    add("silver", "silver_records", "source")
    if store.exists("silver_records_scrubbed"):
        scrubbed = store.read("silver_records_scrubbed")
        add("scrubbed", None, "source", df=scrubbed)
        add("pii_records", None, "source", df=scrubbed.where(F.size("pii_spans") > 0))
        add("pii", None, "type", df=scrubbed.select(F.explode("pii_spans").alias("s")).select("s.type"))
        add("scrub_version", None, "scrub_version", df=scrubbed)
    add("label", "record_labels", "source", "gate")
    add("users", "users", "source")
    add("timeline_records", "users", "source", n=F.sum("n_records"))
    for a in LLM_ARTIFACTS:
        add("synth", f"synth_{a}", "artifact")
        judged = f"judged_{a}" if store.exists(f"judged_{a}") else f"gold_{a}"
        if store.exists(judged):
            df = store.read(judged).select(F.lit(a).alias("artifact"), F.to_json(F.array(
                "model", "prompt_version", "judge_model", "judge_prompt_version")).alias("made_by"), "accepted")
            add("judged", None, "artifact", "made_by", df=df)
            add("gold", None, "artifact", "made_by", n=F.sum(F.col("accepted").cast("int")), df=df)
    rows = reduce(DataFrame.unionByName, parts).collect() if parts else []
    funnel: dict = defaultdict(dict)
    arts: dict = defaultdict(lambda: defaultdict(set))
    pii_types, scrub_versions = {}, []
    for r in sorted(rows, key=lambda r: (r["section"], r["k1"] or "", r["k2"] or "")):
        sec, k1, k2, n = r["section"], r["k1"], r["k2"], int(r["n"] or 0)
        if sec in ("rejected", "rejected_rules", "label"):
            funnel[k1].setdefault("label_gates" if sec == "label" else sec, {})[k2] = n
            if sec == "label" and k2 == "kept":
                funnel[k1]["label_kept"] = n
        elif sec in ("bronze", "quarantined", "silver", "scrubbed", "pii_records", "users", "timeline_records"):
            funnel[k1][sec] = funnel[k1].get(sec, 0) + n
        elif sec == "pii":
            pii_types[k1] = n
        elif sec == "scrub_version":
            scrub_versions.append(k1)
        elif sec == "synth":
            arts[k1]["synth"] = n
        else:  # judged / gold, per (model, prompt, judge model, judge prompt)
            model, prompt, judge, judge_prompt = json.loads(k2)
            arts[k1][sec] = arts[k1].get(sec, 0) + n
            for key, v in (("models", model), ("prompt_versions", prompt), ("judge_models", judge),
                           ("judge_prompt_versions", judge_prompt)):
                arts[k1][key].add(v)
    pc, lc = cfg.pii, cfg.llm
    return {
        "funnel": {s: dict(sorted(v.items())) for s, v in sorted(funnel.items())},
        "pii": {"enabled": pc.enabled, "entities": list(pc.entities), "spacy_model": pc.spacy_model,
                "min_score": dict(sorted(pc.min_score.items())), "retention": pc.retention, "scrub_versions": scrub_versions,
                "replaced": dict(sorted(pii_types.items())), "records": sum(v.get("scrubbed", 0) for v in funnel.values()),
                "records_with_pii": sum(v.get("pii_records", 0) for v in funnel.values())},
        "llm": {"enabled": lc.enabled, "profile": lc.profile, "labels": lc.labels, "quality_keep": list(lc.quality_keep),
                "writer_model": lc.engine.model, "writer_engine": lc.engine.kind,
                "judge_model": lc.judge_engine.model if lc.judge_engine else None,
                "judge_engine": lc.judge_engine.kind if lc.judge_engine else None,
                "judge_overall_gt": lc.judge_overall_gt, "judge_others_gt": lc.judge_others_gt,
                "artifacts": {a: {k: sorted(v) if isinstance(v, set) else v for k, v in sorted(d.items())}
                              for a, d in sorted(arts.items())}},
    }


# --- the job -------------------------------------------------------------------------------------------
class EmitStage(Stage):
    name = "emit"
    summary = "gold_* + users -> training shards (train/test by user), MCQ sets, manifest, dataset_info, dataset card"
    reads = ("users", "gold_*", "silver_records_scrubbed", "record_labels", "silver_items", "shard_samples", "mcq_items", "llm_ledger",
             # the dataset card's funnel and provenance (``provenance``)
             "bronze_*", "quarantine", "rejected", "silver_records", "synth_*", "judged_*")
    writes = ("shard_samples", "mcq_items", "llm_ledger")
    depends_on = ("llm",)

    def __init__(self):
        self.result: EmitResult | None = None

    def run(self, ctx: RunContext) -> list[Funnel]:
        self.result = _emit(ctx)
        return [self.result.funnel()] if self.result.out_dir is not None else []


def emit(store: TableStore, cfg: LewinConfig, run_id: str | None = None) -> EmitResult:
    return EmitStage().execute_for_result(store, cfg, run_id)


def _emit(ctx: RunContext) -> EmitResult:
    store, cfg = ctx.store, ctx.cfg
    result = EmitResult(ctx.run_id)
    if not store.exists("users"):
        return result
    ec = cfg.emit
    samples = ctx.materialize("candidates", tasks.split_by_user(tasks.to_samples(task_rows(store, cfg)), ec.seed,
                                                                ec.test_fraction))
    counts = {(r["task"], r["source"]): r["n"] for r in samples.groupBy("task", "source").agg(F.count(F.lit(1)).alias("n")).collect()}
    result.candidates = sum(counts.values())
    caps = cell_caps(counts, cfg)
    caps_df = store.spark.createDataFrame([(t, s, c) for (t, s), c in sorted(caps.items())], "task string, source string, cap int")
    kept = tasks.balance(samples, caps_df, ec.seed) if caps else samples.limit(0)
    _write_if_changed(ctx, "shard_samples", kept, S.SHARD_SAMPLES, "sample_id")
    for r in store.read("shard_samples").groupBy("split", "task", "source").agg(F.count(F.lit(1)).alias("n")).collect():
        result.counts.setdefault(r["split"], {}).setdefault(r["task"], {})[r["source"]] = r["n"]
    result.counts = {s: {t: dict(sorted(v.items())) for t, v in sorted(d.items())} for s, d in sorted(result.counts.items())}
    result.kept = sum(n for t in result.counts.values() for s in t.values() for n in s.values())
    items = build_mcq(ctx, result)
    store.ensure("mcq_items", S.MCQ_ITEM)
    if items or store.count("mcq_items"):
        _write_if_changed(ctx, "mcq_items", store.spark.createDataFrame(items, S.MCQ_ITEM), S.MCQ_ITEM, "mcq_id")
    result.out_dir = write_files(store, cfg, items, result)
    return result
