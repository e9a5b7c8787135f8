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

Every parse of a value is total: dates, numbers and booleans go through ``try_*`` functions,
``regexp_extract`` and bounds checks, never through an expression that raises under ANSI mode
(an array index past the end, a narrowing ``cast``, ``make_date``), so one poison value becomes
its record's reason (the field and the value in the detail) and never fails the job.

Each source's normaliser lives in its spec (``lewin.udfs.sources.<source>``); this module holds
the helpers they are built from (parsing, checks, ``finish``) and the source-independent steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lewin.udfs.ids import stable_id
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BooleanType, MapType, StringType, StructField, StructType


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
    """A 64-bit integer from an integer's text (exactly: one beyond 64 bits is null, not rounded
    into range) or from a number's ("12.0", "1.6e9": through a double); null for anything else."""
    integral = F.trim(col).rlike(r"^[+-]?[0-9]+$")
    return F.when(integral, col.try_cast("bigint")).otherwise(col.try_cast("double").try_cast("bigint"))


def to_int(col: Column) -> Column:
    """A 32-bit integer; null for text that is none and for values beyond its range."""
    return to_long(col).try_cast("int")


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
        F.when(low.isin("true", "t", "1", "1.0", "yes", "y", "on"), F.lit(True))
        .when(low.isin("false", "f", "0", "0.0", "no", "n", "off"), F.lit(False))
        .otherwise(F.lit(None).cast(BooleanType()))
    )


def is_nested(col: Column, nested: Column | None = None) -> Column:
    """A JSON object/array where a scalar was expected (from_json keeps it as JSON text).

    Text that merely starts like one — "[removed]", "[2021] My year in review", a Markdown link
    "[2927](https://…) …", '{"k": 1} is how I write config' — is not: the whole value must be one
    JSON array or object. It is parsed inside an array of its own ('[' + value + ']' must be an
    array of exactly one element), which a parser that reads a valid prefix and ignores the rest
    accepts only for text that closes its brackets and reopens them ("[1]] x ["). ``nested``
    (``nested_field``) then decides exactly: whether the record's field itself was an array or an
    object, so a string whose whole text is valid JSON ("[1, 2, 3]") stays text too. Give it
    wherever the field is known. CASE evaluates lazily: the JSON checks run only for values
    starting with a bracket, the record is parsed again only for values that pass both."""
    t = F.ltrim(col)
    looks = F.startswith(t, F.lit("[")) | F.startswith(t, F.lit("{"))
    whole = F.json_array_length(F.concat(F.lit("["), col, F.lit("]"))) == 1
    confirmed = nested if nested is not None else F.lit(True)
    return F.when(looks, F.when(whole, F.coalesce(confirmed, F.lit(False))).otherwise(F.lit(False))).otherwise(
        F.lit(False))


def nested_field(record: Column, field: str) -> Column:
    """Whether the JSON ``record``'s field ``field`` is an array or an object — not a string (of any
    content), number or boolean. For ``is_nested``: parsed only where a value looks nested."""
    arr = F.from_json(record, StructType([StructField(field, ArrayType(StringType()))]))[field]
    obj = F.from_json(record, StructType([StructField(field, MapType(StringType(), StringType()))]))[field]
    return arr.isNotNull() | obj.isNotNull()


_ISO_CANON = (  # (pattern, replacement): ISO 8601 forms Spark's parser lacks -> the extended form
    (r"\[[^\]]*\]$", ""),  # a zone id after the offset: 2021-01-01T05:45:22Z[UTC]
    # basic format (a group reference is never followed by a letter or digit: "$3T" names group "3T"
    # in Rust's replacement syntax)
    (r"^([0-9]{4})([0-9]{2})([0-9]{2}T[0-9]{2})([0-9]{2})([0-9]{2})", "$1-$2-$3:$4:$5"),
    (r"^([0-9]{4})([0-9]{2})([0-9]{2}T[0-9]{2})([0-9]{2})", "$1-$2-$3:$4"),  # basic, no seconds
    (r"^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}),([0-9]+)", "$1.$2"),  # comma before the fraction
    (r"^([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2})(Z|[+-][0-9]{2}(:?[0-9]{2})?)$", "$1:00$2"),  # hh:mm, zone
)


def iso_time(col: Column) -> Column:
    """An ISO 8601 / RFC 3339 time string -> timestamp, null when it is none. Spark's parser reads
    the extended form ('T' or a space, fractions, Z or ±hh[:mm]); the forms it lacks are rewritten
    to it first: lower-case 't'/'z', the basic form (20210101T054522Z), a comma before the
    fraction, hours and minutes without seconds before a zone, a trailing [zone id]."""
    s = F.upper(F.trim(col))
    for pattern, replacement in _ISO_CANON:
        s = F.regexp_replace(s, F.lit(pattern), F.lit(replacement))
    return F.coalesce(F.try_to_timestamp(col), F.try_to_timestamp(s))


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
    """Evaluated only for rows whose key fields all came back null: why? A JSON parser that reads
    a valid prefix finds keys in glued objects and in an object followed by garbage; the whole
    text parsed inside an array of its own tells them apart from one object (the readers catch
    these first, for every engine; this is for rows framed elsewhere)."""
    keys = F.json_object_keys(text)
    whole = F.json_array_length(F.concat(F.lit("["), text, F.lit("]")))
    glued = F.json_array_length(F.concat(F.lit("["), F.regexp_replace(text, F.lit(r"\}\s*\{"), F.lit("},{")), F.lit("]")))
    return (
        F.when(keys.isNotNull() & (whole == 1), F.lit(None).cast("string"))
        .when(keys.isNotNull() & ((whole > 1) | (glued > 1)), F.lit("glued_records"))
        .when(keys.isNotNull(), F.lit("trailing_garbage"))
        .when(F.get_json_object(text, "$").isNull(), F.lit("malformed_json"))
        .otherwise(F.lit("not_a_json_object"))
    )


def snippet(name: str | Column, col: Column) -> Column:
    label = F.lit(name) if isinstance(name, str) else name
    return F.concat(label, F.lit("="), F.substring(col.cast("string"), 1, 80))


def time_checks(raw_time: Column, ts: Column, p: BronzeParams, field: str | Column = "time") -> list:
    """``field``: the source field the time came from, named in the detail (``date=2004/05/14``)."""
    return [
        (raw_time.isNull(), "missing_time", None),
        (ts.isNull(), "unparseable_time", snippet(field, raw_time)),
        (
            (ts < F.lit(p.min_event_time)) | (ts > F.lit(p.max_event_time)),
            "time_out_of_range",
            snippet(field, ts),
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
