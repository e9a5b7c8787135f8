"""The source registry: every source Lewin ingests and curates, one ``SourceSpec`` each.

``SOURCES`` (name -> spec) is the one place the pipeline learns which sources exist; a source is
one module (``reddit.py`` …) and one line in ``_BUILTIN`` below, or one ``register(spec)`` call
for a source defined elsewhere. Ingest, bronze, readers, rules, curate, scrub, the CLI and the
configuration's ``ingest.sources`` check all read from here.

Names: a *source* is what is ingested (``lewin ingest --source``) and what silver's ``source``
column holds; a *stream* is what is curated (``lewin curate``, the curate funnel): Reddit has two,
``reddit`` (submissions) and ``reddit_comments``, both of source ``reddit``.

The framework modules (``lewin.udfs.readers``, ``bronze``, ``rules``) import this package only
inside functions: the source modules import them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from lewin.udfs.sources import amazon, blogger, reddit, twitter
from lewin.udfs.sources.base import FileFormats, RuleSpec, SideTable, SourceSpec, StreamSpec

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql.types import StructType

__all__ = [
    "SOURCES", "FileFormats", "RuleSpec", "SideTable", "SourceSpec", "StreamSpec", "all_file_formats",
    "bronze_schema", "bronze_tables", "file_formats", "get", "names", "record_kinds", "register", "stream", "stream_names",
    "streams", "unregister",
]

SOURCES: dict[str, SourceSpec] = {}

# the columns every curated stream's bronze table has (lewin.schemas.tables._COMMON + _run_id)
_STREAM_COLUMNS = ("record_id", "source", "user_id", "event_ts", "title", "text", "_run_id")


def _check(spec: SourceSpec) -> None:
    """Refuse a spec that would clash with the registered ones or cannot be curated."""
    from lewin.schemas import tables as T
    from lewin.udfs.readers import GENERIC_EXTENSIONS

    others = [s for n, s in SOURCES.items() if n != spec.name]
    taken_tables = {t: s.name for s in others for t in s.bronze_tables}
    taken_streams = {st.name: s.name for s in others for st in s.streams}
    taken_ext = {e: s.name for s in others for e in s.formats.extensions}
    for t in spec.bronze_tables:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", t):
            raise ValueError(f"source {spec.name}: bronze table name {t!r} is not a plain lower-case name")
        if t in taken_tables:
            raise ValueError(f"source {spec.name}: bronze table {t} already belongs to {taken_tables[t]}")
    for e in spec.formats.extensions:
        if e in GENERIC_EXTENSIONS or e in taken_ext:
            raise ValueError(f"source {spec.name}: extension {e} is taken ({taken_ext.get(e, 'generic formats')})")
        if spec.formats.extensions[e] not in spec.formats.readers:
            raise ValueError(f"source {spec.name}: extension {e} names format "
                             f"{spec.formats.extensions[e]!r}, which it has no reader for")
    if not spec.streams:
        raise ValueError(f"source {spec.name}: at least one curation stream")
    silver = set(T.SILVER_RECORDS.fieldNames())
    seen: set[str] = set()
    for st in spec.streams:
        if st.name in taken_streams or st.name in seen:
            raise ValueError(f"source {spec.name}: stream {st.name} already exists "
                             f"({taken_streams.get(st.name, spec.name)})")
        seen.add(st.name)
        if st.bronze_table not in spec.bronze_tables:
            raise ValueError(f"stream {st.name}: bronze table {st.bronze_table} is not one of {spec.name}'s")
        cols = set(spec.bronze_tables[st.bronze_table].fieldNames())
        if st.fill_missing_from is not None:
            if st.fill_missing_from not in spec.bronze_tables:
                raise ValueError(f"stream {st.name}: fill_missing_from {st.fill_missing_from} is not one of "
                                 f"{spec.name}'s bronze tables")
            cols |= set(spec.bronze_tables[st.fill_missing_from].fieldNames())
        missing = [c for c in _STREAM_COLUMNS if c not in cols]
        if missing:
            raise ValueError(f"stream {st.name}: bronze table {st.bronze_table} lacks {missing}")
        for to, frm in st.carry.items():
            if to not in silver:
                raise ValueError(f"stream {st.name}: carries {frm} to {to}, which silver_records does not have")
            if frm not in cols:
                raise ValueError(f"stream {st.name}: carries {frm}, which {st.bronze_table} does not have")
        for side in st.side_tables:
            if side.bronze_table not in spec.bronze_tables:
                raise ValueError(f"stream {st.name}: side table from {side.bronze_table}, not one of {spec.name}'s")
            have = set(spec.bronze_tables[side.bronze_table].fieldNames())
            need = {"_run_id", "_file", "_line"} | (set(side.schema.fieldNames()) - {"_bronze_run_id", "_curate_run_id"})
            if need - have or not set(side.key) <= set(side.schema.fieldNames()):
                raise ValueError(f"stream {st.name}: side table {side.table} needs {sorted(need - have)} from "
                                 f"{side.bronze_table} and its key {side.key} among its columns")


def register(spec: SourceSpec, replace: bool = False) -> SourceSpec:
    """Add a source (``replace``: swap a registered one of the same name). Returns ``spec``."""
    if spec.name in SOURCES and not replace:
        raise ValueError(f"source {spec.name} is already registered")
    _check(spec)
    SOURCES[spec.name] = spec
    return spec


def unregister(name: str) -> SourceSpec | None:
    return SOURCES.pop(name, None)


_BUILTIN = [
    reddit.SOURCE,
    twitter.SOURCE,
    blogger.SOURCE,
    amazon.SOURCE,
]
for _spec in _BUILTIN:
    register(_spec)


# --- look-ups ------------------------------------------------------------------------------------
def names() -> tuple[str, ...]:
    """Registered source names, in registration order (the order ``lewin run`` ingests them)."""
    return tuple(SOURCES)


def get(name: str) -> SourceSpec:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; known: {list(SOURCES)}") from None


def streams(source: str | None = None) -> list[StreamSpec]:
    """Curation streams of one source, or of every source (registration order, then the source's)."""
    specs = [get(source)] if source is not None else list(SOURCES.values())
    return [st for s in specs for st in s.streams]


def stream_names() -> tuple[str, ...]:
    return tuple(st.name for st in streams())


def record_kinds() -> tuple[str, ...]:
    """The record kinds the registered streams produce (silver's ``kind`` column)."""
    return tuple(dict.fromkeys(st.kind for st in streams()))


def stream(name: str) -> StreamSpec:
    for st in streams():
        if st.name == name:
            return st
    raise ValueError(f"unknown curation stream {name!r}; known: {sorted(stream_names())}")


def bronze_tables(source: str | None = None) -> dict[str, StructType]:
    """Bronze table -> schema, of one source or of every source."""
    specs = [get(source)] if source is not None else list(SOURCES.values())
    return {t: schema for s in specs for t, schema in s.bronze_tables.items()}


def bronze_schema(table: str) -> StructType:
    tables = bronze_tables()
    if table not in tables:
        raise ValueError(f"unknown bronze table {table!r}; known: {sorted(tables)}")
    return tables[table]


def file_formats(source: str) -> FileFormats:
    """The source's own formats and expander (none for a source not registered here)."""
    spec = SOURCES.get(source)
    return spec.formats if spec is not None else FileFormats()


def all_file_formats() -> list[FileFormats]:
    return [s.formats for s in SOURCES.values()]
