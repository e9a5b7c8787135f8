"""Twitter: API v2 response pages (``data[]`` + ``includes.users``), streamed v2 results,
twarc-flattened v2 tweets, API v1.1 tweets.

The reader's expander turns each JSON record into one canonical payload per tweet (or a quarantine
row: error pages, compliance events, objects that are not tweets); bronze parses that payload.
Curation drops retweets, quotes, ads and brand accounts — the last from account-level shares over
each user's bronze tweets (``account_stats``).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import orjson
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, LongType, StringType, StructField, StructType

from lewin.schemas import tables as T
from lewin.schemas.config import AdContentRule, BrandAccountRule
from lewin.udfs.bronze import (
    BronzeParams, epoch_millis, finish, hash_id, nonblank, reader_fields, text_checks, time_checks,
)
from lewin.udfs.readers import Batcher
from lewin.udfs.rules import Check, any_pattern, count_matches, flag, min_chars, num
from lewin.udfs.sources.base import FileFormats, RuleSpec, SourceSpec, StreamSpec


# --- reading: API v2 pages, twarc-flattened v2 tweets, API v1.1 tweets ------------------------------
def _twitter_time_ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    for fmt in (None, "%a %b %d %H:%M:%S %z %Y"):
        try:
            if fmt is None:
                dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            else:
                dt = datetime.strptime(value, fmt)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            return int(dt.timestamp() * 1000)
        except ValueError:
            continue
    return None


_TAG = re.compile(r"<[^>]+>")


def _count(entities: Any, key: str) -> int:
    if isinstance(entities, dict) and isinstance(entities.get(key), list):
        return len(entities[key])
    return 0


def _canonical_v2(t: dict, user: dict | None, api_format: str) -> dict:
    refs = t.get("referenced_tweets") or []
    ref_types = {r.get("type") for r in refs if isinstance(r, dict)}
    pm = t.get("public_metrics") or {}
    ent = t.get("entities") or {}
    u = user or {}
    upm = u.get("public_metrics") or {}
    note = t.get("note_tweet")
    text = note.get("text") if isinstance(note, dict) and note.get("text") else t.get("text")
    return {
        "id": t.get("id"),
        "author_id": t.get("author_id") or u.get("id"),
        "created_at_ms": _twitter_time_ms(t.get("created_at")),
        "created_at_raw": t.get("created_at"),
        "text": text,
        "lang": t.get("lang"),
        "is_retweet": "retweeted" in ref_types,
        "is_quote": "quoted" in ref_types,
        "is_reply": "replied_to" in ref_types or t.get("in_reply_to_user_id") is not None,
        "source_app": t.get("source"),
        "retweet_count": pm.get("retweet_count"),
        "like_count": pm.get("like_count"),
        "reply_count": pm.get("reply_count"),
        "quote_count": pm.get("quote_count"),
        "n_urls": _count(ent, "urls"),
        "n_hashtags": _count(ent, "hashtags") + _count(ent, "cashtags"),
        "n_mentions": _count(ent, "mentions"),
        "user_name": u.get("username"),
        "user_display_name": u.get("name"),
        "user_description": u.get("description"),
        "user_url": u.get("url"),
        "user_verified": u.get("verified"),
        "user_verified_type": u.get("verified_type"),
        "user_followers": upm.get("followers_count"),
        "user_following": upm.get("following_count"),
        "user_tweet_count": upm.get("tweet_count"),
        "edit_history_ids": t.get("edit_history_tweet_ids"),
        "api_format": api_format,
    }


def _canonical_v1(t: dict) -> dict:
    u = t.get("user") or {}
    ext = t.get("extended_tweet") or {}
    ent = ext.get("entities") or t.get("entities") or {}
    src = t.get("source")
    return {
        "id": t.get("id_str") or (str(t["id"]) if t.get("id") is not None else None),
        "author_id": u.get("id_str") or (str(u["id"]) if u.get("id") is not None else None),
        "created_at_ms": _twitter_time_ms(t.get("created_at")),
        "created_at_raw": t.get("created_at"),
        "text": ext.get("full_text") or t.get("full_text") or t.get("text"),
        "lang": t.get("lang"),
        "is_retweet": "retweeted_status" in t,
        "is_quote": bool(t.get("is_quote_status")) or "quoted_status" in t,
        "is_reply": t.get("in_reply_to_status_id") is not None or t.get("in_reply_to_status_id_str") is not None,
        "source_app": _TAG.sub("", src) if isinstance(src, str) else None,
        "retweet_count": t.get("retweet_count"),
        "like_count": t.get("favorite_count"),
        "reply_count": t.get("reply_count"),
        "quote_count": t.get("quote_count"),
        "n_urls": _count(ent, "urls"),
        "n_hashtags": _count(ent, "hashtags") + _count(ent, "symbols"),
        "n_mentions": _count(ent, "user_mentions"),
        "user_name": u.get("screen_name"),
        "user_display_name": u.get("name"),
        "user_description": u.get("description"),
        "user_url": u.get("url"),
        "user_verified": u.get("verified"),
        "user_verified_type": None,
        "user_followers": u.get("followers_count"),
        "user_following": u.get("friends_count"),
        "user_tweet_count": u.get("statuses_count"),
        "edit_history_ids": None,
        "api_format": "v1.1",
    }


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _twitter_one(out: Batcher, line: int, item: int, obj: Any, users: dict[str, dict]) -> None:
    """Frame one tweet-like object, or report why it is not a tweet."""
    if not isinstance(obj, dict):
        out.add(line, _dumps(obj), error="not_a_json_object", item=item)
        return
    if "user" in obj and ("full_text" in obj or "text" in obj or "extended_tweet" in obj):
        out.add(line, _dumps(obj), payload=_dumps(_canonical_v1(obj)), item=item)
    elif "text" in obj and ("author_id" in obj or "author" in obj):
        author = obj.get("author") if isinstance(obj.get("author"), dict) else users.get(str(obj.get("author_id")))
        fmt = "v2-flat" if "author" in obj else "v2"
        out.add(line, _dumps(obj), payload=_dumps(_canonical_v2(obj, author, fmt)), item=item)
    elif "delete" in obj or "action" in obj or "scrub_geo" in obj or "status_withheld" in obj:
        out.add(line, _dumps(obj), error="twitter_compliance_event",
                detail="compliance/delete notice, not a tweet", item=item)
    else:
        keys = ",".join(sorted(obj)[:8])
        out.add(line, _dumps(obj), error="not_a_tweet", detail=f"object without tweet fields (keys: {keys})",
                item=item)


def expand(out: Batcher, line: int, text: str, item_base: int = 0, raw: str | None = None) -> None:
    """One line can be an API v2 page (``data[]`` + ``includes.users``), a streamed v2 result
    (``data`` object), a twarc-flattened tweet, a v1.1 tweet, an error page or a compliance event."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        out.add(line, text, error="malformed_json", detail=str(exc), item=item_base)
        return
    if isinstance(obj, dict) and "data" in obj:
        includes = obj.get("includes") if isinstance(obj.get("includes"), dict) else {}
        users = {str(u.get("id")): u for u in includes.get("users", []) if isinstance(u, dict)}
        data = obj["data"]
        tweets = data if isinstance(data, list) else [data]
        for i, t in enumerate(tweets):
            _twitter_one(out, line, item_base + i, t, users)
        if not tweets:
            out.add(line, text, error="twitter_empty_page", detail="API page with an empty data[]", item=item_base)
    elif isinstance(obj, dict) and "errors" in obj:
        out.add(line, text, error="twitter_error_page", detail=_dumps(obj["errors"])[:500], item=item_base)
    elif isinstance(obj, list):
        for i, t in enumerate(obj):
            _twitter_one(out, line, item_base + i, t, {})
    else:
        _twitter_one(out, line, item_base, obj, {})


