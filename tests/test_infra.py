"""The Databricks bundle's tasks call the CLI with arguments the CLI accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lewin.jobs.cli import app
from lewin.schemas.config import load_config

BUNDLE = Path(__file__).resolve().parents[1] / "infra" / "databricks.yml"


def test_bundle_wheel_tasks_parse():
    bundle = yaml.safe_load(BUNDLE.read_text())
    defaults = {k: v["default"] for k, v in bundle["variables"].items()}
    tasks = [t for job in bundle["resources"]["jobs"].values() for t in job["tasks"]]
    assert tasks
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    for task in tasks:
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == "lewin" and wheel["entry_point"] == "lewin"
        params = [re.sub(r"\$\{var\.(\w+)\}", lambda m: defaults[m.group(1)], p) for p in wheel["parameters"]]
        overrides = [params[i + 1] for i, p in enumerate(params) if p == "--set"]
        cfg = load_config(None, overrides)
        assert cfg.engine.kind == "databricks" and cfg.storage.catalog == "main"
        command = next(p for i, p in enumerate(params) if p not in ("--set",) and (i == 0 or params[i - 1] != "--set"))
        assert command in commands
        # the command line is well-formed for the CLI (help exits before any engine starts)
        r = CliRunner().invoke(app, params + ["--help"])
        assert r.exit_code == 0, r.output


# --- the pipeline job against the stage registry ---------------------------------------------------
PIPELINE_JOB = "lewin_pipeline"


def _stage_tasks(stage) -> list[str]:
    """Task keys of one registered stage: ``<name>_<source>`` per source for a per-source stage."""
    from lewin.schemas.config import SOURCES

    return [f"{stage.name}_{s}" for s in SOURCES] if stage.per_source else [stage.name]


def _command(params: list[str]) -> tuple[str, list[str]]:
    """The CLI command of a task's parameters (the first word not an option or a --set value) and
    the words after it."""
    i = next(i for i, p in enumerate(params) if p != "--set" and (i == 0 or params[i - 1] != "--set"))
    return params[i], params[i + 1:]


def test_pipeline_job_tasks_and_depends_on_equal_the_registry():
    """One job runs every registered stage (a per-source stage once per source) and its task graph
    is the registry's: depends_on == edges(), a dependency on `ingest` meaning every ingest task.
    The one extra edge allowed is the chain that serialises a per-source stage's tasks (they all
    write the shared quarantine / ingest_log tables), and that chain must be there."""
    from lewin.jobs import registry

    bundle = yaml.safe_load(BUNDLE.read_text())
    job = bundle["resources"]["jobs"][PIPELINE_JOB]
    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert len(tasks) == len(job["tasks"]), "duplicate task keys"
    by_stage = {s.name: _stage_tasks(s) for s in registry.STAGES}
    assert set(tasks) == {k for keys in by_stage.values() for k in keys}

    edges = registry.edges()
    for s in registry.STAGES:
        upstream = {d for up, down in edges if down == s.name for d in by_stage[up]}
        siblings = by_stage[s.name]
        for i, key in enumerate(siblings):
            deps = [d["task_key"] for d in tasks[key].get("depends_on", [])]
            assert len(deps) == len(set(deps)), f"{key}: repeated depends_on"
            # the previous task of the same per-source stage: the serialisation chain
            chain = {siblings[i - 1]} if s.per_source and i > 0 else set()
            assert set(deps) == upstream | chain, f"{key}: depends_on {sorted(deps)} != {sorted(upstream | chain)}"
            # the task runs its own stage (ingest: for its own source)
            command, rest = _command(tasks[key]["python_wheel_task"]["parameters"])
            assert command == s.name, f"{key} runs `lewin {command}`"
            if s.per_source:
                source = key.removeprefix(f"{s.name}_")
                assert rest[rest.index("--source") + 1] == source
                assert rest[rest.index("--path") + 1] == f"${{var.raw_root}}/{source}"

    # the bundle passes the shards folder to emit and the trainer reads the same one
    emit_params = tasks["emit"]["python_wheel_task"]["parameters"]
    assert "emit.out_dir=${var.shards_dir}" in emit_params
    trainer = yaml.safe_load((BUNDLE.parent / "trainer" / "databricks_job.yml").read_text())
    (train_job,) = trainer["resources"]["jobs"].values()
    assert "shards_dir=${var.shards_dir}" in train_job["tasks"][0]["python_wheel_task"]["parameters"]
    assert {"catalog", "schema", "raw_root", "shards_dir"} <= set(bundle["variables"])


def test_bundle_jobs_validate_against_the_databricks_job_model():
    """Every job dict (the bundle's and the included trainer job) is a valid ``Job`` for the
    Databricks bundles model: unknown or misspelt keys and wrong types fail here, not at deploy."""
    jobs_mod = pytest.importorskip(
        "databricks.bundles.jobs",
        reason="databricks-bundles is not installed (pip install databricks-bundles: the bundle's Job model)")
    bundle = yaml.safe_load(BUNDLE.read_text())
    jobs = dict(bundle["resources"]["jobs"])
    for inc in bundle.get("include", []):
        jobs.update(yaml.safe_load((BUNDLE.parent / inc).read_text())["resources"]["jobs"])
    assert PIPELINE_JOB in jobs and "lewin_train" in jobs
    for key, spec in jobs.items():
        job = jobs_mod.Job.from_dict(spec)
        assert [t.task_key for t in job.tasks] == [t["task_key"] for t in spec["tasks"]], key
