"""What Lewin knows about one source, in one object: the ``SourceSpec``.

A source module (``lewin.udfs.sources.reddit`` …) defines one ``SourceSpec`` and the registry
(``lewin.udfs.sources``) lists it. Every source-specific decision of the pipeline is read from the
spec:

* **reading** (``FileFormats``) — file formats only this source has (a reader per format name, the
  file extensions and dump names that select it), an ``expander`` that turns one framed record
  into several (Twitter API pages) and a framer for Parquet tables of its own layouts (the
  twitter100m dump). The generic formats (JSON lines, JSON, CSV, Parquet) are
  ``lewin.udfs.readers``';
* **bronze** — ``normalize`` (reader rows -> one wide frame with ``_table``/``_reason``/``_detail``,
  built on ``lewin.udfs.bronze``'s helpers) and ``bronze_tables`` (logical table name -> schema;
  the schemas themselves live in ``lewin.schemas.tables``);
* **curation** — ``streams``: each a bronze table curated into ``silver_records`` under its own
  rules, with the columns it carries to silver and its special steps as fields.

This module imports nothing heavy (no Spark): the types it names are for annotations only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructType

    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import LewinConfig
    from lewin.udfs.bronze import BronzeParams
    from lewin.udfs.readers import Batcher, ReaderOptions
    from lewin.udfs.rules import Check

FormatReader = Callable[[str, "ReaderOptions", "io.BufferedIOBase", "Batcher"], "Iterator[pa.RecordBatch]"]
"""``(path, opts, stream, out)``: frame one (decompressed) file into ``out``, yielding full batches."""
Expander = Callable[..., None]
"""``(out, line, text, item_base=0, raw=None)``: add the record(s) one framed JSON text holds."""
ParquetFramer = Callable[[str, "ReaderOptions", "pq.ParquetFile", "Batcher"], "Iterator[pa.RecordBatch] | None"]
"""``(path, opts, parquet_file, out)``: frame a Parquet table whose columns the source recognises
(batches, as a ``FormatReader``), or None to leave the file to the generic framing."""
Normalizer = Callable[["DataFrame", "BronzeParams"], "DataFrame"]
RuleBuilder = Callable[[Any], "Check"]
AccountStats = Callable[["TableStore", "LewinConfig", "DataFrame", str], "DataFrame"]
"""``(store, cfg, batch, bronze_table)``: the batch with account-level columns its rules read."""

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, eq=False)  # identity equality: hashable although it holds mappings
class FileFormats:
    """How a source's files are framed, beyond the generic formats every source reads."""

    readers: Mapping[str, FormatReader] = field(default_factory=dict)
    """Format name -> reader, for formats of this source only (``blogxml``)."""
    extensions: Mapping[str, str] = field(default_factory=dict)
    """File extension (lower case, with the dot, compression suffix removed) -> format name."""
    name_patterns: tuple[tuple[str, str], ...] = ()
    """(regular expression on a compressed file's base name, format): dumps named without an
    extension, e.g. Pushshift's ``RS_2019-01.zst``."""
    expander: Expander | None = None
    """Turns one framed JSON record into the source's records (or quarantine rows)."""
    parquet: ParquetFramer | None = None
    """Frames Parquet tables of the source's own layouts (recognised by their columns) before the
    generic framing (one JSON record per row, then the expander) is tried."""


@dataclass(frozen=True)
class RuleSpec:
    """One curation rule of a stream: a versioned name and the builder of its ``Check``."""

    name: str
    """``<source>_<what>_v<N>``; a changed meaning gets a new version."""
    build: RuleBuilder
    """Rule parameters -> ``lewin.udfs.rules.Check`` (Spark expressions over the bronze columns
    and ``clean_text``)."""
    default: Any = None
    """The parameters when ``curate.rules`` has no key of this name (a plugin's own rule); the
    built-in rules are configured there (``lewin.schemas.config.CurateRules``)."""


@dataclass(frozen=True)
class SideTable:
    """A bronze table copied to a silver table as it is (no rules), incrementally: the rows of
    bronze runs not copied yet, inserted when their ``key`` is new."""

    bronze_table: str
    table: str
    schema: StructType
    """The silver table's schema: bronze columns of the same names, plus ``_bronze_run_id`` and
    ``_curate_run_id``."""
    key: tuple[str, ...]


@dataclass(frozen=True)
class StreamSpec:
    """One curation stream: a bronze table curated into ``silver_records`` under its own rules.

    The stream's name is what ``lewin curate``, ``curate()`` and the funnel call it; its rows
    keep their silver ``source`` (the source's name: users are per source)."""

    name: str
    bronze_table: str
    kind: str = "post"
    """What one record of the stream is (``submission``, ``comment``, ``tweet``, ``blog_post``,
    ``review`` …): silver's ``kind`` column, which the LLM stage selects its inputs by."""
    rules: tuple[RuleSpec, ...] = ()
    """Evaluated in this order, the order failing rules are reported in."""
    carry: Mapping[str, str] | tuple[str, ...] = ()
    """Silver column -> bronze column carried to ``silver_records`` (a tuple: same names); every
    other source-specific silver column is null for the stream."""
    source: str = ""
    """The source the stream belongs to (filled in by ``SourceSpec``)."""
    fill_missing_from: str | None = None
    """A bronze table whose columns this stream's bronze table lacks are added as nulls before the
    rules run (Reddit comments run the Reddit rules, which read submission columns)."""
    account_stats: AccountStats | None = None
    """Adds account-level columns (over every bronze row of the batch's users) that rules read."""
    kcore_pool: str | None = None
    """Rows that pass the per-record stages go to this pool table; ``silver_records`` holds the
    pool's k-core (recomputed over the whole pool when new rows arrive)."""
    kcore_rule: str | None = None
    """The rule name rows outside the k-core are rejected with."""
    side_tables: tuple[SideTable, ...] = ()
    """Bronze tables copied to silver alongside the stream (Amazon's item catalogue)."""

    def __post_init__(self) -> None:
        carry = self.carry
        if not isinstance(carry, Mapping):
            carry = {c: c for c in carry}
        object.__setattr__(self, "carry", dict(carry))
        if self.kcore_pool is not None and self.kcore_rule is None:
            raise ValueError(f"stream {self.name}: kcore_pool needs a kcore_rule")

    @property
    def needs_account_stats(self) -> bool:
        return self.account_stats is not None


@dataclass(frozen=True)
class SourceSpec:
    """Everything Lewin knows about one source."""

    name: str
    """The ingest name (``lewin ingest --source``, ``ingest.sources``) and the silver ``source``."""
    bronze_tables: Mapping[str, StructType]
    """Logical bronze table -> schema; ``normalize`` sends every row to one of them (``_table``)."""
    normalize: Normalizer
    streams: tuple[StreamSpec, ...]
    """Curation streams, in the order ``lewin curate`` runs them."""
    formats: FileFormats = FileFormats()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"source name {self.name!r}: lower-case letters, digits, underscores")
        streams = []
        for s in self.streams:
            if s.source and s.source != self.name:
                raise ValueError(f"stream {s.name} says it belongs to {s.source!r}, not {self.name!r}")
            streams.append(replace(s, source=self.name) if not s.source else s)
        object.__setattr__(self, "streams", tuple(streams))
        object.__setattr__(self, "bronze_tables", dict(self.bronze_tables))

    def stream(self, name: str) -> StreamSpec:
        for s in self.streams:
            if s.name == name:
                return s
        raise ValueError(f"source {self.name} has no stream {name!r}; it has {[s.name for s in self.streams]}")
