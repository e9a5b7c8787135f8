"""Lewin shards -> tokenized conversations whose labels cover only the assistant replies.

The loss mask is derived from the tokenizer's own chat template, not from hard-coded ChatML: for
each assistant turn the conversation *before* it is rendered with ``add_generation_prompt=True``;
its length is where the reply's text starts in the full rendering, and the reply ends after its
content plus the end-of-turn token (``<|im_end|>``, so the model learns to stop). Character
positions become token positions by tokenizing the rendered prefix and checking that its tokens are
a prefix of the full conversation's tokens; when a merge across the boundary breaks that, the fast
tokenizer's offset mapping decides instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

IGNORE_INDEX = -100  # what torch's cross-entropy (and HF's causal-LM loss) skips


def shard_files(shards_dir: str | Path, split: str = "train", fmt: str = "auto") -> list[Path]:
    """The part files of one split, in name order."""
    root = Path(shards_dir) / split
    if fmt == "auto":
        fmt = "parquet" if (root / "parquet").is_dir() else "jsonl"
    files = sorted((root / fmt).glob(f"*.{fmt}"))
    if not files:
        raise FileNotFoundError(f"no {fmt} shard files under {root / fmt}")
    return files


def load_records(shards_dir: str | Path, split: str = "train", fmt: str = "auto") -> list[dict]:
    """Every record of one split (Parquet via pyarrow, or JSONL)."""
    records: list[dict] = []
    for path in shard_files(shards_dir, split, fmt):
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            records += pq.read_table(path).to_pylist()
        else:
            with open(path, encoding="utf-8") as f:
                records += [json.loads(line) for line in f if line.strip()]
    return records


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def token_ids(tokenizer, text: str) -> list[int]:
    # the rendered template already holds its special tokens as text: add none
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def assistant_char_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering and, per assistant turn, the [start, end) characters of its content + end-of-turn token."""
    full = render_chat(tokenizer, messages)
    eos = tokenizer.eos_token or ""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], add_generation_prompt=True)
        start, end = len(before), len(before) + len(message["content"])
        if not full.startswith(before) or full[start:end] != message["content"]:
            raise ValueError("the chat template does not render this conversation's prefixes as prefixes")
        if eos and full.startswith(eos, end):
            end += len(eos)
        spans.append((start, end))
    return full, spans


@dataclass
class EncodeStats:
    kept: int = 0
    dropped_truncated: int = 0  # every assistant token fell beyond max_length
    dropped_no_assistant: int = 0
    offset_fallbacks: int = 0  # spans located by offsets because prefix tokens were not a prefix
    truncated: int = 0  # kept, but cut at max_length

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def encode_conversation(tokenizer, messages: list[dict], max_length: int, stats: EncodeStats | None = None) -> dict | None:
    """``{"input_ids", "labels"}`` with labels = -100 outside assistant replies; None when nothing is left to learn."""
    stats = stats if stats is not None else EncodeStats()
    full, spans = assistant_char_spans(tokenizer, messages)
    if not spans:
        stats.dropped_no_assistant += 1
        return None
    input_ids = token_ids(tokenizer, full)
    labels = [IGNORE_INDEX] * len(input_ids)
    offsets = None
    for start, end in spans:
        bounds = []
        for cut in (start, end):
            prefix = token_ids(tokenizer, full[:cut])
            bounds.append(len(prefix) if input_ids[: len(prefix)] == prefix else None)
        if None in bounds:
            # a token straddles the boundary: label every token overlapping the span
            stats.offset_fallbacks += 1
            if offsets is None:
                offsets = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            bounds = [k for k, (s, e) in enumerate(offsets) if s < end and e > start]
            bounds = [bounds[0], bounds[-1] + 1]
        for k in range(bounds[0], bounds[1]):
            labels[k] = input_ids[k]
    if len(input_ids) > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
        if all(x == IGNORE_INDEX for x in labels):
            stats.dropped_truncated += 1
            return None
        stats.truncated += 1
    stats.kept += 1
    return {"input_ids": input_ids, "labels": labels}


def encode_records(records: list[dict], tokenizer, max_length: int) -> tuple[list[dict], EncodeStats]:
    stats = EncodeStats()
    features = []
    for record in records:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        encoded = encode_conversation(tokenizer, messages, max_length, stats)
        if encoded is not None:
            features.append(encoded)
    return features, stats


