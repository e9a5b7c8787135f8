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
from lewin.schemas.config import BotRule, DeletedRule, DistinguishedRule
from lewin.udfs.bronze import (
    BronzeParams, epoch_seconds, finish, hash_id, is_nested, iso_time, nested_field, nonblank, reader_fields, snippet,
    strings, text_checks, time_checks, to_bool, to_long, wrong_type,
)
from lewin.udfs.rules import Check, any_pattern, min_chars, min_count, num, user_name_patterns, value_detail
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


# --- bots (reddit_bot_v2): a known-bot list plus what the account posts ---------------------------
KNOWN_BOTS_FILE = "reddit_bots.txt"
"""The shipped list of known bot accounts (package data of ``lewin.udfs``)."""


def _bot_names(text: str) -> list[str]:
    names = []
    for line in text.splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name.lower())
    return names


def known_bots(r: BotRule) -> list[str]:
    """The rule's bot accounts, lower case: ``known_bots_file`` (else the shipped list) plus
    ``extra_names``."""
    if r.known_bots_file is None:
        from importlib import resources

        text = resources.files("lewin.udfs").joinpath(KNOWN_BOTS_FILE).read_text(encoding="utf-8")
    else:
        from lewin.udfs import fs

        if not fs.exists(r.known_bots_file):
            raise ValueError(f"curate.rules.reddit_bot_v2.known_bots_file: {r.known_bots_file} does not exist")
        text = fs.read_bytes(r.known_bots_file).decode("utf-8-sig")
    extra = [n.strip().lower() for n in r.extra_names if n.strip()]
    return sorted(set(_bot_names(text)) | set(extra))


def signature_text(text: Column) -> Column:
    """The text as signatures are matched: Markdown superscript, emphasis and parentheses gone
    (``^^I ^^am ^^a ^^bot``, ``^(I am a bot)``, ``*I am a bot*`` -> "i am a bot"), whitespace
    collapsed, lower case."""
    t = F.regexp_replace(F.coalesce(text, F.lit("")), r"[\^*_~()\\]+", " ")
    return F.lower(F.trim(F.regexp_replace(t, r"\s+", " ")))


def _any_in(plain: Column, patterns: list[str]) -> Column:
    if not patterns:
        return F.lit(False)
    return F.coalesce(plain.rlike("(?i)" + "|".join(f"(?:{p})" for p in patterns)), F.lit(False))


def template_key(text: Column) -> Column:
    """What two texts share when one is a template of the other: lower case, ``u/`` mentions and
    numbers folded, punctuation and symbols as spaces."""
    t = F.lower(F.coalesce(text, F.lit("")))
    t = F.regexp_replace(t, r"/?\bu/[\w-]+", " u ")
    t = F.regexp_replace(t, r"[0-9]+", "0")
    t = F.regexp_replace(t, r"[\p{P}\p{S}\s]+", " ")
    return F.trim(t)


_BOT_STATS = ("_bot_records", "_bot_signed", "_bot_weak_signed", "_bot_template_threads", "_bot_repeated")


