"""PII: surrogates, detection, the scrub job, leaks, retention, consistency."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lewin.jobs.cli import bundled_sample
from lewin.jobs.curate import curate
from lewin.jobs.ingest import ingest
from lewin.jobs.scrub import resolve_salt, scrub
from lewin.udfs import pii
from lewin.udfs.pii_eval import build, score
from lewin.udfs.surrogates import Surrogates

from .conftest import ENGINE, SHARED_DATA

SALT = b"test-salt-not-a-secret"


def test_surrogates_are_deterministic_per_user_and_keep_the_kind():
    s = Surrogates(SALT)
    a1 = s.replace("u1", "EMAIL_ADDRESS", "Jane.Doe@Example.com")
    assert a1 == s.replace("u1", "EMAIL_ADDRESS", "jane.doe@example.com ")  # canonical form
    assert a1 != s.replace("u2", "EMAIL_ADDRESS", "jane.doe@example.com")
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", a1)
    assert Surrogates(b"another key").replace("u1", "EMAIL_ADDRESS", "jane.doe@example.com") != a1
    # names token by token: the first name alone maps like the first name in the full name
    full = s.replace("u1", "PERSON", "Oluwaseun Adeyemi")
    assert full.split()[0] == s.replace("u1", "PERSON", "Oluwaseun") and len(full.split()) == 2
    assert "Oluwaseun" not in full and "Adeyemi" not in full
    # shapes
    phone = s.replace("u1", "PHONE_NUMBER", "(415) 555-0142")
    assert re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", phone) and phone != "(415) 555-0142"
    ssn = s.replace("u1", "US_SSN", "078-05-1121")
    assert re.fullmatch(r"9\d\d-\d\d-\d{4}", ssn)
    card = s.replace("u1", "CREDIT_CARD", "4111 1111 1111 1111").replace(" ", "")
    assert len(card) == 16 and _luhn_ok(card)
    iban = s.replace("u1", "IBAN_CODE", "DE89 3704 0044 0532 0130 00")
    compact = iban.replace(" ", "")
    assert compact[:2] == "DE" and len(compact) == 22 and _iban_ok(compact)
    assert ":" in s.replace("u1", "IP_ADDRESS", "2001:db8::1")


def _luhn_ok(num: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(num)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _iban_ok(iban: str) -> bool:
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def test_resolve_merges_overlaps_without_leaving_fragments():
    F_ = pii.Found
    spans = pii.resolve([F_(0, 10, "URL", 0.6), F_(5, 14, "PHONE_NUMBER", 0.4), F_(20, 31, "US_SSN", 0.5),
                         F_(20, 31, "PHONE_NUMBER", 0.4), F_(40, 60, "EMAIL_ADDRESS", 1.0), F_(40, 45, "PERSON", 0.85)],
                        {})
    assert [(s.start, s.end, s.etype) for s in spans] == [(0, 14, "URL"), (20, 31, "US_SSN"), (40, 60, "EMAIL_ADDRESS")]
    assert pii.resolve([F_(0, 5, "URL", 0.3)], {"URL": 0.5}) == []


@pytest.fixture(scope="module")
def scrubber():
    from lewin.schemas.config import load_config

    cfg = load_config().pii
    return pii.PiiOptions(entities=tuple(cfg.entities), min_score=tuple(cfg.min_score.items()),
                          spacy_model=cfg.spacy_model, ner_window=cfg.ner_window, salt=SALT)


def test_every_supported_type_is_found_and_replaced(scrubber):
    import pyarrow as pa

    text = ("Yesterday I met Oluwaseun Adeyemi at the market. Email me at olu.adeyemi@posteo.de or call "
            "(415) 867-5309. My SSN is 219-09-9999 and my card 4539 1488 0343 6467 was charged. "
            "We moved to 48 Larkspur Lane, Millbrook. See instagram.com/olu_adeyemi99 for photos. "
            "The server is at 203.0.113.57 and my IBAN is DE89 3704 0044 0532 0130 00. Then Oluwaseun left.")
    out = next(pii.scrub_batch(pa.record_batch({"record_id": ["r"], "user_id": ["u"], "text": [text], "title": [None]}),
                               scrubber)).to_pylist()[0]
    for original in ("Oluwaseun", "Adeyemi", "olu.adeyemi@posteo.de", "867-5309", "219-09-9999", "4539 1488",
                     "Larkspur", "olu_adeyemi99", "203.0.113.57", "DE89 3704"):
        assert original not in out["text"], original
    types = {s["type"] for s in out["pii_spans"]}
    assert types >= {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "CREDIT_CARD", "STREET_ADDRESS", "URL",
                     "IP_ADDRESS", "IBAN_CODE"}
    # spans point into the scrubbed text, and carry no original value
    for sp in out["pii_spans"]:
        assert 0 <= sp["start"] < sp["end"] <= len(out["text"]) and set(sp) == {"field", "type", "start", "end", "score"}
    assert out["text"].startswith("Yesterday I met ") and out["text"].endswith(" left.")


def test_hard_negatives_stay(scrubber):
    import pyarrow as pa

    text = ("It cost $1,249.99 in 2019. The meeting moved to 10:30 on 12/05/2021. Version 2.3.14 fixed it. "
            "We read The Great Gatsby in March and went to google.com for answers.")
    out = next(pii.scrub_batch(pa.record_batch({"record_id": ["r"], "user_id": ["u"], "text": [text], "title": [None]}),
                               scrubber)).to_pylist()[0]
    assert out["text"] == text and out["pii_spans"] == []


def test_evaluation_set_labels_and_recall(scrubber):
    docs = build(SHARED_DATA if SHARED_DATA.is_dir() else None, n_generated=40)
    assert all(d.text[s:e] for d in docs for s, e, _ in d.gold)
    det = pii.detector(scrubber.entities, scrubber.spacy_model, scrubber.ner_window)
    preds = [[(f.start, f.end, f.etype) for f in pii.resolve(fs, dict(scrubber.min_score))] for fs in det.detect([d.text for d in docs])]
    res = score(docs, preds)
    for t in ("EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN"):
        assert res[t]["recall"] == 1.0, (t, res[t])
    assert res["PERSON"]["recall"] >= 0.7


def _fresh_store(engine, root: Path):
    import uuid

    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import LewinConfig, StorageConfig

    cfg = LewinConfig(storage=StorageConfig(root=root, database=f"t_{uuid.uuid4().hex[:10]}"))
    cfg.pii.salt = SALT.decode()
    return TableStore(engine, cfg.storage), cfg


@pytest.fixture(scope="module")
def curated_root(tmp_path_factory, engine) -> Path:
    """The bundled sample ingested and curated once for the module; never written afterwards (tests
    scrub a copy of it)."""
    import shutil

    base = tmp_path_factory.mktemp("pii_curated")
    data = base / "sample"
    shutil.copytree(bundled_sample(), data, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    store, cfg = _fresh_store(engine, base / "tables")
    for s in ("reddit", "twitter", "blogger", "amazon"):
        ingest(store, cfg, s, [str(data / s)])
        curate(store, cfg, s)
    return cfg.storage.root


def _copy_of_curated(engine, curated_root: Path, dst: Path):
    """A private copy of the curated tables (path-based Delta tables copy as folders)."""
    import shutil

    shutil.copytree(curated_root, dst / "tables")
    return _fresh_store(engine, dst / "tables")


@pytest.fixture(scope="module")
def scrubbed(tmp_path_factory, engine, curated_root):
    """One scrub of the curated sample, shared by the tests that only read it."""
    store, cfg = _copy_of_curated(engine, curated_root, tmp_path_factory.mktemp("pii_scrubbed"))
    return store, cfg, scrub(store, cfg)


@pytest.fixture
def private(tmp_path, engine, curated_root):
    """A copy of the curated sample of the test's own, not yet scrubbed (for tests that write)."""
    return _copy_of_curated(engine, curated_root, tmp_path)


