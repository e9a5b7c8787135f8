"""Job: a quality and harm label for every scrubbed record -> ``record_labels``, the dataset's gate.

The paper (§2.1) keeps only the records an LLM labels high quality and not harmful: the kept
records *are* the dataset. Every record of ``silver_records_scrubbed`` (scrubbed text only: no
original PII reaches a prompt) is labelled through the LLM ledger, so labelling is resumable, a
rerun sends nothing and a new record is the only new prompt. ``record_labels`` says for each
record whether it is kept and, if not, why (``gate``); ``users``, and through it every task, reads
only kept records.

With ``llm.clean_rewrite.enabled`` each record is first rewritten by the LLM (§2.1's cleaning)
and the rewrite is labelled and used only when deterministic checks show it removed noise and
added nothing (``udfs.clean.rewrite_check``); otherwise the record keeps its text and the reason.
With ``llm.labels: off`` or ``llm.enabled: false`` every record is kept, gated ``unlabelled``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lewin.jobs.llm import ArtifactResult, generate, keyed_inputs, record_inputs, replace_if_changed, run_artifact
from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig
from lewin.udfs.clean import rewrite_check


@dataclass
class LabelResult:
    run_id: str
    stages: list[ArtifactResult] = field(default_factory=list)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    """source -> gate -> records (over every current scrubbed record)."""

    def funnels(self) -> list[Funnel]:
        out = [s.funnel(None) for s in self.stages]
        # in = scrubbed records; kept = gate "kept" or "unlabelled"; rejected = the rest, by gate
        for source, gates in sorted(self.by_source.items()):
            kept = gates.get("kept", 0) + gates.get("unlabelled", 0)
            total = sum(gates.values())
            out.append(Funnel(stage="label", source=source, records_in=total, kept=kept, rejected=total - kept,
                              detail={"gates": gates}))
        return out


class LabelStage(Stage):
    name = "label"
    summary = ("silver_records_scrubbed -> record_labels: quality + harm label for every record (ledger); "
               "only high-quality, harmless records go on")
    reads = ("silver_records_scrubbed", "llm_ledger", "record_labels")
    writes = ("llm_ledger", "record_labels")
    depends_on = ("scrub",)

    def __init__(self, retry_dead: bool = False):
        self.retry_dead = retry_dead
        self.result: LabelResult | None = None

    def run(self, ctx: RunContext) -> list[Funnel]:
        self.result = _label(ctx, self.retry_dead)
        return self.result.funnels()


def run_labels(store: TableStore, cfg: LewinConfig, run_id: str | None = None, retry_dead: bool = False) -> LabelResult:
    return LabelStage(retry_dead).execute_for_result(store, cfg, run_id)


def _nulls(*names: str) -> list:
    return [F.lit(None).cast("string").alias(n) for n in names]


def _rewrites(ctx: RunContext, records: DataFrame, retry_dead: bool, result: LabelResult) -> DataFrame:
    """records + ``_label_text`` (the rewrite where it passed its checks) and ``_rewrite``."""
    cr = ctx.cfg.llm.clean_rewrite
    if not cr.enabled:
        return records.withColumn("_label_text", F.col("text")).withColumn("_rewrite", F.lit(None).cast("string"))
    res, ok = generate(ctx, "clean_rewrite", record_inputs(records), retry_dead, stage="label")
    result.stages.append(res)
    rw = ok.select(F.col("input_id").alias("record_id"), F.get_json_object("output", "$.text").alias("_rw"))
    why = rewrite_check(F.col("text"), F.col("_rw"), cr.max_length_ratio, cr.min_length_ratio, cr.min_token_overlap)
    out = records.join(rw, "record_id", "left").withColumn("_why", why)
    verdict = (F.when(F.col("_rw").isNull(), F.lit("failed: no valid rewrite (see llm_ledger)"))
               .when(F.col("_why").isNull(), F.lit("used")).otherwise(F.concat(F.lit("rejected: "), F.col("_why"))))
    return (out.withColumn("_rewrite", verdict)
            .withColumn("_label_text", F.when(F.col("_rewrite") == "used", F.col("_rw")).otherwise(F.col("text")))
            .drop("_rw", "_why"))


def label_rows(ctx: RunContext, records: DataFrame, retry_dead: bool, result: LabelResult) -> DataFrame:
    """Scrubbed records -> record_labels rows, labelling through the ledger what it lacks."""
    cfg = ctx.cfg
    records = ctx.materialize("label_texts", _rewrites(ctx, records, retry_dead, result))
    inputs = record_inputs(records.withColumn("text", F.col("_label_text")))
    result.stages.append(run_artifact(ctx, "quality", inputs, retry_dead, stage="label"))
    keyed = keyed_inputs(cfg, "quality", inputs).select("ledger_key", F.col("input_id").alias("record_id"))
    ledger = ctx.store.read("llm_ledger").where(F.col("artifact") == "quality").join(
        keyed.select("ledger_key"), "ledger_key", "left_semi").select("ledger_key", "status", "output", "error",
                                                                      "prompt_version", "model")
    j = records.join(keyed, "record_id", "left").join(ledger, "ledger_key", "left")
    ok = F.col("status") == "ok"
    quality = F.when(ok, F.get_json_object("output", "$.quality"))
    harm = F.when(ok, F.get_json_object("output", "$.harm"))
    gate = (F.when(~F.coalesce(ok, F.lit(False)), F.lit("label_failed"))
            .when(harm != "none", F.concat(F.lit("harmful_"), F.regexp_replace(harm, " ", "_")))
            .when(~quality.isin(cfg.llm.quality_keep), F.concat(F.lit("quality_"), quality))
            .otherwise(F.lit("kept")))
    return j.select(
        "record_id", "source", "user_id", quality.alias("quality"), harm.alias("harm"),
        F.when(ok, F.when(harm == "none", F.lit("no")).otherwise(F.lit("yes"))).alias("harmful"),
        (gate == "kept").alias("keep"), gate.alias("gate"),
        F.when(ok, F.get_json_object("output", "$.reason")).otherwise(F.col("error")).alias("reason"),
        F.when(F.col("_rewrite") == "used", F.col("_label_text")).alias("text"), F.col("_rewrite").alias("rewrite"),
        "prompt_version", "model", "ledger_key", F.lit(ctx.run_id).alias("_label_run_id"))


def _label(ctx: RunContext, retry_dead: bool) -> LabelResult:
    store, cfg = ctx.store, ctx.cfg
    result = LabelResult(ctx.run_id)
    store.ensure("record_labels", T.RECORD_LABELS)
    if not store.exists("silver_records_scrubbed"):
        return result
    records = store.read("silver_records_scrubbed").select("record_id", "source", "user_id", "event_ts", "text")
    if cfg.llm.enabled and cfg.llm.labels == "llm":
        store.ensure("llm_ledger", T.LLM_LEDGER)
        rows = label_rows(ctx, ctx.materialize("label_records", records), retry_dead, result)
    else:
        rows = records.select("record_id", "source", "user_id", *_nulls("quality", "harm", "harmful"),
                              F.lit(True).alias("keep"), F.lit("unlabelled").alias("gate"),
                              *_nulls("reason", "text", "rewrite", "prompt_version", "model", "ledger_key"),
                              F.lit(ctx.run_id).alias("_label_run_id"))
    rows = rows.select(*[F.col(f.name).cast(f.dataType) for f in T.RECORD_LABELS.fields])
    replace_if_changed(ctx, "record_labels", rows, T.RECORD_LABELS, key="record_id", ignore=("_label_run_id",))
    for r in store.read("record_labels").groupBy("source", "gate").count().collect():
        result.by_source.setdefault(r["source"], {})[r["gate"]] = r["count"]
    return result
