"""Pydantic models for what the LLM stages ask for and accept.

Each artifact's output model doubles as the JSON schema the engines constrain decoding with;
``validate_output`` then applies the checks a schema cannot express (word counts), so a reply
that parses but breaks them is a schema violation, retried like any other failure.
"""

from __future__ import annotations

import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

QaType = Literal["action", "inner_state", "social_reasoning"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


HarmKind = Literal["none", "violence", "pornography", "privacy violation"]

# Free-text fields nobody downstream reads at length: short, because at the paper's scale every
# generated token is paid for (5.5 M labels, millions of judge replies). The prompts ask for
# at most 20 and 15 words; a judge writes its reasons after its scores, so they cannot change them.
LABEL_REASON_MAX_CHARS = 200
JUDGE_REASONS_MAX_CHARS = 200
# the notes template asks for at most this many words
NOTES_MAX_WORDS = 150


class QualityLabel(_Out):
    """The paper's two labels (§2.1): quality high/medium/low, and harmful yes/no, asked as which
    harm the post contains (its three kinds, or none) and derived: harmful = harm != "none"."""

    quality: Literal["high", "medium", "low"]
    harm: HarmKind
    reason: str = Field(max_length=LABEL_REASON_MAX_CHARS)

    @property
    def harmful(self) -> str:
        return "no" if self.harm == "none" else "yes"


class CleanRewrite(_Out):
    """§2.1's LLM cleaning: the post with HTML, URLs, formatting noise and non-English passages removed."""

    text: str = Field(min_length=1, max_length=6000)


class UserNotes(_Out):
    """A chronological chunk of a user's history (or of earlier notes) distilled into notes."""

    notes: str = Field(min_length=1, max_length=2500)


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

    text: str = Field(min_length=1, max_length=3500)  # a profile distractor runs to 400 words, as Profile


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
    reasons: str = Field(default="", max_length=JUDGE_REASONS_MAX_CHARS)


OUTPUT_MODELS: dict[str, type[_Out]] = {
    "quality": QualityLabel,
    "clean_rewrite": CleanRewrite,
    "user_notes": UserNotes,
    "persona": Persona,
    "profile": Profile,
    "stories": Stories,
    "writing_style": WritingStyle,
    "scenario": Scenario,
    "social_qa": SocialQA,
    "distractor": Distractor,
}

# The judge's metrics in the words of the paper's appendix A.3, quoted in the judge prompt (ASCII dashes).
METRIC_DEFINITIONS: dict[str, str] = {
    "hallucination": "All generated content must be faithful to the source text. Key details, events, and "
    "characterizations should be explicitly supported by the original user data or be reasonable, justifiable "
    "inferences. Minor details may be inferred if they do not alter the core narrative. This metric evaluates whether "
    "personas, profiles, stories, scenarios, and QA samples remain grounded in the main story and intent of the "
    "original records.",
    "coverage": "This metric assesses how well the generated content - whether a persona, profile, story, scenario, or "
    "QA sample - captures the salient, meaningful, and unique aspects of the original user data. Good coverage "
    "requires that the most important and distinctive features from the source are distilled and included, with "
    "minimal omission of critical information.",
    "conciseness": "This metric evaluates whether the generated persona or profile are succinct, cohesive, and free "
    "from redundancy or unnecessary repetition.",
    "relevance": "This metric assesses whether the generated persona or profile focus exclusively on user-relevant "
    "information, excluding generic, promotional, off-topic material from the original data.",
    "fidelity": "This metric evaluates whether generated scenarios are vivid, detailed, and coherent rather than "
    "generic or superficial. It also assesses the logical connection and complementarity among scenario, question, "
    "and answer, as well as the depth of contents and the preservation of emotional or personal resonance.",
    "novelty": "This metric assesses how interesting, distinctive, and memorable the generated content is. It measures "
    "whether QA samples, profiles, stories, and scenarios highlight the user's unique personality, experiences, and "
    "perspectives, evoking specific personal or social resonance rather than being formulaic or generic.",
    "leakage": "This metric measures the extent to which the answer is directly revealed or obvious from the scenario "
    "description. Higher scores indicate that the answer requires genuine social reasoning or inference, while lower "
    "scores suggest that the answer can be simply copied or restated from the scenario with minimal reasoning.",
    "overall": "This metric provides a holistic assessment of the overall quality of the generated content.",
}

# Which metrics score which artifact: A.3 names each metric's subjects, and this is that reading.
#   hallucination: "personas, profiles, stories, scenarios, and QA samples" (and "all generated content")
#   coverage:      "a persona, profile, story, scenario, or QA sample"
#   conciseness, relevance: "the generated persona or profile"
#   fidelity:      "scenarios" and "scenario, question, and answer"
#   novelty:       "QA samples, profiles, stories, and scenarios"
#   leakage:       the QA answer against its scenario
#   overall:       every artifact
# A.3 names no metric for the writing style beyond "all generated content": hallucination + overall.
JUDGE_METRICS: dict[str, tuple[str, ...]] = {
    "persona": ("hallucination", "coverage", "conciseness", "relevance", "overall"),
    "profile": ("hallucination", "coverage", "conciseness", "relevance", "novelty", "overall"),
    "stories": ("hallucination", "coverage", "novelty", "overall"),
    "writing_style": ("hallucination", "overall"),
    "scenario": ("hallucination", "coverage", "fidelity", "novelty", "overall"),
    "social_qa": ("hallucination", "coverage", "fidelity", "novelty", "leakage", "overall"),
}

PER_USER = ("persona", "profile", "stories", "writing_style")
PER_RECORD = ("scenario", "social_qa")
# Artifacts whose reply is a list judged item by item: gold keeps items, not lists.
PER_ITEM: dict[str, str] = {"stories": "stories", "social_qa": "items"}


# Reply budgets (max_tokens) derived from what a compliant reply may hold: its word limit, else
# its schema's character bounds, at generous English BPE rates so a compliant reply always fits
# (a reply that hits its budget is a failure, not a short answer), plus the JSON around it.
TOKENS_PER_WORD = 1.5
CHARS_PER_TOKEN = 3.5
JSON_TOKENS_PER_FIELD = 8
SCORE_TOKENS = 6  # "metric": 10,


def _chars(model: type[BaseModel], name: str) -> int:
    return next(m.max_length for m in model.model_fields[name].metadata if hasattr(m, "max_length"))


def _text_tokens(chars: int = 0, words: int = 0) -> int:
    return math.ceil(words * TOKENS_PER_WORD + chars / CHARS_PER_TOKEN) + JSON_TOKENS_PER_FIELD


def reply_budgets(persona_max_words: int, profile_max_words: int, max_stories: int, qa_per_record: int) -> dict[str, int]:
    """max_tokens per artifact (``judge`` for every judge) from the word limits and the schemas."""
    story = _text_tokens(_chars(Story, "summary")) + _text_tokens(_chars(Story, "narrative"))
    qa = (JSON_TOKENS_PER_FIELD + 4 + _text_tokens(_chars(QA, "scenario")) + _text_tokens(_chars(QA, "question"))
          + _text_tokens(_chars(QA, "answer")))
    scenario = (_text_tokens(_chars(Scenario, "background")) + _text_tokens(_chars(Scenario, "plots"))
                + 8 * JSON_TOKENS_PER_FIELD + 4)
    return {
        "quality": 2 * JSON_TOKENS_PER_FIELD + 8 + _text_tokens(LABEL_REASON_MAX_CHARS),
        "clean_rewrite": _text_tokens(_chars(CleanRewrite, "text")),
        "user_notes": _text_tokens(words=NOTES_MAX_WORDS),
        "persona": _text_tokens(words=persona_max_words),
        "profile": _text_tokens(words=profile_max_words),
        "stories": 4 + max_stories * story,
        "writing_style": _text_tokens(_chars(WritingStyle, "style")),
        "scenario": scenario,
        "social_qa": 4 + qa_per_record * qa,
        "judge": 4 + len(METRICS) * SCORE_TOKENS + _text_tokens(JUDGE_REASONS_MAX_CHARS),
        "distractor": _text_tokens(words=100),
    }


REPLY_BUDGET_KEYS = ("quality", "clean_rewrite", "user_notes", *("persona", "profile", "stories", "writing_style"),
                     "scenario", "social_qa", "judge", "distractor")


def judge_schema(artifact: str) -> dict:
    metrics = JUDGE_METRICS[artifact]
    # an enum, not minimum/maximum: llama.cpp's grammar ignores integer bounds
    props = {m: {"type": "integer", "enum": list(range(1, 11))} for m in metrics}
    props["reasons"] = {"type": "string"}
    return {"type": "object", "properties": props, "required": list(metrics) + ["reasons"]}


def without_lengths(node):
    """Length bounds stay in validation: llama.cpp's schema-to-grammar unrolls maxLength into one
    nested rule per character, which for real limits is a grammar too deep to load."""
    if isinstance(node, dict):
        return {k: without_lengths(v) for k, v in node.items() if k not in ("maxLength", "minLength")}
    if isinstance(node, list):
        return [without_lengths(v) for v in node]
    return node


def output_schema(artifact: str) -> dict:
    """The JSON schema engines constrain decoding with."""
    if artifact.startswith("judge_"):
        return judge_schema(artifact[len("judge_"):])
    return without_lengths(OUTPUT_MODELS[artifact].model_json_schema())


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
        if artifact == "quality":
            return dict(obj.model_dump(), harmful=obj.harmful), None
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
