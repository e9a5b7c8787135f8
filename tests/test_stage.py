"""The stage contract: every stage's ``runs`` rows on the bundled sample, field by field and checked
against the tables the stage wrote (read with delta-rs, independently of the engine); scratch
tables private to a run, dropped when the stage ends or fails, swept after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest

from lewin.schemas.config import LewinConfig
from lewin.jobs.stage import _SCRATCH_RE, SCRATCH_PREFIX, Funnel, RunContext, Stage, _host_hash

from .conftest import ENGINE, FIXTURES

# the bundled sample: source -> its bronze tables
SAMPLE_BRONZE = {"reddit": ["bronze_reddit", "bronze_reddit_comments"], "twitter": ["bronze_twitter"],
                 "blogger": ["bronze_blogger"], "amazon": ["bronze_amazon", "bronze_amazon_items"]}
# curation stream -> (bronze table, silver source, record_id prefix in silver/rejected or None)
CURATE_STREAMS = {"reddit": ("bronze_reddit", "reddit", "reddit:t3_"),
                  "reddit_comments": ("bronze_reddit_comments", "reddit", "reddit:t1_"),
                  "twitter": ("bronze_twitter", "twitter", None), "blogger": ("bronze_blogger", "blogger", None),
                  "amazon": ("bronze_amazon", "amazon", None)}
LLM_ORDER = [x for a in ("persona", "profile", "stories", "writing_style", "scenario", "social_qa")
             for x in (a, f"judge_{a}")]
ITEMS = {"stories": "stories", "social_qa": "items"}  # judged item by item
INGEST_ONLY = ("files", "files_skipped", "lines", "blank_lines")


# --- the sample run's tables, read with delta-rs ---------------------------------------------------
@pytest.fixture(scope="module")
def tables(sample_run):
    from deltalake import DeltaTable

    cwd, _ = sample_run
    root = cwd / "lewin-data"

    @cache
    def read(name: str) -> tuple:
        rows = DeltaTable(str(root / name)).to_pyarrow_table().to_pylist()
        if name == "runs":
            # other tests rerun `lewin run` in the same folder (idempotence checks): keep the first
            # pass, which ends with the first emit row
            first_end = min(r["finished_at"] for r in rows if r["stage"] == "emit")
            rows = [r for r in rows if r["finished_at"] <= first_end]
        return tuple(rows)

    read.root = root
    return read


def _rows(tables, stage: str) -> dict[str, dict]:
    rows = [r for r in tables("runs") if r["stage"] == stage]
    by_source = {r["source"]: r for r in rows}
    assert len(by_source) == len(rows), f"{stage}: one row per source in the run"
    return by_source


def _single_row(tables, stage: str) -> tuple[dict, dict]:
    """The one row (source "all") of a stage that is not per source, and its checked detail."""
    rows = _rows(tables, stage)
    assert set(rows) == {"all"}
    return rows["all"], _common(rows["all"], stage)


def _common(row: dict, stage: str) -> dict:
    """What every runs row satisfies; returns its parsed detail."""
    assert row["stage"] == stage and row["run_id"].startswith(f"{stage}-")
    assert row["started_at"] <= row["finished_at"]
    counts = [row[k] for k in ("records_in", "kept", "duplicates", "rejected", "quarantined")]
    assert all(isinstance(c, int) and c >= 0 for c in counts), row
    assert row["records_in"] == row["kept"] + row["duplicates"] + row["rejected"] + row["quarantined"], row
    if stage != "ingest":
        assert [row[k] for k in INGEST_ONLY] == [None] * 4, row
        assert row["duplicates"] == 0 and row["quarantined"] == 0, row
    detail = json.loads(row["detail"])
    assert isinstance(detail, dict) and isinstance(detail["seconds_by_step"], dict), detail
    assert all(isinstance(v, (int, float)) and v >= 0 for v in detail["seconds_by_step"].values())
    return detail


def test_runs_hold_every_stage_once_in_dag_order(tables):
    runs = tables("runs")
    by_stage: dict[str, set] = {}
    for r in runs:
        by_stage.setdefault(r["stage"], set()).add(r["run_id"])
    assert list(by_stage) and set(by_stage) == {"ingest", "curate", "scrub", "label", "users", "llm", "emit"}
    # one run id per stage, except ingest (one run per source)
    assert {s: len(ids) for s, ids in by_stage.items() if s != "ingest"} == {s: 1 for s in by_stage if s != "ingest"}
    assert len(by_stage["ingest"]) == len(SAMPLE_BRONZE)
    order = ["ingest", "curate", "scrub", "label", "users", "llm", "emit"]
    for before, after in pairwise(order):
        done = max(r["finished_at"] for r in runs if r["stage"] == before)
        assert done <= min(r["started_at"] for r in runs if r["stage"] == after), (before, after)
    leftovers = [p.name for p in tables.root.iterdir() if p.name.startswith(SCRATCH_PREFIX)]
    assert leftovers == [], "a finished run leaves no scratch table"


def test_runs_rows_of_ingest_per_source(tables):
    rows = _rows(tables, "ingest")
    assert set(rows) == set(SAMPLE_BRONZE)
    log = tables("ingest_log")
    quarantine = tables("quarantine")
    for source, bronze in SAMPLE_BRONZE.items():
        row = rows[source]
        detail = _common(row, "ingest")
        kept_by_table = {t: len(tables(t)) for t in bronze}
        assert detail["kept_by_table"] == kept_by_table, source
        assert row["kept"] == sum(kept_by_table.values()) > 0, source
        q = [x for x in quarantine if x["source"] == source]
        assert row["quarantined"] == len(q), source
        assert detail["quarantined_by_reason"] == dict(Counter(x["reason"] for x in q)), source
        assert row["duplicates"] == 0 and row["rejected"] == 0, source
        files = [x for x in log if x["source"] == source]
        assert row["files"] == len(files) > 0 and all(x["run_id"] == row["run_id"] for x in files), source
        assert row["records_in"] == sum(x["records"] for x in files), source
        assert row["files_skipped"] == 0 and detail["files_skipped"] == [], source
        assert isinstance(row["lines"], int) and row["lines"] > 0, source
        assert isinstance(row["blank_lines"], int) and 0 <= row["blank_lines"] <= row["lines"], source
        assert set(detail["seconds_by_step"]) >= {"read_parse_stage", "bronze_merge"}, source
    # the one known bad record of the sample
    assert rows["twitter"]["quarantined"] == 1 and rows["amazon"]["lines"] == rows["amazon"]["records_in"]


def _of_stream(row: dict, source: str, prefix: str | None) -> bool:
    return row["source"] == source and (prefix is None or row["record_id"].startswith(prefix))


def test_runs_rows_of_curate_per_stream(tables):
    rows = _rows(tables, "curate")
    assert set(rows) == set(CURATE_STREAMS)
    run_ids = {r["run_id"] for r in rows.values()}
    assert len(run_ids) == 1
    silver, rejected = tables("silver_records"), tables("rejected")
    for stream, (bronze, source, prefix) in CURATE_STREAMS.items():
        row = rows[stream]
        detail = _common(row, "curate")

        assert row["records_in"] == len(tables(bronze)) > 0, stream
        kept = [x for x in silver if _of_stream(x, source, prefix)]
        assert row["kept"] == len(kept), stream
        rej = [x for x in rejected if _of_stream(x, source, prefix)]
        assert all(x["run_id"] in run_ids for x in rej), stream
        assert row["rejected"] == len(rej), stream
        assert detail["rejected_by_rule"] == dict(Counter(x["rule"] for x in rej)), stream
        assert (detail["already_curated"], detail["displaced_existing"]) == (0, 0), stream
        assert (detail["kcore_moved_out"], detail["kcore_restored"]) == (0, 0), stream
        assert set(detail["seconds_by_step"]) >= {"clean_rules_annotate", "dedup", "merge"}, stream
        if stream != "amazon":
            assert detail["kcore_rounds"] == [] and detail["side_rows"] == {}, stream
    assert sum(r["kept"] for r in rows.values()) == len(silver)
    # amazon: the whole deduplicated pool goes through the k-core; kept = the rows inside it, the
    # rest are in `rejected` under amazon_kcore_v1, and the rounds are the kcore_rounds table
    amazon = rows["amazon"]
    detail = json.loads(amazon["detail"])
    pool = tables("silver_amazon_pool")
    kcore_out = detail["rejected_by_rule"]["amazon_kcore_v1"]
    assert len(pool) == amazon["kept"] + kcore_out
    assert {x["record_id"] for x in pool} >= {x["record_id"] for x in silver if x["source"] == "amazon"}
    rounds = sorted(tables("kcore_rounds"), key=lambda x: x["round"])
    assert [{k: x[k] for k in ("round", "users", "items", "interactions", "dropped")} for x in rounds] == detail["kcore_rounds"]
    assert all(x["run_id"] == amazon["run_id"] for x in rounds)
    assert rounds[-1]["interactions"] == amazon["kept"] and rounds[-1]["dropped"] == 0
    # the item catalogue rides along as a side table, outside the record counts
    assert detail["side_rows"] == {"silver_items": len(tables("silver_items"))}
    assert len(tables("silver_items")) == len(tables("bronze_amazon_items")) > 0


def test_runs_row_of_scrub(tables):
    row, detail = _single_row(tables, "scrub")
    scrubbed = tables("silver_records_scrubbed")
    assert row["records_in"] == row["kept"] == len(scrubbed) == len(tables("silver_records")) > 0
    assert row["rejected"] == 0 and detail["removed_downstream"] == 0
    spans = Counter(sp["type"] for x in scrubbed for sp in (x["pii_spans"] or []))
    assert detail["entities_replaced"] == dict(spans) and sum(spans.values()) > 0
    assert all(x["_scrub_run_id"] == row["run_id"] for x in scrubbed)


def test_runs_row_of_users(tables):
    row, detail = _single_row(tables, "users")
    users = tables("users")
    timelines = {(x["source"], x["user_id"]) for x in tables("silver_records_scrubbed")}
    assert row["kept"] == len(users) == len(timelines) == detail["users_changed"] == detail["users_total"] > 0
    assert row["records_in"] == row["kept"] and row["rejected"] == detail["users_removed"] == 0
    assert all(x["_users_run_id"] == row["run_id"] for x in users)


def test_runs_rows_of_label_per_source_and_the_gate_holds(tables):
    """label: one row per source over every scrubbed record (in = kept + rejected, by gate) and one
    for the quality prompts; every record in a timeline, and every record a shard sample names,
    has a keep label; no rejected record's text is in any shard."""
    rows = _rows(tables, "label")
    labels = tables("record_labels")
    scrubbed = tables("silver_records_scrubbed")
    assert {x["record_id"] for x in labels} == {x["record_id"] for x in scrubbed}
    assert set(rows) == {x["source"] for x in scrubbed} | {"quality"}
    for source, row in rows.items():
        detail = _common(row, "label")
        if source == "quality":
            assert row["records_in"] == len(scrubbed) and detail["calls"] >= len(scrubbed)
            continue
        mine = [x for x in labels if x["source"] == source]
        assert row["records_in"] == len(mine) > 0 and row["kept"] == sum(x["keep"] for x in mine), source
        assert detail["gates"] == dict(Counter(x["gate"] for x in mine)), source
    keep = {x["record_id"]: x["keep"] for x in labels}
    in_timelines = [r["record_id"] for u in tables("users") for r in u["records"]]
    assert in_timelines and all(keep[r] for r in in_timelines)
    samples = tables("shard_samples")
    named = [i for x in samples for i in x["artifact_ids"] if i in keep]
    assert all(keep[i] for i in named)
    gated = [x["text"] for x in scrubbed if not keep[x["record_id"]] and len(x["text"]) > 40]
    dump = json.dumps(samples, default=str, ensure_ascii=False)
    assert not [t for t in gated if json.dumps(t, ensure_ascii=False)[1:-1][:200] in dump]


