"""Deterministic quality signals on synthetic data (``synth_signals``), beside the LLM judge.

Pure DataFrame -> DataFrame functions (built-in expressions; one Arrow batch function for the
MinHash band keys, the same ``band_keys`` curation uses). The LLM stage (``lewin.jobs.llm:
publish_signals``) builds the *units* (what gold keeps: one output, or one story / QA item),
computes every signal, writes them in long format, one row per (artifact, input_id, signal), and
keeps a unit that fails a signal configured as a gate (``llm.signals.<signal>.mode: gate``) out
of gold.

Signals (``SIGNALS``):

* ``length_words``: whitespace-separated words of the unit's text (what ``validate_output``
  counts); bounded for persona (< ``llm.persona_max_words``) and profile
  (``llm.profile_min_words``-``llm.profile_max_words``), reported without bound otherwise;
* ``qa_leakage``: share of a QA answer's distinct word n-grams that occur in its scenario +
  question (an answer shorter than n words: 1 when it occurs there as a phrase, else 0);
* ``unsupported_entities``: capitalised word runs (names, places, organisations) and numbers of a
  persona, profile or story that occur nowhere in the user's source records (the scrubbed
  timeline), matched case-insensitively on normalised text; value = their count;
* ``distinct_1``, ``distinct_2``: distinct n-grams / n-grams over a user's outputs of the artifact
  (input_id ``<source>:<user_id>``) and over every user's (input_id ``*``);
* ``near_duplicate``: per unit, the highest verified shingle Jaccard with another user's unit of
  the artifact among MinHash band-collision candidates (curation's machinery); the ``*`` row is
  the share of units at or above the threshold;
* ``judge_agreement``: per re-judged item |overall - overall'| (the same judge, another seed) and
  whether both accept decisions agree; the ``*`` row is the share that agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import reduce

import pyarrow as pa
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, LongType, StringType, StructField, StructType

from lewin.udfs.clean import normalized_text
from lewin.udfs.near_dedup import MinHashOptions, band_keys, jaccard, shingle_set

SIGNALS = ("length_words", "qa_leakage", "unsupported_entities", "distinct_1", "distinct_2", "near_duplicate",
           "judge_agreement")
# signals computed per user (input_id "<source>:<user_id>"): as a gate they hold back every unit of the user
USER_LEVEL = ("distinct_1", "distinct_2")
ALL = "*"
SIGNAL_KEY = ["artifact", "input_id", "signal"]
# the artifacts whose claims are checked against the user's records
ENTITY_ARTIFACTS = ("persona", "profile", "stories")
# a unit's columns (see ``units``)
UNIT_COLUMNS = ("artifact", "input_id", "user_id", "source", "unit_key", "text", "qa_answer", "qa_context")
# the columns of a signal row before the run stamps it (run_id, computed_at)
ROW_COLUMNS = ("artifact", "input_id", "user_id", "source", "signal", "value", "bound", "passed", "gate", "detail")
DETAIL_SEP = " | "
MAX_DETAIL_ITEMS = 20


# --- units -------------------------------------------------------------------------------------------
def _j(path: str) -> Column:
    return F.get_json_object("output", path)


def unit_texts(items: DataFrame, artifact: str) -> DataFrame:
    """The units of one artifact from its judge items (``jobs.llm.judge_inputs``' rows: one per
    output, or per story / QA item, ``output`` the unit's JSON, ``_judge_key`` its key):
    ``UNIT_COLUMNS``, ``text`` the unit's prose (for QA items: scenario, question and answer)."""
    qa_answer = qa_context = F.lit(None).cast("string")
    if artifact == "persona":
        text = _j("$.persona")
    elif artifact == "profile":
        text = _j("$.profile")
    elif artifact == "writing_style":
        text = _j("$.style")
    elif artifact == "stories":
        text = F.concat_ws(" ", _j("$.summary"), _j("$.narrative"))
    elif artifact == "scenario":
        chars = F.from_json(_j("$.characters"), "array<string>")
        text = F.concat_ws(" ", _j("$.background"), F.array_join(F.coalesce(chars, F.array().cast("array<string>")), " "),
                           _j("$.plots"))
    elif artifact == "social_qa":
        text = F.concat_ws(" ", _j("$.scenario"), _j("$.question"), _j("$.answer"))
        qa_answer = _j("$.answer")
        qa_context = F.concat_ws(" ", _j("$.scenario"), _j("$.question"))
    else:
        raise ValueError(f"no signals for artifact {artifact!r}")
    return items.select(F.lit(artifact).alias("artifact"), "input_id", "user_id", "source",
                        F.col("_judge_key").alias("unit_key"), F.coalesce(text, F.lit("")).alias("text"),
                        qa_answer.alias("qa_answer"), qa_context.alias("qa_context"))


def units(items_by_artifact: dict[str, DataFrame]) -> DataFrame:
    """Every artifact's units, one frame."""
    return reduce(DataFrame.unionByName, [unit_texts(items, a) for a, items in items_by_artifact.items()])


# --- helpers -----------------------------------------------------------------------------------------
def _words(text: Column) -> Column:
    """Normalised words (lower case, letters and digits): what the n-gram signals count."""
    norm = normalized_text(text)
    return F.when(norm == "", F.array().cast("array<string>")).otherwise(F.split(norm, " "))


def ngrams(text: Column, n: int) -> Column:
    """``array<string>`` of the word n-grams of ``text`` in order, repeats kept (none under n words)."""
    words = _words(text)
    starts = F.sequence(F.lit(1), F.greatest(F.size(words) - F.lit(n - 1), F.lit(1)))
    grams = F.transform(starts, lambda i: F.array_join(F.slice(words, i, n), " "))
    return F.filter(grams, lambda g: F.size(words) >= F.lit(n))


def _ratio(num: Column, den: Column) -> Column:
    """num / den, null when den is 0 (no CASE branch that divides by zero)."""
    return num.cast("double") / F.when(den != 0, den).cast("double")


def _list(arr: Column) -> Column:
    """A detail list: sorted, at most MAX_DETAIL_ITEMS, joined."""
    return F.array_join(F.slice(F.array_sort(arr), 1, MAX_DETAIL_ITEMS), DETAIL_SEP)


def _rows(df: DataFrame, signal: str, value: Column, bound: str | None, passed: Column | None, gate: bool,
          detail: Column | None = None, input_id: Column | None = None, per_artifact: bool = False) -> DataFrame:
    """Signal rows: ``ROW_COLUMNS``. A row without bound has passed = null and is never a gate."""
    nul = F.lit(None).cast("string")
    iid = F.lit(ALL) if per_artifact else (input_id if input_id is not None else F.col("input_id"))
    return df.select(
        F.col("artifact"), iid.alias("input_id"),
        (nul if per_artifact else F.col("user_id")).alias("user_id"), (nul if per_artifact else F.col("source")).alias("source"),
        F.lit(signal).alias("signal"), value.cast("double").alias("value"),
        F.lit(bound).cast("string").alias("bound"),
        (passed if (passed is not None and bound is not None) else F.lit(None)).cast("boolean").alias("passed"),
        F.lit(bool(gate and bound is not None and not per_artifact)).alias("gate"),
        (detail if detail is not None else nul).cast("string").alias("detail"))


def _fmt(x: float) -> str:
    return f"{x:g}"


# --- length_words ------------------------------------------------------------------------------------
def word_count(text: Column) -> Column:
    """Whitespace-separated words, as ``str.split()`` counts them (0 for blank text)."""
    t = F.trim(F.regexp_replace(text, r"\s+", " "))
    return F.when(t == "", F.lit(0)).otherwise(F.size(F.split(t, " ")))


def length_words(u: DataFrame, limits: dict[str, int], mode: str) -> DataFrame:
    """``length_words`` of every unit; bounded for persona (< persona_max_words) and profile
    (profile_min_words-profile_max_words, inclusive, as ``validate_output`` checks)."""
    n = word_count(F.col("text"))
    gate = mode == "gate"
    hi_p = limits["persona_max_words"]
    lo, hi = limits["profile_min_words"], limits["profile_max_words"]
    parts = [
        _rows(u.where(F.col("artifact") == "persona"), "length_words", n, f"<{hi_p} words", n < hi_p, gate),
        _rows(u.where(F.col("artifact") == "profile"), "length_words", n, f"{lo}-{hi} words", n.between(lo, hi), gate),
        _rows(u.where(~F.col("artifact").isin("persona", "profile")), "length_words", n, None, None, False),
    ]
    return reduce(DataFrame.unionByName, parts)


# --- qa_leakage --------------------------------------------------------------------------------------
def qa_leakage(u: DataFrame, n: int, max_share: float, mode: str) -> DataFrame:
    """Per QA item: the share of the answer's distinct word n-grams found in its scenario +
    question (the leaked n-grams in ``detail``); an answer of fewer than n words counts 1 when
    it occurs there as a whole phrase."""
    qa = u.where((F.col("artifact") == "social_qa") & F.col("qa_answer").isNotNull())
    ans = F.array_distinct(ngrams(F.col("qa_answer"), n))
    ctx = F.array_distinct(ngrams(F.col("qa_context"), n))
    leaked = F.array_intersect(ans, ctx)
    short = F.concat(F.lit(" "), normalized_text(F.col("qa_answer")), F.lit(" "))
    in_ctx = F.instr(F.concat(F.lit(" "), normalized_text(F.col("qa_context")), F.lit(" ")), short) > 0
    short_value = F.when(in_ctx & (F.trim(short) != ""), F.lit(1.0)).otherwise(F.lit(0.0))
    value = F.when(F.size(ans) > 0, _ratio(F.size(leaked), F.size(ans))).otherwise(short_value)
    detail = F.when(F.size(ans) > 0, _list(leaked)).otherwise(F.when(short_value > 0, normalized_text(F.col("qa_answer"))))
    return _rows(qa, "qa_leakage", value, f"<={_fmt(max_share)}", value <= max_share, mode == "gate",
                 F.when(detail != "", detail))


# --- unsupported_entities ----------------------------------------------------------------------------
# Function words (and weekdays, months: dates are not among the entities checked) that start a
# capitalised run without being a name: "In Paris" -> "Paris", "She" -> nothing.
STOP_WORDS = tuple(sorted(set("""
a about above across after afterwards again against all also although always am among an and another any anyone
anything are around as at be because been before being below beside besides between beyond both but by can could
despite did do does doing done down during each either else even ever every everyone everything for from further
had has have having he her here hers herself him himself his how however i i'd i'll i'm i've if in inside instead
into is it its itself just least less like many may me meanwhile might mine more moreover most much must my myself
neither never nevertheless next no nobody none nor not nothing now of off often on once one only onto or other
others otherwise our ours ourselves out outside over overall own per perhaps rather same she should since so some
someone something sometimes still such than that the their theirs them themselves then there therefore these they
this those though through throughout thus to together too toward towards under unless until up upon us usually very
was we well were what whatever when whenever where whereas wherever whether which while who whoever whom whose why
will with within without would yet you your yours yourself yourselves additionally furthermore indeed finally
first second third today yesterday tomorrow yes oh dear hello hi thanks
later recently currently lately soon eventually previously initially ultimately sadly luckily
monday tuesday wednesday thursday friday saturday sunday january february march april june july august september
october november december
""".split())))
# a capitalised run of words (letters, apostrophes, hyphens), or a number; the optional prefix
# marks a run that starts a sentence (the text is given a leading ". ")
_CANDIDATE = r"([.!?:;][\"'’”)\]]*\s+)?\b(\p{Lu}[\p{L}'’-]*(?:\s+\p{Lu}[\p{L}'’-]*)*|\p{N}[\p{N},.]*\p{N}|\p{N})"
_SENTENCE_START = r"^[.!?:;][\"'’”)\]]*\s+"


def entity_candidates(text: Column) -> Column:
    """``array<string>``: the capitalised runs and numbers of ``text`` that may name something.
    A run loses a leading function word (``STOP_WORDS``) and a trailing possessive; a one-word
    run that starts a sentence is kept only if the text never writes it in lower case."""
    stop = F.array(*[F.lit(w) for w in STOP_WORDS])
    lower_words = F.transform(F.regexp_extract_all(text, F.lit(r"\b\p{Ll}[\p{L}'’-]*"), 0), lambda w: F.lower(w))
    found = F.regexp_extract_all(F.concat(F.lit(". "), F.coalesce(text, F.lit(""))), F.lit(_CANDIDATE), 0)

    def clean(m: Column) -> Column:
        starts = m.rlike(_SENTENCE_START)
        run = F.regexp_replace(F.regexp_replace(m, _SENTENCE_START, ""), r"['’]s$", "")
        words = F.split(run, r"\s+")
        first = lambda arr: F.lower(F.array_join(F.slice(arr, 1, 1), ""))  # noqa: E731 (no index past the end)
        kept = F.when(F.array_contains(stop, first(words)), F.slice(words, 2, 1 << 20)).otherwise(words)
        common_opener = starts & (F.size(kept) == 1) & F.array_contains(lower_words, first(kept))
        return F.when(common_opener, F.lit("")).otherwise(F.array_join(kept, " "))

    return F.array_distinct(F.filter(F.transform(found, clean), lambda e: e != ""))


def user_sources(records: DataFrame) -> DataFrame:
    """``source, user_id, _src``: the user's records (title and text), normalised, in one string
    padded with spaces (a phrase occurs when `` <phrase> `` does)."""
    norm = normalized_text(F.concat_ws(" ", F.col("title"), F.col("text")))
    return records.groupBy("source", "user_id").agg(
        F.concat(F.lit(" "), F.array_join(F.collect_list(norm), " "), F.lit(" ")).alias("_src"))


def unsupported_entities(u: DataFrame, sources: DataFrame, max_count: int, mode: str) -> DataFrame:
    """Per persona, profile and story: the candidates (``entity_candidates``) whose normalised
    form occurs nowhere in the user's source records; value = their count, detail = them."""
    mine = u.where(F.col("artifact").isin(*ENTITY_ARTIFACTS))
    cands = mine.select("artifact", "input_id", "source", "user_id", F.explode(entity_candidates(F.col("text"))).alias("_e"))
    cands = cands.withColumn("_n", normalized_text(F.col("_e"))).where(F.col("_n") != "")
    checked = cands.join(sources, ["source", "user_id"], "left").withColumn(
        "_missing", F.coalesce(F.instr(F.col("_src"), F.concat(F.lit(" "), F.col("_n"), F.lit(" "))) == 0, F.lit(True)))
    per_unit = checked.groupBy("artifact", "input_id").agg(
        F.array_distinct(F.collect_list(F.when(F.col("_missing"), F.col("_e")))).alias("_bad"),
        F.count_distinct("_n").alias("_all"))
    rows = mine.join(per_unit, ["artifact", "input_id"], "left").select(
        *UNIT_COLUMNS, F.coalesce(F.col("_bad"), F.array().cast("array<string>")).alias("_bad"),
        F.coalesce(F.col("_all"), F.lit(0)).alias("_all"))
    value = F.size("_bad")
    detail = F.when(value > 0, _list(F.col("_bad")))
    return _rows(rows, "unsupported_entities", value, f"<={max_count}", value <= max_count, mode == "gate", detail)


# --- distinct-n --------------------------------------------------------------------------------------
def distinct_n(u: DataFrame, n: int, minimum: float | None, mode: str) -> DataFrame:
    """``distinct_<n>``: distinct word n-grams / all word n-grams (each unit's own n-grams, none
    across units) over a user's units of the artifact (input_id ``<source>:<user_id>``), and over
    every user's (input_id ``*``, never a gate)."""
    name = f"distinct_{n}"
    grams = u.select("artifact", "source", "user_id", F.explode(ngrams(F.col("text"), n)).alias("_g"))
    per_user = grams.groupBy("artifact", "source", "user_id").agg(
        F.count(F.lit(1)).alias("_total"), F.count_distinct("_g").alias("_distinct"))
    per_art = grams.groupBy("artifact").agg(F.count(F.lit(1)).alias("_total"), F.count_distinct("_g").alias("_distinct"))
    bound = None if minimum is None else f">={_fmt(minimum)}"
    value = _ratio(F.col("_distinct"), F.col("_total"))
    detail = F.format_string(f"%d distinct of %d {n}-grams", F.col("_distinct"), F.col("_total"))
    passed = value >= F.lit(minimum) if minimum is not None else None
    return _rows(per_user, name, value, bound, passed, mode == "gate", detail,
                 input_id=F.concat_ws(":", "source", "user_id")).unionByName(
        _rows(per_art, name, value, bound, passed, False, detail, per_artifact=True))


# --- near_duplicate ----------------------------------------------------------------------------------
BANDS_SCHEMA = StructType([StructField("unit_key", StringType()), StructField("_bands", ArrayType(LongType()))])


def band_keys_batch(batch: pa.RecordBatch, opts: MinHashOptions) -> Iterator[pa.RecordBatch]:
    """Arrow batch function (``mapInArrow``): ``unit_key, text`` -> ``unit_key, _bands`` (curation's band keys)."""
    yield pa.RecordBatch.from_arrays([batch.column("unit_key"), band_keys(batch.column("text").to_pylist(), opts)],
                                     names=["unit_key", "_bands"])


def near_duplicate(u: DataFrame, bands: DataFrame, opts: MinHashOptions, mode: str) -> DataFrame:
    """Per unit: the highest exact shingle Jaccard with another user's unit of the same artifact
    among its candidates (a shared MinHash band key; per band, a star to the bucket's first
    member of another user, as curation pairs with a bucket's first member); passed when below
    ``opts.threshold``. The ``*`` row: the share of the artifact's units that are near-duplicates.
    ``bands``: ``unit_key, _bands`` (``band_keys_batch``)."""
    nodes = u.select("artifact", "unit_key", "source", "user_id", "text").join(bands, "unit_key")
    ex = nodes.where(F.col("_bands").isNotNull()).select(
        "artifact", "unit_key", "source", "user_id", F.posexplode("_bands").alias("_band", "_bkey"))
    bucket = ["artifact", "_band", "_bkey"]
    first = ex.groupBy(*bucket).agg(F.count(F.lit(1)).alias("_n"), F.min("unit_key").alias("_first")).where("_n > 1")
    members = ex.join(first.drop("_n"), bucket)
    owner = members.where(F.col("unit_key") == F.col("_first")).select(
        *bucket, F.col("source").alias("_fsrc"), F.col("user_id").alias("_fuser"))
    members = members.join(owner, bucket)
    other = ~((F.col("source") == F.col("_fsrc")) & (F.col("user_id") == F.col("_fuser")))
    second = members.where(other).groupBy(*bucket).agg(F.min("unit_key").alias("_second"))
    members = members.join(second, bucket)  # buckets holding at least two users
    partner = F.when(other, F.col("_first")).otherwise(F.col("_second"))
    pairs = members.select(F.least("unit_key", partner).alias("_a"), F.greatest("unit_key", partner).alias("_b")).distinct()
    sets = nodes.select("unit_key", F.concat_ws(":", "source", "user_id").alias("_u"),
                        shingle_set(F.col("text"), opts.ngram).alias("_sh"))
    scored = (pairs.join(sets.select(F.col("unit_key").alias("_a"), F.col("_u").alias("_ua"), F.col("_sh").alias("_sa")), "_a")
              .join(sets.select(F.col("unit_key").alias("_b"), F.col("_u").alias("_ub"), F.col("_sh").alias("_sb")), "_b")
              .where(F.col("_ua") != F.col("_ub"))  # another user's only
              .select("_a", "_b", jaccard(F.col("_sa"), F.col("_sb")).alias("_jac")))
    both = scored.select(F.col("_a").alias("unit_key"), F.col("_b").alias("_p"), "_jac").unionByName(
        scored.select(F.col("_b").alias("unit_key"), F.col("_a").alias("_p"), "_jac"))
    best = both.groupBy("unit_key").agg(F.max(F.struct("_jac", "_p")).alias("_best"))
    rows = u.join(best, "unit_key", "left")
    value = F.coalesce(F.col("_best._jac"), F.lit(0.0))
    dup = value >= float(opts.threshold)
    detail = F.when(dup, F.format_string("jaccard %.2f with %s", F.col("_best._jac"), F.col("_best._p")))
    per_unit = _rows(rows, "near_duplicate", value, f"<{_fmt(opts.threshold)}", ~dup, mode == "gate", detail)
    rate = per_unit.groupBy("artifact").agg(
        F.avg(F.when(F.col("passed"), 0.0).otherwise(1.0)).alias("_rate"), F.count(F.lit(1)).alias("_n"),
        F.sum(F.when(F.col("passed"), 0).otherwise(1)).alias("_dups"))
    agg = _rows(rate, "near_duplicate", F.col("_rate"), None, None, False,
                F.format_string("%d near-duplicates of %d", F.col("_dups"), F.col("_n")), per_artifact=True)
    return per_unit.unionByName(agg)


# --- judge_agreement ---------------------------------------------------------------------------------
def agreement_sample(items: DataFrame, share: float, max_items: int, seed: int) -> DataFrame:
    """The items to re-judge: those whose xxhash64(seed, unit_key) falls in the first ``share``
    of the hash range, stratified (each artifact's lowest hash first, then the next of each),
    at most ``max_items``. The same items on every run of the same data."""
    h = F.xxhash64(F.lit(seed), F.col("unit_key"))
    frac = F.pmod(h, F.lit(1_000_000)) / F.lit(1_000_000.0)
    eligible = items.where(frac < F.lit(float(share))).withColumn("_h", h)
    ranked = eligible.withColumn("_rank", F.row_number().over(Window.partitionBy("artifact").orderBy("_h", "unit_key")))
    return ranked.orderBy("_rank", "_h", "unit_key").limit(max_items).drop("_h", "_rank")


def judge_agreement(pairs: DataFrame, min_agreement: float | None, mode: str) -> DataFrame:
    """``pairs``: ``artifact, input_id, user_id, source, overall, accepted, overall_2, accepted_2``
    (one judged item, two verdicts). Per item: |overall - overall_2|, passed when both accept
    decisions agree; per artifact (``*``): the share of items that agree."""
    agree = F.col("accepted") == F.col("accepted_2")
    value = F.abs(F.col("overall") - F.col("overall_2"))
    detail = F.format_string("overall %d vs %d, accept %s vs %s", F.col("overall"), F.col("overall_2"),
                             F.col("accepted").cast("string"), F.col("accepted_2").cast("string"))
    per_item = _rows(pairs, "judge_agreement", value, "same accept", agree, mode == "gate", detail)
    share = pairs.groupBy("artifact").agg(F.avg(F.when(agree, 1.0).otherwise(0.0)).alias("_share"),
                                          F.count(F.lit(1)).alias("_n"), F.sum(F.when(agree, 1).otherwise(0)).alias("_k"))
    bound = None if min_agreement is None else f">={_fmt(min_agreement)}"
    passed = F.col("_share") >= F.lit(min_agreement) if min_agreement is not None else None
    agg = _rows(share, "judge_agreement", F.col("_share"), bound, passed, False,
                F.format_string("%d of %d re-judged items agree", F.col("_k"), F.col("_n")), per_artifact=True)
    return per_item.unionByName(agg)


# --- all of them, the table rows, the gates ----------------------------------------------------------
def deterministic_signals(u: DataFrame, bands: DataFrame | None, sources: DataFrame, cfg, limits: dict[str, int],
                          minhash: MinHashOptions) -> DataFrame:
    """Every signal but ``judge_agreement`` (``cfg``: ``llm.signals``), ``ROW_COLUMNS``."""
    parts = [
        length_words(u, limits, cfg.length_words.mode),
        qa_leakage(u, cfg.qa_leakage.ngram, cfg.qa_leakage.max_share, cfg.qa_leakage.mode),
        unsupported_entities(u, sources, cfg.unsupported_entities.max_count, cfg.unsupported_entities.mode),
        distinct_n(u, 1, cfg.distinct_1.min, cfg.distinct_1.mode),
        distinct_n(u, 2, cfg.distinct_2.min, cfg.distinct_2.mode),
    ]
    if bands is not None:
        parts.append(near_duplicate(u, bands, minhash, cfg.near_duplicate.mode))
    return reduce(DataFrame.unionByName, parts)


def stamp(rows: DataFrame, run_id: str, at: datetime) -> DataFrame:
    """The table's rows: ``ROW_COLUMNS`` + run_id, computed_at."""
    return rows.select(*ROW_COLUMNS, F.lit(run_id).alias("run_id"), F.lit(at).cast("timestamp").alias("computed_at"))


def gate_failures(signals: DataFrame, u: DataFrame) -> DataFrame:
    """``artifact, input_id, _gate_reason`` of the units that fail a gate: a unit's own failed
    gated rows, and its user's (``USER_LEVEL``); the reasons sorted and joined."""
    failed = signals.where(F.col("gate") & (F.col("passed") == F.lit(False)) & (F.col("input_id") != ALL))
    reason = F.format_string("%s=%s fails %s", F.col("signal"), F.round("value", 3).cast("string"), F.col("bound"))
    own = failed.where(~F.col("signal").isin(*USER_LEVEL)).select("artifact", "input_id", reason.alias("_r"))
    users = failed.where(F.col("signal").isin(*USER_LEVEL)).select("artifact", "source", "user_id", reason.alias("_r"))
    theirs = users.join(u.select("artifact", "source", "user_id", "input_id"), ["artifact", "source", "user_id"]).select(
        "artifact", "input_id", "_r")
    return own.unionByName(theirs).groupBy("artifact", "input_id").agg(
        F.array_join(F.array_sort(F.array_distinct(F.collect_list("_r"))), "; ").alias("_gate_reason"))


def apply_gates(judged: DataFrame, failures: DataFrame) -> DataFrame:
    """``judged`` rows (``T.JUDGED``) with the failed gates: not accepted, the reason appended to
    ``reasons`` (``<judge's reasons> | gate: <signal>=<value> fails <bound>``)."""
    f = failures.select("input_id", "_gate_reason")
    out = judged.join(f, "input_id", "left")
    gated = F.col("_gate_reason").isNotNull()
    return out.withColumn("accepted", F.col("accepted") & ~gated).withColumn(
        "reasons", F.when(gated, F.concat_ws(" | ", F.col("reasons"), F.concat(F.lit("gate: "), F.col("_gate_reason"))))
        .otherwise(F.col("reasons"))).drop("_gate_reason")
