"""Readers: frame raw dump files into records (file, line, raw text), nothing more.

A reader turns one file into Arrow batches of ``lewin.schemas.tables.READER_OUTPUT``: where each
record starts (file, 1-based line, item index inside the line), its original text, and — when the
text Spark must parse differs from the original (CSV rows, XML posts, Twitter API pages) — a JSON
payload. Field parsing, typing and validation happen afterwards in Spark built-in expressions
(``lewin.udfs.bronze``), so the Python work here stays small: decompress, split, frame.

This module holds the generic formats (JSON lines, JSON, CSV, Parquet) and the framing they share;
a source's own formats, its expander (one JSON record -> several records) and its framing of the
Parquet tables it recognises by their columns come from its spec (``lewin.udfs.sources``,
``FileFormats``), which ``ReaderOptions`` carries to the worker processes.

Readers never drop a record silently: a record they cannot frame comes out with ``error`` set
(``invalid_utf8``, ``record_too_long``, ``csv_field_count_mismatch``, …) and its raw text; blank
lines come out as ``blank_line`` so the funnel can count them. A JSON line that is not exactly one
JSON value is caught here, where the whole line is at hand (an engine's JSON parser reads a valid
prefix and drops the rest, or fails the whole record): ``glued_records`` (two or more values on
one line), ``trailing_garbage`` (a value, then text that is not JSON) and ``number_out_of_range``
(a number no 64-bit float holds, e.g. ``1e400``). A UTF-8 byte order mark is dropped wherever a
record or a header starts. A file that cannot be read to its end (a truncated archive, an I/O
fault) keeps every record read before the fault and ends with one ``file_read_error`` row saying
how far the read got; its raw text is the unfinished record the fault cut, if any.

Raw texts the readers cut (an over-long record, a file-level fault) keep ``raw_max_chars`` + 1
characters, so that quarantine, which keeps ``raw_max_chars``, sees and flags the cut.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import orjson
import pyarrow as pa

from lewin.udfs.compression import input_position, open_binary, split_compression

if TYPE_CHECKING:  # pragma: no cover
    from lewin.udfs.sources.base import FileFormats

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

FORMATS = ("jsonl", "json", "csv", "parquet")
"""The generic formats, read for every source; sources add their own (``FileFormats.readers``)."""
GENERIC_EXTENSIONS = {  # extension -> generic format
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}
_CHUNK = 8 << 20  # bytes read per step from a (decompressed) stream
BOM = b"\xef\xbb\xbf"  # the UTF-8 byte order mark
RAW_MAX_CHARS = 65_536  # what quarantine keeps of a raw text (ingest.quarantine_raw_max_chars' default)


@dataclass(frozen=True)
class ReaderOptions:
    source: str
    max_record_bytes: int = 1_048_576
    batch_rows: int = 20_000
    formats: "FileFormats | None" = None
    """The source's own formats and expander; looked up in the source registry when not given
    (resolved here, in the driver, so worker processes need no registry entry)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Per-source reader options (``ingest.sources.<source>``'s keys other than ``paths``, e.g. a
    side table's location); a source's readers look up the ones they know."""
    raw_max_chars: int = RAW_MAX_CHARS
    """What quarantine keeps of a raw text: a raw text the reader cuts keeps one character more,
    so that the cut is seen (``raw_truncated``)."""

    def __post_init__(self) -> None:
        if self.formats is None:
            from lewin.udfs import sources

            object.__setattr__(self, "formats", sources.file_formats(self.source))

    @property
    def expander(self) -> Callable[..., None] | None:
        return self.formats.expander if self.formats is not None else None


def _extension_map(extra: "FileFormats | None") -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Extension -> format and (name pattern, format) over the generic formats, every registered
    source's, and ``extra``'s (a source registered only in the driver process)."""
    from lewin.udfs import sources

    exts, patterns = dict(GENERIC_EXTENSIONS), []
    for ff in [*sources.all_file_formats(), *([extra] if extra is not None else [])]:
        exts.update(ff.extensions)
        patterns.extend(ff.name_patterns)
    return exts, patterns


def detect_format(path: str | Path, formats: "FileFormats | None" = None) -> str | None:
    """The record format from the file name (compression suffix ignored); None if unknown."""
    base, compression = split_compression(path)
    exts, patterns = _extension_map(formats)
    suffix = Path(base).suffix.lower()
    fmt = exts.get(suffix)
    if fmt is None and compression is not None:
        if suffix in ("", ".txt"):
            return "jsonl"  # a compressed dump without a record extension holds JSON lines
        for pattern, named in patterns:
            if re.match(pattern, Path(base).name):
                return named
    return fmt


class Batcher:
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


def decode(b: bytes) -> tuple[str, bool]:
    """(text, ok). Invalid UTF-8 keeps its bytes visible as \\xNN escapes."""
    try:
        return b.decode("utf-8"), True
    except UnicodeDecodeError:
        return b.decode("utf-8", "backslashreplace"), False


def clipped(b: bytes, limit: int = RAW_MAX_CHARS) -> str:
    """The start of an over-long record, decoded: ``limit`` characters (what quarantine keeps of
    it) and one more when the record is longer, so that the cut shows (``raw_truncated``)."""
    return clip_text(decode(b[: (limit + 1) * 4])[0], limit)


def clip_text(text: str, limit: int = RAW_MAX_CHARS) -> str:
    """``text`` cut to ``limit`` + 1 characters (see ``clipped``)."""
    return text if len(text) <= limit else text[: limit + 1]


def strip_bom(b: bytes) -> bytes:
    """``b`` without the UTF-8 byte order marks it starts with."""
    while b.startswith(BOM):
        b = b[3:]
    return b


# --- JSON values: what an engine's JSON parser would misread ----------------------------------------
class _Scan:
    """Python's JSON decoder (which, unlike orjson, tells where a value ends and accepts NaN, as
    Spark's parser does), noting the numbers no 64-bit float holds instead of turning them into
    infinities."""

    def __init__(self) -> None:
        self.too_big: list[str] = []
        self.decoder = json.JSONDecoder(parse_float=self._float, parse_int=self._int)

    def _float(self, s: str) -> float:
        v = float(s)
        if math.isinf(v):
            self.too_big.append(s)
        return v

    def _int(self, s: str) -> int:
        v = int(s)
        if len(s) > 300:
            try:
                float(v)
            except OverflowError:
                self.too_big.append(s)
        return v

    def value(self, text: str, idx: int) -> tuple[Any, int]:
        """(value, end) of the JSON value at ``idx``; ValueError/RecursionError when there is none."""
        self.too_big.clear()
        return self.decoder.raw_decode(text, idx)


_WS = " \t\n\r"


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _number_detail(text: str, literal: str) -> str:
    shown = literal if len(literal) <= 40 else literal[:37] + "..."
    m = re.search(r'"((?:[^"\\]|\\.){1,80})"\s*:\s*' + re.escape(literal), text)
    where = f"{m.group(1)}=" if m else "number "
    return f"{where}{shown}: beyond the range of a 64-bit float"


def json_fault(text: str) -> tuple[str, str] | None:
    """(reason, detail) when a JSON-lines record is not exactly one JSON value an engine can read:
    ``glued_records``, ``trailing_garbage``, ``number_out_of_range``; None for one good value and
    for text that is no JSON at all (the engine reports that: ``malformed_json``)."""
    try:
        orjson.loads(text)
        return None  # the common case: one valid value
    except orjson.JSONDecodeError:
        pass
    scan = _Scan()
    start = _skip_ws(text, 0)
    try:
        _, end = scan.value(text, start)
    except (ValueError, RecursionError):
        return None  # not JSON from its first character: the engine says malformed_json
    too_big = list(scan.too_big)
    rest = _skip_ws(text, end)
    if rest < len(text):
        values, i = 1, rest
        while i < len(text) and values < 10_000:
            if text[i] == ",":  # objects glued with a comma
                i = _skip_ws(text, i + 1)
                continue
            try:
                _, j = scan.value(text, i)
            except (ValueError, RecursionError):
                break
            values, i = values + 1, _skip_ws(text, j)
        if values > 1 and i >= len(text):
            return "glued_records", f"{values} JSON values on one line (the second starts at character {rest + 1})"
        tail = text[rest:]
        shown = tail if len(tail) <= 60 else tail[:57] + "..."
        return "trailing_garbage", (f"{len(tail)} character{'s' if len(tail) != 1 else ''} after the JSON value "
                                    f"that ends at character {end}: {shown!r}")
    if too_big:
        return "number_out_of_range", _number_detail(text, too_big[0])
    return None  # valid for Python and Spark alike (NaN, …): the engine decides


def loads_lenient(text: str) -> Any:
    """``text`` parsed as JSON the way Spark's parser accepts it (NaN, Infinity, numbers orjson
    refuses); raises ValueError like ``orjson.loads``."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            return json.loads(text)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def dumps_any(obj: Any) -> str:
    """JSON text of a parsed value (orjson; the standard library for integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, ensure_ascii=False)


# --- faults while reading ----------------------------------------------------------------------------
class StreamFault(Exception):
    """A read fault inside a file, with where it hit: the line the unfinished record starts on and
    that record's bytes (the text the fault cut)."""

    def __init__(self, cause: BaseException, line: int, tail: bytes = b""):
        super().__init__(str(cause))
        self.cause, self.line, self.tail = cause, line, tail


def read_all(stream: io.BufferedIOBase) -> tuple[bytes, Exception | None]:
    """Every byte the stream gives, and the fault that stopped it (None: read to its end). The
    bytes decoded before a fault are kept, for the readers that need a whole file at once."""
    parts: list[bytes] = []
    try:
        for chunk in _chunks(stream):
            parts.append(chunk)
    except Exception as exc:  # truncated archive, I/O error
        return b"".join(parts), exc
    return b"".join(parts), None


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
    chunks = _chunks(stream)
    while True:
        try:
            chunk = next(chunks, None)
        except Exception as exc:  # the stream broke: the unfinished line is what the fault cut
            raise StreamFault(exc, line_no + 1, b"" if skipping else rest) from exc
        if chunk is None:
            break
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
def _read_jsonl(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: Batcher) -> Iterator[pa.RecordBatch]:
    expand = opts.expander
    for line_no, b, too_long in _iter_lines(stream, opts.max_record_bytes):
        b = strip_bom(_strip_cr(b))  # a BOM starts a file (or each file of a concatenation)
        if too_long:
            out.add(line_no, clipped(b, opts.raw_max_chars), error="record_too_long",
                    detail=f"line longer than {opts.max_record_bytes} bytes")
        elif not b.strip():
            out.add(line_no, None, error="blank_line")
        else:
            text, ok = decode(b)
            if not ok:
                out.add(line_no, text, error="invalid_utf8", detail="line is not valid UTF-8")
            elif expand is not None:
                expand(out, line_no, text)
            else:
                fault = json_fault(text)
                if fault is not None:
                    out.add(line_no, text, error=fault[0], detail=fault[1])
                else:
                    out.add(line_no, text)
        if out.full():
            yield from out.flush()


def _first_line_is_a_record(first: bytes) -> bool:
    """Whether a .json file's first line holds a whole JSON value that is not an array (the file
    is JSON lines) rather than the start of a document."""
    text, ok = decode(first)
    if not ok or not text:
        return False
    try:
        value, _ = _Scan().value(text, 0)
    except (ValueError, RecursionError):
        return False
    return not isinstance(value, list)


def _read_json(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: Batcher) -> Iterator[pa.RecordBatch]:
    """A .json file: JSON lines if its first line is a JSON value, else one document
    (an array of records, or one object). A truncated file keeps its complete lines."""
    data, fault = read_all(stream)
    data = strip_bom(data)
    first = data.split(b"\n", 1)[0].strip()
    if _first_line_is_a_record(first):
        if fault is None:
            yield from _read_jsonl(path, opts, io.BytesIO(data), out)
            return
        cut = data.rfind(b"\n") + 1  # the line the fault cut is the fault row's raw text
        yield from _read_jsonl(path, opts, io.BytesIO(data[:cut]), out)
        raise StreamFault(fault, data.count(b"\n", 0, cut) + 1, data[cut:]) from fault
    if fault is not None:  # a document cut short is no document: the fault row carries its start
        raise StreamFault(fault, 1, data) from fault
    text, ok = decode(data)
    if not ok:
        out.add(1, clip_text(text, opts.raw_max_chars), error="invalid_utf8", detail="file is not valid UTF-8")
        return
    expand = opts.expander
    for i, rec_text, error, detail in _document_records(text):
        if error is not None:
            out.add(1, clip_text(rec_text, opts.raw_max_chars), error=error, detail=detail, item=i)
        elif expand is not None:
            expand(out, 1, rec_text, item_base=i)
        else:
            out.add(1, rec_text, item=i)
        if out.full():
            yield from out.flush()


def _document_records(text: str) -> Iterator[tuple[int, str, str | None, str | None]]:
    """(item, record text, error, detail) of a JSON document: an array's elements, or the one
    value. One bad element (a number out of range) is its own row, not the whole file's."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        doc, first_error = None, exc
    else:
        for i, rec in enumerate(doc if isinstance(doc, list) else [doc]):
            yield i, orjson.dumps(rec).decode(), None, None
        return
    scan = _Scan()
    start = _skip_ws(text, 0)
    if not text.startswith("[", start):  # one value: the same checks as a JSON line
        fault = json_fault(text)
        if fault is None:
            try:
                yield 0, dumps_any(loads_lenient(text)), None, None
                return
            except ValueError:
                fault = ("malformed_json", f"file is not JSON: {first_error}")
        yield 0, text, fault[0], fault[1]
        return
    pos, item = _skip_ws(text, start + 1), 0
    while pos < len(text) and text[pos] != "]":
        try:
            rec, end = scan.value(text, pos)
        except (ValueError, RecursionError) as exc:
            yield item, text[pos:], "malformed_json", f"array element {item} and what follows are not JSON: {exc}"
            return
        if scan.too_big:
            yield item, text[pos:end], "number_out_of_range", _number_detail(text[pos:end], scan.too_big[0])
        else:
            yield item, dumps_any(rec), None, None
        item += 1
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            yield item, text[pos:], "malformed_json", f"array element {item} and what follows are not JSON: {first_error}"
            return
    rest = _skip_ws(text, pos + 1)
    if pos >= len(text):
        yield item, "", "malformed_json", f"the array is not closed: {first_error}"
    elif rest < len(text):
        tail = text[rest:]
        yield item, tail, "trailing_garbage", f"{len(tail)} character(s) after the document's closing bracket"


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


def _read_csv(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: Batcher) -> Iterator[pa.RecordBatch]:
    csv.field_size_limit(max(opts.max_record_bytes * 4, 1 << 20))
    text_stream = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape", newline="")
    tap = _LineTap(text_stream)
    reader = csv.reader(tap)
    header: list[str] | None = None
    expand = opts.expander
    while True:
        start = tap.line_no + 1
        tap.taken = []
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raw = clip_text("".join(tap.taken), opts.raw_max_chars)
            out.add(start, raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"),
                    error="csv_parse_error", detail=str(exc))
            continue
        except Exception as exc:  # the stream broke inside this row
            raise StreamFault(exc, start, "".join(tap.taken).encode("utf-8", "surrogateescape")) from exc
        raw = "".join(tap.taken)
        if header is None:
            header = [h.lstrip("\ufeff") for h in row[:1]] + row[1:]  # a BOM is not part of the first name
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            out.add(start, None, error="blank_line")
            continue
        bad_utf8 = bool(_SURROGATE.search(raw))
        if bad_utf8:
            raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raw_bytes = len(raw.encode("utf-8", "surrogatepass"))
        if raw_bytes > opts.max_record_bytes:
            out.add(start, clip_text(raw, opts.raw_max_chars), error="record_too_long",
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
def _read_parquet(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: Batcher) -> Iterator[pa.RecordBatch]:
    """One JSON record per row; a Parquet table whose columns the source knows (its
    ``FileFormats.parquet``: the twitter100m dump) is framed by the source instead."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(stream)
    own = opts.formats.parquet if opts.formats is not None else None
    framed = own(path, opts, pf, out) if own is not None else None
    if framed is not None:
        yield from framed
        return
    row_no = 0
    expand = opts.expander
    for batch in pf.iter_batches(batch_size=opts.batch_rows):
        for rec in batch.to_pylist():
            row_no += 1
            text = orjson.dumps(rec, default=str).decode()
            if expand is not None:
                expand(out, row_no, text)
            else:
                out.add(row_no, text)
        yield from out.flush()


_FORMAT_READERS = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "csv": _read_csv,
    "parquet": _read_parquet,
}


