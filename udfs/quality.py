"""Quality heuristics of Gopher (repetition and quality), C4 and FineWeb, scored first and flagged
second: ``quality_signals`` computes one struct of scores per text on the workers (one tokenisation
shared by every heuristic), and ``quality_flags`` turns the scores into flags with Spark built-in
expressions and the configured thresholds (``curate.quality``), so a threshold change needs no
rescoring and every score can be queried in silver.

datatrove's filters are the reference (``tests/test_quality.py`` runs both and shows the
agreement). Differences, on purpose:

- Words: datatrove tokenises with spaCy's English tokenizer (once per filter, ~230 documents/s
  per core on Reddit comments). ``tokenize`` applies the same English affix, infix and
  special-case tables (spaCy's data, shipped as ``spacy_en_tokenizer.json``) in a Python fast
  path: plain words and words with one trailing punctuation mark never reach a regex. Tokens are
  identical to spaCy's on every text of the agreement test.
- C4 sentences: spaCy's sentencizer rule (a sentence ends after a token in its punctuation list
  when a non-punctuation token follows), applied to those tokens.
- Each heuristic reads the text as given: datatrove's C4 filter rewrites the document's text
  (it drops lines), so a FineWeb filter placed after it in a pipeline would read the rewritten text.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections import Counter
from functools import lru_cache
from itertools import filterfalse
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from pyspark.sql import Column

FLAGS = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")

# (name, arrow type) in the order of the struct; the Spark schema (schemas.tables.QUALITY_SIGNALS)
# is derived from this list.
SIGNALS: tuple[tuple[str, str], ...] = (
    # Gopher repetition
    ("dup_para_frac", "double"), ("dup_para_char_frac", "double"),
    ("dup_line_frac", "double"), ("dup_line_char_frac", "double"),
    ("top_2_gram_char_frac", "double"), ("top_3_gram_char_frac", "double"), ("top_4_gram_char_frac", "double"),
    ("dup_5_gram_char_frac", "double"), ("dup_6_gram_char_frac", "double"), ("dup_7_gram_char_frac", "double"),
    ("dup_8_gram_char_frac", "double"), ("dup_9_gram_char_frac", "double"), ("dup_10_gram_char_frac", "double"),
    # Gopher quality
    ("words", "int"), ("non_symbol_words", "int"), ("mean_word_length", "double"),
    ("hash_word_ratio", "double"), ("ellipsis_word_ratio", "double"),
    ("bullet_lines_ratio", "double"), ("end_ellipsis_lines_ratio", "double"),
    ("alpha_words_ratio", "double"), ("stop_words", "int"),
    # C4 (line rules of datatrove's defaults; terminal punctuation not required of social posts)
    ("c4_sentences", "int"), ("c4_lorem_ipsum", "bool"), ("c4_curly_bracket", "bool"),
    # FineWeb
    ("line_punct_ratio", "double"), ("short_line_ratio", "double"), ("char_dup_ratio", "double"),
    ("newline_word_ratio", "double"),
)

_LOCK = threading.Lock()


# --- the punctuation sets datatrove uses ---------------------------------------------------------------
@lru_cache(maxsize=1)
def _sets():
    from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION

    return frozenset(PUNCTUATION_SET), frozenset(TERMINAL_PUNCTUATION)


# Gopher's stop words (datatrove's default list)
_STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


# --- words ---------------------------------------------------------------------------------------------
TABLES_FILE = Path(__file__).with_name("spacy_en_tokenizer.json")
"""spaCy's English tokenizer tables as data (``python -m lewin.udfs.quality`` rewrites it from the
installed spaCy; a test checks it still matches): workers load it in milliseconds where importing
spaCy and building its English pipeline takes seconds per process."""


def spacy_tables() -> dict:
    """The tables, read from the installed spaCy (slow: imports it)."""
    import spacy
    from spacy.attrs import ORTH
    from spacy.pipeline.sentencizer import Sentencizer

    tok = spacy.blank("en").tokenizer

    def regex_of(method) -> dict | None:
        if method is None:
            return None
        rx = method.__self__
        return {"pattern": rx.pattern, "flags": int(rx.flags)}

    return {
        "spacy": spacy.__version__,
        "prefix": regex_of(tok.prefix_search), "suffix": regex_of(tok.suffix_search),
        "infix": regex_of(tok.infix_finditer), "token_match": regex_of(tok.token_match),
        "url_match": regex_of(tok.url_match),
        "special": {k: [d[ORTH] for d in v] for k, v in sorted(tok.rules.items())},
        "sentence_ends": list(Sentencizer.default_punct_chars),
    }


class _Tables:
    """spaCy's English tokenizer tables (its affix and special-case data, not its tokenizer loop)."""

    def __init__(self, data: dict):
        def compiled(spec: dict | None):
            return None if spec is None else re.compile(spec["pattern"], spec["flags"])

        self.prefix = compiled(data["prefix"]).search
        self.suffix = compiled(data["suffix"]).search
        self.infixes = compiled(data["infix"]).finditer
        tm, um = compiled(data["token_match"]), compiled(data["url_match"])
        self.token_match = tm.match if tm is not None else None
        self.url_match = um.match if um is not None else None
        self.special = data["special"]
        self.sentence_ends = frozenset(data["sentence_ends"])
        # spaCy also finds special cases that the affix rules split (":)" in "yes:)"): their
        # affix-rule tokens -> the special case's tokens, indexed by the first token
        self.merges: dict[str, list[tuple[tuple[str, ...], list[str]]]] = {}
        for key, pieces in self.special.items():
            if key.isalnum():
                continue
            split: list[str] = []
            _chunk(key, split, self, specials=False)
            if len(split) > 1 and split != pieces:
                self.merges.setdefault(split[0], []).append((tuple(split), pieces))


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    with _LOCK:
        return _Tables(json.loads(TABLES_FILE.read_text(encoding="utf-8")))


