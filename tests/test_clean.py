"""Cleaning: before/after on real samples and on each kind of noise, identical on every engine."""

from __future__ import annotations

import csv
import json

import pytest

from lewin.udfs.clean import clean_column

from .conftest import SHARED_DATA

pytestmark = pytest.mark.transforms


def clean(spark, rows: list[tuple[str, str]]) -> list[str]:
    df = spark.createDataFrame([(i, s, t) for i, (s, t) in enumerate(rows)], "i int, source string, text string")
    return [r["c"] for r in clean_column(df, "text", "c", "source").orderBy("i").collect()]


CASES = [
    ("reddit", "<p>I <b>really</b> needed this: https://example.org/a?b=c &amp; thanks!</p>", "I really needed this: & thanks!"),
    ("reddit", "See [this thread](https://reddit.com/r/x) and ![img](https://i.imgur.com/x.png)", "See this thread and img"),
    ("reddit", "# Title\n\n> a quote\n\n* one\n* two\n1. first\n\n---\n\nend", "Title\n\na quote\n\none\ntwo\nfirst\n\nend"),
    ("reddit", "**bold** __under__ ~~strike~~ `code` *em* and 5 * 3 * 2", "bold under strike code em and 5 * 3 * 2"),
    ("reddit", "zero\u200bwidth\ufeff and control\x07\x1b chars\u00ad", "zerowidth and control chars"),
    ("reddit", "a &lt; b &gt; c, &quot;q&quot;, it&#39;s, &amp;lt;kept&amp;gt;", 'a < b > c, "q", it\'s, &lt;kept&gt;'),
    ("reddit", "I <3 you and x < y", "I <3 you and x < y"),
    ("reddit", "lots   of\t\tspace\n\n\n\n\nand lines  ", "lots of space\n\nand lines"),
    ("reddit", "<script>var x = 1;</script><!-- hidden -->visible", "visible"),
    ("twitter", "RT @someone: I love this #blessed @friend $AAPL https://t.co/abc so much", "I love this so much"),
    ("twitter", "mail me at me@example.com #tag", "mail me at me@example.com"),
    ("blogger", "I went with  urlLink this guy , and&nbsp;left", "I went with this guy , and left"),
]


def test_cleaning_cases(spark):
    got = clean(spark, [(s, t) for s, t, _ in CASES])
    assert got == [want for _, _, want in CASES]


def test_twitter_rules_only_apply_to_twitter(spark):
    assert clean(spark, [("reddit", "#1 fan of @you")]) == ["#1 fan of @you"]


def test_cleaning_is_idempotent(spark):
    # (double-escaped entities are decoded one level per pass, by design: "&amp;lt;" is text "&lt;")
    cases = [c for c in CASES if "&amp;lt;" not in c[1]]
    once = clean(spark, [(s, t) for s, t, _ in cases])
    twice = clean(spark, [(s, t) for (s, _, _), t in zip(cases, once)])
    assert twice == once


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real samples not present at {SHARED_DATA}")
def test_before_and_after_on_real_samples(spark):
    csv.field_size_limit(10**9)
    reddit = {x["id"]: x["selftext"] for x in csv.DictReader(open(SHARED_DATA / "reddit" / "praw_submissions_drugs.csv"))}
    blogs = {str(x["id"]): x["text"] for x in map(json.loads, open(SHARED_DATA / "blogger" / "blogger_sample.jsonl"))}
    tweets = {t["id"]: t["text"] for line in open(SHARED_DATA / "twitter" / "kpop.jsonl") for t in json.loads(line)["data"]}
    got = clean(spark, [("reddit", reddit["pm2oli"]), ("reddit", reddit["rk0qz5"]), ("blogger", blogs["261190"][:400]),
                        ("twitter", tweets["1440717124545114123"])])
    # markdown bold/italics go, the quote and line structure stay
    assert reddit["pm2oli"].startswith("**Tv blaring in the background:**\n")
    assert got[0].startswith("Tv blaring in the background:\n“2 kilograms of cocaine")
    assert got[0].endswith("\n\nMe:\nChuckles as I wash down an entire bottle of zaza red with a few shots of sleep "
                           "walker, and proceed to take tokes from my delta 8 pen.\n\nDrugs have won the war on drugs")
    # Reddit's "&#x200B;" spacer paragraph disappears, the paragraphs stay
    assert "&#x200B;" in reddit["rk0qz5"]
    assert "\n\nIs it normal to get this high?" in got[1] and "&#x200B;" not in got[1] and "\n\n\n" not in got[1]
    # the corpus' link token and its runs of spaces
    assert got[2].startswith("Who ate all my guava butter? by IJ I went to High school with this guy , star of")
    # hashtags and mentions, also inside parentheses; the link; what is left is the sentence
    assert got[3] == '| TWICE participará de "The Tonight Show Starring Jimmy Fallon", por primera vez 🤩 / ✍️ ().'
