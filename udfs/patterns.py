"""Pure functions of the second recipe (HumanLLM's psychological patterns, ``lewin patterns``).

The recipe goes patterns -> bundles of 2-5 patterns -> scenarios -> multi-turn conversations with
inner thought / action / speech -> dual-level checklists -> role-play shards. The LLM writes the
creative parts; everything that can be checked without a model lives here, so the jobs stay thin
and every rule of the paper's prompts (tables 14-20 of ``../shared/seeds/000_507d60f2bcb4b8ed.txt``)
is enforced by code rather than hoped for:

* the pattern library: loading and validating records (``load_library``), naming
  (``pattern_id``) and the literature route's Markdown summary (``parse_pattern_markdown``);
* bundle sampling, balanced and seeded (``sample_bundles``), and the candidate names the scenario
  prompt must pick from (``candidate_names``);
* the deterministic validators of the scene design, the scene and the conversation
  (``parse_tendencies``, ``validate_design``, ``validate_scene``, ``validate_conversation``), the
  transcript text form (``render_turn``, ``render_transcript``, ``parse_transcript``);
* the value-neutral checklist screen (``checklist_screen``) and the role-play training records
  (``roleplay_samples``).

Validators return a list of violation strings (``"code: detail"``, stable codes first so callers
can count them); an empty list means valid. No Spark and no LLM calls: the Spark jobs call these
from their UDFs and the unit tests call them directly.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import random
import re
import unicodedata
from collections import Counter
from math import comb
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lewin.schemas.patterns import PatternRecord
from lewin.udfs import fs


class PatternLibraryError(ValueError):
    """A pattern library (or one literature summary) that cannot be used; the message is one line
    naming the location, the entry, the field and the problem."""


SHIPPED_LIBRARY: str = str(Path(__file__).with_name("pattern_library.yaml"))

# the unit separator of ``lewin.udfs.ids`` (not imported: that module pulls in pyspark)
_SEP = "\u001f"


# ---------------------------------------------------------------------------------------------
# the pattern library
# ---------------------------------------------------------------------------------------------

def pattern_id(name: str) -> str:
    """``"Fundamental attribution error"`` -> ``"fundamental_attribution_error"``: accents folded to
    ASCII, every run of non-alphanumerics one ``_``, none at either end ("" for a name without any
    letter or digit, which the record's validation then rejects)."""
    # accents fold away ("é" -> "e"); other non-ASCII letters drop; non-ASCII punctuation ("–")
    # separates words like ASCII punctuation does
    folded = "".join(
        ch if ch.isascii() else ("" if unicodedata.combining(ch) or ch.isalnum() else " ")
        for ch in unicodedata.normalize("NFKD", name))
    return re.sub(r"[^a-z0-9]+", "_", folded.lower()).strip("_")


def _entry_label(index: int, rec: Any) -> str:
    label = f"entry {index}"
    if isinstance(rec, dict):
        key = rec.get("id") or rec.get("name")
        if isinstance(key, str) and key.strip():
            label += f" ({key.strip()})"
    return label


def _validation_problem(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: problem`` on one line (a library error is one log line)."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err.get("loc", ())) or "record"
        parts.append(f"{field}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _read_text(loc: str) -> str:
    try:
        return fs.read_bytes(loc).decode("utf-8")
    except (OSError, ValueError, ImportError) as exc:  # missing file, bad URL, no fsspec backend, not UTF-8
        raise PatternLibraryError(f"{loc}: cannot read the pattern library: {exc}") from exc


def _parse_library_text(loc: str, text: str) -> list[Any]:
    lower = loc.lower().split("?", 1)[0]
    if lower.endswith((".yaml", ".yml")):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise PatternLibraryError(f"{loc}: malformed YAML{where}: {problem}") from exc
        if data is None:
            return []
        if isinstance(data, dict):
            if "patterns" not in data:
                raise PatternLibraryError(f"{loc}: a YAML mapping must hold the list under the key 'patterns'")
            data = data["patterns"] or []
        if not isinstance(data, list):
            raise PatternLibraryError(f"{loc}: expected a list of patterns, got {type(data).__name__}")
        return data
    if lower.endswith(".jsonl"):
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise PatternLibraryError(f"{loc}: malformed JSON at line {lineno}: {exc.msg}") from exc
        return records
    raise PatternLibraryError(f"{loc}: unsupported pattern library format (expected .yaml, .yml or .jsonl)")


def load_library(location: str | None = None) -> list[dict]:
    """The pattern records of a library file (YAML list, YAML ``{patterns: [...]}`` or JSONL),
    read through ``lewin.udfs.fs`` so any URL works; default: the shipped starter library.

    A record without an ``id`` gets ``pattern_id(name)``. Every record is validated against
    ``PatternRecord``; the result is the records' ``model_dump()`` sorted by id."""
    loc = SHIPPED_LIBRARY if location is None else str(location)
    raw = _parse_library_text(loc, _read_text(loc))
    if not raw:
        raise PatternLibraryError(f"{loc}: the pattern library is empty")
    records: list[dict] = []
    first_seen: dict[str, tuple[int, str]] = {}
    for i, rec in enumerate(raw, 1):
        if not isinstance(rec, dict):
            raise PatternLibraryError(f"{loc}: entry {i}: expected a mapping of the pattern's fields, "
                                      f"got {type(rec).__name__}")
        rec = dict(rec)
        if rec.get("id") in (None, "") and isinstance(rec.get("name"), str):
            rec["id"] = pattern_id(rec["name"])
        label = _entry_label(i, rec)
        try:
            model = PatternRecord.model_validate(rec)
        except ValidationError as exc:
            raise PatternLibraryError(f"{loc}: {label}: {_validation_problem(exc)}") from None
        if model.id in first_seen:
            _, other = first_seen[model.id]
            raise PatternLibraryError(f"{loc}: {other} and {label}: id: duplicate id {model.id!r}")
        first_seen[model.id] = (i, label)
        records.append(model.model_dump())
    return sorted(records, key=lambda r: r["id"])


# ---------------------------------------------------------------------------------------------
# the literature route: a Markdown summary -> a PatternRecord
# ---------------------------------------------------------------------------------------------

PATTERN_HEADINGS: tuple[str, ...] = ("Definition", "Core Mechanisms", "Real-World Manifestations")
_FIELDS = {"Definition": "definition", "Core Mechanisms": "core_mechanisms",
           "Real-World Manifestations": "manifestations"}

_MD_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_BOLD_LINE = re.compile(r"^\s{0,3}(\*\*|__)(?P<t>[^*_].*?)\1\s*:?\s*$")  # a whole-line **Heading**
_MD_RULE = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")
_MD_BULLET = re.compile(r"^(\s*)(?:[-*+\u2022]|\d{1,3}[.)])\s+(.*)$")


def _heading_section(title: str) -> str | None:
    """Which of the paper's headings a heading is (the LLM adds words: "Foundational Definition &
    Description", "Core Mechanisms & Theoretical Explanations", "Real-World Impact & Application")."""
    t = re.sub(r"[*_`]", "", title).lower()
    if "mechanism" in t:
        return "Core Mechanisms"
    if "manifestation" in t or re.search(r"real[\s\-\u2010-\u2015]*world", t):
        return "Real-World Manifestations"
    if "definition" in t:
        return "Definition"
    return None


def _clean_md(text: str) -> str:
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", text)  # bold markers only: single * may be content
    return " ".join(text.split())


def _section_items(lines: list[str]) -> list[str]:
    """Bullet items (a nested bullet or a wrapped line joins its parent item); without any bullet,
    the non-empty paragraphs. Intro text around a bulleted list is dropped: the list is the content."""
    bullets: list[list[str]] = []
    base_indent: int | None = None
    in_item = False
    for line in lines:
        m = _MD_BULLET.match(line)
        if m:
            indent = len(m.group(1).expandtabs(4))
            if base_indent is None or indent <= base_indent:
                base_indent = indent if base_indent is None else min(base_indent, indent)
                bullets.append([m.group(2)])
            else:
                bullets[-1].append(m.group(2))
            in_item = True
        elif not line.strip():
            in_item = False
        elif in_item and bullets:
            bullets[-1].append(line)
    if bullets:
        return [s for s in (_clean_md(" ".join(b)) for b in bullets) if s]
    paragraphs, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(_clean_md(" ".join(current)))
            current = []
    return [p for p in paragraphs if p]


def parse_pattern_markdown(markdown: str, *, name: str, type: str, references: list[str]) -> dict:  # noqa: A002
    """A PatternRecord dict from the LLM's Markdown summary (tables 15-16) under the headings of
    ``PATTERN_HEADINGS`` (any level, case-insensitive, extra words allowed). The definition is the
    section's text as one paragraph; mechanisms and manifestations are its bullet items (or
    paragraphs). A missing or empty section raises ``PatternLibraryError`` naming it."""
    sections: dict[str, list[str]] = {h: [] for h in PATTERN_HEADINGS}
    seen: set[str] = set()
    current: str | None = None
    current_level = 0
    for line in markdown.splitlines():
        m = _MD_HEADING.match(line)
        level, title = (len(m.group(1)), m.group(2)) if m else (0, None)
        if m is None:
            b = _MD_BOLD_LINE.match(line)
            if b and not _MD_BULLET.match(line):
                level, title = 7, b.group("t")  # a bold line ranks below every # heading
        if title is None:
            if current is not None:
                sections[current].append("" if _MD_RULE.match(line) else line)  # a "---" rule: a break
            continue
        section = _heading_section(title)
        if section is not None:
            current, current_level = section, level
            seen.add(section)
        elif current is not None and level > current_level:
            sections[current].append("")  # a sub-heading inside a section: a paragraph break
        else:
            current = None  # an unrelated heading (the title, "References" …) ends the section
    where = f"pattern markdown ({name})"
    record: dict[str, Any] = {"id": pattern_id(name), "name": name, "type": type, "references": list(references)}
    for heading in PATTERN_HEADINGS:
        lines = sections[heading]
        if heading not in seen:
            raise PatternLibraryError(f"{where}: missing section: {heading}")
        if heading == "Definition":  # one paragraph, bullet markers dropped
            value: Any = _clean_md(" ".join((b.group(2) if (b := _MD_BULLET.match(line)) else line)
                                            for line in lines))
        else:
            value = _section_items(lines)
        if not value:
            raise PatternLibraryError(f"{where}: empty section: {heading}")
        record[_FIELDS[heading]] = value
    try:
        return PatternRecord.model_validate(record).model_dump()
    except ValidationError as exc:
        raise PatternLibraryError(f"{where}: {_validation_problem(exc)}") from None


# ---------------------------------------------------------------------------------------------
# bundles
# ---------------------------------------------------------------------------------------------

def _bundle_id(ids: list[str], relation: str, framework: str) -> str:
    return hashlib.sha256(_SEP.join([*sorted(ids), relation, framework]).encode("utf-8")).hexdigest()[:16]


def _allocate(counts_for: dict[int, float], n: int, rng: random.Random) -> list[int]:
    """n sizes in proportion to the weights (largest remainder, seeded ties), shuffled: a fixed mix
    rather than n independent draws keeps the per-pattern usage even."""
    total = sum(counts_for.values())
    exact = {s: n * w / total for s, w in counts_for.items()}
    alloc = {s: int(v) for s, v in exact.items()}
    rest = n - sum(alloc.values())
    order = sorted(counts_for, key=lambda s: (-(exact[s] - alloc[s]), rng.random()))
    for s in order[:rest]:
        alloc[s] += 1
    out = [s for s in sorted(alloc) for _ in range(alloc[s])]
    rng.shuffle(out)
    return out


def sample_bundles(patterns: list[dict], n: int, *, seed: int, sizes: dict[int, float],
                   relations: tuple[str, ...], frameworks: list[str]) -> list[dict]:
    """n bundles of distinct patterns, each with one relation and one situational framework.

    Balanced and seeded: relations round-robin over a seeded shuffle (counts differ by <= 1);
    patterns greedy least-used-first with seeded tie-breaks (usage counts differ by <= 1 whenever
    no duplicate set forces otherwise); frameworks least-used-first too, preferring the pairing
    with the bundle's relation seen least; no two bundles share a pattern set. Sizes larger than
    the library are skipped. Same inputs and seed -> the same list."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    ids = sorted({str(p["id"]) for p in patterns})  # input order must not change the sample
    if not ids:
        raise ValueError("no patterns to bundle")
    if len(ids) != len(patterns):
        raise ValueError("duplicate pattern ids in the library")
    if not sizes:
        raise ValueError("sizes is empty")
    for s, w in sizes.items():
        if not isinstance(s, int) or isinstance(s, bool) or not 2 <= s <= 5:
            raise ValueError(f"bundle size must be an integer in 2..5, got {s!r}")
        if not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f"size weight must be a non-negative number, got {w!r} for size {s}")
    usable = {s: float(w) for s, w in sizes.items() if s <= len(ids) and w > 0}
    if not usable:
        raise ValueError(f"no bundle size with a positive weight fits a library of {len(ids)} patterns")
    relations = tuple(dict.fromkeys(relations))
    frameworks = list(dict.fromkeys(frameworks))
    if not relations:
        raise ValueError("relations is empty")
    if not frameworks:
        raise ValueError("frameworks is empty")
    capacity = sum(comb(len(ids), s) for s in usable)
    if n > capacity:
        raise ValueError(f"{n} bundles asked but only {capacity} distinct pattern sets exist")

    rng = random.Random(f"bundles{_SEP}{seed}")
    size_plan = _allocate(usable, n, rng)
    rel_order = list(relations)
    rng.shuffle(rel_order)
    usage = Counter({i: 0 for i in ids})
    fw_usage = Counter({f: 0 for f in frameworks})
    pair_usage: Counter = Counter()
    taken: set[tuple[str, ...]] = set()
    out: list[dict] = []
    for k in range(n):
        chosen = _pick_set(ids, usage, size_plan[k], taken, rng)
        if chosen is None:  # every set of the planned size is taken: any other size with room
            for s in sorted(usable, key=lambda s: (abs(s - size_plan[k]), s)):
                chosen = _pick_set(ids, usage, s, taken, rng)
                if chosen is not None:
                    break
        assert chosen is not None  # the capacity check above guarantees room
        taken.add(chosen)
        usage.update(chosen)
        relation = rel_order[k % len(rel_order)]
        least = min(fw_usage.values())
        framework = min((f for f in frameworks if fw_usage[f] == least),
                        key=lambda f: (pair_usage[(relation, f)], rng.random()))
        fw_usage[framework] += 1
        pair_usage[(relation, framework)] += 1
        out.append({"bundle_id": _bundle_id(list(chosen), relation, framework), "pattern_ids": list(chosen),
                    "relation": relation, "framework": framework, "size": len(chosen)})
    return out


def _pick_set(ids: list[str], usage: Counter, size: int, taken: set[tuple[str, ...]],
              rng: random.Random, retries: int = 24) -> tuple[str, ...] | None:
    """The ``size`` least-used patterns (seeded ties); on a taken set, re-break the ties a few
    times (stays balanced), then walk the combinations of the least-used order (swaps the most-used
    member first)."""
    if size > len(ids):
        return None
    order: list[str] = []
    for _ in range(retries):
        order = sorted(ids, key=lambda i: (usage[i], rng.random()))
        cand = tuple(sorted(order[:size]))
        if cand not in taken:
            return cand
    for combo in itertools.combinations(range(len(order)), size):
        cand = tuple(sorted(order[j] for j in combo))
        if cand not in taken:
            return cand
    return None


# ---------------------------------------------------------------------------------------------
# candidate names
# ---------------------------------------------------------------------------------------------

_LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "pl_PL", "sv_SE")


@functools.lru_cache(maxsize=32)
def _faker(locale: str):
    from faker import Faker  # imported lazily: building Faker's providers takes a moment

    return Faker(locale)


def candidate_names(seed: int, *, n_male: int = 5, n_female: int = 5,
                    locales: tuple[str, ...] = _LOCALES) -> dict[str, list[str]]:
    """The scenario prompt's candidate names (5 male, 5 female by default): distinct single-token
    first names from Faker across several locales, so scenarios are not all "Sarah and John".
    Each draw re-seeds the Faker instance from a seeded RNG: the same seed gives the same names."""
    if n_male < 0 or n_female < 0:
        raise ValueError("name counts must be non-negative")
    if not locales:
        raise ValueError("locales is empty")
    rng = random.Random(f"names{_SEP}{seed}")
    seen: set[str] = set()
    out: dict[str, list[str]] = {"male": [], "female": []}
    for gender, count in (("male", n_male), ("female", n_female)):
        attempts = 0
        while len(out[gender]) < count:
            attempts += 1
            if attempts > 200 * (count + 1):
                raise RuntimeError(f"could not draw {count} distinct {gender} names from {locales}")
            fake = _faker(locales[rng.randrange(len(locales))])
            fake.seed_instance(rng.getrandbits(64))
            name = (fake.first_name_male() if gender == "male" else fake.first_name_female()).strip()
            # single token only (no "Jean-Pierre", "Mary Ann", "D'Angelo"): the validators and the
            # "Name: ..." transcript lines match names exactly
            if not name.isalpha() or name.casefold() in seen:
                continue
            seen.add(name.casefold())
            out[gender].append(name)
    return out


# ---------------------------------------------------------------------------------------------
# sentence and word counting (the prompt's length rules)
# ---------------------------------------------------------------------------------------------

_ABBREV = re.compile(r"\b(?:e\.g|i\.e|etc|vs|Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|approx|cf)\.", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?\u2026])[\"'\u201d\u2019)\]]*\s+(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")


def _sentences(text: str) -> int:
    """Sentences in a short text (common abbreviations are not ends; a text without final
    punctuation is still a sentence)."""
    text = " ".join((text or "").split())
    if not text:
        return 0
    protected = _ABBREV.sub(lambda m: m.group(0)[:-1] + "\u2024", text)  # one-dot leader: not an end
    return len([s for s in _SENTENCE_END.split(protected) if s.strip()])


def _words(*texts: str) -> int:
    return sum(len((t or "").split()) for t in texts)


# ---------------------------------------------------------------------------------------------
# Task 1 (the design) and Task 2 (the scene)
# ---------------------------------------------------------------------------------------------

_TENDENCY_LINE = re.compile(r"^@\s*\[\s*([^\[\]]+?)\s*\]\s*:\s*(.*?)\s*$")
_TENDENCY_ITEM = re.compile(r"^(\d+)\s*[.)]\s*(.+)$")


def parse_tendencies(text: str) -> tuple[dict[str, list[str]], list[str]]:
    """Table 17's strict tendency lines, ``@ [Name]: 1. tendency; 2. tendency; 3. tendency``, one
    character per line -> (name -> tendencies, violations). Blank lines are ignored."""
    result: dict[str, list[str]] = {}
    violations: list[str] = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        m = _TENDENCY_LINE.match(line.strip())
        if not m:
            violations.append(f"tendency_line_format: {line.strip()}")
            continue
        name, body = m.group(1).strip(), m.group(2)
        parts = [p.strip() for p in body.split(";") if p.strip()]
        items: list[str] = []
        numbered_ok = bool(parts)
        for k, part in enumerate(parts, 1):
            im = _TENDENCY_ITEM.match(part)
            if not im or int(im.group(1)) != k:
                numbered_ok = False
            text_ = (im.group(2) if im else part).strip().rstrip(";").strip()
            if text_.startswith("[") and text_.endswith("]"):  # "[Tendency1]" copied from the template
                text_ = text_[1:-1].strip()
            if text_:
                items.append(text_)
        if not numbered_ok:
            violations.append(f"tendency_numbering: {name}")
        if len(items) < 3:
            violations.append(f"tendency_count: {name}")
        if name in result:  # a character twice (a repeated tendency is the format's business no more than a dull one)
            violations.append(f"tendency_duplicate: {name}")
        result.setdefault(name, items)
    return result, violations


def validate_design(design: dict, *, candidates: list[str], max_words: int = 375) -> list[str]:
    """Task 1 of table 17: rationale of 2-4 sentences, under the length limit (~500 tokens ->
    ``max_words`` words), strict tendency lines for at least two characters, all from the
    candidate names."""
    rationale = str(design.get("rationale") or "")
    catalysts = [str(c) for c in (design.get("catalysts") or [])]
    tendencies_text = str(design.get("tendencies") or "")
    violations: list[str] = []
    k = _sentences(rationale)
    if not 2 <= k <= 4:
        violations.append(f"rationale_sentences: {k}")
    words = _words(rationale, *catalysts, tendencies_text)
    if words > max_words:
        violations.append(f"design_too_long: {words}")
    tendencies, tv = parse_tendencies(tendencies_text)
    violations.extend(tv)
    allowed = {c.strip() for c in candidates}
    for name in tendencies:
        if name.strip() not in allowed:
            violations.append(f"name_not_candidate: {name}")
    if len(tendencies) < 2:
        violations.append(f"tendency_characters: {len(tendencies)}")
    return violations


def _as_dict(obj: Any) -> dict:
    return obj.model_dump() if hasattr(obj, "model_dump") else dict(obj or {})


def _characters(scene: dict) -> list[dict]:
    return [_as_dict(scene.get("protagonist"))] + [_as_dict(c) for c in (scene.get("supporting") or [])]


def validate_scene(scene: dict, *, candidates: list[str], design_names: list[str] | None = None) -> list[str]:
    """Task 2 of table 17: every character (and everyone they describe) from the candidate names,
    no character twice, each character's "About Others" covering every other character and no one
    else, backgrounds of 1-2 sentences, at least 4 distinct descriptors; with ``design_names``,
    the same cast as the design."""
    scene = _as_dict(scene)
    allowed = {c.strip() for c in candidates}
    chars = _characters(scene)
    names = [str(c.get("name") or "").strip() for c in chars]
    violations: list[str] = []
    flagged: set[str] = set()

    def not_candidate(name: str) -> None:
        if name not in allowed and name not in flagged:
            flagged.add(name)
            violations.append(f"name_not_candidate: {name}")

    for name in names:
        not_candidate(name)
    for name, count in Counter(names).items():
        if count > 1:
            violations.append(f"duplicate_character: {name}")
    cast = set(names)
    for who, char in zip(names, chars):
        others = [_as_dict(o) for o in (char.get("about_others") or [])]
        described = [str(o.get("name") or "").strip() for o in others]
        for other in described:
            not_candidate(other)
        for other in dict.fromkeys(names):
            if other != who and other not in described:
                violations.append(f"about_others_missing: {who} -> {other}")
        for other in dict.fromkeys(described):
            if other not in cast:
                violations.append(f"about_others_unknown: {who} -> {other}")
        about_self = _as_dict(char.get("about_self"))
        k = _sentences(str(about_self.get("background") or ""))
        if not 1 <= k <= 2:
            violations.append(f"background_sentences: {who}: {k}")
        descriptors = {str(d).strip().casefold() for d in (about_self.get("descriptors") or []) if str(d).strip()}
        if len(descriptors) < 4:
            violations.append(f"descriptors: {who}: {len(descriptors)}")
    if design_names is not None:
        diff = cast ^ {n.strip() for n in design_names}
        if diff:
            violations.append(f"design_mismatch: {', '.join(sorted(diff))}")
    return violations


# ---------------------------------------------------------------------------------------------
# transcripts: "Name: [thought] (action) speech"
# ---------------------------------------------------------------------------------------------

# "Name: rest": a name is 1-4 words, each capitalised except name particles ("van", "de" …), so a
# preamble such as "Here is the dialogue:" is not taken for a speaker
_NAME_WORD = r"(?:[^\W\d_a-z][\w.'\u2019\-]*|(?:van|von|de|da|del|della|der|den|di|du|la|le|ter|bin|al))"
_SPEAKER_LINE = re.compile(rf"^\s*((?:[^\W\d_a-z][\w.'\u2019\-]*)(?:[ \t]+{_NAME_WORD}){{0,3}})[ \t]*:[ \t]*(.*)$")
_PAIRS = {"[": "]", "(": ")"}


def _ws(text: Any) -> str:
    return " ".join(str(text or "").split())


def _closing(s: str, start: int) -> int:
    """Index of the bracket closing the one at ``start`` (same kind, nesting counted), or -1."""
    open_, close = s[start], _PAIRS[s[start]]
    depth = 0
    for i in range(start, len(s)):
        if s[i] == open_:
            depth += 1
        elif s[i] == close:
            depth -= 1
            if depth == 0:
                return i
    return -1


def _wrap(text: str, open_: str) -> str:
    if text.startswith(open_) and _closing(text, 0) == len(text) - 1:
        return text  # already wrapped by the model: do not double the brackets
    return f"{open_}{text}{_PAIRS[open_]}"


def _render_channels(turn: dict) -> str:
    thought, action, speech = _ws(turn.get("thought")), _ws(turn.get("action")), _ws(turn.get("speech"))
    parts = []
    if thought:
        parts.append(_wrap(thought, "["))
    if action:
        parts.append(_wrap(action, "("))
    if speech:
        parts.append(speech)
    return " ".join(parts)


def render_turn(turn: dict) -> str:
    """``Name: [thought] (action) speech`` on one line (whitespace collapsed, empty channels left out)."""
    turn = _as_dict(turn)
    return f"{_ws(turn.get('speaker'))}: {_render_channels(turn)}".rstrip()


def render_transcript(turns: list[dict]) -> str:
    return "\n".join(render_turn(t) for t in turns)


def _split_channels(rest: str) -> tuple[str, str, str]:
    """(thought, action, speech) of a line's text: every [..] group is thought, every (..) group
    action, the rest speech; nesting is respected and an unclosed group runs to the end."""
    thoughts, actions, speech = [], [], []
    i = 0
    while i < len(rest):
        ch = rest[i]
        if ch in _PAIRS:
            end = _closing(rest, i)
            end = len(rest) if end < 0 else end
            (thoughts if ch == "[" else actions).append(rest[i + 1:end].strip())
            speech.append(" ")
            i = end + 1
        else:
            speech.append(ch)
            i += 1
    return (_ws(" ".join(t for t in thoughts if t)), _ws(" ".join(a for a in actions if a)), _ws("".join(speech)))


def _parse_line(line: str) -> dict:
    m = _SPEAKER_LINE.match(line)
    if not m:
        return {"speaker": None, "raw": line.strip()}
    thought, action, speech = _split_channels(m.group(2))
    return {"speaker": m.group(1).strip(), "thought": thought, "action": action, "speech": speech}


def parse_transcript(text: str) -> list[dict]:
    """The inverse of ``render_transcript``: one dict per non-empty line, ``{"speaker", "thought",
    "action", "speech"}``, or ``{"speaker": None, "raw": line}`` for a line without ``Name:``."""
    return [_parse_line(line) for line in (text or "").splitlines() if line.strip()]


def _name_regex(name: str) -> re.Pattern | None:
    """A pattern name as a whole phrase, case-insensitive, any separator (space, hyphen,
    underscore, dash) between its words: "Dunning-Kruger effect" also finds "dunning kruger effect"."""
    words = [w for w in re.split(r"[\W_]+", name.lower()) if w]
    if not words:
        return None
    return re.compile(r"(?<![^\W_])" + r"[\W_]+".join(map(re.escape, words)) + r"(?![^\W_])", re.IGNORECASE)


def validate_conversation(transcript: str | list[dict], *, protagonist: str, supporting: list[str],
                          pattern_names: list[str], min_turns: int = 12, max_turns: int = 20) -> list[str]:
    """The deterministic validator of tables 19-20 (empty list = valid): no preamble, every line a
    turn, 12-20 turns, opened by a supporting character and closed by the protagonist, only the
    given characters, strictly turn-based, speech in every turn, each character showing at least
    one thought and one action with thoughts in at least half the turns, and no pattern named in
    any channel ("show, don't tell"). A list of turn dicts is rendered and parsed first, so both
    inputs are checked the same way."""
    text = render_transcript([_as_dict(t) for t in transcript]) if isinstance(transcript, list) else (transcript or "")
    protagonist = protagonist.strip()
    supporting_set = {s.strip() for s in supporting}
    allowed = supporting_set | {protagonist}
    violations: list[str] = []
    turns: list[dict] = []
    first = True
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parsed = _parse_line(line)
        if parsed["speaker"] is None:
            violations.append("preamble" if first else f"unparsed_line: {lineno}")
        else:
            turns.append(parsed)
        first = False
    n = len(turns)
    if not min_turns <= n <= max_turns:
        violations.append(f"turn_count: {n}")
    if not turns:
        return violations
    if turns[0]["speaker"] not in supporting_set:
        violations.append(f"opener: {turns[0]['speaker']}")
    if turns[-1]["speaker"] != protagonist:
        violations.append(f"closer: {turns[-1]['speaker']}")
    for name in dict.fromkeys(t["speaker"] for t in turns):
        if name not in allowed:
            violations.append(f"participant: {name}")
    for i in range(1, n):
        if turns[i]["speaker"] == turns[i - 1]["speaker"]:
            violations.append(f"consecutive_turns: {i + 1}")
    for i, t in enumerate(turns, 1):
        if not t["speech"]:
            violations.append(f"missing_speech: {i}")
    # the trinity of expression is conversation-level: not every small-talk turn needs all three
    speakers = [s for s in dict.fromkeys(t["speaker"] for t in turns) if s in allowed]
    for name in speakers:
        if not any(t["thought"] for t in turns if t["speaker"] == name):
            violations.append(f"no_thought: {name}")
    for name in speakers:
        if not any(t["action"] for t in turns if t["speaker"] == name):
            violations.append(f"no_action: {name}")
    with_thought = sum(1 for t in turns if t["thought"])
    if 2 * with_thought < n:
        violations.append(f"few_thoughts: {with_thought}/{n}")
    regexes = [(p, r) for p in pattern_names if (r := _name_regex(p)) is not None]
    for i, t in enumerate(turns, 1):
        blob = " ".join((t["thought"], t["action"], t["speech"]))
        for pname, rx in regexes:
            if rx.search(blob):
                violations.append(f"pattern_named: {pname} @ {i}")
    return violations


# ---------------------------------------------------------------------------------------------
# checklists
# ---------------------------------------------------------------------------------------------

# Words that make a checklist item judge the character's social desirability instead of the
# pattern's presence (the paper's "Does Nouman show empathy?" vs "Does Nouman attribute failure to
# external factors?"): a checklist must reward an accurate unlikeable character.
EVALUATIVE_WORDS: frozenset[str] = frozenset({
    "likeable", "likable", "likeability", "likability", "unlikeable", "unlikable", "nice", "kind",
    "kindness", "unkind", "good", "bad", "rude", "polite", "friendly", "unfriendly", "mean",
    "pleasant", "unpleasant", "admirable", "admirably", "empathetic", "empathy", "caring", "moral",
    "immoral", "ethical", "unethical", "appropriate", "inappropriate", "healthy", "unhealthy",
    "mature", "immature", "reasonable", "unreasonable", "selfish", "generous", "respectful",
    "disrespectful", "toxic", "better", "worse", "should", "ought", "compassionate", "considerate",
    "inconsiderate", "obnoxious", "virtuous", "praiseworthy", "commendable", "desirable",
    "undesirable", "acceptable", "unacceptable", "wrongly", "rightly", "unfairly",
})

_YES_NO_START = ("does", "do", "did", "is", "are", "was", "were", "has", "have", "had", "will", "would",
                 "can", "could")


def checklist_screen(question: str) -> str | None:
    """None when ``question`` is usable as a value-neutral yes/no checklist item, else the reason:
    ``empty``, ``not_yes_no``, ``too_long`` (> 35 words) or ``evaluative: <word>``."""
    q = " ".join((question or "").split())
    if not q:
        return "empty"
    first = q.split(" ", 1)[0].lower()
    if first not in _YES_NO_START or not q.endswith("?"):
        return "not_yes_no"
    if len(q.split()) > 35:
        return "too_long"
    for tok in re.findall(r"[a-z]+(?:['\u2019][a-z]+)*", q.lower()):
        tok = re.sub(r"n['\u2019]t$|['\u2019]s$", "", tok)  # "shouldn't" -> "should", "kind's" -> "kind"
        if tok in EVALUATIVE_WORDS:
            return f"evaluative: {tok}"
    return None


# ---------------------------------------------------------------------------------------------
# role-play training records
# ---------------------------------------------------------------------------------------------

_SCENE_BEGINS = "(The scene begins.)"


def _system_prompt(char: dict, scenario: str) -> str:
    name = _ws(char.get("name"))
    about = _as_dict(char.get("about_self"))
    descriptors = ", ".join(_ws(d) for d in (about.get("descriptors") or []) if _ws(d)).rstrip(".")
    background, motivation = _ws(about.get("background")), _ws(about.get("motivation"))
    others = [f"- {_ws(o.get('name'))}: {_ws(o.get('relation'))}"
              for o in (_as_dict(x) for x in (char.get("about_others") or []))]
    return "\n".join([
        f"You are {name}. ==About {name}==",
        " ".join(x for x in (f"{descriptors}.", background, f"Motivation: {motivation}") if x),
        "==About others==",
        *others,
        "==Scenario==",
        _ws(scenario),
        f"Speak as {name}: inner thoughts in [square brackets], actions in (parentheses), speech without brackets.",
    ])


def _observable(turn: dict) -> str:
    """What another character can perceive of a turn: its action and speech, never its thought
    (the turn is re-parsed, so a thought smuggled into the action or speech field goes too)."""
    parsed = _parse_line(render_turn(turn))
    if parsed["speaker"] is None:
        return ""

    def unthought(s: str) -> str:
        prev = None
        while prev != s:
            prev, s = s, re.sub(r"\[[^\[\]]*\]", " ", s)
        return _ws(s)

    return _render_channels({"action": unthought(parsed["action"]), "speech": unthought(parsed["speech"])})


def roleplay_samples(turns: list[dict], characters: list[dict], scenario: str) -> list[dict]:
    """The paper's "Training Role-Playing Instruction Template": one record per character who
    speaks, ``{"character", "messages"}``. The character's own turns are assistant messages (all
    three channels); everyone else's are user messages ``Name: (action) speech`` without their
    thoughts, consecutive ones merged; a record opens with ``(The scene begins.)`` when the
    character speaks first and ends on the character's last turn."""
    turns = [_as_dict(t) for t in turns if t and _as_dict(t).get("speaker")]
    records: list[dict] = []
    for char in (_as_dict(c) for c in characters):
        name = _ws(char.get("name"))
        if not name or not any(_ws(t.get("speaker")) == name for t in turns):
            continue
        messages: list[dict] = [{"role": "system", "content": _system_prompt(char, scenario)}]
        pending: list[str] = []
        for t in turns:
            speaker = _ws(t.get("speaker"))
            if speaker != name:
                seen = _observable(t)
                if seen:  # a turn with only a thought shows nothing to the others
                    pending.append(f"{speaker}: {seen}")
                continue
            own = _render_channels(t)
            if pending:
                messages.append({"role": "user", "content": "\n".join(pending)})
                pending = []
            elif len(messages) == 1:
                messages.append({"role": "user", "content": _SCENE_BEGINS})
            elif messages[-1]["role"] == "assistant":  # two own turns in a row: one reply
                messages[-1]["content"] += "\n" + own
                continue
            messages.append({"role": "assistant", "content": own})
        records.append({"character": name, "messages": messages})
    return records


__all__ = [
    "EVALUATIVE_WORDS", "PATTERN_HEADINGS", "PatternLibraryError", "SHIPPED_LIBRARY", "candidate_names",
    "checklist_screen", "load_library", "parse_pattern_markdown", "parse_tendencies", "parse_transcript",
    "pattern_id", "render_transcript", "render_turn", "roleplay_samples", "sample_bundles", "validate_conversation",
    "validate_design", "validate_scene",
]
