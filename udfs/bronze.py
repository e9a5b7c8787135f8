"""Reader rows -> typed bronze rows, per source, with Spark built-in expressions only.

``normalize(df, source, params)`` takes reader output (``READER_OUTPUT``) and returns one wide
DataFrame: every column of the source's bronze table(s), plus

* ``_table``  — the logical bronze table the row belongs to (a source can feed two: Reddit
  submissions and comments, Amazon reviews and item metadata), null for blank lines;
* ``_reason`` / ``_detail`` — why the row is quarantined (null when it is good).

Reasons are stable codes (``malformed_json``, ``missing_user``, ``wrong_type:score`` …). Only the
first failing check is reported. All values are parsed as strings first and cast with ``try_cast``
so a wrong type becomes a reason instead of a silent null; this also makes the result identical on
Sail, classic Spark and Databricks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from lewin.schemas import tables as T

BRONZE_TABLES_BY_SOURCE = {
    "reddit": ("bronze_reddit", "bronze_reddit_comments"),
    "twitter": ("bronze_twitter",),
    "blogger": ("bronze_blogger",),
    "amazon": ("bronze_amazon", "bronze_amazon_items"),
}


@dataclass(frozen=True)
class BronzeParams:
    run_id: str
    run_started: datetime
    min_event_time: datetime
    max_event_time: datetime
    max_text_chars: int


def _strings(*names: str) -> StructType:
    return StructType([StructField(n, StringType()) for n in names])


def _s(col: Column) -> Column:
    """Trim; empty -> null."""
    t = F.trim(col)
    return F.when(t == "", None).otherwise(col)


def _long(col: Column) -> Column:
    return col.try_cast("double").try_cast("bigint")


def _double(col: Column) -> Column:
    return col.try_cast("double")


def _epoch_seconds(col: Column) -> Column:
    """Epoch seconds -> timestamp; values no calendar can hold become null (not an overflow)."""
    return F.when(col.between(-(10**11), 10**11), F.timestamp_seconds(col))


def _epoch_millis(col: Column) -> Column:
    return F.when(col.between(-(10**14), 10**14), F.timestamp_millis(col))


def _bool(col: Column) -> Column:
    low = F.lower(F.trim(col))
    return (
        F.when(low.isin("true", "t", "1", "yes", "y"), F.lit(True))
        .when(low.isin("false", "f", "0", "no", "n"), F.lit(False))
        .otherwise(F.lit(None).cast(BooleanType()))
    )


def _is_nested(col: Column) -> Column:
    """A JSON object/array where a scalar was expected (from_json keeps it as JSON text).
    "[removed]" is a string that merely looks like one: it must also parse as JSON. The JSON
    check runs only for values starting with a bracket (CASE evaluates lazily; AND may not)."""
    looks = F.startswith(F.ltrim(col), F.lit("[")) | F.startswith(F.ltrim(col), F.lit("{"))
    parses = F.json_array_length(col).isNotNull() | F.json_object_keys(col).isNotNull()
    return F.when(looks, parses).otherwise(F.lit(False))


def _hash_id(*cols: Column) -> Column:
    return F.substring(F.sha2(F.concat_ws("\u001f", *[F.coalesce(c.cast("string"), F.lit("")) for c in cols]), 256), 1, 32)


def _wrong_type(raw: Column, parsed: Column) -> Column:
    return raw.isNotNull() & parsed.isNull()


def _first_reason(checks: list[tuple[Column, str, Column | str | None]]) -> tuple[Column, Column]:
    """(reason, detail) of the first check whose condition holds."""
    reason = None
    detail = None
    for cond, code, det in reversed(checks):
        d = F.lit(det) if isinstance(det, str) or det is None else det
        reason = F.when(cond, F.lit(code)).otherwise(reason if reason is not None else F.lit(None).cast("string"))
        detail = F.when(cond, d.cast("string")).otherwise(detail if detail is not None else F.lit(None).cast("string"))
    return reason, detail


def _json_shape_reason(text: Column) -> Column:
    """Evaluated only for rows whose key fields all came back null: why?"""
    return (
        F.when(F.json_object_keys(text).isNotNull(), F.lit(None).cast("string"))
        .when(F.get_json_object(text, "$").isNull(), F.lit("malformed_json"))
        .otherwise(F.lit("not_a_json_object"))
    )


def _snippet(name: str, col: Column) -> Column:
    return F.concat(F.lit(f"{name}="), F.substring(col.cast("string"), 1, 80))


def _time_checks(raw_time: Column, ts: Column, p: BronzeParams) -> list:
    return [
        (raw_time.isNull(), "missing_time", None),
        (ts.isNull(), "unparseable_time", _snippet("time", raw_time)),
        (
            (ts < F.lit(p.min_event_time)) | (ts > F.lit(p.max_event_time)),
            "time_out_of_range",
            _snippet("time", ts),
        ),
    ]


def _text_checks(text: Column, p: BronzeParams) -> list:
    return [(F.length(text) > p.max_text_chars, "text_too_long", F.concat(F.lit("chars="), F.length(text).cast("string")))]


def _lineage(p: BronzeParams) -> list[Column]:
    return [
        F.col("file").alias("_file"),
        F.col("line").alias("_line"),
        F.lit(p.run_id).alias("_run_id"),
        F.lit(p.run_started).cast("timestamp").alias("_ingested_at"),
    ]


def _reader_fields() -> list[Column]:
    return [F.col(c) for c in ("file", "line", "item", "raw", "payload", "error", "detail")]


def _finish(df: DataFrame, table: Column, checks: list, key_fields_null: Column, text: Column) -> DataFrame:
    """Attach _table/_reason/_detail: reader errors first, then JSON shape, then field checks."""
    shape = F.when(key_fields_null, _json_shape_reason(text))
    all_checks = [
        (F.col("error").isNotNull(), "__reader__", None),
        (shape.isNotNull(), "__shape__", None),
    ] + checks
    reason, detail = _first_reason(all_checks)
    reason = (
        F.when(reason == "__reader__", F.col("error"))
        .when(reason == "__shape__", shape)
        .otherwise(reason)
    )
    detail = F.when(F.col("error").isNotNull(), F.col("detail")).otherwise(detail)
    return df.withColumn("_reason", reason).withColumn("_detail", detail).withColumn(
        "_table", F.when(F.col("error") == "blank_line", F.lit(None).cast("string")).otherwise(table)
    )


# --- Reddit ---------------------------------------------------------------------------------------
_REDDIT_RAW = _strings(
    "id", "name", "author", "created_utc", "created", "score", "num_comments", "selftext", "title",
    "subreddit", "distinguished", "stickied", "over_18", "is_self", "url", "removed_by_category",
    "body", "link_id", "parent_id",
)


def _reddit(df: DataFrame, p: BronzeParams) -> DataFrame:
    text_in = F.coalesce(F.col("payload"), F.col("raw"))
    j = df.select(*_reader_fields(), F.from_json(text_in, _REDDIT_RAW).alias("j"))
    g = lambda c: F.col(f"j.{c}")  # noqa: E731
    is_comment = g("body").isNotNull() | g("link_id").isNotNull()
    native = F.coalesce(_s(g("id")), F.regexp_replace(_s(g("name")), r"^t[13]_", ""))
    raw_time = F.coalesce(_s(g("created_utc")), _s(g("created")))
    ts = _epoch_seconds(_long(raw_time))
    text = F.when(is_comment, g("body")).otherwise(g("selftext"))
    user = _s(g("author"))
    score, num_comments = _long(g("score")), _long(g("num_comments"))
    out = j.select(
        "*",
        F.when(is_comment, F.lit("bronze_reddit_comments")).otherwise(F.lit("bronze_reddit")).alias("_t"),
        native.alias("native_id"),
        user.alias("user_id"),
        ts.alias("event_ts"),
        F.when(is_comment, F.lit(None)).otherwise(g("title")).alias("title"),
        text.alias("text"),
        _s(g("subreddit")).alias("subreddit"),
        score.alias("score"),
        num_comments.alias("num_comments"),
        _s(g("distinguished")).alias("distinguished"),
        _bool(g("stickied")).alias("stickied"),
        _bool(g("over_18")).alias("over_18"),
        _bool(g("is_self")).alias("is_self"),
        _s(g("url")).alias("url"),
        _s(g("removed_by_category")).alias("removed_by_category"),
        _s(g("link_id")).alias("link_id"),
        _s(g("parent_id")).alias("parent_id"),
    )
    c = F.col
    rid = F.when(
        c("native_id").isNotNull(),
        F.concat(F.lit("reddit:"), F.when(is_comment, F.lit("t1_")).otherwise(F.lit("t3_")), c("native_id")),
    ).otherwise(F.concat(F.lit("reddit:h:"), _hash_id(c("user_id"), c("event_ts"), c("title"), c("text"))))
    out = out.withColumn("record_id", rid).withColumn("source", F.lit("reddit"))
    checks = (
        [
            (c("user_id").isNull(), "missing_user", None),
            (_is_nested(c("user_id")), "wrong_type:author", _snippet("author", c("user_id"))),
        ]
        + _time_checks(raw_time, c("event_ts"), p)
        + [
            (_wrong_type(g("score"), c("score")), "wrong_type:score", _snippet("score", g("score"))),
            (
                _wrong_type(g("num_comments"), c("num_comments")),
                "wrong_type:num_comments",
                _snippet("num_comments", g("num_comments")),
            ),
            (c("num_comments") < 0, "negative_count:num_comments", _snippet("num_comments", c("num_comments"))),
            (c("title").isNull() & c("text").isNull(), "missing_text", None),
            (_is_nested(c("text")) | _is_nested(c("title")), "wrong_type:text", _snippet("text", c("text"))),
        ]
        + _text_checks(c("text"), p)
    )
    key_null = user.isNull() & raw_time.isNull()
    return _finish(out, c("_t"), checks, key_null, text_in)


# --- Twitter (payload built by the reader) ------------------------------------------------------------
_TWITTER_PAYLOAD = StructType(
    [StructField(n, StringType()) for n in (
        "id", "author_id", "created_at_raw", "text", "lang", "source_app", "user_name",
        "user_display_name", "user_description", "user_url", "user_verified_type", "api_format",
    )]
    + [StructField(n, LongType()) for n in (
        "created_at_ms", "retweet_count", "like_count", "reply_count", "quote_count", "n_urls",
        "n_hashtags", "n_mentions", "user_followers", "user_following", "user_tweet_count",
    )]
    + [StructField(n, BooleanType()) for n in ("is_retweet", "is_quote", "is_reply", "user_verified")]
    + [StructField("edit_history_ids", ArrayType(StringType()))]
)


def _twitter(df: DataFrame, p: BronzeParams) -> DataFrame:
    j = df.select(*_reader_fields(), F.from_json(F.col("payload"), _TWITTER_PAYLOAD).alias("j"))
    g = lambda c: F.col(f"j.{c}")  # noqa: E731
    c = F.col
    ts = _epoch_millis(g("created_at_ms"))
    cols = [
        _s(g("id")).alias("native_id"),
        _s(g("author_id")).alias("user_id"),
        ts.alias("event_ts"),
        F.lit(None).cast("string").alias("title"),
        g("text").alias("text"),
        g("api_format").alias("api_format"),
        g("lang").alias("lang"),
        g("is_retweet").alias("is_retweet"),
        g("is_quote").alias("is_quote"),
        g("is_reply").alias("is_reply"),
        g("source_app").alias("source_app"),
    ] + [g(n).alias(n) for n in (
        "retweet_count", "like_count", "reply_count", "quote_count",
    )] + [g(n).cast("int").alias(n) for n in ("n_urls", "n_hashtags", "n_mentions")] + [
        g(n).alias(n) for n in (
            "user_name", "user_display_name", "user_description", "user_url", "user_verified",
            "user_verified_type", "user_followers", "user_following", "user_tweet_count", "edit_history_ids",
        )
    ]
    out = j.select("*", *cols)
    rid = F.when(c("native_id").isNotNull(), F.concat(F.lit("twitter:"), c("native_id"))).otherwise(
        F.concat(F.lit("twitter:h:"), _hash_id(c("user_id"), c("event_ts"), c("text")))
    )
    out = out.withColumn("record_id", rid).withColumn("source", F.lit("twitter"))
    checks = (
        [(c("user_id").isNull(), "missing_user", None)]
        + _time_checks(g("created_at_raw"), c("event_ts"), p)
        + [(c("text").isNull(), "missing_text", None)]
        + _text_checks(c("text"), p)
    )
    return _finish(out, F.lit("bronze_twitter"), checks, F.lit(False), F.col("payload"))


# --- Blogger ------------------------------------------------------------------------------------------
_BLOG_RAW = _strings(
    "id", "author_id", "gender", "age", "topic", "job", "industry", "sign", "starsign", "date", "text",
)
# The Blog Authorship Corpus writes dates as "14,May,2004" — in the blogger's own language.
_MONTHS = {
    **{m: i for i, m in enumerate(
        ["january", "february", "march", "april", "may", "june", "july", "august", "september",
         "october", "november", "december"], 1)},
    **{m: i for i, m in enumerate(
        ["janvier", "fevrier", "mars", "avril", "mai", "juin", "juillet", "aout", "septembre",
         "octobre", "novembre", "decembre"], 1)},
    **{m: i for i, m in enumerate(
        ["januar", "februar", "marz", "april", "mai", "juni", "juli", "august", "september",
         "oktober", "november", "dezember"], 1)},
    **{m: i for i, m in enumerate(
        ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre",
         "octubre", "noviembre", "diciembre"], 1)},
    **{m: i for i, m in enumerate(
        ["janeiro", "fevereiro", "marco", "abril", "maio", "junho", "julho", "agosto", "setembro",
         "outubro", "novembro", "dezembro"], 1)},
    **{m: i for i, m in enumerate(
        ["gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto", "settembre",
         "ottobre", "novembre", "dicembre"], 1)},
    **{m: i for i, m in enumerate(
        ["januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september",
         "oktober", "november", "december"], 1)},
}


def _blog_date(raw: Column) -> Column:
    parts = F.split(raw, ",")
    month_name = F.translate(F.lower(F.trim(parts.getItem(1))), "éûäçôü", "euacou")
    month = F.create_map(*[x for k, v in _MONTHS.items() for x in (F.lit(k), F.lit(v))])[month_name]
    day = F.trim(parts.getItem(0)).try_cast("int")
    year = F.trim(parts.getItem(2)).try_cast("int")
    ymd = F.concat_ws("-", year.cast("string"), F.lpad(month.cast("string"), 2, "0"), F.lpad(day.cast("string"), 2, "0"))
    # try_to_timestamp: an impossible date (31 February) becomes null, not an error under ANSI mode
    dmy = F.when(month.isNotNull() & year.between(1900, 2100), F.try_to_timestamp(ymd, F.lit("yyyy-MM-dd")))
    iso = F.try_to_timestamp(F.regexp_extract(raw, r"^(\d{4}-\d{2}-\d{2})", 1), F.lit("yyyy-MM-dd"))
    return F.coalesce(iso, dmy).cast("timestamp")


def _blogger(df: DataFrame, p: BronzeParams) -> DataFrame:
    text_in = F.coalesce(F.col("payload"), F.col("raw"))
    j = df.select(*_reader_fields(), F.from_json(text_in, _BLOG_RAW).alias("j"))
    g = lambda c: F.col(f"j.{c}")  # noqa: E731
    c = F.col
    # JSONL variants carry a post id plus author_id; the CSV/XML corpus has only the blogger id.
    has_author = _s(g("author_id")).isNotNull()
    user = F.coalesce(_s(g("author_id")), _s(g("id")))
    raw_time = _s(g("date"))
    age = _long(g("age")).cast("int")
    out = j.select(
        "*",
        F.when(has_author, _s(g("id"))).alias("native_id"),
        user.alias("user_id"),
        _blog_date(raw_time).alias("event_ts"),
        F.lit(None).cast("string").alias("title"),
        g("text").alias("text"),
        F.lower(_s(g("gender"))).alias("gender"),
        age.alias("age"),
        F.coalesce(_s(g("topic")), _s(g("job")), _s(g("industry"))).alias("industry"),
        F.coalesce(_s(g("sign")), _s(g("starsign"))).alias("star_sign"),
    )
    rid = F.when(c("native_id").isNotNull(), F.concat(F.lit("blogger:"), c("native_id"))).otherwise(
        F.concat(F.lit("blogger:h:"), _hash_id(c("user_id"), raw_time, c("text")))
    )
    out = out.withColumn("record_id", rid).withColumn("source", F.lit("blogger"))
    checks = (
        [(c("user_id").isNull(), "missing_user", None)]
        + _time_checks(raw_time, c("event_ts"), p)
        + [
            (_wrong_type(g("age"), c("age")), "wrong_type:age", _snippet("age", g("age"))),
            (c("text").isNull(), "missing_text", None),
            (_is_nested(c("text")), "wrong_type:text", _snippet("text", c("text"))),
        ]
        + _text_checks(c("text"), p)
    )
    return _finish(out, F.lit("bronze_blogger"), checks, user.isNull() & raw_time.isNull(), text_in)


# --- Amazon: Reviews 2018 / 2023 and item metadata ----------------------------------------------------
_AMAZON_RAW = _strings(
    # reviews 2018
    "reviewerID", "asin", "overall", "reviewText", "summary", "unixReviewTime", "verified", "vote",
    # reviews 2023
    "user_id", "parent_asin", "rating", "title", "text", "timestamp", "helpful_vote", "verified_purchase",
    # item metadata (2018 + 2023)
    "main_cat", "main_category", "category", "categories", "brand", "store", "price", "description",
    "feature", "features", "average_rating", "rating_number",
)


def _as_text(col: Column) -> Column:
    """A JSON array of strings -> its items joined by newlines; a plain string stays as is."""
    arr = F.from_json(col, ArrayType(StringType()))
    return F.when(_is_nested(col), F.array_join(arr, "\n")).otherwise(col)


def _amazon(df: DataFrame, p: BronzeParams) -> DataFrame:
    text_in = F.coalesce(F.col("payload"), F.col("raw"))
    j = df.select(*_reader_fields(), F.from_json(text_in, _AMAZON_RAW).alias("j"))
    g = lambda c: F.col(f"j.{c}")  # noqa: E731
    c = F.col
    user = F.coalesce(_s(g("user_id")), _s(g("reviewerID")))
    item = F.coalesce(_s(g("parent_asin")), _s(g("asin")))
    is_review = user.isNotNull() | g("unixReviewTime").isNotNull() | g("timestamp").isNotNull() | g("reviewText").isNotNull()
    is_2023 = g("timestamp").isNotNull() | g("user_id").isNotNull()
    raw_time = F.coalesce(_s(g("unixReviewTime")), _s(g("timestamp")))
    ts = F.when(
        g("unixReviewTime").isNotNull(), _epoch_seconds(_long(g("unixReviewTime")))
    ).otherwise(_epoch_millis(_long(g("timestamp"))))
    rating_raw = F.coalesce(_s(g("overall")), _s(g("rating")))
    rating = _double(rating_raw)
    text = F.coalesce(g("reviewText"), g("text"))
    votes_raw = F.coalesce(_s(g("vote")), _s(g("helpful_vote")))
    category = F.regexp_extract(F.col("file"), r"(?:^|/)(?:meta_)?([A-Za-z0-9_&-]+?)(?:_5|_core)?\.json", 1)
    price_raw = _s(g("price"))
    out = j.select(
        "*",
        F.when(is_review, F.lit("bronze_amazon")).otherwise(F.lit("bronze_amazon_items")).alias("_t"),
        F.lit(None).cast("string").alias("native_id"),
        user.alias("user_id"),
        ts.alias("event_ts"),
        F.when(is_review, F.coalesce(g("summary"), g("title"))).otherwise(g("title")).alias("title"),
        text.alias("text"),
        item.alias("item_id"),
        _s(g("asin")).alias("asin"),
        rating.alias("rating"),
        F.coalesce(_bool(g("verified")), _bool(g("verified_purchase"))).alias("verified"),
        _long(F.regexp_replace(votes_raw, ",", "")).alias("helpful_votes"),
        F.when(category != "", category).alias("category"),
        F.when(is_2023, F.lit("reviews2023")).otherwise(F.lit("reviews2018")).alias("dataset"),
        # item metadata
        F.coalesce(_s(g("main_category")), _s(g("main_cat"))).alias("main_category"),
        F.coalesce(
            F.from_json(g("categories"), ArrayType(StringType())), F.from_json(g("category"), ArrayType(StringType()))
        ).alias("categories"),
        F.coalesce(_s(g("store")), _s(g("brand"))).alias("store"),
        _double(F.regexp_replace(price_raw, r"[$,\s]", "")).alias("price"),
        _as_text(g("description")).alias("description"),
        _as_text(F.coalesce(g("features"), g("feature"))).alias("features"),
        _double(g("average_rating")).alias("average_rating"),
        _long(g("rating_number")).alias("rating_number"),
    )
    rid = F.when(
        c("_t") == "bronze_amazon",
        F.concat(F.lit("amazon:h:"), _hash_id(c("user_id"), c("asin"), c("item_id"), c("event_ts"), c("text"))),
    ).otherwise(F.concat(F.lit("amazon_item:"), c("item_id")))
    out = out.withColumn("record_id", rid).withColumn("source", F.lit("amazon"))
    review = c("_t") == "bronze_amazon"
    checks = (
        [(review & c("user_id").isNull(), "missing_user", None), (c("item_id").isNull(), "missing_item", None)]
        + [(review & cond, code, det) for cond, code, det in _time_checks(raw_time, c("event_ts"), p)]
        + [
            (review & _wrong_type(rating_raw, c("rating")), "wrong_type:rating", _snippet("rating", rating_raw)),
            (review & ~c("rating").between(1, 5), "rating_out_of_range", _snippet("rating", c("rating"))),
            (review & c("text").isNull() & c("title").isNull(), "missing_text", None),
            (review & _is_nested(c("text")), "wrong_type:text", _snippet("text", c("text"))),
        ]
        + [(review & cond, code, det) for cond, code, det in _text_checks(c("text"), p)]
    )
    return _finish(out, c("_t"), checks, user.isNull() & item.isNull(), text_in)


_NORMALIZERS = {"reddit": _reddit, "twitter": _twitter, "blogger": _blogger, "amazon": _amazon}


def normalize(df: DataFrame, source: str, params: BronzeParams) -> DataFrame:
    """Reader rows -> wide bronze rows with ``_table``, ``_reason``, ``_detail`` and lineage."""
    if source not in _NORMALIZERS:
        raise ValueError(f"unknown source {source!r}; known: {sorted(_NORMALIZERS)}")
    out = _NORMALIZERS[source](df, params)
    return out.select("*", *_lineage(params))


def wide_columns(source: str) -> list[str]:
    """Columns ``normalize`` guarantees for ``source`` (every column of its bronze tables)."""
    names: list[str] = []
    for table in BRONZE_TABLES_BY_SOURCE[source]:
        for f in T.BRONZE_TABLES[table].fields:
            if f.name not in names:
                names.append(f.name)
    return names


def table_rows(wide: DataFrame, table: str) -> DataFrame:
    """The good rows of one bronze table, cast to its declared schema."""
    schema = T.BRONZE_TABLES[table]
    rows = wide.where((F.col("_table") == table) & F.col("_reason").isNull())
    return rows.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
