"""Every Lewin table's schema, as code.

Naming: logical table names (``bronze_reddit``, ``quarantine`` …) map to physical names through
``lewin.jobs.tables.TableStore`` (a Unity Catalog name on Databricks, a folder locally).
"""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


def _f(name: str, dtype, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable)


# --- what a reader hands to Spark: one row per raw record --------------------------------------
READER_OUTPUT = StructType(
    [
        _f("file", StringType(), False),
        _f("line", LongType(), False),  # 1-based line where the record starts (CSV/XML: its first line)
        _f("item", IntegerType(), False),  # index inside the line for multi-record lines (API pages)
        _f("raw", StringType()),  # the record's original text (JSON line, CSV row, XML post)
        _f("payload", StringType()),  # JSON to parse when it differs from raw (CSV/XML/API pages)
        _f("error", StringType()),  # reason when the reader itself rejects the record
        _f("detail", StringType()),
    ]
)

# --- bronze: common leading columns, then source-specific ones --------------------------------
_COMMON = [
    _f("record_id", StringType(), False),  # "<source>:<native id>" or "<source>:h:<content hash>"
    _f("source", StringType(), False),
    _f("native_id", StringType()),
    _f("user_id", StringType(), False),
    _f("event_ts", TimestampType(), False),
    _f("title", StringType()),
    _f("text", StringType()),
]
_LINEAGE = [
    _f("_file", StringType(), False),
    _f("_line", LongType(), False),
    _f("_run_id", StringType(), False),
    _f("_ingested_at", TimestampType(), False),
]

BRONZE_REDDIT = StructType(
    _COMMON
    + [
        _f("subreddit", StringType()),
        _f("score", LongType()),
        _f("num_comments", LongType()),
        _f("distinguished", StringType()),
        _f("stickied", BooleanType()),
        _f("over_18", BooleanType()),
        _f("is_self", BooleanType()),
        _f("url", StringType()),
        _f("removed_by_category", StringType()),
    ]
    + _LINEAGE
)

BRONZE_REDDIT_COMMENTS = StructType(
    _COMMON
    + [
        _f("subreddit", StringType()),
        _f("score", LongType()),
        _f("link_id", StringType()),  # the submission, "t3_<id>"
        _f("parent_id", StringType()),  # "t3_…" (top level) or "t1_…" (a reply)
        _f("distinguished", StringType()),
        _f("stickied", BooleanType()),
    ]
    + _LINEAGE
)

BRONZE_TWITTER = StructType(
    _COMMON
    + [
        _f("api_format", StringType()),  # v2 | v2-flat (twarc) | v1.1 | twitter100m (Parquet dump)
        _f("lang", StringType()),
        _f("is_retweet", BooleanType()),
        _f("is_quote", BooleanType()),
        _f("is_reply", BooleanType()),
        _f("source_app", StringType()),
        _f("retweet_count", LongType()),
        _f("like_count", LongType()),
        _f("reply_count", LongType()),
        _f("quote_count", LongType()),
        _f("n_urls", IntegerType()),
        _f("n_hashtags", IntegerType()),
        _f("n_mentions", IntegerType()),
        _f("user_name", StringType()),  # @handle
        _f("user_display_name", StringType()),
        _f("user_description", StringType()),
        _f("user_url", StringType()),
        _f("user_verified", BooleanType()),
        _f("user_verified_type", StringType()),  # business | government | blue | none
        _f("user_followers", LongType()),
        _f("user_following", LongType()),
        _f("user_tweet_count", LongType()),
        _f("edit_history_ids", ArrayType(StringType())),
    ]
    + _LINEAGE
)

BRONZE_BLOGGER = StructType(
    _COMMON
    + [
        _f("gender", StringType()),
        _f("age", IntegerType()),
        _f("industry", StringType()),  # "topic" / "job" in the corpus' variants
        _f("star_sign", StringType()),
    ]
    + _LINEAGE
)

