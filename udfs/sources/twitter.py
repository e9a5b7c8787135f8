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

Reading is total: every value the payload carries is checked for its type as it is copied (ids and
texts are strings, or numbers taken as their text; counts are integers, or their text; flags are
booleans, or their text), and a record with one that is not (``"user": "bob"``, ``"retweet_count":
"many"``, a count beyond 64 bits) is quarantined as ``wrong_type:<field>`` with the value, instead of
failing the file or the job. A time that cannot be read becomes ``unparseable_time`` in bronze.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator

import orjson
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, LongType, StringType, StructField, StructType

from lewin.schemas import tables as T
from lewin.schemas.config import AdContentRule, BrandAccountRule
from lewin.udfs import fs
from lewin.udfs.bronze import (
    BronzeParams, epoch_millis, finish, hash_id, nonblank, reader_fields, text_checks, time_checks,
)
from lewin.udfs.readers import Batcher, ReaderOptions, dumps_any, json_fault, loads_lenient
from lewin.udfs.rules import Check, any_pattern, count_matches, flag, min_chars, num
from lewin.udfs.sources.base import FileFormats, RuleSpec, SourceSpec, StreamSpec

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow.parquet as pq


# --- reading: API v2 pages, twarc-flattened v2 tweets, API v1.1 tweets ------------------------------
_ISO = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})(?:[Tt ](\d{2}):?(\d{2})(?::?(\d{2}))?(?:[.,](\d+))?)?"
                  r"\s*(?:([Zz])|([+-])(\d{2}):?(\d{2})?)?")


def _iso_extended(value: str) -> str:
    """An ISO 8601 time in the extended form every Python's ``fromisoformat`` reads (3.10's too):
    basic or extended, 'T'/'t'/space, any fraction (to microseconds), Z or ±hh[:mm]."""
    m = _ISO.fullmatch(value.strip())
    if m is None:
        return value
    y, mo, d, h, mi, sec, frac, z, sign, zh, zm = m.groups()
    out = f"{y}-{mo}-{d}"
    if h is not None:
        out += f"T{h}:{mi}:{sec or '00'}" + (f".{(frac + '000000')[:6]}" if frac else "")
    if z or sign:
        out += "+00:00" if z else f"{sign}{zh}:{zm or '00'}"
    return out


def _twitter_time_ms(value: Any) -> int | None:
    """API v2 (ISO 8601) and v1.1 (``Wed Oct 10 20:19:24 +0000 2018``) times -> epoch ms; None
    for anything else (bronze: ``unparseable_time``)."""
    if not isinstance(value, str) or len(value) > 100:
        return None
    for fmt in (None, "%a %b %d %H:%M:%S %z %Y"):
        try:
            if fmt is None:
                dt = datetime.fromisoformat(_iso_extended(value))
            else:
                dt = datetime.strptime(value.strip(), fmt)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            return int(dt.timestamp() * 1000)
        except (ValueError, OverflowError, OSError):
            continue
    return None


class _WrongType(Exception):
    """A value of the wrong type in a tweet: its record is quarantined as ``wrong_type:<field>``."""

    def __init__(self, name: str, value: Any):
        super().__init__(name)
        self.name, self.value = name, value

    @property
    def detail(self) -> str:
        try:  # as JSON text; NaN as the NaN token (orjson would write null)
            shown = json.dumps(self.value, ensure_ascii=False, default=repr)
        except Exception:  # a value JSON cannot show
            shown = repr(self.value)
        return f"{self.name}={shown[:80]}"


_INT64 = 2**63


def _str(name: str, v: Any) -> str | None:
    """A string value; an id or text written as a number is its text."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, float) and math.isfinite(v):
        return str(int(v)) if v.is_integer() else str(v)
    raise _WrongType(name, v)


def _int(name: str, v: Any) -> int | None:
    """A count: an integer that fits 64 bits, or its text ("1,204"; "100+", how API v1.1 once capped
    retweet counts, is its lower bound); NaN (a missing value in pandas exports) and "" are missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        t = v.strip().replace(",", "").removesuffix("+")
        if not t:
            return None
        try:
            v = int(t) if t.lstrip("+-").isdigit() else float(t)
        except ValueError:
            raise _WrongType(name, v) from None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool) and -_INT64 <= v < _INT64:
        return v
    raise _WrongType(name, v)