def _format_reader(fmt: str, extra: "FileFormats | None"):
    if fmt in _FORMAT_READERS:
        return _FORMAT_READERS[fmt]
    if extra is not None and fmt in extra.readers:
        return extra.readers[fmt]
    from lewin.udfs import sources

    for ff in sources.all_file_formats():
        if fmt in ff.readers:
            return ff.readers[fmt]
    raise ValueError(f"no reader for format {fmt!r}")


def read_file(path: str, opts: ReaderOptions) -> Iterator[pa.RecordBatch]:
    """Frame one file into reader batches. An unreadable or truncated file keeps every record
    read before the fault and ends with a ``file_read_error`` row saying how far the read got."""
    out = Batcher(path, opts.batch_rows)
    stream = None
    try:
        fmt = detect_format(path, opts.formats)
        if fmt is None:
            raise ValueError(f"unknown file format for {path}")
        reader = _format_reader(fmt, opts.formats)
        stream = open_binary(path)
        yield from reader(path, opts, stream, out)
        yield from out.flush()
    except Exception as exc:  # corrupt or truncated archive, permission, I/O …
        yield from out.flush()
        line, raw, detail = _fault_row(exc, out, stream, opts)
        out.add(line, raw, error="file_read_error", detail=detail)
        yield from out.flush()
    finally:
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing a broken stream must not hide the fault already reported
                pass


def _fault_row(exc: Exception, out: Batcher, stream, opts: ReaderOptions) -> tuple[int, str | None, str]:
    """(line, raw, detail) of a ``file_read_error`` row: the fault, the last line read, how much
    of the (compressed) file was read, and the unfinished record the fault cut as raw text."""
    cause = exc.cause if isinstance(exc, StreamFault) else exc
    tail = strip_bom(exc.tail) if isinstance(exc, StreamFault) else b""
    line = max(exc.line if isinstance(exc, StreamFault) else 0, out.last_line + 1)
    where = [f"read to line {out.last_line}" if out.last_line else "no complete record read"]
    if stream is not None:
        pos, size = input_position(stream)
        if pos is not None:
            where.append(f"byte {pos:,}" + (f" of {size:,}" if size else "") + " of the file")
    if tail.strip():
        where.append(f"the unfinished record after it ({len(tail):,} bytes) is this row's raw text")
    detail = f"{type(cause).__name__}: {cause}"[:700] + "; " + ", ".join(where)
    raw = clipped(tail, opts.raw_max_chars) if tail.strip() else None
    return line, raw, detail[:1000]


def arrow_schema() -> pa.Schema:
    return _ARROW_SCHEMA