BRONZE_AMAZON = StructType(
    _COMMON
    + [
        _f("item_id", StringType(), False),  # parent_asin when present (Reviews'23), else asin
        _f("asin", StringType()),
        _f("rating", DoubleType()),
        _f("verified", BooleanType()),
        _f("helpful_votes", LongType()),
        _f("category", StringType()),  # from the dump's file name, e.g. All_Beauty
        _f("dataset", StringType()),  # reviews2018 | reviews2023
    ]
    + _LINEAGE
)

BRONZE_AMAZON_ITEMS = StructType(
    [
        _f("record_id", StringType(), False),
        _f("source", StringType(), False),
        _f("item_id", StringType(), False),
        _f("title", StringType()),
        _f("main_category", StringType()),
        _f("categories", ArrayType(StringType())),
        _f("store", StringType()),
        _f("price", DoubleType()),
        _f("description", StringType()),
        _f("features", StringType()),
        _f("average_rating", DoubleType()),
        _f("rating_number", LongType()),
        _f("category", StringType()),
    ]
    + _LINEAGE
)

# bronze table (logical name) -> schema. A source can feed several tables.
BRONZE_TABLES: dict[str, StructType] = {
    "bronze_reddit": BRONZE_REDDIT,
    "bronze_reddit_comments": BRONZE_REDDIT_COMMENTS,
    "bronze_twitter": BRONZE_TWITTER,
    "bronze_blogger": BRONZE_BLOGGER,
    "bronze_amazon": BRONZE_AMAZON,
    "bronze_amazon_items": BRONZE_AMAZON_ITEMS,
}

# --- operational tables --------------------------------------------------------------------------
QUARANTINE = StructType(
    [
        _f("quarantine_id", StringType(), False),  # hash(file, line, item): a rerun adds nothing
        _f("source", StringType(), False),
        _f("file", StringType(), False),
        _f("line", LongType(), False),
        _f("item", IntegerType(), False),
        _f("reason", StringType(), False),
        _f("detail", StringType()),
        _f("raw", StringType()),
        _f("raw_truncated", BooleanType(), False),
        _f("run_id", StringType(), False),
        _f("quarantined_at", TimestampType(), False),
    ]
)

INGEST_LOG = StructType(
    [
        _f("path", StringType(), False),
        _f("size", LongType(), False),
        _f("mtime_ns", LongType(), False),
        _f("source", StringType(), False),
        _f("run_id", StringType(), False),
        _f("records", LongType(), False),
        _f("ingested_at", TimestampType(), False),
    ]
)

# One row per (run, stage, source): the funnel. in = kept + rejected + quarantined (+ duplicates).
RUNS = StructType(
    [
        _f("run_id", StringType(), False),
        _f("stage", StringType(), False),
        _f("source", StringType(), False),
        _f("started_at", TimestampType(), False),
        _f("finished_at", TimestampType(), False),
        _f("files", LongType()),
        _f("files_skipped", LongType()),
        _f("lines", LongType()),
        _f("blank_lines", LongType()),
        _f("records_in", LongType(), False),
        _f("kept", LongType(), False),
        _f("duplicates", LongType(), False),
        _f("rejected", LongType(), False),
        _f("quarantined", LongType(), False),
        _f("detail", StringType()),  # JSON: per-table / per-reason breakdown
    ]
)

# One row per erased user (`lewin forget`, lewin.jobs.forget): a keyed hash of the user, never the
# id itself. Ingest drops the records of every user listed here (counted as `erased_user`), so a
# re-ingest of an old dump does not bring them back.
ERASURES = StructType(
    [
        _f("erasure_id", StringType(), False),  # sha256 of (erasure key, source, user id), both lower-cased
        _f("source", StringType(), False),
        _f("key_fingerprint", StringType(), False),  # the key that hashed it: ingest refuses to run under another
        _f("run_id", StringType(), False),
        _f("erased_at", TimestampType(), False),
    ]
)

OPS_TABLES: dict[str, StructType] = {
    "quarantine": QUARANTINE,
    "ingest_log": INGEST_LOG,
    "runs": RUNS,
    "erasures": ERASURES,
}

