"""The dataset selected the way the paper selects it (issue 12): the label gate on every record,
a separate judge, A.3's metrics, per-item gold, the judge's source, whole-user histories,
record kinds, prefix-cache-friendly prompts and the optional cleaning rewrite.

One scripted pipeline run (module scope) feeds most tests: an in-process engine double answers
from each request's schema and records every prompt it was sent."""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime, timedelta

import pytest
from pyspark.sql import functions as F

from lewin.jobs.emit import emit
from lewin.jobs.engine import Engine
from lewin.jobs.label import run_labels
from lewin.jobs.llm import backend_spec, engine_config, warn_self_judging
from lewin.jobs.tables import TableStore
from lewin.jobs.users import build_users
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig, LlmEngineConfig, StorageConfig
from lewin.schemas.llm import JUDGE_METRICS, METRIC_DEFINITIONS, output_schema
from lewin.udfs import llm_prompts
from lewin.udfs.llm_backends import BackendSpec, Response, Sampling, register_backend

from .conftest import ENGINE
from .fake_openai import reply_for

pytestmark = pytest.mark.skipif(ENGINE != "embedded", reason="LLM stages are exercised on the embedded engine")

FILLER = "and I kept thinking about it on the long walk home that evening with my sister"


class _Recorder:
    """Answers every request from its schema, records (artifact kind, user message) pairs.

    * notes: the record tokens (R00 ...) it was shown, padded, so coverage can be traced;
    * stories: three, the second marked BADSTORY; social QA: two items, the second BADITEM;
    * a judge scores BAD* outputs 1 and everything else 9;
    * the cleaning rewrite drops HTML tags, and swaps in words of its own for a post marked ADDWORDS."""

    name = "scripted"
    context_tokens = 8192

    def __init__(self, model: str, log: list | None = None):
        self.model = model
        self.prompts: list[tuple[str, str]] = []
        self.log = log if log is not None else []
        """(model, kind, user message) of every prompt, shared by the writer and the judge: one sending order."""

    def count_tokens(self, messages):
        return sum(len(m["content"]) for m in messages) // 4

    def generate(self, requests, sampling):
        out = []
        for r in requests:
            user = r.messages[-1]["content"]
            props = set((r.schema or {}).get("properties", {}))
            if "overall" in props:
                kind, generated = "judge", user.split("Generated ", 1)[1]
                score = 1 if "BAD" in generated.split("Review the generated", 1)[0] else 9
                reply = {**{m: score for m in props if m != "reasons"}, "reasons": "scripted"}
            elif "notes" in props:
                kind = "notes"
                reply = {"notes": " ".join(sorted(set(re.findall(r"R\d\d", user)))) + " " + "n" * 120}
            elif props == {"text"}:
                kind = "clean_rewrite"
                post = user.rsplit("):\n", 1)[-1]
                reply = {"text": "ADDWORDS My aunt wrote about her cats." if "ADDWORDS" in post else re.sub(r"<[^>]+>", "", post)}
            elif "stories" in props:
                kind = "stories"
                reply = {"stories": [{"summary": f"Story {i}.", "narrative": ("BADSTORY " if i == 1 else "") + "She went."}
                                     for i in range(3)]}
            elif "items" in props:
                kind = "social_qa"
                reply = {"items": [{"type": "action", "scenario": "At home.", "question": "What next?",
                                    "answer": ("BADITEM " if i == 1 else "") + "She calls."} for i in range(2)]}
            else:
                kind = sorted(props)[0]
                reply = reply_for(r.schema, user)
            self.prompts.append((kind, user))
            self.log.append((self.model, kind, user))
            out.append(Response(r.key, json.dumps(reply), 10, 10, 1))
        return out


def _row(rid: str, user: str, kind: str, day: int, text: str, source: str = "blogger") -> dict:
    rec = {f.name: None for f in T.SILVER_RECORDS_SCRUBBED.fields}
    rec.update(record_id=rid, source=source, user_id=user, kind=kind, event_ts=datetime(2021, 1, 1) + timedelta(days=day),
               text=text, text_hash=rid, _bronze_run_id="b", _curate_run_id="c", scrub_version="v", _scrub_run_id="s",
               pii_spans=[])
    return rec


