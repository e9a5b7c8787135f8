"""Amazon: Reviews 2018 and Reviews 2023 (JSON lines), and their item metadata.

One ingest source, two bronze tables: ``bronze_amazon`` (reviews) and ``bronze_amazon_items``
(the item catalogue). Reviews are curated through a pool (``silver_amazon_pool``) whose k-core
(items with enough buyers, users with enough items) is what reaches ``silver_records``; the
catalogue is copied to ``silver_items`` (one row per item) by the same stream.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType

from lewin.schemas import tables as T
from lewin.udfs.bronze import (
    BronzeParams, epoch_millis, epoch_seconds, finish, hash_id, is_nested, nested_field, nonblank, reader_fields,
    snippet, strings, text_checks, time_checks, to_bool, to_double, to_long, wrong_type,
)
from lewin.udfs.rules import min_chars
from lewin.udfs.sources.base import RuleSpec, SideTable, SourceSpec, StreamSpec

# --- bronze: Reviews 2018 / 2023 and item metadata ----------------------------------------------------
_AMAZON_RAW = strings(
    # reviews 2018
    "reviewerID", "asin", "overall", "reviewText", "summary", "unixReviewTime", "verified", "vote",
    # reviews 2023
    "user_id", "parent_asin", "rating", "title", "text", "timestamp", "helpful_vote", "verified_purchase",
    # item metadata (2018 + 2023)
    "main_cat", "main_category", "category", "categories", "brand", "store", "price", "description",
    "feature", "features", "average_rating", "rating_number",
)


def _as_text(col: Column, nested: Column) -> Column:
    """A JSON array of strings -> its items joined by newlines; a plain string (one that only
    starts like an array, "[Gift] A soap …", too: ``nested`` is the record's own field) stays."""
    arr = F.from_json(col, ArrayType(StringType()))
    return F.when(is_nested(col, nested), F.coalesce(F.array_join(arr, "\n"), col)).otherwise(col)


def normalize(df: DataFrame, p: BronzeParams) -> DataFrame:
    text_in = F.coalesce(F.col("payload"), F.col("raw"))
    j = df.select(*reader_fields(), F.from_json(text_in, _AMAZON_RAW).alias("j"))
    g = lambda c: F.col(f"j.{c}")  # noqa: E731
    c = F.col
    user = F.coalesce(nonblank(g("user_id")), nonblank(g("reviewerID")))
    item = F.coalesce(nonblank(g("parent_asin")), nonblank(g("asin")))
    is_review = user.isNotNull() | g("unixReviewTime").isNotNull() | g("timestamp").isNotNull() | g("reviewText").isNotNull()
    is_2023 = g("timestamp").isNotNull() | g("user_id").isNotNull()
    raw_time = F.coalesce(nonblank(g("unixReviewTime")), nonblank(g("timestamp")))
    time_field = F.when(nonblank(g("unixReviewTime")).isNotNull(), F.lit("unixReviewTime")).otherwise(F.lit("timestamp"))
    ts = F.when(
        g("unixReviewTime").isNotNull(), epoch_seconds(to_long(g("unixReviewTime")))
    ).otherwise(epoch_millis(to_long(g("timestamp"))))
    rating_raw = F.coalesce(nonblank(g("overall")), nonblank(g("rating")))
    rating = to_double(rating_raw)
    text = F.coalesce(g("reviewText"), g("text"))
    votes_raw = F.coalesce(nonblank(g("vote")), nonblank(g("helpful_vote")))
    verified_raw = F.coalesce(nonblank(g("verified")), nonblank(g("verified_purchase")))
    category = F.regexp_extract(F.col("file"), r"(?:^|/)(?:meta_)?([A-Za-z0-9_&-]+?)(?:_5|_core)?\.json", 1)
    price_raw = nonblank(g("price"))
    out = j.select(
        "*",
        F.when(is_review, F.lit("bronze_amazon")).otherwise(F.lit("bronze_amazon_items")).alias("_t"),
        F.lit(None).cast("string").alias("native_id"),
        user.alias("user_id"),
        ts.alias("event_ts"),
        F.when(is_review, F.coalesce(g("summary"), g("title"))).otherwise(g("title")).alias("title"),
        text.alias("text"),
        item.alias("item_id"),
        nonblank(g("asin")).alias("asin"),
        rating.alias("rating"),
        to_bool(verified_raw).alias("verified"),
        to_long(F.regexp_replace(votes_raw, ",", "")).alias("helpful_votes"),
        F.when(category != "", category).alias("category"),
        F.when(is_2023, F.lit("reviews2023")).otherwise(F.lit("reviews2018")).alias("dataset"),
        # item metadata
        F.coalesce(nonblank(g("main_category")), nonblank(g("main_cat"))).alias("main_category"),
        F.coalesce(
            F.from_json(g("categories"), ArrayType(StringType())), F.from_json(g("category"), ArrayType(StringType()))
        ).alias("categories"),
        F.coalesce(nonblank(g("store")), nonblank(g("brand"))).alias("store"),
        to_double(F.regexp_replace(price_raw, r"[$,\s]", "")).alias("price"),
        _as_text(g("description"), nested_field(text_in, "description")).alias("description"),
        _as_text(F.coalesce(g("features"), g("feature")), F.when(g("features").isNotNull(), nested_field(text_in, "features"))
                 .otherwise(nested_field(text_in, "feature"))).alias("features"),
        to_double(g("average_rating")).alias("average_rating"),
        to_long(g("rating_number")).alias("rating_number"),
    )
    rid = F.when(
        c("_t") == "bronze_amazon",
        F.concat(F.lit("amazon:h:"), hash_id(c("user_id"), c("asin"), c("item_id"), c("event_ts"), c("text"))),
    ).otherwise(F.concat(F.lit("amazon_item:"), c("item_id")))
    out = out.withColumn("record_id", rid).withColumn("source", F.lit("amazon"))
    review = c("_t") == "bronze_amazon"
    text_nested = is_nested(c("text"), F.when(g("reviewText").isNotNull(), nested_field(text_in, "reviewText"))
                            .otherwise(nested_field(text_in, "text")))
    checks = (
        [(review & c("user_id").isNull(), "missing_user", None), (c("item_id").isNull(), "missing_item", None)]
        + [(review & cond, code, det) for cond, code, det in time_checks(raw_time, c("event_ts"), p, time_field)]
        + [
            (review & wrong_type(rating_raw, c("rating")), "wrong_type:rating", snippet("rating", rating_raw)),
            (review & ~c("rating").between(1, 5), "rating_out_of_range", snippet("rating", c("rating"))),
            (review & wrong_type(votes_raw, c("helpful_votes")), "wrong_type:helpful_votes", snippet("helpful_votes", votes_raw)),
            (review & wrong_type(verified_raw, c("verified")), "wrong_type:verified", snippet("verified", verified_raw)),
            (review & c("text").isNull() & c("title").isNull(), "missing_text", None),
            (review & text_nested, "wrong_type:text", snippet("text", c("text"))),
        ]
        + [(review & cond, code, det) for cond, code, det in text_checks(c("text"), p)]
    )
    return finish(out, c("_t"), checks, user.isNull() & item.isNull(), text_in)


SOURCE = SourceSpec(
    name="amazon",
    bronze_tables={"bronze_amazon": T.BRONZE_AMAZON, "bronze_amazon_items": T.BRONZE_AMAZON_ITEMS},
    normalize=normalize,
    streams=(
        StreamSpec(
            name="amazon",
            bronze_table="bronze_amazon",
            kind="review",
            carry=("item_id", "rating"),
            rules=(RuleSpec("amazon_min_length_v1", min_chars),),
            kcore_pool="silver_amazon_pool",
            kcore_rule="amazon_kcore_v1",
            # the item catalogue (titles for prompts, the candidate pool) goes to silver as it is
            side_tables=(SideTable("bronze_amazon_items", "silver_items", T.SILVER_ITEMS, ("item_id",)),),
        ),
    ),
)
