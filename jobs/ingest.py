"""Job: ingest raw dump files of one source into its bronze Delta table(s).

read (new files only) -> frame (``lewin.udfs.readers``) -> parse and validate
(``lewin.udfs.bronze``) -> MERGE good rows into bronze on ``record_id``, quarantine the rest with
their raw text and reason -> log the files -> write the run's funnel row.

Incremental: a file is new unless the ingest log holds its (path, size, mtime). Idempotent: a
rerun finds nothing new. Resumable: files go in batches; each batch's bronze and quarantine writes
are MERGEs keyed on ids derived from the data, and the batch's files enter the log only after
both, so a crash anywhere repeats at most one batch and the MERGEs absorb the repeat.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Iterator

import pyarrow as pa
from lewin.jobs.forget import ERASED_REASON, erasure_guard
from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig
from lewin.udfs import bronze, fs
from lewin.udfs import sources as _sources
from lewin.udfs.ids import stable_id
from lewin.udfs.pool import pooled_batches
from lewin.udfs.readers import ReaderOptions, detect_format, read_file
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

log = logging.getLogger(__name__)

_FILES_SCHEMA = StructType([StructField("path", StringType(), False), StructField("size", LongType(), False)])
_IGNORED_NAMES = {"license", "readme", "readme.md", "license.txt", "notice"}


@dataclass(frozen=True)
class InputFile:
    path: str
    size: int
    mtime_ns: int


@dataclass
class IngestResult:
    run_id: str
    source: str
    files: int = 0
    files_skipped: list[str] = field(default_factory=list)
    lines: int = 0
    blank_lines: int = 0
    records_in: int = 0
    kept: int = 0
    duplicates: int = 0
    quarantined: int = 0
    erased: int = 0
    """Records of erased users (``lewin forget``), dropped: the funnel's ``rejected``."""
    kept_by_table: dict[str, int] = field(default_factory=dict)
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    seconds_by_step: dict[str, float] = field(default_factory=dict)

    def timed(self, step: str, t0: float) -> float:
        now = time.perf_counter()
        self.seconds_by_step[step] = round(self.seconds_by_step.get(step, 0.0) + now - t0, 3)
        return now

    @property
    def reconciles(self) -> bool:
        return self.funnel().reconciles

    def funnel(self) -> Funnel:
        return Funnel(
            stage="ingest", source=self.source, records_in=self.records_in, kept=self.kept,
            duplicates=self.duplicates, rejected=self.erased, quarantined=self.quarantined, files=self.files,
            files_skipped=len(self.files_skipped), lines=self.lines, blank_lines=self.blank_lines,
            detail={"kept_by_table": self.kept_by_table, "quarantined_by_reason": self.quarantined_by_reason,
                    ERASED_REASON: self.erased,
                    "files_skipped": self.files_skipped[:50], "seconds_by_step": self.seconds_by_step},
        )


def list_files(paths: list[str], store: TableStore | None = None, *, follow_symlinks: bool = True,
               include_hidden: bool = False) -> tuple[list[InputFile], list[str]]:
    """Every readable dump file under ``paths`` (recursive, any filesystem ``lewin.udfs.fs``
    reads), and the files skipped, each as ``"<location> (<reason>)"``: ``unknown_format``,
    ``hidden`` (a ``.x``/``_x`` name, unless ``include_hidden``), ``symlink`` (unless
    ``follow_symlinks``), ``broken_symlink``, ``symlink_cycle``, ``same_file`` (see
    ``lewin.udfs.fs.walk``). On a cluster engine the engine lists (Spark's parallel file index), so
    millions of objects are not walked in one driver loop; its index hides ``.x``/``_x`` names
    itself, so with ``include_hidden`` the filesystem layer lists instead, as it does on the
    embedded engine and for a scheme the cluster has no connector for."""
    found: dict[str, InputFile] = {}
    skipped: list[str] = []
    for p in paths:
        entries = None
        if store is not None and store.engine.kind != "embedded" and not include_hidden:
            listing = _engine_listing(store, p)
            entries = None if listing is None else [fs.Listed(*e) for e in listing]
        if entries is None:
            entries = fs.walk(p, follow_symlinks=follow_symlinks, include_hidden=include_hidden)
        for f in entries:
            reason = f.skip or skip_reason(f.loc)
            if reason == "ignored":
                continue
            if reason:
                skipped.append(f"{f.loc} ({reason})")
                continue
            found[f.loc] = InputFile(f.loc, f.size, f.mtime_ns)
    return sorted(found.values(), key=lambda x: x.path), skipped


