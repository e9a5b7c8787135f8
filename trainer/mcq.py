"""Multiple-choice evaluation by option log-likelihood, with loaders for Lewin, ToMBench and MotiveBench.

Every option is scored as the assistant's reply to the chat-templated prompt: the mean log-prob of
its tokens under the model's next-token distribution, scaled by the inference temperature. The
mean (not the sum) is used so that long options are not penalised for having more tokens to get
right; the predicted answer is the best-scoring option. Options of one question share the prompt,
so the prompt is encoded once and its KV cache shared by a right-padded batch of options.

Benchmarks are scored cloze-style: the prompt holds the story and question but not the option
list, and each option's text is the candidate reply (the letters carry no signal).
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lewin.trainer.data import render_chat, token_ids

log = logging.getLogger(__name__)


@dataclass
class Question:
    qid: str
    messages: list[dict]  # the prompt, without the answer
    options: list[str]
    answer_index: int


# --- loaders ---------------------------------------------------------------------------------

def load_lewin_mcq(shards_dir: str | Path) -> dict[str, list[Question]]:
    """``mcq/<task>.jsonl`` -> {"lewin/<task>": questions}."""
    benchmarks = {}
    for path in sorted((Path(shards_dir) / "mcq").glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            items = [json.loads(line) for line in f if line.strip()]
        benchmarks[f"lewin/{path.stem}"] = [
            Question(it["mcq_id"], [{"role": m["role"], "content": m["content"]} for m in it["messages"]],
                     list(it["options"]), int(it["answer_index"]))
            for it in items
        ]
    return benchmarks


def _letter(answer) -> str:
    return str(answer).strip()[:1].upper()  # "A", "A. " and "a" all mean A


def load_tombench(folder: str | Path) -> list[Question]:
    """ToMBench ``*.jsonl``, English fields; empty options are skipped (and the answer re-indexed)."""
    questions, skipped = [], 0
    for path in sorted(Path(folder).glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        for i, row in enumerate(rows):
            letters, options = [], []
            for letter in "ABCD":
                text = row.get(f"OPTION-{letter}")
                if text is not None and str(text).strip():
                    letters.append(letter)
                    options.append(str(text).strip())
            answer = _letter(row.get("答案\nANSWER", ""))
            if answer not in letters or len(options) < 2:
                skipped += 1
                continue
            prompt = f"{row['STORY'].strip()}\n\nQuestion: {row['QUESTION'].strip()}"
            questions.append(Question(f"{path.stem}:{i}", [{"role": "user", "content": prompt}], options,
                                      letters.index(answer)))
    if skipped:
        log.info("ToMBench: skipped %d questions without a usable answer option", skipped)
    return questions


_OPTION = re.compile(r"^\s*([A-Za-z])\s*[.)]\s*(.*)$", re.S)


def load_motivebench(folder: str | Path) -> list[Question]:
    """MotiveBench ``*_questions.json``: three questions per item (motivation, behaviour, both)."""
    kinds = [("Motivation Reasoning Question", 1), ("Behavior Reasoning Question", 2),
             ("Motivation and Behavior Reasoning Question", 3)]
    questions, skipped = [], 0
    for path in sorted(glob.glob(str(Path(folder) / "*_questions.json"))):
        items = json.loads(Path(path).read_text(encoding="utf-8"))
        stem = Path(path).stem
        for i, item in enumerate(items):
            for key, k in kinds:
                raw = item.get(f"Options {k}") or []
                letters, options = [], []
                for pos, text in enumerate(raw):
                    m = _OPTION.match(str(text))
                    # "A. text": the letter names the option; without one, its position does
                    letters.append(m.group(1).upper() if m else "ABCDEFGHIJ"[pos])
                    options.append((m.group(2) if m else str(text)).strip())
                answer = _letter(item.get(f"Correct Answer {k}", ""))
                if not item.get(key) or answer not in letters:
                    skipped += 1
                    continue
                questions.append(Question(f"{stem}:{item.get('idx', i)}:{k}",
                                          [{"role": "user", "content": str(item[key]).strip()}], options,
                                          letters.index(answer)))
    if skipped:
        log.info("MotiveBench: skipped %d questions without a usable answer", skipped)
    return questions


def subsample(questions: list[Question], limit: int | None, seed: int) -> list[Question]:
    """A deterministic subset (original order kept); all when ``limit`` is None or not smaller."""
    if limit is None or limit >= len(questions):
        return questions
    keep = sorted(random.Random(seed).sample(range(len(questions)), limit))
    return [questions[i] for i in keep]


# --- scoring ---------------------------------------------------------------------------------

@torch.no_grad()
def option_scores(model, tokenizer, question: Question, temperature: float = 1.0, options_per_forward: int = 8) -> list[float]:
    """Mean log-prob per token of each option as the assistant reply to the question's prompt.

    The prompt goes through the model once; its KV cache is then repeated for a batch of options,
    so each option costs only its own tokens (options are short, prompts are long).
    """
    prompt = token_ids(tokenizer, render_chat(tokenizer, question.messages, add_generation_prompt=True))
    options = [token_ids(tokenizer, o) for o in question.options]
    limit = getattr(model.config, "max_position_embeddings", None) or 10**9
    longest = max(len(o) for o in options)
    if len(prompt) + longest > limit:
        prompt = prompt[len(prompt) + longest - limit:]  # keep the prompt's end, where the question is
    device = model.device
    out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1)
    prompt_cache = out.past_key_values
    # the prompt's last position predicts every option's first token
    first_logprobs = torch.log_softmax(out.logits[0, -1].float() / temperature, dim=-1)
    scores: list[float] = []
    for first in range(0, len(options), options_per_forward):
        chunk = options[first:first + options_per_forward]
        width = max(len(o) for o in chunk)
        later = None  # log-probs of option tokens 1..width-1, predicted from option tokens 0..width-2
        if width > 1:
            cache = copy.deepcopy(prompt_cache)
            cache.batch_repeat_interleave(len(chunk))
            inputs = torch.full((len(chunk), width - 1), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), len(prompt) + width - 1), dtype=torch.long)
            mask[:, :len(prompt)] = 1
            for row, option in enumerate(chunk):
                inputs[row, :len(option) - 1] = torch.tensor(option[:-1], dtype=torch.long)
                mask[row, len(prompt):len(prompt) + len(option) - 1] = 1
            logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device), past_key_values=cache,
                           use_cache=True).logits
            later = torch.log_softmax(logits.float() / temperature, dim=-1)
        for row, option in enumerate(chunk):
            if not option:
                scores.append(float("-inf"))
                continue
            total = first_logprobs[option[0]]
            if len(option) > 1:
                target = torch.tensor(option[1:], device=device)[:, None]
                total = total + later[row, :len(option) - 1].gather(-1, target).sum()
            scores.append(total.item() / len(option))
    return scores


def evaluate_questions(model, tokenizer, questions: list[Question], temperature: float = 1.0,
                       options_per_forward: int = 8) -> dict:
    """accuracy (argmax == answer), number of questions, chance level (mean 1/n_options)."""
    correct = 0
    for q in questions:
        scores = option_scores(model, tokenizer, q, temperature, options_per_forward)
        correct += int(max(range(len(scores)), key=scores.__getitem__) == q.answer_index)
    n = len(questions)
    return {"accuracy": correct / n if n else None, "correct": correct, "n": n,
            "chance": sum(1 / len(q.options) for q in questions) / n if n else None}


def evaluate_model(path: str | Path, benchmarks: dict[str, list[Question]], temperature: float = 1.0,
                   options_per_forward: int = 8) -> dict[str, dict]:
    """Load a saved model once and score it on every benchmark."""
    from lewin.trainer.models import load_model, load_tokenizer

    cuda = torch.cuda.is_available()
    model = load_model(path, dtype=torch.bfloat16 if cuda else torch.float32)
    model.to("cuda" if cuda else "cpu").eval()
    tokenizer = load_tokenizer(path)
    results = {}
    for name, questions in benchmarks.items():
        results[name] = evaluate_questions(model, tokenizer, questions, temperature, options_per_forward)
        log.info("%s on %s: %s", Path(path).name, name, results[name])
    return results


def collect_benchmarks(cfg) -> dict[str, list[Question]]:
    """The configured MCQ sets (Lewin's ``mcq/``, ToMBench, MotiveBench), each cut to ``cfg.eval_limit``."""
    benchmarks: dict[str, list[Question]] = {}
    if (Path(cfg.shards_dir) / "mcq").is_dir():
        benchmarks.update(load_lewin_mcq(cfg.shards_dir))
    if cfg.tombench_dir is not None:
        benchmarks["tombench"] = load_tombench(cfg.tombench_dir)
    if cfg.motivebench_dir is not None:
        benchmarks["motivebench"] = load_motivebench(cfg.motivebench_dir)
    empty = [name for name, qs in benchmarks.items() if not qs]
    if empty:
        raise FileNotFoundError(f"no questions found for {empty}")
    return {name: subsample(qs, cfg.eval_limit, cfg.seed) for name, qs in benchmarks.items()}


def evaluate_models(models: dict[str, str | Path], cfg) -> dict:
    """{label: model dir} -> the evaluation report (per benchmark: n, chance, accuracy per model)."""
    benchmarks = collect_benchmarks(cfg)
    per_model = {label: evaluate_model(path, benchmarks, cfg.eval_temperature, cfg.eval_options_per_forward)
                 for label, path in models.items()}
    return {
        "temperature": cfg.eval_temperature,
        "limit_per_benchmark": cfg.eval_limit,
        "models": {label: str(path) for label, path in models.items()},
        "benchmarks": {
            name: {"n": len(qs), "chance": sum(1 / len(q.options) for q in qs) / len(qs),
                   "accuracy": {label: per_model[label][name]["accuracy"] for label in models},
                   "correct": {label: per_model[label][name]["correct"] for label in models}}
            for name, qs in benchmarks.items()
        },
    }