# --- silver: curated records of every source, one schema -------------------------------------------
def _quality_signals() -> StructType:
    from lewin.udfs.quality import SIGNALS

    kinds = {"double": DoubleType(), "int": IntegerType(), "bool": BooleanType()}
    return StructType([_f(name, kinds[kind]) for name, kind in SIGNALS])


# The quality heuristics' scores (lewin.udfs.quality.SIGNALS); quality_flags is derived from them.
QUALITY_SIGNALS = _quality_signals()

SILVER_RECORDS = StructType(
    [
        _f("record_id", StringType(), False),
        _f("source", StringType(), False),
        _f("user_id", StringType(), False),
        _f("event_ts", TimestampType(), False),
        _f("kind", StringType()),  # submission | comment | tweet | blog_post | review (the stream's)
        _f("title", StringType()),  # cleaned
        _f("text", StringType(), False),  # cleaned
        _f("lang", StringType()),
        _f("lang_score", DoubleType()),
        _f("text_hash", StringType(), False),  # exact-duplicate key (normalised text)
        _f("quality_flags", ArrayType(StringType())),  # quality heuristics the text fails ("<filter>:<reason>")
        _f("quality_signals", QUALITY_SIGNALS),  # their scores
        _f("subreddit", StringType()),  # reddit
        _f("item_id", StringType()),  # amazon
        _f("rating", DoubleType()),  # amazon
        _f("gender", StringType()),  # blogger
        _f("age", IntegerType()),  # blogger
        _f("industry", StringType()),  # blogger
        _f("user_name", StringType()),  # twitter handle
        _f("parent_id", StringType()),  # reddit comments: what they answer, "t3_<post>" or "t1_<comment>"
        _f("_bronze_run_id", StringType(), False),
        _f("_curate_run_id", StringType(), False),
    ]
)

# Amazon rows that passed the per-record stages: the interaction set the k-core is computed on.
AMAZON_POOL = SILVER_RECORDS

REJECTED = StructType(
    [
        _f("record_id", StringType(), False),
        _f("source", StringType(), False),
        _f("stage", StringType(), False),  # rules | language | quality | dedup | kcore
        _f("rule", StringType(), False),  # e.g. reddit_min_score_v1, language_v1, dedup_exact_v1
        _f("detail", StringType()),
        _f("run_id", StringType(), False),
        _f("rejected_at", TimestampType(), False),
    ]
)

CURATE_LOG = StructType(
    [
        _f("bronze_table", StringType(), False),
        _f("bronze_run_id", StringType(), False),
        _f("curate_run_id", StringType(), False),
        _f("rows", LongType(), False),
        _f("curated_at", TimestampType(), False),
    ]
)

KCORE_ROUNDS = StructType(
    [
        _f("run_id", StringType(), False),
        _f("round", IntegerType(), False),
        _f("users", LongType(), False),
        _f("items", LongType(), False),
        _f("interactions", LongType(), False),
        _f("dropped", LongType(), False),
    ]
)

# The item catalogue (Amazon item metadata), one row per item: what later stages need of it.
SILVER_ITEMS = StructType(
    [
        _f("item_id", StringType(), False),
        _f("source", StringType(), False),
        _f("title", StringType()),
        _f("main_category", StringType()),
        _f("categories", ArrayType(StringType())),
        _f("store", StringType()),
        _f("price", DoubleType()),
        _f("category", StringType()),  # from the dump's file name
        _f("_bronze_run_id", StringType(), False),
        _f("_curate_run_id", StringType(), False),
    ]
)

# One row per kept record: its MinHash band keys, compared with the next batches' (lewin.udfs.near_dedup).
NEAR_DUP_SIGNATURES = StructType(
    [
        _f("record_id", StringType(), False),
        _f("source", StringType(), False),
        _f("user_id", StringType(), False),
        _f("event_ts", TimestampType(), False),
        _f("near_dup_bands", ArrayType(LongType())),
    ]
)

SILVER_TABLES: dict[str, StructType] = {
    "silver_records": SILVER_RECORDS,
    "silver_amazon_pool": AMAZON_POOL,
    "silver_items": SILVER_ITEMS,
    "rejected": REJECTED,
    "curate_log": CURATE_LOG,
    "kcore_rounds": KCORE_ROUNDS,
    "near_dup_signatures": NEAR_DUP_SIGNATURES,
}

