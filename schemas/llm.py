"""Pydantic models for what the LLM stages ask for and accept.

Each artifact's output model doubles as the JSON schema the engines constrain decoding with;
``validate_output`` then applies the checks a schema cannot express (word counts), so a reply
that parses but breaks them is a schema violation, retried like any other failure.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

QaType = Literal["action", "inner_state", "social_reasoning"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class QualityLabel(_Out):
    quality: Literal["high", "medium", "low"]
    harmful: Literal["yes", "no"]
    reason: str = Field(max_length=400)


class Persona(_Out):
    persona: str = Field(min_length=1, max_length=1000)


class Profile(_Out):
    profile: str = Field(min_length=1, max_length=3500)


class Story(_Out):
    summary: str = Field(min_length=1, max_length=300)
    narrative: str = Field(min_length=1, max_length=1200)


class Stories(_Out):
    stories: list[Story] = Field(min_length=1, max_length=8)


class WritingStyle(_Out):
    style: str = Field(min_length=1, max_length=800)


class Scenario(_Out):
    background: str = Field(min_length=1, max_length=800)
    characters: list[str] = Field(min_length=1, max_length=8)
    plots: str = Field(min_length=1, max_length=1200)


class QA(_Out):
    type: QaType
    scenario: str = Field(min_length=1, max_length=800)
    question: str = Field(min_length=1, max_length=300)
    answer: str = Field(min_length=1, max_length=600)


class SocialQA(_Out):
    items: list[QA] = Field(min_length=1, max_length=6)


class Distractor(_Out):
    """A wrong-but-plausible MCQ option, written without seeing the user's own behaviour."""

    text: str = Field(min_length=1, max_length=2500)


METRICS = ("hallucination", "coverage", "conciseness", "relevance", "fidelity", "novelty", "leakage", "overall")


class Judgement(_Out):
    """Scores 1-10 (10 = best: for hallucination and leakage, 10 means none)."""

    hallucination: int | None = Field(None, ge=1, le=10)
    coverage: int | None = Field(None, ge=1, le=10)
    conciseness: int | None = Field(None, ge=1, le=10)
    relevance: int | None = Field(None, ge=1, le=10)
    fidelity: int | None = Field(None, ge=1, le=10)
    novelty: int | None = Field(None, ge=1, le=10)
    leakage: int | None = Field(None, ge=1, le=10)
    overall: int = Field(ge=1, le=10)
    reasons: str = Field(default="", max_length=600)


OUTPUT_MODELS: dict[str, type[_Out]] = {
    "quality": QualityLabel,
    "persona": Persona,
    "profile": Profile,
    "stories": Stories,
    "writing_style": WritingStyle,
    "scenario": Scenario,
    "social_qa": SocialQA,
    "distractor": Distractor,
}

# Which judge metrics each artifact is scored on (the others are left out of its judge schema).
JUDGE_METRICS: dict[str, tuple[str, ...]] = {
    "persona": ("hallucination", "coverage", "conciseness", "relevance", "overall"),
    "profile": ("hallucination", "coverage", "relevance", "fidelity", "overall"),
    "stories": ("hallucination", "coverage", "fidelity", "overall"),
    "writing_style": ("hallucination", "coverage", "conciseness", "overall"),
    "scenario": ("hallucination", "relevance", "fidelity", "novelty", "overall"),
    "social_qa": ("hallucination", "relevance", "fidelity", "leakage", "overall"),
}

PER_USER = ("persona", "profile", "stories", "writing_style")
PER_RECORD = ("scenario", "social_qa")


def judge_schema(artifact: str) -> dict:
    metrics = JUDGE_METRICS[artifact]
    props = {m: {"type": "integer", "minimum": 1, "maximum": 10} for m in metrics}
    props["reasons"] = {"type": "string"}
    return {"type": "object", "properties": props, "required": list(metrics) + ["reasons"]}


def _without_lengths(node):
    """Length bounds stay in validation: llama.cpp's schema-to-grammar unrolls maxLength into one
    nested rule per character, which for real limits is a grammar too deep to load."""
    if isinstance(node, dict):
        return {k: _without_lengths(v) for k, v in node.items() if k not in ("maxLength", "minLength")}
    if isinstance(node, list):
        return [_without_lengths(v) for v in node]
    return node


def output_schema(artifact: str) -> dict:
    """The JSON schema engines constrain decoding with."""
    if artifact.startswith("judge_"):
        return judge_schema(artifact[len("judge_"):])
    return _without_lengths(OUTPUT_MODELS[artifact].model_json_schema())


def repair_truncated(text: str) -> str:
    """A reply cut off by the token budget inside its last string (a judge's free-text reasons):
    close the string and the object. Anything else stays as it is (and fails to parse)."""
    t = text.rstrip()
    in_str, esc = False, False
    for ch in t:
        if esc:
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == '"':
            in_str = not in_str
    if in_str:
        t += '"'
    return t + "}" * max(0, t.count("{") - t.count("}"))


def _words(s: str) -> int:
    return len(s.split())


def validate_output(artifact: str, text: str, limits: dict[str, int]) -> tuple[dict | None, str | None]:
    """(parsed, None) or (None, why it is rejected). ``limits`` holds the word-count bounds."""
    try:
        data = json.loads(text, strict=False)  # small models put raw newlines inside strings
    except (json.JSONDecodeError, TypeError) as exc:
        return None, f"malformed JSON: {exc}"
    if not isinstance(data, dict):
        return None, "malformed JSON: not an object"
    try:
        if artifact.startswith("judge_"):
            obj = Judgement.model_validate(data)
            missing = [m for m in JUDGE_METRICS[artifact[len("judge_"):]] if getattr(obj, m) is None]
            if missing:
                return None, f"schema violation: missing scores {missing}"
            return obj.model_dump(exclude_none=True), None
        obj = OUTPUT_MODELS[artifact].model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        return None, f"schema violation: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    if artifact == "persona" and _words(obj.persona) >= limits.get("persona_max_words", 100):
        return None, f"schema violation: persona has {_words(obj.persona)} words (limit {limits['persona_max_words']})"
    if artifact == "profile":
        n = _words(obj.profile)
        lo, hi = limits.get("profile_min_words", 100), limits.get("profile_max_words", 400)
        if not lo <= n <= hi:
            return None, f"schema violation: profile has {n} words (expected {lo}-{hi})"
    return obj.model_dump(), None