_TRUE, _FALSE = {"true", "t", "1", "yes", "y"}, {"false", "f", "0", "no", "n"}


def _bool(name: str, v: Any) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        t = v.strip().lower()
        if t in _TRUE or t in _FALSE or not t:
            return (t in _TRUE) if t else None
    raise _WrongType(name, v)


def _obj(name: str, v: Any) -> dict:
    """A nested object ({} when absent)."""
    if v is None:
        return {}
    if isinstance(v, dict):
        return v
    raise _WrongType(name, v)


def _list(name: str, v: Any) -> list:
    if v is None:
        return []
    if isinstance(v, list):
        return v
    raise _WrongType(name, v)


def _time_raw(v: Any) -> str | None:
    """The time as written, for the quarantine detail."""
    return v if v is None or isinstance(v, str) else dumps_any(v)


_TAG = re.compile(r"<[^>]+>")


def _count(entities: Any, key: str) -> int:
    if isinstance(entities, dict) and isinstance(entities.get(key), list):
        return len(entities[key])
    return 0


def _canonical_v2(t: dict, user: dict | None, api_format: str) -> dict:
    refs = _list("referenced_tweets", t.get("referenced_tweets"))
    ref_types = {r.get("type") for r in refs if isinstance(r, dict)}
    pm = _obj("public_metrics", t.get("public_metrics"))
    ent = _obj("entities", t.get("entities"))
    u = _obj("author", user)
    upm = _obj("author.public_metrics", u.get("public_metrics"))
    note = t.get("note_tweet")
    text = note.get("text") if isinstance(note, dict) and note.get("text") else t.get("text")
    edits = t.get("edit_history_tweet_ids")
    return {
        "id": _str("id", t.get("id")),
        "author_id": _str("author_id", t.get("author_id") or u.get("id")),
        "created_at_ms": _twitter_time_ms(t.get("created_at")),
        "created_at_raw": _time_raw(t.get("created_at")),
        "text": _str("text", text),
        "lang": _str("lang", t.get("lang")),
        "is_retweet": "retweeted" in ref_types,
        "is_quote": "quoted" in ref_types,
        "is_reply": "replied_to" in ref_types or t.get("in_reply_to_user_id") is not None,
        "source_app": _str("source", t.get("source")),
        "retweet_count": _int("retweet_count", pm.get("retweet_count")),
        "like_count": _int("like_count", pm.get("like_count")),
        "reply_count": _int("reply_count", pm.get("reply_count")),
        "quote_count": _int("quote_count", pm.get("quote_count")),
        "n_urls": _count(ent, "urls"),
        "n_hashtags": _count(ent, "hashtags") + _count(ent, "cashtags"),
        "n_mentions": _count(ent, "mentions"),
        "user_name": _str("username", u.get("username")),
        "user_display_name": _str("name", u.get("name")),
        "user_description": _str("description", u.get("description")),
        "user_url": _str("url", u.get("url")),
        "user_verified": _bool("verified", u.get("verified")),
        "user_verified_type": _str("verified_type", u.get("verified_type")),
        "user_followers": _int("followers_count", upm.get("followers_count")),
        "user_following": _int("following_count", upm.get("following_count")),
        "user_tweet_count": _int("tweet_count", upm.get("tweet_count")),
        "edit_history_ids": None if edits is None else [_str("edit_history_tweet_ids", e)
                                                         for e in _list("edit_history_tweet_ids", edits)],
        "api_format": api_format,
    }


