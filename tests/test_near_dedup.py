"""Near-duplicate removal (MinHash + LSH, verified): recall and precision on a planted set, the
earliest member survives across batches, incremental runs and reruns, scopes, and the
verification and threshold each turn a test red when broken."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import subprocess
import sys
from itertools import combinations, pairwise

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lewin.udfs.near_dedup import (
    NEAR_DUP_RULE,
    NEAR_DUP_SIGNATURES,
    MinHashOptions,
    NearDupResult,
    _words,
    band_keys,
    near_duplicates,
    normalize,
    shingle_set,
    shingles,
)
from pyspark.sql import functions as F

pytestmark = pytest.mark.transforms

OPTS = MinHashOptions()
ROWS = "record_id string, source string, user_id string, event_ts timestamp, text string"
T0 = dt.datetime(2021, 3, 1, 12, 0, 0)

_VOCAB = """
time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community name
president team minute idea kid body information back parent face others level office door health person
art war history party result change morning reason research girl guy moment air teacher force education
foot boy age policy music market sense nation plan college interest death experience effect class control
care field development role effort rate heart drug show leader light voice wife police mind price report
decision son view relationship town road arm difference value building action model season society tax
director position player record paper space ground form event official matter center couple site project
activity star table need court oil situation cost industry figure street image phone data picture practice
piece land product doctor wall patient worker news test movie north love support technology step baby
computer type attention film tree source organization hair window evidence population truth song machine
dog cat bike keyboard pizza coffee laptop garden river mountain beach train ticket engine guitar camera
reddit thread post comment upvote subreddit mod karma meme server update patch build deck raid quest
bought sold tried fixed broke lost found watched played cooked wrote read called asked told gave took
went came saw made said thought knew wanted needed liked loved hated started stopped finished moved paid
really honestly basically literally actually probably definitely always never sometimes usually maybe
quickly slowly finally recently already still almost pretty quite very super totally kinda sorta
big small old new good bad great terrible cheap expensive weird funny strange normal huge tiny broken
red blue green black white cold hot wet dry loud quiet fast slow early late happy sad tired angry
with without about after before during under over between through against around behind beside
and but so because although while unless since though or nor yet then also instead otherwise
""".split()
_BOILERPLATE = ["Edit: thanks for the gold!", "EDIT: typo.", "Edit: formatting.", "Thanks in advance!",
                "Edit: spelling"]
_LONG_BOILERPLATE = ("Edit: wow, this blew up overnight! Thanks for the gold, kind stranger, and to everyone "
                     "who commented.")


def J(a: str, b: str) -> float:
    sa, sb = shingles(a, OPTS.ngram), shingles(b, OPTS.ngram)
    return len(sa & sb) / len(sa | sb)


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_VOCAB) for _ in range(rng.randint(5, 17))]
    for _ in range(rng.randint(0, 2)):
        i = rng.randrange(1, len(words))
        words[i - 1] += ","
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words)), str(rng.randint(2, 2023)))
    if rng.random() < 0.1:
        words.insert(0, rng.choice(["IMO", "TIL", "lol", "Honestly", "Update:", "So"]))
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "!", "?", "..."])


def _sentences(rng: random.Random, min_chars: int) -> list[str]:
    out: list[str] = []
    while len(" ".join(out)) < min_chars:
        out.append(_sentence(rng))
    return out


def _edit_words(rng: random.Random, text: str, k: int, at_end: bool = False) -> str:
    tokens = text.split(" ")
    spots = [len(tokens) - 1] if at_end else rng.sample(range(len(tokens)), min(k, len(tokens)))
    for i in spots:
        tail = tokens[i][-1] if not tokens[i][-1].isalnum() else ""
        tokens[i] = rng.choice(_VOCAB) + tail
    return " ".join(tokens)


def _punct_case(rng: random.Random, text: str) -> str:
    choice = rng.randrange(3)
    if choice == 0:
        return text.upper()
    if choice == 1:
        return text.replace(",", "").replace(".", "!!").lower()
    return "  " + text.replace(" ", "  ").replace("?", "?!") + " :)"


def _near_variant(rng: random.Random, sents: list[str], kind: int) -> tuple[str, str]:
    """A variant of the text with true J >= 0.8: the requested kind, milder versions of it while
    J falls short, punctuation/case changes (J = 1) last."""
    text = " ".join(sents)
    tries: list[tuple[str, str]] = []
    if kind == 0:
        n = len(text.split(" "))
        for k in range(max(n // 45, 1), 0, -1):
            tries.append(("word edits", _edit_words(rng, text, k)))
        tries.append(("word edit at the end", _edit_words(rng, text, 1, at_end=True)))
    elif kind == 1 and len(sents) >= 3:
        i = rng.randrange(len(sents) - 1)
        tries.append(("sentence swap", " ".join(sents[:i] + [sents[i + 1], sents[i]] + sents[i + 2:])))
    elif kind == 2:
        for bp in [rng.choice(_BOILERPLATE), "Edit: typo."]:
            tries.append(("boilerplate", text + "\n\n" + bp))
    else:
        tries.append(("punctuation and case, last word edited", _punct_case(rng, _edit_words(rng, text, 1, at_end=True))))
    tries.append(("punctuation and case", _punct_case(rng, text)))
    for name, variant in tries:
        if J(text, variant) >= 0.8:
            return name, variant
    raise AssertionError("unreachable: punctuation/case keeps J = 1")


def _heavy_rewrite(rng: random.Random, text: str) -> str:
    tokens = text.split(" ")
    for frac in (0.3, 0.4, 0.5, 0.6):
        out = _edit_words(rng, text, int(len(tokens) * frac))
        if J(text, out) < 0.5:
            return out
    raise AssertionError("rewrite stayed similar")


def _moderate_rewrite(rng: random.Random, text: str) -> str | None:
    """A rewrite a band collision may well find but the verification must turn down (0.5 <= J < 0.8)."""
    for k in range(1, 40):
        out = _edit_words(rng, text, k)
        if J(text, out) < 0.8:
            return out if J(text, out) >= 0.5 else None
    return None


def _planted(seed: int = 7, n_originals: int = 60):
    """(rows, kinds): originals of 150-1500 characters, one near-duplicate each (J >= 0.8), and
    hard negatives: the same long boilerplate on different texts, heavy rewrites (J < 0.5), and
    moderate rewrites (0.5 <= J < 0.8: band collisions that only the verification turns down)."""
    rng = random.Random(seed)
    rows, kinds = [], {}
    clock = [0]

    def add(rid: str, text: str, kind: str, minutes: int | None = None):
        clock[0] += 1
        # negatives come after the originals: a false match rejects the negative (precision drops)
        ts = T0 + dt.timedelta(minutes=minutes if minutes is not None else 20_000 + clock[0] * 7)
        rows.append((rid, "reddit", f"u{rng.randrange(12)}", ts, text))
        kinds[rid] = kind

    for i in range(n_originals):
        sents = _sentences(rng, rng.choice([160, 200, 300, 500, 800, 1100, 1450]))
        name, variant = _near_variant(rng, sents, i % 4)
        t_orig = 10_000 + i * 13
        # a third of the variants are older than their original: the variant must survive then
        t_var = t_orig - 5 if i % 3 == 0 else t_orig + 5
        add(f"o{i:03d}", " ".join(sents), "original", t_orig)
        add(f"v{i:03d}", variant, f"variant: {name}", t_var)
    for i in range(12):
        add(f"b{i:03d}", " ".join(_sentences(rng, rng.choice([150, 250, 400]))) + " " + _LONG_BOILERPLATE,
            "negative: shared boilerplate")
    for i in range(0, n_originals, 4):
        add(f"h{i:03d}", _heavy_rewrite(rng, rows[2 * i][4]), "negative: heavy rewrite")
    for i in range(2, n_originals, 4):
        if (moderate := _moderate_rewrite(rng, rows[2 * i][4])) is not None:
            add(f"m{i:03d}", moderate, "negative: moderate rewrite")
    return rows, kinds


@contextlib.contextmanager
def no_collect(df):
    """Rows must not come to the driver inside the DataFrame part (counts are fine)."""
    cls = type(df)
    saved = {}

    def refuse(*_a, **_k):
        raise AssertionError("near_duplicates collected rows to the driver")

    for name in ("collect", "toPandas", "toLocalIterator", "take", "head", "first", "tail", "toArrow"):
        if hasattr(cls, name):
            saved[name] = getattr(cls, name)
            setattr(cls, name, refuse)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(cls, name, fn)


def frame(spark, rows, opts: MinHashOptions = OPTS):
    """Rows plus their band keys, computed on the workers as curate's annotate pass does."""
    def add_keys(batches):
        for b in batches:
            keys = band_keys(b.column("text").to_pylist(), opts)
            yield pa.RecordBatch.from_arrays([*b.columns, keys], names=[*b.schema.names, "near_dup_bands"])

    return spark.createDataFrame(rows, ROWS).mapInArrow(add_keys, ROWS + ", near_dup_bands array<bigint>")


