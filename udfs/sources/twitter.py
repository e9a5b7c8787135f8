"""Twitter: API v2 response pages (``data[]`` + ``includes.users``), streamed v2 results,
twarc-flattened v2 tweets, API v1.1 tweets, and the paper's own dump: the twitter100m Parquet
tables (``enryu43/twitter100m_tweets``, with ``enryu43/twitter100m_users`` for the profiles).

The reader's expander turns each JSON record into one canonical payload per tweet (or a quarantine
row: error pages, compliance events, objects that are not tweets); bronze parses that payload. The
twitter100m tweets are framed by their own Parquet framer into the same payload, with the author's
profile (bio, name, follower counts) joined from the users table. That dump has no retweet/quote
flags and no entities: bronze derives them from the text (``RT @x:`` prefix, ``QT @x`` or a trailing
tweet link; URL/hashtag/mention counts) wherever a payload leaves them out.
Curation drops retweets, quotes, ads and brand accounts — the last from profile fields and from
account-level shares over each user's bronze tweets (``account_stats``).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import orjson
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, LongType, StringType, StructField, StructType

from lewin.schemas import tables as T
from lewin.schemas.config import AdContentRule, BrandAccountRule
from lewin.udfs.bronze import (
    BronzeParams, epoch_millis, finish, hash_id, nonblank, reader_fields, text_checks, time_checks,
)
from lewin.udfs.readers import Batcher, ReaderOptions
from lewin.udfs.rules import Check, any_pattern, count_matches, flag, min_chars, num
from lewin.udfs.sources.base import FileFormats, RuleSpec, SourceSpec, StreamSpec

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow.parquet as pq


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


# --- reading: the twitter100m Parquet dump ----------------------------------------------------------
# twitter100m_tweets: user (screen name), id (tweet id), tweet (text), replies, retweets, likes,
# quotes, date (ISO string or timestamp). twitter100m_users: user, id, verified, followers,
# description, location (other exports add name, following …). Only the profile fields the
# brand-account rule reads are joined: bronze column -> the users table's names for it.
_PROFILE_FIELDS = {
    "user_display_name": ("name", "display_name"),
    "user_description": ("description", "bio"),
    "user_followers": ("followers", "followers_count"),
    "user_following": ("following", "following_count", "friends", "friends_count"),
    "user_verified_type": ("verified_type",),
}
_PROFILE_KEYS = ("user", "username", "screen_name")
_PROFILE_HINTS = {"description", "bio", "followers", "followers_count", "verified", "location"}
_USERS: dict[tuple, tuple[pa.Array, pa.Table]] = {}  # one users table per worker process


def _users_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.parquet") if p.is_file() and not p.name.startswith("."))


def _is_users_table(path: Path) -> bool:
    import pyarrow.parquet as pq

    files = _users_files(path) if path.exists() else []
    try:
        names = set(pq.read_schema(files[0]).names) if files else set()
    except Exception:  # not Parquet, unreadable: not a users table
        return False
    return bool(names & set(_PROFILE_KEYS)) and "tweet" not in names


def users_table_path(tweets_file: str, configured: str | None = None) -> str | None:
    """Where the profiles of a twitter100m tweets file are: ``configured`` (the ``users_path``
    reader option) when given, else found beside the tweets — the tweets' folder (or file) name
    with ``tweets`` replaced by ``users`` (``twitter100m_tweets/`` -> ``twitter100m_users/``), or
    a ``users/`` folder — looking from the file's folder up to three levels. None: no profiles."""
    if configured:
        if not Path(configured).exists():
            raise FileNotFoundError(f"twitter users table {configured} does not exist")
        return configured
    f = Path(tweets_file)
    candidates: list[Path] = []
    for p in [f, *list(f.parents)[:3]]:
        if p.parent == p:
            break
        for a, b in (("tweets", "users"), ("Tweets", "Users"), ("TWEETS", "USERS")):
            if a in p.name:
                candidates.append(p.with_name(p.name.replace(a, b)))
        if p != f:
            candidates.append(p / "users")
    for c in candidates:
        if c.exists() and c.resolve() != f.resolve() and _is_users_table(c):
            return str(c)
    return None


