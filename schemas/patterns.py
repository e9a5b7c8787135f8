"""Pydantic models of the second recipe (HumanLLM's psychological patterns, ``lewin patterns``):
the pattern library's records and what its LLM artifacts reply.

The paper (``../shared/seeds/000_507d60f2bcb4b8ed.txt``, tables 14-20) asks for plain text with
Markdown headings or ``@ [Name]: …`` lines; Lewin's engines constrain decoding with a JSON schema,
so each reply is a JSON object whose string fields hold the paper's text forms (the Markdown
summary, the tendency lines), checked by the deterministic validators in ``lewin.udfs.patterns``.
A conversation's turns are objects with the three channels (inner thought, action, speech) as
fields, rendered to the paper's ``Name: [thought] (action) speech`` lines for the validator and
the shards.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PatternType = Literal["personality_trait", "social_cognitive_pattern"]
Relation = Literal["reinforce", "conflict", "modulate"]


class PatternRecord(BaseModel):
    """One row of ``patterns``: the paper's pattern structure (definition, core mechanisms,
    real-world manifestations) and where it comes from."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9]+(_[a-z0-9]+)*$", max_length=80)
    name: str = Field(min_length=2, max_length=120)
    type: PatternType
    definition: str = Field(min_length=20, max_length=2000)
    core_mechanisms: list[str] = Field(min_length=1, max_length=12)
    manifestations: list[str] = Field(min_length=1, max_length=12)
    references: list[str] = Field(min_length=1, max_length=60)


# A turn's channels: a thought may be skipped in small talk (the validator asks for thoughts in at
# least half the turns and from every character), speech never.
TURN_CHARS = {"thought": 300, "action": 200, "speech": 500}


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PatternSummary(_Out):
    """Tables 15-16: the literature corpus of one pattern summarised under the paper's headings,
    as Markdown (parsed into a ``PatternRecord`` by ``lewin.udfs.patterns.parse_pattern_markdown``)."""

    markdown: str = Field(min_length=1, max_length=8000)


class BundleCheck(_Out):
    """The compatibility screen of a bundle: can these patterns act together in one situation?"""

    coherent: bool
    reason: str = Field(min_length=1, max_length=300)


class SceneDesign(_Out):
    """Table 17, Task 1 (the design process): rationale in 2-4 sentences, catalyst details, and
    the expected tendencies of every character as ``@ [Name]: 1. …; 2. …; 3. …`` lines."""

    rationale: str = Field(min_length=1, max_length=1200)
    catalysts: list[str] = Field(min_length=1, max_length=8)
    tendencies: str = Field(min_length=1, max_length=1500)


class AboutSelf(_Out):
    descriptors: list[str] = Field(min_length=4, max_length=8)
    background: str = Field(min_length=1, max_length=500)
    motivation: str = Field(min_length=1, max_length=400)


class AboutOther(_Out):
    name: str = Field(min_length=1, max_length=80)
    relation: str = Field(min_length=1, max_length=400)


class Character(_Out):
    name: str = Field(min_length=1, max_length=80)
    about_self: AboutSelf
    about_others: list[AboutOther] = Field(min_length=1, max_length=4)


class Scene(_Out):
    """Table 17-18, Task 2 (the scenario): the situation, the protagonist and the supporting
    characters (1-4), each with "About Self" and "About Others"."""

    scenario: str = Field(min_length=1, max_length=2000)
    protagonist: Character
    supporting: list[Character] = Field(min_length=1, max_length=4)


class Turn(_Out):
    speaker: str = Field(min_length=1, max_length=80)
    thought: str = Field(default="", max_length=TURN_CHARS["thought"])
    action: str = Field(default="", max_length=TURN_CHARS["action"])
    speech: str = Field(min_length=1, max_length=TURN_CHARS["speech"])


class Conversation(_Out):
    """Tables 19-20: 12-20 turns, opened by a supporting character and closed by the protagonist."""

    turns: list[Turn] = Field(min_length=1, max_length=30)


class ChecklistItems(_Out):
    """Yes/no questions a reader answers from a transcript: per pattern (individual fidelity) or
    per scenario (the bundle's emergent dynamics)."""

    questions: list[str] = Field(min_length=1, max_length=10)


class ItemAnswer(_Out):
    item: int = Field(ge=1, le=40)
    answer: Literal["yes", "no"]
    evidence_turns: list[int] = Field(default_factory=list, max_length=8)


class ChecklistVerdict(_Out):
    """The checklist judge: one answer per numbered item, with the turns that show it."""

    answers: list[ItemAnswer] = Field(min_length=1, max_length=40)


class HolisticScore(_Out):
    """The holistic judge kept beside the checklist (the paper's desirability gap is measured
    between the two): how human-like the conversation reads, 1-10."""

    anthropomorphism: int = Field(ge=1, le=10)
    reasons: str = Field(default="", max_length=200)


OUTPUT_MODELS: dict[str, type[_Out]] = {
    "pattern_summary": PatternSummary,
    "bundle_check": BundleCheck,
    "scene_design": SceneDesign,
    "scene": Scene,
    "conversation": Conversation,
    "checklist": ChecklistItems,
    "checklist_judge": ChecklistVerdict,
    "holistic_judge": HolisticScore,
}
ARTIFACTS = tuple(OUTPUT_MODELS)


# Reply budgets (max_tokens), derived like the first recipe's (lewin.schemas.llm.reply_budgets):
# what a compliant reply may hold, at generous English BPE rates, plus the JSON around it.
_CHARS_PER_TOKEN = 3.5
_JSON_TOKENS_PER_FIELD = 8
CHECKLIST_QUESTION_MAX_WORDS = 35
MAX_PATTERNS_PER_BUNDLE = 5


def _tok(chars: int) -> int:
    return int(chars / _CHARS_PER_TOKEN) + 1 + _JSON_TOKENS_PER_FIELD


def reply_budgets(max_turns: int, checklist_items: int) -> dict[str, int]:
    """max_tokens per artifact of the second recipe."""
    turn = sum(_tok(c) for c in TURN_CHARS.values()) + _tok(80)
    question = int(CHECKLIST_QUESTION_MAX_WORDS * 1.5) + _JSON_TOKENS_PER_FIELD
    items = (MAX_PATTERNS_PER_BUNDLE + 1) * checklist_items
    return {
        "pattern_summary": _tok(8000),
        "bundle_check": 12 + _tok(300),
        "scene_design": 600,  # the paper's "UNDER 500 TOKENS" plus the JSON around it
        "scene": _tok(2000) + 5 * (8 * _tok(60) + _tok(500) + _tok(400) + 4 * (_tok(80) + _tok(400))),
        "conversation": 8 + max_turns * turn,
        "checklist": 8 + checklist_items * question,
        "checklist_judge": 8 + items * 40,
        "holistic_judge": 12 + _tok(200),
    }