RECORDS = (
    # a long history: 40 posts, each with its token, far over the history budget
    [_row(f"long{i:02d}", "lou", "blog_post", i, f"R{i:02d} I wrote post number {i} {FILLER} " * 2) for i in range(40)]
    # record kinds: a Reddit user with submissions, a comment and a planted harmful submission
    + [_row("sub1", "rae", "submission", 1, "SUBMISSION_ONE I moved to a new city and met my neighbours.", "reddit"),
       _row("sub2", "rae", "submission", 2, "SUBMISSION_TWO My neighbours invited me to dinner <b>today</b>.", "reddit"),
       _row("com1", "rae", "comment", 3, "COMMENT_ONE I agree with you about the bus lanes.", "reddit"),
       _row("harm1", "rae", "submission", 4, "HARMFUL I describe something violent in detail.", "reddit"),
       _row("low1", "rae", "submission", 5, "LOW_QUALITY buy cheap watches now", "reddit"),
       _row("add1", "rae", "submission", 6, "ADDWORDS My sister called about our father.", "reddit"),
       # one review only: below llm.min_records_per_user = 2, no per-user artifacts
       _row("rev1", "amy", "review", 1, "REVIEW_ONE The kettle boils fast and the handle stays cool.", "amazon")]
)


@pytest.fixture(scope="module")
def run(tmp_path_factory, engine):
    tmp = tmp_path_factory.mktemp("selection")
    cfg = LewinConfig(storage=StorageConfig(root=tmp / "t", database="sel_" + os.urandom(4).hex()))
    lc = cfg.llm
    lc.engine.kind, lc.engine.model = "llamacpp", "scripted-writer"  # the spec keys the doubles are registered under
    lc.judge_engine = LlmEngineConfig(kind="llamacpp", model="scripted-judge")
    lc.record_max_chars, lc.history_max_chars = 400, 1200
    lc.min_records_per_user = 2
    lc.max_stories = 2  # the double writes 3: the third is not judged
    lc.profile_min_words = 10
    lc.clean_rewrite.enabled = True
    lc.wave_users = 1  # each user its own wave: its writer prompts, then its judges, then the next user's
    shared: list = []
    writer, judge = _Recorder("scripted-writer", shared), _Recorder("scripted-judge", shared)
    register_backend(backend_spec(cfg), writer)
    register_backend(backend_spec(cfg, "judge_persona"), judge)
    inline = Engine(engine.spark, engine.kind, 1, engine.table_format)  # one process: the doubles are visible
    store = TableStore(inline, cfg.storage)
    store.ensure("silver_records_scrubbed", T.SILVER_RECORDS_SCRUBBED)
    store.append("silver_records_scrubbed", engine.spark.createDataFrame(RECORDS, T.SILVER_RECORDS_SCRUBBED))
    labels = run_labels(store, cfg)
    build_users(store, cfg)
    from lewin.jobs.llm import run_llm

    llm = run_llm(store, cfg)
    cfg.emit.test_fraction, cfg.emit.mcq_max_per_task = 0.3, 1
    emit(store, cfg)
    return store, cfg, labels, llm, writer, judge


def _prompts(rec: _Recorder, kind: str) -> list[str]:
    return [u for k, u in rec.prompts if k == kind]


# --- the label gate ------------------------------------------------------------------------------------
def test_every_record_is_labelled_and_only_kept_ones_reach_users_and_shards(run):
    store, _, labels, _, _, _ = run
    gates = {r["record_id"]: r for r in store.read("record_labels").collect()}
    assert set(gates) == {r["record_id"] for r in RECORDS}, "every scrubbed record has a label row"
    assert gates["harm1"]["gate"] == "harmful_violence" and gates["harm1"]["harmful"] == "yes"
    assert gates["low1"]["gate"] == "quality_low"
    assert {k for k, v in gates.items() if not v["keep"]} == {"harm1", "low1"}
    assert labels.by_source["reddit"] == {"kept": 4, "harmful_violence": 1, "quality_low": 1}
    timeline_ids = {x["record_id"] for u in store.read("users").collect() for x in u["records"]}
    assert timeline_ids == {k for k, v in gates.items() if v["keep"]}
    # nothing past the gate holds the rejected texts: timelines, synthesis, judged, gold, shards
    for table in ["users", "shard_samples"] + [f"{k}_{a}" for a in JUDGE_METRICS for k in ("synth", "judged", "gold")]:
        if store.exists(table):
            dump = json.dumps([r.asDict(recursive=True) for r in store.read(table).collect()], default=str)
            assert "HARMFUL" not in dump and "LOW_QUALITY" not in dump, table
    assert store.count("shard_samples") > 0