def _int_column(col: pa.ChunkedArray) -> pa.ChunkedArray:
    import pyarrow.compute as pc

    try:
        return pc.cast(col, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.chunked_array([pa.nulls(len(col), pa.int64())])


def load_users(path: str) -> tuple[pa.Array, pa.Table]:
    """(lower-cased screen names, profile columns named as bronze's) of a users table: a Parquet
    file or a folder of them; optional columns it lacks are nulls. Cached per process."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = _users_files(Path(path))
    sig = (path, tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if sig in _USERS:
        return _USERS[sig]
    parts = []
    for f in files:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        key = next((k for k in _PROFILE_KEYS if k in names), None)
        if key is None:
            raise ValueError(f"twitter users table {f}: no screen-name column ({', '.join(_PROFILE_KEYS)})")
        want = {key: "user"}
        for col, alts in _PROFILE_FIELDS.items():
            src = next((a for a in alts if a in names), None)
            if src is not None:
                want[src] = col
        t = pf.read(columns=list(want))
        cols, fields = [], []
        for col in ("user", *_PROFILE_FIELDS):
            src = next((s for s, d in want.items() if d == col), None)
            typ = pa.int64() if col in ("user_followers", "user_following") else pa.string()
            if src is None:
                arr = pa.chunked_array([pa.nulls(t.num_rows, typ)])
            elif typ == pa.int64():
                arr = _int_column(t[src])
            else:
                arr = pc.cast(t[src], pa.string())
            cols.append(arr)
            fields.append(pa.field(col, typ))
        parts.append(pa.Table.from_arrays(cols, schema=pa.schema(fields)))
    if not parts:
        raise ValueError(f"twitter users table {path}: no Parquet files")
    table = pa.concat_tables(parts)
    keys = pc.utf8_lower(table["user"]).combine_chunks()
    _USERS.clear()
    _USERS[sig] = (keys, table)
    return keys, table


def _profiles(users: tuple[pa.Array, pa.Table] | None, names: pa.Array) -> dict[str, list]:
    """The profile columns for a batch's screen names (Arrow look-up; nulls for unknown users)."""
    if users is None:
        return {}
    import pyarrow.compute as pc

    keys, table = users
    idx = pc.index_in(pc.utf8_lower(names.cast(pa.string())), value_set=keys, skip_nulls=True)
    return {c: table[c].take(idx).to_pylist() for c in _PROFILE_FIELDS}


def _time_ms(value: Any) -> int | None:
    """The twitter100m ``date``: ISO string, timestamp, or epoch seconds/milliseconds."""
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1000)
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp() * 1000)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value * 1000) if abs(value) < 10**11 else int(value)
    return _twitter_time_ms(value)


def _canonical_twitter100m(rec: dict, profile: dict) -> dict:
    """The canonical payload of one twitter100m row. The retweet/quote flags and entity counts are
    left out: bronze derives them from the text."""
    d = rec.get("date")
    out = {
        "id": str(rec["id"]) if rec.get("id") is not None else None,
        "author_id": rec.get("user"),
        "created_at_ms": _time_ms(d),
        "created_at_raw": d.isoformat() if isinstance(d, (datetime, date)) else (str(d) if d is not None else None),
        "text": rec.get("tweet"),
        "retweet_count": rec.get("retweets"),
        "like_count": rec.get("likes"),
        "reply_count": rec.get("replies"),
        "quote_count": rec.get("quotes"),
        "user_name": rec.get("user"),
        "api_format": "twitter100m",
        **profile,
    }
    return {k: v for k, v in out.items() if v is not None}


def _frame_twitter100m(path: str, opts: ReaderOptions, pf: pq.ParquetFile, out: Batcher) -> Iterator[pa.RecordBatch]:
    users_path = users_table_path(path, opts.options.get("users_path"))
    users = load_users(users_path) if users_path else None
    row_no = 0
    for batch in pf.iter_batches(batch_size=opts.batch_rows):
        prof = _profiles(users, batch.column("user"))
        for i, rec in enumerate(batch.to_pylist()):
            row_no += 1
            out.add(row_no, orjson.dumps(rec, default=str).decode(),
                    payload=_dumps(_canonical_twitter100m(rec, {c: v[i] for c, v in prof.items()})))
        yield from out.flush()


