"""Typed, validated configuration (one YAML file), with the paper's values as defaults.

An unknown key or a value of the wrong type fails at start with a message naming the key
(``ConfigError``). ``lewin config show`` prints the resolved result.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SOURCES = ("reddit", "twitter", "blogger", "amazon")


class ConfigError(ValueError):
    """A configuration problem, with the offending key(s) in the message."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class EngineConfig(_Strict):
    kind: Literal["embedded", "spark", "connect", "databricks"] = "embedded"
    """embedded: a local Sail Spark Connect server Lewin starts and stops (no JVM, real Delta);
    spark: classic PySpark; connect: any Spark Connect URL; databricks: Databricks Connect or the
    cluster's own session."""
    master: str = "local[*]"
    """Master URL for ``kind: spark``."""
    remote: str | None = None
    """Spark Connect URL (``sc://host:port``) for ``kind: connect``."""
    sail_mode: Literal["local", "local-cluster"] = "local"
    """Sail's running mode for ``kind: embedded``. Both run Python UDFs in one interpreter, so
    Python-heavy stages fan out to a per-worker process pool (``python_workers``)."""
    python_workers: int = Field(0, ge=0)
    """Processes for Python-heavy batch UDFs. 0 = auto: every core under the embedded engine,
    1 (inline) on classic Spark / Databricks, whose executors already run one process per task."""
    delta: Literal["auto", "pip", "cluster", "off"] = "auto"
    """How classic Spark gets Delta: pip = ``configure_spark_with_delta_pip`` (downloads jars),
    cluster = jars already on the classpath, off = no Delta (tables fall back to Parquet),
    auto = cluster jars if importable, else off."""
    shuffle_partitions: int | None = Field(None, ge=1)
    spark_conf: dict[str, str] = Field(default_factory=dict)


class StorageConfig(_Strict):
    root: Path = Path("lewin-data")
    """Where tables live for the embedded and local engines (one folder per table)."""
    catalog: str | None = None
    """Unity Catalog catalog (Databricks); None for the local catalog."""
    database: str = "lewin"
    """Schema (database) every Lewin table is registered in; ``USE`` makes bare names work."""
    format: Literal["delta", "parquet"] = "delta"
    """Table format. Parquet exists for classic Spark without the Delta jars (tests)."""
    tables: dict[str, str] = Field(default_factory=dict)
    """Per-table name overrides: logical name -> ``catalog.schema.table`` (or a path for local)."""


class SourceConfig(_Strict):
    paths: list[str] = Field(default_factory=list)
    """Files or folders to ingest for this source (recursive; compressed files read transparently)."""


class IngestConfig(_Strict):
    max_record_bytes: int = Field(1_048_576, ge=1024)
    """A raw record (line, CSV row, post) longer than this is quarantined as ``record_too_long``."""
    max_text_chars: int = Field(100_000, ge=100)
    """A text longer than this is quarantined as ``text_too_long`` (absurdly long posts)."""
    quarantine_raw_max_chars: int = Field(65_536, ge=256)
    """Raw text kept in the quarantine table is cut to this many characters (marked as cut)."""
    min_event_time: datetime = datetime(1995, 1, 1, tzinfo=timezone.utc)
    """Earlier event times are quarantined as ``time_out_of_range`` (epoch-0 and similar junk)."""
    max_future_days: int = Field(2, ge=0)
    """Event times more than this many days after the run are quarantined as ``time_out_of_range``."""
    batch_max_files: int = Field(64, ge=1)
    batch_max_bytes: int = Field(4 << 30, ge=1)
    """Files are ingested in batches (one bronze MERGE each); a crash loses at most one batch."""
    sources: dict[str, SourceConfig] = Field(default_factory=dict)

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, v: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        unknown = sorted(set(v) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; known: {list(SOURCES)}")
        return v


class LewinConfig(_Strict):
    engine: EngineConfig = Field(default_factory=EngineConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for p in path[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {'.'.join(path)}: {p} is not a section")
        node = child
    node[path[-1]] = value


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> LewinConfig:
    """Load YAML (if given), apply ``key.path=value`` overrides, validate.

    Raises ``ConfigError`` naming every bad key."""
    tree: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        tree = loaded
        origin = str(p)
    for item in overrides or []:
        _set_path(tree, *_parse_override(item))
    if overrides:
        origin += " + overrides"
    try:
        return LewinConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from None


def dump_config(cfg: LewinConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
