"""Multiple-choice evaluation as the paper runs it, with loaders for Lewin, ToMBench and MotiveBench.

**The paper's protocol** (§4.2: "given a task instruction and eight candidate answers, we prompt
the LLM to select the most appropriate response"): the prompt shows the options lettered A, B, …
(item selection: A-T) and the model answers with a letter. Two ways to read the answer:

- ``letter_logprob`` (deterministic; the default on CPU): one forward pass over the lettered
  prompt; the option whose letter has the highest next-token log-probability is the answer.
- ``letter_generate``: the model generates a reply at ``eval_temperature`` (0.7) through one of
  the pipeline's engines (vLLM on GPU, an OpenAI-compatible server, llama.cpp for a GGUF); the
  first letter of the reply is the answer; a reply without one is wrong and counted
  (``unparseable``).

**Option likelihood** (the second metric): every option is scored as the assistant's reply to
the prompt *without* the option list: the mean log-prob of its tokens under the model's
next-token distribution, scaled by the temperature. The mean (not the sum) is used so that long
options are not penalised for having more tokens to get right; the options of one question share
the prompt, so it is encoded once and its KV cache shared by a right-padded batch of options.

Every question carries a ``group`` for the paper's breakdowns: the task (in-domain, Table 1), the
MotiveBench subset (Amazon, Blogger, Persona; Table 2), the ToMBench ability (Emotion, Desire,
Intention, Knowledge, Belief, Non-literal communication; Table 3). Lewin's items also carry each
option's ``origin`` (real, engine:<model>, other_user, pool), so the report gives accuracy by
origin and a length-only baseline (always pick the longest / the shortest option).
"""

from __future__ import annotations

import copy
import gc
import glob
import json
import logging
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from lewin.trainer.data import render_chat, token_ids

log = logging.getLogger(__name__)


LETTERS = "ABCDEFGHIJKLMNOPQRST"  # item selection is 20-way
# the item-selection prompt ends with this header and the numbered candidates (lewin.udfs.training_tasks
# CANDIDATES_HEADER; repeated here because the trainer imports nothing of the Spark side, a test keeps them equal)
ITEM_LIST_HEADER = "\n\nWhich one of these do you buy next?\n"
LETTER_INSTRUCTION = "Which candidate is the most appropriate answer? Reply with its letter only."


@dataclass
class Question:
    qid: str
    messages: list[dict]  # the prompt, without the answer and without the option list
    options: list[str]
    answer_index: int
    group: str | None = None
    """The breakdown this question counts in: task, MotiveBench subset or ToMBench ability."""
    origins: list[str] | None = None
    """Where each option comes from (Lewin's items): real, engine:<model>, other_user, pool."""


def letter_messages(q: Question) -> list[dict]:
    """The prompt of the paper's protocol: the task, then the options lettered A, B, …, then the
    instruction to answer with a letter."""
    if len(q.options) > len(LETTERS):
        raise ValueError(f"{q.qid}: {len(q.options)} options, at most {len(LETTERS)} can be lettered")
    messages = [dict(m) for m in q.messages]
    listing = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(q.options))
    messages[-1]["content"] = (f"{messages[-1]['content']}\n\nCandidate answers:\n{listing}\n\n{LETTER_INSTRUCTION}")
    return messages


_READ = re.compile(r"^[\s*_#>`\"'(\[]*(?:(?:the\s+)?(?:correct\s+)?(?:answer|option|candidate|choice)(?:\s+is)?\s*[:\-]?\s*)?"
                   r"[(\[*]*([A-Z])(?![A-Za-z])", re.I)


def read_letter(reply: str | None, n_options: int) -> int | None:
    """The option a generated reply names: its first letter (``B``, ``B.``, ``(B) …``, ``Answer: B``);
    None when the reply does not start with one of the ``n_options`` letters (unparseable)."""
    m = _READ.match(reply or "")
    if not m or not m.group(1).isupper():
        return None
    k = LETTERS.find(m.group(1))
    return k if 0 <= k < n_options else None


