"""Job: curate bronze rows into ``silver_records``.

new bronze rows (by ingest run) -> clean -> rule tags -> drop by config -> language ID, quality
scores and MinHash band keys (one pooled Python pass) -> quality flags from the scores -> exact
dedup, then near dedup (earliest wins, also against silver) -> silver; a stream with a k-core
pool (Amazon: ``silver_amazon_pool``) reaches silver only inside the iterated k-core, which is
recomputed over the whole pool whenever new rows arrive (rows that fall out move to
``rejected``, rows that come back are restored).

What is curated is a *stream* (``lewin.udfs.sources``): a bronze table with its rules, the columns
it carries to silver and its special steps, all read from the stream's spec.

Every dropped row is in ``rejected`` with its stage, rule and detail. Incremental: a bronze
ingest run is processed once (``curate_log``). Idempotent and resumable: all writes are MERGEs on
``record_id``, and the bronze runs enter the log last.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig
from lewin.udfs import kcore as kcore_lib
from lewin.udfs import near_dedup, quality
from lewin.udfs import sources as _sources
from lewin.udfs.annotate import AnnotateOptions, annotate_batch
from lewin.udfs.clean import clean_column, normalized_hash
from lewin.udfs.pool import map_in_arrow_pooled
from lewin.udfs.rules import tag_rules
from lewin.udfs.sources import SideTable, StreamSpec

log = logging.getLogger(__name__)

NEAR_DUP_TABLE = "near_dup_signatures"


@dataclass
class CurateResult:
    run_id: str
    source: str
    records_in: int = 0
    kept: int = 0
    rejected: int = 0
    already_curated: int = 0
    """Of ``kept``: rows an interrupted earlier run had already merged (that run recorded no funnel)."""
    rejected_by_rule: dict[str, int] = field(default_factory=dict)
    displaced: int = 0
    kcore_moved_out: int = 0
    kcore_restored: int = 0
    kcore_rounds: list = field(default_factory=list)
    side_rows: dict[str, int] = field(default_factory=dict)
    """Rows copied to each side table (``silver_items``) — not records: outside the funnel's counts."""
    seconds_by_step: dict[str, float] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.funnel().reconciles

    def funnel(self) -> Funnel:
        return Funnel(
            stage="curate", source=self.source, records_in=self.records_in, kept=self.kept, rejected=self.rejected,
            detail={"rejected_by_rule": self.rejected_by_rule, "already_curated": self.already_curated,
                    "displaced_existing": self.displaced, "kcore_moved_out": self.kcore_moved_out,
                    "kcore_restored": self.kcore_restored, "kcore_rounds": self.kcore_rounds,
                    "side_rows": self.side_rows, "seconds_by_step": self.seconds_by_step},
        )

    def timed(self, step: str, t0: float) -> float:
        now = time.perf_counter()
        self.seconds_by_step[step] = round(self.seconds_by_step.get(step, 0.0) + now - t0, 3)
        return now


def _silver_projection(df: DataFrame, stream: StreamSpec, run_id: str) -> list:
    """Silver's columns: the common ones, the stream's carried columns (already under their silver
    names), null for the rest."""
    carry = stream.carry
    cols = []
    for f in T.SILVER_RECORDS.fields:
        if f.name == "title":
            c = F.when(F.col("clean_title") != "", F.col("clean_title"))
        elif f.name == "text":
            c = F.col("clean_text")
        elif f.name in ("lang", "lang_score", "quality_flags", "quality_signals"):
            c = F.col(f.name)
        elif f.name == "text_hash":
            c = normalized_hash(F.col("clean_text"))
        elif f.name == "_bronze_run_id":
            c = F.col("_run_id")
        elif f.name == "_curate_run_id":
            c = F.lit(run_id)
        elif f.name == "kind":
            c = F.lit(stream.kind)
        elif f.name in carry:
            c = F.col(f.name)
        elif f.name in ("record_id", "source", "user_id", "event_ts"):
            c = F.col(f.name)
        else:
            c = F.lit(None)
        cols.append(c.cast(f.dataType).alias(f.name))
    return cols