# --- PII-scrubbed silver, and the per-user timelines built on it --------------------------------
PII_SPAN = StructType(
    [
        _f("field", StringType()),  # text | title
        _f("type", StringType()),  # PERSON, EMAIL_ADDRESS, …
        _f("start", IntegerType()),  # offsets in the *scrubbed* text
        _f("end", IntegerType()),
        _f("score", DoubleType()),
    ]
)

SILVER_RECORDS_SCRUBBED = StructType(
    SILVER_RECORDS.fields
    + [
        _f("pii_spans", ArrayType(PII_SPAN)),  # what was replaced: type and place, never the value
        _f("scrub_version", StringType(), False),
        _f("_scrub_run_id", StringType(), False),
    ]
)

TIMELINE_RECORD = StructType(
    [
        _f("event_ts", TimestampType()),
        _f("record_id", StringType()),  # second sort key: ties in time order by id
        _f("kind", StringType()),
        _f("title", StringType()),
        _f("text", StringType()),
        _f("subreddit", StringType()),
        _f("item_id", StringType()),
        _f("rating", DoubleType()),
    ]
)

USERS = StructType(
    [
        _f("source", StringType(), False),
        _f("user_id", StringType(), False),
        _f("n_records", LongType(), False),
        _f("first_ts", TimestampType(), False),
        _f("last_ts", TimestampType(), False),
        _f("mean_chars", DoubleType()),
        _f("active_days", LongType()),
        _f("records", ArrayType(TIMELINE_RECORD)),  # chronological, scrubbed
        _f("records_checksum", LongType(), False),  # bit_xor of per-record hashes: what changed
        _f("_users_run_id", StringType(), False),
    ]
)

# The gate of the dataset (paper §2.1): one row per scrubbed record, its quality/harm label and
# whether it is kept; users and every task read only kept records.
RECORD_LABELS = StructType(
    [
        _f("record_id", StringType(), False),
        _f("source", StringType(), False),
        _f("user_id", StringType(), False),
        _f("quality", StringType()),  # high | medium | low (null: unlabelled or the label failed)
        _f("harm", StringType()),  # none | violence | pornography | privacy violation
        _f("harmful", StringType()),  # yes | no (harm != none)
        _f("keep", BooleanType(), False),
        _f("gate", StringType(), False),  # kept | quality_<q> | harmful_<harm> | label_failed | unlabelled
        _f("reason", StringType()),  # the labeller's reason, or the dead letter's error
        _f("text", StringType()),  # the LLM-cleaned text when llm.clean_rewrite passed its checks
        _f("rewrite", StringType()),  # null (off) | used | rejected: <why> | failed: <error>
        _f("prompt_version", StringType()),
        _f("model", StringType()),
        _f("ledger_key", StringType()),
        _f("_label_run_id", StringType(), False),
        _f("labeller", StringType()),  # llm | classifier (llm.labels: distilled); null when unlabelled
        _f("keep_prob", DoubleType()),  # the classifier's P(quality kept) x P(harm none); null in llm mode
        _f("label_model", StringType()),  # label_models.model_version that scored the record
    ]
)

# llm.labels: distilled — one row per trained quality/harm classifier (lewin.udfs.label_model),
# keyed by a hash of its labelled sample and parameters; a rerun with the same labels reuses it.
# Agreement with the LLM on the held-out slice of the sample, for the classifier alone and for
# the routed labeller (the LLM inside the band, the classifier outside).
LABEL_MODELS = StructType(
    [
        _f("model_version", StringType(), False),
        _f("created_at", TimestampType(), False),
        _f("params", StringType(), False),  # JSON: llm.distill, quality_keep, training constants
        _f("n_train", StringType(), False),  # JSON: source -> LLM labels trained on
        _f("n_holdout", StringType(), False),  # JSON: source -> LLM labels held out
        _f("classifier_keep_accuracy", DoubleType()),  # null: no held-out labels
        _f("classifier_quality_accuracy", DoubleType()),
        _f("classifier_harmful_recall", DoubleType()),  # null: no harmful held-out record
        _f("classifier_high_precision", DoubleType()),  # null: nothing predicted high
        _f("routed_keep_accuracy", DoubleType()),
        _f("routed_quality_accuracy", DoubleType()),
        _f("routed_harmful_recall", DoubleType()),
        _f("routed_high_precision", DoubleType()),
        _f("holdout_metrics", StringType()),  # JSON: "all" and each source -> the figures and counts
        _f("model", BinaryType(), False),  # npz (lewin.udfs.label_model.LabelModel.to_bytes)
        _f("_label_run_id", StringType(), False),
    ]
)

