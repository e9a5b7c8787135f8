"""The stage contract: every job is a ``Stage`` that declares what it reads and writes and returns
``Funnel`` rows from ``run(ctx)``; a ``RunContext`` owns everything a run needs besides its tables.

* ``Funnel`` — the only way a row reaches ``runs``: named fields, written by ``record_funnels``.
  ``in = kept + duplicates + rejected + quarantined`` holds for every row a stage reports.
* ``RunContext`` — the run id, scratch tables scoped to the run (unique names, dropped when the
  stage ends, swept at the next start after a crash), failpoints, step timings and progress.
* ``Stage.execute`` holds the stage's run lock (``lewin.jobs.run_lock``) for the whole run: one
  run at a time per storage root and stage (and source, for per-source stages).
* ``Stage`` — ``name``, ``reads``/``writes`` (logical table names, ``*`` wildcards for families
  such as ``bronze_*``), ``depends_on`` (the DAG edges the registry and the Databricks bundle
  use) and ``run(ctx) -> list[Funnel]`` (one row per source or artifact the stage processed).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
import uuid
import zlib
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from lewin.jobs import failpoints
from lewin.jobs.progress import StageProgress
from lewin.schemas import tables as T

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import LewinConfig

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "_scratch_"
# _scratch_<host hash>_<pid>_<run hex>_<label>: the owner is readable from the name, so a later run
# can tell a crashed run's leftovers (same host, process gone) from a live run's tables
_SCRATCH_RE = re.compile(r"^_scratch_([0-9a-f]{8})_(\d+)_([0-9a-f]{8})_[A-Za-z0-9_]+$")


def new_run_id(stage: str) -> str:
    return f"{stage}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def _host_hash() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's live process
        return True
    return True


@dataclass
class Funnel:
    """One row of ``runs``: what one stage did to one source (or artifact) in one run."""

    stage: str
    source: str = "all"
    records_in: int = 0
    kept: int = 0
    duplicates: int = 0
    rejected: int = 0
    quarantined: int = 0
    files: int | None = None
    files_skipped: int | None = None
    lines: int | None = None
    blank_lines: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.records_in == self.kept + self.duplicates + self.rejected + self.quarantined

    def row(self, run_id: str, started: datetime, finished: datetime) -> dict[str, Any]:
        values = {
            "run_id": run_id, "stage": self.stage, "source": self.source, "started_at": started,
            "finished_at": finished, "files": self.files, "files_skipped": self.files_skipped,
            "lines": self.lines, "blank_lines": self.blank_lines, "records_in": self.records_in,
            "kept": self.kept, "duplicates": self.duplicates, "rejected": self.rejected,
            "quarantined": self.quarantined, "detail": json.dumps(self.detail, sort_keys=True, default=str),
        }
        assert list(values) == T.RUNS.fieldNames(), "Funnel.row is out of step with schemas.tables.RUNS"
        return values


def record_funnels(store: "TableStore", run_id: str, started: datetime, funnels: list[Funnel]) -> None:
    """Append ``funnels`` to ``runs`` (the only writer of that table)."""
    if not funnels:
        return
    finished = datetime.now(timezone.utc)
    rows = [tuple(f.row(run_id, started, finished).values()) for f in funnels]
    store.append("runs", store.spark.createDataFrame(rows, T.RUNS))


class RunContext:
    """What one stage run owns apart from its tables: id, scratch tables, timings, progress."""

    def __init__(self, store: "TableStore", cfg: "LewinConfig", stage: str, run_id: str | None = None,
                 progress: StageProgress | None = None):
        self.store = store
        self.cfg = cfg
        self.stage = stage
        self.run_id = run_id or new_run_id(stage)
        self.started = datetime.now(timezone.utc)
        self.progress = progress or StageProgress.for_terminal()
        self.seconds_by_step: dict[str, float] = {}
        self._token = f"{_host_hash()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._scratch: list[str] = []

    # --- scratch tables ----------------------------------------------------------------------
    def scratch(self, label: str) -> str:
        """A table name private to this run (two contexts never share one)."""
        if not re.fullmatch(r"[A-Za-z0-9_]+", label):
            raise ValueError(f"scratch label {label!r} must be letters, digits and underscores")
        name = f"{SCRATCH_PREFIX}{self._token}_{label}"
        if name not in self._scratch:
            self._scratch.append(name)
        return name

    def materialize(self, label: str, df: "DataFrame") -> "DataFrame":
        """Write ``df`` to a scratch table and read it back: later steps read the rows, not the plan
        (short lineage; safe when the plan reads a table that later writes change)."""
        name = self.scratch(label)
        self.store.overwrite(name, df)
        return self.store.read(name)

    def checkpointer(self, label: str):
        """``TableStore.checkpointer`` over two scratch tables of this run."""
        return self.store.checkpointer((self.scratch(f"{label}_0"), self.scratch(f"{label}_1")))

    def drop_scratch(self) -> None:
        for name in self._scratch:
            self.store.drop(name)
        self._scratch.clear()

    def sweep_stale_scratch(self) -> list[str]:
        """Drop scratch tables left by crashed runs on this host (their process is gone)."""
        me = _host_hash()
        swept = []
        for name in self.store.list_tables(prefix=SCRATCH_PREFIX):
            m = _SCRATCH_RE.match(name)
            if m and m.group(1) == me and not _pid_alive(int(m.group(2))):
                self.store.drop(name)
                swept.append(name)
        if swept:
            log.info("swept %d scratch tables left by crashed runs", len(swept))
        return swept

    # --- timings, failpoints -----------------------------------------------------------------
    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds_by_step[name] = round(self.seconds_by_step.get(name, 0.0) + time.perf_counter() - t0, 3)

    def failpoint(self, name: str) -> None:
        failpoints.hit(f"{self.stage}.{name}")


class Stage(ABC):
    """One job of the pipeline (datatrove's step, NeMo Curator's typed stage)."""

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    depends_on: ClassVar[tuple[str, ...]] = ()
    per_source: ClassVar[bool] = False
    """True when the stage runs once per source (a Databricks task per source)."""
    summary: ClassVar[str] = ""

    @abstractmethod
    def run(self, ctx: RunContext) -> list[Funnel]:
        """Do the stage's work; return one funnel row per source or artifact processed."""

    def execute(self, store: "TableStore", cfg: "LewinConfig", run_id: str | None = None,
                progress: StageProgress | None = None) -> list[Funnel]:
        """Under the stage's run lock (``lewin.jobs.run_lock``; ``RunLockHeld`` before any work when
        another run holds it), run with a fresh context: sweep a crashed run's scratch, run, record
        the funnel rows, drop this run's scratch (also when the stage fails)."""
        from lewin.jobs import run_lock

        run_id = run_id or new_run_id(self.name)
        with run_lock.for_stage(self, cfg, run_id):
            ctx = RunContext(store, cfg, self.name, run_id, progress)
            ctx.sweep_stale_scratch()
            store.ensure("runs", T.RUNS)
            with store.recording_reads(self.name):
                try:
                    funnels = self.run(ctx)
                finally:
                    ctx.drop_scratch()
                    if progress is None:
                        ctx.progress.close()
            for f in funnels:
                f.detail.setdefault("seconds_by_step", dict(ctx.seconds_by_step))
                if not f.reconciles:
                    log.error("%s/%s does not reconcile: %s", f.stage, f.source, f)
            record_funnels(store, ctx.run_id, ctx.started, funnels)
        self.last_run_id = ctx.run_id
        return funnels

    def execute_for_result(self, store: "TableStore", cfg: "LewinConfig", run_id: str | None = None):
        """``execute``, then the stage's detailed result object (what the job functions return)."""
        self.execute(store, cfg, run_id)
        return self.result