def test_runs_rows_of_llm_per_artifact(tables):
    rows = _rows(tables, "llm")
    users = rows.pop("users")
    assert _common(users, "llm") and users["records_in"] >= 1
    notes = sorted(a for a in rows if a.startswith("user_notes_"))
    assert sorted(set(rows) - set(notes)) == sorted(LLM_ORDER)
    ledger = tables("llm_ledger")
    root = tables.root
    for artifact in LLM_ORDER:
        row = rows[artifact]
        detail = _common(row, "llm")
        mine = [x for x in ledger if x["artifact"] == artifact]
        status = Counter(x["status"] for x in mine)
        # one run: every ledger row of the artifact is one of this run's inputs
        assert row["records_in"] == len(mine) > 0, artifact
        assert row["kept"] == status["ok"] == detail["ok"], artifact
        assert row["rejected"] == status["dead"] + status["failed"] == detail["dead"] + detail["failed"], artifact
        assert (detail["dead"], detail["failed"]) == (status["dead"], status["failed"]), artifact
        assert detail["calls"] == sum(x["attempts"] for x in mine) >= row["records_in"], artifact
        assert detail["tokens_in"] == sum(x["tokens_in"] or 0 for x in mine), artifact
        assert detail["tokens_out"] == sum(x["tokens_out"] or 0 for x in mine), artifact
        assert all(x["run_id"] == row["run_id"] for x in mine), artifact
        if artifact.startswith("judge_"):
            base = artifact.removeprefix("judge_")
            judged = tables(f"judged_{base}")
            gold = tables(f"gold_{base}") if (root / f"gold_{base}").is_dir() else ()
            synth = tables(f"synth_{base}")
            demo = LewinConfig.model_validate({"llm": {"profile": "demo"}}).llm  # the sample run's profile
            cap = {"stories": demo.max_stories, "social_qa": demo.qa_per_record}.get(base)
            n_inputs = (sum(min(cap, len(json.loads(x["output"])[ITEMS[base]])) for x in synth) if base in ITEMS
                        else len(synth))
            assert row["records_in"] == n_inputs, artifact
            assert row["kept"] == len(judged), artifact
            assert detail["gold"] == len(gold) == sum(1 for x in judged if x["accepted"]), artifact
        else:
            assert detail["gold"] is None, artifact
            assert row["kept"] == len(tables(f"synth_{artifact}")), artifact


