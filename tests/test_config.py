"""Typed config: paper defaults, and bad keys/types fail at start naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lewin.schemas.config import ConfigError, LewinConfig, dump_config, load_config


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = load_config()
    assert cfg.engine.kind == "embedded" and cfg.storage.format == "delta"
    p = tmp_path / "lewin.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("engine:\n  kind: spark\n  master: local[2]\ningest:\n  sources:\n    reddit:\n      paths: [/data/rs]\n")
    cfg = load_config(p, ["ingest.max_text_chars=5000", "storage.root=/x"])
    assert cfg.engine.kind == "spark" and cfg.engine.master == "local[2]"
    assert cfg.ingest.sources["reddit"].paths == ["/data/rs"]
    assert cfg.ingest.max_text_chars == 5000 and str(cfg.storage.root) == "/x"


@pytest.mark.parametrize(
    "yaml_text,needle",
    [
        ("engine:\n  kindd: spark\n", "engine.kindd: unknown key"),
        ("engine:\n  kind: hadoop\n", "engine.kind"),
        ("ingest:\n  max_record_bytes: lots\n", "ingest.max_record_bytes"),
        ("ingest:\n  sources:\n    myspace: {paths: []}\n", "ingest.sources"),
        ("ingest:\n  sources:\n    reddit: {pathz: []}\n", "ingest.sources.reddit.pathz: unknown key"),
        ("storage:\n  format: orc\n", "storage.format"),
        ("nonsense: 1\n", "nonsense: unknown key"),
    ],
)
def test_bad_config_names_the_key(tmp_path, yaml_text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert needle in str(exc.value)


def test_not_yaml_and_missing_file(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("engine: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["novalue"])


def test_cli_fails_at_start_with_the_key_and_exit_code_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lewin.jobs.cli", "--set", "ingest.batch_max_files=zero", "run"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert "ingest.batch_max_files" in r.stderr
    assert not (tmp_path / "lewin-data").exists(), "nothing may run before the config is valid"


def test_config_show_prints_resolved_yaml(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lewin.jobs.cli", "--set", "engine.kind=spark", "config", "show"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    import yaml

    shown = yaml.safe_load(r.stdout)
    assert LewinConfig.model_validate(shown).engine.kind == "spark"


def test_llm_labels_off_as_yaml_writes_it():
    """`llm.labels: off` in YAML (a boolean false to the parser) means "off"; `true` is an error naming the key."""
    from lewin.schemas.config import ConfigError, load_config

    assert load_config(None, ["llm.labels=off"]).llm.labels == "off"
    with pytest.raises(ConfigError, match="llm.labels"):
        load_config(None, ["llm.labels=true"])
