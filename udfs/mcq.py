"""Multiple-choice evaluation items from held-out samples (pure Python; the question count per task
is capped, so this runs on the driver).

- item_selection: 20-way; the options are the sample's candidates (the real item + 19 from the
  pool outside the user's history); the real item is moved to its balanced place and the
  numbered list in the prompt follows.
- other tasks: 8-way, as the paper builds them (§4.2): the real answer + 7 distractors, each from
  one *distractor engine* (``emit.distractor_engines``; the paper's are 7 different models)
  answering the request the trained model sees — the task's system prompt and ``public_prompt``,
  which holds none of the user's own posts, persona or history — within the task's length
  budget (``word_budgets``). With fewer engines than options the engines repeat, each round with
  the next seed (``slot_plan``), and a repeat's origin says so (``engine:<model>#<round>``). A
  distractor that failed, is out of its budget, is empty or repeats another option is not used;
  a question left without enough distinct options is dropped and counted, unless
  ``emit.distractor_fill_other_users`` lets other users' real answers to the same task fill it
  (origin ``other_user``).
- answer positions: questions are ordered by a seeded hash and the i-th gets position
  ``(start + i) mod n_options`` from a seeded start, so positions are uniform in expectation and
  balanced exactly (counts per position differ by at most one) per task.
"""

from __future__ import annotations

import hashlib
import re

from lewin.udfs.training_tasks import CANDIDATES_HEADER, item_prompt  # noqa: F401  (the header: tests split on it)


def word_budgets(profile_min_words: int, profile_max_words: int) -> dict[str, tuple[int, int]]:
    """(min, max) words of a distractor per task: the length the task's real answers are held to.
    Profiles follow ``llm.profile_min_words``-``llm.profile_max_words`` (paper: 100-400); scenario
    plots and QA answers the synthesis schemas' bounds (1200 and 600 characters); posts and
    comments a typical post's length. ``emit.distractor_word_budgets`` overrides any of them."""
    return {
        "profile_generation": (profile_min_words, profile_max_words),
        "scenario_generation": (10, 200),
        "social_qa": (1, 100),
        "writing_imitation": (1, 300),
        "personalized_commenting": (1, 150),
    }


def length_phrase(budget: tuple[int, int]) -> str:
    lo, hi = budget
    return f"at most {hi} words" if lo <= 1 else f"{lo}-{hi} words"


def in_budget(text: str, budget: tuple[int, int] | None) -> bool:
    if budget is None:
        return True
    return budget[0] <= len((text or "").split()) <= budget[1]


def slot_plan(n_engines: int, n_slots: int, base_seed: int) -> list[tuple[int, int, int]]:
    """One (engine index, round, seed) per distractor slot: engines in turn; each time the list
    starts over (round 1, 2, …) the seed moves on, so a repeated engine writes another option."""
    if n_engines < 1:
        raise ValueError("no distractor engine")
    return [(k % n_engines, k // n_engines, base_seed + k // n_engines) for k in range(n_slots)]


def _h(*parts) -> str:
    return hashlib.sha256("\u001f".join(str(p) for p in parts).encode()).hexdigest()


def norm(text: str) -> str:
    """Options that differ only in case, spacing or punctuation count as the same option."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", (text or "").lower())).strip()


def balanced_positions(question_ids: list[str], n_options: int, seed: int) -> dict[str, int]:
    order = sorted(question_ids, key=lambda q: (_h(seed, "position", q), q))
    # a seeded start: with few questions a task's first answer is not always at A (a model that
    # always answers A would score 100 % on a one-question set)
    start = int(_h(seed, "start", *order)[:8], 16) % n_options
    return {q: (start + i) % n_options for i, q in enumerate(order)}


def choose_options(answer: str, distractors: list[tuple[str, str]], fallback: list[tuple[str, str]], n_options: int,
                   answer_index: int) -> tuple[list[str], list[str]] | None:
    """Options with the real answer at ``answer_index``; None when too few distinct ones exist.
    ``fallback`` (other users' answers) is only drawn on when the caller opted in: pass [] to drop."""
    seen = {norm(answer)}
    picked: list[tuple[str, str]] = []
    for text, origin in list(distractors) + list(fallback):
        k = norm(text)
        if not k or k in seen:
            continue
        seen.add(k)
        picked.append((text.strip(), origin))
        if len(picked) == n_options - 1:
            break
    if len(picked) < n_options - 1:
        return None
    options = [t for t, _ in picked]
    origins = [o for _, o in picked]
    options.insert(answer_index, answer)
    origins.insert(answer_index, "real")
    return options, origins


def move_item_answer(prompt_head: str, candidates: list[str], real_index: int, to_index: int) -> tuple[str, list[str]]:
    """Swap the real item into ``to_index`` and render the prompt for the new order."""
    opts = list(candidates)
    opts[real_index], opts[to_index] = opts[to_index], opts[real_index]
    return item_prompt(prompt_head, opts), opts
