"""The engine-sensitive tests again, on classic local PySpark.

PySpark cannot hold a Spark Connect and a classic session in one process, so this runs them in a
subprocess with ``LEWIN_TEST_ENGINE=spark`` (classic ``local[2]``; tables as Parquet where the
Delta jars are absent, as here: no Maven access).

Only what can differ between engines runs again: Spark expressions and SQL (bronze parsing and
validation, cleaning regexes, rule taggers, windows for dedup and timelines, k-core joins) and
the table store's write paths, which on Parquet are anti-joins and staged overwrites instead of
Delta MERGEs. Tests whose logic is Python (PII detection and surrogates, rule configuration,
ingest-log bookkeeping) or that repeat a covered path on more data stay on the embedded engine
only. ``CLASSIC`` lists the selection with the reason for each entry; it is intersected with the
``transforms`` marker, and a node id that no longer exists fails the run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql.types import LongType, StringType, StructField, StructType

from .conftest import ENGINE

CLASSIC: dict[str, str] = {
    # readers and bronze parsing: from_json, casts, timestamp parsing and every reason code are
    # Spark expressions (24 tests, about 30 s)
    "tests/test_bronze.py": "bronze parse and validation expressions, every reason code",
    # cleaning is built-in regexp_replace: Java regex on classic Spark, Rust regex on Sail
    "tests/test_clean.py": "cleaning regexes (dialects differ between engines)",
    "tests/test_kcore.py": "k-core joins and checkpointed rounds",
    "tests/test_users.py": "timeline windows, upsert and delete of users, SQL by table name",
    "tests/test_engine.py::test_ensure_register_and_insert_new_is_idempotent": "ensure, register, insert_new, upsert",
    "tests/test_classic_engine.py::test_store_write_paths": "delete_keys, update_keys, self-overwrite, checkpointer",
    "tests/test_ingest.py::test_bad_input_lands_in_quarantine_with_distinct_reasons":
        "reader faults (invalid UTF-8, truncated gzip, CSV field count) and quarantine",
    # poison values: an expression that raises under ANSI mode (array index, narrowing cast,
    # map key) fails on one engine and not the other; the fuzzed corpus reaches every parser
    "tests/test_hostile_input.py::test_fuzzed_corpus_every_record_kept_or_quarantined":
        "fuzzed values of every source through bronze: no error escapes, every record kept or quarantined",
    "tests/test_curate.py::test_every_rule_on_a_hand_checkable_fixture": "every rule tagger, language ID, exact dedup",
    "tests/test_curate.py::test_incremental_second_batch_and_late_earlier_duplicate":
        "dedup window across runs; a displaced row moves to rejected (delete_keys + upsert)",
    # near-dedup: the shingle regex ([^\p{L}\p{N}]+ in Java and in Rust), lambdas over arrays,
    # the banding aggregation and the checkpointed label rounds
    "tests/test_near_dedup.py::test_spark_shingles_equal_the_python_ones": "shingle regex dialects",
    "tests/test_near_dedup.py::test_planted_near_duplicates_recall_and_precision":
        "banding, verification and components on the planted set",
    "tests/test_near_dedup.py::test_incremental_batches_and_a_rerun_rejects_nothing_new":
        "near-dedup against stored signatures; a rerun rejects nothing",
    # the paper's own dumps (twitter100m Parquet + users table, REDDIT_submissions folders): text-derived
    # retweet/quote flags and entity counts, subreddit from the path, ISO-time fallback (regex dialects)
    "tests/test_paper_sources.py": "twitter100m and REDDIT_submissions Parquet through ingest and curate",
    # real dumps beside the project (skipped when ../shared/data is absent): format variants
    # the bundled sample does not have (PRAW/Pushshift CSV, Twitter pages, Amazon variants)
    "tests/test_real_samples.py": "real dump format variants through the readers and bronze",
}
# Embedded only, and why: test_pii.py (PII detection and surrogates are Python; scrub's writes are
# upsert/delete_keys/update_keys, covered above), test_notebooks.py (re-runs ingest, curate, scrub
# and users on the whole sample before five SQL queries; SQL by name is covered by test_users),
# test_ingest.py::test_new_and_changed_files_only (ingest-log bookkeeping in the driver; its
# insert_new is covered), test_ingest.py::test_sample_ingest_counts_and_rerun_is_a_noop (every
# sample format goes through the readers and bronze on classic executors in test_cluster.py, whose
# kept and rejected ids must equal the embedded run's; a rerun's write is insert_new, whose
# idempotence on Parquet is test_engine's), test_curate.py's Amazon k-core test (the k-core transform is
# test_kcore.py, the moves in and out of silver are delete_keys/insert_new, covered), rule
# switches, quality drop_on and Reddit comment rules (configuration of the taggers covered above).
# A new engine-sensitive test must be added to CLASSIC to run here.
CLASSIC_MIN_PASSED = 44
"""Tests in ``CLASSIC`` that must pass without ``../shared/data`` (the real samples, and the
cleaning test on them, add 9 when present)."""


@pytest.mark.transforms
def test_store_write_paths(store, spark):
    """The table store's write paths beyond insert_new/upsert: Delta MERGEs on the embedded
    engine, anti-joins and staged overwrites on classic Spark's Parquet tables."""
    schema = StructType([StructField("id", StringType(), False), StructField("text", StringType()),
                         StructField("title", StringType()), StructField("n", LongType())])
    rows = [(f"r{i}", f"text {i}", f"title {i}", i) for i in range(5)]
    store.insert_new("t", spark.createDataFrame(rows, schema), ["id"], schema)
    # delete_keys: repeated and unknown keys are fine; a missing table is a no-op
    store.delete_keys("t", spark.createDataFrame([("r1",), ("r1",), ("zz",)], "id string"), ["id"])
    store.delete_keys("absent", spark.createDataFrame([("r1",)], "id string"), ["id"])
    assert not store.exists("absent")
    # update_keys: SQL literal values on the matching rows only (what PII retention does)
    store.update_keys("t", spark.createDataFrame([("r2",), ("r2",), ("r3",)], "id string"), ["id"],
                      {"text": "NULL", "title": "''"})
    got = {r["id"]: (r["text"], r["title"], r["n"]) for r in store.read("t").collect()}
    assert got == {"r0": ("text 0", "title 0", 0), "r2": (None, "", 2), "r3": (None, "", 3), "r4": ("text 4", "title 4", 4)}
    # overwrite from a plan that reads the same table, then SQL by name sees the new rows
    store.overwrite("t", store.read("t").where("n >= 2"))
    store.register_all()
    assert spark.sql(f"SELECT count(*) AS c FROM {store.storage.database}.t").collect()[0]["c"] == 3
    # the checkpointer alternates between its two tables, each round reading the previous one
    checkpoint = store.checkpointer(("_ck_0", "_ck_1"))
    df = store.read("t")
    for i in range(3):
        df = checkpoint(df.where(f"n > {1 + i}"), i)
    assert [r["id"] for r in df.collect()] == ["r4"] and store.exists("_ck_0") and store.exists("_ck_1")
    df = checkpoint(df.unionByName(store.read("t").where("n = 2")), 3)
    assert sorted(r["id"] for r in df.collect()) == ["r2", "r4"]


@pytest.mark.classic
@pytest.mark.slow
def test_transforms_on_classic_spark():
    if ENGINE != "embedded":
        pytest.skip("this is the classic run already")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("classic Spark needs a JVM (Java 17); none found")
    env = dict(os.environ, LEWIN_TEST_ENGINE="spark")
    # this process holds a Spark Connect session, which marks the environment as Connect mode
    for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
        env.pop(var, None)
    root = Path(__file__).parent.parent
    r = subprocess.run(
        [sys.executable, "-m", "pytest", *CLASSIC, "-m", "transforms", "-q", "-p", "no:cacheprovider",
         "--durations=10", "-n", "0"],
        env=env, capture_output=True, text=True, timeout=2400, cwd=root,
    )
    tail = (r.stdout[-6000:] + "\n" + r.stderr[-3000:]).strip()
    assert r.returncode == 0, tail
    m = re.search(r"(\d+) passed", r.stdout)
    assert m and int(m.group(1)) >= CLASSIC_MIN_PASSED, f"too few transform tests ran on classic Spark:\n{tail}"
    print(r.stdout[r.stdout.find("slowest"):].strip() if "slowest" in r.stdout else r.stdout.strip().splitlines()[-1])