PII_TABLES: dict[str, StructType] = {
    "silver_records_scrubbed": SILVER_RECORDS_SCRUBBED,
    "record_labels": RECORD_LABELS,
    "users": USERS,
}

# --- LLM stages ---------------------------------------------------------------------------------------
# One row per (artifact, input, prompt version, model, sampling): what was asked, what came back.
LLM_LEDGER = StructType(
    [
        _f("ledger_key", StringType(), False),  # sha256 of (artifact, input, input hash, prompt, model, sampling)
        _f("artifact", StringType(), False),  # quality | persona | … | judge_<artifact>
        _f("input_id", StringType(), False),  # record_id, "<source>:<user_id>", or the judged ledger_key
        _f("input_hash", StringType()),  # of the prompt's input: a user's new posts make a new prompt
        _f("user_id", StringType()),
        _f("source", StringType()),
        _f("prompt_version", StringType(), False),
        _f("model", StringType(), False),
        _f("params_hash", StringType(), False),
        _f("engine", StringType()),
        _f("status", StringType(), False),  # ok | failed (retried) | dead (attempts used up, or unfixable)
        _f("output", StringType()),  # the validated reply (JSON)
        _f("error", StringType()),  # parse error, schema violation, engine error, prompt_too_long
        _f("attempts", IntegerType(), False),
        _f("tokens_in", LongType()),
        _f("tokens_out", LongType()),
        _f("latency_ms", LongType()),
        _f("run_id", StringType(), False),
        _f("updated_at", TimestampType(), False),
    ]
)

SYNTH = StructType(
    [
        _f("artifact", StringType(), False),
        _f("input_id", StringType(), False),
        _f("user_id", StringType(), False),
        _f("source", StringType(), False),
        _f("record_id", StringType()),  # per-record artifacts
        _f("output", StringType(), False),  # JSON, schema per artifact in lewin.schemas.llm
        _f("prompt_version", StringType(), False),
        _f("model", StringType(), False),
        _f("ledger_key", StringType(), False),
    ]
)

JUDGED = StructType(
    SYNTH.fields
    + [
        _f("judge_model", StringType(), False),
        _f("judge_prompt_version", StringType(), False),
        _f("scores", MapType(StringType(), IntegerType())),
        _f("overall", IntegerType()),
        _f("reasons", StringType()),
        _f("accepted", BooleanType(), False),
    ]
)

# Deterministic quality signals on the synthetic data (lewin.udfs.synth_signals), long format: one
# row per (artifact, input_id, signal), merged on that key (a rerun changes nothing). input_id is
# the judged unit's (an output, or "<input>#<n>" for a story / QA item), "<source>:<user_id>" for
# per-user signals, "*" for an artifact's aggregate (user_id and source null).
SYNTH_SIGNALS = StructType(
    [
        _f("artifact", StringType(), False),
        _f("input_id", StringType(), False),
        _f("user_id", StringType()),
        _f("source", StringType()),
        _f("signal", StringType(), False),  # length_words | qa_leakage | unsupported_entities | distinct_1 | …
        _f("value", DoubleType()),
        _f("bound", StringType()),  # the threshold as text ("<100 words", "<=0.5"); null: reported only
        _f("passed", BooleanType()),  # null without bound
        _f("gate", BooleanType(), False),  # configured as a gold gate (llm.signals.<signal>.mode: gate)
        _f("detail", StringType()),  # e.g. the leaked n-grams, the unsupported entities
        _f("run_id", StringType(), False),
        _f("computed_at", TimestampType(), False),
    ]
)


