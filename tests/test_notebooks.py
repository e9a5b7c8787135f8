"""The notebooks run unchanged against Lewin's tables on the embedded engine: explore_users' SQL
cells, and run_report executed cell by cell as Databricks would (its widgets and ``display``
stubbed), with and without the LLM stages' tables."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lewin.jobs.cli import bundled_sample
from lewin.jobs.curate import curate
from lewin.jobs.ingest import ingest
from lewin.jobs.label import run_labels
from lewin.jobs.scrub import scrub
from lewin.jobs.tables import TableStore
from lewin.jobs.users import build_users
from lewin.schemas import shards as S
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig, StorageConfig

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK = NOTEBOOKS / "explore_users.py"
RUN_REPORT = NOTEBOOKS / "run_report.py"


def sql_cells(path: Path) -> list[str]:
    cells = path.read_text().split("# COMMAND ----------")
    out = []
    for cell in cells:
        lines = [ln[len("# MAGIC "):] if ln.startswith("# MAGIC ") else ln[len("# MAGIC"):] for ln in cell.strip().splitlines()
                 if ln.startswith("# MAGIC")]
        if lines and lines[0].strip() == "%sql":
            out.append("\n".join(lines[1:]))
    return out


@pytest.fixture(scope="module")
def sample_tables(engine, tmp_path_factory):
    """The bundled sample through ingest, curate, scrub and users (labels off: no LLM), once for the
    module; every table registered by name in a database of its own."""
    cfg = LewinConfig(storage=StorageConfig(root=tmp_path_factory.mktemp("notebooks") / "tables",
                                            database=f"t_{uuid.uuid4().hex[:10]}"))
    store = TableStore(engine, cfg.storage)
    cfg.pii.salt = "notebook-test"
    for s in ("reddit", "twitter", "blogger", "amazon"):
        ingest(store, cfg, s, [str(bundled_sample() / s)])
        curate(store, cfg, s)
    scrub(store, cfg)
    cfg.llm.labels = "off"  # SQL over the timelines, no LLM: every record kept as "unlabelled"
    run_labels(store, cfg)
    build_users(store, cfg)
    store.register_all()
    return store, cfg


@pytest.mark.transforms
def test_notebook_sql_runs_on_the_sample(sample_tables, spark):
    store, _ = sample_tables
    store.register_all()
    assert NOTEBOOK.read_text().startswith("# Databricks notebook source")
    cells = sql_cells(NOTEBOOK)
    assert len(cells) == 5
    results = [spark.sql(q).collect() for q in cells]
    assert all(results), "every cell returns rows on the sample"
    assert results[1][0]["user_id"] == "long_history_lou"
    assert [r["record_id"] for r in results[2]] == sorted([r["record_id"] for r in results[2]],
                                                          key=lambda x: [r["event_ts"] for r in results[2] if r["record_id"] == x][0])
    assert not re.search(r"\bvalue\b", cells[3]), "the PII cell reads types and counts only"


# --- run_report ----------------------------------------------------------------------------------------
class _Widgets:
    def __init__(self, values: dict[str, str]):
        self.values = values
        self.defaults: dict[str, str] = {}

    def text(self, name: str, default: str, label: str | None = None) -> None:
        self.defaults[name] = default

    def get(self, name: str) -> str:
        return self.values.get(name, self.defaults[name])


class _DbUtils:
    def __init__(self, values: dict[str, str]):
        self.widgets = _Widgets(values)


def run_notebook(path: Path, spark, widgets: dict[str, str]) -> list[tuple[str, list]]:
    """Execute the notebook's cells in order as Databricks would: ``%md`` cells are comments to
    Python, ``dbutils.widgets`` answers with ``widgets`` and ``display`` collects the DataFrame.
    Returns (the displaying cell's heading, its rows) per display."""
    text = path.read_text()
    assert text.startswith("# Databricks notebook source\n")
    shown: list[tuple[str, list]] = []
    heading = [""]
    ns = {"spark": spark, "dbutils": _DbUtils(widgets), "display": lambda df: shown.append((heading[0], df.collect()))}
    for cell in text.split("\n# COMMAND ----------\n"):
        md = re.search(r"^# MAGIC %md(?: |\n# MAGIC )#+ (.+)$", cell, re.M)
        if md:
            heading[0] = md.group(1)
            continue
        exec(compile(cell, str(path), "exec"), ns)  # noqa: S102 - the notebook is the project's own
    return shown


def _llm_tables(store: TableStore, spark) -> None:
    """A few rows of what the LLM stages write (ledger, judged, synth_signals): enough for every
    LLM cell of run_report to have rows."""
    now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    ledger = [("k1", "persona", "reddit:u1", "h", "u1", "reddit", "persona.v2", "m", "p", "llamacpp", "ok", "{}", None, 1, 100, 20, 5,
               "r1", now),
              ("k2", "judge_persona", "k1", "h", "u1", "reddit", "judge.v4", "m", "p", "llamacpp", "dead", None, "timeout", 3, 90, 0, 9,
               "r1", now)]
    store.overwrite("llm_ledger", spark.createDataFrame(ledger, T.LLM_LEDGER))
    judged = [("persona", f"reddit:u{i}", f"u{i}", "reddit", None, "{}", "persona.v2", "m", f"k{i}", "m", "judge.v4",
               {"overall": 9 - i, "coverage": 8}, 9 - i, "fine", i < 2) for i in range(3)]
    store.overwrite("judged_persona", spark.createDataFrame(judged, T.JUDGED))
    # an earlier run's rows (all failing) are superseded by the latest run's; distinct_1 has no bound
    signals = [("persona", f"reddit:u{i}", f"u{i}", "reddit", "length_words", float(40 + 40 * i), "<100 words",
                ok if run == "r1" else False, True, None, run, ts)
               for i, ok in enumerate((True, True, False)) for run, ts in (("r0", datetime(2023, 1, 1, tzinfo=timezone.utc)), ("r1", now))]
    signals += [("persona", f"reddit:u{i}", f"u{i}", "reddit", "distinct_1", 0.5, None, None, False, None, "r1", now) for i in range(3)]
    schema = T.SYNTH_SIGNALS
    store.overwrite("synth_signals", spark.createDataFrame(signals, schema))
    msgs = [{"role": r, "content": "x"} for r in ("system", "user", "assistant")]
    samples = [(f"s{i}", task, src, f"u{i}", split, msgs, [], "v1", None, None, None, None)
               for i, (task, src, split) in enumerate([("social_qa", "reddit", "train"), ("social_qa", "reddit", "train"),
                                                        ("item_selection", "amazon", "train"), ("social_qa", "reddit", "test")])]
    store.overwrite("shard_samples", spark.createDataFrame(samples, S.SHARD_SAMPLES))
    mcq = [("s3", "social_qa", "reddit", "u3", msgs[:2], ["a", "b", "c"], 0, ["real", "engine:m#0", "engine:m#1"])]
    store.overwrite("mcq_items", spark.createDataFrame(mcq, S.MCQ_ITEM))
    store.register_all()


@pytest.mark.transforms
def test_run_report_runs_on_the_sample_with_and_without_llm_tables(sample_tables, spark, capsys):
    store, cfg = sample_tables
    widgets = {"catalog": "", "schema": cfg.storage.database}
    # before any LLM stage: the LLM sections say what is missing, the others draw
    shown = run_notebook(RUN_REPORT, spark, widgets)
    out = capsys.readouterr().out
    assert out.splitlines() == ["llm_ledger: not written yet", "judged_<artifact>: none written yet",
                                "synth_signals: not written yet", "shard_samples: not written yet",
                                "mcq_items: not written yet"], out
    by_heading = {h: rows for h, rows in shown}
    for h in ("The funnel per source and stage (`runs`)", "Why curation rejected records (`rejected`)",
              "Why ingestion quarantined input (`quarantine`)", "The Amazon k-core, round by round (`kcore_rounds`, newest run first)",
              "Language-ID score (fastText lid.176) of the records curation kept", "Records per user (`users`)"):
        assert by_heading.get(h), h
    assert all(rows for _, rows in shown), [h for h, rows in shown if not rows]
    stages = [r["stage"] for r in by_heading["The funnel per source and stage (`runs`)"]]
    assert stages.index("ingest") < stages.index("curate") < stages.index("scrub") < stages.index("users")
    lengths = by_heading["Text length per source, before (bronze) and after (silver) curation"]
    assert {(r["source"], r["step"]) for r in lengths} >= {(s, st) for s in ("reddit", "twitter", "blogger", "amazon")
                                                            for st in ("before", "after")}
    pii = by_heading["PII replaced, per type (types and counts only: originals are never stored)"]
    assert {"PERSON", "EMAIL_ADDRESS"} <= {r["type"] for r in pii}
    # with the LLM stages' tables: every cell draws, and the figures are the tables'
    _llm_tables(store, spark)
    shown = run_notebook(RUN_REPORT, spark, widgets)
    assert "not written yet" not in capsys.readouterr().out
    assert all(rows for _, rows in shown), [h for h, rows in shown if not rows]
    by_heading = {h: rows for h, rows in shown}
    ledger = {(r["artifact"], r["status"]): r for r in by_heading[
        "The LLM ledger: prompts per artifact and status, tokens and latency (`llm_ledger`)"]}
    assert ledger[("judge_persona", "dead")]["attempts"] == 3 and ledger[("persona", "ok")]["tokens_out"] == 20
    scores = {(r["metric"], r["score"]): r["items"] for r in by_heading["Judge scores (`judged_<artifact>`)"]}
    assert scores == {("overall", 9): 1, ("overall", 8): 1, ("overall", 7): 1, ("coverage", 8): 3}
    (gold,) = by_heading["Gold yield: judged items the thresholds kept, per artifact and source"]
    assert (gold["judged"], gold["gold"], float(gold["gold_yield"])) == (3, 2, 0.667)
    signals = {r["signal"]: r for r in by_heading["Synthesis signals: pass rate per artifact and signal (`synth_signals`)"]}
    words, distinct = signals["length_words"], signals["distinct_1"]
    assert (words["items"], words["checked"], words["passed"], float(words["pass_rate"])) == (3, 3, 2, 0.667), "latest run only"
    assert words["gate"] is True and words["bound"] == "<100 words"
    assert (distinct["items"], distinct["checked"], distinct["pass_rate"]) == (3, 0, None), "reported only: no pass rate"
    dead = by_heading["Dead letters by reason code (the error's stable code before `:`) and artifact"]
    assert [(r["artifact"], r["code"], r["dead_letters"]) for r in dead] == [("judge_persona", "timeout", 1)]
    mix = {(r["task"], r["source"], r["split"]): (r["samples"], float(r["share_of_split"])) for r in by_heading[
        "Training samples per task, source and split (`shard_samples`), and the task mix"]}
    assert mix == {("social_qa", "reddit", "train"): (2, 0.667), ("item_selection", "amazon", "train"): (1, 0.333),
                   ("social_qa", "reddit", "test"): (1, 1.0)}
    origins = {r["origin"]: r["options"] for r in by_heading[
        "MCQ options per task, by origin (`mcq_items`; `#<round>` of repeated engines folded)"]}
    assert origins == {"real": 1, "engine:m": 2}
    assert len(shown) == 17
