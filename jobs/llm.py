"""Job: LLM stages — quality labels, synthesis, judging, gold — with a resumable ledger.

quality (per record, over scrubbed text only) -> eligible records (quality in ``llm.quality_keep``,
not harmful) -> persona, profile, stories, writing_style (per user) and scenario, social_qa (per
record) -> judge_<artifact> -> ``judged_<artifact>`` -> ``gold_<artifact>`` (overall >
``judge_overall_gt`` and every other score > ``judge_others_gt``).

Every prompt is a row of ``llm_ledger`` keyed by (artifact, input, prompt version, model,
sampling hash). A run sends only what the ledger does not hold as done: a rerun makes no call, a
new prompt version or model reruns exactly its rows, failed rows are retried up to
``llm.max_attempts`` and then stay as dead letters. Prompts go out in chunks, each chunk's
replies are written to the ledger before the next starts: a crash loses at most one chunk.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig
from lewin.schemas.llm import JUDGE_METRICS, PER_RECORD, PER_USER
from lewin.udfs.ids import stable_id
from lewin.udfs.llm_backends import BackendSpec, Sampling
from lewin.udfs.llm_prompts import LEDGER_FIELDS, PromptOptions, prompt_for, run_batch
from lewin.udfs.pool import map_in_arrow_pooled
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

log = logging.getLogger(__name__)

_LEDGER_OUT = StructType([
    StructField(n, {"string": StringType(), "int32": IntegerType(), "int64": LongType()}[str(t)]) for n, t in LEDGER_FIELDS
])


@dataclass
class ArtifactResult:
    artifact: str
    inputs: int = 0
    sent: int = 0
    ok: int = 0
    failed: int = 0
    dead: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    def funnel(self, gold: int | None) -> Funnel:
        # in = inputs; kept = ok replies; rejected = dead letters and (rarely) prompts still failed,
        # which the next run retries
        return Funnel(stage="llm", source=self.artifact, records_in=self.inputs, kept=self.ok,
                      rejected=self.dead + self.failed,
                      detail={"calls": self.sent, "ok": self.ok, "failed": self.failed, "dead": self.dead,
                              "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "gold": gold})


@dataclass
class LlmResult:
    run_id: str
    stages: list[ArtifactResult] = field(default_factory=list)
    gold: dict[str, int] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(s.sent for s in self.stages)


def backend_spec(cfg: LewinConfig) -> BackendSpec:
    e = cfg.llm.engine
    return BackendSpec(kind=e.kind, model=e.model, model_path=e.model_path, base_url=e.base_url,
                      api_key_env=e.api_key_env, n_ctx=e.n_ctx, threads=e.threads_per_worker,
                      tensor_parallel_size=e.tensor_parallel_size, gpu_memory_utilization=e.gpu_memory_utilization,
                      enable_prefix_caching=e.enable_prefix_caching, max_model_len=e.max_model_len,
                      max_concurrency=e.max_concurrency, timeout_s=e.timeout_s, max_retries=e.max_retries)


def _limits(cfg: LewinConfig) -> dict[str, int]:
    lc = cfg.llm
    return {"persona_max_words": lc.persona_max_words, "profile_min_words": lc.profile_min_words,
            "profile_max_words": lc.profile_max_words}


def prompt_options(cfg: LewinConfig) -> PromptOptions:
    lc = cfg.llm
    return PromptOptions(
        engine=backend_spec(cfg), sampling=Sampling(lc.sampling.temperature, lc.sampling.top_p, 0, lc.sampling.seed),
        max_tokens=tuple(sorted(lc.max_tokens.items())), limits=tuple(sorted(_limits(cfg).items())),
        qa_per_record=lc.qa_per_record, record_max_chars=lc.record_max_chars,
        history_max_chars=lc.history_max_chars, max_attempts=lc.max_attempts,
    )


def params_hash(cfg: LewinConfig, artifact: str) -> str:
    """What besides the prompt and model changes the reply: sampling, budget, limits, QA count."""
    lc = cfg.llm
    budget = lc.max_tokens.get("judge" if artifact.startswith("judge_") else artifact)
    payload = [lc.sampling.model_dump(), budget, _limits(cfg), lc.qa_per_record, lc.record_max_chars, lc.history_max_chars]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# --- inputs ------------------------------------------------------------------------------------------
def selected_records(store: TableStore, cfg: LewinConfig) -> DataFrame:
    """Scrubbed records the LLM stages may use: the selected users' latest N records."""
    lc = cfg.llm
    scrubbed = store.read("silver_records_scrubbed")
    if lc.max_users:
        users = (store.read("users").orderBy(F.desc("n_records"), "source", "user_id").limit(lc.max_users)
                 .select("source", "user_id"))
        scrubbed = scrubbed.join(users, ["source", "user_id"], "left_semi")
    w = Window.partitionBy("source", "user_id").orderBy(F.desc("event_ts"), F.desc("record_id"))
    return scrubbed.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= lc.max_records_per_user).drop("_rn")


