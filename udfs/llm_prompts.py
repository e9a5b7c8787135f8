"""The Python half of an LLM stage: prompts from versioned templates, one engine call per batch,
replies parsed and validated into ledger rows. Runs as an Arrow batch UDF, one engine per worker.

Every prompt is two messages laid out for prefix caching (vLLM reuses only identical leading
token blocks): one shared system message (``system.v<N>.j2``), then a user message that starts
with the *source block* and ends with the artifact's task (``<name>.v<N>.j2``). The source block
is rendered from the input alone, so a user's persona, profile, stories and style prompts, and
their judges, start byte-identical through the user's whole history; a record's scenario and QA
prompts share the record. Prompts sent once for every record (the labels, the optional cleaning
rewrite) put their instructions first and the record last (``{{ source }}`` in the task): there
the instructions are the prefix every prompt shares. A judge prompt is the writer's source block followed
by the artifact and the judge's task: the judge sees exactly what the writer saw.

A prompt's version is its task file's name plus a hash of the system message, the task and the
source layout, so editing any of them reruns exactly the rows built from it.

Per-user sources hold the notes distilled from older records (see jobs/llm.py) and the latest
records, oldest first, each cut to ``record_max_chars``; if they still exceed
``history_max_chars`` the oldest records are dropped (the latest always stays). The reply gets the
context the prompt leaves, up to its budget; a prompt that leaves less than ``MIN_REPLY_TOKENS``
fails as ``prompt_too_long`` without an engine call, and is not retried. A reply cut by its
budget fails as ``truncated`` (retried), never passes as a short answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow as pa

from lewin.schemas.llm import JUDGE_METRICS, METRIC_DEFINITIONS, output_schema, validate_output
from lewin.udfs import pattern_replies
from lewin.udfs.llm_backends import ENGINE_ERROR, BackendSpec, Request, Response, Sampling, failure, get_backend

PROMPTS = Path(__file__).parent / "prompts"

# How the source block lays out an input (part of every prompt's version).
_SOURCE_LAYOUT = "v1"


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    system: str
    task: str
    standalone: bool = False
    """A template with its own ``[system]`` and ``[user]`` sections and no source block (the MCQ
    distractors, which must not see the user's posts)."""


def _latest(name: str) -> Path:
    files = sorted(PROMPTS.glob(f"{name}.v*.j2"), key=lambda p: int(re.search(r"\.v(\d+)\.j2$", p.name).group(1)))
    if not files:
        raise FileNotFoundError(f"no prompt template {name}.v<N>.j2 in {PROMPTS}")
    return files[-1]


def _strip_comment(text: str) -> str:
    return re.sub(r"\A\{#.*?#\}\n", "", text, flags=re.S).strip()


@lru_cache(maxsize=None)
def load_prompt(name: str) -> Prompt:
    """The latest version of task template ``name`` (``persona``, ``judge`` …) with the shared
    system message."""
    task_file = _latest(name)
    text = _strip_comment(task_file.read_text(encoding="utf-8"))
    m = re.search(r"\A\[system\]\n(.*?)^\[user\]\n(.*)\Z", text, flags=re.S | re.M)
    if m:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        return Prompt(name, f"{task_file.stem}-{digest}", m.group(1).strip(), m.group(2).strip(), standalone=True)
    system = _strip_comment(_latest("system").read_text(encoding="utf-8"))
    task = text
    digest = hashlib.sha256("\0".join((system, task, _SOURCE_LAYOUT)).encode()).hexdigest()[:8]
    return Prompt(name, f"{task_file.stem}-{digest}", system, task)


def prompt_for(artifact: str) -> Prompt:
    return load_prompt("judge" if artifact.startswith("judge_") else artifact)


@lru_cache(maxsize=None)
def _env():
    import jinja2

    return jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)


def fit_history(records: list[dict], record_max_chars: int, history_max_chars: int) -> list[dict]:
    """Oldest first, each cut; drop the oldest until the total fits (never the latest)."""
    cut = [dict(r, text=(r.get("text") or "")[:record_max_chars]) for r in records]
    total = sum(len(r["text"]) for r in cut)
    while len(cut) > 1 and total > history_max_chars:
        total -= len(cut.pop(0)["text"])
    return cut