def _canonical_v1(t: dict) -> dict:
    u = _obj("user", t.get("user"))
    ext = _obj("extended_tweet", t.get("extended_tweet"))
    ent = _obj("entities", ext.get("entities") or t.get("entities"))
    src = t.get("source")
    return {
        "id": _str("id_str", t.get("id_str")) or _str("id", t.get("id")),
        "author_id": _str("user.id_str", u.get("id_str")) or _str("user.id", u.get("id")),
        "created_at_ms": _twitter_time_ms(t.get("created_at")),
        "created_at_raw": _time_raw(t.get("created_at")),
        "text": _str("text", ext.get("full_text") or t.get("full_text") or t.get("text")),
        "lang": _str("lang", t.get("lang")),
        "is_retweet": "retweeted_status" in t,
        "is_quote": bool(_bool("is_quote_status", t.get("is_quote_status"))) or "quoted_status" in t,
        "is_reply": t.get("in_reply_to_status_id") is not None or t.get("in_reply_to_status_id_str") is not None,
        "source_app": _TAG.sub("", src) if isinstance(src, str) else None,
        "retweet_count": _int("retweet_count", t.get("retweet_count")),
        "like_count": _int("favorite_count", t.get("favorite_count")),
        "reply_count": _int("reply_count", t.get("reply_count")),
        "quote_count": _int("quote_count", t.get("quote_count")),
        "n_urls": _count(ent, "urls"),
        "n_hashtags": _count(ent, "hashtags") + _count(ent, "symbols"),
        "n_mentions": _count(ent, "user_mentions"),
        "user_name": _str("user.screen_name", u.get("screen_name")),
        "user_display_name": _str("user.name", u.get("name")),
        "user_description": _str("user.description", u.get("description")),
        "user_url": _str("user.url", u.get("url")),
        "user_verified": _bool("user.verified", u.get("verified")),
        "user_verified_type": None,
        "user_followers": _int("user.followers_count", u.get("followers_count")),
        "user_following": _int("user.friends_count", u.get("friends_count")),
        "user_tweet_count": _int("user.statuses_count", u.get("statuses_count")),
        "edit_history_ids": None,
        "api_format": "v1.1",
    }


def _dumps(obj: Any) -> str:
    return dumps_any(obj)


def _add_tweet(out: Batcher, line: int, item: int, raw: str, canonical: Callable[[], dict]) -> None:
    """One tweet's row: its canonical payload, or the quarantine row of the value that has the
    wrong type. Total: any other fault in one tweet quarantines that tweet (``unparseable_record``)."""
    try:
        payload = _dumps(canonical())
    except _WrongType as bad:
        out.add(line, raw, error=f"wrong_type:{bad.name}", detail=bad.detail, item=item)
    except Exception as exc:  # a shape no check above foresaw: this record, not the file
        out.add(line, raw, error="unparseable_record", detail=f"{type(exc).__name__}: {exc}"[:500], item=item)
    else:
        out.add(line, raw, payload=payload, item=item)


def _twitter_one(out: Batcher, line: int, item: int, obj: Any, users: dict[str, dict]) -> None:
    """Frame one tweet-like object, or report why it is not a tweet."""
    if not isinstance(obj, dict):
        out.add(line, _dumps(obj), error="not_a_json_object", item=item)
        return
    if "user" in obj and ("full_text" in obj or "text" in obj or "extended_tweet" in obj):
        _add_tweet(out, line, item, _dumps(obj), lambda: _canonical_v1(obj))
    elif "text" in obj and ("author_id" in obj or "author" in obj):
        author = obj.get("author") if isinstance(obj.get("author"), dict) else users.get(str(obj.get("author_id")))
        fmt = "v2-flat" if "author" in obj else "v2"
        _add_tweet(out, line, item, _dumps(obj), lambda: _canonical_v2(obj, author, fmt))
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
        fault = json_fault(text)  # glued pages, trailing garbage, 1e400: their own reasons
        if fault is not None:
            out.add(line, text, error=fault[0], detail=fault[1], item=item_base)
            return
        try:
            obj = loads_lenient(text)  # what Spark's parser reads too (NaN, integers beyond 64 bits)
        except ValueError:
            out.add(line, text, error="malformed_json", detail=str(exc), item=item_base)
            return
    if isinstance(obj, dict) and "data" in obj:
        includes = obj.get("includes") if isinstance(obj.get("includes"), dict) else {}
        listed = includes.get("users")
        users = {str(u.get("id")): u for u in (listed if isinstance(listed, list) else []) if isinstance(u, dict)}
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


def _users_files(path: str) -> list[tuple[str, int, int]]:
    """(location, size, mtime_ns) of a users table's Parquet files (a file, or a folder of them)."""
    return [f for f in fs.find(path) if f[0].endswith(".parquet") and not fs.name(f[0]).startswith(".")]


