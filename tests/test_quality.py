"""The quality heuristics against datatrove, their reference: the same verdict per filter on real
posts and on generated text that hits every rule, and thresholds that decide."""

from __future__ import annotations

import csv
import gzip
import json
import random
from pathlib import Path

import pytest

from lewin.schemas import tables as T
from lewin.schemas.config import QualityConfig
from lewin.udfs import quality

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

_WORDS = ("the be to of and that have with i you it was is are not but so just really very time day people "
          "friend work home school money life love think know want need tell said went came made took got found "
          "felt thought tried always never today night mother father sister brother dog cat car house city trip "
          "coffee phone message advice help problem question answer honestly probably definitely anyway").split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 18))]
    s = " ".join(words)
    return s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?", "...", "", ":)", " lol", "…"])


def generated(n: int, seed: int = 5) -> list[str]:
    """Texts built to land on both sides of every rule: short and long, repeated lines and
    paragraphs, bullet lists, ellipses, hashtags, lorem ipsum, curly brackets, numbers, contractions."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 10
        sents = [_sentence(rng) for _ in range(rng.randint(1, 25))]
        if kind == 1:  # repeated lines
            line = _sentence(rng)
            sents = sents[:rng.randint(0, 6)] + [line] * rng.randint(2, 6)
            text = "\n".join(sents)
        elif kind == 2:  # bullets
            text = "\n".join(("- " if rng.random() < 0.9 else "• ") + s for s in sents)
        elif kind == 3:  # ellipses and hashes
            text = " ".join(s + rng.choice(["...", " #tbt", " ##", "…", ""]) for s in sents)
        elif kind == 4:  # paragraphs, some repeated
            paras = [" ".join(sents[j:j + 3]) for j in range(0, len(sents), 3)]
            if rng.random() < 0.5 and paras:
                paras += [paras[0]] * rng.randint(1, 3)
            text = "\n\n".join(paras)
        elif kind == 5:  # document rules
            text = " ".join(sents) + rng.choice(["\nLorem ipsum dolor sit amet, consectetur.", "\nuse {x} here ok",
                                                  "\nterms of use apply to all", "\nenable javascript to see it"])
        elif kind == 6:  # short lines
            text = "\n".join(s[: rng.randint(5, 40)] for s in sents)
        elif kind == 7:  # contractions, numbers, abbreviations, emoticons
            text = " ".join(s + rng.choice([" don't", " it's 1,000", " e.g. U.S.", " I'm", " can't :)", " 10:30pm",
                                            " well-known", " 5km", " (really)", " \"quoted\""]) for s in sents)
        elif kind == 8:  # repeated phrases (n-gram rules)
            phrase = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 6)))
            text = " ".join(sents[:3]) + (" " + phrase) * rng.randint(2, 12) + " " + " ".join(sents[3:])
        else:
            text = " ".join(sents)
        out.append(text)
    return out


def real_posts(limit: int = 4000) -> list[str]:
    out: list[str] = []
    if not SHARED.is_dir():
        return out
    for p in sorted((SHARED / "reddit" / "comments").glob("*.csv")):
        with p.open(newline="") as f:
            out += [r["body"] for r in csv.DictReader(f) if r.get("body")]
    with (SHARED / "reddit" / "pushshift_submissions.csv").open(newline="") as f:
        out += [r["selftext"] for r in csv.DictReader(f) if r.get("selftext")]
    with gzip.open(SHARED / "amazon" / "All_Beauty_5.json.gz", "rt") as f:
        out += [d["reviewText"] for d in map(json.loads, f) if d.get("reviewText")][:1500]
    with (SHARED / "blogger" / "blogger_sample.jsonl").open() as f:
        out += [json.loads(line)["text"] for line in f]
    return [t for t in out if t.strip()][:limit]


def datatrove_verdicts(texts: list[str]) -> list[dict[str, str | None]]:
    """Per text and filter: None (passes) or the failing reason; each filter reads the original text."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter,
    )

    filters = {"gopher_repetition": GopherRepetitionFilter(), "gopher_quality": GopherQualityFilter(),
               "c4_quality": C4QualityFilter(filter_no_terminal_punct=False), "fineweb_quality": FineWebQualityFilter()}
    out = []
    for i, t in enumerate(texts):
        row = {}
        for name, f in filters.items():
            res = f.filter(Document(text=t, id=str(i)))
            ok, reason = (res, None) if isinstance(res, bool) else res
            row[name] = None if ok else reason
        out.append(row)
    return out


