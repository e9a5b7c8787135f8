# Databricks notebook source
# MAGIC %md
# MAGIC # Explore curated users
# MAGIC
# MAGIC Lewin's `users` table holds one row per (source, user): counts, first and last activity,
# MAGIC and the user's PII-scrubbed records in chronological order. Point the widgets at the
# MAGIC catalog and schema your jobs write to (`storage.catalog`, `storage.database`).
# MAGIC Locally, every `%sql` cell below runs as is with `lewin sql "…"`.

# COMMAND ----------

dbutils.widgets.text("catalog", "main")  # noqa: F821 (Databricks globals)
dbutils.widgets.text("schema", "lewin")  # noqa: F821
spark.sql(f"USE CATALOG {dbutils.widgets.get('catalog')}")  # noqa: F821
spark.sql(f"USE SCHEMA {dbutils.widgets.get('schema')}")  # noqa: F821

# COMMAND ----------

# MAGIC %md ## Who has a history long enough to model?

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT source, count(*) AS users, sum(n_records) AS records,
# MAGIC        percentile_approx(n_records, 0.5) AS median_records, max(n_records) AS max_records
# MAGIC FROM users
# MAGIC GROUP BY source
# MAGIC ORDER BY users DESC

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT source, user_id, n_records, active_days, round(mean_chars) AS mean_chars, first_ts, last_ts
# MAGIC FROM users
# MAGIC WHERE n_records >= 8
# MAGIC ORDER BY n_records DESC, user_id
# MAGIC LIMIT 50

# COMMAND ----------

# MAGIC %md ## One user's timeline, oldest first

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT u.user_id, r.event_ts, r.record_id, substr(r.text, 1, 160) AS text
# MAGIC FROM (SELECT * FROM users WHERE n_records >= 8 ORDER BY n_records DESC, user_id LIMIT 1) u
# MAGIC LATERAL VIEW posexplode(u.records) t AS pos, r
# MAGIC ORDER BY pos

# COMMAND ----------

# MAGIC %md ## What the scrubber replaced (types and counts only: originals are never stored)

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT source, s.type, count(*) AS replaced
# MAGIC FROM silver_records_scrubbed LATERAL VIEW explode(pii_spans) t AS s
# MAGIC GROUP BY source, s.type
# MAGIC ORDER BY replaced DESC

# COMMAND ----------

# MAGIC %md ## Where the records went: the curation funnel

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT stage, source, sum(records_in) AS records_in, sum(kept) AS kept, sum(rejected) AS rejected,
# MAGIC        sum(quarantined) AS quarantined
# MAGIC FROM runs
# MAGIC GROUP BY stage, source
# MAGIC ORDER BY stage, source