def _minhash_options(cfg: LewinConfig) -> near_dedup.MinHashOptions | None:
    dd = cfg.curate.dedup
    if not dd.near.enabled:
        return None
    n = dd.near
    return near_dedup.MinHashOptions(ngram=n.ngram, bands=n.bands, rows=n.rows, threshold=n.threshold, seed=n.seed,
                                     scope=dd.scope)


def _rejections(df: DataFrame, stage: str, rule, detail) -> DataFrame:
    return df.select(
        "record_id", "source", F.lit(stage).alias("_stage"), rule.alias("_rule"), detail.alias("_detail")
    )


def prepare(store: TableStore, cfg: LewinConfig, source: str | StreamSpec, batch: DataFrame, run_id: str) -> DataFrame:
    """Bronze rows -> one frame: silver columns plus ``_stage/_rule/_detail`` (null for the rows
    that survive). One pass: cleaning and rule tags as built-in expressions, then a single pooled
    Python UDF for language ID and quality tags (skipping rows the rules already rejected), then
    one projection deciding the outcome. No branch re-reads an upstream step, so the UDF and the
    regexes run once per row. ``source``: the curation stream (or its name)."""
    stream = _sources.stream(source) if isinstance(source, str) else source
    cc = cfg.curate
    df = clean_column(batch, "text", "clean_text", "source")
    df = clean_column(df, "title", "clean_title", "source")
    if stream.needs_account_stats:
        df = stream.account_stats(store, cfg, df, stream.bronze_table)
    df = tag_rules(df, cc.rules, stream)
    carry = [F.col(frm).alias(to) for to, frm in stream.carry.items()]
    df = df.select("record_id", "source", "user_id", "event_ts", "clean_title", "clean_text", "_run_id", *carry,
                   "_failed", "_fail_detail", (F.size("_failed") > 0).alias("_skip"))
    minhash = _minhash_options(cfg)
    if cc.language.enabled or cc.quality.enabled or minhash is not None:
        opts = AnnotateOptions(language=cc.language.enabled, model_path=cc.language.model_path,
                               max_chars=cc.language.max_chars, quality=cc.quality.enabled, minhash=minhash,
                               skip_column="_skip")
        out_schema = StructType(df.schema.fields + [
            StructField("lang", StringType()), StructField("lang_score", DoubleType()),
            StructField("quality_signals", T.QUALITY_SIGNALS),
        ] + ([StructField("near_dup_bands", T.NEAR_DUP_SIGNATURES["near_dup_bands"].dataType)] if minhash else []))
        import functools

        df = map_in_arrow_pooled(df, functools.partial(annotate_batch, opts=opts), out_schema,
                                 store.engine.python_workers)
    else:
        df = df.select("*", F.lit(None).cast("string").alias("lang"), F.lit(None).cast("double").alias("lang_score"),
                       F.lit(None).cast(T.QUALITY_SIGNALS).alias("quality_signals"))
    # flags from the scores and the configured thresholds (built-in expressions: no rescoring)
    no_flags = F.array().cast("array<string>")
    flags = (F.when(F.col("quality_signals").isNotNull(), quality.flag_column("quality_signals", cc.quality))
             .otherwise(no_flags) if cc.quality.enabled else no_flags)
    df = df.withColumn("quality_flags", flags)

    rule_bad = F.col("_skip")
    lang_bad = F.lit(False)
    if cc.language.enabled:
        lang_bad = ~F.coalesce(F.col("lang").isin(cc.language.keep), F.lit(False)) | (
            F.coalesce(F.col("lang_score"), F.lit(0.0)) < cc.language.min_score)
    drop_flags = list(cc.quality.drop_on)
    # the first flag in drop_on (null when none: an empty array must not be indexed)
    bad_flags = F.filter("quality_flags", lambda f: F.split(f, ":")[0].isin(drop_flags))
    first_bad_flag = (F.when(F.size(bad_flags) > 0, bad_flags[0])
                      if drop_flags else F.lit(None).cast("string"))
    quality_bad = first_bad_flag.isNotNull() if drop_flags else F.lit(False)
    also = F.when(F.size("_failed") > 1,
                  F.concat(F.lit(" (also: "), F.array_join(F.slice("_failed", 2, 100), ", "), F.lit(")")))
    stage = F.when(rule_bad, F.lit("rules")).when(lang_bad, F.lit("language")).when(quality_bad, F.lit("quality"))
    rule = (F.when(rule_bad, F.col("_failed")[0]).when(lang_bad, F.lit("language_v1"))
            .when(quality_bad, F.concat(F.lit("quality_"), F.split(first_bad_flag, ":")[0], F.lit("_v1"))))
    detail = (
        F.when(rule_bad, F.concat(F.col("_fail_detail"), F.coalesce(also, F.lit(""))))
        .when(lang_bad, F.concat(F.lit("lang="), F.coalesce(F.col("lang"), F.lit("none")), F.lit(" score="),
                                 F.coalesce(F.round("lang_score", 3).cast("string"), F.lit("none"))))
        .when(quality_bad, first_bad_flag)
    )
    silver = [c for c in _silver_projection(df, stream, run_id)]
    extra = ["near_dup_bands"] if minhash is not None else []
    # rejected rows keep only their id and source: their silver columns would not be used
    return df.select(*silver, *extra, stage.alias("_stage"), rule.alias("_rule"), detail.alias("_detail"))


