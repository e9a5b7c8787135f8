"""The stage registry against what the stages do: the tables every stage reads on a real run of the
bundled sample are among its declared ``reads``; the registry's order is a topological order; the
README's stage table is the one ``registry.stage_table()`` generates.

Regenerate the README table after changing a stage's declaration:
``python -c "from lewin.jobs.registry import stage_table; print(stage_table())"`` and paste it
into the README's Architecture section.
"""

from __future__ import annotations

import time
import uuid
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from lewin.jobs import registry
from lewin.jobs.cli import bundled_sample
from lewin.jobs.ingest import sources_under
from lewin.jobs.tables import TableStore
from lewin.schemas.config import SOURCES, load_config

from .conftest import ENGINE
from .fake_openai import FakeOpenAI

README = Path(__file__).resolve().parents[1] / "README.md"
STAGE_NAMES = [s.name for s in registry.STAGES]


@pytest.fixture(scope="module")
def pipeline_run(engine, tmp_path_factory):
    """``lewin run`` in-process on the bundled sample, twice: ``registry.plan`` with the demo profile,
    every stage executed on one TableStore (which records each stage's reads). The LLM stages talk to the
    scripted OpenAI-compatible server, so llm and emit (MCQ distractors included) run for real in
    seconds instead of minutes of the CPU model."""
    if ENGINE != "embedded":
        pytest.skip("runs on the default (embedded) engine")
    root = tmp_path_factory.mktemp("registry_run")
    with FakeOpenAI() as srv:
        cfg = load_config(None, [
            f"storage.root={root / 'tables'}", f"storage.database=reg_{uuid.uuid4().hex[:10]}",
            "llm.profile=demo", "llm.engine.kind=openai", "llm.engine.model=scripted",
            f"llm.engine.base_url={srv.url}", "llm.engine.timeout_s=30", "pii.salt=registry-test-key",
            f"emit.out_dir={root / 'shards'}",
        ])
        store = TableStore(engine, cfg.storage)
        store.register_all()
        inputs = sources_under(str(bundled_sample()))
        # twice: the first run creates every table, the second takes the incremental paths
        # (existing tables, nothing new); both record into store.reads_by_stage
        for run in ("first", "rerun"):
            stages = registry.plan(cfg, inputs)
            seconds = {}
            for stage in stages:
                t0 = time.perf_counter()
                stage.execute(store, cfg)
                key = f"{stage.name}_{stage.source}" if stage.per_source else stage.name
                seconds[key] = round(time.perf_counter() - t0, 1)
            print(f"{run} run, seconds per stage:", seconds, "LLM calls so far:", srv.total)
            if run == "first":
                llm_calls = srv.total
    return store, stages, llm_calls


def test_the_run_executed_every_registered_stage(pipeline_run):
    store, stages, llm_calls = pipeline_run
    assert [s.name for s in stages] == ["ingest"] * len(SOURCES) + STAGE_NAMES[1:]
    assert llm_calls > 0, "the LLM stages sent no prompt: their reads were not exercised"
    assert store.count("shard_samples") > 0


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_stage_reads_only_declared_tables(pipeline_run, name):
    store, _, _ = pipeline_run
    declared = registry.BY_NAME[name].reads
    read = store.reads_by_stage.get(name, set())
    assert read, f"{name} recorded no read at all (is store.read bypassed?)"
    undeclared = sorted(t for t in read if not any(fnmatchcase(t, p) for p in declared))
    assert not undeclared, f"{name} reads tables its `reads` does not declare: {undeclared} (declared {declared})"


def test_every_table_left_is_declared_as_written(pipeline_run):
    """What a run leaves in the store (scratch tables aside) is in some stage's ``writes``; ``runs``
    is written by the stage contract itself (``record_funnels``)."""
    store, _, _ = pipeline_run
    writes = [p for s in registry.STAGES for p in s.writes] + ["runs"]
    tables = [t for t in store.list_tables() if not t.startswith("_")]
    assert tables
    assert sorted(t for t in tables if not any(fnmatchcase(t, p) for p in writes)) == []


def test_registry_order_is_a_topological_order():
    assert len(set(STAGE_NAMES)) == len(STAGE_NAMES)
    position = {n: i for i, n in enumerate(STAGE_NAMES)}
    for up, down in registry.edges():
        assert up in position, f"{down} depends on unknown stage {up}"
        assert position[up] < position[down], f"{down} comes before its dependency {up}"
    # one pipeline: every stage but the first has an upstream stage
    assert all(s.depends_on for s in registry.STAGES[1:])


def test_stage_table_lists_every_stage():
    table = registry.stage_table().splitlines()
    assert len(table) == 2 + len(registry.STAGES)
    for s, row in zip(registry.STAGES, table[2:]):
        assert row.startswith(f"| `{s.name}`"), row
        assert all(f"`{t}`" in row for t in s.reads + s.writes + s.depends_on), row


def test_readme_architecture_holds_the_generated_stage_table():
    text = README.read_text()
    assert "## Architecture" in text
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    up_to_date = registry.stage_table() in section
    assert up_to_date, ("README's stage table is out of date: paste the output of "
                        "python -c \"from lewin.jobs.registry import stage_table; print(stage_table())\"")
