# Databricks notebook source
# MAGIC %md
# MAGIC # Run report: where the records went
# MAGIC
# MAGIC The figures of `lewin report` (the HTML run report), drawn from Lewin's tables with SQL:
# MAGIC the funnel per source and stage, why records were rejected or quarantined, the k-core rounds, text
# MAGIC lengths before and after curation, language-ID scores, records and active days per user, PII
# MAGIC replacements, the LLM ledger and its dead letters, judge scores, gold yield, the synthesis
# MAGIC signals' pass rates, the training samples' mix and the MCQ options' origins. Each cell displays
# MAGIC one aggregate: pick a bar chart (or a histogram) in the cell's display to draw it.
# MAGIC
# MAGIC Point the widgets at the catalog and schema your jobs write to (`storage.catalog`,
# MAGIC `storage.database`; leave `catalog` empty for the session's catalog). A section whose table
# MAGIC does not exist yet (its stage has not run) says so instead of failing. Locally, every query
# MAGIC without `{…}` runs as is with `lewin sql "…"`.

# COMMAND ----------

dbutils.widgets.text("catalog", "main")  # noqa: F821 (Databricks globals)
dbutils.widgets.text("schema", "lewin")  # noqa: F821
if dbutils.widgets.get("catalog"):  # noqa: F821
    spark.catalog.setCurrentCatalog(dbutils.widgets.get("catalog"))  # noqa: F821
spark.catalog.setCurrentDatabase(dbutils.widgets.get("schema"))  # noqa: F821

ARTIFACTS = ["persona", "profile", "stories", "writing_style", "scenario", "social_qa"]
BRONZE = ["bronze_reddit", "bronze_reddit_comments", "bronze_twitter", "bronze_blogger", "bronze_amazon"]


def has(table: str, quiet: bool = False) -> bool:
    """The table exists in the current schema (its stage has run); else say so, unless ``quiet``."""
    if spark.catalog.tableExists(table):  # noqa: F821
        return True
    if not quiet:
        print(f"{table}: not written yet")
    return False

# COMMAND ----------

# MAGIC %md ## The funnel per source and stage (`runs`)
# MAGIC
# MAGIC One row per (run, stage, source) in `runs`, summed over runs: every stage is incremental, so
# MAGIC the sums are what each stage did to the data so far (`records_in = kept + duplicates +
# MAGIC rejected + quarantined`).

# COMMAND ----------