def test_cleaning_rewrite_used_only_when_it_adds_nothing(run):
    store, _, _, _, writer, _ = run
    gates = {r["record_id"]: r for r in store.read("record_labels").collect()}
    assert gates["sub2"]["rewrite"] == "used" and gates["sub2"]["text"].endswith("to dinner today.")
    assert gates["add1"]["rewrite"].startswith("rejected: adds words") and gates["add1"]["text"] is None
    rae = store.read("users").where(F.col("user_id") == "rae").collect()[0]
    texts = {x["record_id"]: x["text"] for x in rae["records"]}
    assert "<b>" not in texts["sub2"] and texts["add1"].startswith("ADDWORDS My sister")
    # the label saw the cleaned text
    labelled = [u for u in _prompts(writer, "harm") if "SUBMISSION_TWO" in u]
    assert len(labelled) == 1 and "<b>" not in labelled[0]


def test_rewrite_check_bounds(spark):
    from lewin.udfs.clean import rewrite_check

    rows = [("a plain post about my day", "a plain post about my day"),
            ("short", "short, and then a long passage the model made up"),
            ("a long post about my day at the lake with friends", "a post"),
            ("my sister called about our father", "my aunt wrote about her cats")]
    df = spark.createDataFrame(rows, "o string, r string")
    why = [r["w"] for r in df.select(rewrite_check(F.col("o"), F.col("r"), 1.05, 0.3, 0.9).alias("w")).collect()]
    assert why[0] is None
    assert why[1].startswith("longer than the original") and why[2].startswith("drops too much")
    assert why[3].startswith("adds words (0.33 of its words")


# --- judge engine, metrics, per-item gold, judge source ---------------------------------------------------
def test_the_judge_is_a_separate_engine(run, caplog):
    store, cfg, _, _, writer, judge = run
    models = {(r["artifact"].startswith("judge_"), r["model"]) for r in store.read("llm_ledger").collect()}
    assert models == {(False, "scripted-writer"), (True, "scripted-judge")}
    assert _prompts(judge, "judge") and not _prompts(writer, "judge")
    assert all(r["judge_model"] == "scripted-judge" for r in store.read("judged_persona").collect())
    same = cfg.model_copy(deep=True)
    same.llm.judge_engine = None
    assert engine_config(same, "judge_profile") is same.llm.engine
    with caplog.at_level(logging.WARNING):
        warn_self_judging(same)
    assert "judges its own output" in caplog.text


def test_metric_mapping_is_a3s_and_the_prompt_quotes_its_definitions():
    assert JUDGE_METRICS == {
        "persona": ("hallucination", "coverage", "conciseness", "relevance", "overall"),
        "profile": ("hallucination", "coverage", "conciseness", "relevance", "novelty", "overall"),
        "stories": ("hallucination", "coverage", "novelty", "overall"),
        "writing_style": ("hallucination", "overall"),
        "scenario": ("hallucination", "coverage", "fidelity", "novelty", "overall"),
        "social_qa": ("hallucination", "coverage", "fidelity", "novelty", "leakage", "overall"),
    }
    opts = llm_prompts.PromptOptions(BackendSpec("llamacpp", "m"), Sampling(), (), ())
    for artifact, metrics in JUDGE_METRICS.items():
        prompt = llm_prompts.render(f"judge_{artifact}", {"source": {"text": "t", "date": "d"}, "output": "{}"}, opts)
        for m in METRIC_DEFINITIONS:
            assert (f"- {m}: {METRIC_DEFINITIONS[m]}" in prompt[1]["content"]) is (m in metrics), (artifact, m)
        assert set(output_schema(f"judge_{artifact}")["properties"]) == {*metrics, "reasons"}
    assert METRIC_DEFINITIONS["leakage"].startswith("This metric measures the extent to which the answer is directly")


