"""Readers: frame raw dump files into records (file, line, raw text), nothing more.

A reader turns one file into Arrow batches of ``lewin.schemas.tables.READER_OUTPUT``: where each
record starts (file, 1-based line, item index inside the line), its original text, and — when the
text Spark must parse differs from the original (CSV rows, XML posts, Twitter API pages) — a JSON
payload. Field parsing, typing and validation happen afterwards in Spark built-in expressions
(``lewin.udfs.bronze``), so the Python work here stays small: decompress, split, frame.

Readers never drop a record silently: a record they cannot frame comes out with ``error`` set
(``invalid_utf8``, ``record_too_long``, ``csv_field_count_mismatch``, …) and its raw text; blank
lines come out as ``blank_line`` so the funnel can count them.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson
import pyarrow as pa

from lewin.udfs.compression import open_binary, split_compression

_ARROW_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), False),
        pa.field("line", pa.int64(), False),
        pa.field("item", pa.int32(), False),
        pa.field("raw", pa.string()),
        pa.field("payload", pa.string()),
        pa.field("error", pa.string()),
        pa.field("detail", pa.string()),
    ]
)

FORMATS = ("jsonl", "json", "csv", "parquet", "blogxml")
_EXT_FORMAT = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".xml": "blogxml",
}
_CHUNK = 8 << 20  # bytes read per step from a (decompressed) stream


@dataclass(frozen=True)
class ReaderOptions:
    source: str
    max_record_bytes: int = 1_048_576
    batch_rows: int = 20_000


def detect_format(path: str | Path) -> str | None:
    """The record format from the file name (compression suffix ignored); None if unknown."""
    base, compression = split_compression(path)
    fmt = _EXT_FORMAT.get(Path(base).suffix.lower())
    if fmt is None and compression is not None and Path(base).suffix.lower() in ("", ".txt") or (
        fmt is None and compression is not None and re.match(r"^R[SC]_\d{4}-\d{2}$", Path(base).name)
    ):
        # Pushshift monthly dumps: RS_2019-01.zst / RC_2011-01.bz2 hold JSON lines
        return "jsonl"
    return fmt


class _Batcher:
    """Accumulates reader rows column-wise and emits Arrow batches."""

    def __init__(self, file: str, batch_rows: int):
        self.file = file
        self.batch_rows = batch_rows
        self._reset()

    last_line = 0

    def _reset(self) -> None:
        self.lines: list[int] = []
        self.items: list[int] = []
        self.raw: list[str | None] = []
        self.payload: list[str | None] = []
        self.error: list[str | None] = []
        self.detail: list[str | None] = []

    def add(self, line: int, raw: str | None, payload: str | None = None, error: str | None = None,
            detail: str | None = None, item: int = 0) -> None:
        self.lines.append(line)
        self.items.append(item)
        self.raw.append(raw)
        self.payload.append(payload)
        self.error.append(error)
        self.detail.append(detail)

    def full(self) -> bool:
        return len(self.lines) >= self.batch_rows

    def flush(self) -> Iterator[pa.RecordBatch]:
        n = len(self.lines)
        if n:
            self.last_line = self.lines[-1]
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array([self.file] * n, pa.string()),
                    pa.array(self.lines, pa.int64()),
                    pa.array(self.items, pa.int32()),
                    pa.array(self.raw, pa.string()),
                    pa.array(self.payload, pa.string()),
                    pa.array(self.error, pa.string()),
                    pa.array(self.detail, pa.string()),
                ],
                schema=_ARROW_SCHEMA,
            )
        self._reset()


def _decode(b: bytes) -> tuple[str, bool]:
    """(text, ok). Invalid UTF-8 keeps its bytes visible as \\xNN escapes."""
    try:
        return b.decode("utf-8"), True
    except UnicodeDecodeError:
        return b.decode("utf-8", "backslashreplace"), False


def _too_long(b: bytes, limit: int) -> str:
    return _decode(b[: min(len(b), 65_536)])[0]


def _chunks(stream: io.BufferedIOBase) -> Iterator[bytes]:
    """Decompressed bytes in ~8 MiB pieces. Reads in small steps (``read1``) so that when a
    stream breaks (a truncated archive) everything decoded before the fault is still handed on."""
    read = getattr(stream, "read1", stream.read)
    buf = bytearray()
    try:
        while True:
            piece = read(1 << 20)
            if not piece:
                break
            buf += piece
            if len(buf) >= _CHUNK:
                yield bytes(buf)
                buf.clear()
    except Exception:
        if buf:
            yield bytes(buf)
        raise
    if buf:
        yield bytes(buf)


def _iter_lines(stream: io.BufferedIOBase, max_record_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line_no, bytes, too_long) for every line, in bounded memory even for giant lines."""
    line_no = 0
    rest = b""
    skipping = False  # inside a line already reported as too long
    for chunk in _chunks(stream):
        buf = rest + chunk if rest else chunk
        parts = buf.split(b"\n")
        rest = parts.pop()
        for p in parts:
            if skipping:
                skipping = False
                continue
            line_no += 1
            yield line_no, p, len(p) > max_record_bytes
        if len(rest) > max_record_bytes and not skipping:
            line_no += 1
            yield line_no, rest, True
            skipping = True
            rest = b""
        elif skipping:
            rest = b""
    if rest and not skipping:
        line_no += 1
        yield line_no, rest, len(rest) > max_record_bytes


