"""Multiple-choice evaluation items from held-out samples (pure Python; the question count per task
is capped, so this runs on the driver).

- item_selection: 20-way; the options are the sample's candidates (the real item + 19 from the
  pool outside the user's history); the real item is moved to its balanced place and the
  numbered list in the prompt follows.
- other tasks: 8-way; the real answer + 7 distractors written by the LLM engine from the
  request alone (``public_prompt``, which holds none of the user's own posts, persona or history),
  each as a different fictitious writer. A distractor that failed, is empty, or repeats another
  option is replaced by another user's real answer to the same task (origin ``other_user``).
- answer positions: questions are ordered by a seeded hash and the i-th gets position
  ``i mod n_options``, so positions are uniform in expectation and balanced exactly (counts per
  position differ by at most one) per task.
"""

from __future__ import annotations

import hashlib
import re

from lewin.udfs.training_tasks import CANDIDATES_HEADER, item_prompt  # noqa: F401  (the header: tests split on it)

# Fictitious writers for distractors: same request, a different person, no access to the user.
DISTRACTOR_WRITERS = (
    "a retired schoolteacher who writes careful, polite prose",
    "a night-shift nurse who writes short, tired messages",
    "a college student who writes casually with slang",
    "a small-business owner who writes practical, no-nonsense text",
    "a new parent who writes warm, scattered notes",
    "a software engineer who writes precise, dry sentences",
    "a gardener in their seventies who writes slow, descriptive text",
    "a teenage gamer who writes fast and enthusiastic",
    "a lawyer who writes formal, hedged statements",
)



def _h(*parts) -> str:
    return hashlib.sha256("\u001f".join(str(p) for p in parts).encode()).hexdigest()


def norm(text: str) -> str:
    """Options that differ only in case, spacing or punctuation count as the same option."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", (text or "").lower())).strip()


def balanced_positions(question_ids: list[str], n_options: int, seed: int) -> dict[str, int]:
    order = sorted(question_ids, key=lambda q: (_h(seed, "position", q), q))
    return {q: i % n_options for i, q in enumerate(order)}


def choose_options(answer: str, distractors: list[tuple[str, str]], fallback: list[tuple[str, str]], n_options: int,
                   answer_index: int) -> tuple[list[str], list[str]] | None:
    """Options with the real answer at ``answer_index``; None when too few distinct ones exist."""
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
