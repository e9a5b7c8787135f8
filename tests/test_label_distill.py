"""``llm.labels: distilled``: the LLM labels a seeded sample per source, a classifier trained on it
labels the records it is sure about, the LLM the records inside the band.

One scripted run (module scope) on a thousand generated posts: an in-process engine double
labels by a rule a bag-of-words classifier can learn (a violent word: harm violence; a spam word:
quality low; else high, none) and records which posts it was asked about."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from lewin.jobs.engine import Engine
from lewin.jobs.label import distill_sample, run_labels
from lewin.jobs.llm import backend_spec
from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import ConfigError, LewinConfig, StorageConfig, load_config
from lewin.udfs.label_model import LabelModel, ScoreOptions, TrainOptions, score_batch, train_batch
from lewin.udfs.llm_backends import Response, register_backend

from .conftest import ENGINE
from .fake_openai import FakeOpenAI
from .test_llm_selection import _Recorder

pytestmark = pytest.mark.skipif(ENGINE != "embedded", reason="LLM stages are exercised on the embedded engine")

NEUTRAL = "garden kitchen train morning sister coffee walk book music weekend river dinner".split()
VIOLENT = ("stabbed", "gunfire")
SPAM = ("discount", "clickhere")
SOURCES = ("reddit", "blogger")
PER_SOURCE = 500
SAMPLE = 300
BAND = (0.2, 0.8)


def _rule(text: str) -> tuple[str, str]:
    """(quality, harm): a violent word is harm violence, a spam word quality low."""
    words = set(re.findall(r"\w+", text))
    return ("low" if words & set(SPAM) else "high"), ("violence" if words & set(VIOLENT) else "none")


def _texts() -> dict[str, tuple[str, str]]:
    """record_id -> (source, text): distinct posts of everyday words, a fifth with a violent word
    and a fifth with a spam word."""
    rng, out, seen = random.Random(7), {}, set()
    for source in SOURCES:
        while sum(1 for s, _ in out.values() if s == source) < PER_SOURCE:
            words = [rng.choice(NEUTRAL) for _ in range(rng.randint(8, 16))]
            kind = rng.random()
            if kind < 0.2:
                words.insert(rng.randrange(len(words)), rng.choice(VIOLENT))
            elif kind < 0.4:
                words.insert(rng.randrange(len(words)), rng.choice(SPAM))
            text = " ".join(words)
            if text not in seen:
                seen.add(text)
                out[f"{source[0]}{len(out):04d}"] = (source, text)
    return out


def _scrubbed(rid: str, source: str, text: str, i: int) -> dict:
    rec = {f.name: None for f in T.SILVER_RECORDS_SCRUBBED.fields}
    rec.update(record_id=rid, source=source, user_id=f"u{i % 20}", kind="blog_post",
               event_ts=datetime(2021, 1, 1) + timedelta(hours=i), text=text, text_hash=rid, _bronze_run_id="b",
               _curate_run_id="c", scrub_version="v", _scrub_run_id="s", pii_spans=[])
    return rec


TEXTS = _texts()
RECORDS = [_scrubbed(rid, source, text, i) for i, (rid, (source, text)) in enumerate(TEXTS.items())]
TRUTH = {rid: _rule(text) for rid, (_, text) in TEXTS.items()}


class _Labeller(_Recorder):
    """Labels a post by the rule; ``asked``: the record id of every post it was asked about."""

    @property
    def asked(self) -> list[str]:
        return [rid for _, rid in self.prompts]

    def generate(self, requests, sampling):
        out = []
        for r in requests:
            user = r.messages[-1]["content"]
            # the post ends the prompt; no post is the end of another
            (rid,) = [k for k, (_, text) in TEXTS.items() if user.endswith(text)]
            quality, harm = _rule(TEXTS[rid][1])
            self.prompts.append(("quality", rid))
            out.append(Response(r.key, json.dumps({"quality": quality, "harm": harm, "reason": "scripted"}), 10, 10, 1))
        return out


def _cfg(root, db: str) -> LewinConfig:
    cfg = LewinConfig(storage=StorageConfig(root=root, database=db))
    lc = cfg.llm
    lc.engine.kind, lc.engine.model = "llamacpp", "scripted-labeller"
    lc.labels = "distilled"
    lc.distill.sample_per_source, lc.distill.band = SAMPLE, BAND
    lc.chunk_size = 500
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory, engine):
    """Label, then label again with nothing changed."""
    cfg = _cfg(tmp_path_factory.mktemp("distill") / "t", "distill_" + os.urandom(4).hex())
    labeller = _Labeller("scripted-labeller")
    register_backend(backend_spec(cfg), labeller)
    store = TableStore(Engine(engine.spark, engine.kind, 1, engine.table_format), cfg.storage)  # the double is in-process
    store.ensure("silver_records_scrubbed", T.SILVER_RECORDS_SCRUBBED)
    store.append("silver_records_scrubbed", engine.spark.createDataFrame(RECORDS, T.SILVER_RECORDS_SCRUBBED))
    first = run_labels(store, cfg)
    asked_first = list(labeller.asked)
    versions = {t: store.version(t) for t in ("record_labels", "label_models", "llm_ledger")}
    again = run_labels(store, cfg)
    labels = {r["record_id"]: r for r in store.read("record_labels").collect()}
    return store, cfg, first, again, asked_first, labeller, versions, labels


def test_only_the_sample_and_the_band_go_to_the_llm(run):
    store, cfg, first, _, asked, _, _, labels = run
    assert len(asked) == len(set(asked)), "no record was asked twice"
    sample = {r["record_id"] for r in distill_sample(store.read("silver_records_scrubbed"), cfg.llm.distill).collect()}
    assert len(sample) == 2 * cfg.llm.distill.sample_per_source
    band = {k for k, v in labels.items() if BAND[0] <= v["keep_prob"] <= BAND[1]}
    assert set(asked) == sample | band
    assert band - sample and set(labels) - sample - band, "some records in the band, some left to the classifier"
    assert {k for k, v in labels.items() if v["labeller"] == "llm"} == sample | band
    for k, v in labels.items():
        assert v["label_model"] == first.model_version and v["keep_prob"] is not None
        if v["labeller"] == "classifier":
            assert v["keep"] == (v["keep_prob"] > BAND[1]) and not BAND[0] <= v["keep_prob"] <= BAND[1]
            assert v["ledger_key"] is None and v["model"] is None
        else:
            assert TRUTH[k] == (v["quality"], v["harm"]) and v["ledger_key"] is not None
    # the result and the funnel: who labelled what, per source, and the calls ratio
    assert first.labelled_by == {s: {"llm": sum(1 for k in sample | band if labels[k]["source"] == s),
                                     "classifier": sum(1 for k, v in labels.items() if v["source"] == s and k not in sample | band)}
                                 for s in SOURCES}
    assert first.label_calls_ratio == len(asked) / len(RECORDS) < 1
    funnel = {f.source: f for f in first.funnels()}
    assert funnel["reddit"].detail["labelled_by"] == first.labelled_by["reddit"]
    assert {s.artifact: s.sent for s in first.stages} == {"quality_sample": len(sample),
                                                          "quality_band": len(band - sample)}


def test_agreement_with_the_llm_is_stored_and_high_on_a_learnable_rule(run):
    store, _, first, _, _, _, _, labels = run
    (row,) = store.read("label_models").collect()
    assert row["model_version"] == first.model_version
    assert json.loads(row["n_train"]) == {"reddit": 225, "blogger": 225}
    assert json.loads(row["n_holdout"]) == {"reddit": 75, "blogger": 75}
    for who in ("classifier", "routed"):
        for figure in ("keep_accuracy", "quality_accuracy", "harmful_recall", "high_precision"):
            assert row[f"{who}_{figure}"] >= 0.9, (who, figure, row[f"{who}_{figure}"])
    assert row["routed_keep_accuracy"] >= row["classifier_keep_accuracy"]
    stored = json.loads(row["holdout_metrics"])
    assert stored == first.agreement and stored["all"]["holdout"] == 150
    assert set(stored) == {"all", *SOURCES} and stored["reddit"]["routed"]["keep_accuracy"] >= 0.9
    assert {f.source: f.detail.get("agreement") for f in first.funnels() if f.source in SOURCES} == {
        s: stored[s] for s in SOURCES}
    # the stored bytes are the model: it scores as the run did
    model = LabelModel.from_bytes(row["model"])
    assert model.version == first.model_version and model.dim == 2**18
    some = list(TEXTS)[:50]
    keep_prob, _, _ = model.decide([TEXTS[k][1] for k in some], ["high"])
    assert list(keep_prob) == pytest.approx([labels[k]["keep_prob"] for k in some])


def test_harmful_records_are_never_kept(run):
    *_, labels = run
    harmful = [k for k, (_, harm) in TRUTH.items() if harm != "none"]
    assert len(harmful) > 20
    assert not [k for k in harmful if labels[k]["keep"]]
    assert {labels[k]["gate"] for k in harmful} == {"harmful_violence"}
    spam = [k for k, (q, h) in TRUTH.items() if q == "low" and h == "none"]
    assert {labels[k]["gate"] for k in spam} == {"quality_low"}


def test_rerun_asks_nothing_and_writes_nothing(run):
    store, _, first, again, asked, labeller, versions, _ = run
    assert labeller.asked == asked, "the rerun sent no prompt"
    assert [s.sent for s in again.stages] == [0, 0]
    assert again.model_version == first.model_version and not again.model_trained and first.model_trained
    assert again.agreement == first.agreement and again.labelled_by == first.labelled_by
    assert {t: store.version(t) for t in versions} == versions, "no table was written"
    assert store.count("label_models") == 1


def test_training_is_deterministic_and_the_model_round_trips():
    rows = [{"record_id": rid, "text": text, "quality": TRUTH[rid][0], "harm": TRUTH[rid][1]}
            for rid, (_, text) in list(TEXTS.items())[:300]]
    opts = TrainOptions("v", 2**12, 50)

    def trained(rows) -> bytes:
        batch = pa.RecordBatch.from_pydict({"rows": [rows]})
        (out,) = train_batch(batch, opts)
        return out.column("model")[0].as_py()

    blob = trained(rows)
    assert trained(list(reversed(rows))) == blob, "the order Spark collects the rows in does not matter"
    model = LabelModel.from_bytes(blob)
    texts = [r["text"] for r in rows[:50]] + ["", None]
    scored = next(score_batch(pa.RecordBatch.from_pydict({"record_id": list(range(52)), "text": texts}),
                              ScoreOptions("v", blob, ("high",))))
    kp, quality, harm = model.decide(texts, ["high"])
    assert scored.column("keep_prob").to_pylist() == pytest.approx(list(kp))
    assert scored.column("quality").to_pylist() == quality and scored.column("harm").to_pylist() == harm
    # the labels agree with the keep decision
    assert all((p >= 0.5) == (q == "high" and h == "none") for p, q, h in zip(kp, quality, harm))
    # with every quality kept, a rejection can only be for harm
    kp, quality, harm = model.decide(texts, ["high", "medium", "low"])
    assert all((p >= 0.5) == (h == "none") for p, h in zip(kp, harm))


@pytest.mark.parametrize("band", ["[0.8, 0.2]", "[0.2, 1.5]", "[-0.1, 0.5]", "[0.5, 0.5]"])
def test_a_bad_band_fails_at_config_load_naming_the_key(band):
    with pytest.raises(ConfigError, match=r"llm\.distill\.band"):
        load_config(None, [f"llm.distill.band={band}"])


def test_distilled_is_a_labels_mode_and_llm_stays_the_default():
    assert load_config(None, []).llm.labels == "llm"
    cfg = load_config(None, ["llm.labels=distilled", "llm.distill.band=[0.1, 0.9]"])
    assert cfg.llm.distill.band == (0.1, 0.9)
    with pytest.raises(ConfigError, match=r"llm\.labels"):
        load_config(None, ["llm.labels=classifier"])


def test_llm_mode_marks_every_label_as_the_llms(tmp_path, engine):
    """The paper's mode: every record to the LLM, no classifier, no label_models; a record_labels
    table from before the new columns is rebuilt."""
    cfg = _cfg(tmp_path / "t", "llm_mode_" + os.urandom(4).hex())
    cfg.llm.labels = "llm"
    labeller = _Labeller("scripted-labeller")
    register_backend(backend_spec(cfg), labeller)
    store = TableStore(Engine(engine.spark, engine.kind, 1, engine.table_format), cfg.storage)
    store.ensure("silver_records_scrubbed", T.SILVER_RECORDS_SCRUBBED)
    store.append("silver_records_scrubbed", engine.spark.createDataFrame(RECORDS[:40], T.SILVER_RECORDS_SCRUBBED))
    before = StructType(T.RECORD_LABELS.fields[:-3])
    store.append("record_labels", engine.spark.createDataFrame(
        [{f.name: True if f.name == "keep" else "stale" for f in before.fields}], before))
    result = run_labels(store, cfg)
    assert store.read("record_labels").columns == T.RECORD_LABELS.fieldNames()
    labels = store.read("record_labels").collect()
    assert sorted(labeller.asked) == sorted(r["record_id"] for r in labels) and len(labels) == 40
    for r in labels:
        assert (r["labeller"], r["keep_prob"], r["label_model"]) == ("llm", None, None)
        assert (r["quality"], r["harm"]) == TRUTH[r["record_id"]] and r["ledger_key"] is not None
    assert result.label_calls_ratio == 1 and result.model_version is None and not store.exists("label_models")


def test_crash_after_a_label_chunk_then_rerun_loses_at_most_a_chunk(tmp_path, engine):
    """SIGKILL after the first ledger chunk of the sample (``lewin label`` through the CLI, worker
    pool on, the scripted OpenAI-compatible server); the rerun asks nothing twice."""
    texts = {f"c{i:02d}": f"I walked to the market with my sister on day {i}"
             + (" HARMFUL" if i % 5 == 0 else " LOW_QUALITY" if i % 5 == 1 else "") for i in range(30)}
    chunk = 4
    with FakeOpenAI() as srv:
        root = tmp_path / "t"
        store = TableStore(engine, StorageConfig(root=root, database="crash_" + os.urandom(4).hex()))
        rows = []
        for i, (rid, text) in enumerate(texts.items()):
            rec = {f.name: None for f in T.SILVER_RECORDS_SCRUBBED.fields}
            rec.update(record_id=rid, source=SOURCES[i % 2], user_id="ann", kind="blog_post",
                       event_ts=datetime(2021, 1, 1 + i), text=text, text_hash=rid, _bronze_run_id="b",
                       _curate_run_id="c", scrub_version="v", _scrub_run_id="s", pii_spans=[])
            rows.append(rec)
        store.ensure("silver_records_scrubbed", T.SILVER_RECORDS_SCRUBBED)
        store.append("silver_records_scrubbed", engine.spark.createDataFrame(rows, T.SILVER_RECORDS_SCRUBBED))
        base = [sys.executable, "-m", "lewin.jobs.cli", "--set", f"storage.root={root}", "--set", "llm.engine.kind=openai",
                "--set", f"llm.engine.base_url={srv.url}", "--set", "llm.engine.model=scripted", "--set",
                "llm.labels=distilled", "--set", "llm.distill.sample_per_source=8", "--set", "llm.distill.features=4096",
                "--set", f"llm.chunk_size={chunk}", "--set", "llm.engine.max_retries=0", "label"]
        out = tmp_path / "o.txt"
        with out.open("w") as o:
            rc = subprocess.run(base, env=dict(os.environ, LEWIN_FAILPOINT="label.after_chunk"), stdout=o, stderr=o,
                                timeout=600).returncode
        assert rc == -signal.SIGKILL, out.read_text()[-3000:]
        assert 0 < store.count("llm_ledger") <= chunk, "exactly the first chunk was saved"
        with out.open("w") as o:
            assert subprocess.run(base, stdout=o, stderr=o, timeout=600).returncode == 0, out.read_text()[-3000:]
        ledger = store.read("llm_ledger")
        assert ledger.groupBy("ledger_key").count().where("count > 1").count() == 0
        assert sum(n - 1 for n in srv.calls.values()) == 0, "nothing saved was asked again"
        assert srv.total == ledger.count() >= 16, "the sample (8 a source) and the band, each asked once"
        labels = store.read("record_labels")
        assert labels.count() == len(texts) and store.count("label_models") == 1
        assert labels.where(F.col("labeller") == "llm").count() == ledger.count()
        kept = {r["record_id"] for r in labels.where("keep").collect()}
        assert not kept & {k for k, t in texts.items() if "HARMFUL" in t or "LOW_QUALITY" in t}
