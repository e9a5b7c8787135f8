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
lines come out as ``blank_line`` so the funnel can count them.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import orjson
import pyarrow as pa

from lewin.udfs.compression import open_binary, split_compression

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


def clipped(b: bytes) -> str:
    """The first 64 KiB of an over-long record, decoded: what quarantine keeps of it."""
    return decode(b[: min(len(b), 65_536)])[0]


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
def _read_jsonl(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: Batcher) -> Iterator[pa.RecordBatch]:
    expand = opts.expander
    for line_no, b, too_long in _iter_lines(stream, opts.max_record_bytes):
        b = _strip_cr(b)
        if too_long:
            out.add(line_no, clipped(b), error="record_too_long",
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
                out.add(line_no, text)
        if out.full():
            yield from out.flush()


def _read_json(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: Batcher) -> Iterator[pa.RecordBatch]:
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
    text, ok = decode(data)
    if not ok:
        out.add(1, text[:65_536], error="invalid_utf8", detail="file is not valid UTF-8")
        return
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        out.add(1, text[:65_536], error="malformed_json", detail=f"file is not JSON: {exc}")
        return
    records = doc if isinstance(doc, list) else [doc]
    expand = opts.expander
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
    read before the fault and ends with a ``file_read_error`` row."""
    out = Batcher(path, opts.batch_rows)
    try:
        fmt = detect_format(path, opts.formats)
        if fmt is None:
            raise ValueError(f"unknown file format for {path}")
        reader = _format_reader(fmt, opts.formats)
        with open_binary(path) as stream:
            yield from reader(path, opts, stream, out)
        yield from out.flush()
    except Exception as exc:  # corrupt archive, permission, truncated stream …
        yield from out.flush()
        out.add(out.last_line + 1, None, error="file_read_error", detail=f"{type(exc).__name__}: {exc}"[:1000])
        yield from out.flush()


def arrow_schema() -> pa.Schema:
    return _ARROW_SCHEMA