@pytest.mark.transforms
def test_same_value_same_user_same_surrogate_other_user_other(scrubbed):
    store, _, r = scrubbed
    assert r.reconciles and r.records_in == store.count("silver_records")
    rows = store.read("silver_records_scrubbed").where(F.col("source") == "reddit").collect()

    def emails(row):
        return [row["text"][s["start"]:s["end"]] for s in row["pii_spans"] if s["type"] == "EMAIL_ADDRESS" and s["field"] == "text"]

    shared = "tamsin.okafor48@posteo.de"
    lou = [e for row in rows if row["user_id"] == "long_history_lou" for e in emails(row)]
    other = [e for row in rows if row["user_id"] == "sample_user_01" for e in emails(row)]
    assert len(lou) == 2 and lou[0] == lou[1] and shared not in lou
    assert len(other) == 1 and other[0] != lou[0]
    # the originals are upstream only
    assert store.read("silver_records").where(F.col("text").contains(shared)).count() == 3
    assert store.read("silver_records_scrubbed").where(F.col("text").contains(shared)).count() == 0


@pytest.mark.transforms
def test_scrub_is_incremental_and_follows_silver(private):
    store, cfg = private
    first = scrub(store, cfg)
    assert first.records_in == store.count("silver_records") > 0
    versions = store.version("silver_records_scrubbed")
    again = scrub(store, cfg)
    assert again.records_in == 0 and again.removed == 0
    assert store.version("silver_records_scrubbed") == versions
    # a row leaving silver leaves the scrubbed table too
    gone = store.read("silver_records").where(F.col("source") == "blogger").limit(1).select("record_id")
    gone_id = gone.collect()[0]["record_id"]
    store.delete_keys("silver_records", gone, ["record_id"])
    r = scrub(store, cfg)
    assert r.removed == 1 and store.read("silver_records_scrubbed").where(F.col("record_id") == gone_id).count() == 0
    # a new key changes every surrogate: everything is scrubbed again
    cfg.pii.salt = "a different key"
    r = scrub(store, cfg)
    assert r.records_in == first.records_in - 1