def account_stats(store, cfg, batch: DataFrame, bronze_table: str) -> DataFrame:
    """Per user, over every bronze submission and comment of the batch's users (what
    ``reddit_bot_v2`` reads): ``_bot_records``, ``_bot_signed`` (records signed as a bot),
    ``_bot_weak_signed`` ("beep boop" records), ``_bot_template_threads`` (the most threads one
    text of at least ``min_template_chars`` was posted in) and ``_bot_repeated`` (records whose
    text the account posted in two threads or more). The batch as it is when the rule is off."""
    r = cfg.curate.rules.reddit_bot_v2
    if not r.enabled:
        return batch
    users = batch.select("user_id").distinct()
    parts = []
    for table in ("bronze_reddit", "bronze_reddit_comments"):
        if not store.exists(table):
            continue
        rows = store.read(table)
        # a submission is its own thread; a comment belongs to its submission's
        thread = F.coalesce(F.col("link_id"), F.col("record_id")) if "link_id" in rows.columns else F.col("record_id")
        parts.append(rows.join(users, "user_id", "left_semi").select("user_id", "text", thread.alias("_thread")))
    if not parts:
        return batch.select("*", *[F.lit(0).cast("bigint").alias(c) for c in _BOT_STATS])
    rows = parts[0]
    for p in parts[1:]:
        rows = rows.unionByName(p)
    plain = signature_text(F.col("text"))
    signed = rows.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("_bot_records"),
        F.sum(_any_in(plain, r.signature_patterns).cast("bigint")).alias("_bot_signed"),
        F.sum(_any_in(plain, r.weak_signature_patterns).cast("bigint")).alias("_bot_weak_signed"),
    )
    keyed = rows.select("user_id", "_thread", template_key(F.col("text")).alias("_key"))
    templates = (keyed.where(F.length("_key") >= r.min_template_chars)
                 .groupBy("user_id", "_key").agg(F.countDistinct("_thread").alias("_n"), F.count(F.lit(1)).alias("_c"))
                 .groupBy("user_id").agg(F.max("_n").alias("_bot_template_threads"),
                                         F.sum(F.when(F.col("_n") >= 2, F.col("_c")).otherwise(0)).alias("_bot_repeated")))
    stats = signed.join(templates, "user_id", "left")
    return batch.join(stats, "user_id", "left")


def reddit_bot(r: BotRule) -> Check:
    """``reddit_bot_v2``: the detail names the signal that fired (``known_bot``, ``signature``,
    ``template``, ``bot_name+weak_signature``, ``bot_name+template``)."""
    user = F.col("user_id")
    names = known_bots(r)
    listed = F.coalesce(F.lower(user).isin(names), F.lit(False)) if names else F.lit(False)
    plain = signature_text(F.col("text"))
    sig = "(?i)" + "|".join(f"(?:{p})" for p in r.signature_patterns) if r.signature_patterns else None
    signed_here = _any_in(plain, r.signature_patterns)
    signed = num(F.col("_bot_signed"))
    signed_account = signed >= r.min_signed_records
    threads = num(F.col("_bot_template_threads"))
    share = num(F.col("_bot_repeated")) / F.greatest(num(F.col("_bot_records")), F.lit(1))
    mostly_repeats = share >= r.min_template_share
    template = (threads >= r.min_template_threads) & mostly_repeats
    bot_name = any_pattern(user, r.name_patterns) if r.name_patterns else F.lit(False)
    weak = bot_name & (num(F.col("_bot_weak_signed")) > 0)
    name_template = bot_name & (threads >= r.name_template_threads) & mostly_repeats
    how_often = F.concat(F.lit(" same text in "), threads.cast("string"), F.lit(" threads, "),
                         num(F.col("_bot_repeated")).cast("string"), F.lit(" of "),
                         num(F.col("_bot_records")).cast("string"), F.lit(" records repeated"))
    quoted = (F.concat(F.lit(' "'), F.regexp_extract(plain, sig, 0), F.lit('"')) if sig else F.lit(""))
    detail = (
        F.when(listed, F.concat(F.lit("known_bot: "), user))
        .when(signed_account, F.concat(F.lit("signature: "), signed.cast("string"), F.lit(" signed records")))
        .when(signed_here, F.concat(F.lit("signature:"), quoted))
        .when(template, F.concat(F.lit("template:"), how_often))
        .when(weak, F.concat(F.lit("bot_name+weak_signature: "), user))
        .otherwise(F.concat(F.lit("bot_name+template: "), user, F.lit(","), how_often))
    )
    return Check(listed | signed_account | signed_here | template | weak | name_template, detail)


_SHARED = (  # submissions and comments alike
    RuleSpec("reddit_deleted_v1", reddit_deleted),
    RuleSpec("reddit_system_user_v1", user_name_patterns),
    RuleSpec("reddit_bot_v1", user_name_patterns),  # off by default: names ending in "bot" are often people
    RuleSpec("reddit_bot_v2", reddit_bot),
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
            account_stats=account_stats,
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
            account_stats=account_stats,
        ),
    ),
)
