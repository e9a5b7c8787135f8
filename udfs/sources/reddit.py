"""Reddit: Pushshift submissions and comments (JSON lines, monthly ``RS_``/``RC_`` dumps, CSV
exports, Parquet), PRAW exports, and the paper's own dump, ``HuggingFaceGECLM/REDDIT_submissions``
(Parquet, one folder per subreddit — or ``data/<subreddit>-00000-of-00010-<hash>.parquet`` files —
without a ``subreddit`` column: the subreddit is taken from the folder or file name).

One ingest source, two bronze tables (``bronze_reddit`` for submissions, ``bronze_reddit_comments``
for comments) and two curation streams: ``reddit`` (the paper's submission filter) and
``reddit_comments`` (the personalized-commenting task's histories: the shared deleted/bot/moderator/
system-user rules plus their own score and length minimums). Both reach silver as source
``reddit``: a user's submissions and comments are one user.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lewin.schemas import tables as T
from lewin.schemas.config import DeletedRule, DistinguishedRule
from lewin.udfs.bronze import (
    BronzeParams, epoch_seconds, finish, hash_id, is_nested, iso_time, nested_field, nonblank, reader_fields, snippet,
    strings, text_checks, time_checks, to_bool, to_long, wrong_type,
)
from lewin.udfs.rules import Check, min_chars, min_count, user_name_patterns, value_detail
from lewin.udfs.sources.base import FileFormats, RuleSpec, SourceSpec, StreamSpec

# --- Reddit ---------------------------------------------------------------------------------------
_REDDIT_RAW = strings(
    "id", "name", "author", "created_utc", "created", "score", "num_comments", "selftext", "title",
    "subreddit", "subreddit_name_prefixed", "distinguished", "stickied", "over_18", "is_self", "url",
    "removed_by_category", "body", "link_id", "parent_id",
)

_SUBREDDIT = r"[A-Za-z0-9][A-Za-z0-9_]{1,20}"
_NOT_SUBREDDITS = ("data", "train", "test", "validation", "default")  # dataset folders, not subreddits


def subreddit_from_path(file: Column) -> Column:
    """The subreddit a Parquet file's path names: a Hugging Face shard's prefix
    (``data/AskReddit-00003-of-00010-<hash>.parquet``), else the folder it is in
    (``…/AskReddit/0000.parquet``); null for other files and for dataset folder names."""
    name = F.regexp_extract(file, r"([^/\\]+)$", 1)
    shard = F.regexp_extract(name, rf"^({_SUBREDDIT})-[0-9]{{5}}-of-[0-9]{{5}}(-[0-9A-Fa-f]+)?\.parquet$", 1)
    folder = F.regexp_extract(file, rf"(^|[/\\])({_SUBREDDIT})[/\\][^/\\]+$", 2)
    usable = lambda c: F.when((c != "") & ~F.lower(c).isin(*_NOT_SUBREDDITS), c)  # noqa: E731
    return F.when(F.lower(file).endswith(".parquet"), F.coalesce(usable(shard), usable(folder)))


def normalize(df: DataFrame, p: BronzeParams) -> DataFrame:
    text_in = F.coalesce(F.col("payload"), F.col("raw"))
    j = df.select(*reader_fields(), F.from_json(text_in, _REDDIT_RAW).alias("j"))
    g = lambda c: F.col(f"j.{c}")  # noqa: E731
    is_comment = g("body").isNotNull() | g("link_id").isNotNull()
    native = F.coalesce(nonblank(g("id")), F.regexp_replace(nonblank(g("name")), r"^t[13]_", ""))
    raw_time = F.coalesce(nonblank(g("created_utc")), nonblank(g("created")))
    time_field = F.when(nonblank(g("created_utc")).isNotNull(), F.lit("created_utc")).otherwise(F.lit("created"))
    # epoch seconds (Pushshift), else an ISO time (a Parquet timestamp column, framed as ISO text)
    ts = F.coalesce(epoch_seconds(to_long(raw_time)), iso_time(raw_time))
    text = F.when(is_comment, g("body")).otherwise(g("selftext"))
    user = nonblank(g("author"))
    score, num_comments = to_long(g("score")), to_long(g("num_comments"))
    out = j.select(
        "*",
        F.when(is_comment, F.lit("bronze_reddit_comments")).otherwise(F.lit("bronze_reddit")).alias("_t"),
        native.alias("native_id"),
        user.alias("user_id"),
        ts.alias("event_ts"),
        F.when(is_comment, F.lit(None)).otherwise(g("title")).alias("title"),
        text.alias("text"),
        F.coalesce(
            nonblank(g("subreddit")),
            nonblank(F.regexp_extract(g("subreddit_name_prefixed"), rf"^/?r/({_SUBREDDIT})$", 1)),
            subreddit_from_path(F.col("file")),
        ).alias("subreddit"),
        score.alias("score"),
        num_comments.alias("num_comments"),
        nonblank(g("distinguished")).alias("distinguished"),
        to_bool(g("stickied")).alias("stickied"),
        to_bool(g("over_18")).alias("over_18"),
        to_bool(g("is_self")).alias("is_self"),
        nonblank(g("url")).alias("url"),
        nonblank(g("removed_by_category")).alias("removed_by_category"),
        nonblank(g("link_id")).alias("link_id"),
        nonblank(g("parent_id")).alias("parent_id"),
    )
    c = F.col
    rid = F.when(
        c("native_id").isNotNull(),
        F.concat(F.lit("reddit:"), F.when(is_comment, F.lit("t1_")).otherwise(F.lit("t3_")), c("native_id")),
    ).otherwise(F.concat(F.lit("reddit:h:"), hash_id(c("user_id"), c("event_ts"), c("title"), c("text"))))
    out = out.withColumn("record_id", rid).withColumn("source", F.lit("reddit"))
    # a value that only looks nested ("[2021] My year …") is text: the record's own field decides
    text_nested = is_nested(
        c("text"), F.when(is_comment, nested_field(text_in, "body")).otherwise(nested_field(text_in, "selftext")))
    title_nested = is_nested(c("title"), nested_field(text_in, "title"))
    bools = [(n, nonblank(g(n))) for n in ("stickied", "over_18", "is_self")]
    checks = (
        [
            (c("user_id").isNull(), "missing_user", None),
            (is_nested(c("user_id"), nested_field(text_in, "author")), "wrong_type:author", snippet("author", c("user_id"))),
        ]
        + time_checks(raw_time, c("event_ts"), p, time_field)
        + [
            (wrong_type(g("score"), c("score")), "wrong_type:score", snippet("score", g("score"))),
            (
                wrong_type(g("num_comments"), c("num_comments")),
                "wrong_type:num_comments",
                snippet("num_comments", g("num_comments")),
            ),
            (c("num_comments") < 0, "negative_count:num_comments", snippet("num_comments", c("num_comments"))),
        ]
        + [(wrong_type(v, c(n)), f"wrong_type:{n}", snippet(n, v)) for n, v in bools]
        + [
            (c("title").isNull() & c("text").isNull(), "missing_text", None),
            (text_nested, "wrong_type:text", snippet("text", c("text"))),
            (title_nested, "wrong_type:title", snippet("title", c("title"))),
        ]
        + text_checks(c("text"), p)
    )
    key_null = user.isNull() & raw_time.isNull()
    return finish(out, c("_t"), checks, key_null, text_in)


# --- curation rules ------------------------------------------------------------------------------
def reddit_deleted(r: DeletedRule) -> Check:
    markers = [m.lower() for m in r.markers]
    author = F.lower(F.col("user_id")).isin(markers)
    text = F.lower(F.trim(F.col("text"))).isin(markers)
    removed = F.col("removed_by_category").isNotNull()
    return Check(
        author | text | removed,
        F.when(author, F.lit("author deleted")).when(text, F.concat(F.lit("text="), F.col("text")))
        .otherwise(F.concat(F.lit("removed_by="), F.col("removed_by_category"))),
    )


def reddit_moderator(r: DistinguishedRule) -> Check:
    d = F.lower(F.col("distinguished"))
    return Check(F.coalesce(d.isin([v.lower() for v in r.values]), F.lit(False)), value_detail("distinguished", d))


_SHARED = (  # submissions and comments alike
    RuleSpec("reddit_deleted_v1", reddit_deleted),
    RuleSpec("reddit_system_user_v1", user_name_patterns),
    RuleSpec("reddit_bot_v1", user_name_patterns),
    RuleSpec("reddit_moderator_v1", reddit_moderator),
)

SOURCE = SourceSpec(
    name="reddit",
    bronze_tables={"bronze_reddit": T.BRONZE_REDDIT, "bronze_reddit_comments": T.BRONZE_REDDIT_COMMENTS},
    normalize=normalize,
    formats=FileFormats(
        # Pushshift monthly dumps: RS_2019-01.zst / RC_2011-01.bz2 hold JSON lines
        name_patterns=((r"^R[SC]_\d{4}-\d{2}$", "jsonl"),),
    ),
    streams=(
        StreamSpec(
            name="reddit",
            bronze_table="bronze_reddit",
            kind="submission",
            carry=("subreddit",),
            rules=_SHARED + (
                RuleSpec("reddit_min_score_v1", min_count("score")),
                RuleSpec("reddit_min_comments_v1", min_count("num_comments")),
                RuleSpec("reddit_min_length_v1", min_chars),
            ),
        ),
        StreamSpec(
            name="reddit_comments",
            bronze_table="bronze_reddit_comments",
            kind="comment",
            carry=("subreddit", "parent_id"),  # parent_id: what the comment answers (personalized commenting)
            rules=_SHARED + (
                RuleSpec("reddit_comment_min_score_v1", min_count("score")),
                RuleSpec("reddit_comment_min_length_v1", min_chars),
            ),
            # the shared rules read submission columns (removed_by_category …): null for comments
            fill_missing_from="bronze_reddit",
        ),
    ),
)