_FAST_SUFFIX = frozenset(".,!?;:")


def _chunk(s: str, out: list, t: _Tables, specials: bool = True) -> None:
    """Tokens of one whitespace-free chunk, in spaCy's order: special cases, prefixes and suffixes
    peeled off, infixes split, URLs kept whole, then special cases the affix rules had split."""
    table = t.special if specials else {}
    special = table.get(s)
    if special is not None:
        out.extend(special)
        return
    if s.isalpha() or s.isdigit():
        out.append(s)
        return
    last = s[-1]
    if last in _FAST_SUFFIX:  # "word," "word." — a suffix spaCy always splits after a lower-case letter
        core = s[:-1]
        if len(core) >= 2 and core.isalpha() and (core[-1].islower() or core[-2:].isupper()):
            special = table.get(core)
            if special is None:
                out.append(core)
            else:
                out.extend(special)
            out.append(last)
            return
    start_at = len(out)
    prefixes, suffixes = [], []
    while s:
        if s in table or (t.token_match and t.token_match(s)):
            break
        m = t.prefix(s)
        if m and m.end() > 0:
            prefixes.append(s[: m.end()])
            s = s[m.end():]
            if s in table:
                break
            continue
        m = t.suffix(s)
        if m and m.start() < len(s):
            suffixes.append(s[m.start():])
            s = s[: m.start()]
            continue
        break
    out.extend(prefixes)
    if s:
        special = table.get(s)
        if special is not None:
            out.extend(special)
        elif (t.token_match and t.token_match(s)) or (t.url_match and t.url_match(s)):
            out.append(s)
        else:
            start = 0
            for m in t.infixes(s):
                if m.start() == 0 and m.end() == 0:
                    continue
                if m.start() > start:
                    out.append(s[start: m.start()])
                if m.end() > m.start():
                    out.append(s[m.start(): m.end()])
                start = m.end()
            if start < len(s):
                out.append(s[start:])
    out.extend(reversed(suffixes))
    if specials and len(out) - start_at > 1:
        _merge_specials(out, start_at, t.merges)