# --- loaders ---------------------------------------------------------------------------------

def load_lewin_mcq(shards_dir: str | Path) -> dict[str, list[Question]]:
    """``mcq/<task>.jsonl`` -> {"lewin/<task>": questions}. Item selection's prompt holds its
    numbered candidate list: the list is cut, since the protocol shows the options lettered."""
    benchmarks = {}
    for path in sorted((Path(shards_dir) / "mcq").glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            items = [json.loads(line) for line in f if line.strip()]
        questions = []
        for it in items:
            messages = [{"role": m["role"], "content": m["content"]} for m in it["messages"]]
            if ITEM_LIST_HEADER in messages[-1]["content"]:
                messages[-1]["content"] = messages[-1]["content"].split(ITEM_LIST_HEADER)[0]
            questions.append(Question(it["mcq_id"], messages, list(it["options"]), int(it["answer_index"]),
                                      group=it.get("task", path.stem), origins=it.get("origins")))
        benchmarks[f"lewin/{path.stem}"] = questions
    return benchmarks


def _letter(answer) -> str:
    return str(answer).strip()[:1].upper()  # "A", "A. " and "a" all mean A


TOMBENCH_ABILITIES = ("Emotion", "Desire", "Intention", "Knowledge", "Belief", "Non-literal communication")


def tombench_ability(field_value: str) -> str | None:
    """The paper's six abilities from an item's own ``ABILITY`` field ("Belief: Content false
    beliefs", "Non-Literal Communication: Faux pas", …): the part before the first colon."""
    head = str(field_value or "").split(":", 1)[0].strip().lower()
    return next((a for a in TOMBENCH_ABILITIES if a.lower() == head), None)


def load_tombench(folder: str | Path) -> list[Question]:
    """ToMBench ``*.jsonl``, English fields; empty options are skipped (and the answer re-indexed).
    ``group`` is the ability (``tombench_ability``; None when the field names none of the six)."""
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
            ability = row.get("能力\nABILITY", row.get("ABILITY"))
            questions.append(Question(f"{path.stem}:{i}", [{"role": "user", "content": prompt}], options,
                                      letters.index(answer), group=tombench_ability(ability)))
    if skipped:
        log.info("ToMBench: skipped %d questions without a usable answer option", skipped)
    return questions


_OPTION = re.compile(r"^\s*([A-Za-z])\s*[.)]\s*(.*)$", re.S)
# MotiveBench's files are <Subset>_questions.json; the paper's Table 2 names the subsets so
MOTIVEBENCH_SUBSETS = {"amazon": "Amazon", "blog": "Blogger", "blogger": "Blogger", "persona": "Persona"}


def load_motivebench(folder: str | Path) -> list[Question]:
    """MotiveBench ``*_questions.json``: three questions per item (motivation, behaviour, both);
    ``group`` is the subset named by the file (Amazon, Blogger, Persona)."""
    kinds = [("Motivation Reasoning Question", 1), ("Behavior Reasoning Question", 2),
             ("Motivation and Behavior Reasoning Question", 3)]
    questions, skipped = [], 0
    for path in sorted(glob.glob(str(Path(folder) / "*_questions.json"))):
        items = json.loads(Path(path).read_text(encoding="utf-8"))
        stem = Path(path).stem
        prefix = stem.removesuffix("_questions")
        subset = MOTIVEBENCH_SUBSETS.get(prefix.lower(), prefix)
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
                                          letters.index(answer), group=subset))
    if skipped:
        log.info("MotiveBench: skipped %d questions without a usable answer", skipped)
    return questions


