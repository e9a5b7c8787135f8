"""Streaming ingestion: ``lewin ingest --stream`` and ``lewin ingest --watch``.

Every micro-batch (or poll) takes the batch path of ``lewin.jobs.ingest``: its files ->
``new_since_log`` -> ``ingest_files`` (readers, normalisation, bronze and quarantine MERGEs, the
ingest log), as a run of its own with its funnel row in ``runs`` (run id ``<stream run>-b<batch>``,
or ``-p<poll>``).

* spark / connect / databricks: Structured Streaming over each input location. It only lists:
  the ``binaryFile`` source with ``path``, ``length`` and ``modificationTime`` selected, so the
  ``content`` column is pruned and no file is read by Spark (Lewin's readers read them); Auto
  Loader (``cloudFiles`` with ``cloudFiles.format=binaryFile``) on Databricks. ``foreachBatch``
  ingests each micro-batch's files. ``trigger(availableNow=True)`` by default (every file there
  now, in micro-batches of ``ingest.batch_max_files``, then stop); with ``--watch`` a
  processing-time trigger every ``ingest.watch_seconds``.
* embedded: Sail has no Structured Streaming. ``--watch`` polls (list, new since the log, ingest)
  every ``ingest.watch_seconds``; ``--stream`` alone is one batch ingest.

Exactly once. The checkpoint (``<ingest.checkpoint_dir or storage.root/_checkpoints>/ingest_<source>``)
records a micro-batch's files before ``foreachBatch`` runs and commits the batch after it returns;
a crash in between replays the same files on restart. The batch path absorbs the replay: files
the ingest log already holds are dropped by ``new_since_log``, and rows written before the crash
are not written again (bronze and quarantine writes insert only absent ids). The file source
tracks files by path: a file rewritten in place is not delivered again (a batch ``lewin ingest``
picks it up); files must appear atomically (write elsewhere, then rename into the folder).

``foreachBatch`` over Spark Connect runs the function in a Python process of the server: the
function (``MicroBatchIngest``) is picklable, holds no session, and imports lazily.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

from lewin.jobs import failpoints
from lewin.jobs.ingest import IngestResult, IngestStage, InputFile, ingest_files, list_files, listing_options, new_since_log, skip_reason
from lewin.jobs.stage import RunContext, new_run_id
from lewin.udfs import fs

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from lewin.jobs.engine import Engine
    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import LewinConfig

log = logging.getLogger(__name__)

# A streaming file source needs its schema up front; binaryFile's is fixed.
_BINARY_FILE_SCHEMA = "path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY"
# The file source forgets (and then ignores) files older than the newest one seen minus
# maxFileAge (7 days by default): a dump copied in with its original mtime would be skipped
# silently. Lewin keeps every path, as Auto Loader does by default.
_NO_AGE_LIMIT = "36500d"


@dataclass
class StreamReport:
    run_id: str
    """The stream's run id; its micro-batches' runs are ``<run_id>-b<N>`` (polls ``-p<N>``)."""
    runs: int
    """Micro-batches (or polls) that ingested or skipped files (one funnel row each)."""
    result: IngestResult
    """Their funnel rows, summed."""


def checkpoint_location(cfg: "LewinConfig", source: str) -> str:
    base = cfg.ingest.checkpoint_dir or fs.join(cfg.storage.root_location, "_checkpoints")
    return fs.join(base, f"ingest_{source}")


class _FilesStage(IngestStage):
    """``IngestStage`` over files already listed and found new (one micro-batch or poll)."""

    def __init__(self, source: str, files: list[InputFile], skipped: list[str]):
        super().__init__(source, [])
        self.files, self.skipped = files, skipped

    def run(self, ctx: RunContext):
        self.result = IngestResult(run_id=ctx.run_id, source=self.source, files_skipped=list(self.skipped))
        ingest_files(ctx, self.source, self.files, self.result, self.on_progress)
        return [self.result.funnel()]


def ingest_listed(store: "TableStore", cfg: "LewinConfig", source: str, files: list[InputFile],
                  skipped: list[str], run_id: str, label: str, replay_note: str = "") -> IngestResult | None:
    """Ingest the files of one micro-batch or poll that the ingest log does not hold, as run
    ``run_id`` (funnel row included). None when there was nothing to ingest or report."""
    for s in skipped:
        log.warning("skipped: %s", s)
    new = new_since_log(store, source, files)
    note = replay_note if files and not new else ""
    log.info("%s %s: %d files, %d new%s", source, label, len(files), len(new), note)
    if not new and not skipped:
        return None
    stage = _FilesStage(source, new, skipped)
    stage.execute(store, cfg, run_id)
    return stage.result


def _classify(entries: Iterable[tuple[str, int, int]]) -> tuple[list[InputFile], list[str]]:
    """(path, size, mtime_ns) rows -> the dump files and the unknown-format files, filtered as
    ``list_files`` filters (``lewin.jobs.ingest.skip_reason``; the engine's file index has hidden
    ``.x``/``_x`` names already)."""
    files: dict[str, InputFile] = {}
    skipped: list[str] = []
    for path, size, mtime_ns in entries:
        loc = fs.location(path)  # Spark's file:/x -> /x, as the ingest log and the readers hold it
        reason = skip_reason(loc)
        if reason == "ignored":
            continue
        if reason:
            skipped.append(f"{loc} ({reason})")
        else:
            files[loc] = InputFile(loc, int(size), int(mtime_ns))
    return sorted(files.values(), key=lambda f: f.path), sorted(skipped)


class MicroBatchIngest:
    """The ``foreachBatch`` function: ingest the files of one micro-batch.

    Picklable (Spark Connect pickles it and calls it in a Python process of the server): it holds
    the config and the engine's traits, and builds a store over the micro-batch's own session.
    In the driver's process (classic Spark, a Databricks cluster) it uses the driver's store."""

    def __init__(self, cfg: "LewinConfig", source: str, run_id: str, engine: "Engine",
                 store: "TableStore | None" = None):
        self.cfg, self.source, self.run_id = cfg, source, run_id
        self.kind, self.python_workers, self.table_format = engine.kind, engine.python_workers, engine.table_format
        self._store = store

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None}  # a session never travels

    def _store_for(self, batch_df: "DataFrame") -> "TableStore":
        if self._store is not None:
            return self._store
        from lewin.jobs.engine import Engine
        from lewin.jobs.tables import TableStore

        engine = Engine(batch_df.sparkSession, self.kind, self.python_workers, self.table_format)
        return TableStore(engine, self.cfg.storage)

    def __call__(self, batch_df: "DataFrame", batch_id: int) -> None:
        rows = batch_df.collect()
        files, skipped = _classify((r["path"], r["length"], r["mtime_ns"]) for r in rows)
        ingest_listed(self._store_for(batch_df), self.cfg, self.source, files, skipped,
                      f"{self.run_id}-b{batch_id}", f"micro-batch {batch_id}",
                      " (all in the ingest log already: ingested before, or a micro-batch replayed after a crash)")
        # recovery tests: die after the batch is ingested and logged, before Spark commits it
        failpoints.hit(f"ingest.stream_batch_{batch_id}_done")


def _file_stream(spark: "SparkSession", kind: str, loc: str, max_files: int) -> "DataFrame":
    """The new files under ``loc`` as a stream of (path, length, mtime_ns) rows."""
    from pyspark.sql import functions as F

    if kind == "databricks":
        reader = (spark.readStream.format("cloudFiles").option("cloudFiles.format", "binaryFile")
                  .option("cloudFiles.maxFilesPerTrigger", str(max_files)))
    else:
        reader = (spark.readStream.format("binaryFile").schema(_BINARY_FILE_SCHEMA)
                  .option("maxFilesPerTrigger", str(max_files)).option("maxFileAge", _NO_AGE_LIMIT))
    return (reader.option("recursiveFileLookup", "true").load(loc)
            .select("path", "length", (F.unix_micros("modificationTime") * 1000).alias("mtime_ns")))


def _spark_stream(store: "TableStore", cfg: "LewinConfig", source: str, paths: list[str], watch: bool,
                  run_id: str, stop: threading.Event) -> None:
    ic = cfg.ingest
    frames = [_file_stream(store.spark, store.engine.kind, p, ic.batch_max_files) for p in paths]
    df = frames[0]
    for f in frames[1:]:
        df = df.union(f)
    # classic session (local Spark, a Databricks cluster): the function runs in this process
    in_driver = not type(store.spark).__module__.startswith("pyspark.sql.connect")
    fn = MicroBatchIngest(cfg, source, run_id, store.engine, store if in_driver else None)
    checkpoint = checkpoint_location(cfg, source)
    writer = (df.writeStream.queryName(f"lewin_ingest_{source}").foreachBatch(fn)
              .option("checkpointLocation", checkpoint))
    if watch:
        writer = writer.trigger(processingTime=f"{ic.watch_seconds} seconds")
    else:
        writer = writer.trigger(availableNow=True)
    log.info("%s: streaming %s (checkpoint %s, %s)", source, ", ".join(paths), checkpoint,
             f"a micro-batch every {ic.watch_seconds}s until stopped" if watch else "every file there now, then stop")
    query = writer.start()
    try:
        while not query.awaitTermination(1):  # returns when the query ends; raises if it failed
            if stop.is_set():
                # let a running micro-batch finish (a second signal interrupts), then stop
                while query.isActive and query.status.get("isTriggerActive"):
                    time.sleep(0.2)
                break
    finally:
        if query.isActive:
            query.stop()
    exc = query.exception()
    if exc is not None:
        raise exc


def _poll(store: "TableStore", cfg: "LewinConfig", source: str, paths: list[str], run_id: str,
          stop: threading.Event, max_polls: int | None) -> None:
    reported: set[str] = set()  # skipped files are reported on the first poll that sees them
    n = 0
    while True:
        n += 1
        files, skipped = list_files(paths, store, **listing_options(cfg))
        fresh = [s for s in skipped if s not in reported]
        reported.update(skipped)
        ingest_listed(store, cfg, source, files, fresh, f"{run_id}-p{n}", f"poll {n}")
        if stop.is_set() or (max_polls is not None and n >= max_polls):
            return
        if stop.wait(cfg.ingest.watch_seconds):
            return


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by the first SIGINT/SIGTERM (finish the current batch, then stop); a second
    one raises ``KeyboardInterrupt`` (stop at once: a cut batch is replayed on the next start)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("%s: stopping after the current batch (again to stop at once)", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stream_ingest(store: "TableStore", cfg: "LewinConfig", source: str, paths: list[str], watch: bool = False,
                  max_polls: int | None = None) -> StreamReport:
    """``lewin ingest --stream`` (``watch=False``) or ``--watch``; returns what its runs did.
    ``max_polls`` bounds an embedded watch (tests). SIGINT/SIGTERM end a watch cleanly."""
    run_id = new_run_id("ingest")
    if store.engine.kind == "embedded" and not watch:
        log.info("%s: the embedded engine has no Structured Streaming: --stream without --watch is one "
                 "batch ingest", source)
        IngestStage(source, paths).execute(store, cfg, f"{run_id}-p1")
        return summarize(store, source, run_id)
    with stop_on_signals() as stop:
        if store.engine.kind != "embedded":
            _spark_stream(store, cfg, source, paths, watch, run_id, stop)
        else:
            log.info("%s: watching %s, a poll every %ds (the embedded engine has no Structured Streaming)",
                     source, ", ".join(paths), cfg.ingest.watch_seconds)
            _poll(store, cfg, source, paths, run_id, stop, max_polls)
    return summarize(store, source, run_id)


def summarize(store: "TableStore", source: str, run_id: str) -> StreamReport:
    """The funnel rows of a stream's runs (``<run_id>-…``), summed into one ``IngestResult``."""
    import json

    from pyspark.sql import functions as F

    from lewin.schemas import tables as T

    total = IngestResult(run_id=run_id, source=source)
    rows = (store.read("runs", T.RUNS).where((F.col("stage") == "ingest") & (F.col("source") == source)
                                             & F.col("run_id").startswith(f"{run_id}-")).collect())
    for r in rows:
        total.files += r["files"] or 0
        total.lines += r["lines"] or 0
        total.blank_lines += r["blank_lines"] or 0
        total.records_in += r["records_in"]
        total.kept += r["kept"]
        total.duplicates += r["duplicates"]
        total.quarantined += r["quarantined"]
        detail = json.loads(r["detail"] or "{}")
        total.files_skipped += detail.get("files_skipped", [])
        for key in ("kept_by_table", "quarantined_by_reason"):
            acc = getattr(total, key)
            for k, v in detail.get(key, {}).items():
                acc[k] = acc.get(k, 0) + v
    return StreamReport(run_id, len(rows), total)