def test_stories_and_qa_are_judged_item_by_item_and_gold_keeps_items(run):
    store, *_ = run
    for artifact, bad in (("stories", "BADSTORY"), ("social_qa", "BADITEM")):
        synth = store.read(f"synth_{artifact}").collect()
        judged = store.read(f"judged_{artifact}").collect()
        gold = store.read(f"gold_{artifact}").collect()
        n_items = {"stories": 2, "social_qa": 2}[artifact]  # stories: capped by llm.max_stories
        assert len(judged) == n_items * len(synth) > 0, artifact
        assert {j["input_id"] for j in judged} == {f"{s['input_id']}#{i}" for s in synth for i in range(n_items)}
        assert len(gold) == (n_items - 1) * len(synth) and all(bad not in g["output"] for g in gold), artifact
    qa = store.read("shard_samples").where(F.col("task") == "social_qa").collect()
    assert qa and all("BADITEM" not in json.dumps(x.asDict(recursive=True), default=str) for x in qa)


def test_the_judge_sees_exactly_the_writers_source(run):
    _, _, _, _, writer, judge = run
    judged = _prompts(judge, "judge")
    for kind, task_start in (("persona", "Write this user's persona"), ("background", "Turn this post into")):
        for w in _prompts(writer, kind):
            source = w[:w.index("\n\n" + task_start)]
            mine = [j for j in judged if j.startswith(source + "\n\nGenerated ")]
            assert mine, (kind, source[:80])


# --- the whole user, record kinds -------------------------------------------------------------------
def test_a_long_history_is_summarised_hierarchically_and_every_record_informs_the_profile(run):
    _, cfg, _, llm, writer, _ = run
    lou = [u for u in _prompts(writer, "persona") if "R39" in u]
    assert len(lou) == 1
    tokens = set(re.findall(r"R\d\d", lou[0]))
    assert tokens == {f"R{i:02d}" for i in range(40)}, sorted({f"R{i:02d}" for i in range(40)} - tokens)
    assert len(lou[0]) < cfg.llm.history_max_chars + 1000, "the prompt holds notes, not the whole history"
    assert "Notes on this user's earlier posts" in lou[0] and "Their latest posts" in lou[0]
    levels = [s.artifact for s in llm.stages if s.artifact.startswith("user_notes_")]
    assert levels[:2] == ["user_notes_0", "user_notes_1"], "the notes were long enough to be noted again"
    assert llm.users_summarised == 1 and llm.users_incomplete_notes == 0


def test_record_kinds_and_min_records(run):
    store, _, _, llm, writer, _ = run
    scen = _prompts(writer, "background")
    assert any("SUBMISSION_ONE" in u for u in scen)
    assert not any("COMMENT_ONE" in u or "REVIEW_ONE" in u for u in scen), "no scenario from a comment or a review"
    personas = _prompts(writer, "persona")
    rae = [u for u in personas if "SUBMISSION_ONE" in u]
    assert len(rae) == 1 and "COMMENT_ONE" not in rae[0], "comments do not feed personas"
    assert not any("REVIEW_ONE" in u for u in personas), "a user below llm.min_records_per_user gets no persona"
    assert {r["user_id"] for r in store.read("synth_persona").collect()} == {"lou", "rae"}
    assert (llm.users, llm.users_below_min) == (3, 1)


