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
With ``llm.labels: distilled`` (the FineWeb-Edu / NeMo Curator recipe) the LLM labels only a
seeded sample per source and the records a classifier trained on that sample is unsure about
(``llm.distill.band`` on its keep probability); the classifier (``udfs.label_model``, stored in
``label_models`` with its agreement with the LLM on a held-out slice of the sample) labels the
rest. Every LLM label still goes through the ledger, so this mode is resumable and incremental
too, and a record the LLM has labelled keeps that label.
With ``llm.labels: off`` or ``llm.enabled: false`` every record is kept, gated ``unlabelled``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, DoubleType, StringType, StructField, StructType

from lewin.jobs.llm import ArtifactResult, generate, keyed_inputs, record_inputs, replace_if_changed, run_artifact
from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import DistillConfig, LewinConfig
from lewin.udfs.clean import rewrite_check
from lewin.udfs.label_model import ScoreOptions, TrainOptions, score_batch, train_batch, training_params
from lewin.udfs.pool import map_in_arrow_pooled

log = logging.getLogger(__name__)

_SCORES = StructType([StructField("record_id", StringType()), StructField("keep_prob", DoubleType()),
                      StructField("quality", StringType()), StructField("harm", StringType())])
_TRAINED = StructType([StructField("model_version", StringType()), StructField("model", BinaryType())])
# the holdout figures, for the classifier alone and for the routed labeller (LLM inside the band)
FIGURES = ("keep_accuracy", "quality_accuracy", "harmful_recall", "high_precision")
LABELLERS = ("classifier", "routed")


@dataclass
class LabelResult:
    run_id: str
    stages: list[ArtifactResult] = field(default_factory=list)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    """source -> gate -> records (over every current scrubbed record)."""
    labelled_by: dict[str, dict[str, int]] = field(default_factory=dict)
    """source -> labeller (llm | classifier) -> records."""
    model_version: str | None = None
    """llm.labels: distilled: the classifier that scored the records (a row of label_models)."""
    model_trained: bool = False
    """False when label_models already held the model (same labelled sample and parameters)."""
    agreement: dict[str, dict] = field(default_factory=dict)
    """"all" and each source -> held-out figures (FIGURES) of the classifier alone and routed."""

    @property
    def label_calls_ratio(self) -> float | None:
        """Records the LLM labelled / records labelled: 1 in llm mode, the share distillation leaves."""
        llm = sum(by.get("llm", 0) for by in self.labelled_by.values())
        total = sum(sum(by.values()) for by in self.labelled_by.values())
        return llm / total if total else None

    def funnels(self) -> list[Funnel]:
        out = [s.funnel(None) for s in self.stages]
        # in = scrubbed records; kept = gate "kept" or "unlabelled"; rejected = the rest, by gate
        for source, gates in sorted(self.by_source.items()):
            kept = gates.get("kept", 0) + gates.get("unlabelled", 0)
            total = sum(gates.values())
            detail = {"gates": gates}
            if self.labelled_by.get(source):
                detail["labelled_by"] = self.labelled_by[source]
            if self.model_version:
                detail.update(label_model=self.model_version, agreement=self.agreement.get(source))
            out.append(Funnel(stage="label", source=source, records_in=total, kept=kept, rejected=total - kept,
                              detail=detail))
        return out

    def summary(self) -> str:
        """One line: who labelled how many records per source, the calls ratio, the agreement."""
        by = "; ".join(f"{s} llm={v.get('llm', 0)} classifier={v.get('classifier', 0)}"
                       for s, v in sorted(self.labelled_by.items()))
        ratio = self.label_calls_ratio
        line = f"labelled by {by or 'nobody'}; label calls ratio {'-' if ratio is None else f'{ratio:.3f}'}"
        if self.model_version:
            line += f"; label model {self.model_version} ({'trained' if self.model_trained else 'reused'})"
            figs = self.agreement.get("all") or {}
            for who in LABELLERS:
                if figs.get(who):
                    line += f"; {who} on {figs['holdout']} held out: " + ", ".join(
                        f"{k} {'-' if figs[who][k] is None else f'{figs[who][k]:.3f}'}" for k in FIGURES)
        return line


