"""Sources are plugins: everything Lewin knows about a source is its ``SourceSpec``.

A toy source defined here (JSON lines with ``who``, ``when``, ``body``) is registered with one line
and runs through ingest and curate untouched: its rows land in its bronze table and in
``silver_records``, a record without a user is quarantined, a too-short one is rejected with its
rule's name. Then the registry's own invariants: the built-in specs agree with the table schemas
and the rule configuration, and a spec that would clash is refused.
"""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

from lewin.jobs.curate import curate
from lewin.jobs.ingest import ingest
from lewin.schemas import tables as T
from lewin.schemas.config import ConfigError, CurateRules, LewinConfig, MinChars, load_config
from lewin.udfs import bronze as B
from lewin.udfs import sources
from lewin.udfs.rules import min_chars
from lewin.udfs.sources import RuleSpec, SourceSpec, StreamSpec

# --- the toy source: one bronze table, one stream, one rule of its own ------------------------------
TOY_BRONZE = StructType(
    [StructField("record_id", StringType(), False), StructField("source", StringType(), False),
     StructField("native_id", StringType()), StructField("user_id", StringType(), False),
     StructField("event_ts", TimestampType(), False), StructField("title", StringType()),
     StructField("text", StringType()),
     StructField("_file", StringType(), False), StructField("_line", LongType(), False),
     StructField("_run_id", StringType(), False), StructField("_ingested_at", TimestampType(), False)]
)
_TOY_RAW = B.strings("who", "when", "body")


def normalize_toy(df, p):
    text_in = F.coalesce(F.col("payload"), F.col("raw"))
    j = df.select(*B.reader_fields(), F.from_json(text_in, _TOY_RAW).alias("j"))
    user, raw_time, text = B.nonblank(F.col("j.who")), B.nonblank(F.col("j.when")), F.col("j.body")
    ts = B.epoch_seconds(B.to_long(raw_time))
    out = j.select("*", F.lit(None).cast("string").alias("native_id"), user.alias("user_id"), ts.alias("event_ts"),
                   F.lit(None).cast("string").alias("title"), text.alias("text"),
                   F.concat(F.lit("toy:h:"), B.hash_id(user, ts, text)).alias("record_id"), F.lit("toy").alias("source"))
    checks = ([(F.col("user_id").isNull(), "missing_user", None)] + B.time_checks(raw_time, F.col("event_ts"), p)
              + [(F.col("text").isNull(), "missing_text", None)] + B.text_checks(F.col("text"), p))
    return B.finish(out, F.lit("bronze_toy"), checks, user.isNull() & raw_time.isNull(), text_in)


TOY = SourceSpec(
    name="toy",
    bronze_tables={"bronze_toy": TOY_BRONZE},
    normalize=normalize_toy,
    streams=(StreamSpec("toy", "bronze_toy", rules=(RuleSpec("toy_min_length_v1", min_chars, MinChars(min_chars=40)),)),),
)

TOY_RECORDS = [
    {"who": "ann", "when": 1650000000, "body": "I walked my dog along the river this morning and the water was calm and bright."},
    {"who": "bob", "when": 1650003600, "body": "We finally repainted the kitchen last weekend, and I think the yellow walls look wonderful."},
    {"who": "ann", "when": 1650007200, "body": "Too short."},
    {"when": 1650010800, "body": "A record nobody wrote cannot belong to a user, so it is quarantined."},
]


@pytest.fixture
def toy_registered():
    sources.register(TOY)  # the one line a new source needs
    yield TOY
    sources.unregister("toy")


def test_toy_source_runs_through_ingest_and_curate(store, cfg, tmp_path, toy_registered):
    dump = tmp_path / "toy" / "dump.jsonl"
    dump.parent.mkdir()
    dump.write_text("".join(json.dumps(r) + "\n" for r in TOY_RECORDS))

    ing = ingest(store, cfg, "toy", [str(dump.parent)])
    assert ing.reconciles and ing.kept_by_table == {"bronze_toy": 3}
    assert ing.quarantined_by_reason == {"missing_user": 1}
    assert store.count("bronze_toy") == 3
    q = store.read("quarantine").where(F.col("source") == "toy").collect()
    assert [r["reason"] for r in q] == ["missing_user"]

    cur = curate(store, cfg, "toy")
    assert cur.reconciles and (cur.records_in, cur.kept, cur.rejected) == (3, 2, 1)
    assert cur.rejected_by_rule == {"toy_min_length_v1": 1}
    silver = store.read("silver_records").where(F.col("source") == "toy").collect()
    assert sorted(r["user_id"] for r in silver) == ["ann", "bob"]
    assert all(r["lang"] == "en" and r["record_id"].startswith("toy:h:") for r in silver)
    (rej,) = store.read("rejected").where(F.col("source") == "toy").collect()
    assert (rej["stage"], rej["rule"], rej["detail"]) == ("rules", "toy_min_length_v1", "chars=10")
    # incremental like every stream: a rerun finds nothing new
    again = curate(store, cfg, "toy")
    assert (again.records_in, again.kept, again.rejected) == (0, 0, 0)