# --- prefix caching through the real chat template ----------------------------------------------------
def test_prompts_share_the_history_as_a_token_prefix_under_the_real_chat_template():
    """SmolLM2's own chat template and tokenizer (from the bundled GGUF): a user's four per-user
    prompts and four judge prompts share every token up to the end of the history; a record's
    scenario and QA prompts share the record."""
    llama_cpp = pytest.importorskip("llama_cpp")
    import jinja2

    from lewin.udfs.llm_backends import default_gguf

    vocab = llama_cpp.Llama(model_path=default_gguf(), vocab_only=True, verbose=False)
    template = jinja2.Environment().from_string(vocab.metadata["tokenizer.chat_template"])

    def tokens(messages) -> list[int]:
        text = template.render(messages=list(messages), add_generation_prompt=True)
        return vocab.tokenize(text.encode(), add_bos=False, special=True)

    opts = llm_prompts.PromptOptions(BackendSpec("llamacpp", "m"), Sampling(), (), ())
    history = {"records": [{"date": f"2021-0{i}-01", "text": f"Post {i}: I trained for my first marathon {FILLER}."}
                           for i in range(1, 8)]}
    per_user = [llm_prompts.render(a, history, opts) for a in ("persona", "profile", "stories", "writing_style")]
    judges = [llm_prompts.render(f"judge_{a}", {"source": history, "output": '{"x": "y"}'}, opts)
              for a in ("persona", "profile", "stories", "writing_style")]
    record = {"text": f"I finally told my boss I was leaving {FILLER}.", "date": "2021-02-03"}
    per_record = [llm_prompts.render(a, record, opts) for a in ("scenario", "social_qa")] + [
        llm_prompts.render("judge_scenario", {"source": record, "output": "{}"}, opts)]
    for group, inp in ((per_user + judges, history), (per_record, record)):
        toks = [tokens(m) for m in group]
        shared = 0
        while all(len(t) > shared for t in toks) and len({t[shared] for t in toks}) == 1:
            shared += 1
        # the tokens of the rendered chat text up to the end of the source block
        source = llm_prompts.source_block(inp, opts)
        text = template.render(messages=list(group[0]), add_generation_prompt=True)
        upto = text[:text.index(source) + len(source)]
        n_source = len(vocab.tokenize(upto.encode(), add_bos=False, special=True))
        assert n_source > 60
        assert shared >= n_source - 1, (shared, n_source)  # the last token may merge with what follows
        assert shared // 16 >= (n_source - 1) // 16, "vLLM reuses every full 16-token block of the history"


def _runs_of(prompts: list[tuple[str, str]], kinds: set[str], key) -> dict[str, list[int]]:
    """Positions in the sending sequence of the prompts of ``kinds``, by ``key(user message)``."""
    seq = [u for k, u in prompts if k in kinds]
    out: dict[str, list[int]] = {}
    for i, u in enumerate(seq):
        out.setdefault(key(u), []).append(i)
    return out


def test_prompts_that_share_a_prefix_are_sent_back_to_back(run):
    """The stage's sending order (jobs.llm.SEND_ORDER): a user's four per-user prompts one after
    another, then later its judges one after another, and a record's scenario and QA together, so
    a prefix cache serves the shared history or record once."""
    _, _, _, _, writer, judge = run
    before_task = lambda u: u.rsplit("\n\n", 1)[0]  # noqa: E731 - the source block
    groups = [
        _runs_of(writer.prompts, {"persona", "profile", "stories", "style"}, before_task),
        _runs_of(writer.prompts, {"background", "social_qa"}, before_task),
        _runs_of(judge.prompts, {"judge"}, lambda u: u.split("\n\nGenerated ", 1)[0]),
    ]
    for runs in groups:
        assert runs and any(len(p) > 1 for p in runs.values())
        for source, positions in runs.items():
            assert positions == list(range(positions[0], positions[0] + len(positions))), source[:80]
    # per user: four writer prompts; its judges: persona, profile, its 2 judged stories, style
    assert sorted(len(p) for p in groups[0].values()) == [4, 4]
    assert max(len(p) for p in groups[2].values()) == 5


def test_a_users_judges_follow_its_writers_wave_by_wave(run):
    """llm.wave_users = 1: every user's writer prompts, then straight away its judges, then the
    next user's; nothing of another user in between (its history is still in the cache)."""
    _, _, _, llm, writer, _ = run
    synth = [(m, k, u) for m, k, u in writer.log if k not in ("harm", "clean_rewrite", "notes")]
    owner = lambda u: "lou" if re.search(r"\bR\d\d\b", u) else "rae"  # noqa: E731 - lou's posts carry R00..R39
    order = [owner(u) for _, _, u in synth]
    assert order == sorted(order, key=order.index), "a user's prompts are not contiguous"
    for user in ("lou", "rae"):
        kinds = [m for (m, _, u) in synth if owner(u) == user]
        first_judge = kinds.index("scripted-judge")
        assert set(kinds[:first_judge]) == {"scripted-writer"} and set(kinds[first_judge:]) == {"scripted-judge"}
    assert llm.waves == 2