class LabelStage(Stage):
    name = "label"
    summary = ("silver_records_scrubbed -> record_labels: quality + harm label for every record (ledger); "
               "only high-quality, harmless records go on")
    reads = ("silver_records_scrubbed", "llm_ledger", "record_labels", "label_models")
    writes = ("llm_ledger", "record_labels", "label_models")
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


def llm_labels(ctx: RunContext, inputs: DataFrame) -> DataFrame:
    """``record_id`` and the current ledger row of its label prompt (``ledger_key, status, output,
    error, prompt_version, model``; null where nothing was asked yet)."""
    keyed = keyed_inputs(ctx.cfg, "quality", inputs).select("ledger_key", F.col("input_id").alias("record_id"))
    ledger = ctx.store.read("llm_ledger").where(F.col("artifact") == "quality").join(
        keyed.select("ledger_key"), "ledger_key", "left_semi").select("ledger_key", "status", "output", "error",
                                                                      "prompt_version", "model")
    return keyed.join(ledger, "ledger_key", "left")


def _reply(field_name: str) -> Column:
    return F.when(F.col("status") == "ok", F.get_json_object("output", f"$.{field_name}"))


def gated_rows(ctx: RunContext, j: DataFrame, quality: Column, harm: Column, reason: Column, labeller: Column,
               keep_prob: Column, label_model: Column, by_llm: Column) -> DataFrame:
    """record_labels rows from a label (quality and harm; null: the label failed) per record; the
    ledger's columns are kept where ``by_llm``."""
    gate = (F.when(quality.isNull() | harm.isNull(), F.lit("label_failed"))
            .when(harm != "none", F.concat(F.lit("harmful_"), F.regexp_replace(harm, " ", "_")))
            .when(~quality.isin(ctx.cfg.llm.quality_keep), F.concat(F.lit("quality_"), quality))
            .otherwise(F.lit("kept")))
    return j.select(
        "record_id", "source", "user_id", quality.alias("quality"), harm.alias("harm"),
        F.when(harm.isNotNull(), F.when(harm == "none", F.lit("no")).otherwise(F.lit("yes"))).alias("harmful"),
        (gate == "kept").alias("keep"), gate.alias("gate"), reason.alias("reason"),
        F.when(F.col("_rewrite") == "used", F.col("_label_text")).alias("text"), F.col("_rewrite").alias("rewrite"),
        *[F.when(by_llm, F.col(c)).alias(c) for c in ("prompt_version", "model", "ledger_key")],
        F.lit(ctx.run_id).alias("_label_run_id"), labeller.alias("labeller"), keep_prob.alias("keep_prob"),
        label_model.alias("label_model"))


def _label_inputs(ctx: RunContext, records: DataFrame, retry_dead: bool, result: LabelResult) -> tuple[DataFrame, DataFrame]:
    """The records with the text to label (the rewrite where it passed), and their label prompts' inputs."""
    records = ctx.materialize("label_texts", _rewrites(ctx, records, retry_dead, result))
    return records, record_inputs(records.withColumn("text", F.col("_label_text")))


def label_rows(ctx: RunContext, records: DataFrame, retry_dead: bool, result: LabelResult) -> DataFrame:
    """Scrubbed records -> record_labels rows, labelling through the ledger what it lacks."""
    records, inputs = _label_inputs(ctx, records, retry_dead, result)
    result.stages.append(run_artifact(ctx, "quality", inputs, retry_dead, stage="label"))
    j = records.join(llm_labels(ctx, inputs), "record_id", "left")
    reason = F.when(F.col("status") == "ok", F.get_json_object("output", "$.reason")).otherwise(F.col("error"))
    return gated_rows(ctx, j, _reply("quality"), _reply("harm"), reason, F.lit("llm"), F.lit(None).cast("double"),
                      F.lit(None).cast("string"), F.lit(True))