def run(store, new, existing=None, opts: MinHashOptions = OPTS) -> NearDupResult:
    with no_collect(new):
        return near_duplicates(new, existing, opts, store.checkpointer(("_nd_0", "_nd_1")))


def rejected(df) -> dict[str, str]:
    return {r["record_id"]: r["_detail"] for r in df.collect()}


def kept_rows(res: NearDupResult):
    """The winners as an ``existing`` frame for the next batch (what silver + signatures give)."""
    return res.winners.select("record_id", "source", "user_id", "event_ts", "text", "near_dup_bands")


def materialize(spark, df):
    """Rows of a result frame as a fresh frame: the results read the checkpoint tables, which the
    next run overwrites."""
    return spark.createDataFrame(df.collect(), df.schema)


# --- Python part ---------------------------------------------------------------------------------


def test_options_are_validated():
    for kwargs, field in [({"ngram": 0}, "ngram"), ({"bands": 0}, "bands"), ({"rows": -1}, "rows"),
                          ({"threshold": 0.0}, "threshold"), ({"threshold": 1.5}, "threshold"),
                          ({"seed": -1}, "seed"), ({"scope": "global"}, "scope"), ({"ngram": 2.5}, "ngram")]:
        with pytest.raises(ValueError, match=field):
            MinHashOptions(**kwargs)
    assert MinHashOptions(bands=4, rows=3).num_perm == 12


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZ09 ,.!?'\n\t_-’“—éÉßİıﬁ😀中文٣²Ⅻ\u0301\u200bKΣς")), max_size=40))
def test_fast_word_split_equals_the_regex_normalisation(text):
    norm = normalize(text)
    assert [w.decode() for w in _words(text)] == (norm.split(" ") if norm else [])


