"""Unit tests of ``lewin.udfs.patterns`` (the second recipe's pure functions): every gate has a test
that turns red when the gate is removed or inverted. No Spark, no LLM: fast."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from lewin.udfs import patterns as P
from lewin.udfs.patterns import (
    PatternLibraryError,
    candidate_names,
    checklist_screen,
    load_library,
    parse_pattern_markdown,
    parse_tendencies,
    parse_transcript,
    pattern_id,
    render_transcript,
    render_turn,
    roleplay_samples,
    sample_bundles,
    validate_conversation,
    validate_design,
    validate_scene,
)


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------

def _record(name: str, **over) -> dict:
    rec = {
        "name": name,
        "type": "social_cognitive_pattern",
        "definition": f"{name} is a tendency described at length in the literature.",
        "core_mechanisms": ["A mechanism that drives it."],
        "manifestations": ["A place where it shows."],
        "references": ["Author, A. (2000). A paper. Journal, 1, 1-10."],
    }
    rec.update(over)
    return rec


def _write_yaml(path: Path, records) -> str:
    import yaml

    path.write_text(yaml.safe_dump(records, sort_keys=False), encoding="utf-8")
    return str(path)


CANDIDATES = ["Marcus", "Tomasz", "Piotr", "Lars", "Jonas", "Elena", "Sofia", "Ines", "Clara", "Marta"]
PATTERN_NAMES = ["Ultimate attribution error", "Self-serving bias"]

GOOD_TRANSCRIPT = """\
Elena: [He's going to blame the launch date again, I can feel it.] (slides the churn report across the table) Forty percent of the trial users dropped off in the first week, Marcus. They couldn't find the export button.
Tomasz: (rubs his temples) Let's keep this about the numbers. Marcus, what happened on your side?
Marcus: [Marketing promised a feature set we never signed off on.] (leans back, arms crossed) The interface was innovative. People needed time to adjust, and we had six weeks instead of twelve.
Elena: (taps the report) Six weeks was the schedule your team agreed to in March.
Marcus: [She always reaches for that meeting.] Agreed under pressure. You were panicking about the competitor's launch, and we absorbed it.
Tomasz: [If this turns into a shouting match, the board hears about it before I do.] (opens his laptop to the support tickets) The tickets mention the export flow forty-one times. That's a concrete thing we can fix.
Marcus: (scrolls through the tickets without reading them) Those are mostly users who skipped onboarding. That's a campaign problem, not a build problem.
Elena: [Every time it's his call, it's the circumstances. Every time it's ours, it's us.] (voice tight) So when engineering misses, it's the timeline, and when marketing misses, it's marketing?
Tomasz: (raises a hand) Elena. [She has a point, but he'll dig in if she corners him.] Let's look at the export data together before we decide anything.
Marcus: [Fine. The data will show it's the onboarding.] (pulls the dashboard onto the big screen) Here. Completion rate on the tutorial is nineteen percent.
Elena: (quietly) And the tutorial ends on the export screen you redesigned.
Marcus: [That's... not how I remember the flow.] (pauses, then closes the laptop) I'll have someone check the tutorial path. It still doesn't change the timeline problem.
"""


def _turns() -> list[dict]:
    return parse_transcript(GOOD_TRANSCRIPT)


def _check(turns_or_text) -> list[str]:
    return validate_conversation(turns_or_text, protagonist="Marcus", supporting=["Elena", "Tomasz"],
                                 pattern_names=PATTERN_NAMES)


def _char(name: str, others: dict[str, str], **self_over) -> dict:
    about_self = {
        "descriptors": ["analytical", "proud", "guarded", "quick-witted"],
        "background": f"{name} has worked at the company for six years.",
        "motivation": "Keep the team's reputation intact.",
    }
    about_self.update(self_over)
    return {"name": name, "about_self": about_self,
            "about_others": [{"name": n, "relation": r} for n, r in others.items()]}


def _scene() -> dict:
    return {
        "scenario": "A post-mortem meeting after a product launch missed its retention targets.",
        "protagonist": _char("Marcus", {"Elena": "The marketing lead who oversold the release.",
                                        "Tomasz": "A manager who avoids conflict."}),
        "supporting": [
            _char("Elena", {"Marcus": "An engineer who never admits a mistake.",
                            "Tomasz": "Her ally, most of the time."}),
            _char("Tomasz", {"Marcus": "Brilliant but defensive.", "Elena": "Sharp and impatient."}),
        ],
    }


def _design() -> dict:
    return {
        "rationale": ("Marcus explains his team's misses by the schedule while reading marketing's misses as "
                      "incompetence. Elena's churn report is the trigger that makes the asymmetry visible. "
                      "Tomasz's attempt to stay neutral lets the bias play out before the data challenges it."),
        "catalysts": ["A churn report with a 40% first-week drop-off", "A tutorial that ends on the redesigned screen"],
        "tendencies": ("@ [Marcus]: 1. Cites the timeline for engineering misses; 2. Calls marketing's worries panic; "
                       "3. Looks for data that confirms his view\n"
                       "@ [Elena]: 1. Brings documents as evidence; 2. Points out double standards; 3. Escalates when dismissed\n"
                       "\n"
                       "@ [Tomasz]: 1. Redirects to numbers; 2. Avoids taking sides; 3. Proposes joint reviews\n"),
    }


# ---------------------------------------------------------------------------------------------
# pattern ids and the library
# ---------------------------------------------------------------------------------------------

def test_pattern_id():
    assert pattern_id("Fundamental attribution error") == "fundamental_attribution_error"
    assert pattern_id("  Dunning–Kruger  Effect (DKE) ") == "dunning_kruger_effect_dke"
    assert pattern_id("Élan vital — naïveté") == "elan_vital_naivete"
    assert pattern_id("self-serving__bias") == "self_serving_bias"


def test_load_yaml_list_and_mapping_and_jsonl(tmp_path):
    recs = [_record("Anchoring bias"), _record("Halo effect", id="halo")]
    got = load_library(_write_yaml(tmp_path / "lib.yaml", recs))
    assert [r["id"] for r in got] == ["anchoring_bias", "halo"]  # derived id, explicit id, sorted
    assert got[0]["references"] == recs[0]["references"]
    assert load_library(_write_yaml(tmp_path / "lib2.yml", {"patterns": recs})) == got
    jl = tmp_path / "lib.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in reversed(recs)) + "\n\n", encoding="utf-8")
    assert load_library(str(jl)) == got
    assert load_library(jl.as_uri()) == got  # through lewin.udfs.fs: a URL works too


@pytest.mark.parametrize("bad, field", [
    ({"definition": None}, "definition"),
    ({"references": []}, "references"),
    ({"references": "Smith (2001)"}, "references"),
    ({"type": "mood"}, "type"),
    ({"core_mechanisms": "one string"}, "core_mechanisms"),
    ({"colour": "blue"}, "colour"),
])
def test_load_bad_entry_names_entry_and_field(tmp_path, bad, field):
    second = _record("Anchoring", **bad)
    if bad.get("definition", 1) is None:
        del second["definition"]
    loc = _write_yaml(tmp_path / "lib.yaml", [_record("Halo effect"), second])
    with pytest.raises(PatternLibraryError) as ei:
        load_library(loc)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(loc + ": entry 2 (anchoring): ")
    assert f"{field}:" in msg


def test_load_duplicate_id_names_both_entries(tmp_path):
    loc = _write_yaml(tmp_path / "lib.yaml", [_record("Anchoring"), _record("Halo effect"), _record("anchoring")])
    with pytest.raises(PatternLibraryError, match=r"entry 1 \(anchoring\) and entry 3 \(anchoring\).*duplicate"):
        load_library(loc)


def test_load_malformed_and_empty(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: Anchoring\n  type: [unclosed\n- name: x\n", encoding="utf-8")
    with pytest.raises(PatternLibraryError, match=r"bad\.yaml: malformed YAML at line \d+"):
        load_library(str(bad))
    badj = tmp_path / "bad.jsonl"
    badj.write_text(json.dumps(_record("Anchoring")) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(PatternLibraryError, match=r"malformed JSON at line 2"):
        load_library(str(badj))
    for text in ("", "[]\n", "patterns: []\n"):
        empty = tmp_path / "empty.yaml"
        empty.write_text(text, encoding="utf-8")
        with pytest.raises(PatternLibraryError, match="empty"):
            load_library(str(empty))
    with pytest.raises(PatternLibraryError, match="cannot read"):
        load_library(str(tmp_path / "missing.yaml"))
    with pytest.raises(PatternLibraryError, match="entry 1: expected a mapping"):
        load_library(_write_yaml(tmp_path / "scalars.yaml", ["Anchoring"]))


def test_shipped_library_if_present():
    if not Path(P.SHIPPED_LIBRARY).exists():
        pytest.skip("the shipped pattern library is not written yet")
    lib = load_library()
    assert len(lib) >= 24
    assert all(len(r["references"]) >= 1 for r in lib)
    assert len({r["id"] for r in lib}) == len(lib)


# ---------------------------------------------------------------------------------------------
# the literature route: Markdown -> record
# ---------------------------------------------------------------------------------------------

SUMMARY = """\
# Pattern Structure Summary: Anchoring Bias

## 1. Foundational Definition & Description
Anchoring is the tendency to rely too heavily on the first piece of
information offered (the "anchor") when making   numeric judgements.

## 2. Core Mechanisms & Theoretical Explanations
Several mechanisms have been proposed:
- **Insufficient adjustment**: people start from the anchor and stop adjusting too early.
- Selective accessibility: the anchor primes anchor-consistent knowledge.
  * Nested detail that belongs to the item above.
1. Numeric priming: numbers activate magnitude representations.

### Real-World Impact & Application
- Negotiation: first offers shape final settlements.
- Retail pricing: "was $99, now $49" tags.

## References
- Tversky, A., & Kahneman, D. (1974). Judgment under uncertainty.
"""


def test_parse_pattern_markdown_paper_headings():
    rec = parse_pattern_markdown(SUMMARY, name="Anchoring bias", type="social_cognitive_pattern",
                                 references=["Tversky & Kahneman (1974)"])
    assert rec["id"] == "anchoring_bias"
    assert rec["definition"] == ('Anchoring is the tendency to rely too heavily on the first piece of information '
                                 'offered (the "anchor") when making numeric judgements.')
    assert rec["core_mechanisms"] == [
        "Insufficient adjustment: people start from the anchor and stop adjusting too early.",
        "Selective accessibility: the anchor primes anchor-consistent knowledge. Nested detail that belongs to "
        "the item above.",
        "Numeric priming: numbers activate magnitude representations.",
    ]
    assert rec["manifestations"] == ["Negotiation: first offers shape final settlements.",
                                     'Retail pricing: "was $99, now $49" tags.']  # "References" not swallowed
    assert rec["references"] == ["Tversky & Kahneman (1974)"]


def test_parse_pattern_markdown_paragraphs_and_short_headings():
    md = ("### definition\nThe trait of being organised and dependable in daily life.\n\n"
          "# CORE MECHANISMS\nFirst paragraph about\nself-control.\n\n---\nSecond paragraph about goals.\n"
          "## Manifestations\nShows at work.\n")
    rec = parse_pattern_markdown(md, name="Conscientiousness", type="personality_trait", references=["x"])
    assert rec["core_mechanisms"] == ["First paragraph about self-control.", "Second paragraph about goals."]
    assert rec["manifestations"] == ["Shows at work."]


def test_parse_pattern_markdown_missing_or_empty_section():
    no_mech = re.sub(r"## 2\. Core.*?(?=### Real)", "", SUMMARY, flags=re.S)
    with pytest.raises(PatternLibraryError, match="missing section: Core Mechanisms"):
        parse_pattern_markdown(no_mech, name="Anchoring", type="social_cognitive_pattern", references=["x"])
    empty_real = SUMMARY.split("### Real-World")[0] + "### Real-World Manifestations\n\n## References\n- a\n"
    with pytest.raises(PatternLibraryError, match="empty section: Real-World Manifestations"):
        parse_pattern_markdown(empty_real, name="Anchoring", type="social_cognitive_pattern", references=["x"])
    with pytest.raises(PatternLibraryError, match="references"):
        parse_pattern_markdown(SUMMARY, name="Anchoring", type="social_cognitive_pattern", references=[])


# ---------------------------------------------------------------------------------------------
# bundles
# ---------------------------------------------------------------------------------------------

LIB24 = [{"id": f"p{i:02d}"} for i in range(24)]
RELATIONS = ("reinforce", "conflict", "modulate")
FRAMEWORKS = ["workplace", "family", "friendship", "public"]


def _bundles(seed=7, n=30, patterns=LIB24, sizes=None):
    return sample_bundles(patterns, n, seed=seed, sizes=sizes or {2: 1, 3: 1}, relations=RELATIONS,
                          frameworks=FRAMEWORKS)


def test_bundles_balanced():
    bundles = _bundles()
    assert len(bundles) == 30
    usage = Counter({p["id"]: 0 for p in LIB24})
    for b in bundles:
        usage.update(b["pattern_ids"])
        assert b["pattern_ids"] == sorted(set(b["pattern_ids"]))
        assert b["size"] == len(b["pattern_ids"]) and b["size"] in (2, 3)
        assert re.fullmatch(r"[0-9a-f]{16}", b["bundle_id"])
    assert max(usage.values()) - min(usage.values()) <= 1
    rel = Counter(b["relation"] for b in bundles)
    assert set(rel) == set(RELATIONS) and max(rel.values()) - min(rel.values()) <= 1
    fw = Counter(b["framework"] for b in bundles)
    assert set(fw) == set(FRAMEWORKS) and max(fw.values()) - min(fw.values()) <= 1
    assert len({tuple(b["pattern_ids"]) for b in bundles}) == 30
    assert len({b["bundle_id"] for b in bundles}) == 30
    assert Counter(b["size"] for b in bundles) == {2: 15, 3: 15}


@pytest.mark.parametrize("seed", range(5))
def test_bundles_balanced_many_seeds(seed):
    bundles = _bundles(seed=seed, n=47, sizes={2: 1, 3: 2, 5: 1})
    usage = Counter({p["id"]: 0 for p in LIB24})
    for b in bundles:
        usage.update(b["pattern_ids"])
    assert max(usage.values()) - min(usage.values()) <= 1
    rel = Counter(b["relation"] for b in bundles)
    assert max(rel.values()) - min(rel.values()) <= 1


def test_bundles_deterministic_and_seeded():
    assert _bundles(seed=3) == _bundles(seed=3)
    assert _bundles(seed=3) == _bundles(seed=3, patterns=list(reversed(LIB24)))  # input order irrelevant
    assert _bundles(seed=3) != _bundles(seed=4)
    b = _bundles(seed=3)[0]
    assert b["bundle_id"] == P._bundle_id(b["pattern_ids"], b["relation"], b["framework"])


def test_bundles_no_duplicate_sets_when_saturated():
    five = [{"id": c} for c in "abcde"]
    bundles = sample_bundles(five, 10, seed=1, sizes={2: 1}, relations=RELATIONS, frameworks=["x"])
    assert len({tuple(b["pattern_ids"]) for b in bundles}) == 10  # all C(5,2) pairs, once each
    with pytest.raises(ValueError):
        sample_bundles(five, 11, seed=1, sizes={2: 1}, relations=RELATIONS, frameworks=["x"])


def test_bundles_skip_sizes_larger_than_library_and_reject_bad_input():
    three = [{"id": c} for c in "abc"]
    bundles = sample_bundles(three, 3, seed=1, sizes={2: 1, 5: 3}, relations=RELATIONS, frameworks=["x"])
    assert all(b["size"] == 2 for b in bundles)
    assert sample_bundles(three, 0, seed=1, sizes={2: 1}, relations=RELATIONS, frameworks=["x"]) == []
    for kwargs in ({"n": -1}, {"patterns": []}, {"sizes": {}}, {"sizes": {1: 1}}, {"sizes": {6: 1}},
                   {"sizes": {2: -1}}, {"sizes": {5: 1}}, {"relations": ()}, {"frameworks": []}):
        args = {"patterns": three, "n": 2, "seed": 1, "sizes": {2: 1}, "relations": RELATIONS, "frameworks": ["x"]}
        args.update(kwargs)
        with pytest.raises(ValueError):
            sample_bundles(args.pop("patterns"), args.pop("n"), **args)


# ---------------------------------------------------------------------------------------------
# candidate names
# ---------------------------------------------------------------------------------------------

def test_candidate_names():
    names = candidate_names(11)
    assert len(names["male"]) == 5 and len(names["female"]) == 5
    everyone = names["male"] + names["female"]
    assert len({n.casefold() for n in everyone}) == 10
    assert all(n.isalpha() for n in everyone)
    assert candidate_names(11) == names
    assert candidate_names(12) != names


class _StubFaker:
    """Faker's interface as candidate_names uses it, with a fixed stream of awkward names."""

    def __init__(self, male: list[str], female: list[str]):
        self._male, self._female = iter(male), iter(female)

    def seed_instance(self, seed) -> None:
        pass

    def first_name_male(self) -> str:
        return next(self._male)

    def first_name_female(self) -> str:
        return next(self._female)


def test_candidate_names_redraw_compound_and_repeated(monkeypatch):
    stub = _StubFaker(["Jean-Pierre", "Andrea", "Mary Ann", "D'Angelo", "Luca", "Luca", "Piotr"],
                      ["ANDREA", "Marie-Claude", "Ines", "Sofia"])
    monkeypatch.setattr(P, "_faker", lambda locale: stub)
    assert candidate_names(1, n_male=3, n_female=2) == {"male": ["Andrea", "Luca", "Piotr"],
                                                        "female": ["Ines", "Sofia"]}


# ---------------------------------------------------------------------------------------------
# Task 1 and Task 2
# ---------------------------------------------------------------------------------------------

def test_parse_tendencies_good():
    got, violations = parse_tendencies("@ [Marcus]: 1. Blames the timeline; 2. Dismisses worries; 3. Checks data\n\n"
                                       "@[Elena]:1) Brings evidence;2) Pushes back;3) [Escalates];")
    assert violations == []
    assert got == {"Marcus": ["Blames the timeline", "Dismisses worries", "Checks data"],
                   "Elena": ["Brings evidence", "Pushes back", "Escalates"]}


@pytest.mark.parametrize("text, code", [
    ("Marcus: 1. a; 2. b; 3. c", "tendency_line_format: Marcus: 1. a; 2. b; 3. c"),
    ("- @ [Marcus]: 1. a; 2. b; 3. c", "tendency_line_format: - @ [Marcus]: 1. a; 2. b; 3. c"),
    ("@ [Marcus]: 1. a; 3. b; 4. c", "tendency_numbering: Marcus"),
    ("@ [Marcus]: a; b; c", "tendency_numbering: Marcus"),
    ("@ [Marcus]: 1. a; 2. b", "tendency_count: Marcus"),
    ("@ [Marcus]: 1. a; 2. b; 3. c\n@ [Marcus]: 1. d; 2. e; 3. f", "tendency_duplicate: Marcus"),
])
def test_parse_tendencies_bad(text, code):
    assert code in parse_tendencies(text)[1]


def test_validate_design():
    assert validate_design(_design(), candidates=CANDIDATES) == []
    d = _design()
    d["tendencies"] += "@ [Nouman]: 1. a; 2. b; 3. c\n"
    assert validate_design(d, candidates=CANDIDATES) == ["name_not_candidate: Nouman"]
    d = _design()
    d["rationale"] = "One sentence only."
    assert validate_design(d, candidates=CANDIDATES) == ["rationale_sentences: 1"]
    d["rationale"] = "One. Two. Three. Four. Five."
    assert validate_design(d, candidates=CANDIDATES) == ["rationale_sentences: 5"]
    d = _design()
    d["rationale"] = "Dr. Smith e.g. says so. Then it ends."
    assert validate_design(d, candidates=CANDIDATES) == []  # abbreviations do not end sentences
    d = _design()
    d["catalysts"] = ["word " * 400]
    assert [v.split(":")[0] for v in validate_design(d, candidates=CANDIDATES)] == ["design_too_long"]
    d = _design()
    d["tendencies"] = "@ [Marcus]: 1. a; 2. b; 3. c"
    assert validate_design(d, candidates=CANDIDATES) == ["tendency_characters: 1"]
    d = _design()
    d["tendencies"] = d["tendencies"].replace("@ [Tomasz]", "[Tomasz]")
    assert validate_design(d, candidates=CANDIDATES)[0].startswith("tendency_line_format: ")


def test_validate_scene():
    assert validate_scene(_scene(), candidates=CANDIDATES, design_names=["Marcus", "Elena", "Tomasz"]) == []
    s = _scene()
    s["supporting"][1]["name"] = "Nouman"
    v = validate_scene(s, candidates=CANDIDATES)
    assert "name_not_candidate: Nouman" in v
    assert "about_others_missing: Marcus -> Nouman" in v and "about_others_unknown: Marcus -> Tomasz" in v
    s = _scene()
    s["supporting"][0]["about_others"] = s["supporting"][0]["about_others"][:1]
    assert validate_scene(s, candidates=CANDIDATES) == ["about_others_missing: Elena -> Tomasz"]
    s = _scene()
    s["protagonist"]["about_others"].append({"name": "Sofia", "relation": "An old friend."})
    assert validate_scene(s, candidates=CANDIDATES) == ["about_others_unknown: Marcus -> Sofia"]
    s = _scene()
    s["supporting"][1] = _char("Elena", {"Marcus": "x", "Elena": "y"})
    assert "duplicate_character: Elena" in validate_scene(s, candidates=CANDIDATES)
    s = _scene()
    s["protagonist"]["about_self"]["background"] = "He joined in 2019. He led the redesign. He hates meetings."
    s["supporting"][0]["about_self"]["descriptors"] = ["sharp", "Sharp", "driven", "tired"]
    assert validate_scene(s, candidates=CANDIDATES) == ["background_sentences: Marcus: 3", "descriptors: Elena: 3"]
    assert validate_scene(_scene(), candidates=CANDIDATES, design_names=["Marcus", "Elena", "Sofia"]) == [
        "design_mismatch: Sofia, Tomasz"]


# ---------------------------------------------------------------------------------------------
# transcripts
# ---------------------------------------------------------------------------------------------

def test_render_and_parse_roundtrip():
    turn = {"speaker": "Elena", "thought": " [He is stalling.] ", "action": "(crosses her arms)",
            "speech": "So what\n now?"}
    line = render_turn(turn)
    assert line == "Elena: [He is stalling.] (crosses her arms) So what now?"
    assert render_turn({"speaker": "Elena", "thought": "a", "action": "b", "speech": "c"}) == "Elena: [a] (b) c"
    assert parse_transcript(line) == [{"speaker": "Elena", "thought": "He is stalling.", "action": "crosses her arms",
                                       "speech": "So what now?"}]
    mixed = parse_transcript("Tomasz: (sits) Well. [Careful.] Let's see (smiles) [Not yet.] ok\nnarration here\n\n")
    assert mixed == [{"speaker": "Tomasz", "thought": "Careful. Not yet.", "action": "sits smiles",
                      "speech": "Well. Let's see ok"},
                     {"speaker": None, "raw": "narration here"}]
    turns = _turns()
    assert len(turns) == 12 and all(t["speaker"] for t in turns)
    assert parse_transcript(render_transcript(turns)) == turns


def test_good_conversation_passes_as_text_and_turns():
    assert _check(GOOD_TRANSCRIPT) == []
    assert _check(_turns()) == []


def _variant(edit) -> list[dict]:
    turns = _turns()
    edit(turns)
    return turns


def _filler(speaker: str, k: int) -> dict:
    return {"speaker": speaker, "thought": f"Thought number {k}.", "action": "nods", "speech": f"Point {k}."}


@pytest.mark.parametrize("make, expected", [
    (lambda: "Here is the dialogue:\n" + GOOD_TRANSCRIPT, ["preamble"]),
    (lambda: "**Elena**: Hello.\n" + GOOD_TRANSCRIPT, ["preamble"]),
    (lambda: GOOD_TRANSCRIPT.replace("\nElena: (taps", "\n---\nElena: (taps"), ["unparsed_line: 4"]),
    (lambda: _variant(lambda t: t.pop(1)), ["turn_count: 11"]),
    (lambda: _variant(lambda t: t.__setitem__(slice(10, 10), [_filler("Elena", 1), _filler("Marcus", 2)] * 4)), []),
    (lambda: _variant(lambda t: t.__setitem__(slice(10, 10), [_filler("Elena", 1), _filler("Marcus", 2)] * 4
                                              + [_filler("Tomasz", 3)])), ["turn_count: 21"]),
    (lambda: _variant(lambda t: t[0].update(speaker="Marcus")), ["opener: Marcus"]),
    (lambda: _variant(lambda t: t[-1].update(speaker="Tomasz")), ["closer: Tomasz"]),
    (lambda: _variant(lambda t: t[5].update(speaker="Priya")), ["participant: Priya"]),
    (lambda: _variant(lambda t: t[3].update(speaker="Marcus")), ["consecutive_turns: 4", "consecutive_turns: 5"]),
    (lambda: _variant(lambda t: t[10].update(speech="")), ["missing_speech: 11"]),
    (lambda: _variant(lambda t: [t[i].update(thought="") for i in (5, 8)]), ["no_thought: Tomasz"]),
    (lambda: _variant(lambda t: [t[i].update(action="") for i in (1, 5, 8)]), ["no_action: Tomasz"]),
    (lambda: _variant(lambda t: [t[i].update(thought="") for i in (2, 4, 7, 9)]), ["few_thoughts: 4/12"]),
    (lambda: _variant(lambda t: t[6].update(speech=t[6]["speech"] + " Textbook self-serving bias, that.")),
     ["pattern_named: Self-serving bias @ 7"]),
    (lambda: _variant(lambda t: t[2].update(thought="Her ultimate_attribution  ERROR again.")),
     ["pattern_named: Ultimate attribution error @ 3"]),
    (lambda: _variant(lambda t: t[2].update(action="mentally notes the self serving bias")),
     ["pattern_named: Self-serving bias @ 3"]),
])
def test_conversation_violations(make, expected):
    transcript = make()
    assert _check(transcript) == expected
    if isinstance(transcript, list):  # the text path agrees with the list path
        assert _check(render_transcript(transcript)) == expected


def test_conversation_word_parts_are_not_pattern_names():
    turns = _variant(lambda t: t[6].update(speech=t[6]["speech"] + " My self-serving biases? Attribution, sure."))
    assert _check(turns) == []


def test_conversation_bounds_are_configurable():
    assert _check("") == ["turn_count: 0"]
    assert validate_conversation(GOOD_TRANSCRIPT, protagonist="Marcus", supporting=["Elena", "Tomasz"],
                                 pattern_names=[], min_turns=13) == ["turn_count: 12"]


# ---------------------------------------------------------------------------------------------
# checklists
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("question", [
    "Does Marcus attribute the launch failure to external factors?",
    "Did Elena point out that engineering's misses are explained differently from marketing's?",
    "Is Marcus quick to cite the timeline when his team's work is questioned?",
    "Has Tomasz redirected the discussion to the data at least once?",
])
def test_checklist_screen_passes_neutral_questions(question):
    assert checklist_screen(question) is None


@pytest.mark.parametrize("question, reason", [
    ("Is Nouman likeable?", "evaluative: likeable"),
    ("Does Nouman show empathy?", "evaluative: empathy"),
    ("Does Marcus act in a way he shouldn't?", "evaluative: should"),
    ("Is Elena's reaction Reasonable?", "evaluative: reasonable"),
    ("Marcus blames the timeline.", "not_yes_no"),
    ("Marcus blames the timeline?", "not_yes_no"),
    ("Why does Marcus blame the timeline?", "not_yes_no"),
    ("Does Marcus blame the timeline", "not_yes_no"),
    ("Does Marcus " + "really " * 40 + "blame the timeline?", "too_long"),
    ("   ", "empty"),
])
def test_checklist_screen_rejects(question, reason):
    assert checklist_screen(question) == reason


# ---------------------------------------------------------------------------------------------
# role-play records
# ---------------------------------------------------------------------------------------------

def _records() -> dict[str, dict]:
    s = _scene()
    recs = roleplay_samples(_turns(), [s["protagonist"], *s["supporting"]], s["scenario"])
    return {r["character"]: r for r in recs}


def test_roleplay_shape():
    recs = _records()
    assert set(recs) == {"Marcus", "Elena", "Tomasz"}
    for name, rec in recs.items():
        msgs = rec["messages"]
        assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith(f"You are {name}. ==About {name}==\n")
        roles = [m["role"] for m in msgs[1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2)  # alternating, ends on assistant
    sys_prompt = recs["Marcus"]["messages"][0]["content"]
    assert sys_prompt == (
        "You are Marcus. ==About Marcus==\n"
        "analytical, proud, guarded, quick-witted. Marcus has worked at the company for six years. "
        "Motivation: Keep the team's reputation intact.\n"
        "==About others==\n"
        "- Elena: The marketing lead who oversold the release.\n"
        "- Tomasz: A manager who avoids conflict.\n"
        "==Scenario==\n"
        "A post-mortem meeting after a product launch missed its retention targets.\n"
        "Speak as Marcus: inner thoughts in [square brackets], actions in (parentheses), speech without brackets.")
    marcus = recs["Marcus"]["messages"]
    assert marcus[1]["content"] == ("Elena: (slides the churn report across the table) Forty percent of the trial users "
                                    "dropped off in the first week, Marcus. They couldn't find the export button.\n"
                                    "Tomasz: (rubs his temples) Let's keep this about the numbers. Marcus, what "
                                    "happened on your side?")
    assert marcus[2]["content"].startswith("[Marketing promised a feature set we never signed off on.] (leans back")
    assert len([m for m in marcus if m["role"] == "assistant"]) == 5
    elena = recs["Elena"]["messages"]
    assert elena[1] == {"role": "user", "content": "(The scene begins.)"}
    assert elena[-1]["content"].startswith("(quietly) And the tutorial")  # Marcus's last turn dropped


def test_roleplay_hides_other_minds_and_keeps_own():
    turns = _turns()
    recs = _records()
    for name, rec in recs.items():
        own_thoughts = [t["thought"] for t in turns if t["speaker"] == name and t["thought"]]
        other_thoughts = [t["thought"] for t in turns if t["speaker"] != name and t["thought"]]
        users = [m["content"] for m in rec["messages"] if m["role"] == "user"]
        assistants = "\n".join(m["content"] for m in rec["messages"] if m["role"] == "assistant")
        for thought in other_thoughts:
            assert all(thought not in u for u in users), (name, thought)
        assert all("[" not in u for u in users)
        for thought in own_thoughts:
            assert f"[{thought}]" in assistants
    # a thought smuggled into another character's speech field is hidden too
    smuggled = [{"speaker": "Elena", "thought": "", "action": "", "speech": "[secret plan] Hello."},
                {"speaker": "Marcus", "thought": "Hm.", "action": "waves", "speech": "Hi."}]
    s = _scene()
    rec = roleplay_samples(smuggled, [s["protagonist"]], s["scenario"])[0]
    assert rec["messages"][1] == {"role": "user", "content": "Elena: Hello."}


def test_roleplay_consecutive_own_turns_and_silent_characters():
    s = _scene()
    turns = [{"speaker": "Marcus", "thought": "a", "action": "b", "speech": "c"},
             {"speaker": "Marcus", "thought": "", "action": "", "speech": "d"},
             {"speaker": "Elena", "thought": "only a thought", "action": "", "speech": ""},
             {"speaker": "Marcus", "thought": "", "action": "", "speech": "e"}]
    recs = roleplay_samples(turns, [s["protagonist"], *s["supporting"]], s["scenario"])
    assert [r["character"] for r in recs] == ["Marcus", "Elena"]  # Tomasz never speaks
    marcus = recs[0]["messages"]
    assert [m["role"] for m in marcus] == ["system", "user", "assistant"]
    assert marcus[2]["content"] == "[a] (b) c\nd\ne"
    assert recs[1]["messages"][-1] == {"role": "assistant", "content": "[only a thought]"}