def lewin_verdicts(spark, texts: list[str], cfg: QualityConfig) -> list[dict[str, str | None]]:
    import pyarrow as pa

    table = pa.table({"i": pa.array(range(len(texts)), pa.int64()), "quality_signals": quality.quality_signals(texts)})
    df = spark.createDataFrame(table.to_pandas(), "i long, quality_signals " + T.QUALITY_SIGNALS.simpleString())
    rows = df.select("i", quality.flag_column("quality_signals", cfg).alias("flags")).orderBy("i").collect()
    out = []
    for r in rows:
        got = dict(f.split(":", 1) for f in r["flags"])
        out.append({name: got.get(name) for name in quality.FLAGS})
    return out


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    texts = real_posts() + generated(2000)
    assert len(texts) >= 2000
    return texts


def test_tokens_match_spacys_english_tokenizer_on_almost_every_text(corpus):
    from datatrove.utils.text import split_into_words

    same = sum(quality.tokenize(t) == [w.strip() for w in split_into_words(t) if w.strip()] for t in corpus)
    print(f"identical tokens: {same}/{len(corpus)}")
    assert same / len(corpus) >= 0.99


def test_every_filter_agrees_with_datatrove_on_at_least_99_percent(spark, corpus):
    ref = datatrove_verdicts(corpus)
    ours = lewin_verdicts(spark, corpus, QualityConfig())
    for name in quality.FLAGS:
        verdict = sum((a[name] is None) == (b[name] is None) for a, b in zip(ref, ours)) / len(corpus)
        reason = sum(a[name] == b[name] for a, b in zip(ref, ours)) / len(corpus)
        flagged = sum(a[name] is not None for a in ref) / len(corpus)
        print(f"{name}: verdict agreement {verdict:.4f}, same reason {reason:.4f} (datatrove flags {flagged:.2%})")
        assert verdict >= 0.99, name
        assert reason >= 0.99, name
        # the corpus exercises both sides of every filter
        assert 0.05 < flagged < 0.95, name


def test_flags_follow_the_configured_thresholds(spark):
    text = "The cat and the dog went to the park with me today."
    default = lewin_verdicts(spark, [text], QualityConfig())[0]
    assert default["gopher_quality"] == "gopher_short_doc"
    loose = QualityConfig(gopher_quality={"min_doc_words": 5})
    assert lewin_verdicts(spark, [text], loose)[0]["gopher_quality"] is None
    off = QualityConfig(gopher_quality={"min_doc_words": None, "min_stop_words": 9})
    assert lewin_verdicts(spark, [text], off)[0]["gopher_quality"] == "gopher_enough_stop_words"
    assert lewin_verdicts(spark, [text], QualityConfig(c4={"min_num_sentences": 0}))[0]["c4_quality"] is None


def test_a_threshold_outside_the_scored_sizes_fails_at_start():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="top_n_grams"):
        QualityConfig(gopher_repetition={"top_n_grams": {7: 0.1}})


def test_empty_text_has_no_signals_and_no_flags(spark):
    sig = quality.quality_signals([None, "", "ok"])
    assert sig[0].as_py() is None and sig[1].as_py() is None and sig[2].as_py()["words"] == 1


def test_the_shipped_tokenizer_tables_are_the_installed_spacys():
    """``udfs/spacy_en_tokenizer.json`` is spaCy's data; after a spaCy upgrade this fails until
    ``python -m lewin.udfs.quality`` rewrites it."""
    shipped = json.loads(quality.TABLES_FILE.read_text(encoding="utf-8"))
    fresh = quality.spacy_tables()
    assert {k: v for k, v in shipped.items() if k != "spacy"} == {k: v for k, v in fresh.items() if k != "spacy"}
