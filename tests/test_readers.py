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
    assert len(got[1]["raw"]) == 65_537  # what quarantine keeps (64 Ki chars) + 1: the cut shows (raw_truncated)


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


# --- truncated archives: every compression reports how far it got --------------------------------
def _pushshift(n: int) -> bytes:
    return "".join(json.dumps({"id": f"s{i}", "author": f"u{i % 97}", "created_utc": 1609459200 + i,
                               "title": f"post {i}", "selftext": "lorem ipsum " * (i % 23), "subreddit": "x"}) + "\n"
                   for i in range(n)).encode()


_LONG_WINDOW = zstandard.ZstdCompressionParameters.from_level(3, window_log=31)
COMPRESSORS = {
    "zst": lambda b: zstandard.ZstdCompressor(compression_params=_LONG_WINDOW).compress(b),  # Pushshift: one frame
    "gz": gzip.compress,
    "bz2": lambda b: bz2.compress(b, 1),  # 100 kB blocks: the first half holds complete blocks
    "xz": lzma.compress,
}


@pytest.mark.parametrize("ext", sorted(COMPRESSORS))
def test_truncated_archive_keeps_its_readable_part_and_reports_how_far(tmp_path, ext):
    data = _pushshift(3000)
    blob = COMPRESSORS[ext](data)
    p = tmp_path / f"RS_2021-01.{ext}"
    p.write_bytes(blob[: len(blob) // 2])
    got = rows(p)
    good = [r for r in got if r["error"] is None]
    assert [r["error"] for r in got if r["error"] is not None] == ["file_read_error"] and got[-1]["error"]
    assert 0 < len(good) < 3000
    assert [json.loads(r["raw"])["id"] for r in good] == [f"s{i}" for i in range(len(good))]
    fault = got[-1]
    assert fault["line"] == len(good) + 1
    assert f"read to line {len(good)}" in fault["detail"] and f"of {len(blob) // 2:,} of the file" in fault["detail"]
    # the record the fault cut is the fault row's raw text, not a malformed record of its own
    assert fault["raw"] and data.decode().split("\n")[len(good)].startswith(fault["raw"])


def test_small_truncated_zstd_frame_is_reported_not_silently_empty(tmp_path):
    p = tmp_path / "a.jsonl.zst"
    p.write_bytes(zstandard.ZstdCompressor().compress(JSONL)[:-6])
    got = rows(p)
    assert [(r["line"], r["error"]) for r in got] == [(1, "file_read_error")]
    assert "zstd frame 1 is incomplete" in got[0]["detail"] and "no complete record read" in got[0]["detail"]


def test_zstd_frames_concatenated_skippable_and_garbage_after(tmp_path):
    half = 2
    first = "".join(json.dumps(r) + "\n" for r in RECS[:half]).encode()
    rest = "".join(json.dumps(r) + "\n" for r in RECS[half:]).encode()
    skippable = b"\x50\x2a\x4d\x18" + (3).to_bytes(4, "little") + b"abc"
    cctx = zstandard.ZstdCompressor()
    p = tmp_path / "multi.jsonl.zst"
    p.write_bytes(cctx.compress(first) + skippable + cctx.compress(rest))  # pzstd / cat a.zst b.zst
    assert [json.loads(r["raw"])["id"] for r in rows(p)] == [f"r{i}" for i in range(5)]
    p.write_bytes(cctx.compress(JSONL) + b"not zstd")
    got = rows(p)
    assert [r["error"] for r in got] == [None] * 5 + ["file_read_error"]


def test_truncated_json_document_and_blog_file_keep_what_is_complete(tmp_path):
    p = tmp_path / "b.json.gz"
    p.write_bytes(gzip.compress(JSONL)[:-30])  # JSON lines in a .json: complete lines survive
    got = rows(p)
    assert got[-1]["error"] == "file_read_error" and all(r["error"] is None for r in got[:-1]) and len(got) > 1
    xml = b"<Blog>\n" + b"".join(b"<date>%d,May,2004</date>\n<post>\nPost number %d.\n</post>\n" % (i, i)
                                 for i in range(1, 29)) + b"</Blog>\n"
    p = tmp_path / "1000331.female.37.indUnk.Leo.xml.gz"
    p.write_bytes(gzip.compress(xml)[:-40])
    got = rows(p, source="blogger")
    assert got[-1]["error"] == "file_read_error" and len(got) > 1 and all(r["error"] is None for r in got[:-1])


# --- byte order marks ---------------------------------------------------------------------------
BOM = b"\xef\xbb\xbf"


def test_bom_is_stripped_from_json_lines_json_documents_and_csv_headers(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(BOM + JSONL + BOM + JSONL)  # two files concatenated, each with its BOM
    got = rows(p)
    assert [r["error"] for r in got] == [None] * 10
    assert all(not r["raw"].startswith("\ufeff") and json.loads(r["raw"]) for r in got)
    p = tmp_path / "a.json"
    p.write_bytes(BOM + json.dumps(RECS, indent=2).encode())
    assert [json.loads(r["raw"])["id"] for r in rows(p)] == [f"r{i}" for i in range(5)]
    p = tmp_path / "blogtext.csv"
    p.write_bytes(BOM + b"id,gender,age,topic,sign,date,text\n2059027,male,15,Student,Leo,\"14,May,2004\",Hi.\n")
    (row,) = rows(p, source="blogger")
    assert json.loads(row["payload"])["id"] == "2059027"


def test_bom_before_a_twitter_page(tmp_path):
    page = {"data": [{"id": "1", "author_id": "u1", "created_at": "2021-05-18T19:24:56.000Z", "text": "hello"}],
            "includes": {"users": [{"id": "u1", "username": "one"}]}}
    p = tmp_path / "page.json"
    p.write_bytes(BOM + json.dumps(page, indent=2).encode())  # pretty-printed: one document
    (row,) = rows(p, source="twitter")
    assert row["error"] is None and json.loads(row["payload"])["user_name"] == "one"
    p = tmp_path / "pages.jsonl"
    p.write_bytes(BOM + json.dumps(page).encode() + b"\n")
    (row,) = rows(p, source="twitter")
    assert row["error"] is None


# --- a JSON line is one JSON value --------------------------------------------------------------
GOOD = '{"id": "g", "author": "a", "created_utc": 1609459200, "title": "t"}'


@pytest.mark.parametrize(
    "line,reason,in_detail",
    [
        (GOOD + GOOD, "glued_records", "2 JSON values"),
        (GOOD + " " + GOOD + "\t" + GOOD, "glued_records", "3 JSON values"),
        (GOOD + "," + GOOD, "glued_records", "2 JSON values"),
        (GOOD + "[1]", "glued_records", "2 JSON values"),
        (GOOD + " garbage", "trailing_garbage", "'garbage'"),
        (GOOD + "}", "trailing_garbage", "1 character after the JSON value that ends at character 67: '}'"),
        (GOOD + "] extra", "trailing_garbage", ""),
        (GOOD + " // a comment", "trailing_garbage", ""),
        (GOOD + GOOD[:20], "trailing_garbage", ""),  # a second record cut short is not a record
        ('{"id": "n", "author": "a", "created_utc": 1e400, "title": "t"}', "number_out_of_range", "created_utc=1e400"),
        ('{"id": "n", "author": "a", "created_utc": 1, "ups": -2.5E+999}', "number_out_of_range", "ups=-2.5E+999"),
        ('{"id": "n", "author": "a", "score": ' + "9" * 400 + "}", "number_out_of_range", "score="),
        ('{"id": "n", "nested": {"deep": [1, 2e308]}}', "number_out_of_range", "2e308"),
        # valid for Spark's parser too: left to bronze, unchanged
        ('{"id": "x", "author": "a", "score": NaN}', None, None),
        (GOOD + "   ", None, None),
        ('{"id": "x", "title": "}{ and 1e400 and ] are text"}', None, None),
        ('{"id": "x", "score": 1e308, "big": 123456789012345678901234567890, "tiny": 1e-400}', None, None),
        ('{"id": "x", "title": "t"', None, None),  # not JSON: bronze says malformed_json
        ("[" * 5000 + "]" * 5000, None, None),  # too deep for the Python parser: bronze decides
    ],
)
def test_json_line_faults_have_their_own_reasons(tmp_path, line, reason, in_detail):
    p = tmp_path / "x.jsonl"
    p.write_text(GOOD + "\n" + line + "\n" + GOOD.replace('"g"', '"h"') + "\n")
    got = rows(p)
    assert [r["error"] for r in got] == [None, reason, None], got[1]["detail"]
    assert got[1]["raw"] == line.strip() or got[1]["raw"] == line
    if in_detail is not None:
        assert in_detail in got[1]["detail"]


def test_json_document_with_one_bad_element_keeps_the_others(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[\n {"id": "r0", "author": "a"},\n {"id": "r1", "author": "a", "created_utc": 1e400},\n'
                 ' {"id": "r2", "author": "a", "score": NaN}\n]\n')
    got = rows(p)
    assert [(r["item"], r["error"]) for r in got] == [(0, None), (1, "number_out_of_range"), (2, None)]
    assert "created_utc=1e400" in got[1]["detail"] and json.loads(got[2]["raw"])["id"] == "r2"
    p.write_text('[{"id": "r0"}, {"id": "r1"}] trailing')
    assert [r["error"] for r in rows(p)] == [None, None, "trailing_garbage"]


def test_twitter_lines_glued_garbage_and_values_of_the_wrong_type(tmp_path):
    tweet = {"id": "1", "author_id": "u1", "created_at": "2021-05-18T19:24:56.000Z", "text": "hello",
             "public_metrics": {"like_count": "1,204", "retweet_count": "100+"}}
    bad_user = {"id_str": "10", "created_at": "Wed Oct 10 20:19:24 +0000 2018", "text": "t", "user": "bob"}
    bad_count = dict(tweet, id="3", public_metrics={"retweet_count": "many"})
    huge = dict(tweet, id="4", public_metrics={"retweet_count": 2**70})
    nested_text = dict(tweet, id="5", text={"a": 1})
    bad_time = dict(tweet, id="6", created_at="2021-13-45T99:00:00Z")
    lines = [json.dumps(tweet) + json.dumps(tweet), json.dumps(tweet) + " x", json.dumps(bad_user),
             json.dumps(bad_count), json.dumps(huge), json.dumps(nested_text), json.dumps(bad_time),
             json.dumps(dict(tweet, id="7", lang=float("nan"))), '{"data": [' + json.dumps(tweet) + "], \"n\": 1e400}"]
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(lines) + "\n")
    got = rows(p, source="twitter")
    assert [(r["error"], r["detail"] and r["detail"].split(":")[0].split(" (")[0]) for r in got] == [
        ("glued_records", "2 JSON values on one line"),
        ("trailing_garbage", f"1 character after the JSON value that ends at character {len(json.dumps(tweet))}"),
        ("wrong_type:user", 'user="bob"'), ("wrong_type:retweet_count", 'retweet_count="many"'),
        ("wrong_type:retweet_count", "retweet_count=1180591620717411303424"), ("wrong_type:text", 'text={"a"'),
        (None, None), ("wrong_type:lang", "lang=NaN"), ("number_out_of_range", "n=1e400"),
    ]
    assert json.loads(got[6]["payload"])["created_at_ms"] is None  # bronze: unparseable_time
    assert {k: json.loads(got[6]["payload"])[k] for k in ("like_count", "retweet_count")} == {
        "like_count": 1204, "retweet_count": 100}


def test_twitter_time_forms_and_counts_as_text(tmp_path):
    from lewin.udfs.sources.twitter import _twitter_time_ms

    ms = 1621365896000
    for v in ("2021-05-18T19:24:56Z", "2021-05-18t19:24:56z", "2021-05-18 19:24:56+00:00", "2021-05-18T21:24:56+02:00",
              "20210518T192456Z", "2021-05-18T19:24:56.0000001Z", "2021-05-18T19:24:56,0Z", "2021-05-18T20:24:56+0100",
              "Tue May 18 19:24:56 +0000 2021"):
        assert _twitter_time_ms(v) == ms, v
    for v in ("2021-05-18T24:00:00Z", "soon", "", "9" * 500, None, 1621365896, {"a": 1}, "2021-02-30T00:00:00Z"):
        assert _twitter_time_ms(v) is None, v


def test_zstd_decompression_bomb_is_decoded_in_bounded_steps(tmp_path):
    from lewin.udfs.compression import open_binary

    p = tmp_path / "bomb.jsonl.zst"
    p.write_bytes(zstandard.ZstdCompressor(level=3).compress(b"\n" * (256 << 20)))  # 256 MiB from ~10 KiB
    stream = open_binary(p)
    frames, biggest, total = stream.raw, 0, 0
    while chunk := stream.read1(1 << 20):
        total += len(chunk)
        biggest = max(biggest, len(frames._out))
    assert total == 256 << 20 and biggest <= 40 << 20  # one step's output, never the whole 256 MiB