# --- llm.labels: distilled ---------------------------------------------------------------------------
def distill_sample(records: DataFrame, d: DistillConfig) -> DataFrame:
    """``record_id, source, _holdout``: each source's ``sample_per_source`` records with the lowest
    xxhash64(seed, record_id), and the held-out ``holdout_fraction`` of them (lowest of a second
    hash). Record ids decide, so every run draws the same sample from the same records."""
    pick = Window.partitionBy("source").orderBy(F.xxhash64(F.lit(d.seed), "record_id"), "record_id")
    sample = records.select("record_id", "source").withColumn("_rank", F.row_number().over(pick)).where(
        F.col("_rank") <= d.sample_per_source)
    hold = Window.partitionBy("source").orderBy(F.xxhash64(F.lit(d.seed), F.lit("holdout"), "record_id"), "record_id")
    size = F.count(F.lit(1)).over(Window.partitionBy("source"))
    return sample.select("record_id", "source",
                         (F.row_number().over(hold) <= F.round(size * d.holdout_fraction)).alias("_holdout"))


def _in_band(cfg: LewinConfig, keep_prob: Column) -> Column:
    low, high = cfg.llm.distill.band
    return keep_prob.between(low, high)


def _holdout_counts(cfg: LewinConfig, held: DataFrame) -> dict[str, dict[str, int]]:
    """source -> what the figures are made of, on held-out records with an LLM label (the truth)
    and the classifier's scores."""
    keep = cfg.llm.quality_keep
    band = _in_band(cfg, F.col("keep_prob"))
    truth_q, truth_h = F.col("quality"), F.col("harm")
    preds = {"classifier": (F.col("c_quality"), F.col("c_harm")),
             "routed": (F.when(band, truth_q).otherwise(F.col("c_quality")),
                        F.when(band, truth_h).otherwise(F.col("c_harm")))}

    def n(cond: Column) -> Column:
        return F.sum(cond.cast("int"))

    aggs = [F.count(F.lit(1)).alias("n"), n(band).alias("to_llm"), n(truth_h != "none").alias("harmful")]
    for who, (q, h) in preds.items():
        aggs += [n((q.isin(keep) & (h == "none")) == (truth_q.isin(keep) & (truth_h == "none"))).alias(f"{who}_keep_ok"),
                 n(q == truth_q).alias(f"{who}_quality_ok"),
                 n((truth_h != "none") & (h != "none")).alias(f"{who}_harmful_caught"),
                 n(q == "high").alias(f"{who}_high"), n((q == "high") & (truth_q == "high")).alias(f"{who}_high_ok")]
    return {r["source"]: {k: v for k, v in r.asDict().items() if k != "source"}
            for r in held.groupBy("source").agg(*aggs).collect()}


def _figures(c: dict[str, int]) -> dict:
    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {"holdout": c["n"], "routed_to_llm": c["to_llm"], "harmful": c["harmful"],
            **{who: {"keep_accuracy": ratio(c[f"{who}_keep_ok"], c["n"]),
                     "quality_accuracy": ratio(c[f"{who}_quality_ok"], c["n"]),
                     "harmful_recall": ratio(c[f"{who}_harmful_caught"], c["harmful"]),
                     "high_precision": ratio(c[f"{who}_high_ok"], c[f"{who}_high"])} for who in LABELLERS}}


def agreement(counts: dict[str, dict[str, int]]) -> dict[str, dict]:
    """The held-out figures per source and over all sources ("all")."""
    total: dict[str, int] = {}
    for c in counts.values():
        for k, v in c.items():
            total[k] = total.get(k, 0) + (v or 0)
    return {"all": _figures(total) if total else None, **{s: _figures(c) for s, c in sorted(counts.items())}}


def _score(ctx: RunContext, texts: DataFrame, opts: ScoreOptions) -> DataFrame:
    """Every record's keep_prob and classifier labels (Arrow batches on every core)."""
    fn = functools.partial(score_batch, opts=opts)
    return ctx.materialize("label_scores", map_in_arrow_pooled(texts.select("record_id", "text"), fn, _SCORES,
                                                               ctx.store.engine.python_workers))


def _train(ctx: RunContext, labelled: DataFrame, version: str) -> bytes:
    """The classifier's bytes: every training row gathered into one row, trained in one Arrow
    batch on the worker pool."""
    d = ctx.cfg.llm.distill
    rows = labelled.where(~F.col("_holdout")).agg(
        F.collect_list(F.struct("record_id", "text", "quality", "harm")).alias("rows"))
    fn = functools.partial(train_batch, opts=TrainOptions(version, d.features, d.epochs))
    return bytes(map_in_arrow_pooled(rows, fn, _TRAINED, ctx.store.engine.python_workers).collect()[0]["model"])


