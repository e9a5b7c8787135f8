"""Bronze normalisation (reader rows -> typed rows + reasons), on every engine."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from lewin.schemas import tables as T
from lewin.udfs import bronze

pytestmark = pytest.mark.transforms

P = bronze.BronzeParams(
    run_id="r1",
    run_started=datetime(2026, 1, 1, tzinfo=timezone.utc),
    min_event_time=datetime(1995, 1, 1, tzinfo=timezone.utc),
    max_event_time=datetime(2026, 1, 3, tzinfo=timezone.utc),
    max_text_chars=2000,
)


def normalize(spark, source, records, payload=False, errors=None):
    rows = []
    for i, r in enumerate(records):
        text = r if isinstance(r, str) else json.dumps(r)
        err = (errors or {}).get(i)
        rows.append(("f.jsonl", i + 1, 0, text, text if payload else None, err, None))
    df = spark.createDataFrame(rows, T.READER_OUTPUT)
    out = bronze.normalize(df, source, P).orderBy("line").collect()
    return [r.asDict() for r in out]


def utc(*a):
    return datetime(*a, tzinfo=timezone.utc).replace(tzinfo=None)


def test_reddit_submission_and_comment(spark):
    sub = {"id": "abc", "author": "alice", "created_utc": "1609459200.0", "score": "12", "num_comments": 3,
           "title": "T", "selftext": "body", "subreddit": "x", "stickied": "False", "over_18": True}
    com = {"id": "c1", "author": "bob", "created_utc": 1609459201, "body": "hi", "link_id": "t3_abc",
           "parent_id": "t3_abc", "score": -2}
    a, b = normalize(spark, "reddit", [sub, com])
    assert a["_reason"] is None and a["_table"] == "bronze_reddit"
    assert a["record_id"] == "reddit:t3_abc" and a["user_id"] == "alice" and a["score"] == 12
    assert a["event_ts"] == utc(2021, 1, 1) and a["stickied"] is False and a["over_18"] is True
    assert b["_table"] == "bronze_reddit_comments" and b["record_id"] == "reddit:t1_c1"
    assert b["text"] == "hi" and b["title"] is None and b["score"] == -2 and b["link_id"] == "t3_abc"


def test_reddit_without_native_id_gets_a_stable_content_hash(spark):
    r = {"author": "alice", "created_utc": 1609459200, "title": "T", "selftext": "s"}
    a, b = normalize(spark, "reddit", [r, dict(r)])
    assert a["record_id"].startswith("reddit:h:") and a["record_id"] == b["record_id"]
    (c,) = normalize(spark, "reddit", [dict(r, selftext="other")])
    assert c["record_id"] != a["record_id"]


def test_reddit_deleted_and_removed_are_kept_for_the_filters(spark):
    # [deleted]/[removed] are real values in real dumps: bronze keeps them, silver rules drop them.
    recs = [{"id": "d1", "author": "[deleted]", "created_utc": 1609459200, "title": "t", "selftext": "[deleted]"},
            {"id": "d2", "author": "carol", "created_utc": 1609459200, "title": "t", "selftext": "[removed]"}]
    a, b = normalize(spark, "reddit", recs)
    assert a["_reason"] is None and a["user_id"] == "[deleted]"
    assert b["_reason"] is None and b["text"] == "[removed]"


@pytest.mark.parametrize(
    "record,reason",
    [
        ('{"id": "x", "author": "a", "created_utc": 1', "malformed_json"),
        ('[1, 2, 3]', "not_a_json_object"),
        ('"just a string"', "not_a_json_object"),
        ({"id": "x", "created_utc": 1609459200, "title": "t"}, "missing_user"),
        ({"id": "x", "author": "  ", "created_utc": 1609459200, "title": "t"}, "missing_user"),
        ({"id": "x", "author": {"n": 1}, "created_utc": 1609459200, "title": "t"}, "wrong_type:author"),
        ({"id": "x", "author": "a", "title": "t"}, "missing_time"),
        ({"id": "x", "author": "a", "created_utc": "soon", "title": "t"}, "unparseable_time"),
        ({"id": "x", "author": "a", "created_utc": 10**17, "title": "t"}, "unparseable_time"),
        ({"id": "x", "author": "a", "created_utc": 0, "title": "t"}, "time_out_of_range"),
        ({"id": "x", "author": "a", "created_utc": 1609459200, "title": "t", "score": "many"}, "wrong_type:score"),
        ({"id": "x", "author": "a", "created_utc": 1609459200, "title": "t", "num_comments": [1]}, "wrong_type:num_comments"),
        ({"id": "x", "author": "a", "created_utc": 1609459200, "title": "t", "num_comments": -1}, "negative_count:num_comments"),
        ({"id": "x", "author": "a", "created_utc": 1609459200}, "missing_text"),
        ({"id": "x", "author": "a", "created_utc": 1609459200, "selftext": {"a": 1}}, "wrong_type:text"),
        ({"id": "x", "author": "a", "created_utc": 1609459200, "selftext": "z" * 2001}, "text_too_long"),
    ],
)
def test_reddit_reasons(spark, record, reason):
    (row,) = normalize(spark, "reddit", [record])
    assert row["_reason"] == reason


def test_reader_errors_win_and_blank_lines_have_no_table(spark):
    a, b = normalize(spark, "reddit", ['{"x": 1}', ""], errors={0: "invalid_utf8", 1: "blank_line"})
    assert a["_reason"] == "invalid_utf8"
    assert b["_reason"] == "blank_line" and b["_table"] is None


def test_twitter_payload(spark):
    payload = {"id": "1", "author_id": "u1", "created_at_ms": 1621365896000, "created_at_raw": "x", "text": "hi",
               "is_retweet": False, "is_quote": True, "is_reply": False, "n_urls": 2, "user_followers": 9,
               "user_verified_type": "business", "edit_history_ids": ["1"], "api_format": "v2"}
    bad_time = dict(payload, id="2", created_at_ms=None, created_at_raw="Someday")
    no_user = dict(payload, id="3", author_id=None)
    a, b, c = normalize(spark, "twitter", [payload, bad_time, no_user], payload=True)
    assert a["_reason"] is None and a["record_id"] == "twitter:1" and a["user_id"] == "u1"
    assert a["event_ts"] == utc(2021, 5, 18, 19, 24, 56) and a["is_quote"] is True and a["n_urls"] == 2
    assert a["user_verified_type"] == "business" and a["edit_history_ids"] == ["1"]
    assert b["_reason"] == "unparseable_time"
    assert c["_reason"] == "missing_user"


def test_blogger_variants_and_dates(spark):
    jsonl = {"id": 328871, "author_id": 3313180, "gender": "male", "age": 23, "job": "Technology",
             "starsign": "Virgo", "date": "2004-06-15", "text": "I went out."}
    csv_row = {"id": "2059027", "gender": "male", "age": "15", "topic": "Student", "sign": "Leo",
               "date": "14,May,2004", "text": "I was bored."}
    german = dict(csv_row, date="02,Juni,2004")
    french = dict(csv_row, date="31,août,2004")
    impossible = dict(csv_row, date="31,February,2004")
    rows = normalize(spark, "blogger", [jsonl, csv_row, german, french, impossible], payload=True)
    a, b, c, d, e = rows
    assert a["record_id"] == "blogger:328871" and a["user_id"] == "3313180" and a["industry"] == "Technology"
    assert a["event_ts"] == utc(2004, 6, 15) and a["age"] == 23 and a["star_sign"] == "Virgo"
    assert b["record_id"].startswith("blogger:h:") and b["user_id"] == "2059027" and b["event_ts"] == utc(2004, 5, 14)
    assert c["event_ts"] == utc(2004, 6, 2) and d["event_ts"] == utc(2004, 8, 31)
    assert e["_reason"] == "unparseable_time"


def test_amazon_2018_2023_and_metadata(spark):
    r18 = {"overall": 5.0, "verified": True, "reviewerID": "A1", "asin": "B1", "reviewText": "Great",
           "summary": "Five", "unixReviewTime": 1472688000, "vote": "1,204"}
    r23 = {"rating": 4.0, "title": "Ok", "text": "Fine", "asin": "B2V", "parent_asin": "B2", "user_id": "A2",
           "timestamp": 1588687728923, "helpful_vote": 2, "verified_purchase": False}
    meta = {"main_category": "All Beauty", "title": "Soap", "categories": ["Beauty", "Soap"], "price": "$12.99",
            "parent_asin": "B2", "description": ["line one", "line two"], "store": "Acme"}
    bad = dict(r18, overall=9)
    rows = normalize(spark, "amazon", [r18, r23, meta, bad])
    a, b, c, d = rows
    assert a["_table"] == "bronze_amazon" and a["user_id"] == "A1" and a["item_id"] == "B1" and a["helpful_votes"] == 1204
    assert a["event_ts"] == utc(2016, 9, 1) and a["title"] == "Five" and a["dataset"] == "reviews2018"
    assert a["record_id"].startswith("amazon:h:")
    assert b["item_id"] == "B2" and b["asin"] == "B2V" and b["dataset"] == "reviews2023" and b["verified"] is False
    assert b["event_ts"] == datetime.fromtimestamp(1588687728.923, timezone.utc).replace(tzinfo=None)
    assert c["_table"] == "bronze_amazon_items" and c["record_id"] == "amazon_item:B2" and c["_reason"] is None
    assert c["price"] == 12.99 and c["categories"] == ["Beauty", "Soap"] and c["description"] == "line one\nline two"
    assert d["_reason"] == "rating_out_of_range"


def test_table_rows_cast_to_the_declared_schema(spark):
    recs = [{"id": "abc", "author": "alice", "created_utc": 1609459200, "title": "T", "selftext": "b"}]
    df = spark.createDataFrame([("f", 1, 0, json.dumps(recs[0]), None, None, None)], T.READER_OUTPUT)
    out = bronze.table_rows(bronze.normalize(df, "reddit", P), "bronze_reddit")
    assert [f.name for f in out.schema.fields] == [f.name for f in T.BRONZE_REDDIT.fields]
    assert [f.dataType for f in out.schema.fields] == [f.dataType for f in T.BRONZE_REDDIT.fields]
    assert out.count() == 1


# --- poison values: every parse is total (issue 16) ---------------------------------------------
BLOG_DATES = {  # date as written -> parsed, or None: unparseable_time naming the field and the value
    "14,May,2004": utc(2004, 5, 14), "02,Juni,2004": utc(2004, 6, 2), "1,März,2004": utc(2004, 3, 1),
    "14,Décembre,2004": utc(2004, 12, 14), "14 May 2004": utc(2004, 5, 14), "May 14, 2004": utc(2004, 5, 14),
    "14-Sept-2004": utc(2004, 9, 14), "2004-05-14": utc(2004, 5, 14), "2004/05/14": utc(2004, 5, 14),
    "2004.05.14": utc(2004, 5, 14), "2004-06-15T10:00:00": utc(2004, 6, 15), "14.05.2004": utc(2004, 5, 14),
    "unknown": None, "14,May": None, "14,,2004": None, ",": None, "05/14/2004": None, "x,May,2004": None,
    "31,February,2004": None, "99999999999,May,2004": None, "14,May,99999999999": None, "14,Smarch,2004": None,
    "2004-13-45": None, "٣,May,2004": None, "[1,2]": None,
}


def test_blogger_dates_in_every_form_and_bad_ones_quarantined_not_fatal(spark):
    recs = [{"id": i, "author_id": 7, "date": d, "text": "I wrote."} for i, d in enumerate(BLOG_DATES)]
    rows = normalize(spark, "blogger", recs)
    for (date, want), row in zip(BLOG_DATES.items(), rows):
        if want is not None:
            assert (row["_reason"], row["event_ts"]) == (None, want), date
        else:
            assert (row["_reason"], row["_detail"]) == ("unparseable_time", f"date={date}"), date


def test_values_that_only_look_nested_are_text(spark):
    looks = ["[2927](https://www.reddit.com/r/x/comments/2927) is the thread", "[2021] My year in review",
             "[1, 2, 3] are my favourite numbers", '{"k": 1} is how I write config', "[1]] x [", "[1], [2]",
             "[1, 2, 3]", "{}", "[removed]", " [deleted]"]
    base = {"id": "x", "author": "a", "created_utc": 1609459200}
    reddit = ([dict(base, id=f"s{i}", title="t", selftext=t) for i, t in enumerate(looks)]
              + [dict(base, id=f"t{i}", title=t) for i, t in enumerate(looks)]
              + [dict(base, id=f"c{i}", body=t, link_id="t3_x") for i, t in enumerate(looks)]
              + [dict(base, id="a1", author="[a] b", title="t")])
    nested = [dict(base, id="n1", title="t", selftext=["a", 1]), dict(base, id="n2", title={"k": [1]}),
              dict(base, id="n3", body={"a": 1}, link_id="t3_x"), dict(base, id="n4", author=["a"], title="t")]
    rows = normalize(spark, "reddit", reddit + nested)
    assert [r["_reason"] for r in rows[: len(reddit)]] == [None] * len(reddit)
    assert [r["_reason"] for r in rows[len(reddit):]] == ["wrong_type:text", "wrong_type:title", "wrong_type:text",
                                                          "wrong_type:author"]
    assert rows[0]["text"] == looks[0] and rows[len(looks)]["title"] == looks[0]
    blog = [{"id": i, "author_id": 7, "date": "2004-05-14", "text": t} for i, t in enumerate(looks)]
    rows = normalize(spark, "blogger", blog + [{"id": 99, "author_id": 7, "date": "2004-05-14", "text": {"a": 1}}])
    assert [r["_reason"] for r in rows] == [None] * len(looks) + ["wrong_type:text"]
    review = {"reviewerID": "A1", "asin": "B1", "overall": 5, "unixReviewTime": 1472688000}
    amazon = [dict(review, reviewText=t) for t in looks] + [dict(review, reviewText=["a"]), dict(review, text={"a": 1})]
    items = [{"parent_asin": f"B{i}", "title": "Soap", "description": t, "features": [t, "x"]} for i, t in enumerate(looks[:5])]
    rows = normalize(spark, "amazon", amazon + items)
    assert [r["_reason"] for r in rows] == [None] * len(looks) + ["wrong_type:text"] * 2 + [None] * 5
    # an item's description that only starts like a JSON array stays as written; a real array is joined
    assert [r["description"] for r in rows[-5:]] == looks[:5]
    assert [r["features"] for r in rows[-5:]] == [f"{t}\nx" for t in looks[:5]]


def test_reddit_iso_times_in_created_utc(spark):
    forms = ["2021-01-01T05:45:22Z", "2021-01-01t05:45:22z", "2021-01-01 05:45:22+00:00", "20210101T054522Z",
             "2021-01-01T05:45:22,000Z", "2021-01-01T06:45:22+01:00", "2021-01-01T05:45:22Z[UTC]",
             "2021-01-01T05:45:22.000000Z"]
    rows = normalize(spark, "reddit", [{"id": f"i{i}", "author": "a", "created_utc": v, "title": "t"}
                                       for i, v in enumerate(forms)] + [
        {"id": "m", "author": "a", "created_utc": "2021-01-01T05:45Z", "title": "t"},
        {"id": "p", "author": "a", "created": "20210101T0545+0000", "title": "t"},
        {"id": "u", "author": "a", "created_utc": "the day after", "title": "t"}])
    assert [(r["_reason"], r["event_ts"]) for r in rows[: len(forms)]] == [(None, utc(2021, 1, 1, 5, 45, 22))] * len(forms)
    epochs = normalize(spark, "reddit", [{"id": f"e{i}", "author": "a", "created_utc": v, "title": "t"}
                                         for i, v in enumerate([" 1609459200 ", "+1609459200", "1609459200.0", "1.6094592e9"])])
    assert [(r["_reason"], r["event_ts"]) for r in epochs] == [(None, utc(2021, 1, 1))] * 4
    assert rows[-3]["event_ts"] == rows[-2]["event_ts"] == utc(2021, 1, 1, 5, 45)
    assert (rows[-1]["_reason"], rows[-1]["_detail"]) == ("unparseable_time", "created_utc=the day after")


def test_numbers_and_booleans_never_fail_the_job(spark):
    base = {"id": "x", "author": "a", "created_utc": 1609459200, "title": "t"}
    reddit = [dict(base, score="1e30"), dict(base, num_comments="Infinity"), dict(base, stickied="maybe"),
              dict(base, over_18=2), dict(base, is_self="1.0"), dict(base, created_utc="NaN"),
              dict(base, created_utc="1e300"), dict(base, created_utc="-1e18"), dict(base, score=str(-(2**63) - 1))]
    got = [(r["_reason"], r["_detail"]) for r in normalize(spark, "reddit", reddit)]
    assert got == [("wrong_type:score", "score=1e30"), ("wrong_type:num_comments", "num_comments=Infinity"),
                   ("wrong_type:stickied", "stickied=maybe"), ("wrong_type:over_18", "over_18=2"), (None, None),
                   ("unparseable_time", "created_utc=NaN"), ("unparseable_time", "created_utc=1e300"),
                   ("unparseable_time", "created_utc=-1e18"), ("wrong_type:score", "score=-9223372036854775809")]
    (age,) = normalize(spark, "blogger", [{"id": 1, "author_id": 7, "date": "2004-05-14", "text": "t", "age": 99999999999}])
    assert (age["_reason"], age["_detail"]) == ("wrong_type:age", "age=99999999999")
    review = {"reviewerID": "A1", "asin": "B1", "overall": 5, "unixReviewTime": 1472688000, "reviewText": "ok"}
    rows = normalize(spark, "amazon", [dict(review, vote="many"), dict(review, verified="perhaps"),
                                       dict(review, overall="NaN"), dict(review, unixReviewTime="1e400")])
    assert [(r["_reason"], r["_detail"]) for r in rows] == [
        ("wrong_type:helpful_votes", "helpful_votes=many"), ("wrong_type:verified", "verified=perhaps"),
        ("rating_out_of_range", "rating=NaN"), ("unparseable_time", "unixReviewTime=1e400")]
