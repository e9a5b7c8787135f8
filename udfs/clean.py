"""Deterministic text cleaning with Spark built-in expressions (no Python UDF).

Removes what the paper's cleaning removed before its LLM rewrite: HTML tags and entities, URLs,
markdown and formatting noise, zero-width and control characters; for Twitter also hashtags,
mentions and the ``RT @user:`` prefix. Whitespace is normalised last. The patterns avoid
look-around and back-references so they mean the same in Java's regex engine (classic Spark,
Databricks) and Rust's (Sail).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

CLEAN_VERSION = "clean_v1"

# Named entities the dumps actually contain, then the numeric forms of the common punctuation.
_ENTITIES = [
    ("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&#39;", "'"),
    ("&#x27;", "'"), ("&#34;", '"'), ("&#8217;", "’"), ("&#8216;", "‘"), ("&#8220;", "“"), ("&#8221;", "”"),
    ("&#8212;", "—"), ("&#8211;", "–"), ("&#8230;", "…"), ("&#x200B;", ""), ("&#x200b;", ""), ("&hellip;", "…"),
    ("&mdash;", "—"), ("&ndash;", "–"), ("&rsquo;", "’"), ("&lsquo;", "‘"), ("&rdquo;", "”"), ("&ldquo;", "“"),
    ("&amp;", "&"),  # last: "&amp;lt;" must become "&lt;", not "<"
]

# (triggers, [(pattern, replacement), …]): a group runs only on texts containing one of its
# trigger substrings (a CASE, evaluated lazily), so the common plain post pays a few `instr`s.
_GROUPS: list[tuple[list[str], list[tuple[str, str]]]] = [
    # HTML: comments, script/style blocks, then any tag-looking span (not "a < b" or "<3")
    (["<"], [
        (r"(?s)<!--.*?-->", " "),
        (r"(?is)<(script|style)[^>]*>.*?</(script|style)>", " "),
        (r"</?[A-Za-z][A-Za-z0-9:-]*(\s[^<>]{0,500})?/?>", " "),
    ]),
    # markdown links and images: keep the anchor text, drop the target
    (["]("], [(r"!?\[([^\]\n]{0,300})\]\([^)\s]{0,2000}\)", "$1")]),
    # URLs
    (["://", "www.", "WWW."], [(r"(?i)\b(https?://|ftp://|www\.)[^\s<>\"']+", " ")]),
    # markdown emphasis, inline code, strike-through (no back-references: one pattern per marker)
    (["*"], [
        (r"\*\*\*([^*\n]+)\*\*\*", "$1"),
        (r"\*\*([^*\n]+)\*\*", "$1"),
        (r"(^|\s)\*([^*\s][^*\n]*)\*", "$1$2"),
    ]),
    (["__"], [(r"__([^_\n]+)__", "$1")]),
    (["~~"], [(r"~~([^~\n]+)~~", "$1")]),
    (["`"], [(r"`{3}[^\n]*", " "), (r"`([^`\n]+)`", "$1")]),
    # block markup at line starts: headings, quotes, list bullets, horizontal rules, table pipes
    (["#", ">", "- ", "* ", "+ ", ". ", ") ", "---", "***", "___", "|"], [
        (r"(?m)^[ \t]*(#{1,6}|>+|[-*+]|\d{1,3}[.)])[ \t]+", ""),
        (r"(?m)^[ \t]*([-*_][ \t]*){3,}$", ""),
        (r"(?m)^\|.*\|$", " "),
    ]),
    # the Blog Authorship Corpus replaced every link with the token "urlLink"
    (["urlLink"], [(r"\burlLink\b", " ")]),
    # zero-width characters, BOM, soft hyphen; control characters except newline and tab
    ([], [(r"[\x{200B}-\x{200D}\x{2060}\x{FEFF}\x{00AD}\x{0000}-\x{0008}\x{000B}\x{000C}\x{000E}-\x{001F}\x{007F}]", "")]),
]

_TWITTER_STEPS: list[tuple[str, str]] = [
    (r"^RT @\w+:\s*", ""),
    (r"(^|[^\w@#＃])[@#＃]\w+", "$1"),
    (r"(^|[^\w$])\$[A-Za-z]{1,6}\b", "$1"),  # cashtags
]

_WHITESPACE: list[tuple[list[str], list[tuple[str, str]]]] = [
    (["  ", "\t", "\u00a0", "\u3000"] + [chr(c) for c in range(0x2000, 0x200B)],
     [(r"[ \t\x{00A0}\x{2000}-\x{200A}\x{3000}]+", " ")]),
    ([" \n", "\n "], [(r" ?\n ?", "\n")]),
    (["\n\n\n"], [(r"\n{3,}", "\n\n")]),
]


def _guarded(triggers: list[str], steps: list[tuple[str, str]]):
    def apply(c: Column) -> Column:
        out = c
        for p, r in steps:
            out = F.regexp_replace(out, p, r)
        if not triggers:
            return out
        cond = None
        for t in triggers:
            hit = F.instr(c, t) > 0
            cond = hit if cond is None else (cond | hit)
        return F.when(cond, out).otherwise(c)

    return apply


def _steps(source: Column | None) -> list:
    """Column -> Column functions, applied one projection at a time (a single nested expression
    of ~40 calls is too deep for Spark Connect's protobuf decoder)."""
    entity_chain = []
    for n, r in _ENTITIES:
        entity_chain.append(lambda c, n=n, r=r: F.replace(c, F.lit(n), F.lit(r)))

    def entities(c: Column) -> Column:
        out = c
        for f in entity_chain:
            out = f(out)
        return F.when(F.instr(c, "&") > 0, out).otherwise(c)

    steps = [entities] + [_guarded(t, g) for t, g in _GROUPS]
    if source is not None:
        def twitter(c: Column) -> Column:
            tw = c
            for p, r in _TWITTER_STEPS:
                tw = F.regexp_replace(tw, p, r)
            return F.when(source == "twitter", tw).otherwise(c)

        steps.append(twitter)
    steps += [_guarded(t, g) for t, g in _WHITESPACE]
    # Spark's trim() strips spaces only; newlines and tabs at the ends go too
    steps.append(lambda c: F.btrim(c, F.lit(" \n\t\r")))
    return steps


def clean_column(df: DataFrame, column: str, out: str, source_column: str | None = None, per_projection: int = 1) -> DataFrame:
    """``df`` with ``out`` = the cleaned ``column``; Twitter rules where ``source_column`` is twitter."""
    steps = _steps(F.col(source_column) if source_column else None)
    df = df.withColumn(out, F.col(column))
    for i in range(0, len(steps), per_projection):
        expr = F.col(out)
        for step in steps[i: i + per_projection]:
            expr = step(expr)
        df = df.withColumn(out, expr)
    return df


def normalized_text(text: Column) -> Column:
    """What both dedups compare: lower case, letters and digits only, single spaces."""
    return F.trim(F.regexp_replace(F.lower(text), r"[^\p{L}\p{N}]+", " "))


def normalized_hash(text: Column) -> Column:
    """Exact-duplicate key: the hash of ``normalized_text``."""
    return F.substring(F.sha2(normalized_text(text), 256), 1, 32)


def _distinct_words(text: Column) -> Column:
    return F.array_distinct(F.filter(F.split(F.lower(text), r"[^\p{L}\p{N}']+"), lambda w: w != ""))


def rewrite_check(original: Column, rewrite: Column, max_length_ratio: float, min_length_ratio: float,
                  min_token_overlap: float) -> Column:
    """Why an LLM cleaning rewrite must not replace the original, or null when it may: cleaning
    removes (markup, URLs, noise, other languages) and adds nothing, so the rewrite is at most
    ``max_length_ratio`` of the original's length, at least ``min_length_ratio`` of it (not a
    summary), and ``min_token_overlap`` of its distinct words occur in the original."""
    lo, lr = F.length(original), F.length(rewrite)
    rw, ow = _distinct_words(rewrite), _distinct_words(original)
    overlap = F.size(F.array_intersect(rw, ow)) / F.greatest(F.size(rw), F.lit(1))
    return (F.when(lr > lo * max_length_ratio,
                   F.format_string("longer than the original (%d > %s x %d chars)", lr, F.lit(str(max_length_ratio)), lo))
            .when(lr < lo * min_length_ratio,
                  F.format_string("drops too much (%d < %s x %d chars)", lr, F.lit(str(min_length_ratio)), lo))
            .when(overlap < min_token_overlap,
                  F.format_string("adds words (%.2f of its words are in the original, < %s)", overlap,
                                  F.lit(str(min_token_overlap)))))