def test_band_keys_shape_nulls_and_similarity():
    rng = random.Random(1)
    a = " ".join(_sentences(rng, 600))
    b = _edit_words(rng, a, 1, at_end=True)
    c = " ".join(_sentences(rng, 600))
    keys = band_keys([a, None, "", " ?! ", b, c, "Three short words"], OPTS)
    assert keys.type == pa.list_(pa.int64())
    got = keys.to_pylist()
    assert [k is None for k in got] == [False, True, True, True, False, False, False]
    assert all(len(k) == OPTS.bands for k in got if k is not None)
    same = sum(x == y for x, y in zip(got[0], got[4]))
    unrelated = sum(x == y for x, y in zip(got[0], got[5]))
    assert J(a, b) > 0.95 and same >= 15 and unrelated == 0
    # normalisation: case and punctuation do not change the keys; keys depend on the seed
    assert band_keys([a.upper().replace(".", " !!! ")], OPTS).to_pylist()[0] == got[0]
    assert band_keys([a], MinHashOptions(seed=2)).to_pylist()[0] != got[0]


def test_band_keys_are_stable_across_processes():
    text = "Same text in another interpreter, with ünïcode and 42 numbers: stable keys."
    code = ("from lewin.udfs.near_dedup import band_keys, MinHashOptions; "
            f"print(band_keys([{text!r}], MinHashOptions()).to_pylist()[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert out.strip() == str(band_keys([text], OPTS).to_pylist()[0])


# --- Spark part ----------------------------------------------------------------------------------


def test_spark_shingles_equal_the_python_ones(spark):
    texts = ["Hello, World! foo bar baz qux quux", "one two", "ÉCOLE d'été — über 10 Straße²!", "a\tb\nc  d__e-f g",
             "ΟΔΟΣ Σ οδός καλός 中文 字 😀 smile", "x", "Don't stop me now, I'm having such a good time!!!"]
    df = spark.createDataFrame([(t,) for t in texts], "text string")
    got = [set(r["sh"]) for r in df.select(shingle_set(F.col("text"), 3).alias("sh")).collect()]
    assert got == [shingles(t, 3) for t in texts]


def test_planted_near_duplicates_recall_and_precision(spark, store):
    rows, kinds = _planted()
    texts = {r[0]: r[4] for r in rows}
    ts = {r[0]: (r[3], r[0]) for r in rows}
    true_pairs = {(a, b): j for a, b in combinations(sorted(texts), 2) if (j := J(texts[a], texts[b])) >= 0.8}
    planted = sum(k.startswith("variant") for k in kinds.values())
    assert len(true_pairs) >= planted  # every planted variant really is a near-duplicate
    negatives = [rid for rid, k in kinds.items() if k.startswith("negative")]
    hard = [rid for rid in negatives if kinds[rid] != "negative: moderate rewrite"]
    assert max(J(texts[a], b_text) for a in hard for b, b_text in texts.items() if b != a) < 0.5
    assert max(J(texts[a], b_text) for a in negatives for b, b_text in texts.items() if b != a) < 0.8
    lengths = sorted(len(t) for t in texts.values())
    assert lengths[0] >= 150 and lengths[-1] <= 1700

    res = run(store, frame(spark, rows))
    dups = rejected(res.duplicates)
    kept = {r["record_id"] for r in res.winners.collect()}
    assert kept | set(dups) == set(texts) and not kept & set(dups)
    assert res.displaced.count() == 0

    caught = [p for p in true_pairs if not (p[0] in kept and p[1] in kept)]
    recall = len(caught) / len(true_pairs)
    partners = {r: [p for p in true_pairs if r in p] for r in dups}
    precision = sum(bool(partners[r]) for r in dups) / max(len(dups), 1)
    print(f"\nplanted near-duplicates: {len(true_pairs)} pairs with J >= 0.8 among {len(rows)} records; "
          f"recall {recall:.3f}, precision {precision:.3f} ({len(dups)} rejected)")
    assert recall >= 0.9 and precision >= 0.95
    # the earlier member of each planted pair is the one kept, and the detail names it
    for (a, b), j in true_pairs.items():
        first, later = sorted((a, b), key=ts.get)
        assert first in kept and later in dups, (first, later, kinds[first], kinds[later])
        assert dups[later].startswith(f"near-duplicate of {first} (jaccard ")
        assert abs(float(dups[later].rsplit(" ", 1)[1].rstrip(")")) - j) <= 0.006
    assert not [r for r in negatives if r in dups]
    rows_out = res.duplicates.collect()
    assert {(r["_stage"], r["_rule"]) for r in rows_out} == {("dedup", NEAR_DUP_RULE)}
    assert res.winners.columns == ["record_id", "source", "user_id", "event_ts", "text", "near_dup_bands"]
    sig = res.new_signatures
    assert [(f.name, f.dataType) for f in sig.schema.fields] == [(f.name, f.dataType) for f in NEAR_DUP_SIGNATURES.fields]
    assert sig.count() == len(kept)


def _pair_texts(seed: int, k_edits: int, chars: int = 700) -> tuple[str, str]:
    rng = random.Random(seed)
    a = " ".join(_sentences(rng, chars))
    return a, _edit_words(rng, a, k_edits)


def test_earliest_survives_and_a_late_earlier_member_displaces_the_kept_one(spark, store):
    a, b = _pair_texts(11, 1)
    c = _edit_words(random.Random(5), a, 1)
    d = a + " Edit: thanks for the gold!"
    assert min(J(a, b), J(a, c), J(a, d)) >= 0.8
    other = " ".join(_sentences(random.Random(12), 400))
    first = run(store, frame(spark, [("A", "s", "u1", T0 + dt.timedelta(days=2), a),
                                     ("B", "s", "u2", T0 + dt.timedelta(days=3), b),
                                     ("X", "s", "u1", T0 + dt.timedelta(days=1), other),
                                     ("N", "s", "u1", T0, None)]))
    assert rejected(first.duplicates).keys() == {"B"}
    assert rejected(first.duplicates)["B"].startswith("near-duplicate of A (jaccard ")
    existing = materialize(spark, kept_rows(first))
    assert {r["record_id"] for r in existing.collect()} == {"A", "X", "N"}  # a null text is kept

    # C is older than the kept A: C survives, A is displaced; D (newer) is a duplicate of C
    second = run(store, frame(spark, [("C", "s", "u3", T0 + dt.timedelta(days=1, hours=1), c),
                                      ("D", "s", "u3", T0 + dt.timedelta(days=9), d)]), existing)
    assert {r["record_id"] for r in second.winners.collect()} == {"C"}
    displaced = rejected(second.displaced)
    assert displaced.keys() == {"A"} and displaced["A"].startswith("near-duplicate of earlier C (jaccard ")
    dups = rejected(second.duplicates)
    assert dups.keys() == {"D"} and dups["D"].startswith("near-duplicate of C ")  # directly, or via A
    assert {r["record_id"] for r in second.new_signatures.collect()} == {"C"}

    # a batch that holds a kept row again (A) with its earlier near-duplicate (C): A counts as
    # existing -- displaced once, never also a duplicate (of itself or of C)
    again = run(store, frame(spark, [("C", "s", "u3", T0 + dt.timedelta(days=1, hours=1), c),
                                     ("A", "s", "u1", T0 + dt.timedelta(days=2), a)]), existing)
    assert rejected(again.duplicates) == {} and rejected(again.displaced).keys() == {"A"}
    assert {r["record_id"] for r in again.winners.collect()} == {"C"}


def test_incremental_batches_and_a_rerun_rejects_nothing_new(spark, store):
    rng = random.Random(21)
    originals = [_sentences(rng, rng.choice([200, 600, 1200])) for _ in range(20)]
    batch1 = [(f"a{i}", "s", f"u{i % 3}", T0 + dt.timedelta(hours=i), " ".join(t)) for i, t in enumerate(originals)]
    first = run(store, frame(spark, batch1))
    assert first.duplicates.count() == 0
    existing1 = materialize(spark, kept_rows(first))

    fresh = [" ".join(_sentences(rng, 500)) for _ in range(6)]
    # near-duplicates of old records (newer than them), new records, near-duplicates among those
    batch2 = [(f"b{i}", "s", "u9", T0 + dt.timedelta(days=5, hours=i), _near_variant(rng, originals[i], i % 4)[1])
              for i in range(8)]
    batch2 += [(f"c{i}", "s", "u8", T0 + dt.timedelta(days=6, hours=i), t) for i, t in enumerate(fresh)]
    batch2 += [(f"d{i}", "s", "u7", T0 + dt.timedelta(days=7, hours=i), fresh[i] + " Edit: typo.") for i in range(2)]
    new2 = frame(spark, batch2)
    second = run(store, new2, existing1)
    dups = rejected(second.duplicates)
    assert dups.keys() == {f"b{i}" for i in range(8)} | {"d0", "d1"}
    assert all(dups[f"b{i}"].startswith(f"near-duplicate of a{i} ") for i in range(8))
    assert dups["d0"].startswith("near-duplicate of c0 ") and dups["d1"].startswith("near-duplicate of c1 ")
    assert second.displaced.count() == 0
    winners2 = {r["record_id"] for r in second.winners.collect()}
    assert winners2 == {f"c{i}" for i in range(6)}

    # a rerun of batch 2 after its winners were kept: the same rejections, none of a kept row
    existing2 = materialize(spark, existing1.unionByName(kept_rows(second)))
    again = run(store, new2, existing2)
    assert rejected(again.duplicates) == dups
    assert again.displaced.count() == 0
    assert {r["record_id"] for r in again.winners.collect()} == winners2  # already kept: still winners
    assert again.new_signatures.count() == 0
    # and a rerun of batch 1 against everything kept rejects nothing at all
    assert run(store, frame(spark, batch1), existing2).duplicates.count() == 0


def test_scope_user_keeps_near_duplicates_of_different_users_and_sources_never_mix(spark, store):
    a, b = _pair_texts(31, 1)
    assert J(a, b) >= 0.8
    rows = [("p1", "reddit", "alice", T0, a), ("p2", "reddit", "bob", T0 + dt.timedelta(hours=1), b),
            ("p3", "reddit", "alice", T0 + dt.timedelta(hours=2), b),
            ("q1", "blogger", "carol", T0 - dt.timedelta(hours=1), a)]
    by_user = run(store, frame(spark, rows, MinHashOptions(scope="user")), opts=MinHashOptions(scope="user"))
    assert rejected(by_user.duplicates).keys() == {"p3"}  # alice's own near-duplicate only
    empty = spark.createDataFrame([], "record_id string, source string, user_id string, event_ts timestamp, "
                                      "text string, near_dup_bands array<bigint>")
    by_source = run(store, frame(spark, rows), empty, opts=OPTS)  # an empty existing side: as None
    dups = rejected(by_source.duplicates)
    assert dups.keys() == {"p2", "p3"} and all(d.startswith("near-duplicate of p1 ") for d in dups.values())
    # q1 (another source, earlier, the same text as p1) neither wins over nor loses to reddit rows
    assert "q1" in {r["record_id"] for r in by_source.winners.collect()}


def test_band_collision_below_the_threshold_is_not_a_duplicate(spark, store):
    """Would go red without the verification: these pairs share band keys but J < 0.8."""
    pairs = []
    for seed in range(40):
        a, b = _pair_texts(100 + seed, 4, chars=900)
        ka, kb = band_keys([a, b], OPTS).to_pylist()
        if 0.5 <= J(a, b) < 0.8 and any(x == y for x, y in zip(ka, kb)):
            pairs.append((a, b))
    assert len(pairs) >= 5, "the seeds must give colliding pairs below the threshold"
    rows = []
    for i, (a, b) in enumerate(pairs):
        rows += [(f"x{i}", "s", "u", T0 + dt.timedelta(hours=i), a), (f"y{i}", "s", "u", T0 + dt.timedelta(days=1, hours=i), b)]
    new = frame(spark, rows)
    assert run(store, new).duplicates.count() == 0
    # the same candidates under a threshold they pass: every later member goes
    low = MinHashOptions(threshold=0.5)
    assert rejected(run(store, new, opts=low).duplicates).keys() == {f"y{i}" for i in range(len(pairs))}


def test_threshold_is_a_lower_bound_on_the_verified_jaccard(spark, store):
    """Would go red with the comparison inverted or ignored."""
    hi_a, hi_b = _pair_texts(41, 1, chars=900)
    lo_a, lo_b = next((a, b) for s in range(200, 260) for a, b in [_pair_texts(s, 4, chars=900)] if 0.6 <= J(a, b) < 0.75)
    j_hi = J(hi_a, hi_b)
    assert 0.8 <= j_hi < 0.95
    rows = [("h1", "s", "u", T0, hi_a), ("h2", "s", "u", T0 + dt.timedelta(hours=1), hi_b),
            ("l1", "s", "u", T0, lo_a), ("l2", "s", "u", T0 + dt.timedelta(hours=1), lo_b)]
    new = frame(spark, rows)
    assert rejected(run(store, new).duplicates).keys() == {"h2"}
    assert run(store, new, opts=MinHashOptions(threshold=0.95)).duplicates.count() == 0
    exact = MinHashOptions(threshold=j_hi)  # J == threshold counts as a near-duplicate
    assert rejected(run(store, new, opts=exact).duplicates).keys() == {"h2"}


def test_components_follow_long_chains_and_the_round_guard(spark, store):
    """Min-label propagation (with label jumping) labels every member of a chain with its
    smallest key in fewer rounds than the chain is long; the round guard stops a non-converging run."""
    from lewin.udfs.near_dedup import _components

    chain = [f"k{i:02d}" for i in range(16)]  # k00 is the smallest, at one end
    other = ["z1", "z2", "z3"]
    nodes = spark.createDataFrame([(k, k, "s", True) for k in chain + other],
                                  "_key string, record_id string, source string, _is_new boolean")
    edges = spark.createDataFrame([(a, b, 0.9) for a, b in pairwise(chain)] + [("z2", "z3", 0.9), ("z1", "z3", 0.8)],
                                  "_a string, _b string, _j double")
    state, rounds = _components(nodes, edges, store.checkpointer(("_cc_0", "_cc_1")), max_rounds=20)
    labels = {r["_key"]: r["_label"] for r in state.collect()}
    assert labels == {**{k: "k00" for k in chain}, **{k: "z1" for k in other}}
    assert rounds < len(chain) // 2
    with pytest.raises(RuntimeError, match="did not converge"):
        _components(nodes, edges, store.checkpointer(("_cc_0", "_cc_1")), max_rounds=1)