def _users_table_notice(path: str, pf: pq.ParquetFile, out: Batcher) -> Iterator[pa.RecordBatch]:
    """A users table among the tweet files holds no records: one row says so (quarantine)."""
    out.add(1, None, error="twitter_users_table",
            detail=f"user profiles ({pf.metadata.num_rows} rows), joined to the twitter100m tweets by screen "
                   "name, not records")
    yield from out.flush()


def frame_parquet(path: str, opts: ReaderOptions, pf: pq.ParquetFile, out: Batcher) -> Iterator[pa.RecordBatch] | None:
    """The twitter100m tables by their columns; any other Parquet file is left to the generic framing."""
    names = set(pf.schema_arrow.names)
    if {"user", "tweet"} <= names:
        return _frame_twitter100m(path, opts, pf, out)
    if names & set(_PROFILE_KEYS) and names & _PROFILE_HINTS and not names & {"text", "full_text", "data"}:
        return _users_table_notice(path, pf, out)
    return None


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


# Text markers, for dumps without the API's flags and entities (twitter100m). The retweet prefix is
# the one cleaning strips; a quote is the old "QT @user" convention or a tweet link ending the text
# (how scraped quote tweets carry the quoted tweet). No look-around: Java and Rust regex alike.
RETWEET_TEXT = r"^RT @\w+:"
QUOTE_TEXT = (r"(^|\s)QT @\w+|(?i:https?://(www\.|mobile\.)?(twitter|x)\.com/\w+/status(es)?/\d+)"
              r"[^\s]*\s*$")
_URL_TEXT = r"(?i)https?://[^\s]+"
_HASHTAG_TEXT = r"(^|[^\w@#＃])[#＃]\w+"
_CASHTAG_TEXT = r"(^|[^\w$])\$[A-Za-z]{1,6}\b"
_MENTION_TEXT = r"(^|[^\w@#＃])@\w+"


def _text_count(text: Column, pattern: str) -> Column:
    return F.regexp_count(F.coalesce(text, F.lit("")), F.lit(pattern))


def normalize(df: DataFrame, p: BronzeParams) -> DataFrame:
    j = df.select(*reader_fields(), F.from_json(F.col("payload"), _TWITTER_PAYLOAD).alias("j"))
    g = lambda c: F.col(f"j.{c}")  # noqa: E731
    c = F.col
    ts = epoch_millis(g("created_at_ms"))
    text = g("text")
    # a payload without flags or entity counts (twitter100m): derived from the text
    derived = {
        "is_retweet": F.coalesce(text.rlike(RETWEET_TEXT), F.lit(False)),
        "is_quote": F.coalesce(text.rlike(QUOTE_TEXT), F.lit(False)),
        "n_urls": _text_count(text, _URL_TEXT),
        "n_hashtags": _text_count(text, _HASHTAG_TEXT) + _text_count(text, _CASHTAG_TEXT),
        "n_mentions": _text_count(text, _MENTION_TEXT),
    }
    cols = [
        nonblank(g("id")).alias("native_id"),
        nonblank(g("author_id")).alias("user_id"),
        ts.alias("event_ts"),
        F.lit(None).cast("string").alias("title"),
        text.alias("text"),
        g("api_format").alias("api_format"),
        g("lang").alias("lang"),
        F.coalesce(g("is_retweet"), derived["is_retweet"]).alias("is_retweet"),
        F.coalesce(g("is_quote"), derived["is_quote"]).alias("is_quote"),
        g("is_reply").alias("is_reply"),
        g("source_app").alias("source_app"),
    ] + [g(n).alias(n) for n in (
        "retweet_count", "like_count", "reply_count", "quote_count",
    )] + [F.coalesce(g(n), derived[n]).cast("int").alias(n) for n in ("n_urls", "n_hashtags", "n_mentions")] + [
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
    # judged only where the following count is known (the twitter100m profiles have followers alone)
    broadcast = F.col("user_following").isNotNull() & (followers >= 10_000) & (
        followers >= F.greatest(following, F.lit(1)) * r.min_followers_per_following)
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
    formats=FileFormats(expander=expand, parquet=frame_parquet),
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