# --- bronze (payload built by the reader) ------------------------------------------------------------
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


def normalize(df: DataFrame, p: BronzeParams) -> DataFrame:
    j = df.select(*reader_fields(), F.from_json(F.col("payload"), _TWITTER_PAYLOAD).alias("j"))
    g = lambda c: F.col(f"j.{c}")  # noqa: E731
    c = F.col
    ts = epoch_millis(g("created_at_ms"))
    cols = [
        nonblank(g("id")).alias("native_id"),
        nonblank(g("author_id")).alias("user_id"),
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
        F.concat(F.lit("twitter:h:"), hash_id(c("user_id"), c("event_ts"), c("text")))
    )
    out = out.withColumn("record_id", rid).withColumn("source", F.lit("twitter"))
    checks = (
        [(c("user_id").isNull(), "missing_user", None)]
        + time_checks(g("created_at_raw"), c("event_ts"), p)
        + [(c("text").isNull(), "missing_text", None)]
        + text_checks(c("text"), p)
    )
    return finish(out, F.lit("bronze_twitter"), checks, F.lit(False), F.col("payload"))


# --- curation rules ------------------------------------------------------------------------------
def twitter_brand_account(r: BrandAccountRule) -> Check:
    vt = F.coalesce(F.lower(F.col("user_verified_type")).isin([v.lower() for v in r.verified_types]), F.lit(False))
    name = any_pattern(F.col("user_name"), r.name_patterns) | any_pattern(F.col("user_display_name"), r.name_patterns)
    bio = count_matches(F.col("user_description"), r.bio_promo_patterns) > 0
    followers, following = num(F.col("user_followers")), num(F.col("user_following"))
    broadcast = (followers >= 10_000) & (followers >= F.greatest(following, F.lit(1)) * r.min_followers_per_following)
    # account-level density over the user's tweets (the _user_* columns come from account_stats below)
    dense = F.coalesce(F.col("_user_tweets") >= r.min_tweets_for_share, F.lit(False)) & (
        (F.col("_user_link_share") >= r.max_link_share) | (F.col("_user_promo_share") >= r.max_promo_share)
    )
    reason = (
        F.when(vt, F.concat(F.lit("verified_type="), F.col("user_verified_type")))
        .when(name, F.concat(F.lit("name="), F.col("user_name")))
        .when(bio, F.lit("promotional bio"))
        .when(broadcast, F.concat(F.lit("followers/following="), followers.cast("string"), F.lit("/"), following.cast("string")))
        .otherwise(F.concat(F.lit("link share="), F.round(F.col("_user_link_share"), 2).cast("string"),
                            F.lit(" promo share="), F.round(F.col("_user_promo_share"), 2).cast("string")))
    )
    return Check(vt | name | bio | broadcast | dense, reason)