def subsample(questions: list[Question], limit: int | None, seed: int) -> list[Question]:
    """A deterministic subset (original order kept); all when ``limit`` is None or not smaller.
    When the questions have groups (abilities, subsets), the limit is shared evenly among them
    (a group with fewer questions gives its unused share to the others), so every column of the
    breakdown keeps questions."""
    if limit is None or limit >= len(questions):
        return questions
    rng = random.Random(seed)
    by_group: dict = defaultdict(list)
    for i, q in enumerate(questions):
        by_group[q.group].append(i)
    if len(by_group) == 1:
        keep = rng.sample(range(len(questions)), limit)
    else:
        quota, left, budget = {}, dict(sorted(by_group.items(), key=lambda kv: str(kv[0]))), limit
        while left:  # water-filling, as the emit job splits a task's budget over its sources
            share = budget // len(left)
            small = {g: ix for g, ix in left.items() if len(ix) <= share}
            if not small:
                for k, g in enumerate(left):
                    quota[g] = share + (1 if k < budget - share * len(left) else 0)
                break
            for g, ix in small.items():
                quota[g] = len(ix)
                budget -= len(ix)
                del left[g]
        keep = [i for g, ix in by_group.items() for i in rng.sample(ix, quota[g])]
    return [questions[i] for i in sorted(keep)]


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


def _argmax(scores: list[float]) -> int:
    return max(range(len(scores)), key=scores.__getitem__)


def letter_token_ids(tokenizer, n_options: int) -> list[list[int]]:
    """Per letter, the token ids a reply naming it may start with ("B" and, when it is one token
    of its own, " B")."""
    out = []
    for letter in LETTERS[:n_options]:
        ids = set()
        for text in (letter, " " + letter):
            t = token_ids(tokenizer, text)
            if len(t) == 1:
                ids.add(t[0])
        out.append(sorted(ids) or token_ids(tokenizer, letter)[:1])
    return out


@torch.no_grad()
def letter_scores(model, tokenizer, question: Question) -> list[float]:
    """The paper's protocol, read deterministically: the log-probability of each option's letter
    as the first token of the reply to the lettered prompt (one forward pass)."""
    prompt = token_ids(tokenizer, render_chat(tokenizer, letter_messages(question), add_generation_prompt=True))
    limit = getattr(model.config, "max_position_embeddings", None) or 10**9
    if len(prompt) > limit:
        prompt = prompt[len(prompt) - limit:]  # keep the end: the options and the instruction
    out = model(input_ids=torch.tensor([prompt], device=model.device), logits_to_keep=1)
    logprobs = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    return [torch.logsumexp(logprobs[torch.tensor(ids, device=logprobs.device)], dim=0).item()
            for ids in letter_token_ids(tokenizer, len(question.options))]


def generate_letters(engine, questions: list[Question], temperature: float, seed: int,
                     max_tokens: int = 8) -> tuple[list[int | None], list[str | None]]:
    """The paper's protocol by generation: each lettered prompt sent to ``engine`` (an engine of
    ``lewin.udfs.llm_backends``) at ``temperature``; the reply's first letter is the pick (None:
    unparseable, or the engine failed). Returns the picks and the raw replies."""
    from lewin.udfs.llm_backends import Request, Sampling

    sampling = Sampling(temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=seed)
    requests = [Request(q.qid, tuple(letter_messages(q)), None, sampling) for q in questions]
    responses = engine.generate(requests, sampling) if requests else []
    replies = [None if r.error else r.text for r in responses]
    return [read_letter(text, len(q.options)) for q, text in zip(questions, replies)], replies


