"""Blogger: the Blog Authorship Corpus — its original per-blogger XML files
(``<id>.<gender>.<age>.<industry>.<sign>.xml``), and its CSV and JSON lines versions.

The XML format is this source's own (``blogxml``); dates are written in the blogger's language.
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
    BronzeParams, finish, hash_id, is_nested, nonblank, reader_fields, snippet, strings, text_checks, time_checks,
    to_long, wrong_type,
)
from lewin.udfs.compression import split_compression
from lewin.udfs.readers import Batcher, ReaderOptions, clipped, decode
from lewin.udfs.rules import Check, min_chars
from lewin.udfs.sources.base import FileFormats, RuleSpec, SourceSpec, StreamSpec

# --- Blog Authorship Corpus, original per-blogger files ----------------------------------------------
# File name: <blogger id>.<gender>.<age>.<industry>.<star sign>.xml; body: <date>…</date><post>…</post>
_BLOG_NAME = re.compile(r"^(?P<id>\d+)\.(?P<gender>[^.]+)\.(?P<age>\d+)\.(?P<topic>[^.]+)\.(?P<sign>[^.]+)$")
_BLOG_POST = re.compile(rb"<date>(.*?)</date>\s*<post>(.*?)</post>", re.S)


def read_blogxml(path: str, opts: ReaderOptions, stream: io.BufferedIOBase, out: Batcher) -> Iterator[pa.RecordBatch]:
    base, _ = split_compression(Path(path).name)
    m = _BLOG_NAME.match(Path(base).stem)
    data = stream.read()
    if m is None:
        out.add(1, decode(data[:65_536])[0], error="blog_file_name_unrecognised",
                detail="expected <id>.<gender>.<age>.<industry>.<sign>.xml")
        return
    meta = m.groupdict()
    found = False
    for pm in _BLOG_POST.finditer(data):
        found = True
        line = data.count(b"\n", 0, pm.start()) + 1
        block = pm.group(0)
        if len(block) > opts.max_record_bytes:
            out.add(line, clipped(block), error="record_too_long",
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
        out.add(1, decode(data[:65_536])[0], error="blog_xml_no_posts", detail="no <date>/<post> pairs found")


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
_MONTHS = {m: i for names in _MONTH_NAMES for i, m in enumerate(names.split(), 1)}


def _blog_date(raw: Column) -> Column:
    parts = F.split(raw, ",")
    month_name = F.translate(F.lower(F.trim(parts.getItem(1))), "éûäçôü", "euacou")
    month = F.create_map(*[x for k, v in _MONTHS.items() for x in (F.lit(k), F.lit(v))])[month_name]
    day = F.trim(parts.getItem(0)).try_cast("int")
    year = F.trim(parts.getItem(2)).try_cast("int")
    ymd = F.concat_ws("-", year.cast("string"), F.lpad(month.cast("string"), 2, "0"), F.lpad(day.cast("string"), 2, "0"))
    # try_to_timestamp: an impossible date (31 February) becomes null, not an error under ANSI mode
    dmy = F.when(month.isNotNull() & year.between(1900, 2100), F.try_to_timestamp(ymd, F.lit("yyyy-MM-dd")))
    iso = F.try_to_timestamp(F.regexp_extract(raw, r"^(\d{4}-\d{2}-\d{2})", 1), F.lit("yyyy-MM-dd"))
    return F.coalesce(iso, dmy).cast("timestamp")


def normalize(df: DataFrame, p: BronzeParams) -> DataFrame:
    text_in = F.coalesce(F.col("payload"), F.col("raw"))
    j = df.select(*reader_fields(), F.from_json(text_in, _BLOG_RAW).alias("j"))
    g = lambda c: F.col(f"j.{c}")  # noqa: E731
    c = F.col
    # JSONL variants carry a post id plus author_id; the CSV/XML corpus has only the blogger id.
    has_author = nonblank(g("author_id")).isNotNull()
    user = F.coalesce(nonblank(g("author_id")), nonblank(g("id")))
    raw_time = nonblank(g("date"))
    age = to_long(g("age")).cast("int")
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
        + time_checks(raw_time, c("event_ts"), p)
        + [
            (wrong_type(g("age"), c("age")), "wrong_type:age", snippet("age", g("age"))),
            (c("text").isNull(), "missing_text", None),
            (is_nested(c("text")), "wrong_type:text", snippet("text", c("text"))),
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
