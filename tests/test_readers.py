"""Readers: framing of every supported file format and compression, in plain Python."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from lewin.udfs.readers import ReaderOptions, detect_format, read_file

from .conftest import FIXTURES


def rows(path, source="reddit", **kw):
    out = []
    for b in read_file(str(path), ReaderOptions(source=source, **kw)):
        out.extend(b.to_pylist())
    return out


RECS = [{"id": f"r{i}", "author": f"u{i}", "created_utc": 1609459200 + i, "selftext": f"text {i}\nwith newline"}
        for i in range(5)]
JSONL = "".join(json.dumps(r) + "\n" for r in RECS).encode()


@pytest.mark.parametrize(
    "name,writer",
    [
        ("a.jsonl", lambda p: p.write_bytes(JSONL)),
        ("a.jsonl.gz", lambda p: p.write_bytes(gzip.compress(JSONL))),
        ("a.jsonl.bz2", lambda p: p.write_bytes(bz2.compress(JSONL))),
        ("a.ndjson.zst", lambda p: p.write_bytes(zstandard.ZstdCompressor().compress(JSONL))),
        ("a.jsonl.xz", lambda p: p.write_bytes(lzma.compress(JSONL))),
        ("a.json", lambda p: p.write_text(json.dumps(RECS, indent=2))),  # one JSON array document
        ("b.json", lambda p: p.write_bytes(JSONL)),  # .json holding JSON lines
    ],
)
def test_every_compression_and_json_shape_gives_the_same_records(tmp_path, name, writer):
    p = tmp_path / name
    writer(p)
    got = rows(p)
    assert len(got) == 5
    assert all(r["error"] is None for r in got)
    assert [json.loads(r["raw"])["id"] for r in got] == [f"r{i}" for i in range(5)]
    if name.startswith("a.jsonl") or name.startswith("a.ndjson"):
        assert [r["line"] for r in got] == [1, 2, 3, 4, 5]


def test_zstd_with_pushshift_long_window(tmp_path):
    # Pushshift dumps are written with --long=31; the default decoder window refuses them.
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=31)
    p = tmp_path / "RS_2019-01.zst"
    p.write_bytes(zstandard.ZstdCompressor(compression_params=params).compress(JSONL))
    assert len(rows(p)) == 5


def test_blank_lines_crlf_and_last_line_without_newline(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a":1}\r\n\r\n   \n{"a":2}')
    got = rows(p)
    assert [(r["line"], r["error"]) for r in got] == [(1, None), (2, "blank_line"), (3, "blank_line"), (4, None)]
    assert got[0]["raw"] == '{"a":1}'


def test_invalid_utf8_line_is_flagged_and_kept_visible(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a":"ok"}\n{"a":"caf\xe9"}\n')
    got = rows(p)
    assert got[0]["error"] is None
    assert got[1]["error"] == "invalid_utf8"
    assert "\\xe9" in got[1]["raw"]


def test_giant_line_is_reported_in_bounded_memory(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a":1}\n' + b"x" * (20 << 20) + b'\n{"a":2}\n')  # a 20 MiB line spanning chunks
    got = rows(p, max_record_bytes=1 << 20)
    assert [(r["line"], r["error"]) for r in got] == [(1, None), (2, "record_too_long"), (3, None)]
    assert len(got[1]["raw"]) <= 65_536


def test_truncated_gzip_keeps_what_was_read_and_reports_the_fault():
    got = rows(FIXTURES / "bad_input" / "reddit_truncated.jsonl.gz")
    good = [r for r in got if r["error"] is None]
    assert good, "records before the truncation point must survive"
    assert got[-1]["error"] == "file_read_error"
    assert got[-1]["line"] == good[-1]["line"] + 1 or got[-2]["error"] is not None


def test_csv_multiline_fields_index_column_and_short_rows():
    got = rows(FIXTURES / "bad_input" / "reddit_bad.csv")
    assert len(got) == 2
    ok, short = got
    payload = json.loads(ok["payload"])
    assert "" not in payload, "the unnamed index column is dropped"
    assert payload["selftext"] == "I wrote this, with a comma, and a newline\nin the middle of the text."
    assert ok["line"] == 2 and ok["raw"].startswith("0,c1,carol")
    assert short["error"] == "csv_field_count_mismatch" and short["line"] == 4


def test_parquet_rows_become_json_records(tmp_path):
    p = tmp_path / "s.parquet"
    pq.write_table(pa.Table.from_pylist(RECS), p)
    got = rows(p)
    assert [json.loads(r["raw"])["author"] for r in got] == [f"u{i}" for i in range(5)]
    assert [r["line"] for r in got] == [1, 2, 3, 4, 5]


def test_blog_authorship_xml_file(tmp_path):
    p = tmp_path / "1000331.female.37.indUnk.Leo.xml"
    p.write_bytes(
        b"<Blog>\n\n<date>31,August,2004</date>\n<post>\n\n   Well, I did it &amp; I am glad.\n\n</post>\n\n"
        b"<date>01,Mai,2004</date>\n<post>\nCaf\xe9 society.\n</post>\n</Blog>\n"
    )
    got = rows(p, source="blogger")
    assert len(got) == 2
    first, second = (json.loads(r["payload"]) for r in got)
    assert first == {"id": "1000331", "gender": "female", "age": "37", "topic": "indUnk", "sign": "Leo",
                     "date": "31,August,2004", "text": "Well, I did it &amp; I am glad."}
    assert second["text"] == "Café society."  # Windows-1252 bytes of the old corpus
    assert [r["line"] for r in got] == [3, 10]


def test_unrecognised_blog_file_name_is_reported(tmp_path):
    p = tmp_path / "notes.xml"
    p.write_text("<Blog><date>1,May,2004</date><post>hi</post></Blog>")
    assert [r["error"] for r in rows(p, source="blogger")] == ["blog_file_name_unrecognised"]


def test_twitter_v2_page_is_expanded_with_its_authors(tmp_path):
    page = {
        "data": [
            {"id": "1", "author_id": "u1", "created_at": "2021-05-18T19:24:56.000Z", "text": "hello",
             "referenced_tweets": [{"type": "quoted", "id": "9"}], "public_metrics": {"like_count": 4}},
            {"id": "2", "author_id": "u2", "created_at": "2021-05-18T19:25:00.000Z", "text": "RT @x: hi",
             "referenced_tweets": [{"type": "retweeted", "id": "8"}]},
            {"id": "3", "name": "not a tweet"},
        ],
        "includes": {"users": [{"id": "u1", "username": "one", "verified_type": "business",
                                "public_metrics": {"followers_count": 7}}]},
    }
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps(page) + "\n" + json.dumps({"errors": [{"title": "Not Found"}]}) + "\n"
                 + json.dumps({"id": "5", "action": "delete", "reason": "protected"}) + "\n")
    got = rows(p, source="twitter")
    assert [(r["line"], r["item"], r["error"]) for r in got] == [
        (1, 0, None), (1, 1, None), (1, 2, "not_a_tweet"), (2, 0, "twitter_error_page"), (3, 0, "twitter_compliance_event")
    ]
    t1, t2 = json.loads(got[0]["payload"]), json.loads(got[1]["payload"])
    assert t1["user_name"] == "one" and t1["user_verified_type"] == "business" and t1["user_followers"] == 7
    assert t1["is_quote"] and not t1["is_retweet"] and t1["like_count"] == 4
    assert t1["created_at_ms"] == 1621365896000
    assert t2["is_retweet"] and t2["user_name"] is None


def test_twitter_v1_and_flat_formats(tmp_path):
    v1 = {"id_str": "10", "created_at": "Wed Oct 10 20:19:24 +0000 2018", "full_text": "long text",
          "user": {"id_str": "77", "screen_name": "sn", "friends_count": 3}, "retweeted_status": {"id": 1},
          "source": '<a href="x">Twitter Web App</a>'}
    flat = {"id": "11", "author_id": "78", "author": {"id": "78", "username": "flat"}, "text": "t",
            "created_at": "2021-01-01T00:00:00.000Z"}
    p = tmp_path / "t.jsonl.gz"
    p.write_bytes(gzip.compress((json.dumps(v1) + "\n" + json.dumps(flat) + "\n").encode()))
    a, b = (json.loads(r["payload"]) for r in rows(p, source="twitter"))
    assert a["api_format"] == "v1.1" and a["author_id"] == "77" and a["is_retweet"] is True
    assert a["created_at_ms"] == 1539202764000 and a["source_app"] == "Twitter Web App" and a["user_following"] == 3
    assert b["api_format"] == "v2-flat" and b["user_name"] == "flat"


def test_format_detection():
    assert detect_format("x/RS_2019-01.zst") == "jsonl"
    assert detect_format("RC_2011-01.bz2") == "jsonl"
    assert detect_format("data.bin") is None
    assert detect_format("RS_2019-01.ndjson.zst") == "jsonl"
    assert detect_format("blogtext.CSV.gz") == "csv"
    assert detect_format("1.male.2.x.Leo.xml") == "blogxml"
    assert detect_format("LICENSE") is None