def generation_spec(path: str | Path, cfg):
    """The engine that serves model ``path`` for ``letter_generate`` (``eval_engine``)."""
    from lewin.udfs.llm_backends import BackendSpec

    e = cfg.eval_engine
    model_path = str(path)
    if e.kind == "llamacpp" and Path(model_path).is_dir():
        ggufs = sorted(Path(model_path).glob("*.gguf"))
        if not ggufs:
            raise FileNotFoundError(f"eval_engine.kind=llamacpp needs a GGUF: none in {model_path}")
        model_path = str(ggufs[0])
    return BackendSpec(kind=e.kind, model=e.model or str(path), model_path=model_path, base_url=e.base_url,
                       api_key_env=e.api_key_env, n_ctx=e.n_ctx, tensor_parallel_size=e.tensor_parallel_size,
                       gpu_memory_utilization=e.gpu_memory_utilization, max_model_len=e.max_model_len,
                       max_concurrency=e.max_concurrency, timeout_s=e.timeout_s)


def resolve_protocol(cfg) -> str:
    """``auto``: generation through vLLM on a GPU machine with vLLM installed, else letter log-probs."""
    if cfg.eval_protocol != "auto":
        return cfg.eval_protocol
    import importlib.util

    gpu = torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None
    return "letter_generate" if gpu and cfg.eval_engine.kind == "vllm" else "letter_logprob"


def predict_model(path: str | Path, benchmarks: dict[str, list[Question]], cfg, protocol: str) -> dict[str, dict]:
    """One model's picks on every benchmark: ``letter`` (the protocol's picks, None = unparseable),
    ``letter_scores`` (letter_logprob only), ``likelihood`` and ``likelihood_scores`` (when
    ``eval_option_likelihood``)."""
    out: dict[str, dict] = {name: {} for name in benchmarks}
    if protocol == "letter_generate":
        from lewin.udfs import llm_backends

        spec = generation_spec(path, cfg)
        engine = llm_backends.get_backend(spec)
        for name, qs in benchmarks.items():
            out[name]["letter"], out[name]["replies"] = generate_letters(engine, qs, cfg.eval_temperature, cfg.seed,
                                                                         cfg.eval_max_tokens)
        # one model at a time: drop the engine before the next model (or the HF model) loads
        with llm_backends._LOCK:
            llm_backends._ENGINES.pop(spec, None)
        del engine
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if protocol == "letter_logprob" or cfg.eval_option_likelihood:
        from lewin.trainer.models import load_model, load_tokenizer

        cuda = torch.cuda.is_available()
        model = load_model(path, dtype=torch.bfloat16 if cuda else torch.float32)
        model.to("cuda" if cuda else "cpu").eval()
        tokenizer = load_tokenizer(path)
        for name, qs in benchmarks.items():
            if protocol == "letter_logprob":
                scores = [letter_scores(model, tokenizer, q) for q in qs]
                out[name].update(letter=[_argmax(s) for s in scores], letter_scores=scores)
            if cfg.eval_option_likelihood:
                scores = [option_scores(model, tokenizer, q, cfg.eval_temperature, cfg.eval_options_per_forward) for q in qs]
                out[name].update(likelihood=[_argmax(s) for s in scores], likelihood_scores=scores)
            log.info("%s on %s: %d questions scored", Path(str(path)).name, name, len(qs))
        del model
        gc.collect()
    return out


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


# --- the report -------------------------------------------------------------------------------

def _acc(picks: list[int | None], questions: list[Question]) -> float | None:
    return sum(p == q.answer_index for p, q in zip(picks, questions)) / len(questions) if questions else None


def length_baseline(questions: list[Question]) -> dict[str, float | None]:
    """Accuracy of always picking the longest / the shortest option (characters): a set that one
    of these solves is solvable without the user."""
    longest = [max(range(len(q.options)), key=lambda i: len(q.options[i])) for q in questions]
    shortest = [min(range(len(q.options)), key=lambda i: len(q.options[i])) for q in questions]
    return {"longest": _acc(longest, questions), "shortest": _acc(shortest, questions)}