def skip_reason(loc: str) -> str | None:
    """None for a dump file to ingest; ``unknown_format`` for a file of no format Lewin reads
    (reported as skipped); ``ignored`` for a file passed over silently (README/LICENSE/NOTICE)."""
    if fs.name(loc).lower() in _IGNORED_NAMES:
        return "ignored"
    return None if detect_format(loc) is not None else "unknown_format"


def _engine_listing(store: TableStore, loc: str) -> list[tuple[str, int, int]] | None:
    """(location, size, mtime_ns) of the files under ``loc`` listed by the engine (the
    ``binaryFile`` source with its content pruned), or None when the engine has no filesystem for
    the location's scheme (the caller lists through ``lewin.udfs.fs`` instead)."""
    try:
        df = (store.spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(loc)
              .select("path", "length", (F.unix_micros("modificationTime") * 1000).alias("mtime_ns")))
        rows = df.collect()
    except Exception as exc:
        text = str(exc)
        if "PATH_NOT_FOUND" in text or "Path does not exist" in text:
            raise FileNotFoundError(f"input path does not exist: {loc}") from None
        if "No FileSystem for scheme" in text or "UnsupportedFileSystem" in text:
            log.warning("the engine cannot list %s (no connector for its scheme): listing it from the driver", loc)
            return None
        raise
    return [(fs.location(r["path"]), int(r["length"]), int(r["mtime_ns"])) for r in rows]


def _same_file_key(path: str, size: int, mtime_ns: int) -> tuple[str, int, int]:
    """The ingest log's identity of a file version: (path, size, mtime in ms). Milliseconds, since
    that is what Spark's file index and object stores report, while local listings give ns."""
    return path, size, mtime_ns // 1_000_000