def ad_content(r: AdContentRule) -> Check:
    hits = count_matches(F.col("text"), r.promo_patterns)
    tags, urls = num(F.col("n_hashtags")), num(F.col("n_urls"))
    return Check(
        (hits > r.max_promo_hits) | (tags > r.max_hashtags) | (urls > r.max_urls),
        F.concat(F.lit("promo phrases="), hits.cast("string"), F.lit(" hashtags="), tags.cast("string"),
                 F.lit(" urls="), urls.cast("string")),
    )


def account_stats(store, cfg, batch: DataFrame, bronze_table: str) -> DataFrame:
    """Account-level link and promo shares over every bronze tweet of the batch's users (what
    ``twitter_brand_account_v1`` reads); the batch as it is when that rule is off."""
    if not cfg.curate.rules.twitter_brand_account_v1.enabled:
        return batch
    promo = cfg.curate.rules.twitter_ad_content_v1.promo_patterns
    users = batch.select("user_id").distinct()
    tweets = store.read(bronze_table).join(users, "user_id", "left_semi")
    stats = tweets.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("_user_tweets"),
        F.avg((F.coalesce(F.col("n_urls"), F.lit(0)) > 0).cast("double")).alias("_user_link_share"),
        F.avg((count_matches(F.col("text"), promo) > 0).cast("double")).alias("_user_promo_share"),
    )
    return batch.join(stats, "user_id", "left")


SOURCE = SourceSpec(
    name="twitter",
    bronze_tables={"bronze_twitter": T.BRONZE_TWITTER},
    normalize=normalize,
    formats=FileFormats(expander=expand),
    streams=(
        StreamSpec(
            name="twitter",
            bronze_table="bronze_twitter",
            kind="tweet",
            carry=("user_name",),
            rules=(
                RuleSpec("twitter_retweet_v1", flag("is_retweet")),
                RuleSpec("twitter_quote_v1", flag("is_quote")),
                RuleSpec("twitter_brand_account_v1", twitter_brand_account),
                RuleSpec("twitter_ad_content_v1", ad_content),
                RuleSpec("twitter_min_length_v1", min_chars),
            ),
            account_stats=account_stats,
        ),
    ),
)