def _dedup(store: TableStore, cands: DataFrame, existing_table: str, scope: str,
           keep: tuple[str, ...] = ()) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(winners, rejected duplicates, displaced existing ids). Earliest (event_ts, record_id) wins,
    within the batch and against what the table already holds, per source (``scope`` "source")
    or per user ("user"). Winners keep silver's columns and ``keep``."""
    key = ["source", "text_hash"] + (["user_id"] if scope == "user" else [])
    # ranks on the key columns only, then the wide rows (quality scores, band keys) by id
    narrow = cands.select("record_id", "event_ts", *key)
    w = Window.partitionBy(*key).orderBy("event_ts", "record_id")
    ranked = narrow.withColumn("_rn", F.row_number().over(w)).withColumn("_first", F.first("record_id").over(w))
    batch_dups = _rejections(ranked.where("_rn > 1"), "dedup", F.lit("dedup_exact_v1"),
                             F.concat(F.lit("duplicate of "), F.col("_first")))
    firsts = ranked.where("_rn = 1").drop("_rn", "_first")
    # the earliest kept row per key: at most one match per candidate
    existing = (store.read(existing_table, T.SILVER_RECORDS).groupBy(*key)
                .agg(F.min(F.struct("event_ts", "record_id")).alias("_x"))
                .select(*key, F.col("_x.event_ts").alias("_x_ts"), F.col("_x.record_id").alias("_x_id")))
    joined = firsts.join(existing, key, "left")
    beaten_by_old = F.col("_x_id").isNotNull() & (
        (F.col("_x_ts") < F.col("event_ts")) | ((F.col("_x_ts") == F.col("event_ts")) & (F.col("_x_id") <= F.col("record_id"))))
    # a row that is already in the table (a rerun) is neither new nor a duplicate of itself
    old_dups = _rejections(joined.where(beaten_by_old & (F.col("_x_id") != F.col("record_id"))), "dedup",
                           F.lit("dedup_exact_v1"), F.concat(F.lit("duplicate of "), F.col("_x_id")))
    # winners: new rows nothing older beats, and rows already in the table (a rerun after a crash)
    winner_ids = joined.where(~beaten_by_old | F.col("_x_id").isNull() | (F.col("_x_id") == F.col("record_id")))
    displaced = joined.where(F.col("_x_id").isNotNull() & ~beaten_by_old).select(
        F.col("_x_id").alias("record_id"), "source", F.lit("dedup").alias("_stage"),
        F.lit("dedup_exact_v1").alias("_rule"), F.concat(F.lit("duplicate of earlier "), F.col("record_id")).alias("_detail"))
    winners = cands.join(winner_ids.select("record_id"), "record_id", "left_semi").select(
        *[f.name for f in T.SILVER_RECORDS.fields], *keep)
    return winners, batch_dups.unionByName(old_dups), displaced