def _metrics(questions: list[Question], preds: dict[str, dict], idx: list[int]) -> dict:
    qs = [questions[i] for i in idx]
    row = {"n": len(qs), "chance": sum(1 / len(q.options) for q in qs) / len(qs) if qs else None,
           "accuracy": {}, "correct": {}, "unparseable": {}, "option_likelihood": {},
           "length_baseline": length_baseline(qs)}
    for label, p in preds.items():
        picks = [p["letter"][i] for i in idx]
        row["accuracy"][label] = _acc(picks, qs)
        row["correct"][label] = sum(x == q.answer_index for x, q in zip(picks, qs))
        row["unparseable"][label] = sum(x is None for x in picks)
        if "likelihood" in p:
            row["option_likelihood"][label] = _acc([p["likelihood"][i] for i in idx], qs)
    return row


def by_origin(questions: list[Question], preds: dict[str, dict]) -> dict:
    """Per option origin (Lewin's items): how many options come from it; per model and metric the
    ``pick_rate`` (share of its options picked; for ``real`` that is the accuracy) and, where the
    metric scores every option, ``beaten_by_real`` (share of its options the real answer outscores:
    the accuracy of the 2-way question real vs that origin)."""
    out: dict = {}
    origins = sorted({o for q in questions if q.origins for o in q.origins})
    for origin in origins:
        where = [(qi, oi) for qi, q in enumerate(questions) if q.origins for oi, o in enumerate(q.origins) if o == origin]
        entry = {"options": len(where), "questions": len({qi for qi, _ in where})}
        for metric, pick_key, score_key in (("letter", "letter", "letter_scores"),
                                            ("option_likelihood", "likelihood", "likelihood_scores")):
            for label, p in preds.items():
                if pick_key not in p:
                    continue
                m = entry.setdefault(metric, {}).setdefault(label, {})
                m["pick_rate"] = sum(p[pick_key][qi] == oi for qi, oi in where) / len(where)
                if score_key in p and origin != "real":
                    m["beaten_by_real"] = sum(p[score_key][qi][questions[qi].answer_index] > p[score_key][qi][oi]
                                              for qi, oi in where) / len(where)
        out[origin] = entry
    return out


# The paper's tables: which benchmark columns make each, in the paper's order.
IN_DOMAIN_TASKS = ("item_selection", "profile_generation", "scenario_generation", "social_qa", "writing_imitation",
                   "personalized_commenting")
TABLES = {
    "in_domain": ("Table 1: in-domain MCQ accuracy (%)", True),
    "motivebench": ("Table 2: MotiveBench accuracy", False),
    "tombench": ("Table 3: ToMBench accuracy", False),
}
_COLUMN_ORDER = {"motivebench": ("Amazon", "Blogger", "Persona"), "tombench": TOMBENCH_ABILITIES}


def _table_columns(report_benchmarks: dict) -> dict[str, list[tuple[str, dict]]]:
    """table -> [(column, metrics row)]: in-domain columns are Lewin's task sets; MotiveBench's
    are its subsets; ToMBench's its abilities."""
    cols: dict[str, list[tuple[str, dict]]] = {}
    lewin = {name.split("/", 1)[1]: b for name, b in report_benchmarks.items() if name.startswith("lewin/")}
    order = [t for t in IN_DOMAIN_TASKS if t in lewin] + sorted(t for t in lewin if t not in IN_DOMAIN_TASKS)
    if order:
        cols["in_domain"] = [(t, lewin[t]) for t in order]
    for bench, names in _COLUMN_ORDER.items():
        groups = (report_benchmarks.get(bench) or {}).get("groups") or {}
        if groups:
            cols[bench] = [(g, groups[g]) for g in names if g in groups] + [
                (g, groups[g]) for g in sorted(groups) if g not in names]
    return cols