def _record_inputs(records: DataFrame) -> DataFrame:
    return records.select(
        F.col("record_id").alias("input_id"), "user_id", "source",
        F.to_json(F.struct(F.col("text"), F.date_format("event_ts", "yyyy-MM-dd").alias("date"))).alias("context"),
    )


def _user_inputs(records: DataFrame) -> DataFrame:
    rec = F.struct(F.col("event_ts").alias("ts"), F.col("record_id").alias("id"),
                   F.date_format("event_ts", "yyyy-MM-dd").alias("date"), F.col("text"))
    return records.groupBy("source", "user_id").agg(F.sort_array(F.collect_list(rec)).alias("records")).select(
        F.concat_ws(":", "source", "user_id").alias("input_id"), "user_id", "source",
        F.to_json(F.struct("records")).alias("context"))


def eligible_records(store: TableStore, cfg: LewinConfig, records: DataFrame) -> DataFrame:
    labels = store.read("synth_quality", T.SYNTH).select(
        F.col("input_id").alias("record_id"), F.get_json_object("output", "$.quality").alias("q"),
        F.get_json_object("output", "$.harmful").alias("h"))
    ok = labels.where(F.col("q").isin(cfg.llm.quality_keep) & (F.col("h") == "no")).select("record_id")
    return records.join(ok, "record_id", "left_semi")


# --- one artifact ------------------------------------------------------------------------------------
def keyed_inputs(cfg: LewinConfig, artifact: str, inputs: DataFrame) -> DataFrame:
    """Inputs with their ledger key: (artifact, input, input content, prompt version, model,
    sampling). The content hash makes a changed input (a user's new posts) a new prompt."""
    prompt = prompt_for(artifact)
    model, ph = cfg.llm.engine.model, params_hash(cfg, artifact)
    input_hash = F.substring(F.sha2("context", 256), 1, 16)
    return inputs.select(
        stable_id(F.lit(artifact), "input_id", input_hash, F.lit(prompt.version), F.lit(model), F.lit(ph)
                  ).alias("ledger_key"),
        F.lit(artifact).alias("artifact"), "input_id", input_hash.alias("input_hash"), "user_id", "source",
        F.lit(prompt.version).alias("prompt_version"), F.lit(model).alias("model"), F.lit(ph).alias("params_hash"),
        "context",
    )


def run_artifact(ctx: RunContext, artifact: str, inputs: DataFrame, retry_dead: bool = False) -> ArtifactResult:
    """Send every input the ledger does not hold as done; write replies chunk by chunk. Failed
    prompts are retried within the run (another seed each time) until they succeed or reach
    ``llm.max_attempts`` and become dead letters, so a rerun has nothing left to send.
    ``retry_dead`` gives dead letters (but not over-long prompts) a fresh set of attempts."""
    store, cfg, run_id = ctx.store, ctx.cfg, ctx.run_id
    res = ArtifactResult(artifact)
    keyed = ctx.materialize("llm_keyed", keyed_inputs(cfg, artifact, inputs))
    res.inputs = keyed.count()
    task = ctx.progress.task(f"llm {artifact}", "prompts")
    store.ensure("llm_ledger", T.LLM_LEDGER)
    opts = prompt_options(cfg)
    fn = functools.partial(run_batch, opts=opts)
    for round_no in range(cfg.llm.max_attempts + 1):
        ledger = store.read("llm_ledger").where(F.col("artifact") == artifact).select(
            "ledger_key", "status", "error", F.col("attempts").alias("prev_attempts"))
        todo = F.col("status").isNull() | (F.col("status") == "failed")
        if retry_dead and round_no == 0:
            todo = todo | ((F.col("status") == "dead") & ~F.coalesce(F.col("error"), F.lit("")).startswith("prompt_too_long"))
        pending = keyed.join(ledger, "ledger_key", "left").where(todo)
        prev = F.coalesce("prev_attempts", F.lit(0))
        if retry_dead and round_no == 0:
            prev = F.when(F.col("status") == "dead", F.lit(0)).otherwise(prev)
        pending = pending.withColumn("prev_attempts", prev).drop("status", "error")
        # chunks of exactly llm.chunk_size prompts, numbered once when the pending set is staged
        w = Window.orderBy("ledger_key")
        pending = pending.withColumn("_chunk", F.floor((F.row_number().over(w) - 1) / cfg.llm.chunk_size))
        pending = ctx.materialize("llm_pending", pending)
        n = pending.count()
        if not n:
            break
        task.update(0, n)
        res.sent += n
        for c in range(math.ceil(n / cfg.llm.chunk_size)):
            part = pending.where(F.col("_chunk") == c).drop("_chunk")
            # spread the chunk over the workers: one engine call per small batch
            part = part.repartition(max(1, store.engine.python_workers))
            replies = map_in_arrow_pooled(part, fn, _LEDGER_OUT, store.engine.python_workers)
            replies = replies.withColumn("run_id", F.lit(run_id)).withColumn(
                "updated_at", F.lit(datetime.now(timezone.utc)).cast("timestamp"))
            # materialise first: the MERGE must not call the model again when it re-reads its source
            store.upsert("llm_ledger", ctx.materialize("llm_replies", replies), ["ledger_key"], T.LLM_LEDGER)
            task.update(min(n, (c + 1) * cfg.llm.chunk_size), n)
            ctx.failpoint("after_chunk")
    done = store.read("llm_ledger").join(keyed.select("ledger_key"), "ledger_key", "left_semi")
    for r in done.groupBy("status").agg(F.count(F.lit(1)).alias("n"), F.sum("tokens_in").alias("ti"),
                                          F.sum("tokens_out").alias("to")).collect():
        setattr(res, r["status"], r["n"])
        res.tokens_in += r["ti"] or 0
        res.tokens_out += r["to"] or 0
    return res


