"""Deterministic quality signals on synthetic data (``synth_signals``): each signal on hand-made
units, the gates, and the LLM stage's hook with a scripted engine (gate vs report, judge
agreement through the ledger, a rerun that changes nothing)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from pyspark.sql import functions as F

from lewin.jobs.engine import Engine
from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig, LlmConfig, StorageConfig, SynthSignalsConfig
from lewin.udfs import synth_signals as S
from lewin.udfs.llm_backends import Response
from lewin.udfs.near_dedup import MinHashOptions

from .conftest import ENGINE

LIMITS = {"persona_max_words": 100, "profile_min_words": 100, "profile_max_words": 400}
UNIT_SCHEMA = "artifact string, input_id string, user_id string, source string, unit_key string, text string, " \
              "qa_answer string, qa_context string"


def _unit(artifact, user, text, n=None, answer=None, context=None, source="blogger"):
    base = f"{source}:{user}" if artifact in ("persona", "profile", "stories", "writing_style") else f"{source}:r_{user}"
    input_id = base if n is None else f"{base}#{n}"
    return (artifact, input_id, user, source, f"k_{artifact}_{input_id}", text, answer, context)


def _units(spark, rows):
    return spark.createDataFrame(rows, UNIT_SCHEMA)


def _by(df, signal):
    return {(r["artifact"], r["input_id"]): r for r in df.where(F.col("signal") == signal).collect()}


# --- each signal ------------------------------------------------------------------------------------
def test_length_words_flags_an_over_long_persona_and_bounds_only_persona_and_profile(spark):
    u = _units(spark, [
        _unit("persona", "ann", " ".join(["word"] * 120)),
        _unit("persona", "bob", "A quiet  baker\nwho loves bread."),
        _unit("profile", "ann", " ".join(["word"] * 99)),
        _unit("stories", "ann", "She moved house. She felt at home.", n=0),
    ])
    got = _by(S.length_words(u, LIMITS, "gate"), "length_words")
    long_p, ok_p = got[("persona", "blogger:ann")], got[("persona", "blogger:bob")]
    assert (long_p["value"], long_p["bound"], long_p["passed"], long_p["gate"]) == (120, "<100 words", False, True)
    assert (ok_p["value"], ok_p["passed"]) == (6, True)
    assert (got[("profile", "blogger:ann")]["bound"], got[("profile", "blogger:ann")]["passed"]) == ("100-400 words", False)
    story = got[("stories", "blogger:ann#0")]
    assert (story["value"], story["bound"], story["passed"], story["gate"]) == (7, None, None, False), "report only, no bound"


def test_qa_leakage_flags_an_answer_copied_from_its_scenario(spark):
    scenario = "Her brother calls late at night and tells her he lost his job at the bakery."
    u = _units(spark, [
        _unit("social_qa", "ann", "", n=0, answer="He lost his job at the bakery.", context=scenario + " Why is he upset?"),
        _unit("social_qa", "bob", "", n=0, answer="Worried at first, then relieved that he reached out.",
              context=scenario + " How does she feel?"),
        _unit("social_qa", "cat", "", n=0, answer="Upset", context="He is upset. Why?"),
    ])
    got = _by(S.qa_leakage(u, 3, 0.5, "report"), "qa_leakage")
    leak = got[("social_qa", "blogger:r_ann#0")]
    assert leak["value"] == 1.0 and leak["passed"] is False and leak["bound"] == "<=0.5" and leak["gate"] is False
    assert "lost his job" in leak["detail"].split(" | ")
    fine = got[("social_qa", "blogger:r_bob#0")]
    assert fine["value"] == 0.0 and fine["passed"] is True and fine["detail"] is None
    short = got[("social_qa", "blogger:r_cat#0")]
    assert short["value"] == 1.0 and short["detail"] == "upset", "an answer under n words: found as a phrase"


def test_unsupported_entities_flags_a_person_absent_from_the_users_records(spark):
    records = spark.createDataFrame([
        ("blogger", "ann", None, "My name is Ann. I live in boston with my brother Tom and work at Acme Corp."),
        ("blogger", "ann", "Marathons", "I ran 3 marathons this year."),
        ("blogger", "bob", None, "Sarah Johnson is my neighbour."),
    ], "source string, user_id string, title string, text string")
    profile = ("Ann lives in Boston with her brother Tom. She works at Acme Corp and ran 3 marathons. "
               "Recently, Sarah Johnson visited her in Denver, and she keeps 12 cats.")
    u = _units(spark, [_unit("profile", "ann", profile), _unit("persona", "ann", "A runner who loves Boston."),
                       _unit("scenario", "ann", "Sarah Johnson knocks.")])
    got = _by(S.unsupported_entities(u, S.user_sources(records), 0, "report"), "unsupported_entities")
    row = got[("profile", "blogger:ann")]
    assert row["value"] == 3 and row["passed"] is False and row["bound"] == "<=0"
    assert row["detail"].split(" | ") == ["12", "Denver", "Sarah Johnson"], "bob's neighbour is not ann's source"
    assert got[("persona", "blogger:ann")]["value"] == 0 and got[("persona", "blogger:ann")]["passed"] is True
    assert ("scenario", "blogger:r_ann") not in got, "scenarios are not checked"
    cands = spark.createDataFrame([("She went to Paris. Yesterday the Golden Gate Bridge shone. I'm Ann's friend.",)],
                                  "t string").select(S.entity_candidates(F.col("t")).alias("c")).first()["c"]
    assert cands == ["Paris", "Golden Gate Bridge", "Ann"]


def test_near_duplicate_flags_two_near_identical_profiles_of_different_users(spark):
    base = ("I grew up on a small farm outside the village where my grandmother kept bees and taught me to bake "
            "bread every Sunday morning before church, and now I teach history at the local school and spend my "
            "summers restoring an old sailing boat with my two daughters who both love the sea")
    other = ("A software engineer in a large city who commutes by bicycle, plays chess online at night, and writes "
             "long letters to friends abroad about politics, music and the books she reads on the train")
    u = _units(spark, [
        _unit("profile", "ann", base + " deeply"),
        _unit("profile", "bob", base + " dearly"),
        _unit("profile", "cat", other),
        _unit("stories", "dan", other, n=0),  # same text, another artifact: not compared
        _unit("stories", "eve", base, n=0), _unit("stories", "eve", base + " again", n=1),  # one user's own: not compared
    ])
    opts = MinHashOptions(ngram=5, bands=20, rows=5, threshold=0.8, seed=1)
    bands = u.select("unit_key", "text").mapInArrow(
        lambda batches: (b for batch in batches for b in S.band_keys_batch(batch, opts)), S.BANDS_SCHEMA)
    got = _by(S.near_duplicate(u, bands, opts, "report"), "near_duplicate")
    ann, bob = got[("profile", "blogger:ann")], got[("profile", "blogger:bob")]
    assert ann["passed"] is False and bob["passed"] is False and ann["value"] >= 0.8 and ann["bound"] == "<0.8"
    assert ann["detail"].startswith("jaccard 0.9") and "k_profile_blogger:bob" in ann["detail"]
    assert got[("profile", "blogger:cat")]["passed"] is True and got[("profile", "blogger:cat")]["value"] < 0.8
    assert got[("stories", "blogger:dan#0")]["passed"] is True
    assert got[("stories", "blogger:eve#0")]["passed"] is True and got[("stories", "blogger:eve#1")]["passed"] is True
    rate = got[("profile", "*")]
    assert rate["value"] == pytest.approx(2 / 3) and rate["user_id"] is None and rate["gate"] is False


def test_distinct_n_per_user_and_across_users(spark):
    u = _units(spark, [
        _unit("stories", "ann", "a b a b", n=0), _unit("stories", "ann", "a b", n=1),
        _unit("stories", "bob", "c d", n=0),
    ])
    d1 = _by(S.distinct_n(u, 1, None, "report"), "distinct_1")
    d2 = _by(S.distinct_n(u, 2, 0.9, "report"), "distinct_2")
    assert d1[("stories", "blogger:ann")]["value"] == pytest.approx(2 / 6) and d1[("stories", "blogger:ann")]["passed"] is None
    assert d1[("stories", "*")]["value"] == pytest.approx(4 / 8)
    # ann's bigrams: ab ba ab | ab -> 2 of 4 (none across her two stories' boundary); everyone: ab ba cd of 5
    assert d2[("stories", "blogger:ann")]["value"] == pytest.approx(2 / 4) and d2[("stories", "blogger:ann")]["passed"] is False
    assert d2[("stories", "blogger:bob")]["passed"] is True and d2[("stories", "*")]["value"] == pytest.approx(3 / 5)
    assert d2[("stories", "blogger:ann")]["detail"] == "2 distinct of 4 2-grams"


def test_a_failed_gate_keeps_the_unit_out_of_gold_and_records_why_report_only_does_not(spark):
    long_persona = " ".join(["word"] * 120)
    u = _units(spark, [_unit("persona", "ann", long_persona), _unit("persona", "bob", "A baker."),
                       _unit("stories", "ann", "one one", n=0), _unit("stories", "ann", "one one", n=1)])
    judged = spark.createDataFrame([("persona", "blogger:ann", "ok", True), ("persona", "blogger:bob", "ok", True),
                                    ("stories", "blogger:ann#0", "fine", True), ("stories", "blogger:ann#1", None, False)],
                                   "artifact string, input_id string, reasons string, accepted boolean")
    for mode, gold in (("gate", {"blogger:bob"}), ("report", {"blogger:ann", "blogger:bob"})):
        gates = S.gate_failures(S.length_words(u, LIMITS, mode), u)
        out = {r["input_id"]: r for r in S.apply_gates(judged.where("artifact = 'persona'"), gates).collect()}
        assert {k for k, r in out.items() if r["accepted"]} == gold, mode
        if mode == "gate":
            assert out["blogger:ann"]["reasons"] == "ok | gate: length_words=120.0 fails <100 words"
        else:
            assert out["blogger:ann"]["reasons"] == "ok"
    # a per-user signal as a gate holds back every unit of the user
    gates = S.gate_failures(S.distinct_n(u, 1, 0.9, "gate"), u).collect()
    assert {(r["artifact"], r["input_id"]) for r in gates} == {("persona", "blogger:ann"), ("stories", "blogger:ann#0"),
                                                                ("stories", "blogger:ann#1")}
    out = {r["input_id"]: r for r in S.apply_gates(judged.where("artifact = 'stories'"),
                                                   spark.createDataFrame(gates)).collect()}
    assert not out["blogger:ann#0"]["accepted"] and out["blogger:ann#1"]["reasons"].startswith("gate: distinct_1=0.")


def test_signal_config_is_validated_and_the_demo_profile_samples_judge_agreement():
    with pytest.raises(ValueError, match="needs min"):
        SynthSignalsConfig.model_validate({"distinct_1": {"mode": "gate"}})
    with pytest.raises(ValueError):
        SynthSignalsConfig.model_validate({"qa_leakage": {"mode": "block"}})
    paper = LlmConfig()
    assert paper.signals.length_words.mode == "gate" and paper.signals.qa_leakage.mode == "report"
    assert paper.signals.judge_agreement.max_items == 0, "off in the paper profile"
    demo = LlmConfig(profile="demo")
    assert demo.signals.judge_agreement.max_items == 0, "off in the demo profile too: each re-judge is a CPU call"
    mine = LlmConfig.model_validate({"profile": "demo", "signals": {"judge_agreement": {"max_items": 2}}})
    assert mine.signals.judge_agreement.max_items == 2 and mine.signals.judge_agreement.share == 0.05


# --- the hook in the LLM stage -------------------------------------------------------------------------
class _Scripted:
    """Well-formed replies; a QA answer that repeats its scenario for LEAK records; judge verdicts
    9 everywhere, except a re-judge (sampling seed 1) of a FLIP record's QA item: 3."""

    name = "scripted"
    model = "scripted-signals"
    context_tokens = 4096

    def __init__(self):
        self.judge_seeds: list[int] = []

    def count_tokens(self, messages):
        return sum(len(m["content"]) for m in messages) // 4

    def generate(self, requests, sampling):
        from .fake_openai import reply_for

        out = []
        for r in requests:
            text = "\n".join(m["content"] for m in r.messages)
            props = set((r.schema or {}).get("properties", {}))
            reply = reply_for(r.schema, text)
            if "overall" in props:
                seed = (r.sampling or sampling).seed
                self.judge_seeds.append(seed)
                reply = {m: 9 for m in props if m != "reasons"} | {"reasons": "fine"}
                if seed == 1 and "FLIP" in text:
                    reply["overall"] = 3
            elif "items" in props and "LEAK" in text:
                reply = {"items": [{"type": "action", "scenario": "She missed the last train home and walked in the rain.",
                                    "question": "What did she do?", "answer": "She missed the last train home."}]}
            out.append(Response(r.key, json.dumps(reply), 10, 10, 1))
        return out