display(spark.sql("""
SELECT stage, source, count(*) AS runs, sum(records_in) AS records_in, sum(kept) AS kept,
       sum(duplicates) AS duplicates, sum(rejected) AS rejected, sum(quarantined) AS quarantined
FROM runs
GROUP BY stage, source
ORDER BY CASE stage WHEN 'ingest' THEN 1 WHEN 'curate' THEN 2 WHEN 'scrub' THEN 3 WHEN 'label' THEN 4
                    WHEN 'users' THEN 5 WHEN 'llm' THEN 6 WHEN 'emit' THEN 7 ELSE 8 END, source
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## Why curation rejected records (`rejected`)

# COMMAND ----------

display(spark.sql("""
SELECT source, stage, rule, count(*) AS records
FROM rejected
GROUP BY source, stage, rule
ORDER BY records DESC, source, rule
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## Why ingestion quarantined input (`quarantine`)

# COMMAND ----------

display(spark.sql("""
SELECT source, reason, count(*) AS records
FROM quarantine
GROUP BY source, reason
ORDER BY records DESC, source, reason
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## The Amazon k-core, round by round (`kcore_rounds`, newest run first)

# COMMAND ----------

if has("kcore_rounds"):
    display(spark.sql("""
SELECT run_id, round, users, items, interactions, dropped
FROM kcore_rounds
ORDER BY run_id DESC, round
LIMIT 200
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## Text length per source, before (bronze) and after (silver) curation
# MAGIC
# MAGIC Characters of the raw text in bronze and of the cleaned text of the records curation kept.
# MAGIC Bronze texts that `pii.retention: drop_upstream_text` nulled are left out.

# COMMAND ----------

_steps = [f"SELECT source, 'before' AS step, length(text) AS chars FROM {t} WHERE text IS NOT NULL" for t in BRONZE
          if has(t, quiet=True)]  # the sources ingested
if has("silver_records"):
    _steps.append("SELECT source, 'after' AS step, length(text) AS chars FROM silver_records WHERE text IS NOT NULL")
LENGTHS = " UNION ALL ".join(_steps)
if LENGTHS:
    display(spark.sql(f"""
SELECT source, step, count(*) AS records, percentile_approx(chars, 0.1) AS p10, percentile_approx(chars, 0.5) AS median,
       percentile_approx(chars, 0.9) AS p90, round(avg(chars)) AS mean
FROM ({LENGTHS}) lengths
GROUP BY source, step
ORDER BY source, step DESC
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ### Text length histogram (powers of two: `chars_from` ≤ length < 2 × `chars_from`)

# COMMAND ----------

if LENGTHS:
    display(spark.sql(f"""
SELECT source, step, CAST(pow(2, floor(log2(greatest(chars, 1)))) AS BIGINT) AS chars_from, count(*) AS records
FROM ({LENGTHS}) lengths
GROUP BY source, step, CAST(pow(2, floor(log2(greatest(chars, 1)))) AS BIGINT)
ORDER BY source, step DESC, chars_from
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## Language-ID score (fastText lid.176) of the records curation kept
# MAGIC
# MAGIC Records per detected language and score bucket of 0.05 (`score_from` ≤ score < `score_from` + 0.05).

# COMMAND ----------

display(spark.sql("""
SELECT source, lang, round(floor(lang_score * 20) / 20, 2) AS score_from, count(*) AS records
FROM silver_records
WHERE lang_score IS NOT NULL
GROUP BY source, lang, round(floor(lang_score * 20) / 20, 2)
ORDER BY source, lang, score_from
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## Records per user (`users`)
# MAGIC
# MAGIC Users per bucket of kept records (powers of two: `records_from` ≤ n_records < 2 × `records_from`).

# COMMAND ----------

display(spark.sql("""
SELECT source, CAST(pow(2, floor(log2(n_records))) AS BIGINT) AS records_from, count(*) AS users,
       sum(n_records) AS records
FROM users
GROUP BY source, CAST(pow(2, floor(log2(n_records))) AS BIGINT)
ORDER BY source, records_from
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ### Active days per user (powers of two: `days_from` ≤ active days < 2 × `days_from`)

# COMMAND ----------

display(spark.sql("""
SELECT source, CAST(pow(2, floor(log2(greatest(active_days, 1)))) AS BIGINT) AS days_from, count(*) AS users
FROM users
GROUP BY source, CAST(pow(2, floor(log2(greatest(active_days, 1)))) AS BIGINT)
ORDER BY source, days_from
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## PII replaced, per type (types and counts only: originals are never stored)

# COMMAND ----------

display(spark.sql("""
SELECT source, s.type AS type, count(*) AS replaced, count(DISTINCT record_id) AS records
FROM silver_records_scrubbed LATERAL VIEW explode(pii_spans) t AS s
GROUP BY source, s.type
ORDER BY replaced DESC, source, type
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## The LLM ledger: prompts per artifact and status, tokens and latency (`llm_ledger`)

# COMMAND ----------

if has("llm_ledger"):
    display(spark.sql("""
SELECT artifact, status, count(*) AS prompts, sum(attempts) AS attempts, sum(tokens_in) AS tokens_in,
       sum(tokens_out) AS tokens_out, round(avg(latency_ms)) AS mean_latency_ms
FROM llm_ledger
GROUP BY artifact, status
ORDER BY artifact, status
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ### Dead letters by reason code (the error's stable code before `:`) and artifact

# COMMAND ----------

if has("llm_ledger", quiet=True):
    display(spark.sql("""
SELECT artifact, coalesce(nullif(trim(substring_index(error, ':', 1)), ''), '(no error)') AS code,
       count(*) AS dead_letters, min(substr(error, 1, 200)) AS example
FROM llm_ledger
WHERE status = 'dead'
GROUP BY artifact, coalesce(nullif(trim(substring_index(error, ':', 1)), ''), '(no error)')
ORDER BY dead_letters DESC, artifact, code
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## Judge scores (`judged_<artifact>`)
# MAGIC
# MAGIC Items per score (1–10) for every metric the judge gave each artifact.

# COMMAND ----------

JUDGED = " UNION ALL ".join(f"SELECT '{a}' AS artifact, source, scores, accepted FROM judged_{a}" for a in ARTIFACTS
                            if has(f"judged_{a}", quiet=True))  # the artifacts configured (llm.artifacts)
if not JUDGED:
    print("judged_<artifact>: none written yet")
if JUDGED:
    display(spark.sql(f"""
SELECT artifact, metric, score, count(*) AS items
FROM ({JUDGED}) j LATERAL VIEW explode(j.scores) t AS metric, score
GROUP BY artifact, metric, score
ORDER BY artifact, metric, score
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## Gold yield: judged items the thresholds kept, per artifact and source

# COMMAND ----------

if JUDGED:
    display(spark.sql(f"""
SELECT artifact, source, count(*) AS judged, sum(CASE WHEN accepted THEN 1 ELSE 0 END) AS gold,
       round(avg(CASE WHEN accepted THEN 1.0 ELSE 0.0 END), 3) AS gold_yield
FROM ({JUDGED}) j
GROUP BY artifact, source
ORDER BY artifact, source
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## Synthesis signals: pass rate per artifact and signal (`synth_signals`)
# MAGIC
# MAGIC The latest value of each (artifact, input, signal). `pass_rate` is the share of items within
# MAGIC the signal's `bound`, over the items it was checked on (a signal without a bound is reported
# MAGIC only: no pass rate); `gate` says whether the signal is configured to keep items out of gold.

# COMMAND ----------

if has("synth_signals"):
    display(spark.sql("""
WITH latest AS (
  SELECT artifact, input_id, signal, bound, gate, value, passed,
         row_number() OVER (PARTITION BY artifact, input_id, signal ORDER BY computed_at DESC, run_id DESC) AS rn
  FROM synth_signals
)
SELECT artifact, signal, gate, bound, count(*) AS items, count(passed) AS checked,
       sum(CASE WHEN passed THEN 1 ELSE 0 END) AS passed,
       round(sum(CASE WHEN passed THEN 1.0 ELSE 0.0 END) / nullif(count(passed), 0), 3) AS pass_rate,
       round(avg(value), 3) AS mean_value
FROM latest
WHERE rn = 1
GROUP BY artifact, signal, gate, bound
ORDER BY artifact, signal, bound
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## Training samples per task, source and split (`shard_samples`), and the task mix

# COMMAND ----------

if has("shard_samples"):
    display(spark.sql("""
SELECT task, source, split, count(*) AS samples,
       round(count(*) / sum(count(*)) OVER (PARTITION BY split), 3) AS share_of_split
FROM shard_samples
GROUP BY task, source, split
ORDER BY split DESC, task, source
"""))  # noqa: F821

# COMMAND ----------

# MAGIC %md ## MCQ options per task, by origin (`mcq_items`; `#<round>` of repeated engines folded)

# COMMAND ----------

if has("mcq_items"):
    display(spark.sql("""
SELECT task, regexp_replace(origin, '#[0-9]+$', '') AS origin, count(*) AS options, count(DISTINCT mcq_id) AS questions
FROM mcq_items LATERAL VIEW explode(origins) o AS origin
GROUP BY task, regexp_replace(origin, '#[0-9]+$', '')
ORDER BY task, options DESC
"""))  # noqa: F821