def generate(ctx: RunContext, artifact: str, inputs: DataFrame) -> tuple[ArtifactResult, DataFrame]:
    """The LLM stage's API for other stages: send ``inputs`` (``input_id, user_id, source,
    context``) for ``artifact`` through the ledger, return the result and the ok replies of these
    inputs (``input_id, output, model``)."""
    res = run_artifact(ctx, artifact, inputs)
    keys = keyed_inputs(ctx.cfg, artifact, inputs).select("ledger_key")
    ok = ctx.store.read("llm_ledger").where((F.col("artifact") == artifact) & (F.col("status") == "ok"))
    return res, ok.join(keys, "ledger_key", "left_semi").select("input_id", "output", "model")


def publish_synth(ctx: RunContext, artifact: str, inputs: DataFrame) -> None:
    """synth_<artifact>: the parsed reply for every current input (its current ledger key)."""
    store, cfg = ctx.store, ctx.cfg
    current = keyed_inputs(cfg, artifact, inputs).select("ledger_key")
    ok = store.read("llm_ledger").where((F.col("artifact") == artifact) & (F.col("status") == "ok"))
    rows = ok.join(current, "ledger_key", "left_semi").select(
        F.lit(artifact).alias("artifact"), "input_id", "user_id", "source",
        (F.col("input_id") if artifact in PER_RECORD or artifact == "quality" else F.lit(None).cast("string")).alias("record_id"),
        "output", "prompt_version", "model", "ledger_key")
    _replace_if_changed(ctx, f"synth_{artifact}", rows, T.SYNTH)


def _replace_if_changed(ctx: RunContext, table: str, rows: DataFrame, schema) -> None:
    """Upsert by input_id and drop stale inputs, writing nothing when nothing differs (reruns)."""
    store = ctx.store
    store.ensure(table, schema)
    new = ctx.materialize(f"new_{table}", rows)
    cur = store.read(table)
    cols = [f.name for f in schema.fields]
    changed = new.select(*cols).exceptAll(cur.select(*cols))
    stale = cur.select("input_id").join(new.select("input_id"), "input_id", "left_anti")
    if changed.limit(1).count():
        store.upsert(table, new.join(changed.select("input_id"), "input_id", "left_semi"), ["input_id"], schema)
    if stale.limit(1).count():
        store.delete_keys(table, stale, ["input_id"])


