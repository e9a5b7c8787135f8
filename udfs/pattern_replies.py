"""The second recipe's replies: the JSON schema each request is decoded with, and the checks a
reply must pass before the ledger holds it as ``ok`` (a failed check is a failed attempt, retried
with another seed up to ``llm.max_attempts``, then a dead letter with the validator's reasons).

Schemas are per request, not per artifact: a scene's names are an enum of its candidate names, a
conversation's speakers an enum of its characters (with the planned turn order, a fixed speaker per
position), a checklist verdict one answer per item in order. The deterministic validators
(``lewin.udfs.patterns``) still run on every reply: an engine that does not enforce the schema (an
OpenAI-compatible server may not) gets no pass.
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from lewin.schemas.llm import without_lengths
from lewin.schemas.patterns import OUTPUT_MODELS
from lewin.udfs import patterns as P

ARTIFACTS = tuple(OUTPUT_MODELS)
_SUBJECT = re.compile(r"\bX\b")


def _base(artifact: str) -> dict:
    return without_lengths(OUTPUT_MODELS[artifact].model_json_schema())


def _string() -> dict:
    return {"type": "string"}


def _enum(values: list) -> dict:
    return {"type": "string", "enum": list(values)}


def _character(names: list[str]) -> dict:
    about_self = {"type": "object", "properties": {
        "descriptors": {"type": "array", "items": _string(), "minItems": 4, "maxItems": 6},
        "background": _string(), "motivation": _string()}, "required": ["descriptors", "background", "motivation"]}
    other = {"type": "object", "properties": {"name": _enum(names), "relation": _string()}, "required": ["name", "relation"]}
    return {"type": "object", "properties": {"name": _enum(names), "about_self": about_self,
                                              "about_others": {"type": "array", "items": other, "minItems": 1, "maxItems": 4}},
            "required": ["name", "about_self", "about_others"]}


def _turn(speakers: list[str], tight: bool = False) -> dict:
    props = {"speaker": _enum(speakers) if len(speakers) > 1 else {"type": "string", "const": speakers[0]},
             "thought": _string(), "action": _string(), "speech": _string()}
    if tight:
        props.update(thought=_text(_words(2, 14)), action=_text(_words(1, 8, first=_w, rest=_w)),
                     speech=_text(_sentences(1, 2)))
    return {"type": "object", "properties": props, "required": ["speaker", "thought", "action", "speech"]}


# --- tight schemas (``patterns.tight_schemas``; the demo profile's) ----------------------------------
# Word-bounded regular expressions for the free-text fields: a model too small to stop on its own
# (a 135M CPU model repeats a phrase until its token budget) is made to close each field after a
# bounded number of words, in the forms the validators check (2-4 sentences, the @-lines). Words,
# not characters: llama.cpp's grammar nests one rule per repetition, so bounds stay small. Literal
# punctuation is written as a character class ("[.]"): llama-cpp-python's converter copies "\." into
# a GBNF literal, which llama.cpp then refuses as an unknown escape.
# a word: at most 15 letters (a tiny model can otherwise spell one word until its budget runs out)
_W = r"[A-Za-z][A-Za-z'-]{0,14}"
_w = r"[a-z][a-z'-]{0,14}"


def _words(lo: int, hi: int, first: str = _W, rest: str = _W) -> str:
    return rf"{first},?( {rest},?){{{lo},{hi}}}"


def _sentences(lo: int, hi: int) -> str:
    one = _words(4, 18, first=r"[A-Z][a-z'-]{0,14}") + r"[.!?]"
    return one if (lo, hi) == (1, 1) else rf"{one}( {one}){{{lo - 1},{hi - 1}}}"


def _alt(names: list[str]) -> str:
    return "(" + "|".join(re.escape(n) for n in names) + ")"


def _text(regex: str) -> dict:
    return {"type": "string", "pattern": f"^{regex}$"}


# A tight scene's four descriptors, one from each vocabulary: disjoint, so the four are distinct
# (a small model otherwise repeats one adjective, which "4+ distinct descriptors" refuses).
DESCRIPTOR_VOCABULARIES = (
    ("calm", "anxious", "cheerful", "moody", "patient", "restless", "steady", "intense"),
    ("outgoing", "reserved", "warm", "blunt", "diplomatic", "guarded", "talkative", "quiet"),
    ("meticulous", "improvising", "ambitious", "cautious", "practical", "idealistic", "stubborn", "flexible"),
    ("optimistic", "sceptical", "proud", "humble", "competitive", "loyal", "curious", "traditional"),
)


def _tight(artifact: str, context: dict) -> dict | None:
    """The tight schema of ``artifact`` (None: the regular one is tight enough)."""
    if artifact == "bundle_check":
        return {"type": "object", "properties": {"coherent": {"type": "boolean"}, "reason": _text(_words(3, 20))},
                "required": ["coherent", "reason"]}
    if artifact == "scene_design":
        tendency = _words(1, 8, first=_w, rest=_w)
        line = lambda who: rf"@ \[{who}\]: 1[.] {tendency}; 2[.] {tendency}; 3[.] {tendency}"  # noqa: E731
        cast = context.get("cast") or []
        if cast:  # the cast Lewin drew: one line per character, in order
            lines = r"\\n".join(line(re.escape(n)) for n in cast)
        else:
            one = line(_alt(context["candidate_names"]))
            lines = rf"{one}(\\n{one}){{1,2}}"
        return {"type": "object", "properties": {
            "rationale": _text(_sentences(2, 3)),
            "catalysts": {"type": "array", "items": _text(_words(1, 10)), "minItems": 1, "maxItems": 3},
            "tendencies": _text(lines)}, "required": ["rationale", "catalysts", "tendencies"]}
    if artifact == "scene":
        names, _ = P.parse_tendencies(context["design"]["tendencies"])
        cast = list(names)
        if len(cast) < 2:
            return None

        def character(name: str) -> dict:
            others = [n for n in cast if n != name]
            about_self = {"type": "object", "properties": {
                "descriptors": {"type": "array", "prefixItems": [_enum(v) for v in DESCRIPTOR_VOCABULARIES]},
                "background": _text(_sentences(1, 1)), "motivation": _text(_words(2, 14))},
                "required": ["descriptors", "background", "motivation"]}
            other = lambda n: {"type": "object", "properties": {"name": {"type": "string", "const": n},  # noqa: E731
                                                               "relation": _text(_words(2, 14))}, "required": ["name", "relation"]}
            return {"type": "object", "properties": {"name": {"type": "string", "const": name}, "about_self": about_self,
                                                      "about_others": {"type": "array", "prefixItems": [other(n) for n in others]}},
                    "required": ["name", "about_self", "about_others"]}

        return {"type": "object", "properties": {
            "scenario": _text(_sentences(2, 4)), "protagonist": character(cast[0]),
            "supporting": {"type": "array", "prefixItems": [character(n) for n in cast[1:]]}},
            "required": ["scenario", "protagonist", "supporting"]}
    if artifact == "conversation":
        return None  # tightened in _turn
    if artifact == "checklist":
        n = int(context["n"])
        who = "X" if context["level"] == "pattern" else _alt(context["characters"])
        question = {"type": "string", "pattern": rf"^Does {who} {_words(3, 14, first=_w, rest=_w)}[?]$"}
        return {"type": "object", "properties": {"questions": {"type": "array", "items": question, "minItems": n,
                                                               "maxItems": n}}, "required": ["questions"]}
    if artifact == "holistic_judge":
        return {"type": "object", "properties": {"anthropomorphism": {"type": "integer", "enum": list(range(1, 11))},
                                                  "reasons": _text(_words(1, 12))}, "required": ["anthropomorphism", "reasons"]}
    return None


def reply_schema(artifact: str, context: dict) -> dict:
    """The JSON schema ``artifact``'s request for ``context`` is decoded with (with
    ``context["tight"]``, word-bounded text fields: ``_tight``)."""
    tight = bool(context.get("tight"))
    if tight:
        schema = _tight(artifact, context)
        if schema is not None:
            return schema
    if artifact == "scene":
        names = list(context["candidate_names"])
        return {"type": "object", "properties": {
            "scenario": _string(), "protagonist": _character(names),
            "supporting": {"type": "array", "items": _character(names), "minItems": 1, "maxItems": 4}},
            "required": ["scenario", "protagonist", "supporting"]}
    if artifact == "conversation":
        names = [context["protagonist"]["name"]] + [c["name"] for c in context["supporting"]]
        plan = context.get("speakers") or []
        if plan:  # the planned order: one fixed speaker per position (a tuple)
            turns = {"type": "array", "prefixItems": [_turn([s], tight) for s in plan]}
        else:  # free order: the opener among the supporting characters where the engine reads prefixItems
            turns = {"type": "array", "prefixItems": [_turn(names[1:], tight)], "items": _turn(names, tight),
                     "minItems": context["min_turns"], "maxItems": context["max_turns"]}
        return {"type": "object", "properties": {"turns": turns}, "required": ["turns"]}
    if artifact == "checklist_judge":
        n = len(context["items"])
        answer = lambda i: {"type": "object", "properties": {  # noqa: E731
            "item": {"type": "integer", "const": i}, "answer": _enum(["yes", "no"]),
            "evidence_turns": {"type": "array", "items": {"type": "integer", "enum": list(range(1, len(context["turns"]) + 1))},
                               "maxItems": 3 if tight else 8}},
            "required": ["item", "answer", "evidence_turns"]}
        return {"type": "object", "properties": {"answers": {"type": "array", "prefixItems": [answer(i) for i in range(1, n + 1)]}},
                "required": ["answers"]}
    if artifact == "holistic_judge":
        # an enum, not minimum/maximum: llama.cpp's grammar ignores integer bounds
        return {"type": "object", "properties": {"anthropomorphism": {"type": "integer", "enum": list(range(1, 11))},
                                                  "reasons": _string()}, "required": ["anthropomorphism", "reasons"]}
    if artifact == "checklist":
        n = int(context["n"])
        return {"type": "object", "properties": {"questions": {"type": "array", "items": _string(), "minItems": n,
                                                               "maxItems": n}}, "required": ["questions"]}
    return _base(artifact)


def _fail(violations: list[str]) -> tuple[None, str]:
    return None, "validation: " + "; ".join(violations[:12])


def validate(artifact: str, text: str, context: dict) -> tuple[dict | None, str | None]:
    """(parsed reply, None) or (None, why it fails): the model's checks, then the recipe's."""
    try:
        data = json.loads(text, strict=False)
    except (json.JSONDecodeError, TypeError) as exc:
        return None, f"malformed JSON: {exc}"
    if not isinstance(data, dict):
        return None, "malformed JSON: not an object"
    try:
        obj = OUTPUT_MODELS[artifact].model_validate(data).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        return None, f"schema violation: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    if artifact == "pattern_summary":
        try:
            record = P.parse_pattern_markdown(obj["markdown"], name=context["name"], type=context["type"],
                                              references=context["references"])
        except P.PatternLibraryError as exc:
            return _fail([f"summary: {exc}"])
        return dict(obj, record=record), None
    if artifact == "scene_design":
        bad = P.validate_design(obj, candidates=context["candidate_names"])
        return (obj, None) if not bad else _fail(bad)
    if artifact == "scene":
        names, _ = P.parse_tendencies(context["design"]["tendencies"])
        bad = P.validate_scene(obj, candidates=context["candidate_names"], design_names=list(names))
        return (obj, None) if not bad else _fail(bad)
    if artifact == "conversation":
        plan = context.get("speakers") or []
        bad = P.validate_conversation(obj["turns"], protagonist=context["protagonist"]["name"],
                                      supporting=[c["name"] for c in context["supporting"]],
                                      pattern_names=context["pattern_names"], min_turns=context["min_turns"],
                                      max_turns=context["max_turns"])
        if plan and [t["speaker"] for t in obj["turns"]] != plan:
            bad.append("turn_plan: the speakers differ from the planned order")
        return (dict(obj, transcript=P.render_transcript(obj["turns"])), None) if not bad else _fail(bad)
    if artifact == "checklist":
        screens = []
        for q in obj["questions"]:
            why = P.checklist_screen(q)
            if why is None and context["level"] == "pattern" and not _SUBJECT.search(q):
                why = "no_subject: the question does not name X"
            screens.append(why)
        if all(s is not None for s in screens):
            return _fail([f"no usable item ({'; '.join(sorted(set(s.split(':')[0] for s in screens)))})"])
        return dict(obj, screens=screens), None
    if artifact == "checklist_judge":
        n, n_turns = len(context["items"]), len(context["turns"])
        got = [a["item"] for a in obj["answers"]]
        bad = [] if got == list(range(1, n + 1)) else [f"items: answered {got}, expected 1..{n} in order"]
        for a in obj["answers"]:
            out = [t for t in a["evidence_turns"] if not 1 <= t <= n_turns]
            if out:
                bad.append(f"evidence_turns: item {a['item']} cites turns {out} outside 1..{n_turns}")
        return (obj, None) if not bad else _fail(bad)
    return obj, None


def plan_speakers(protagonist: str, supporting: list[str], min_turns: int, max_turns: int, *, seed: int) -> list[str]:
    """The planned turn order (``patterns.turn_plan: planned``): a seeded length in
    [min_turns, max_turns], opened by a supporting character, closed by the protagonist, nobody
    speaking twice in a row, the protagonist every other turn and the supporting characters in a
    seeded rotation. With one supporting character the length is even (strict alternation)."""
    import random

    if not supporting:
        raise ValueError("a conversation needs at least one supporting character")
    rng = random.Random(seed)
    n = rng.randint(min_turns, max_turns)
    if len(supporting) == 1 and n % 2:
        n = n + 1 if n + 1 <= max_turns else n - 1
    if n < 2:
        raise ValueError(f"cannot plan {n} turns opened by a supporting character and closed by the protagonist")
    rotation = supporting[:]
    rng.shuffle(rotation)
    out: list[str] = []
    k = 0
    # from the end: protagonist last, then alternate; an odd length puts two supporting turns
    # (different characters) together at the start
    for i in range(n):
        if (n - 1 - i) % 2 == 0:
            out.append(protagonist)
        else:
            out.append(rotation[k % len(rotation)])
            k += 1
    if out[0] == protagonist:  # odd n: the opener must be supporting; a second supporting voice opens
        out[0] = rotation[k % len(rotation)] if rotation[k % len(rotation)] != out[1] else rotation[(k + 1) % len(rotation)]
    return out