@dataclass(frozen=True)
class PromptOptions:
    engine: BackendSpec
    sampling: Sampling
    max_tokens: tuple[tuple[str, int], ...]
    limits: tuple[tuple[str, int], ...]
    qa_per_record: int = 3
    record_max_chars: int = 1500
    history_max_chars: int = 6000
    max_attempts: int = 3
    batch_size: int = 8


def source_block(context: dict, opts: PromptOptions) -> str:
    """The input as the prompt shows it: a record (``text``, ``date``), or a history (``notes``
    and/or ``records``). Writer and judge prompts both start with this text."""
    if "records" in context or "notes" in context:
        parts = []
        notes = context.get("notes") or []
        if notes:
            parts.append("Notes on this user's earlier posts, oldest first:\n"
                         + "".join(f"- ({n['from']} to {n['to']}) {n['text']}\n" for n in notes))
        budget = opts.history_max_chars - sum(len(n["text"]) for n in notes)
        records = fit_history(context.get("records") or [], opts.record_max_chars, max(budget, opts.record_max_chars))
        if records:
            parts.append(("Their latest posts" if notes else "Posts by this user") + ", oldest first:\n"
                         + "".join(f"- ({r['date']}) {r['text']}\n" for r in records))
        return "\n".join(parts).rstrip("\n")
    return f"A post by this user ({context.get('date')}):\n{(context.get('text') or '')[:opts.record_max_chars]}"


def render(artifact: str, context: dict, opts: PromptOptions) -> tuple[dict, ...]:
    p = prompt_for(artifact)
    env = _env()
    if p.standalone:
        return ({"role": "system", "content": env.from_string(p.system).render(**context)},
                {"role": "user", "content": env.from_string(p.task).render(**context)})
    limits = dict(opts.limits)
    values = {"n": opts.qa_per_record, "min_words": limits.get("profile_min_words", 100),
              "max_words": limits.get("profile_max_words", 400),
              "persona_max_words": limits.get("persona_max_words", 100)}
    if artifact.startswith("judge_"):
        subject = artifact[len("judge_"):]
        source = source_block(context["source"], opts)
        values.update(artifact=subject.replace("_", " "), output=context["output"], metrics=JUDGE_METRICS[subject],
                      definitions=METRIC_DEFINITIONS)
    else:
        source = source_block(context, opts)
    if "{{ source }}" in p.task:  # a task shared by every input (labels): instructions first, then the input
        return ({"role": "system", "content": p.system},
                {"role": "user", "content": env.from_string(p.task).render(**values, source=source)})
    task = env.from_string(p.task).render(**values)
    return ({"role": "system", "content": p.system}, {"role": "user", "content": f"{source}\n\n{task}"})


# a prompt must leave the reply at least this many tokens of the context (or its whole budget)
MIN_REPLY_TOKENS = 64
# the error a reply cut by its token budget fails with (counted per artifact as the truncation rate)
TRUNCATED = "truncated"

LEDGER_FIELDS = [
    ("ledger_key", pa.string()), ("artifact", pa.string()), ("input_id", pa.string()), ("input_hash", pa.string()),
    ("user_id", pa.string()),
    ("source", pa.string()), ("prompt_version", pa.string()), ("model", pa.string()), ("params_hash", pa.string()),
    ("engine", pa.string()), ("status", pa.string()), ("output", pa.string()), ("error", pa.string()),
    ("attempts", pa.int32()), ("tokens_in", pa.int64()), ("tokens_out", pa.int64()), ("latency_ms", pa.int64()),
]


def reply_schema(artifact: str, context: dict) -> dict:
    """The JSON schema a request is decoded with: per artifact, or per request for the second
    recipe's artifacts (``lewin.udfs.pattern_replies``: its names, speakers and items)."""
    if artifact in pattern_replies.ARTIFACTS:
        return pattern_replies.reply_schema(artifact, context)
    return output_schema(artifact)


def validate_reply(artifact: str, text: str, limits: dict[str, int], context: dict) -> tuple[dict | None, str | None]:
    """(parsed, None) or (None, why): the artifact's model and limits, and for the second recipe
    its deterministic validators (names, turns, checklist items) against the request's context."""
    if artifact in pattern_replies.ARTIFACTS:
        return pattern_replies.validate(artifact, text, context)
    return validate_output(artifact, text, limits)


