"""The Databricks bundle's tasks call the CLI with arguments the CLI accepts."""

from __future__ import annotations

import re
from pathlib import Path

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