def build_tables(report_benchmarks: dict, labels: list[str]) -> dict:
    """The paper's layout: one row per model and metric, one column per task / subset / ability,
    plus Avg (the columns' mean, as the paper averages), n and chance rows, and for the in-domain
    table the length-only baselines."""
    tables = {}
    for key, columns in _table_columns(report_benchmarks).items():
        names = [c for c, _ in columns]
        mean = lambda vals: sum(vals) / len(vals) if vals and None not in vals else None  # noqa: E731
        t = {"title": TABLES[key][0], "percent": TABLES[key][1], "columns": names + ["Avg"],
             "n": {c: b["n"] for c, b in columns}, "chance": {c: b["chance"] for c, b in columns}, "rows": {}}
        t["n"]["Avg"] = sum(t["n"][c] for c in names)
        t["chance"]["Avg"] = mean([t["chance"][c] for c in names])
        for metric in ("accuracy", "option_likelihood"):
            for label in labels:
                vals = {c: b[metric].get(label) for c, b in columns}
                if all(v is None for v in vals.values()):
                    continue
                vals["Avg"] = mean([vals[c] for c in names])
                t["rows"][f"{label} ({'letter' if metric == 'accuracy' else 'likelihood'})"] = vals
        if key == "in_domain":
            for which in ("longest", "shortest"):
                vals = {c: b["length_baseline"][which] for c, b in columns}
                vals["Avg"] = mean([vals[c] for c in names])
                t["rows"][f"pick the {which}"] = vals
        tables[key] = t
    return tables


def markdown_tables(tables: dict) -> str:
    """The tables as Markdown (in-domain in %, as the paper's Table 1; the others as fractions)."""
    out = []
    for t in tables.values():
        fmt = (lambda v: "–" if v is None else f"{100 * v:.2f}") if t["percent"] else (
            lambda v: "–" if v is None else f"{v:.4f}")
        cols = t["columns"]
        out.append(f"### {t['title']}\n")
        out.append("| | " + " | ".join(cols) + " |")
        out.append("|---|" + "---:|" * len(cols))
        out.append("| n | " + " | ".join(str(t["n"][c]) for c in cols) + " |")
        out.append("| chance | " + " | ".join(fmt(t["chance"][c]) for c in cols) + " |")
        for name, vals in t["rows"].items():
            out.append(f"| {name} | " + " | ".join(fmt(vals.get(c)) for c in cols) + " |")
        out.append("")
    return "\n".join(out)


def build_report(benchmarks: dict[str, list[Question]], preds: dict[str, dict[str, dict]], meta: dict | None = None) -> dict:
    """Benchmarks + per-model picks (``predict_model``'s output by label) -> the evaluation report:
    per benchmark n, chance, accuracy (the letter protocol), unparseable replies, option-likelihood
    accuracy, the length baselines, per group the same, per option origin; and the paper's tables."""
    labels = list(preds)
    report = dict(meta or {})
    report["benchmarks"] = {}
    for name, qs in benchmarks.items():
        per = {label: preds[label][name] for label in labels}
        entry = _metrics(qs, per, list(range(len(qs))))
        groups = sorted({q.group for q in qs if q.group is not None})
        if name.startswith(("tombench", "motivebench")) and groups:
            entry["groups"] = {g: _metrics(qs, per, [i for i, q in enumerate(qs) if q.group == g]) for g in groups}
        if any(q.origins for q in qs):
            entry["by_origin"] = by_origin(qs, per)
        report["benchmarks"][name] = entry
    report["tables"] = build_tables(report["benchmarks"], labels)
    return report


def evaluate_models(models: dict[str, str | Path], cfg) -> dict:
    """{label: model dir} -> the evaluation report (``build_report``) for the configured protocol."""
    benchmarks = collect_benchmarks(cfg)
    protocol = resolve_protocol(cfg)
    preds = {label: predict_model(path, benchmarks, cfg, protocol) for label, path in models.items()}
    meta = {"protocol": protocol, "temperature": cfg.eval_temperature, "limit_per_benchmark": cfg.eval_limit,
            "option_likelihood": cfg.eval_option_likelihood,
            "models": {label: str(path) for label, path in models.items()}}
    return build_report(benchmarks, preds, meta)