def _merge_specials(out: list, start: int, merges: dict) -> None:
    """Replace, from ``start`` on, token runs that spell a special case by its tokens."""
    i = start
    while i < len(out):
        for seq, pieces in merges.get(out[i], ()):
            if tuple(out[i: i + len(seq)]) == seq:
                out[i: i + len(seq)] = pieces
                i += len(pieces) - 1
                break
        i += 1


def _tokens(text: str, t: _Tables) -> list[str]:
    out: list[str] = []
    special = t.special
    for chunk in text.split():
        if chunk.isalpha() and chunk not in special:  # most chunks: one plain word
            out.append(chunk)
        else:
            _chunk(chunk, out, t)
    return out


def tokenize(text: str) -> list[str]:
    """Words as spaCy's English tokenizer splits them (whitespace dropped, as datatrove does)."""
    return _tokens(text, _tables())


def _is_punct(token: str) -> bool:
    return all(unicodedata.category(c).startswith("P") for c in token)


def sentence_count(tokens: list[str], ends: frozenset) -> int:
    """spaCy's sentencizer: a new sentence starts at a non-punctuation token after an end mark."""
    if not tokens:
        return 0
    n, seen_end = 1, False
    for tok in tokens:
        is_end = tok in ends
        if seen_end and not is_end and not _is_punct(tok):
            n += 1
            seen_end = False
        elif is_end:
            seen_end = True
    return n


# --- scores --------------------------------------------------------------------------------------------
def _duplicates(parts: list[str]) -> tuple[int, int]:
    """(elements seen before, their characters), as datatrove counts them."""
    seen: set[str] = set()
    dup = chars = 0
    for p in parts:
        if p in seen:
            dup += 1
            chars += len(p)
        else:
            seen.add(p)
    return dup, chars


