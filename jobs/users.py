"""Job: per-user chronological timelines (``users``) from the kept records.

The kept records are the rows of ``silver_records_scrubbed`` that ``record_labels`` keeps (the
label stage's gate), with the LLM-cleaned text where ``llm.clean_rewrite`` produced one.
One row per (source, user_id): counts, first/last time, mean length, active days, and the
user's records in time order (ties broken by record_id, so the order is deterministic).
Incremental: a per-user checksum (bit_xor of record hashes) finds the users whose records
changed; only those are rebuilt and MERGEd, users with no records left are deleted. A rerun finds
no change and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig

KEYS = ["source", "user_id"]


@dataclass
class UsersResult:
    run_id: str
    users_changed: int = 0
    users_removed: int = 0
    users_total: int = 0

    def funnel(self) -> Funnel:
        # in = timelines (re)built or removed; kept = (re)built; rejected = removed (no records left)
        return Funnel(stage="users", source="all", records_in=self.users_changed + self.users_removed,
                      kept=self.users_changed, rejected=self.users_removed,
                      detail={"users_changed": self.users_changed, "users_removed": self.users_removed,
                              "users_total": self.users_total})


def _checksums(scrubbed: DataFrame) -> DataFrame:
    return scrubbed.groupBy(*KEYS).agg(
        F.bit_xor(F.xxhash64("record_id", "text", "title")).alias("records_checksum"),
    )


def timelines(scrubbed: DataFrame, max_records: int, run_id: str) -> DataFrame:
    """Scrubbed records -> one row per user (pure transform)."""
    rec = F.struct(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in T.TIMELINE_RECORD.fields])
    agg = scrubbed.groupBy(*KEYS).agg(
        F.count(F.lit(1)).alias("n_records"),
        F.min("event_ts").alias("first_ts"),
        F.max("event_ts").alias("last_ts"),
        F.avg(F.length("text")).alias("mean_chars"),
        F.countDistinct(F.to_date("event_ts")).alias("active_days"),
        # struct order = (event_ts, record_id, …): sorting the structs is time order, ties by id
        F.sort_array(F.collect_list(rec)).alias("records"),
        F.bit_xor(F.xxhash64("record_id", "text", "title")).alias("records_checksum"),
    )
    records = F.when(F.size("records") > max_records, F.slice("records", -max_records, max_records)).otherwise(F.col("records"))
    return agg.withColumn("records", records).withColumn("_users_run_id", F.lit(run_id)).select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in T.USERS.fields])


class UsersStage(Stage):
    name = "users"
    summary = "kept records (silver_records_scrubbed x record_labels) -> users: one chronological timeline per user"
    reads = ("silver_records_scrubbed", "record_labels", "users")
    writes = ("users",)
    depends_on = ("label",)

    def __init__(self):
        self.result: UsersResult | None = None

    def run(self, ctx: RunContext) -> list[Funnel]:
        self.result = _build_users(ctx)
        return [self.result.funnel()]


def build_users(store: TableStore, cfg: LewinConfig, run_id: str | None = None) -> UsersResult:
    return UsersStage().execute_for_result(store, cfg, run_id)


def kept_records(store: TableStore) -> DataFrame:
    """The records the label stage keeps, with the text the dataset uses (the LLM-cleaned one when
    there is one): what users, and every task, are built from."""
    if not store.exists("record_labels"):
        raise RuntimeError("record_labels does not exist: run `lewin label` before `lewin users` "
                           "(timelines hold only labelled, kept records)")
    kept = store.read("record_labels").where("keep").select("record_id", F.col("text").alias("_clean_text"))
    scrubbed = store.read("silver_records_scrubbed").join(kept, "record_id", "inner")
    return scrubbed.withColumn("text", F.coalesce("_clean_text", "text")).drop("_clean_text")


def _build_users(ctx: RunContext) -> UsersResult:
    store, cfg, run_id = ctx.store, ctx.cfg, ctx.run_id
    result = UsersResult(run_id)
    store.ensure("users", T.USERS)
    if not store.exists("silver_records_scrubbed"):
        return result
    scrubbed = kept_records(store)
    current = _checksums(scrubbed)
    existing = store.read("users").select(*KEYS, F.col("records_checksum").alias("_old"))
    changed = current.join(existing, KEYS, "left").where(
        F.col("_old").isNull() | (F.col("_old") != F.col("records_checksum"))).select(*KEYS)
    gone = existing.select(*KEYS).join(current.select(*KEYS), KEYS, "left_anti")
    # both read `users`, which the writes below replace: materialise them first
    changed, gone = ctx.materialize("changed", changed), ctx.materialize("gone", gone)
    result.users_changed = changed.count()
    result.users_removed = gone.count()
    if result.users_changed:
        rows = timelines(scrubbed.join(changed, KEYS, "left_semi"), cfg.users.max_records_per_user, run_id)
        store.upsert("users", rows, KEYS, T.USERS)
    if result.users_removed:
        store.delete_keys("users", gone, KEYS)
    result.users_total = store.count("users")
    return result
