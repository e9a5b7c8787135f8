"""Table I/O at the edges: logical table names -> Delta (or Parquet) tables, reads, MERGE writes.

Logical names (``bronze_reddit``, ``quarantine``, ``users`` …) resolve to
``<catalog>.<database>.<name>`` on a metastore (Databricks / Unity Catalog) or to a folder under
``storage.root`` on the embedded and local engines, where each table is also registered by name in
the session's catalog so SQL can say ``FROM users``. Every write that must be idempotent is a
MERGE keyed on the table's id column (insert-if-absent or upsert), expressed in SQL so it runs
unchanged on Sail, delta-spark and Databricks.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from lewin.jobs.engine import Engine
from lewin.schemas.config import StorageConfig
from lewin.udfs import fs

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_view_counter = itertools.count()


@dataclass
class TableStore:
    engine: Engine
    storage: StorageConfig
    reads_by_stage: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set), repr=False)
    """Tables each stage read (``recording_reads``): checked against the stages' declarations."""
    _reading_stage: str | None = field(default=None, repr=False)

    @contextmanager
    def recording_reads(self, stage: str):
        outer, self._reading_stage = self._reading_stage, stage
        try:
            yield
        finally:
            self._reading_stage = outer

    @property
    def spark(self) -> SparkSession:
        return self.engine.spark

    @property
    def fmt(self) -> str:
        return "parquet" if self.engine.table_format == "parquet" else self.storage.format

    @property
    def uses_paths(self) -> bool:
        """Local engines keep tables in folders; metastore engines by name only."""
        return self.engine.kind in ("embedded", "spark") and self.storage.catalog is None

    # --- naming ------------------------------------------------------------------------------
    def qualified_name(self, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError(f"table name {name!r} is not a plain identifier")
        override = self.storage.tables.get(name)
        if override and not self.uses_paths:
            return override
        prefix = f"{self.storage.catalog}.{self.storage.database}" if self.storage.catalog else self.storage.database
        return f"{prefix}.{name}"

    def path(self, name: str) -> str:
        """The table's folder: a local path or an object-store URL (``lewin.udfs.fs``)."""
        override = self.storage.tables.get(name)
        if override and self.uses_paths:
            return fs.location(override)
        return fs.join(self.storage.root_location, name)

    def ref(self, name: str) -> str:
        """What SQL statements name the table by (a path reference locally, a name otherwise)."""
        if self.uses_paths:
            return f"{self.fmt}.`{self.path(name)}`"
        return self.qualified_name(name)

    # --- state -------------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        if self.uses_paths:
            p = self.path(name)
            if self.fmt == "delta":
                return fs.isdir(fs.join(p, "_delta_log"))
            return any(f.endswith(".parquet") for f in fs.list_files(p))
        return bool(self.spark.catalog.tableExists(self.qualified_name(name)))

    def read(self, name: str, schema: StructType | None = None) -> DataFrame:
        if self._reading_stage is not None and not name.startswith("_"):
            self.reads_by_stage[self._reading_stage].add(name)
        if not self.exists(name):
            if schema is None:
                raise FileNotFoundError(f"table {name} does not exist yet")
            return self.spark.createDataFrame([], schema)
        if self.uses_paths:
            return self.spark.read.format(self.fmt).load(self.path(name))
        return self.spark.read.table(self.qualified_name(name))

    def is_empty(self, name: str) -> bool:
        return not self.exists(name) or self.read(name).limit(1).count() == 0

    def count(self, name: str) -> int:
        return self.read(name).count() if self.exists(name) else 0

    def ensure(self, name: str, schema: StructType) -> None:
        """Create an empty table with ``schema`` if it is missing, and register its name."""
        if not self.exists(name):
            empty = self.spark.createDataFrame([], schema)
            self._write(empty, name, mode="append")
        self.register(name)

    def register(self, name: str) -> None:
        """Make ``name`` addressable in SQL (``FROM name`` after ``USE``, or ``database.name``)."""
        if not self.uses_paths or name.startswith("_") or not self.exists(name):
            return
        db = self.storage.database
        self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {db}")
        self.spark.sql(
            f"CREATE TABLE IF NOT EXISTS {db}.{name} USING {self.fmt} LOCATION '{self.path(name)}'"
        )
        if self.fmt == "parquet":
            # a Parquet table's file listing is cached by the session: rewritten folders need a refresh
            self.spark.catalog.refreshTable(f"{db}.{name}")

    def list_tables(self, prefix: str = "") -> list[str]:
        """Logical names of the tables that exist (folders under the root, or the schema's tables)."""
        if self.uses_paths:
            return [n for n in fs.list_dirs(self.storage.root_location)
                    if n.startswith(prefix) and _NAME_RE.match(n) and self.exists(n)]
        prefix_q = f"{self.storage.catalog}.{self.storage.database}" if self.storage.catalog else self.storage.database
        try:
            rows = self.spark.sql(f"SHOW TABLES IN {prefix_q}").collect()
        except Exception:  # the schema does not exist yet
            return []
        return sorted(r["tableName"] for r in rows if r["tableName"].startswith(prefix))

    def register_all(self) -> list[str]:
        """Register every table found under ``storage.root`` and ``USE`` Lewin's database."""
        names: list[str] = []
        if self.uses_paths:
            for child in fs.list_dirs(self.storage.root_location):
                if _NAME_RE.match(child) and not child.startswith("_") and self.exists(child):
                    self.register(child)
                    names.append(child)
            self.spark.sql(f"CREATE DATABASE IF NOT EXISTS {self.storage.database}")
        else:
            if self.storage.catalog:
                self.spark.catalog.setCurrentCatalog(self.storage.catalog)
            self.spark.sql(f"CREATE SCHEMA IF NOT EXISTS {self.storage.database}")
        self.spark.catalog.setCurrentDatabase(self.storage.database)
        return names

    # --- writes ------------------------------------------------------------------------------
    def _write(self, df: DataFrame, name: str, mode: str) -> None:
        w = df.write.format(self.fmt).mode(mode)
        if self.uses_paths:
            w.save(self.path(name))
        else:
            w.saveAsTable(self.qualified_name(name))

    def append(self, name: str, df: DataFrame) -> None:
        self._write(df, name, mode="append")
        self.register(name)

    def overwrite(self, name: str, df: DataFrame) -> None:
        if self.fmt == "parquet" and self.uses_paths and self.exists(name):
            # Spark cannot overwrite a Parquet folder it is reading from; stage through a copy.
            tmp = self.path(name) + ".__overwrite"
            fs.rm(tmp)
            df.write.format("parquet").save(tmp)
            fs.rm(self.path(name))
            fs.move(tmp, self.path(name))
        elif self.fmt == "parquet" and self.exists(name):
            # nor a Parquet table by name (a Spark Connect server or metastore without Delta): the
            # same staging, through a second table
            tmp = f"{name}__overwrite"
            self._write(df, tmp, mode="overwrite")
            self._write(self.spark.read.table(self.qualified_name(tmp)), name, mode="overwrite")
            self.spark.sql(f"DROP TABLE IF EXISTS {self.qualified_name(tmp)}")
        else:
            self._write(df, name, mode="overwrite")
        self.register(name)

    def checkpointer(self, names: tuple[str, str]):
        """``checkpoint(df, round) -> df`` for iterative jobs: write the frame, read it back (short
        lineage). Alternates between the two tables ``names``, since a table cannot be overwritten
        from itself."""
        tick = [0]

        def checkpoint(df: DataFrame, _round: int) -> DataFrame:
            name = names[tick[0] % 2]
            tick[0] += 1
            self.overwrite(name, df)
            return self.read(name)

        return checkpoint

    def drop(self, name: str) -> None:
        if self.uses_paths:
            self.spark.sql(f"DROP TABLE IF EXISTS {self.storage.database}.{name}")
            fs.rm(self.path(name))
        else:
            self.spark.sql(f"DROP TABLE IF EXISTS {self.qualified_name(name)}")

    def _barrier(self, df: DataFrame) -> DataFrame:
        if self.engine.kind == "embedded":
            # Sail 0.7 evaluates a write source's projection (and the target's NOT NULL checks)
            # on rows its filters remove; a repartition barrier makes the filter run first.
            return df.repartition(max(1, self.engine.python_workers))
        return df

    def _temp_view(self, df: DataFrame) -> str:
        df = self._barrier(df)
        view = f"lewin_src_{os.getpid()}_{next(_view_counter)}"
        df.createOrReplaceTempView(view)
        return view

    def merge(self, name: str, source: DataFrame, keys: list[str]) -> "MergeBuilder":
        """A typed Delta MERGE of ``source`` into ``name`` on equal ``keys`` (delta-spark's
        ``DeltaTable.merge`` shape, rendered as SQL so it runs on Sail, delta-spark and Databricks)."""
        if self.fmt != "delta":
            raise ValueError(f"MERGE needs a Delta table; {name} is {self.fmt}")
        if not keys:
            raise ValueError("merge: at least one key column")
        return MergeBuilder(self, name, source, list(keys))

    def insert_new(self, name: str, df: DataFrame, keys: list[str], schema: StructType) -> None:
        """Insert rows whose ``keys`` are not in the table yet (idempotent append).

        ``df`` must hold unique keys. Delta: ``MERGE … WHEN NOT MATCHED THEN INSERT``; Parquet:
        an anti-join then append (same effect, without atomicity)."""
        self.ensure(name, schema)
        df = df.select(*[f.name for f in schema.fields])
        if self.fmt == "delta" and self.is_empty(name):
            # first load (a backfill): nothing to match against, a plain append is the same write
            self._write(self._barrier(df), name, mode="append")
        elif self.fmt == "delta":
            self.merge(name, df, keys).when_not_matched_insert_all().execute()
        else:
            existing = self.read(name).select(*keys)
            self._write(df.join(existing, on=keys, how="left_anti"), name, mode="append")

    def upsert(self, name: str, df: DataFrame, keys: list[str], schema: StructType) -> None:
        """Insert new rows and replace matching ones (``df`` must hold unique keys)."""
        self.ensure(name, schema)
        df = df.select(*[f.name for f in schema.fields])
        if self.fmt == "delta":
            self.merge(name, df, keys).when_matched_update_all().when_not_matched_insert_all().execute()
        else:
            kept = self.read(name).join(df.select(*keys), on=keys, how="left_anti")
            self.overwrite(name, kept.unionByName(df))

    def delete_keys(self, name: str, keys_df: DataFrame, keys: list[str]) -> None:
        """Delete the rows whose ``keys`` appear in ``keys_df`` (unique keys)."""
        if not self.exists(name):
            return
        keys_df = keys_df.select(*keys).distinct()
        if self.fmt == "delta":
            self.merge(name, keys_df, keys).when_matched_delete().execute()
        else:
            self.overwrite(name, self.read(name).join(keys_df, on=keys, how="left_anti"))

    def update_keys(self, name: str, keys_df: DataFrame, keys: list[str], values: dict[str, str]) -> None:
        """Set columns to SQL expressions (``{"text": "NULL"}``) on the rows whose ``keys`` appear
        in ``keys_df``."""
        if not self.exists(name):
            return
        keys_df = keys_df.select(*keys).distinct()
        if self.fmt == "delta":
            self.merge(name, keys_df, keys).when_matched_update(values).execute()
            return
        df = self.read(name).join(keys_df.withColumn("_hit", F.lit(True)), keys, "left")
        for c, v in values.items():
            df = df.withColumn(c, F.when(F.col("_hit"), F.expr(v).cast(df.schema[c].dataType)).otherwise(F.col(c)))
        self.overwrite(name, df.drop("_hit"))

    def version(self, name: str) -> int | None:
        """The Delta version of a table (None for Parquet or a missing table)."""
        if self.fmt != "delta" or not self.exists(name):
            return None
        if self.uses_paths:
            stems = [f[:-len(".json")] for f in fs.list_files(fs.join(self.path(name), "_delta_log")) if f.endswith(".json")]
            versions = [int(v) for v in stems if v.isdigit()]
            return max(versions) if versions else None
        row = self.spark.sql(f"DESCRIBE HISTORY {self.qualified_name(name)} LIMIT 1").collect()
        return int(row[0]["version"]) if row else None


_COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MergeBuilder:
    """``store.merge(table, source, keys)`` then clauses, then ``execute()``. Clause order is
    SQL's: matched clauses first, then the not-matched insert."""

    def __init__(self, store: TableStore, name: str, source: DataFrame, keys: list[str]):
        for k in keys:
            if not _COLUMN_RE.match(k):
                raise ValueError(f"merge key {k!r} is not a plain column name")
        self._store, self._name, self._source, self._keys = store, name, source, keys
        self._matched: str | None = None
        self._insert = False

    def _set_matched(self, clause: str) -> "MergeBuilder":
        if self._matched is not None:
            raise ValueError("merge: one WHEN MATCHED clause per merge")
        self._matched = clause
        return self

    def when_matched_update_all(self) -> "MergeBuilder":
        return self._set_matched("WHEN MATCHED THEN UPDATE SET *")

    def when_matched_update(self, values: dict[str, str]) -> "MergeBuilder":
        """``values``: target column -> SQL expression over ``t`` (target) and ``s`` (source)."""
        if not values:
            raise ValueError("merge: when_matched_update needs at least one column")
        for c in values:
            if not _COLUMN_RE.match(c):
                raise ValueError(f"merge: column {c!r} is not a plain column name")
        return self._set_matched("WHEN MATCHED THEN UPDATE SET " + ", ".join(f"t.`{c}` = {v}" for c, v in values.items()))

    def when_matched_delete(self) -> "MergeBuilder":
        return self._set_matched("WHEN MATCHED THEN DELETE")

    def when_not_matched_insert_all(self) -> "MergeBuilder":
        self._insert = True
        return self

    def sql(self, view: str) -> str:
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in self._keys)
        clauses = [c for c in (self._matched, "WHEN NOT MATCHED THEN INSERT *" if self._insert else None) if c]
        if not clauses:
            raise ValueError("merge: no clause given")
        return f"MERGE INTO {self._store.ref(self._name)} t USING {view} s ON {on} " + " ".join(clauses)

    def execute(self) -> None:
        view = self._store._temp_view(self._source)
        try:
            self._store.spark.sql(self.sql(view))
        finally:
            self._store.spark.catalog.dropTempView(view)