def test_registration_is_what_the_config_and_the_stages_accept(tmp_path, toy_registered):
    cfg = LewinConfig.model_validate({"ingest": {"sources": {"toy": {"paths": [str(tmp_path)]}}}})
    assert list(cfg.ingest.sources) == ["toy"]
    assert sources.names()[-1] == "toy" and "toy" in sources.stream_names()
    sources.unregister("toy")
    with pytest.raises(ConfigError, match="unknown source"):
        load_config(None, ["ingest.sources.toy.paths=[/x]"])
    sources.register(TOY)


def test_builtin_specs_agree_with_schemas_and_rule_config():
    from lewin.schemas.config import SOURCES

    assert SOURCES == ("reddit", "twitter", "blogger", "amazon") == sources.names()
    assert sources.stream_names() == ("reddit", "reddit_comments", "twitter", "blogger", "amazon")
    assert sources.bronze_tables() == T.BRONZE_TABLES
    # every configured rule is run by some stream, every built-in stream rule is configured
    used = [r.name for st in sources.streams() for r in st.rules]
    assert set(used) == set(CurateRules.model_fields)
    assert {st.name: st.source for st in sources.streams()}["reddit_comments"] == "reddit"


def test_a_clashing_spec_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        sources.register(sources.get("reddit"))
    clash = SourceSpec(name="toy2", bronze_tables={"bronze_reddit": T.BRONZE_REDDIT}, normalize=normalize_toy,
                       streams=(StreamSpec("toy2", "bronze_reddit"),))
    with pytest.raises(ValueError, match="already belongs to reddit"):
        sources.register(clash)
    same_stream = SourceSpec(name="toy2", bronze_tables={"bronze_toy2": TOY_BRONZE}, normalize=normalize_toy,
                             streams=(StreamSpec("reddit_comments", "bronze_toy2"),))
    with pytest.raises(ValueError, match="stream reddit_comments already exists"):
        sources.register(same_stream)
    bad_carry = SourceSpec(name="toy2", bronze_tables={"bronze_toy2": TOY_BRONZE}, normalize=normalize_toy,
                           streams=(StreamSpec("toy2", "bronze_toy2", carry=("subreddit",)),))
    with pytest.raises(ValueError, match="carries subreddit"):
        sources.register(bad_carry)
    assert "toy2" not in sources.names()


# --- what the emit stage needs, carried to silver ------------------------------------------------------
def test_comments_carry_their_parent_id_to_silver_and_the_scrubbed_schema(store, cfg, tmp_path):
    d = tmp_path / "reddit"
    d.mkdir()
    text = "I fixed my bike chain this morning and it finally stopped slipping on the hill."
    (d / "RC_test.jsonl").write_text(json.dumps(
        {"id": "c1", "author": "ann", "body": text, "score": 5, "created_utc": 1600000000, "link_id": "t3_post",
         "parent_id": "t1_other", "subreddit": "bikes"}) + "\n")
    ingest(store, cfg, "reddit", [str(d)])
    curate(store, cfg, "reddit_comments")
    (row,) = store.read("silver_records").collect()
    assert (row["record_id"], row["source"], row["parent_id"]) == ("reddit:t1_c1", "reddit", "t1_other")
    assert T.SILVER_RECORDS_SCRUBBED["parent_id"].dataType == StringType()
    assert T.AMAZON_POOL["parent_id"].nullable


def test_item_catalogue_reaches_silver_items_incrementally(store, cfg, tmp_path):
    """Amazon item metadata -> ``silver_items`` (one row per item), also when no review is new;
    a rerun copies nothing, a later dump adds only its new items."""
    d = tmp_path / "amazon"
    d.mkdir()
    item = {"main_category": "All Beauty", "store": "Sample Brand", "price": 12.99, "categories": ["Beauty"]}
    (d / "meta_Toy_Beauty.jsonl").write_text("".join(json.dumps(dict(item, parent_asin=f"B0TOY{i}", title=f"Item {i}")) + "\n"
                                                     for i in (1, 2)))
    ingest(store, cfg, "amazon", [str(d)])
    r = curate(store, cfg, "amazon")
    assert r.records_in == 0 and r.side_rows == {"silver_items": 2}
    rows = {x["item_id"]: x for x in store.read("silver_items").collect()}
    assert {k: (v["title"], v["source"], v["category"], v["price"]) for k, v in rows.items()} == {
        "B0TOY1": ("Item 1", "amazon", "Toy_Beauty", 12.99), "B0TOY2": ("Item 2", "amazon", "Toy_Beauty", 12.99)}
    assert curate(store, cfg, "amazon").side_rows == {"silver_items": 0}
    (d / "meta_Toy_Beauty_more.jsonl").write_text(
        "".join(json.dumps(dict(item, parent_asin=f"B0TOY{i}", title=f"Item {i} again")) + "\n" for i in (2, 3)))
    ingest(store, cfg, "amazon", [str(d)])
    assert curate(store, cfg, "amazon").side_rows == {"silver_items": 1}
    titles = {x["item_id"]: x["title"] for x in store.read("silver_items").collect()}
    assert titles == {"B0TOY1": "Item 1", "B0TOY2": "Item 2", "B0TOY3": "Item 3 again"}  # the first version stays
