"""Reader rows -> typed bronze rows, per source, with Spark built-in expressions only.

``normalize(df, source, params)`` takes reader output (``READER_OUTPUT``) and returns one wide
DataFrame: every column of the source's bronze table(s), plus

* ``_table``  — the logical bronze table the row belongs to (a source can feed two: Reddit
  submissions and comments, Amazon reviews and item metadata), null for blank lines;
* ``_reason`` / ``_detail`` — why the row is quarantined (null when it is good).

Reasons are stable codes (``malformed_json``, ``missing_user``, ``wrong_type:score`` …). Only the
first failing check is reported. All values are parsed as strings first and cast with ``try_cast``
so a wrong type becomes a reason instead of a silent null; this also makes the result identical on
Sail, classic Spark and Databricks.

Each source's normaliser lives in its spec (``lewin.udfs.sources.<source>``); this module holds
the helpers they are built from (parsing, checks, ``finish``) and the source-independent steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lewin.udfs.ids import stable_id
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, StringType, StructField, StructType


@dataclass(frozen=True)
class BronzeParams:
    run_id: str
    run_started: datetime
    min_event_time: datetime
    max_event_time: datetime
    max_text_chars: int


def strings(*names: str) -> StructType:
    """A struct of string fields for ``from_json``: every value is read as text, then checked and cast."""
    return StructType([StructField(n, StringType()) for n in names])


def nonblank(col: Column) -> Column:
    """Trim; empty -> null."""
    t = F.trim(col)
    return F.when(t == "", None).otherwise(col)


def to_long(col: Column) -> Column:
    return col.try_cast("double").try_cast("bigint")


def to_double(col: Column) -> Column:
    return col.try_cast("double")


def epoch_seconds(col: Column) -> Column:
    """Epoch seconds -> timestamp; values no calendar can hold become null (not an overflow)."""
    return F.when(col.between(-(10**11), 10**11), F.timestamp_seconds(col))


def epoch_millis(col: Column) -> Column:
    return F.when(col.between(-(10**14), 10**14), F.timestamp_millis(col))


def to_bool(col: Column) -> Column:
    low = F.lower(F.trim(col))
    return (
        F.when(low.isin("true", "t", "1", "yes", "y"), F.lit(True))
        .when(low.isin("false", "f", "0", "no", "n"), F.lit(False))
        .otherwise(F.lit(None).cast(BooleanType()))
    )


def is_nested(col: Column) -> Column:
    """A JSON object/array where a scalar was expected (from_json keeps it as JSON text).
    "[removed]" is a string that merely looks like one: it must also parse as JSON. The JSON
    check runs only for values starting with a bracket (CASE evaluates lazily; AND may not)."""
    looks = F.startswith(F.ltrim(col), F.lit("[")) | F.startswith(F.ltrim(col), F.lit("{"))
    parses = F.json_array_length(col).isNotNull() | F.json_object_keys(col).isNotNull()
    return F.when(looks, parses).otherwise(F.lit(False))


def hash_id(*cols: Column) -> Column:
    return stable_id(*cols, chars=32, nulls_as_empty=True)


def wrong_type(raw: Column, parsed: Column) -> Column:
    return raw.isNotNull() & parsed.isNull()


def _first_reason(checks: list[tuple[Column, str, Column | str | None]]) -> tuple[Column, Column]:
    """(reason, detail) of the first check whose condition holds."""
    reason = None
    detail = None
    for cond, code, det in reversed(checks):
        d = F.lit(det) if isinstance(det, str) or det is None else det
        reason = F.when(cond, F.lit(code)).otherwise(reason if reason is not None else F.lit(None).cast("string"))
        detail = F.when(cond, d.cast("string")).otherwise(detail if detail is not None else F.lit(None).cast("string"))
    return reason, detail


def _json_shape_reason(text: Column) -> Column:
    """Evaluated only for rows whose key fields all came back null: why?"""
    return (
        F.when(F.json_object_keys(text).isNotNull(), F.lit(None).cast("string"))
        .when(F.get_json_object(text, "$").isNull(), F.lit("malformed_json"))
        .otherwise(F.lit("not_a_json_object"))
    )


def snippet(name: str, col: Column) -> Column:
    return F.concat(F.lit(f"{name}="), F.substring(col.cast("string"), 1, 80))


def time_checks(raw_time: Column, ts: Column, p: BronzeParams) -> list:
    return [
        (raw_time.isNull(), "missing_time", None),
        (ts.isNull(), "unparseable_time", snippet("time", raw_time)),
        (
            (ts < F.lit(p.min_event_time)) | (ts > F.lit(p.max_event_time)),
            "time_out_of_range",
            snippet("time", ts),
        ),
    ]


def text_checks(text: Column, p: BronzeParams) -> list:
    return [(F.length(text) > p.max_text_chars, "text_too_long", F.concat(F.lit("chars="), F.length(text).cast("string")))]


def _lineage(p: BronzeParams) -> list[Column]:
    return [
        F.col("file").alias("_file"),
        F.col("line").alias("_line"),
        F.lit(p.run_id).alias("_run_id"),
        F.lit(p.run_started).cast("timestamp").alias("_ingested_at"),
    ]


def reader_fields() -> list[Column]:
    """The reader's columns, kept beside the parsed ones (``finish`` and lineage read them)."""
    return [F.col(c) for c in ("file", "line", "item", "raw", "payload", "error", "detail")]


def finish(df: DataFrame, table: Column, checks: list, key_fields_null: Column, text: Column) -> DataFrame:
    """Attach _table/_reason/_detail: reader errors first, then JSON shape, then field checks.

    ``table``: the bronze table of each row; ``checks``: (condition, reason code, detail) in the
    order they are tried; ``key_fields_null``: when true, the JSON ``text`` is asked why (malformed,
    not an object) before the field checks."""
    shape = F.when(key_fields_null, _json_shape_reason(text))
    all_checks = [
        (F.col("error").isNotNull(), "__reader__", None),
        (shape.isNotNull(), "__shape__", None),
    ] + checks
    reason, detail = _first_reason(all_checks)
    reason = (
        F.when(reason == "__reader__", F.col("error"))
        .when(reason == "__shape__", shape)
        .otherwise(reason)
    )
    detail = F.when(F.col("error").isNotNull(), F.col("detail")).otherwise(detail)
    return df.withColumn("_reason", reason).withColumn("_detail", detail).withColumn(
        "_table", F.when(F.col("error") == "blank_line", F.lit(None).cast("string")).otherwise(table)
    )


def normalize(df: DataFrame, source: str, params: BronzeParams) -> DataFrame:
    """Reader rows -> wide bronze rows with ``_table``, ``_reason``, ``_detail`` and lineage."""
    from lewin.udfs import sources

    out = sources.get(source).normalize(df, params)
    return out.select("*", *_lineage(params))


def wide_columns(source: str) -> list[str]:
    """Columns ``normalize`` guarantees for ``source`` (every column of its bronze tables)."""
    from lewin.udfs import sources

    names: list[str] = []
    for schema in sources.bronze_tables(source).values():
        for f in schema.fields:
            if f.name not in names:
                names.append(f.name)
    return names


def table_rows(wide: DataFrame, table: str) -> DataFrame:
    """The good rows of one bronze table, cast to its declared schema."""
    from lewin.udfs import sources

    schema = sources.bronze_schema(table)
    rows = wide.where((F.col("_table") == table) & F.col("_reason").isNull())
    return rows.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