def _generate_isolated(engine, requests: list[Request], sampling: Sampling) -> list[Response]:
    """One engine call for the batch; if the engine raises for the whole call, each request is
    sent alone, so only the request that breaks it fails."""
    try:
        return engine.generate(requests, sampling)
    except Exception as exc:
        if len(requests) == 1:
            return [Response(requests[0].key, error=failure(ENGINE_ERROR, f"{type(exc).__name__}: {exc}"))]
        return [r for req in requests for r in _generate_isolated(engine, [req], sampling)]


def run_batch(batch: pa.RecordBatch, opts: PromptOptions):
    """Input rows (ledger_key, artifact, input_id, user_id, source, prompt_version, model,
    params_hash, prev_attempts, context) -> ledger rows. Failures are rows, not exceptions."""
    engine = get_backend(opts.engine)
    rows = batch.to_pylist()
    limits = dict(opts.limits)
    max_tokens = dict(opts.max_tokens)
    results: dict[str, dict] = {}
    todo: list[tuple[dict, Request, int, dict]] = []
    for r in rows:
        attempts = int(r.get("prev_attempts") or 0) + 1
        base = {k: r[k] for k in ("ledger_key", "artifact", "input_id", "input_hash", "user_id", "source",
                                  "prompt_version", "model", "params_hash")}
        base.update(engine=engine.name, attempts=attempts, tokens_in=0, tokens_out=0, latency_ms=0, output=None)
        budget = max_tokens.get("judge" if r["artifact"].startswith("judge_") else r["artifact"], 384)
        try:
            context = json.loads(r["context"])
            # an input may lower its artifact's budget (``reply_max_tokens``): a distractor for a
            # 100-word task is not given the 400-word task's tokens to ramble in when it fails
            budget = min(budget, int(context.get("reply_max_tokens") or budget))
            messages = render(r["artifact"], context, opts)
            schema = reply_schema(r["artifact"], context)
        except Exception as exc:  # a template/context problem fails the row, not the batch
            results[r["ledger_key"]] = dict(base, status="dead", error=f"prompt error: {exc}"[:500])
            continue
        n_in = engine.count_tokens(messages)
        # the reply gets what the context leaves, up to its budget (a reply that needs more is
        # cut, and fails as truncated); a prompt that leaves less than MIN_REPLY_TOKENS is not sent
        room = engine.context_tokens - n_in
        if room < min(budget, MIN_REPLY_TOKENS):
            results[r["ledger_key"]] = dict(base, status="dead", tokens_in=n_in,
                                            error=f"prompt_too_long: {n_in} tokens leave {room} of context "
                                                  f"{engine.context_tokens} for the reply")
            continue
        budget = min(budget, room)
        sampling = Sampling(opts.sampling.temperature, opts.sampling.top_p, budget, opts.sampling.seed + attempts - 1)
        todo.append((base, Request(r["ledger_key"], messages, schema, sampling), budget, context))
    # batches in the order the stage sent the rows (a user's prompts one after another, so an
    # engine's prefix cache serves their shared history); each request carries its own reply
    # budget and its attempt's seed (the same seed would reproduce the same failure)
    for i in range(0, len(todo), max(1, opts.batch_size)):
        chunk = todo[i:i + opts.batch_size]
        responses = _generate_isolated(engine, [req for _, req, _, _ in chunk], opts.sampling)
        for (base, req, budget, context), resp in zip(chunk, responses):
            row = dict(base, tokens_in=resp.tokens_in, tokens_out=resp.tokens_out, latency_ms=resp.latency_ms)
            if resp.error:
                row.update(status="failed", error=resp.error)
            elif resp.extra.get("finish_reason") == "length":
                # cut by the reply budget: a failure (retried), never a silently short answer
                row.update(status="failed", error=f"{TRUNCATED}: reply hit max_tokens={budget} | reply: "
                                                   f"{(resp.text or '')[-200:]}")
            else:
                parsed, why = validate_reply(base["artifact"], resp.text, limits, context)
                if parsed is None:
                    row.update(status="failed", error=f"{why} | reply: {(resp.text or '')[:300]}")
                else:
                    row.update(status="ok", output=json.dumps(parsed, ensure_ascii=False), error=None)
            if row["status"] == "failed" and row["attempts"] >= opts.max_attempts:
                row["status"] = "dead"
            results[base["ledger_key"]] = row
    ordered = [results[r["ledger_key"]] for r in rows]
    yield pa.RecordBatch.from_pylist(ordered, schema=pa.schema(LEDGER_FIELDS))