def _batches(files: list[InputFile], max_files: int, max_bytes: int) -> Iterator[list[InputFile]]:
    batch: list[InputFile] = []
    size = 0
    for f in files:
        if batch and (len(batch) >= max_files or size + f.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += f.size
    if batch:
        yield batch


def _read_paths(batches: Iterator[pa.RecordBatch], opts: ReaderOptions, workers: int) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: file paths in, reader rows out (fanned out to worker processes)."""
    paths = [p for b in batches for p in b.column("path").to_pylist()]
    yield from pooled_batches(functools.partial(read_file, opts=opts), paths, workers)


def read_files(store: TableStore, files: list[InputFile], opts: ReaderOptions) -> DataFrame:
    """A DataFrame of reader rows for ``files`` (read on the engine's workers)."""
    spark = store.spark
    workers = store.engine.python_workers
    rows = [(f.path, f.size) for f in files]
    # biggest files first, round-robin over partitions: balanced work per partition
    rows.sort(key=lambda r: -r[1])
    n_parts = max(1, min(len(rows), max(2, workers) * 2))
    df = spark.createDataFrame(rows, _FILES_SCHEMA).repartition(n_parts)
    fn = functools.partial(_read_paths, opts=opts, workers=workers)
    return df.mapInArrow(fn, T.READER_OUTPUT)


def _quarantine_rows(staged: DataFrame, source: str, run_id: str, started: datetime, raw_max: int) -> DataFrame:
    raw = F.col("raw")
    return staged.where(F.col("_reason").isNotNull() & ~F.col("_reason").isin("blank_line", ERASED_REASON)).select(
        stable_id(F.lit(source), "file", F.col("line").cast("string"), F.col("item").cast("string"), chars=32).alias("quarantine_id"),
        F.lit(source).alias("source"),
        F.col("file"),
        F.col("line"),
        F.col("item"),
        F.col("_reason").alias("reason"),
        F.col("_detail").alias("detail"),
        F.substring(raw, 1, raw_max).alias("raw"),
        F.coalesce(F.length(raw) > raw_max, F.lit(False)).alias("raw_truncated"),
        F.lit(run_id).alias("run_id"),
        F.lit(started).cast("timestamp").alias("quarantined_at"),
    )


def _dedup(rows: DataFrame) -> DataFrame:
    """One row per record_id inside a batch: the first occurrence by (file, line)."""
    w = Window.partitionBy("record_id").orderBy(F.col("_file"), F.col("_line"))
    return rows.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")


class IngestStage(Stage):
    name = "ingest"
    summary = "raw dump files of one source -> bronze tables; bad records -> quarantine"
    reads = ("ingest_log", "bronze_*", "quarantine", "erasures")  # insert_new reads the table it merges into
    writes = ("bronze_*", "quarantine", "ingest_log")
    per_source = True

    def __init__(self, source: str, paths: list[str], on_progress: Callable[[int, int], None] | None = None):
        _sources.get(source)  # unknown source: ValueError naming the known ones
        self.source, self.paths, self.on_progress = source, paths, on_progress
        self.result: IngestResult | None = None

    def run(self, ctx: RunContext) -> list[Funnel]:
        self.result = _ingest(ctx, self.source, self.paths, self.on_progress)
        return [self.result.funnel()]


def ingest(
    store: TableStore,
    cfg: LewinConfig,
    source: str,
    paths: list[str],
    run_id: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> IngestResult:
    """Ingest every new file under ``paths`` for ``source``. Returns the run's funnel."""
    return IngestStage(source, paths, on_progress).execute_for_result(store, cfg, run_id)


def _ingest(ctx: RunContext, source: str, paths: list[str],
            on_progress: Callable[[int, int], None] | None) -> IngestResult:
    store = ctx.store
    result = IngestResult(run_id=ctx.run_id, source=source)

    files, skipped = list_files(paths, store, **listing_options(ctx.cfg))
    result.files_skipped = skipped
    for s in skipped:
        log.warning("skipped: %s", s)
    new_files = new_since_log(store, source, files)
    log.info("%s: %d files found, %d new", source, len(files), len(new_files))
    ingest_files(ctx, source, new_files, result, on_progress)
    return result


def new_since_log(store: TableStore, source: str, files: list[InputFile]) -> list[InputFile]:
    """The files whose (path, size, mtime) the ingest log does not hold for ``source``."""
    store.ensure("ingest_log", T.INGEST_LOG)
    done = {
        _same_file_key(r["path"], r["size"], r["mtime_ns"])
        for r in store.read("ingest_log").where(F.col("source") == source).select("path", "size", "mtime_ns").collect()
    }
    return [f for f in files if _same_file_key(f.path, f.size, f.mtime_ns) not in done]


def ingest_files(ctx: RunContext, source: str, new_files: list[InputFile], result: IngestResult,
                 on_progress: Callable[[int, int], None] | None = None) -> IngestResult:
    """Read, parse, MERGE and log ``new_files`` in batches, adding to ``result``'s counts: the one
    path every ingestion takes (batch runs, ``--watch`` polls, streaming micro-batches)."""
    store, cfg, run_id, started = ctx.store, ctx.cfg, ctx.run_id, ctx.started
    ic = cfg.ingest

    params = bronze.BronzeParams(
        run_id=run_id,
        run_started=started,
        min_event_time=ic.min_event_time,
        max_event_time=started + timedelta(days=ic.max_future_days),
        max_text_chars=ic.max_text_chars,
    )
    opts = ReaderOptions(source=source, max_record_bytes=ic.max_record_bytes, options=source_options(cfg, source),
                         raw_max_chars=ic.quarantine_raw_max_chars)
    tables = _sources.bronze_tables(source)
    for t, schema in tables.items():
        store.ensure(t, schema)
    store.ensure("quarantine", T.QUARANTINE)
    kept_by_table: Counter = Counter()
    reasons: Counter = Counter()
    done_files = 0
    files_task = ctx.progress.task(f"ingest {source}", "files", len(new_files))
    guard = erasure_guard(store, cfg, source)  # erased users (lewin forget): None when there are none

    for batch in _batches(new_files, ic.batch_max_files, ic.batch_max_bytes):
        clock = time.perf_counter()
        wide = bronze.normalize(read_files(store, batch, opts), source, params)
        # Materialise once: every later step (MERGEs, counts) reads the staged rows, not the files.
        staged = ctx.materialize("batch", wide.select(*bronze.wide_columns(source), "file", "line", "item", "raw",
                                                     "_table", "_reason", "_detail"))
        if guard is not None:  # their records are dropped, counted as erased_user, never written
            staged = guard.mark(ctx, staged)
        clock = result.timed("read_parse_stage", clock)
        groups = (
            staged.groupBy("file", "_table", "_reason")
            .agg(F.count(F.lit(1)).alias("n"), F.max("line").alias("max_line"))
            .collect()
        )
        per_file_records: Counter = Counter()
        per_file_lines: dict[str, int] = defaultdict(int)
        good_by_table: Counter = Counter()
        for g in groups:
            per_file_lines[g["file"]] = max(per_file_lines[g["file"]], g["max_line"] or 0)
            if g["_reason"] == "blank_line":
                result.blank_lines += g["n"]
                continue
            per_file_records[g["file"]] += g["n"]
            if g["_reason"] is None:
                good_by_table[g["_table"]] += g["n"]
            elif g["_reason"] == ERASED_REASON:
                result.erased += g["n"]
            else:
                reasons[g["_reason"]] += g["n"]
                result.quarantined += g["n"]
        result.records_in += sum(per_file_records.values())
        result.lines += sum(per_file_lines.values())
        clock = result.timed("count", clock)

        for t in tables:
            if not good_by_table[t]:
                continue
            before = store.count(t)
            store.insert_new(t, _dedup(bronze.table_rows(staged, t)), ["record_id"], tables[t])
            inserted = store.count(t) - before
            kept_by_table[t] += inserted
            result.kept += inserted
            result.duplicates += good_by_table[t] - inserted
            ctx.failpoint("after_bronze_merge")
        clock = result.timed("bronze_merge", clock)
        store.insert_new(
            "quarantine",
            _quarantine_rows(staged, source, run_id, started, ic.quarantine_raw_max_chars),
            ["quarantine_id"],
            T.QUARANTINE,
        )
        clock = result.timed("quarantine_merge", clock)
        ctx.failpoint("before_log")
        log_rows = [
            (f.path, f.size, f.mtime_ns, source, run_id, per_file_records.get(f.path, 0), started) for f in batch
        ]
        store.append("ingest_log", store.spark.createDataFrame(log_rows, T.INGEST_LOG))
        result.timed("log", clock)
        done_files += len(batch)
        result.files += len(batch)
        files_task.update(done_files, len(new_files))
        if on_progress:
            on_progress(done_files, len(new_files))

    for t, n in kept_by_table.items():
        result.kept_by_table[t] = result.kept_by_table.get(t, 0) + n
    for r, n in reasons.items():
        result.quarantined_by_reason[r] = result.quarantined_by_reason.get(r, 0) + n
    return result


def listing_options(cfg: LewinConfig) -> dict[str, bool]:
    """``list_files``'s keyword arguments from ``ingest.follow_symlinks`` / ``ingest.hidden_files``."""
    return {"follow_symlinks": cfg.ingest.follow_symlinks, "include_hidden": cfg.ingest.hidden_files == "read"}


def source_options(cfg: LewinConfig, source: str) -> dict[str, object]:
    """The reader options of ``source``: ``ingest.sources.<source>``'s keys other than ``paths``
    that are set; a ``*_path`` value is made absolute here (the readers run in other processes)."""
    sc = cfg.ingest.sources.get(source)
    if sc is None:
        return {}
    out: dict[str, object] = {}
    for k, v in sc.model_dump().items():
        if k == "paths" or v is None:
            continue
        out[k] = fs.location(v) if k.endswith("_path") else v
    return out


def sources_under(data_dir: str) -> dict[str, list[str]]:
    """``<data>/<source>/…`` folders -> {source: [folder]} for every known source present."""
    if not fs.isdir(data_dir):
        raise FileNotFoundError(f"data folder does not exist: {data_dir}")
    present = set(fs.list_dirs(data_dir))
    return {s: [fs.join(data_dir, s)] for s in _sources.names() if s in present}