def test_runs_row_of_emit(tables):
    row, detail = _single_row(tables, "emit")
    samples = tables("shard_samples")
    assert row["kept"] == len(samples) > 0
    assert row["rejected"] == row["records_in"] - row["kept"]
    counts: dict = {}
    for x in samples:
        by_src = counts.setdefault(x["split"], {}).setdefault(x["task"], {})
        by_src[x["source"]] = by_src.get(x["source"], 0) + 1
    assert detail["counts"] == counts
    assert sum(detail["mcq"].values()) == len(tables("mcq_items")) > 0
    assert detail["mcq"] == dict(Counter(x["task"] for x in tables("mcq_items")))
    distractors = [x for x in tables("llm_ledger") if x["artifact"] == "distractor"]
    assert detail["distractor_calls"] == sum(x["attempts"] for x in distractors) > 0
    assert (tables.root.parent / detail["out_dir"] / "manifest.json").is_file()


# --- scratch tables --------------------------------------------------------------------------------
def _table_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(SCRATCH_PREFIX)) if root.is_dir() else []


def test_two_contexts_never_share_a_scratch_name(store, cfg):
    a, b = RunContext(store, cfg, "curate"), RunContext(store, cfg, "curate", run_id="same-run")
    c = RunContext(store, cfg, "curate", run_id="same-run")
    for ctx in (a, b, c):
        ctx.progress.close()
    names = [ctx.scratch("x") for ctx in (a, b, c)]
    assert len(set(names)) == 3, names
    for n in names:
        m = _SCRATCH_RE.match(n)
        assert m and m.group(1) == _host_hash() and int(m.group(2)) == os.getpid(), n
    assert a.scratch("x") == names[0], "one name per label within a context"
    assert a.scratch("y") != names[0]
    with pytest.raises(ValueError):
        a.scratch("no-dashes")