def _near_dedup(ctx: RunContext, stream: StreamSpec, winners: DataFrame, target: str,
                exact_displaced: DataFrame | None, result: CurateResult) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Exact-dedup winners -> (near-dedup winners, near duplicates, displaced kept rows), against
    the kept rows' signatures (``near_dup_signatures`` joined with ``target``'s texts). The
    winners' signatures are written before silver: a crash between the two leaves signatures
    of rows that are not kept, which the join with ``target`` ignores."""
    store, opts = ctx.store, _minhash_options(ctx.cfg)
    kept = store.read(target).where(F.col("source") == stream.source).select("record_id", "text")
    if exact_displaced is not None:  # already beaten by an earlier exact copy in this batch
        kept = kept.join(exact_displaced.select("record_id"), "record_id", "left_anti")
    existing = (store.read(NEAR_DUP_TABLE).where(F.col("source") == stream.source)
                .join(kept, "record_id").select("record_id", "source", "user_id", "event_ts", "text", "near_dup_bands"))
    res = near_dedup.near_duplicates(winners, existing, opts, ctx.checkpointer("near_dup"),
                                     materialize=ctx.materialize)
    # the result frames read only materialised tables (this batch's winners, the last label
    # checkpoint), never `target`: they stay valid while the writes below change it
    survivors, dups, displaced = res.winners, res.duplicates, res.displaced
    store.insert_new(NEAR_DUP_TABLE, res.new_signatures, ["record_id"], T.NEAR_DUP_SIGNATURES)
    n = dups.count()
    if n:
        result.rejected_by_rule[near_dedup.NEAR_DUP_RULE] = n
    return survivors, dups, displaced


def _reject_rows(df: DataFrame, run_id: str, at: datetime) -> DataFrame:
    return df.select(
        "record_id", "source", F.col("_stage").alias("stage"), F.col("_rule").alias("rule"),
        F.col("_detail").alias("detail"), F.lit(run_id).alias("run_id"), F.lit(at).cast("timestamp").alias("rejected_at"),
    )


def _apply_kcore(ctx: RunContext, stream: StreamSpec, batch_ids: DataFrame, result: CurateResult) -> None:
    """Recompute the core over the stream's whole pool; ``batch_ids`` (this batch's dedup winners)
    are counted into the funnel as kept (in the core) or rejected (outside it)."""
    store, cfg, run_id, at = ctx.store, ctx.cfg, ctx.run_id, ctx.started
    kc = cfg.curate.kcore
    pool = store.read(stream.kcore_pool)
    if not kc.enabled:
        store.insert_new("silver_records", pool, ["record_id"], T.SILVER_RECORDS)
        result.kept = batch_ids.count()
        return
    core, rounds = kcore_lib.kcore(pool.select("user_id", "item_id"), kc.min_user_degree, kc.min_item_degree,
                                   ctx.checkpointer("kcore"), kc.max_rounds)
    result.kcore_rounds = [r.__dict__ for r in rounds]
    store.append("kcore_rounds", store.spark.createDataFrame(
        [(run_id, r.round, r.users, r.items, r.interactions, r.dropped) for r in rounds], T.KCORE_ROUNDS))
    core = ctx.materialize("kcore_core", core)
    in_core = pool.join(core, ["user_id", "item_id"], "left_semi")
    out_core = pool.join(core, ["user_id", "item_id"], "left_anti")
    silver_pooled = store.read("silver_records").where(F.col("source") == stream.source).select("record_id")
    kc_rejected = store.read("rejected").where(F.col("stage") == "kcore").select("record_id")
    # who moves: counted before the writes that move them
    result.kcore_moved_out = out_core.join(silver_pooled, "record_id", "left_semi").count()
    result.kcore_restored = in_core.join(kc_rejected, "record_id", "left_semi").count()
    new_in = in_core.join(batch_ids, "record_id", "left_semi").count()
    new_total = pool.join(batch_ids, "record_id", "left_semi").count()
    store.delete_keys("silver_records", out_core.select("record_id"), ["record_id"])
    store.insert_new("silver_records", in_core, ["record_id"], T.SILVER_RECORDS)
    store.delete_keys("rejected", in_core.join(kc_rejected, "record_id", "left_semi"), ["record_id"])
    degree_detail = F.lit(f"outside the ({kc.min_user_degree} per user, {kc.min_item_degree} per item) core")
    store.insert_new("rejected", _reject_rows(
        out_core.select("record_id", "source", F.lit("kcore").alias("_stage"), F.lit(stream.kcore_rule).alias("_rule"),
                        degree_detail.alias("_detail")), run_id, at), ["record_id"], T.REJECTED)
    result.kept = new_in
    result.rejected += new_total - new_in
    if new_total - new_in:
        result.rejected_by_rule[stream.kcore_rule] = new_total - new_in


class CurateStage(Stage):
    name = "curate"
    summary = ("bronze -> silver_records: cleaning, rules, language ID, quality scores and flags, exact and "
               "near dedup, k-core; drops -> rejected")
    reads = ("bronze_*", "curate_log", "silver_records", "silver_amazon_pool", "silver_items", "rejected",
             "near_dup_signatures")
    writes = ("silver_records", "silver_amazon_pool", "silver_items", "rejected", "curate_log", "kcore_rounds",
              "near_dup_signatures")
    depends_on = ("ingest",)

    def __init__(self, sources: list[str] | None = None):
        """``sources``: curation stream names (``lewin.udfs.sources.streams()``; default: all)."""
        self.sources = list(sources) if sources is not None else list(_sources.stream_names())
        for s in self.sources:
            _sources.stream(s)  # unknown stream: ValueError naming the known ones
        self.results: list[CurateResult] = []

    def run(self, ctx: RunContext) -> list[Funnel]:
        self.results = []
        task = ctx.progress.task("curate", "sources", len(self.sources))
        for source in self.sources:
            self.results.append(_curate(ctx, source))
            ctx.drop_scratch()
            task.advance()
        return [r.funnel() for r in self.results]


def curate(store: TableStore, cfg: LewinConfig, source: str, run_id: str | None = None) -> CurateResult:
    stage = CurateStage([source])
    stage.execute(store, cfg, run_id)
    return stage.results[0]


def _new_runs(store: TableStore, bronze_table: str) -> list[str]:
    """The ingest runs of ``bronze_table`` that curate has not processed yet (``curate_log``)."""
    if not store.exists(bronze_table):
        return []
    done = {r["bronze_run_id"] for r in store.read("curate_log").where(F.col("bronze_table") == bronze_table).collect()}
    present = [r["_run_id"] for r in store.read(bronze_table).select("_run_id").distinct().collect()]
    return sorted(set(present) - done)


def _log_runs(ctx: RunContext, bronze_table: str, runs: list[str]) -> None:
    ctx.store.append("curate_log", ctx.store.spark.createDataFrame(
        [(bronze_table, rid, ctx.run_id, 0, ctx.started) for rid in runs], T.CURATE_LOG))


def _copy_side_table(ctx: RunContext, side: SideTable) -> int:
    """New bronze runs of a side table -> its silver table (insert when the key is new, as bronze
    keeps the first version of a row); returns the rows inserted."""
    store = ctx.store
    todo = _new_runs(store, side.bronze_table)
    if not todo:
        return 0
    first = Window.partitionBy(*side.key).orderBy("_run_id", "_file", "_line")
    rows = store.read(side.bronze_table).where(F.col("_run_id").isin(todo))
    rows = rows.withColumn("_rn", F.row_number().over(first)).where("_rn = 1")
    cols = []
    for f in side.schema.fields:
        c = (F.col("_run_id") if f.name == "_bronze_run_id" else F.lit(ctx.run_id) if f.name == "_curate_run_id"
             else F.col(f.name))
        cols.append(c.cast(f.dataType).alias(f.name))
    before = store.count(side.table)
    store.insert_new(side.table, rows.select(*cols), list(side.key), side.schema)
    inserted = store.count(side.table) - before
    _log_runs(ctx, side.bronze_table, todo)
    return inserted


def _curate(ctx: RunContext, source: str) -> CurateResult:
    store, cfg, run_id, started = ctx.store, ctx.cfg, ctx.run_id, ctx.started
    stream = _sources.stream(source)
    result = CurateResult(run_id, source)
    bronze_table = stream.bronze_table
    for name, schema in T.SILVER_TABLES.items():
        store.ensure(name, schema)
    for side in stream.side_tables:  # independent of the stream's own new rows
        store.ensure(side.table, side.schema)
        result.side_rows[side.table] = _copy_side_table(ctx, side)
    clock = time.perf_counter()
    todo = _new_runs(store, bronze_table)
    if not todo:
        return result
    bronze = store.read(bronze_table)
    batch = bronze.where(F.col("_run_id").isin(todo))
    if stream.fill_missing_from is not None:  # rules shared with another stream read its columns: null here
        missing = [f for f in _sources.bronze_schema(stream.fill_missing_from).fields if f.name not in batch.columns]
        batch = batch.select("*", *[F.lit(None).cast(f.dataType).alias(f.name) for f in missing])
    staged = ctx.materialize("prepared", prepare(store, cfg, stream, batch, run_id))
    clock = result.timed("clean_rules_annotate", clock)

    counts = {(r["_stage"], r["_rule"]): r["n"] for r in staged.groupBy("_stage", "_rule").agg(F.count(F.lit(1)).alias("n")).collect()}
    result.records_in = sum(counts.values())
    for (stage_name, rule), n in counts.items():
        if stage_name is not None:
            result.rejected_by_rule[rule] = result.rejected_by_rule.get(rule, 0) + n
    dd = cfg.curate.dedup
    bands = ("near_dup_bands",) if dd.near.enabled else ()
    cands = staged.where(F.col("_stage").isNull()).select(*[f.name for f in T.SILVER_RECORDS.fields], *bands)
    rejects = staged.where(F.col("_stage").isNotNull()).select("record_id", "source", "_stage", "_rule", "_detail")

    target = stream.kcore_pool or "silver_records"
    displaced = None
    if dd.enabled:
        winners, dups, displaced = _dedup(store, cands, target, dd.scope, keep=bands)
        # Materialise before writing: every output reads `target`, which the writes below change.
        winners, dups = ctx.materialize("winners", winners), ctx.materialize("dups", dups)
        displaced = ctx.materialize("displaced", displaced)
        n_dups = dups.count()
        if n_dups:
            result.rejected_by_rule["dedup_exact_v1"] = n_dups
        rejects = rejects.unionByName(dups)
    else:
        winners = cands
    clock = result.timed("dedup", clock)
    if dd.near.enabled:
        winners, near_dups, near_displaced = _near_dedup(ctx, stream, winners, target, displaced, result)
        rejects = rejects.unionByName(near_dups)
        displaced = near_displaced if displaced is None else displaced.unionByName(near_displaced)
        clock = result.timed("dedup_near", clock)
    if displaced is not None:
        displaced = ctx.materialize("all_displaced", displaced)
        result.displaced = displaced.count()

    n_winners = winners.count()
    before = store.count(target)
    winners = winners.select(*[f.name for f in T.SILVER_RECORDS.fields])
    store.insert_new(target, winners, ["record_id"], T.SILVER_RECORDS)
    ctx.failpoint("after_silver_merge")
    inserted = store.count(target) - before
    store.insert_new("rejected", _reject_rows(rejects, run_id, started), ["record_id"], T.REJECTED)
    if displaced is not None and result.displaced:
        store.delete_keys(target, displaced, ["record_id"])
        if target != "silver_records":
            store.delete_keys("silver_records", displaced, ["record_id"])
        if dd.near.enabled:
            store.delete_keys(NEAR_DUP_TABLE, displaced, ["record_id"])
        store.upsert("rejected", _reject_rows(displaced, run_id, started), ["record_id"], T.REJECTED)
    result.rejected = sum(result.rejected_by_rule.values())
    # every winner is kept: those an interrupted run had merged already are in the table too
    result.kept = n_winners if stream.kcore_pool is None else 0  # pooled rows count when the core is known
    result.already_curated = n_winners - inserted
    if result.already_curated:
        log.info("%s: %d rows were already curated by an interrupted run", source, result.already_curated)
    clock = result.timed("merge", clock)
    if stream.kcore_pool is not None:
        _apply_kcore(ctx, stream, winners.select("record_id"), result)
        clock = result.timed("kcore", clock)
    ctx.failpoint("before_log")
    _log_runs(ctx, bronze_table, todo)
    return result