def _strip_cr(b: bytes) -> bytes:
    return b[:-1] if b.endswith(b"\r") else b


# --- JSON lines ------------------------------------------------------------------------------------
def _read_jsonl(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: _Batcher) -> Iterator[pa.RecordBatch]:
    expand = _EXPANDERS.get(opts.source)
    for line_no, b, too_long in _iter_lines(stream, opts.max_record_bytes):
        b = _strip_cr(b)
        if too_long:
            out.add(line_no, _too_long(b, opts.max_record_bytes), error="record_too_long",
                    detail=f"line longer than {opts.max_record_bytes} bytes")
        elif not b.strip():
            out.add(line_no, None, error="blank_line")
        else:
            text, ok = _decode(b)
            if not ok:
                out.add(line_no, text, error="invalid_utf8", detail="line is not valid UTF-8")
            elif expand is not None:
                expand(out, line_no, text)
            else:
                out.add(line_no, text)
        if out.full():
            yield from out.flush()


def _read_json(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: _Batcher) -> Iterator[pa.RecordBatch]:
    """A .json file: JSON lines if its first line is a JSON value, else one document
    (an array of records, or one object)."""
    data = stream.read()
    first = data.split(b"\n", 1)[0].strip()
    try:
        lines_mode = not isinstance(orjson.loads(first), list)
    except orjson.JSONDecodeError:
        lines_mode = False
    if lines_mode:
        yield from _read_jsonl(path, opts, io.BytesIO(data), out)
        return
    text, ok = _decode(data)
    if not ok:
        out.add(1, text[:65_536], error="invalid_utf8", detail="file is not valid UTF-8")
        return
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        out.add(1, text[:65_536], error="malformed_json", detail=f"file is not JSON: {exc}")
        return
    records = doc if isinstance(doc, list) else [doc]
    expand = _EXPANDERS.get(opts.source)
    for i, rec in enumerate(records):
        rec_text = orjson.dumps(rec).decode()
        if expand is not None:
            expand(out, 1, rec_text, item_base=i)
        else:
            out.add(1, rec_text, item=i)
        if out.full():
            yield from out.flush()


# --- CSV -------------------------------------------------------------------------------------------
_SURROGATE = re.compile("[\udc80-\udcff]")


class _LineTap:
    """Feeds csv.reader line by line while remembering the lines of the current row."""

    def __init__(self, text_stream: Iterable[str]):
        self._it = iter(text_stream)
        self.taken: list[str] = []
        self.line_no = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self._it)
        self.line_no += 1
        self.taken.append(line)
        return line


def _read_csv(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: _Batcher) -> Iterator[pa.RecordBatch]:
    csv.field_size_limit(max(opts.max_record_bytes * 4, 1 << 20))
    text_stream = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    tap = _LineTap(text_stream)
    reader = csv.reader(tap)
    header: list[str] | None = None
    expand = _EXPANDERS.get(opts.source)
    while True:
        start = tap.line_no + 1
        tap.taken = []
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raw = "".join(tap.taken)
            out.add(start, raw[:65_536].encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
                    error="csv_parse_error", detail=str(exc))
            continue
        raw = "".join(tap.taken)
        if header is None:
            header = row
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            out.add(start, None, error="blank_line")
            continue
        bad_utf8 = bool(_SURROGATE.search(raw))
        if bad_utf8:
            raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raw_bytes = len(raw.encode("utf-8", "surrogatepass"))
        if raw_bytes > opts.max_record_bytes:
            out.add(start, raw[:65_536], error="record_too_long",
                    detail=f"row longer than {opts.max_record_bytes} bytes")
        elif bad_utf8:
            out.add(start, raw, error="invalid_utf8", detail="row is not valid UTF-8")
        elif len(row) != len(header):
            out.add(start, raw, error="csv_field_count_mismatch",
                    detail=f"{len(row)} fields, header has {len(header)}")
        else:
            # Pushshift/PRAW exports start with an unnamed index column; empty cells are nulls.
            rec = {k: (v if v != "" else None) for k, v in zip(header, row) if k != ""}
            payload = orjson.dumps(rec).decode()
            if expand is not None:
                expand(out, start, payload, raw=raw)
            else:
                out.add(start, raw, payload=payload)
        if out.full():
            yield from out.flush()