def _label_model(ctx: RunContext, texts: DataFrame, sample: DataFrame, labels: DataFrame,
                 result: LabelResult) -> DataFrame | None:
    """Train the classifier on the sample's LLM labels (or reuse label_models' row for the same
    labels and parameters) and score every record: ``record_id, keep_prob, quality, harm`` (None:
    no LLM label to train on). A new model's row holds its agreement with the LLM on the held-out
    slice."""
    store, cfg = ctx.store, ctx.cfg
    d = cfg.llm.distill
    labelled = ctx.materialize("label_sample_labels", sample.join(labels.where(F.col("status") == "ok"), "record_id").select(
        "record_id", "source", "_holdout", "ledger_key", _reply("quality").alias("quality"),
        _reply("harm").alias("harm")).join(texts.select("record_id", "text"), "record_id"))
    n_train, n_holdout = {}, {}
    for r in labelled.groupBy("source", "_holdout").count().collect():
        (n_holdout if r["_holdout"] else n_train)[r["source"]] = r["count"]
    if not n_train:
        log.warning("llm.labels distilled: no LLM label in the training sample; records without an LLM "
                    "label are gated label_failed")
        return None
    params = {**training_params(d.features, d.epochs), "seed": d.seed, "sample_per_source": d.sample_per_source,
              "holdout_fraction": d.holdout_fraction, "band": list(d.band), "quality_keep": sorted(cfg.llm.quality_keep)}
    # the version: the labelled sample (held-out slice included: the row's figures come from it) and the parameters
    line = F.concat_ws("\t", F.col("_holdout").cast("string"), "ledger_key", "quality", "harm")
    digest = labelled.agg(F.sha2(F.concat_ws("\n", F.array_sort(F.collect_list(line))), 256)).collect()[0][0]
    version = hashlib.sha256(f"{digest}\n{json.dumps(params, sort_keys=True)}".encode()).hexdigest()[:16]
    result.model_version = version
    store.ensure("label_models", T.LABEL_MODELS)
    stored = store.read("label_models").where(F.col("model_version") == version).select(
        "model", "holdout_metrics").limit(1).collect()
    if stored:
        result.agreement = json.loads(stored[0]["holdout_metrics"])
        return _score(ctx, texts, ScoreOptions(version, bytes(stored[0]["model"]), tuple(cfg.llm.quality_keep)))
    blob = _train(ctx, labelled, version)
    result.model_trained = True
    scores = _score(ctx, texts, ScoreOptions(version, blob, tuple(cfg.llm.quality_keep)))
    held = labelled.where(F.col("_holdout")).join(
        scores.select("record_id", "keep_prob", F.col("quality").alias("c_quality"), F.col("harm").alias("c_harm")),
        "record_id")
    result.agreement = agreement(_holdout_counts(cfg, held))
    overall = result.agreement["all"] or {}
    row = (version, datetime.now(timezone.utc), json.dumps(params, sort_keys=True), json.dumps(n_train, sort_keys=True),
           json.dumps(n_holdout, sort_keys=True),
           *[(overall.get(who) or {}).get(f) for who in LABELLERS for f in FIGURES],
           json.dumps(result.agreement, sort_keys=True), blob, ctx.run_id)
    store.insert_new("label_models", store.spark.createDataFrame([row], T.LABEL_MODELS), ["model_version"],
                     T.LABEL_MODELS)
    return scores