class _Probe(Stage):
    name = "probe"

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.names: list[str] = []
        self.existed: list[bool] = []

    def run(self, ctx: RunContext) -> list[Funnel]:
        spark = ctx.store.spark
        ctx.materialize("a", spark.range(3))
        ckpt = ctx.checkpointer("k")
        ckpt(spark.range(2), 0)
        ckpt(spark.range(2), 1)
        self.names = [ctx.scratch("a"), ctx.scratch("k_0"), ctx.scratch("k_1")]
        self.existed = [ctx.store.exists(n) for n in self.names]
        with ctx.step("probe_step"):
            pass
        if self.fail:
            raise RuntimeError("the stage failed")
        return [Funnel(stage="probe", records_in=3, kept=3)]


def test_execute_drops_its_scratch_tables_when_it_ends_and_when_it_fails(store, cfg):
    root = Path(cfg.storage.root)
    ok = _Probe()
    funnels = ok.execute(store, cfg)
    assert ok.existed == [True, True, True], "the tables existed while the stage ran"
    assert not any(store.exists(n) for n in ok.names) and _table_dirs(root) == []
    assert funnels[0].detail["seconds_by_step"].keys() == {"probe_step"}
    runs = [r for r in store.read("runs").collect() if r["stage"] == "probe"]
    assert [(r["run_id"], r["kept"]) for r in runs] == [(ok.last_run_id, 3)]

    bad = _Probe(fail=True)
    with pytest.raises(RuntimeError, match="the stage failed"):
        bad.execute(store, cfg)
    assert bad.existed == [True, True, True]
    assert not any(store.exists(n) for n in bad.names) and _table_dirs(root) == []
    assert store.read("runs").where("stage = 'probe'").count() == 1, "a failed stage records no funnel"