def judge(ctx: RunContext, artifact: str, inputs: DataFrame, retry_dead: bool = False) -> ArtifactResult:
    """Score synth_<artifact>; judged_<artifact> keeps all scores, gold_<artifact> the accepted."""
    store, cfg = ctx.store, ctx.cfg
    synth = store.read(f"synth_{artifact}", T.SYNTH)
    sources = inputs.select("input_id", F.col("context").alias("_src"))
    if artifact in PER_USER:
        source_text = F.array_join(F.transform(F.from_json(F.get_json_object("_src", "$.records"),
                                                          "array<struct<date:string,text:string>>"),
                                               lambda r: F.concat(F.lit("- ("), r["date"], F.lit(") "), r["text"])), "\n")
    else:
        source_text = F.get_json_object("_src", "$.text")
    judge_inputs = synth.join(sources, "input_id").select(
        F.col("ledger_key").alias("input_id"), "user_id", "source",
        F.to_json(F.struct(source_text.alias("source"), F.col("output").alias("output"))).alias("context"))
    jname = f"judge_{artifact}"
    res = run_artifact(ctx, jname, judge_inputs, retry_dead)
    current = keyed_inputs(cfg, jname, judge_inputs).select("ledger_key")
    verdicts = store.read("llm_ledger").where((F.col("artifact") == jname) & (F.col("status") == "ok")).join(
        current, "ledger_key", "left_semi"
    ).select(F.col("input_id").alias("ledger_key"), F.col("output").alias("_verdict"), F.col("prompt_version").alias("_jv"),
             F.col("model").alias("_jm"))
    metrics = JUDGE_METRICS[artifact]
    scores = F.create_map(*[x for m in metrics
                            for x in (F.lit(m), F.get_json_object("_verdict", f"$.{m}").cast("int"))])
    others = [m for m in metrics if m != "overall"]
    accepted = (F.col("scores")["overall"] > cfg.llm.judge_overall_gt)
    for m in others:
        accepted = accepted & (F.col("scores")[m] > cfg.llm.judge_others_gt)
    judged = synth.join(verdicts, "ledger_key").select(
        *[F.col(f.name) for f in T.SYNTH.fields], F.col("_jm").alias("judge_model"), F.col("_jv").alias("judge_prompt_version"),
        scores.alias("scores")).withColumn("overall", F.col("scores")["overall"]).withColumn(
        "reasons", F.lit(None).cast("string")).withColumn("accepted", F.coalesce(accepted, F.lit(False)))
    reasons = verdicts.select("ledger_key", F.get_json_object("_verdict", "$.reasons").alias("_r"))
    judged = judged.join(reasons, "ledger_key", "left").withColumn("reasons", F.col("_r")).drop("_r")
    judged = judged.select(*[F.col(f.name).cast(f.dataType) for f in T.JUDGED.fields])
    _replace_if_changed(ctx, f"judged_{artifact}", judged, T.JUDGED)
    _replace_if_changed(ctx, f"gold_{artifact}", store.read(f"judged_{artifact}").where("accepted"), T.JUDGED)
    return res


# --- the whole stage ---------------------------------------------------------------------------------
class LlmStage(Stage):
    name = "llm"
    summary = "quality labels, synthesis, judging -> synth_*, judged_*, gold_* (resumable ledger)"
    reads = ("silver_records_scrubbed", "users", "llm_ledger", "synth_*", "judged_*", "gold_*")
    writes = ("llm_ledger", "synth_*", "judged_*", "gold_*")
    depends_on = ("users",)

    def __init__(self, retry_dead: bool = False):
        self.retry_dead = retry_dead
        self.result: LlmResult | None = None

    def run(self, ctx: RunContext) -> list[Funnel]:
        self.result = _run_llm(ctx, self.retry_dead)
        # a judge's row carries its artifact's gold count
        return [s.funnel(self.result.gold.get(s.artifact.removeprefix("judge_")) if s.artifact.startswith("judge_")
                         else None) for s in self.result.stages]


def run_llm(store: TableStore, cfg: LewinConfig, run_id: str | None = None, retry_dead: bool = False) -> LlmResult:
    return LlmStage(retry_dead).execute_for_result(store, cfg, run_id)


def _run_llm(ctx: RunContext, retry_dead: bool) -> LlmResult:
    store, cfg = ctx.store, ctx.cfg
    result = LlmResult(ctx.run_id)
    if not cfg.llm.enabled or not store.exists("silver_records_scrubbed"):
        return result
    store.ensure("llm_ledger", T.LLM_LEDGER)
    records = ctx.materialize("llm_records", selected_records(store, cfg))
    arts = list(cfg.llm.artifacts)
    if "quality" in arts:
        q_inputs = _record_inputs(records)
        result.stages.append(run_artifact(ctx, "quality", q_inputs, retry_dead))
        publish_synth(ctx, "quality", q_inputs)
        store.ensure("synth_quality", T.SYNTH)
        eligible = eligible_records(store, cfg, records)
    else:
        eligible = records
    eligible = ctx.materialize("llm_eligible", eligible)
    for artifact in [a for a in arts if a != "quality"]:
        inputs = _user_inputs(eligible) if artifact in PER_USER else _record_inputs(eligible)
        inputs = ctx.materialize("llm_inputs", inputs)
        result.stages.append(run_artifact(ctx, artifact, inputs, retry_dead))
        publish_synth(ctx, artifact, inputs)
        result.stages.append(judge(ctx, artifact, inputs, retry_dead))
        result.gold[artifact] = store.count(f"gold_{artifact}")
    return result
