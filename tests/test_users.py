"""Per-user timelines: order, tie-break, incremental merge, no-op rerun, SQL."""

from __future__ import annotations

from datetime import datetime

import pytest
from pyspark.sql import functions as F

from lewin.jobs.label import run_labels
from lewin.jobs.users import build_users as _build_users
from lewin.jobs.users import timelines
from lewin.schemas import tables as T

pytestmark = pytest.mark.transforms


def _scrubbed_rows(spark, rows):
    """rows: (source, user_id, record_id, event_ts, text)"""
    full = []
    for source, user, rid, ts, text in rows:
        rec = {f.name: None for f in T.SILVER_RECORDS_SCRUBBED.fields}
        rec.update(record_id=rid, source=source, user_id=user, event_ts=ts, text=text, text_hash=rid,
                   _bronze_run_id="b", _curate_run_id="c", scrub_version="v", _scrub_run_id="s", pii_spans=[])
        full.append(rec)
    return spark.createDataFrame(full, T.SILVER_RECORDS_SCRUBBED)


def build_users(store, cfg):
    """No LLM here: the label stage keeps every record as "unlabelled", then users are built."""
    cfg.llm.labels = "off"
    run_labels(store, cfg)
    return _build_users(store, cfg)


def test_timeline_order_tie_break_and_stats(spark):
    t1, t2 = datetime(2021, 1, 1, 9), datetime(2021, 1, 2, 9)
    df = _scrubbed_rows(spark, [
        ("reddit", "ann", "reddit:t3_c", t2, "third"),
        ("reddit", "ann", "reddit:t3_b", t1, "second, same time as first, larger id"),
        ("reddit", "ann", "reddit:t3_a", t1, "first"),
        ("twitter", "ann", "twitter:9", t1, "another source, another user"),
    ])
    rows = {(r["source"], r["user_id"]): r for r in timelines(df, 100, "r").collect()}
    ann = rows[("reddit", "ann")]
    assert [x["record_id"] for x in ann["records"]] == ["reddit:t3_a", "reddit:t3_b", "reddit:t3_c"]
    assert (ann["n_records"], ann["active_days"]) == (3, 2)
    assert (ann["first_ts"], ann["last_ts"]) == (t1, t2)
    assert ann["mean_chars"] == pytest.approx((5 + 37 + 5) / 3)
    assert rows[("twitter", "ann")]["n_records"] == 1
    # the cap keeps the latest records
    capped = timelines(df, 2, "r").where("source = 'reddit'").collect()[0]
    assert capped["n_records"] == 3 and [x["record_id"] for x in capped["records"]] == ["reddit:t3_b", "reddit:t3_c"]


def test_incremental_merge_and_noop_rerun(store, cfg, spark):
    t = [datetime(2021, 1, d) for d in range(1, 6)]
    store.ensure("silver_records_scrubbed", T.SILVER_RECORDS_SCRUBBED)
    store.append("silver_records_scrubbed", _scrubbed_rows(spark, [
        ("reddit", "ann", "r1", t[0], "a"), ("reddit", "ann", "r3", t[2], "c"), ("reddit", "bob", "r2", t[1], "b"),
    ]))
    first = build_users(store, cfg)
    assert (first.users_changed, first.users_total) == (2, 2)
    version = store.version("users")
    again = build_users(store, cfg)
    assert again.users_changed == 0 and store.version("users") == version, "a rerun must not write"
    # a second batch: a new record for ann between her two, and a new user
    store.append("silver_records_scrubbed", _scrubbed_rows(spark, [
        ("reddit", "ann", "r4", t[1], "between"), ("blogger", "cat", "r5", t[4], "new user"),
    ]))
    second = build_users(store, cfg)
    assert (second.users_changed, second.users_total) == (2, 3)
    ann = store.read("users").where((F.col("user_id") == "ann")).collect()[0]
    assert [x["record_id"] for x in ann["records"]] == ["r1", "r4", "r3"] and ann["n_records"] == 3
    bob = store.read("users").where(F.col("user_id") == "bob").collect()[0]
    assert bob["_users_run_id"] == first.run_id, "untouched users are not rewritten"
    # records leaving silver leave the timeline; a user with none left leaves the table
    store.delete_keys("silver_records_scrubbed", spark.createDataFrame([("r2",)], "record_id string"), ["record_id"])
    third = build_users(store, cfg)
    assert third.users_removed == 1 and store.read("users").where(F.col("user_id") == "bob").count() == 0


def test_sql_over_users_by_name(store, cfg, spark):
    store.ensure("silver_records_scrubbed", T.SILVER_RECORDS_SCRUBBED)
    store.append("silver_records_scrubbed", _scrubbed_rows(spark, [
        ("reddit", "ann", f"r{i}", datetime(2021, 1, 1 + i), "x") for i in range(9)]))
    build_users(store, cfg)
    store.register_all()
    rows = spark.sql("SELECT user_id, n_records FROM users WHERE n_records >= 8").collect()
    assert [(r["user_id"], r["n_records"]) for r in rows] == [("ann", 9)]
    n = spark.sql(f"SELECT count(*) AS n FROM {cfg.storage.database}.users").collect()[0]["n"]
    assert n == 1


def test_users_hold_only_kept_records_with_their_cleaned_text(store, cfg, spark):
    """The label gate: a record record_labels does not keep is in no timeline; a kept record with
    an LLM-cleaned text appears with that text; without record_labels, users refuses to run."""
    store.ensure("silver_records_scrubbed", T.SILVER_RECORDS_SCRUBBED)
    store.append("silver_records_scrubbed", _scrubbed_rows(spark, [
        ("reddit", "ann", "r1", datetime(2021, 1, 1), "kept <b>as is</b>"),
        ("reddit", "ann", "r2", datetime(2021, 1, 2), "labelled harmful"),
        ("reddit", "ann", "r3", datetime(2021, 1, 3), "kept, cleaned <i>by the LLM</i>")]))
    with pytest.raises(RuntimeError, match="run `lewin label`"):
        _build_users(store, cfg)
    labels = []
    for rid, keep, gate, text in [("r1", True, "kept", None), ("r2", False, "harmful_violence", None),
                                  ("r3", True, "kept", "kept, cleaned by the LLM")]:
        row = {f.name: None for f in T.RECORD_LABELS.fields}
        row.update(record_id=rid, source="reddit", user_id="ann", keep=keep, gate=gate, text=text, _label_run_id="l")
        labels.append(row)
    store.ensure("record_labels", T.RECORD_LABELS)
    store.append("record_labels", spark.createDataFrame(labels, T.RECORD_LABELS))
    _build_users(store, cfg)
    ann = store.read("users").collect()[0]
    assert [(x["record_id"], x["text"]) for x in ann["records"]] == [
        ("r1", "kept <b>as is</b>"), ("r3", "kept, cleaned by the LLM")]
    assert ann["n_records"] == 2