@pytest.mark.transforms
def test_retention_drops_upstream_originals(private):
    store, cfg = private
    cfg.pii.retention = "drop_upstream_text"
    scrub(store, cfg)
    scrubbed_ids = store.read("silver_records_scrubbed").select("record_id")
    for table in ("bronze_reddit", "bronze_twitter", "bronze_blogger", "bronze_amazon"):
        rows = store.read(table).join(scrubbed_ids, "record_id", "left_semi")
        assert rows.count() > 0 and rows.where(F.col("text").isNotNull()).count() == 0, table
    assert store.read("silver_records").where(F.col("text") != "").count() == 0
    assert store.read("silver_records_scrubbed").where(F.length("text") > 0).count() == store.count("silver_records_scrubbed")


def test_salt_comes_from_config_env_or_a_created_secret_file(tmp_path, monkeypatch):
    from lewin.schemas.config import LewinConfig, StorageConfig

    cfg = LewinConfig(storage=StorageConfig(root=tmp_path))
    monkeypatch.delenv("LEWIN_PII_SALT", raising=False)
    key = resolve_salt(cfg)
    path = tmp_path / "_secrets" / "pii_salt"
    assert path.read_bytes() == key and oct(path.stat().st_mode & 0o777) == "0o600"
    assert resolve_salt(cfg) == key
    monkeypatch.setenv("LEWIN_PII_SALT", "from-env")
    assert resolve_salt(cfg) == b"from-env"
    cfg.pii.salt = "from-config"
    assert resolve_salt(cfg) == b"from-config"
    assert "from-config" not in repr(pii.PiiOptions(entities=("PERSON",), salt=b"from-config"))


@pytest.mark.skipif(ENGINE != "embedded", reason="runs the CLI on the default engine")
def test_no_injected_value_reaches_anything_downstream_of_the_scrub(sample_run):
    """`lewin run` on the bundled sample: every injected value is absent from the scrubbed table,
    the users table, the LLM ledger (prompts' replies), the synth/judged/gold tables, the training
    samples and MCQ items, every file those stages wrote (shards included), and every line the run
    printed."""
    from deltalake import DeltaTable

    injected = json.loads((bundled_sample() / "pii_injected.json").read_text(encoding="utf-8"))
    assert len(injected) >= 40 and len({x["type"] for x in injected}) == 9
    cwd, r = sample_run
    root = cwd / "lewin-data"
    # upstream holds them (so the check below can fail)
    silver = json.dumps(DeltaTable(str(root / "silver_records")).to_pyarrow_table().to_pylist(), default=str, ensure_ascii=False)
    assert sum(x["value"] in silver for x in injected) >= 40
    downstream = ["silver_records_scrubbed", "record_labels", "users", "llm_ledger"] + [
        f"{k}_{a}" for a in ("persona", "profile", "stories", "writing_style", "scenario", "social_qa")
        for k in ("synth", "judged", "gold") if (root / f"{k}_{a}").is_dir()] + ["shard_samples", "mcq_items"]
    assert len(downstream) > 10
    for table in downstream:
        rows = json.dumps(DeltaTable(str(root / table)).to_pyarrow_table().to_pylist(), default=str, ensure_ascii=False)
        leaked = [x for x in injected if x["value"] in rows]
        assert leaked == [], (table, leaked)
        for f in (root / table).rglob("*"):
            if f.is_file():
                blob = f.read_bytes()
                assert not [x for x in injected if x["value"].encode() in blob], f
    # the training shards, MCQ sets and manifest
    shard_files = [f for f in (root / "shards").rglob("*") if f.is_file()]
    assert any(f.suffix == ".parquet" for f in shard_files) and any(f.suffix == ".jsonl" for f in shard_files)
    for f in shard_files:
        if f.suffix == ".parquet":  # compressed: check the decoded rows
            import pyarrow.parquet as pq

            blob = json.dumps(pq.read_table(f).to_pylist(), ensure_ascii=False).encode()
        else:
            blob = f.read_bytes()
        assert not [x for x in injected if x["value"].encode() in blob], f
    logs = r.stdout + r.stderr
    assert not [x for x in injected if x["value"] in logs]
    assert "leak-test-key" not in logs