# --- Parquet ----------------------------------------------------------------------------------------
def _read_parquet(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: _Batcher) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    row_no = 0
    expand = _EXPANDERS.get(opts.source)
    for batch in pq.ParquetFile(stream).iter_batches(batch_size=opts.batch_rows):
        for rec in batch.to_pylist():
            row_no += 1
            text = orjson.dumps(rec, default=str).decode()
            if expand is not None:
                expand(out, row_no, text)
            else:
                out.add(row_no, text)
        yield from out.flush()


# --- Blog Authorship Corpus, original per-blogger files ----------------------------------------------
# File name: <blogger id>.<gender>.<age>.<industry>.<star sign>.xml; body: <date>…</date><post>…</post>
_BLOG_NAME = re.compile(r"^(?P<id>\d+)\.(?P<gender>[^.]+)\.(?P<age>\d+)\.(?P<topic>[^.]+)\.(?P<sign>[^.]+)$")
_BLOG_POST = re.compile(rb"<date>(.*?)</date>\s*<post>(.*?)</post>", re.S)


def _read_blogxml(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: _Batcher) -> Iterator[pa.RecordBatch]:
    base, _ = split_compression(Path(path).name)
    m = _BLOG_NAME.match(Path(base).stem)
    data = stream.read()
    if m is None:
        out.add(1, _decode(data[:65_536])[0], error="blog_file_name_unrecognised",
                detail="expected <id>.<gender>.<age>.<industry>.<sign>.xml")
        return
    meta = m.groupdict()
    found = False
    for pm in _BLOG_POST.finditer(data):
        found = True
        line = data.count(b"\n", 0, pm.start()) + 1
        block = pm.group(0)
        if len(block) > opts.max_record_bytes:
            out.add(line, _too_long(block, opts.max_record_bytes), error="record_too_long",
                    detail=f"post longer than {opts.max_record_bytes} bytes")
            continue
        try:
            date, post = pm.group(1).decode("utf-8"), pm.group(2).decode("utf-8")
            raw = block.decode("utf-8")
        except UnicodeDecodeError:
            # The corpus predates UTF-8 everywhere: its stray bytes are Windows-1252.
            date, post = pm.group(1).decode("cp1252", "replace"), pm.group(2).decode("cp1252", "replace")
            raw = block.decode("cp1252", "replace")
        rec = {**meta, "date": date.strip(), "text": post.strip()}
        out.add(line, raw, payload=orjson.dumps(rec).decode())
        if out.full():
            yield from out.flush()
    if not found:
        out.add(1, _decode(data[:65_536])[0], error="blog_xml_no_posts", detail="no <date>/<post> pairs found")


# --- Twitter: API v2 pages, twarc-flattened v2 tweets, API v1.1 tweets ------------------------------
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


def _twitter_one(out: _Batcher, line: int, item: int, obj: Any, users: dict[str, dict]) -> None:
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


def _expand_twitter(out: _Batcher, line: int, text: str, item_base: int = 0, raw: str | None = None) -> None:
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


_EXPANDERS = {"twitter": _expand_twitter}
_FORMAT_READERS = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "blogxml": _read_blogxml,
}


def read_file(path: str, opts: ReaderOptions) -> Iterator[pa.RecordBatch]:
    """Frame one file into reader batches. An unreadable or truncated file keeps every record
    read before the fault and ends with a ``file_read_error`` row."""
    out = _Batcher(path, opts.batch_rows)
    try:
        fmt = detect_format(path)
        if fmt is None:
            raise ValueError(f"unknown file format for {path}")
        with open_binary(path) as stream:
            yield from _FORMAT_READERS[fmt](path, opts, stream, out)
        yield from out.flush()
    except Exception as exc:  # corrupt archive, permission, truncated stream …
        yield from out.flush()
        out.add(out.last_line + 1, None, error="file_read_error", detail=f"{type(exc).__name__}: {exc}"[:1000])
        yield from out.flush()


def arrow_schema() -> pa.Schema:
    return _ARROW_SCHEMA