def _top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent word n-gram (its joined length × its count; the
    first of equal counts, as ``Counter.most_common``)."""
    grams = Counter(zip(*[words[i:] for i in range(n)]))
    gram, count = max(grams.items(), key=itemgetter(1))
    return (sum(map(len, gram)) + n - 1) * count


def _dup_ngram_chars(words: list[str], n: int) -> int:
    """Characters of n-grams seen before, skipping past each repeat (datatrove's definition)."""
    unique: set[str] = set()
    repeated, i, last = 0, 0, len(words) - n + 1
    while i < last:
        gram = "".join(words[i: i + n])
        if gram in unique:
            repeated += len(gram)
            i += n
        else:
            unique.add(gram)
            i += 1
    return repeated


def _c4(lines: list[str], line_tokens: list[list[str]], ends: frozenset) -> tuple[int, bool, bool]:
    """(sentences in the lines C4 keeps, a kept line says "lorem ipsum", a kept line has "{").
    Lines with either still count: with that document rule switched off, C4 keeps them."""
    sentences, lorem, curly = 0, False, False
    for raw, tokens in zip(lines, line_tokens):
        line = raw.strip()
        words = line.split()
        if len(words) < 3 or any(len(w) > 1000 for w in words):
            continue
        if "[" in line:
            cited = _CITATION.sub("", line)
            if cited != line:
                line, tokens = cited, tokenize(cited)
        low = line.lower()
        lorem = lorem or "lorem ipsum" in low
        if "javascript" in low:
            continue
        curly = curly or "{" in line
        if any(p in low for p in _POLICY):
            continue
        sentences += sentence_count(tokens, ends)
    return sentences, lorem, curly


def score(text: str) -> dict:
    """Every signal of ``SIGNALS`` for one non-empty text."""
    punct, terminal = _sets()
    t = _tables()
    n_chars = len(text)
    s: dict = {}
    paragraphs = _PARAGRAPHS.split(text.strip())
    dup, chars = _duplicates(paragraphs)
    s["dup_para_frac"] = dup / len(paragraphs)
    s["dup_para_char_frac"] = chars / n_chars
    line_runs = _LINES.split(text)
    dup, chars = _duplicates(line_runs)
    s["dup_line_frac"] = dup / len(line_runs)
    s["dup_line_char_frac"] = chars / n_chars

    # one tokenisation: the words of a text are the words of its lines, in order
    all_lines = text.splitlines()
    line_tokens = []
    words: list[str] = []
    for line in all_lines:
        toks = _tokens(line, t)
        line_tokens.append(toks)
        words += toks
    n_words = len(words)
    for n in (2, 3, 4):
        s[f"top_{n}_gram_char_frac"] = _top_ngram_chars(words, n) / n_chars if n_words >= n else 0.0
    # no repeated 5-gram means no repeated longer n-gram: the common case costs one set
    fives = list(zip(*[words[i:] for i in range(5)]))
    any_repeat = len(set(fives)) < len(fives)
    for n in range(5, 11):
        s[f"dup_{n}_gram_char_frac"] = _dup_ngram_chars(words, n) / n_chars if any_repeat else 0.0

    # plain words first, at C speed (no letter is in the punctuation set); then the rest one by one
    plain = list(filter(str.isalpha, words))
    non_symbol = alpha = len(plain)
    non_symbol_chars = sum(map(len, plain))
    for w in filterfalse(str.isalpha, words):
        if not all(c in punct for c in w):
            non_symbol += 1
            non_symbol_chars += len(w)
        if any(c.isalpha() for c in w):
            alpha += 1
    s["words"] = n_words
    s["non_symbol_words"] = non_symbol
    s["mean_word_length"] = non_symbol_chars / non_symbol if non_symbol else None
    s["hash_word_ratio"] = text.count("#") / n_words if n_words else None
    s["ellipsis_word_ratio"] = (text.count("...") + text.count("…")) / n_words if n_words else None
    n_lines = len(all_lines) or 1
    s["bullet_lines_ratio"] = sum(ln.lstrip().startswith(("•", "-")) for ln in all_lines) / n_lines
    s["end_ellipsis_lines_ratio"] = sum(ln.rstrip().endswith(("...", "…")) for ln in all_lines) / n_lines
    s["alpha_words_ratio"] = alpha / n_words if n_words else None
    s["stop_words"] = len(_STOP_WORDS.intersection(words))

    s["c4_sentences"], s["c4_lorem_ipsum"], s["c4_curly_bracket"] = _c4(all_lines, line_tokens, t.sentence_ends)

    kept = [ln for ln in text.split("\n") if ln.strip() != ""]
    if kept:
        s["line_punct_ratio"] = sum(1 for ln in kept if ln[-1] in terminal) / len(kept)
        s["short_line_ratio"] = sum(1 for ln in kept if len(ln) <= 30) / len(kept)
        s["char_dup_ratio"] = _duplicates(kept)[1] / len(text.replace("\n", ""))
        s["newline_word_ratio"] = text.count("\n") / n_words if n_words else None
    else:
        s["line_punct_ratio"] = s["short_line_ratio"] = s["char_dup_ratio"] = s["newline_word_ratio"] = None
    return s


def arrow_type() -> pa.DataType:
    kinds = {"double": pa.float64(), "int": pa.int32(), "bool": pa.bool_()}
    return pa.struct([pa.field(name, kinds[kind]) for name, kind in SIGNALS])


def quality_signals(texts: list[str | None]) -> pa.Array:
    """One struct of scores per text (null for a null or empty text), built column by column."""
    typ = arrow_type()
    scores = [score(t) if t else None for t in texts]
    columns = [pa.array([None if sc is None else sc[f.name] for sc in scores], f.type) for f in typ]
    valid = pa.array([sc is not None for sc in scores])
    return pa.StructArray.from_arrays(columns, fields=list(typ), mask=pc.invert(valid))


# --- flags (Spark built-in expressions over the scores) ------------------------------------------------
def _first(checks: list) -> Column:
    """The reason of the first check that fails, else null (datatrove stops at the first)."""
    from pyspark.sql import functions as F

    out = None
    for cond, reason in checks:
        out = F.when(cond, F.lit(reason)) if out is None else out.when(cond, F.lit(reason))
    return out if out is not None else F.lit(None).cast("string")


def flag_column(signals: str, cfg) -> Column:
    """``array<string>`` of ``"<filter>:<reason>"`` for the heuristics a text fails under ``cfg``
    (``schemas.config.QualityConfig``): one entry per filter, its first failing check."""
    from pyspark.sql import functions as F

    s = lambda name: F.col(f"{signals}.{name}")  # noqa: E731
    per_filter = []
    r = cfg.gopher_repetition
    checks = []
    for key, name in (("dup_para_frac", "dup_para_frac"), ("dup_para_char_frac", "dup_para_char_frac"),
                      ("dup_line_frac", "dup_line_frac"), ("dup_line_char_frac", "dup_line_char_frac")):
        if getattr(r, key):
            checks.append((s(key) > getattr(r, key), name))
    checks += [(s(f"top_{n}_gram_char_frac") > t, f"top_{n}_gram") for n, t in sorted(r.top_n_grams.items()) if t]
    checks += [(s(f"dup_{n}_gram_char_frac") > t, f"duplicated_{n}_n_grams") for n, t in sorted(r.dup_n_grams.items())
               if t]
    per_filter.append(("gopher_repetition", checks))
    q = cfg.gopher_quality
    checks = []
    if q.min_doc_words:
        checks.append((s("non_symbol_words") < q.min_doc_words, "gopher_short_doc"))
    if q.max_doc_words:
        checks.append((s("non_symbol_words") > q.max_doc_words, "gopher_long_doc"))
    if q.min_avg_word_length:
        checks.append((s("mean_word_length") < q.min_avg_word_length, "gopher_below_avg_threshold"))
    if q.max_avg_word_length:
        checks.append((s("mean_word_length") > q.max_avg_word_length, "gopher_above_avg_threshold"))
    if q.max_symbol_word_ratio:
        checks.append((s("hash_word_ratio") > q.max_symbol_word_ratio, "gopher_too_many_hashes"))
        checks.append((s("ellipsis_word_ratio") > q.max_symbol_word_ratio, "gopher_too_many_ellipsis"))
    if q.max_bullet_lines_ratio:
        checks.append((s("bullet_lines_ratio") > q.max_bullet_lines_ratio, "gopher_too_many_bullets"))
    if q.max_ellipsis_lines_ratio:
        checks.append((s("end_ellipsis_lines_ratio") > q.max_ellipsis_lines_ratio, "gopher_too_many_end_ellipsis"))
    if q.min_alpha_words_ratio:
        checks.append((s("alpha_words_ratio") < q.min_alpha_words_ratio, "gopher_below_alpha_threshold"))
    if q.min_stop_words:
        checks.append((s("stop_words") < q.min_stop_words, "gopher_enough_stop_words"))
    per_filter.append(("gopher_quality", checks))
    c = cfg.c4
    checks = []
    if c.filter_lorem_ipsum:
        checks.append((s("c4_lorem_ipsum"), "lorem_ipsum"))
    if c.filter_curly_bracket:
        checks.append((s("c4_curly_bracket"), "curly_bracket"))
    if c.min_num_sentences > 0:
        checks.append((s("c4_sentences") < c.min_num_sentences, "too_few_sentences"))
    per_filter.append(("c4_quality", checks))
    w = cfg.fineweb
    punct = s("line_punct_ratio")
    low_punct = punct < w.line_punct_thr
    if w.line_punct_exclude_zero:
        low_punct = low_punct & (punct != 0)
    checks = [(low_punct, "line_punct_ratio"), (s("short_line_ratio") > w.short_line_thr, "short_line_ratio"),
              (s("char_dup_ratio") > w.char_duplicates_ratio, "char_dup_ratio"),
              (s("newline_word_ratio") > w.new_line_ratio, "list_ratio")]
    per_filter.append(("fineweb_quality", checks))
    flags = [F.concat(F.lit(f"{name}:"), _first(checks)) for name, checks in per_filter if checks]
    if not flags:
        return F.array().cast("array<string>")
    return F.filter(F.array(*flags), lambda f: f.isNotNull())


if __name__ == "__main__":  # regenerate the tables file from the installed spaCy
    TABLES_FILE.write_text(json.dumps(spacy_tables(), ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {TABLES_FILE}")
