"""Blogger: the Blog Authorship Corpus — its original per-blogger XML files
(``<id>.<gender>.<age>.<industry>.<sign>.xml``), and its CSV and JSON lines versions.

The XML format is this source's own (``blogxml``); dates are written in the blogger's language.
A date is read in the corpus' form (``14,May,2004``: day, month name in one of seven languages,
year; also with spaces, dots or dashes, or ``May 14, 2004``) or numerically with the year first
(``2004-05-14``, ``2004/05/14``, ``2004.05.14``, a time may follow) or day-first with dots
(``14.05.2004``); anything else (``unknown``, ``14,May``, ``05/14/2004``: day and month order
unknown) is quarantined as ``unparseable_time`` with the value.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lewin.schemas import tables as T
from lewin.schemas.config import FirstPersonRule
from lewin.udfs.bronze import (
    BronzeParams, finish, hash_id, is_nested, nested_field, nonblank, reader_fields, snippet, strings, text_checks,
    time_checks, to_int, wrong_type,
)
from lewin.udfs.compression import split_compression
from lewin.udfs.readers import Batcher, ReaderOptions, clipped, read_all
from lewin.udfs.rules import Check, min_chars
from lewin.udfs.sources.base import FileFormats, RuleSpec, SourceSpec, StreamSpec

# --- Blog Authorship Corpus, original per-blogger files ----------------------------------------------
# File name: <blogger id>.<gender>.<age>.<industry>.<star sign>.xml; body: <date>…</date><post>…</post>
_BLOG_NAME = re.compile(r"^(?P<id>\d+)\.(?P<gender>[^.]+)\.(?P<age>\d+)\.(?P<topic>[^.]+)\.(?P<sign>[^.]+)$")
_BLOG_POST = re.compile(rb"<date>(.*?)</date>\s*<post>(.*?)</post>", re.S)


def read_blogxml(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: Batcher) -> Iterator[pa.RecordBatch]:
    base, _ = split_compression(Path(path).name)
    m = _BLOG_NAME.match(Path(base).stem)
    data, fault = read_all(stream)  # a truncated file keeps its complete posts, then reports the fault
    if m is None:
        out.add(1, clipped(data, opts.raw_max_chars), error="blog_file_name_unrecognised",
                detail="expected <id>.<gender>.<age>.<industry>.<sign>.xml")
        return
    meta = m.groupdict()
    found = False
    for pm in _BLOG_POST.finditer(data):
        found = True
        line = data.count(b"\n", 0, pm.start()) + 1
        block = pm.group(0)
        if len(block) > opts.max_record_bytes:
            out.add(line, clipped(block, opts.raw_max_chars), error="record_too_long",
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
    if fault is not None:
        raise fault
    if not found:
        out.add(1, clipped(data, opts.raw_max_chars), error="blog_xml_no_posts", detail="no <date>/<post> pairs found")


# --- bronze -------------------------------------------------------------------------------------------
_BLOG_RAW = strings(
    "id", "author_id", "gender", "age", "topic", "job", "industry", "sign", "starsign", "date", "text",
)
# The Blog Authorship Corpus writes dates as "14,May,2004" — in the blogger's own language.
_MONTH_NAMES = (
    "january february march april may june july august september october november december",
    "janvier fevrier mars avril mai juin juillet aout septembre octobre novembre decembre",
    "januar februar marz april mai juni juli august september oktober november dezember",
    "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
    "janeiro fevereiro marco abril maio junho julho agosto setembro outubro novembro dezembro",
    "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre",
    "januari februari maart april mei juni juli augustus september oktober november december",
)
_MONTH_NAMES += ("jan feb mar apr may jun jul aug sep oct nov dec",)  # English abbreviations
_MONTH_LIST = [m for names in _MONTH_NAMES for m in names.split()]  # 12 per language: index % 12 is the month
_SEP = r"\s*[,./ -]\s*"
_NAME = r"([^0-9\s,./-]+)\.?"
_DATE_FORMS = (  # (pattern, group of the day, of the month, of the year, month is a name)
    (rf"^([0-9]{{1,2}}){_SEP}{_NAME}{_SEP}([0-9]{{4}})$", 1, 2, 3, True),  # 14,May,2004 (the corpus)
    (rf"^{_NAME}\s+([0-9]{{1,2}}),?\s+([0-9]{{4}})$", 2, 1, 3, True),  # May 14, 2004
    (r"^([0-9]{4})[-/.]([0-9]{1,2})[-/.]([0-9]{1,2})([ t].*)?$", 3, 2, 1, False),  # 2004-05-14, 2004/05/14
    (r"^([0-9]{1,2})[.]([0-9]{1,2})[.]([0-9]{4})$", 1, 2, 3, False),  # 14.05.2004
)


def _ymd(year: Column, month: Column, day: Column) -> Column:
    """A date from its parts (ints, null when missing); null for one no calendar has (31 February),
    never an error: try_to_timestamp, not make_date (which raises under ANSI mode)."""
    text = F.concat_ws("-", F.lpad(year.cast("string"), 4, "0"), F.lpad(month.cast("string"), 2, "0"),
                       F.lpad(day.cast("string"), 2, "0"))
    ok = year.between(1900, 2100) & month.between(1, 12) & day.between(1, 31)
    return F.when(ok, F.try_to_timestamp(text, F.lit("yyyy-MM-dd")))


def _blog_date(raw: Column) -> Column:
    """The corpus' dates (see the module's docstring) -> timestamp; null for anything else. Total:
    regexp_extract and try_cast only, so no value can fail the job."""
    s = F.lower(F.trim(raw))
    names = F.array(*[F.lit(m) for m in _MONTH_LIST])
    parsed = []
    for pattern, d, mo, y, named in _DATE_FORMS:
        part = lambda i: F.regexp_extract(s, pattern, i)  # noqa: E731 - "" when no match
        if named:
            name = F.translate(part(mo), "éûäçôü", "euacou")
            pos = F.array_position(names, F.regexp_replace(name, F.lit("^sept$"), F.lit("sep")))
            month = F.when(pos > 0, ((pos - 1) % 12 + 1).try_cast("int"))
        else:
            month = part(mo).try_cast("int")
        parsed.append(_ymd(part(y).try_cast("int"), month, part(d).try_cast("int")))
    return F.coalesce(*parsed).cast("timestamp")


def normalize(df: DataFrame, p: BronzeParams) -> DataFrame:
    text_in = F.coalesce(F.col("payload"), F.col("raw"))
    j = df.select(*reader_fields(), F.from_json(text_in, _BLOG_RAW).alias("j"))
    g = lambda c: F.col(f"j.{c}")  # noqa: E731
    c = F.col
    # JSONL variants carry a post id plus author_id; the CSV/XML corpus has only the blogger id.
    has_author = nonblank(g("author_id")).isNotNull()
    user = F.coalesce(nonblank(g("author_id")), nonblank(g("id")))
    raw_time = nonblank(g("date"))
    age = to_int(g("age"))
    out = j.select(
        "*",
        F.when(has_author, nonblank(g("id"))).alias("native_id"),
        user.alias("user_id"),
        _blog_date(raw_time).alias("event_ts"),
        F.lit(None).cast("string").alias("title"),
        g("text").alias("text"),
        F.lower(nonblank(g("gender"))).alias("gender"),
        age.alias("age"),
        F.coalesce(nonblank(g("topic")), nonblank(g("job")), nonblank(g("industry"))).alias("industry"),
        F.coalesce(nonblank(g("sign")), nonblank(g("starsign"))).alias("star_sign"),
    )
    rid = F.when(c("native_id").isNotNull(), F.concat(F.lit("blogger:"), c("native_id"))).otherwise(
        F.concat(F.lit("blogger:h:"), hash_id(c("user_id"), raw_time, c("text")))
    )
    out = out.withColumn("record_id", rid).withColumn("source", F.lit("blogger"))
    checks = (
        [(c("user_id").isNull(), "missing_user", None)]
        + time_checks(raw_time, c("event_ts"), p, "date")
        + [
            (wrong_type(g("age"), c("age")), "wrong_type:age", snippet("age", g("age"))),
            (c("text").isNull(), "missing_text", None),
            (is_nested(c("text"), nested_field(text_in, "text")), "wrong_type:text", snippet("text", c("text"))),
        ]
        + text_checks(c("text"), p)
    )
    return finish(out, F.lit("bronze_blogger"), checks, user.isNull() & raw_time.isNull(), text_in)


# --- curation rules ------------------------------------------------------------------------------
def first_person(r: FirstPersonRule) -> Check:
    words = "|".join(p.replace("'", "['’]") for p in r.pronouns)
    n = F.regexp_count(F.coalesce(F.col("clean_text"), F.lit("")), F.lit(rf"(?i)\b(?:{words})\b"))
    return Check(n < 1, F.lit("no first-person pronoun"))


SOURCE = SourceSpec(
    name="blogger",
    bronze_tables={"bronze_blogger": T.BRONZE_BLOGGER},
    normalize=normalize,
    formats=FileFormats(readers={"blogxml": read_blogxml}, extensions={".xml": "blogxml"}),
    streams=(
        StreamSpec(
            name="blogger",
            bronze_table="bronze_blogger",
            kind="blog_post",
            carry=("gender", "age", "industry"),
            rules=(
                RuleSpec("blogger_min_length_v1", min_chars),
                RuleSpec("blogger_first_person_v1", first_person),
            ),
        ),
    ),
)
