"""The notebook's SQL cells run unchanged against Lewin's tables on the embedded engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lewin.jobs.cli import bundled_sample
from lewin.jobs.curate import curate
from lewin.jobs.ingest import ingest
from lewin.jobs.scrub import scrub
from lewin.jobs.label import run_labels
from lewin.jobs.users import build_users

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_users.py"


def sql_cells(path: Path) -> list[str]:
    cells = path.read_text().split("# COMMAND ----------")
    out = []
    for cell in cells:
        lines = [ln[len("# MAGIC "):] if ln.startswith("# MAGIC ") else ln[len("# MAGIC"):] for ln in cell.strip().splitlines()
                 if ln.startswith("# MAGIC")]
        if lines and lines[0].strip() == "%sql":
            out.append("\n".join(lines[1:]))
    return out


@pytest.mark.transforms
def test_notebook_sql_runs_on_the_sample(store, cfg, spark):
    assert NOTEBOOK.read_text().startswith("# Databricks notebook source")
    cfg.pii.salt = "notebook-test"
    for s in ("reddit", "twitter", "blogger", "amazon"):
        ingest(store, cfg, s, [str(bundled_sample() / s)])
        curate(store, cfg, s)
    scrub(store, cfg)
    cfg.llm.labels = "off"  # SQL over the timelines, no LLM: every record kept as "unlabelled"
    run_labels(store, cfg)
    build_users(store, cfg)
    store.register_all()
    cells = sql_cells(NOTEBOOK)
    assert len(cells) == 5
    results = [spark.sql(q).collect() for q in cells]
    assert all(results), "every cell returns rows on the sample"
    assert results[1][0]["user_id"] == "long_history_lou"
    assert [r["record_id"] for r in results[2]] == sorted([r["record_id"] for r in results[2]],
                                                          key=lambda x: [r["event_ts"] for r in results[2] if r["record_id"] == x][0])
    assert not re.search(r"\bvalue\b", cells[3]), "the PII cell reads types and counts only"