def _seed(store, spark):
    rows = []
    for i, (rid, user, text) in enumerate([("r_leak", "ann", "LEAK I missed the last train and walked home in the rain."),
                                           ("r_flip", "bob", "FLIP I baked bread with my grandmother on Sunday.")]):
        rec = {f.name: None for f in T.SILVER_RECORDS_SCRUBBED.fields}
        rec.update(record_id=rid, source="blogger", user_id=user, kind="blog_post", event_ts=datetime(2021, 1, 1 + i),
                   text=text, text_hash=rid, _bronze_run_id="b", _curate_run_id="c", scrub_version="v",
                   _scrub_run_id="s", pii_spans=[])
        rows.append(rec)
    store.ensure("silver_records_scrubbed", T.SILVER_RECORDS_SCRUBBED)
    store.append("silver_records_scrubbed", spark.createDataFrame(rows, T.SILVER_RECORDS_SCRUBBED))


@pytest.mark.skipif(ENGINE != "embedded", reason="LLM stages are exercised on the embedded engine")
def test_the_llm_stage_writes_signals_gates_gold_and_a_rerun_changes_nothing(tmp_path, engine):
    from lewin.jobs.label import run_labels
    from lewin.jobs.llm import backend_spec, run_llm
    from lewin.jobs.users import build_users
    from lewin.udfs.llm_backends import register_backend

    cfg = LewinConfig(storage=StorageConfig(root=tmp_path / "t", database="sig_" + tmp_path.name[-12:].replace("-", "_")))
    cfg.llm.engine.kind, cfg.llm.engine.model = "llamacpp", "scripted-signals"  # the spec key the double is under
    cfg.llm.artifacts = ["social_qa"]
    cfg.llm.qa_per_record = 1
    cfg.llm.signals.judge_agreement.share = 1.0
    cfg.llm.signals.judge_agreement.max_items = 6
    store = TableStore(Engine(engine.spark, engine.kind, 1, engine.table_format), cfg.storage)  # one process: the double
    _seed(store, engine.spark)
    double = _Scripted()
    register_backend(backend_spec(cfg), double)
    run_labels(store, cfg)
    build_users(store, cfg)

    r = run_llm(store, cfg)  # qa_leakage reported only: the leaking item is gold
    assert sorted(double.judge_seeds) == [0, 0, 1, 1], "two items judged, both judged again with seed + 1"
    assert next(s for s in r.stages if s.artifact == "judge_social_qa").sent == 4, "the second verdicts are counted"
    sig = {(r["input_id"], r["signal"]): r for r in store.read("synth_signals").collect()}
    leak = sig[("r_leak#0", "qa_leakage")]
    assert leak["value"] == 1.0 and leak["passed"] is False and leak["gate"] is False and leak["run_id"]
    assert sig[("r_flip#0", "qa_leakage")]["passed"] is True
    assert sig[("r_flip#0", "judge_agreement")]["value"] == 6 and not sig[("r_flip#0", "judge_agreement")]["passed"]
    assert sig[("r_leak#0", "judge_agreement")]["value"] == 0
    assert sig[("*", "judge_agreement")]["value"] == 0.5 and sig[("*", "near_duplicate")]["value"] == 0
    assert {"length_words", "distinct_1", "distinct_2", "near_duplicate"} <= {s for _, s in sig}
    assert {r["input_id"] for r in store.read("gold_social_qa").collect()} == {"r_leak#0", "r_flip#0"}

    cfg.llm.signals.qa_leakage.mode = "gate"  # now a gate: no LLM call, the item leaves gold with its reason
    assert run_llm(store, cfg).calls == 0 and len(double.judge_seeds) == 4, "the rerun sends nothing"
    judged = {r["input_id"]: r for r in store.read("judged_social_qa").collect()}
    assert judged["r_leak#0"]["accepted"] is False and judged["r_flip#0"]["accepted"] is True
    assert judged["r_leak#0"]["reasons"] == "fine | gate: qa_leakage=1.0 fails <=0.5"
    assert {r["input_id"] for r in store.read("gold_social_qa").collect()} == {"r_flip#0"}
    leak = store.read("synth_signals").where("input_id = 'r_leak#0' AND signal = 'qa_leakage'").first()
    assert leak["gate"] is True and leak["passed"] is False

    version = store.version("synth_signals")
    before = sorted(map(tuple, store.read("synth_signals").collect()))
    run_llm(store, cfg)
    assert store.version("synth_signals") == version, "a rerun writes nothing"
    assert sorted(map(tuple, store.read("synth_signals").collect())) == before
    assert len(double.judge_seeds) == 4