def distilled_rows(ctx: RunContext, records: DataFrame, retry_dead: bool, result: LabelResult) -> DataFrame:
    """Scrubbed records -> record_labels rows: the LLM labels the sample and the records inside
    the band, the classifier the rest. Every LLM label goes through the ledger and wins where it
    exists (a record once sent keeps its label whatever a later model says)."""
    cfg = ctx.cfg
    records, inputs = _label_inputs(ctx, records, retry_dead, result)
    texts = records.select("record_id", F.col("_label_text").alias("text"))
    sample = ctx.materialize("label_sample", distill_sample(records, cfg.llm.distill))
    sample_inputs = inputs.join(sample.select(F.col("record_id").alias("input_id")), "input_id", "left_semi")
    res = run_artifact(ctx, "quality", sample_inputs, retry_dead, stage="label")
    res.artifact = "quality_sample"
    result.stages.append(res)
    scores = _label_model(ctx, texts, sample, llm_labels(ctx, sample_inputs), result)
    if scores is None:
        scores = records.select("record_id", *[F.lit(None).cast(f.dataType).alias(f.name) for f in _SCORES.fields[1:]])
    else:
        band = scores.where(_in_band(cfg, F.col("keep_prob"))).select(F.col("record_id").alias("input_id"))
        res = run_artifact(ctx, "quality", inputs.join(band, "input_id", "left_semi"), retry_dead, stage="label")
        res.artifact = "quality_band"
        result.stages.append(res)
    scores = scores.select("record_id", "keep_prob", F.col("quality").alias("c_quality"), F.col("harm").alias("c_harm"))
    j = records.join(llm_labels(ctx, inputs), "record_id", "left").join(scores, "record_id", "left")
    kp = F.col("keep_prob")
    # the LLM's label where it has one, and wherever the classifier is unsure (or there is none)
    by_llm = F.coalesce(F.col("status") == "ok", F.lit(False)) | kp.isNull() | _in_band(cfg, kp)
    by_classifier = ~by_llm
    quality = F.coalesce(_reply("quality"), F.when(by_classifier, F.col("c_quality")))
    harm = F.coalesce(_reply("harm"), F.when(by_classifier, F.col("c_harm")))
    reason = F.when(by_llm, F.coalesce(_reply("reason"), F.col("error"), F.lit("no label model: no LLM label to train on")))
    return gated_rows(ctx, j, quality, harm, reason, F.when(by_llm, F.lit("llm")).otherwise(F.lit("classifier")), kp,
                      F.when(kp.isNotNull(), F.lit(result.model_version)), by_llm)


def _label(ctx: RunContext, retry_dead: bool) -> LabelResult:
    store, cfg = ctx.store, ctx.cfg
    result = LabelResult(ctx.run_id)
    if store.exists("record_labels") and set(T.RECORD_LABELS.fieldNames()) - set(store.read("record_labels").columns):
        # written before a column was added (labeller, keep_prob, label_model): the table is derived
        # from the ledger, so it is rebuilt without a single LLM call
        store.drop("record_labels")
    store.ensure("record_labels", T.RECORD_LABELS)
    if not store.exists("silver_records_scrubbed"):
        return result
    records = store.read("silver_records_scrubbed").select("record_id", "source", "user_id", "event_ts", "text")
    if cfg.llm.enabled and cfg.llm.labels in ("llm", "distilled"):
        store.ensure("llm_ledger", T.LLM_LEDGER)
        rows_for = label_rows if cfg.llm.labels == "llm" else distilled_rows
        rows = rows_for(ctx, ctx.materialize("label_records", records), retry_dead, result)
    else:
        rows = records.select("record_id", "source", "user_id", *_nulls("quality", "harm", "harmful"),
                              F.lit(True).alias("keep"), F.lit("unlabelled").alias("gate"),
                              *_nulls("reason", "text", "rewrite", "prompt_version", "model", "ledger_key"),
                              F.lit(ctx.run_id).alias("_label_run_id"), *_nulls("labeller", "keep_prob", "label_model"))
    rows = rows.select(*[F.col(f.name).cast(f.dataType) for f in T.RECORD_LABELS.fields])
    replace_if_changed(ctx, "record_labels", rows, T.RECORD_LABELS, key="record_id", ignore=("_label_run_id",))
    for r in store.read("record_labels").groupBy("source", "gate", "labeller").count().collect():
        gates = result.by_source.setdefault(r["source"], {})
        gates[r["gate"]] = gates.get(r["gate"], 0) + r["count"]
        if r["labeller"]:
            by = result.labelled_by.setdefault(r["source"], {})
            by[r["labeller"]] = by.get(r["labeller"], 0) + r["count"]
    if cfg.llm.enabled and cfg.llm.labels == "distilled":
        log.info("label (distilled): %s", result.summary())
    return result
