"""The pipeline: every stage in DAG order. ``lewin run``, ``lewin status``, the README's stage table
and the Databricks bundle's task graph are all derived from (or tested against) ``STAGES``."""

from __future__ import annotations

from lewin.jobs.curate import CurateStage
from lewin.jobs.emit import EmitStage
from lewin.jobs.ingest import IngestStage
from lewin.jobs.label import LabelStage
from lewin.jobs.llm import LlmStage
from lewin.jobs.patterns import PATTERN_STAGES
from lewin.jobs.scrub import ScrubStage
from lewin.jobs.stage import Stage
from lewin.jobs.users import UsersStage
from lewin.schemas.config import SOURCES, LewinConfig

STAGES: tuple[type[Stage], ...] = (IngestStage, CurateStage, ScrubStage, LabelStage, UsersStage, LlmStage, EmitStage)
BY_NAME: dict[str, type[Stage]] = {s.name: s for s in STAGES}
# The second recipe (``lewin patterns run``): its own DAG over its own tables, sharing the ledger.
PIPELINES: dict[str, tuple[type[Stage], ...]] = {"main": STAGES, "patterns": PATTERN_STAGES}


def edges() -> list[tuple[str, str]]:
    """(upstream, downstream) pairs: the DAG the bundle's ``depends_on`` must equal."""
    return [(dep, s.name) for s in STAGES for dep in s.depends_on]


def _check_order() -> None:
    for pipeline, stages in PIPELINES.items():
        seen: set[str] = set()
        for s in stages:
            missing = [d for d in s.depends_on if d not in seen]
            if missing:
                raise RuntimeError(f"stage {s.name} depends on {missing}, which do not come before it in {pipeline}")
            seen.add(s.name)


_check_order()


def enabled(name: str, cfg: LewinConfig) -> bool:
    """Stages a config switches off are skipped by ``lewin run`` (their tables stay as they are)."""
    return {"llm": cfg.llm.enabled, "emit": cfg.emit.enabled}.get(name, True)


def plan(cfg: LewinConfig, inputs: dict[str, list[str]]) -> list[Stage]:
    """The stage instances ``lewin run`` executes, in order: one ingest per source with input
    paths, then every later stage the config enables."""
    out: list[Stage] = []
    for cls in STAGES:
        if not enabled(cls.name, cfg):
            continue
        if cls is IngestStage:
            out += [IngestStage(s, inputs[s]) for s in SOURCES if s in inputs]
        else:
            out.append(cls())
    return out


def stage_table() -> str:
    """The README's stage table (Markdown), generated from the registry."""
    lines = ["| stage | reads | writes | after | what |", "|---|---|---|---|---|"]
    for s in STAGES:
        fmt = lambda xs: ", ".join(f"`{x}`" for x in xs) or "—"  # noqa: E731
        name = f"`{s.name}`" + (" (per source)" if s.per_source else "")
        lines.append(f"| {name} | {fmt(s.reads)} | {fmt(s.writes)} | {fmt(s.depends_on)} | {s.summary} |")
    return "\n".join(lines)