def test_sweep_drops_scratch_of_dead_owners_on_this_host_only(store, cfg):
    spark = store.spark
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        me = _host_hash()
        other_host = f"{(int(me, 16) + 1) % 2**32:08x}"
        names = {
            "dead": f"{SCRATCH_PREFIX}{me}_{dead.pid}_{uuid.uuid4().hex[:8]}_prepared",
            "alive": f"{SCRATCH_PREFIX}{me}_{alive.pid}_{uuid.uuid4().hex[:8]}_prepared",
            "other_host": f"{SCRATCH_PREFIX}{other_host}_{dead.pid}_{uuid.uuid4().hex[:8]}_prepared",
            "not_a_scratch_name": f"{SCRATCH_PREFIX}by_hand",
        }
        for n in names.values():
            store.overwrite(n, spark.range(1))
        assert all(store.exists(n) for n in names.values())
        swept = RunContext(store, cfg, "curate").sweep_stale_scratch()
        assert swept == [names["dead"]]
        assert not store.exists(names["dead"]) and not os.path.exists(os.path.join(cfg.storage.root, names["dead"]))
        assert all(store.exists(names[k]) for k in ("alive", "other_host", "not_a_scratch_name"))
        # once the owner has gone, the next run sweeps its table too
        alive.kill()
        alive.wait()
        assert RunContext(store, cfg, "curate").sweep_stale_scratch() == [names["alive"]]
    finally:
        if alive.poll() is None:
            alive.kill()
            alive.wait()


@pytest.mark.skipif(ENGINE != "embedded", reason="runs the CLI on the default engine")
def test_a_killed_run_leaves_scratch_that_the_next_run_sweeps(tmp_path):
    root = tmp_path / "t"
    base = [sys.executable, "-m", "lewin.jobs.cli", "--set", f"storage.root={root}"]
    out = tmp_path / "o.txt"
    with out.open("w") as o:
        assert subprocess.run(base + ["ingest", "--source", "reddit", "--path", str(FIXTURES / "curate" / "reddit")],
                              stdout=o, stderr=o, timeout=600).returncode == 0, out.read_text()[-2000:]
    with out.open("w") as o:
        rc = subprocess.run(base + ["curate", "--source", "reddit"], stdout=o, stderr=o, timeout=600,
                            env=dict(os.environ, LEWIN_FAILPOINT="curate.after_silver_merge")).returncode
    assert rc == -signal.SIGKILL, out.read_text()[-2000:]
    left = _table_dirs(root)
    assert left and all(_SCRATCH_RE.match(n) for n in left), left
    with out.open("w") as o:
        assert subprocess.run(base + ["curate", "--source", "reddit"], stdout=o, stderr=o,
                              timeout=600).returncode == 0, out.read_text()[-2000:]
    assert _table_dirs(root) == []
