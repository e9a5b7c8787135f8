"""Training configuration: one YAML file plus ``key=value`` overrides, the paper's values as defaults.

Paper recipe: full fine-tuning (DeepSpeed ZeRO), loss on assistant tokens only, lr 5e-6, total
batch 64, max length 8192, cosine schedule, warm-up ratio 0.5, 3 epochs; then a 1:1 merge of the
fine-tuned and base weights; then multiple-choice evaluation (accuracy), temperature 0.7.

An unknown key or a bad value fails at load time with a message naming the key
(``TrainConfigError``). Importing this module does not import torch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class TrainConfigError(ValueError):
    """A configuration problem, with the offending key(s) in the message."""


def world_size() -> int:
    """Processes in the current launch (set by torchrun / deepspeed / accelerate; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- model and data
    base_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    """HF hub id or local directory (a ``prepare-base`` output, or the folder holding ``gguf_file``)."""
    gguf_file: str | None = None
    """GGUF file name inside ``base_model``; loading a GGUF is slow, so ``prepare-base`` converts it once."""
    shards_dir: Path = Path("shards")
    """A Lewin emit output: ``train/{parquet,jsonl}/``, ``test/...``, ``mcq/<task>.jsonl``."""
    shard_format: Literal["auto", "parquet", "jsonl"] = "auto"
    """auto = Parquet when ``<split>/parquet`` exists, else JSONL."""
    output_dir: Path = Path("runs/lewin-train")
    """Receives ``base/`` (prepared base), ``finetuned/``, ``merged/``, ``eval_report.json``."""

    # --- optimisation
    learning_rate: float = Field(5e-6, gt=0)
    total_batch_size: int = Field(64, ge=1)
    per_device_batch_size: int = Field(1, ge=1)
    max_length: int = Field(8192, ge=16)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"] = "cosine"
    warmup_ratio: float = Field(0.5, ge=0, lt=1)
    num_epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (smoke runs); None = ``num_epochs``."""
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 42
    gradient_checkpointing: bool = True
    """Trades compute for activation memory; needed for 8192-token sequences on real models."""
    save_checkpoints: bool = False
    """Save a resumable checkpoint each epoch (the latest only)."""
    deepspeed: str = "auto"
    """auto = ZeRO stage picked from model size and GPU memory; off; or a path to a DeepSpeed JSON.
    Used only on CUDA with deepspeed installed."""

    # --- merge (LM-Cocktail style): weights of (fine-tuned, base)
    merge_weights: tuple[float, float] = (0.5, 0.5)

    # --- evaluation
    eval_temperature: float = Field(0.7, gt=0)
    """Inference temperature; MCQ options are scored under the temperature-scaled distribution."""
    eval_limit: int | None = Field(None, ge=1)
    """Questions per benchmark (deterministic subsample by ``seed``); None = all."""
    eval_options_per_forward: int = Field(8, ge=1)
    """Options scored in one padded forward pass (memory vs speed)."""
    tombench_dir: Path | None = None
    """Folder of ToMBench ``*.jsonl``; None = skip ToMBench."""
    motivebench_dir: Path | None = None
    """Folder of MotiveBench ``*_questions.json``; None = skip MotiveBench."""

    @field_validator("merge_weights")
    @classmethod
    def _weights_sum_to_one(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not math.isclose(sum(v), 1.0, abs_tol=1e-6):
            raise ValueError(f"merge weights must sum to 1 (got {sum(v):g})")
        return v

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_mode(cls, v: str) -> str:
        if v not in ("auto", "off") and not v.endswith(".json"):
            raise ValueError("must be 'auto', 'off' or a path to a DeepSpeed .json config")
        return v

    @model_validator(mode="after")
    def _batch_divisible(self) -> "TrainConfig":
        self.gradient_accumulation_steps(world_size())
        return self

    def gradient_accumulation_steps(self, n_processes: int) -> int:
        """total batch = per-device batch x processes x accumulation steps, so it must divide evenly."""
        per_step = self.per_device_batch_size * n_processes
        if self.total_batch_size % per_step:
            raise ValueError(
                f"total_batch_size {self.total_batch_size} is not divisible by per_device_batch_size "
                f"{self.per_device_batch_size} x {n_processes} process(es)"
            )
        return self.total_batch_size // per_step


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise TrainConfigError(f"override {item!r} must look like key=value")
    key, raw = item.split("=", 1)
    # YAML gives numbers, booleans, null and [a, b] lists their types
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def load_train_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """YAML file (optional) + ``key=value`` overrides -> validated ``TrainConfig``."""
    tree: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        # the same file rules as the pipeline's config (lewin.schemas.config has no Spark import)
        from lewin.schemas.config import read_config_file

        tree, origin = read_config_file(path, TrainConfigError), str(path)
    for item in overrides or []:
        key, value = _parse_override(item)
        tree[key] = value
    if overrides:
        origin += " + overrides"
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        from lewin.schemas.config import format_errors

        raise TrainConfigError(format_errors(exc, origin, "trainer configuration")) from None


def dump_train_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