# --- the second recipe: psychological patterns (lewin.jobs.patterns) -------------------------------
# One row per pattern of the library (the paper's structure), from the YAML/JSONL library or
# summarised by the LLM from a folder of papers (``origin``).
PATTERNS = StructType(
    [
        _f("pattern_id", StringType(), False),
        _f("name", StringType(), False),
        _f("type", StringType(), False),  # personality_trait | social_cognitive_pattern
        _f("definition", StringType(), False),
        _f("core_mechanisms", ArrayType(StringType()), False),
        _f("manifestations", ArrayType(StringType()), False),
        _f("references", ArrayType(StringType()), False),
        _f("origin", StringType(), False),  # library:<location> | literature:<model>
    ]
)

# One row per sampled bundle: its patterns, relation and framework, the scenario's candidate names,
# and the compatibility screen's verdict (status ok | rejected | pending: the screen has no reply yet).
PATTERN_BUNDLES = StructType(
    [
        _f("bundle_id", StringType(), False),
        _f("pattern_ids", ArrayType(StringType()), False),
        _f("relation", StringType(), False),
        _f("framework", StringType(), False),
        _f("candidate_names", ArrayType(StringType()), False),  # 5 male, then 5 female
        _f("status", StringType(), False),
        _f("reason", StringType()),
    ]
)

# One row per bundle whose scenario was written: Task 1's design and Task 2's scene (JSON, models
# in lewin.schemas.patterns), the characters, and the status (ok | failed: dead letters' reasons).
PATTERN_SCENES = StructType(
    [
        _f("bundle_id", StringType(), False),
        _f("status", StringType(), False),
        _f("reason", StringType()),
        _f("design", StringType()),
        _f("scene", StringType()),
        _f("protagonist", StringType()),
        _f("characters", ArrayType(StringType())),
    ]
)

# One row per scene's conversation: the turns (JSON) and the transcript in the paper's format
# ("Name: [thought] (action) speech"), validated (status ok | failed with the validator's reasons).
PATTERN_CONVERSATIONS = StructType(
    [
        _f("bundle_id", StringType(), False),
        _f("status", StringType(), False),
        _f("reason", StringType()),
        _f("n_turns", IntegerType()),
        _f("turns", StringType()),
        _f("transcript", StringType()),
    ]
)

# The dual-level checklists: one row per item. level "pattern": derived from a pattern's definition
# (owner = pattern_id, asked about the protagonist); level "dynamics": from a bundle's relation and
# scene (owner = bundle_id). Items the value-neutrality screen refuses keep their reason.
PATTERN_CHECKLISTS = StructType(
    [
        _f("item_id", StringType(), False),
        _f("level", StringType(), False),
        _f("owner", StringType(), False),
        _f("question", StringType(), False),
        _f("screen", StringType()),  # null: usable; else why the item is not asked
    ]
)

# One row per judged conversation: item answers (JSON: item_id, level, answer, evidence turns),
# pass rates per level, the holistic score beside them, and whether it is gold (reasons if not).
PATTERN_JUDGED = StructType(
    [
        _f("bundle_id", StringType(), False),
        _f("individual_items", IntegerType(), False),
        _f("individual_pass", DoubleType()),
        _f("dynamics_items", IntegerType(), False),
        _f("dynamics_pass", DoubleType()),
        _f("holistic", IntegerType()),
        _f("answers", StringType(), False),
        _f("gold", BooleanType(), False),
        _f("reasons", ArrayType(StringType()), False),
    ]
)

# Role-play training records: one per character of a gold conversation (ShareGPT messages).
ROLEPLAY_SAMPLES = StructType(
    [
        _f("sample_id", StringType(), False),
        _f("bundle_id", StringType(), False),
        _f("character", StringType(), False),
        _f("split", StringType(), False),
        _f("messages", ArrayType(StructType([_f("role", StringType(), False), _f("content", StringType(), False)])), False),
    ]
)
