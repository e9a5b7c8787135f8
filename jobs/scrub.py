"""Job: replace PII in ``silver_records`` with consistent fictitious values ->
``silver_records_scrubbed``.

Incremental and idempotent: silver rows not scrubbed yet (or scrubbed under another
configuration: ``scrub_version``) are scrubbed and upserted; scrubbed rows whose silver row is
gone (k-core or dedup moved it to ``rejected``) are deleted. Nothing downstream of this table
ever sees the original text, and no log line carries it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig
from lewin.udfs import fs, pii
from lewin.udfs.pool import map_in_arrow_pooled

log = logging.getLogger(__name__)


@dataclass
class ScrubResult:
    run_id: str
    records_in: int = 0
    scrubbed: int = 0
    removed: int = 0
    entities: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def reconciles(self) -> bool:
        return self.funnel().reconciles

    def funnel(self) -> Funnel:
        return Funnel(stage="scrub", source="all", records_in=self.records_in, kept=self.scrubbed,
                      detail={"entities_replaced": self.entities, "removed_downstream": self.removed,
                              "seconds": self.seconds})


def resolve_salt(cfg: LewinConfig) -> bytes:
    """The surrogate key: ``pii.salt``, else ``$<pii.salt_env>``, else ``pii.salt_file`` (created
    with a random key on first use). Never a constant in code."""
    pc = cfg.pii
    if pc.salt:
        return pc.salt.encode("utf-8")
    env = os.environ.get(pc.salt_env)
    if env:
        return env.encode("utf-8")
    path = fs.location(pc.salt_file) if pc.salt_file else fs.join(cfg.storage.root_location, "_secrets", "pii_salt")
    if fs.isfile(path):
        return fs.read_bytes(path).strip()
    key = secrets.token_hex(32).encode()
    if fs.scheme(path) is None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
    else:  # an object store: access is the bucket's policy, not a file mode
        fs.write_bytes(path, key)
    log.info("created a new PII surrogate key at %s (keep it: the same key keeps surrogates stable)", path)
    return key


def pii_options(cfg: LewinConfig) -> pii.PiiOptions:
    pc = cfg.pii
    return pii.PiiOptions(entities=tuple(pc.entities), min_score=tuple(sorted(pc.min_score.items())),
                          spacy_model=pc.spacy_model, ner_window=pc.ner_window, salt=resolve_salt(cfg))


def scrub_version(opts: pii.PiiOptions) -> str:
    """Changes when anything that changes the output changes (the key only by fingerprint)."""
    key_fp = hmac.new(opts.salt, b"lewin-scrub-fingerprint", hashlib.sha256).hexdigest()[:8]
    payload = json.dumps([pii.SCRUB_VERSION, opts.entities, opts.min_score, opts.spacy_model, opts.ner_window, key_fp])
    return f"{pii.SCRUB_VERSION}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


class ScrubStage(Stage):
    name = "scrub"
    summary = "silver_records -> silver_records_scrubbed: PII replaced by consistent per-user surrogates"
    reads = ("silver_records", "silver_records_scrubbed")
    writes = ("silver_records_scrubbed", "bronze_*", "silver_records", "silver_amazon_pool")
    depends_on = ("curate",)

    def __init__(self):
        self.result: ScrubResult | None = None

    def run(self, ctx: RunContext) -> list[Funnel]:
        self.result = _scrub(ctx)
        # pii disabled: nothing was looked at, so there is no funnel row to record
        return [self.result.funnel()] if ctx.cfg.pii.enabled else []


def scrub(store: TableStore, cfg: LewinConfig, run_id: str | None = None) -> ScrubResult:
    return ScrubStage().execute_for_result(store, cfg, run_id)


def _scrub(ctx: RunContext) -> ScrubResult:
    store, cfg, run_id = ctx.store, ctx.cfg, ctx.run_id
    clock = time.perf_counter()
    result = ScrubResult(run_id)
    store.ensure("silver_records_scrubbed", T.SILVER_RECORDS_SCRUBBED)
    if not cfg.pii.enabled:
        log.warning("pii.enabled is false: nothing is scrubbed and nothing is published downstream")
        return result
    if not store.exists("silver_records"):
        return result
    opts = pii_options(cfg)
    version = scrub_version(opts)
    silver = store.read("silver_records")
    done = store.read("silver_records_scrubbed").where(F.col("scrub_version") == version).select("record_id")
    todo = silver.join(done, "record_id", "left_anti")
    out_schema = StructType(T.SILVER_RECORDS.fields + [StructField("pii_spans", T.SILVER_RECORDS_SCRUBBED["pii_spans"].dataType)])
    scrubbed = map_in_arrow_pooled(todo.select(*[f.name for f in T.SILVER_RECORDS.fields]),
                                   functools.partial(pii.scrub_batch, opts=opts), out_schema,
                                   store.engine.python_workers)
    scrubbed = scrubbed.withColumn("scrub_version", F.lit(version)).withColumn("_scrub_run_id", F.lit(run_id))
    staged = ctx.materialize("scrubbed", scrubbed)
    task = ctx.progress.task("scrub PII", "records")
    result.records_in = staged.count()
    if result.records_in:
        counts = staged.select(F.explode("pii_spans").alias("s")).groupBy("s.type").count().collect()
        result.entities = {r["type"]: r["count"] for r in counts}
        store.upsert("silver_records_scrubbed", staged, ["record_id"], T.SILVER_RECORDS_SCRUBBED)
    result.scrubbed = result.records_in
    task.update(result.records_in, result.records_in)
    ctx.failpoint("after_upsert")
    gone = store.read("silver_records_scrubbed").select("record_id").join(silver.select("record_id"), "record_id", "left_anti")
    result.removed = gone.count()
    if result.removed:
        store.delete_keys("silver_records_scrubbed", gone, ["record_id"])
    if cfg.pii.retention == "drop_upstream_text" and result.records_in:
        _drop_upstream_text(store, staged.select("record_id", "source"))
    result.seconds = round(time.perf_counter() - clock, 3)
    return result


def _drop_upstream_text(store: TableStore, ids) -> None:
    """Retention: the original text leaves bronze and silver once its scrubbed copy exists."""
    from lewin.udfs import sources

    for stream in sources.streams():  # the bronze tables silver records come from
        if store.exists(stream.bronze_table):
            _null_columns(store, stream.bronze_table, ids.where(F.col("source") == stream.source).select("record_id"),
                          {"text": "NULL", "title": "NULL"})
    _null_columns(store, "silver_records", ids.select("record_id"), {"text": "''", "title": "NULL"})
    if store.exists("silver_amazon_pool"):
        _null_columns(store, "silver_amazon_pool", ids.select("record_id"), {"text": "''", "title": "NULL"})


def _null_columns(store: TableStore, table: str, keys, values: dict[str, str]) -> None:
    store.update_keys(table, keys, ["record_id"], values)