def _is_users_table(path: str) -> bool:
    import pyarrow.parquet as pq

    try:
        files = _users_files(path) if fs.exists(path) else []
        if not files:
            return False
        with fs.open(files[0][0]) as f:
            names = set(pq.read_schema(f).names)
    except Exception:  # not Parquet, unreadable: not a users table
        return False
    return bool(names & set(_PROFILE_KEYS)) and "tweet" not in names


def users_table_path(tweets_file: str, configured: str | None = None) -> str | None:
    """Where the profiles of a twitter100m tweets file are: ``configured`` (the ``users_path``
    reader option) when given, else found beside the tweets — the tweets' folder (or file) name
    with ``tweets`` replaced by ``users`` (``twitter100m_tweets/`` -> ``twitter100m_users/``), or
    a ``users/`` folder — looking from the file's folder up to three levels. None: no profiles."""
    if configured:
        if not fs.exists(configured):
            raise FileNotFoundError(f"twitter users table {configured} does not exist")
        return configured
    f = fs.location(tweets_file)
    chain = [f]
    while len(chain) < 4 and fs.parent(chain[-1]) != chain[-1]:
        chain.append(fs.parent(chain[-1]))
    candidates: list[str] = []
    for p in chain:
        for a, b in (("tweets", "users"), ("Tweets", "Users"), ("TWEETS", "USERS")):
            if a in fs.name(p):
                candidates.append(fs.with_name(p, fs.name(p).replace(a, b)))
        if p != f:
            candidates.append(fs.join(p, "users"))
    for c in candidates:
        if c != f and _is_users_table(c):
            return c
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

    files = _users_files(path)
    sig = (path, tuple(files))
    if sig in _USERS:
        return _USERS[sig]
    parts = []
    for f, _, _ in files:
        pf = pq.ParquetFile(fs.open(f))
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
        if not math.isfinite(value):
            return None
        ms = int(value * 1000) if abs(value) < 10**11 else int(value)
        return ms if -_INT64 <= ms < _INT64 else None
    return _twitter_time_ms(value)


def _canonical_twitter100m(rec: dict, profile: dict) -> dict:
    """The canonical payload of one twitter100m row. The retweet/quote flags and entity counts are
    left out: bronze derives them from the text."""
    d = rec.get("date")
    out = {
        "id": _str("id", rec.get("id")),
        "author_id": _str("user", rec.get("user")),
        "created_at_ms": _time_ms(d),
        "created_at_raw": d.isoformat() if isinstance(d, (datetime, date)) else (str(d) if d is not None else None),
        "text": _str("tweet", rec.get("tweet")),
        "retweet_count": _int("retweets", rec.get("retweets")),
        "like_count": _int("likes", rec.get("likes")),
        "reply_count": _int("replies", rec.get("replies")),
        "quote_count": _int("quotes", rec.get("quotes")),
        "user_name": _str("user", rec.get("user")),
        "api_format": "twitter100m",
        **profile,
    }
    return {k: v for k, v in out.items() if v is not None}


def _row_text(rec: dict) -> str:
    """A Parquet row as JSON text (values JSON has no type for as their text)."""
    try:
        return orjson.dumps(rec, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits, keys that are not strings
        return dumps_any({str(k): v for k, v in rec.items()}) if isinstance(rec, dict) else str(rec)


def _frame_twitter100m(path: str, opts: ReaderOptions, pf: pq.ParquetFile, out: Batcher) -> Iterator[pa.RecordBatch]:
    users_path = users_table_path(path, opts.options.get("users_path"))
    users = load_users(users_path) if users_path else None
    row_no = 0
    for batch in pf.iter_batches(batch_size=opts.batch_rows):
        prof = _profiles(users, batch.column("user"))
        for i, rec in enumerate(batch.to_pylist()):
            row_no += 1
            _add_tweet(out, row_no, 0, _row_text(rec),
                       lambda: _canonical_twitter100m(rec, {c: v[i] for c, v in prof.items()}))
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
    )] + [F.coalesce(g(n), derived[n]).try_cast("int").alias(n) for n in ("n_urls", "n_hashtags", "n_mentions")] + [
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
        + time_checks(g("created_at_raw"), c("event_ts"), p, "created_at")
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
