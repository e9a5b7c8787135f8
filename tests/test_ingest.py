"""Ingest job: bad input to quarantine, reconciliation, incremental runs, crash and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from lewin.jobs.ingest import ingest
from lewin.schemas.config import StorageConfig

from .conftest import ENGINE, FIXTURES

SAMPLE_KEPT = {
    "bronze_reddit": 68, "bronze_reddit_comments": 60, "bronze_twitter": 60, "bronze_blogger": 26,
    "bronze_amazon": 108, "bronze_amazon_items": 36,
}
SAMPLE_SOURCES = {"reddit": ["bronze_reddit", "bronze_reddit_comments"], "twitter": ["bronze_twitter"],
                  "blogger": ["bronze_blogger"], "amazon": ["bronze_amazon", "bronze_amazon_items"]}


def ingest_sample(store, cfg, sample: Path) -> dict:
    return {s: ingest(store, cfg, s, [str(sample / s)]) for s in SAMPLE_SOURCES}


@pytest.mark.transforms
def test_bad_input_lands_in_quarantine_with_distinct_reasons(store, cfg):
    cfg.ingest.max_record_bytes = 4096
    cfg.ingest.max_text_chars = 2000
    r = ingest(store, cfg, "reddit", [str(FIXTURES / "bad_input")])
    q = store.read("quarantine")
    jsonl = {row["line"]: row for row in q.where(F.col("file").endswith("reddit_bad.jsonl")).collect()}
    expected = {
        2: "malformed_json", 3: "not_a_json_object", 4: "invalid_utf8", 5: "record_too_long", 6: "missing_user",
        7: "wrong_type:author", 8: "missing_time", 9: "unparseable_time", 10: "time_out_of_range",
        11: "wrong_type:score", 12: "wrong_type:num_comments", 13: "negative_count:num_comments",
        14: "missing_text", 15: "wrong_type:text", 16: "text_too_long", 17: "time_out_of_range",
    }
    assert {line: row["reason"] for line, row in jsonl.items()} == expected
    assert len(set(expected.values())) >= 15
    # the raw text is kept, invalid bytes visible, and nothing of it lands in bronze
    assert '"id": "b08"' in jsonl[9]["raw"] and "\\xe9" in jsonl[4]["raw"]
    assert jsonl[5]["raw_truncated"] is False and len(jsonl[5]["raw"]) > 4096
    other = {(Path(row["file"]).name, row["reason"]) for row in q.collect()} - {("reddit_bad.jsonl", x) for x in expected.values()}
    assert other == {("reddit_bad.csv", "csv_field_count_mismatch"), ("reddit_truncated.jsonl.gz", "file_read_error")}
    # funnel: 18 records + 1 blank line in the JSONL; 2 CSV rows; the truncated gzip's readable part + its fault
    gz_kept = store.read("bronze_reddit").where(F.col("_file").endswith(".gz")).count()
    assert gz_kept > 0
    assert r.blank_lines == 1
    assert r.quarantined == 16 + 1 + 1
    assert r.kept == 1 + 1 + gz_kept  # good1, the CSV's good row, the gzip's readable records
    assert r.duplicates == 1  # good1 appears twice
    assert r.records_in == r.kept + r.duplicates + r.quarantined
    funnel = store.read("runs").where(F.col("run_id") == r.run_id).collect()[0]
    assert (funnel["records_in"], funnel["kept"], funnel["quarantined"], funnel["duplicates"]) == (
        r.records_in, r.kept, r.quarantined, r.duplicates)


@pytest.mark.transforms
def test_sample_ingest_counts_and_rerun_is_a_noop(store, cfg, sample_copy):
    first = ingest_sample(store, cfg, sample_copy)
    for s, tables in SAMPLE_SOURCES.items():
        for t in tables:
            assert store.count(t) == SAMPLE_KEPT[t], t
        assert first[s].reconciles
    assert first["twitter"].quarantined_by_reason == {"twitter_error_page": 1}
    versions = {t: store.version(t) for t in SAMPLE_KEPT}
    log_rows = store.count("ingest_log")
    second = ingest_sample(store, cfg, sample_copy)
    for s, r in second.items():
        assert (r.files, r.records_in, r.kept, r.quarantined) == (0, 0, 0, 0), s
    assert {t: store.count(t) for t in SAMPLE_KEPT} == SAMPLE_KEPT
    assert {t: store.version(t) for t in SAMPLE_KEPT} == versions, "a no-op rerun must not write bronze"
    assert store.count("ingest_log") == log_rows


@pytest.mark.transforms
def test_new_and_changed_files_only(store, cfg, sample_copy):
    ingest_sample(store, cfg, sample_copy)
    extra = sample_copy / "blogger" / "more.jsonl"
    extra.write_text('{"id": 1, "author_id": 7, "date": "2004-01-01", "text": "I wrote a new post."}\n')
    r = ingest(store, cfg, "blogger", [str(sample_copy / "blogger")])
    assert (r.files, r.records_in, r.kept) == (1, 1, 1)
    # the same file grows: it is read again, and the MERGE keeps every record exactly once
    with extra.open("a") as f:
        f.write('{"id": 2, "author_id": 7, "date": "2004-01-02", "text": "And another one."}\n')
    r = ingest(store, cfg, "blogger", [str(sample_copy / "blogger")])
    assert (r.files, r.records_in, r.kept, r.duplicates) == (1, 2, 1, 1)
    assert store.count("bronze_blogger") == SAMPLE_KEPT["bronze_blogger"] + 2
    ids = store.read("bronze_blogger").groupBy("record_id").count().where("count > 1").count()
    assert ids == 0


def _cli(args, root: Path, env_extra=None):
    """Run the CLI; output goes to files, not pipes, so a killed run cannot hang the test."""
    env = dict(os.environ, **(env_extra or {}))
    cmd = [sys.executable, "-m", "lewin.jobs.cli", "--set", f"storage.root={root}", "--set", "ingest.batch_max_files=1",
           "--set", "llm.enabled=false", *args]
    out, err = root.parent / "cli.out", root.parent / "cli.err"
    with out.open("w") as o, err.open("w") as e:
        rc = subprocess.run(cmd, env=env, stdout=o, stderr=e, timeout=600).returncode
    return subprocess.CompletedProcess(cmd, rc, out.read_text(), err.read_text())


def _counts(store) -> dict:
    return {t: store.count(t) for t in SAMPLE_KEPT} | {"quarantine": store.count("quarantine")}


def _unique(store) -> None:
    for t in SAMPLE_KEPT:
        assert store.read(t).groupBy("record_id").count().where("count > 1").count() == 0, t
    assert store.read("quarantine").groupBy("quarantine_id").count().where("count > 1").count() == 0
    assert store.read("ingest_log").groupBy("path", "size", "mtime_ns").count().where("count > 1").count() == 0


@pytest.mark.skipif(ENGINE != "embedded", reason="crash recovery relies on Delta's atomic commits")
@pytest.mark.parametrize("failpoint", ["ingest.after_bronze_merge", "ingest.before_log"])
def test_killed_at_a_failpoint_then_rerun_ends_exactly_once(tmp_path, sample_copy, failpoint, engine):
    from lewin.jobs.tables import TableStore

    root = tmp_path / "tables"
    killed = _cli(["ingest", "--source", "reddit", "--path", str(sample_copy / "reddit")], root,
                  {"LEWIN_FAILPOINT": failpoint})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    store = TableStore(engine, StorageConfig(root=root, database="t_kill_" + failpoint.replace(".", "_")))
    assert store.count("bronze_reddit") + store.count("bronze_reddit_comments") > 0, "the crash came after a write"
    assert store.count("ingest_log") == 0, "the crashed batch never reached the log"
    resumed = _cli(["ingest", "--source", "reddit", "--path", str(sample_copy / "reddit")], root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert store.count("bronze_reddit") == SAMPLE_KEPT["bronze_reddit"]
    assert store.count("bronze_reddit_comments") == SAMPLE_KEPT["bronze_reddit_comments"]
    assert store.count("ingest_log") == len([p for p in (sample_copy / "reddit").rglob("*") if p.is_file()])
    for t in ("bronze_reddit", "bronze_reddit_comments"):
        assert store.read(t).groupBy("record_id").count().where("count > 1").count() == 0


def _commits(root: Path) -> set[Path]:
    """Every Delta commit file under ``root`` (a table folder's ``_delta_log/*.json``)."""
    return set(root.glob("*/_delta_log/*.json")) if root.is_dir() else set()


def _kill_after_commits(cmd: list[str], root: Path, n: int, timeout: float = 600) -> int:
    """Start ``cmd``, wait until it has committed ``n`` new table versions under ``root`` (evidence
    that it is writing, not still starting up), then SIGKILL it; returns the commits it made."""
    before = _commits(root)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while len(_commits(root) - before) < n:
            assert proc.poll() is None, f"the run ended (rc={proc.returncode}) before {n} commits"
            assert time.monotonic() < deadline, f"no {n} commits within {timeout}s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return len(_commits(root) - before)


@pytest.mark.skipif(ENGINE != "embedded", reason="crash recovery relies on Delta's atomic commits")
@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_rerun_matches_a_clean_run(tmp_path, sample_copy, engine):
    from lewin.jobs.tables import TableStore

    clean_root, crash_root = tmp_path / "clean", tmp_path / "crash"
    assert _cli(["run", "--data", str(sample_copy)], clean_root).returncode == 0
    clean = TableStore(engine, StorageConfig(root=clean_root, database="t_clean"))
    expected = _counts(clean)
    assert expected == SAMPLE_KEPT | {"quarantine": 1}
    cmd = [sys.executable, "-m", "lewin.jobs.cli", "--set", f"storage.root={crash_root}", "--set",
           "ingest.batch_max_files=1", "--set", "llm.enabled=false", "run", "--data", str(sample_copy)]
    # killed twice mid-write: after the first commit of the first run, then a few commits into the
    # second (which starts over the first one's partial state)
    for n in (1, 3):
        assert _kill_after_commits(cmd, crash_root, n) >= n
    final = _cli(["run", "--data", str(sample_copy)], crash_root)
    assert final.returncode == 0, final.stderr[-3000:]
    crashed = TableStore(engine, StorageConfig(root=crash_root, database="t_crash"))
    assert _counts(crashed) == expected
    _unique(crashed)
