"""The CLI end to end on the embedded engine; tables read back with delta-rs (deltalake)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from deltalake import DeltaTable

from .conftest import ENGINE, PROJECT
from .test_ingest import SAMPLE_KEPT

pytestmark = pytest.mark.skipif(ENGINE != "embedded", reason="CLI runs the default (embedded) engine")


def lewin(*args, cwd):
    import os

    env = dict(os.environ, LEWIN_PII_SALT="leak-test-key")  # the key the shared sample run used
    return subprocess.run([sys.executable, "-m", "lewin.jobs.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=900, env=env)


@pytest.fixture(scope="module")
def ran(sample_run):
    return sample_run


def test_run_on_the_bundled_sample_leaves_delta_tables_delta_rs_can_read(ran):
    cwd, r = ran
    assert "bundled sample" in r.stdout
    for table, n in SAMPLE_KEPT.items():
        dt = DeltaTable(str(cwd / "lewin-data" / table))
        assert dt.to_pyarrow_table().num_rows == n, table
    q = DeltaTable(str(cwd / "lewin-data" / "quarantine")).to_pyarrow_table().to_pylist()
    assert [(x["reason"], x["line"]) for x in q] == [("twitter_error_page", 5)]
    assert "every funnel reconciles" in r.stdout
    # ... and ends with training shards, their manifest, LlamaFactory's dataset_info and MCQ sets
    shards = cwd / "lewin-data" / "shards"
    manifest = json.loads((shards / "manifest.json").read_text())
    assert set(json.loads((shards / "dataset_info.json").read_text())) >= {"lewin_train", "lewin_test"}
    assert manifest["counts"]["train"] and manifest["counts"]["test"]
    assert sorted(p.name for p in (shards / "mcq").glob("*.jsonl")) and manifest["mcq"]
    assert (shards / "train" / "parquet" / "part-00000.parquet").is_file()


def test_sql_addresses_tables_by_name(ran):
    cwd, _ = ran
    r = lewin("sql", "SELECT count(*) AS n FROM bronze_amazon WHERE rating >= 1", "--format", "json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip()) == {"n": SAMPLE_KEPT["bronze_amazon"]}
    r = lewin("sql", "SELECT user_id, count(*) AS n FROM lewin.bronze_reddit GROUP BY user_id ORDER BY n DESC",
              "--format", "csv", "--limit", "1", cwd=cwd)
    assert r.returncode == 0 and r.stdout.splitlines()[1] == "long_history_lou,14"


def test_sql_over_curated_users(ran):
    cwd, _ = ran
    r = lewin("sql", "SELECT source, user_id, n_records FROM users WHERE n_records >= 8 ORDER BY n_records DESC, user_id",
              "--format", "json", "--limit", "0", cwd=cwd)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert rows[0] == {"source": "reddit", "user_id": "long_history_lou", "n_records": 17}  # 14 posts + 3 comments
    assert all(x["n_records"] >= 8 for x in rows) and len(rows) >= 10


def test_sql_error_is_a_message_not_a_traceback(ran):
    cwd, _ = ran
    r = lewin("sql", "SELECT no_such_column FROM bronze_reddit", cwd=cwd)
    assert r.returncode == 1 and "SQL error" in r.stderr and "Traceback" not in r.stderr


def _quickstart_run_of_this_code(root):
    """``root`` when it holds a finished `lewin run` of the bundled sample on the CPU engine made
    by exactly this code (the manifest's fingerprint of every source file), else None."""
    from lewin.jobs.emit import _code_version
    from lewin.jobs.cli import bundled_sample

    try:
        manifest = json.loads((root / "shards" / "manifest.json").read_text(encoding="utf-8"))
        files = [x["path"] for x in DeltaTable(str(root / "ingest_log")).to_pyarrow_table().to_pylist()]
        engines = {x["engine"] for x in DeltaTable(str(root / "llm_ledger")).to_pyarrow_table().to_pylist()}
    except Exception:  # absent, unfinished or another layout: not reusable
        return None
    sample = str(bundled_sample())
    same_code = manifest.get("lewin_code_version") == _code_version()
    return root if same_code and engines == {"llamacpp"} and files and all(sample in f for f in files) else None


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """The bundled sample through every stage on the CPU model (SmolLM2-135M on llama.cpp): the
    README Quickstart's own run (./lewin-data of this checkout, read only) when it was made by
    this code, else a fresh `lewin run` (15-20 minutes on 2 cores)."""
    reused = _quickstart_run_of_this_code(PROJECT / "lewin-data")
    if reused is not None:
        return reused
    cwd = tmp_path_factory.mktemp("cpu_run")
    r = subprocess.run([sys.executable, "-m", "lewin.jobs.cli", "run"], cwd=cwd, capture_output=True, text=True,
                       timeout=2700)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "'demo' profile" in r.stdout
    return cwd / "lewin-data"


@pytest.mark.slow
def test_llm_stages_fill_synth_judged_and_gold_on_the_cpu_engine(cpu_run):
    root = cpu_run
    assert _quickstart_run_of_this_code(root) == root
    ledger = DeltaTable(str(root / "llm_ledger")).to_pyarrow_table().to_pylist()
    assert {x["engine"] for x in ledger} == {"llamacpp"} and all(x["status"] in ("ok", "dead") for x in ledger)
    assert sum(x["tokens_out"] for x in ledger) > 0
    assert DeltaTable(str(root / "record_labels")).to_pyarrow_table().num_rows >= 1
    # every artifact was asked for; the 135M model fails some JSON (a dead letter after 3 attempts;
    # in the 2026-12-06 run, the only stories prompt), so most, not all, have synthetic rows
    arts = ("persona", "profile", "stories", "writing_style", "scenario", "social_qa")
    assert all(any(x["artifact"] == a for x in ledger) for a in arts)
    made = [a for a in arts if DeltaTable(str(root / f"synth_{a}")).to_pyarrow_table().num_rows]
    assert len(made) >= 4, made
    judged_rows = 0
    for art in arts:
        # every artifact made was judged; the toy model's judge may fail its JSON, then it is a dead letter
        assert {x["status"] for x in ledger if x["artifact"] == f"judge_{art}"} <= {"ok", "dead"}
        assert art not in made or [x for x in ledger if x["artifact"] == f"judge_{art}"], art
        judged = DeltaTable(str(root / f"judged_{art}")).to_pyarrow_table().to_pylist()
        assert all(j["scores"] and j["judge_model"] for j in judged), art
        judged_rows += len(judged)
    assert judged_rows >= 3
    gold = sum(DeltaTable(str(root / f"gold_{a}")).to_pyarrow_table().num_rows
               for a in arts)
    assert gold >= 1


def test_status_and_second_run_is_a_noop(ran):
    cwd, _ = ran
    r = lewin("run", cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "reddit: 0 new files, 0 records" in r.stdout
    assert "(0 LLM calls this run)" in r.stdout and re.search(r"\(0\s+distractor\s+calls", r.stdout)
    assert "scrub: 0 silver rows scrubbed" in r.stdout
    assert re.search(r"label quality: \d+ records, 0 prompts sent", r.stdout)
    s = lewin("status", cwd=cwd)
    assert s.returncode == 0
    for table in SAMPLE_KEPT:
        assert f"lewin.{table}" in s.stdout


def test_ingest_command_validates_its_arguments(tmp_path):
    r = lewin("ingest", "--source", "myspace", "--path", ".", cwd=tmp_path)
    assert r.returncode == 2 and "--source" in r.stderr
    r = lewin("ingest", "--source", "reddit", "--path", "/no/such/dir", cwd=tmp_path)
    assert r.returncode == 2 and "/no/such/dir" in r.stderr


def test_audit_sheet_from_the_sample_run_and_its_scores(ran, tmp_path):
    import csv

    from lewin.schemas.llm import JUDGE_METRICS

    from .test_audit import _fill

    cwd, _ = ran
    sheet = tmp_path / "audit.csv"
    r = lewin("audit", "--n", "6", "--out", str(sheet), cwd=cwd)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(sheet.open()))
    assert 1 <= len(rows) <= 6 and {x["artifact"] for x in rows} <= set(JUDGE_METRICS)
    assert all(x["output"] for x in rows)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _fill(sheet, a, lambda i, c: 4)
    _fill(sheet, b, lambda i, c: 4 if i % 2 else 5)
    r = lewin("audit", "--score", str(a), str(b), cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "mean: " in r.stdout and "krippendorff_alpha: " in r.stdout
    r = lewin("audit", "--score", str(a), cwd=cwd)
    assert r.returncode == 2 and "two or more" in r.stderr


@pytest.mark.parametrize("command", [["llm"], ["label"], ["run"]])
def test_a_missing_cpu_engine_stops_the_command_at_start_naming_the_key_and_the_extra(tmp_path, command):
    """The CPU LLM engine is the `local` extra: without llama_cpp an LLM stage (or `lewin run`)
    stops before any work with one line naming the key and the extra; nothing is written."""
    code = ("import sys; sys.modules['llama_cpp'] = None; from lewin.jobs.cli import main; "
            f"sys.argv = ['lewin', *{command!r}]; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "llm.engine.kind=llamacpp" in r.stderr and "lewin[local]" in r.stderr
    assert not (tmp_path / "lewin-data").exists()
    r = subprocess.run([sys.executable, "-c", code.replace("main()", "")], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0  # the check, not the import, stops it