@dataclass
class PadCollator:
    """Right-pads a batch: input_ids with the pad id, attention mask 0, labels -100."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(features)
        input_ids = torch.full((batch, longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, longest), dtype=torch.long)
        labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[row, :n] = torch.tensor(f["input_ids"])
            attention_mask[row, :n] = 1
            labels[row, :n] = torch.tensor(f["labels"])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# --- what a run trains on: a subset of tasks, and external ShareGPT data mixed in at a ratio ------

_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "model": "assistant"}


def sharegpt_messages(row: dict) -> list[dict] | None:
    """A ShareGPT row as ``messages``: the ``messages`` column ({role, content}) or the classic
    ``conversations`` ({from, value}); turns of other roles (tools, functions) are left out.
    None when no assistant turn remains."""
    turns = row.get("messages") or row.get("conversations") or []
    out = []
    for t in turns:
        role = _SHAREGPT_ROLES.get(str(t.get("role", t.get("from", ""))).lower())
        content = t.get("content", t.get("value"))
        if role and isinstance(content, str) and content.strip():
            out.append({"role": role, "content": content})
    return out if any(m["role"] == "assistant" for m in out) else None


def load_sharegpt(path: str, name: str | None = None, split: str = "train") -> list[dict]:
    """Rows of a ShareGPT dataset: a local ``.jsonl``/``.json``/``.parquet`` file or folder of
    them, else a Hugging Face dataset id."""
    p = Path(path)
    rows: list[dict] = []
    if p.exists():
        files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.suffix in (".jsonl", ".json", ".parquet"))
        for f in files:
            if f.suffix == ".parquet":
                import pyarrow.parquet as pq

                rows += pq.read_table(f).to_pylist()
            elif f.suffix == ".jsonl":
                with open(f, encoding="utf-8") as fh:
                    rows += [json.loads(line) for line in fh if line.strip()]
            else:
                data = json.loads(f.read_text(encoding="utf-8"))
                rows += data if isinstance(data, list) else [data]
    else:
        import datasets

        rows = list(datasets.load_dataset(path, name, split=split))
    return rows


def training_records(cfg) -> tuple[list[dict], dict]:
    """The training records of a run and what they are: Lewin's train split (only
    ``cfg.train_tasks`` when set), plus each ``cfg.mix`` source sampled (seeded, without
    replacement) so that it makes up its ``ratio`` of the whole; a source too small for its share
    gives all it has and the report says so."""
    import random
    from collections import Counter

    records = load_records(cfg.shards_dir, "train", cfg.shard_format)
    available = Counter(r.get("task") for r in records)
    if cfg.train_tasks is not None:
        unknown = sorted(set(cfg.train_tasks) - set(available))
        if unknown:
            raise ValueError(f"train_tasks: {unknown} have no samples in {cfg.shards_dir}/train "
                             f"(tasks there: {sorted(available)})")
        records = [r for r in records if r.get("task") in set(cfg.train_tasks)]
    n_lewin = len(records)
    lewin_share = 1 - sum(m.ratio for m in cfg.mix)
    report = {"train_tasks": list(cfg.train_tasks) if cfg.train_tasks is not None else "all",
              "lewin": {"samples": n_lewin, "by_task": dict(sorted(Counter(r.get("task") for r in records).items())),
                        "ratio": lewin_share},
              "mix": []}
    for k, m in enumerate(cfg.mix):
        rows = [msgs for msgs in (sharegpt_messages(r) for r in load_sharegpt(m.path, m.name, m.split)) if msgs]
        want = round(n_lewin * m.ratio / lewin_share)
        take = sorted(random.Random(cfg.seed + 1 + k).sample(range(len(rows)), min(want, len(rows))))
        records += [{"task": f"mix:{m.name or Path(m.path).name}", "messages": rows[i]} for i in take]
        report["mix"].append({"path": m.path, "name": m.name, "ratio": m.ratio, "usable_rows": len(rows),
                              "wanted": want, "samples": len(take), "short": len(take) < want})
    total = len(records) or 1
    report["achieved_share"] = {"lewin": round(n_lewin / total, 4),
                                **{f"mix:{m['name'] or Path(m['path']).name}": round(m["samples"] / total, 4)
                                   for m in report["mix"]}}
    return records, report
