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


class EvalEngine(BaseModel):
    """The engine ``letter_generate`` serves each evaluated model with (the pipeline's engines,
    ``lewin.udfs.llm_backends``): vllm loads the model folder on the GPU; openai talks to a server
    already serving it (``vllm serve <dir>``: the served name is the folder unless ``model`` says
    otherwise); llamacpp needs a GGUF in the folder."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["vllm", "openai", "llamacpp"] = "vllm"
    model: str | None = None
    """The served model name (openai); None = the model folder's path."""
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    n_ctx: int = Field(8192, ge=256)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = None
    max_concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)


class MixSource(BaseModel):
    """An external ShareGPT dataset mixed into training (the paper's general-instruction ablation:
    SmolTalk and Orca at 0.25 each, Lewin's data 0.5)."""

    model_config = ConfigDict(extra="forbid")
    path: str
    """A local ``.jsonl``/``.json``/``.parquet`` file or a folder of them, else a Hugging Face
    dataset id (read with ``datasets.load_dataset``)."""
    ratio: float = Field(gt=0, lt=1)
    """This source's share of the training samples; Lewin's shards get 1 - the sum of the ratios."""
    name: str | None = None
    """The dataset configuration (``datasets.load_dataset(path, name)``), for hub datasets."""
    split: str = "train"


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
    train_tasks: list[str] | None = None
    """Train on these tasks only (the paper's task-group ablation: t1 = profile_generation,
    scenario_generation, social_qa; t2 = writing_imitation, personalized_commenting,
    item_selection); None = every task in the shards. Recorded in ``train_metrics.json``."""
    mix: list[MixSource] = Field(default_factory=list)
    """External ShareGPT datasets mixed in at a ratio (see ``MixSource``); the achieved counts are
    recorded in ``train_metrics.json``."""
    deepspeed: str = "auto"
    """auto = ZeRO stage picked from model size and GPU memory; off; or a path to a DeepSpeed JSON.
    Used only on CUDA with deepspeed installed."""

    # --- merge (LM-Cocktail style): weights of (fine-tuned, base)
    merge_weights: tuple[float, float] = (0.5, 0.5)

    # --- evaluation
    eval_temperature: float = Field(0.7, gt=0)
    """Inference temperature: letter_generate samples at it; option likelihoods are scored under the
    temperature-scaled distribution (letter log-probs are not: their argmax does not depend on it)."""
    eval_limit: int | None = Field(None, ge=1)
    """Questions per benchmark (deterministic subsample by ``seed``, shared evenly among a
    benchmark's subsets / abilities); None = all."""
    eval_options_per_forward: int = Field(8, ge=1)
    """Options scored in one padded forward pass (memory vs speed)."""
    eval_protocol: Literal["auto", "letter_logprob", "letter_generate"] = "auto"
    """The paper's protocol: options shown lettered, the model answers with a letter. letter_logprob:
    the letter with the highest next-token log-probability (deterministic); letter_generate: a
    reply generated at eval_temperature through ``eval_engine``, its first letter (a reply
    without one is wrong and counted); auto: letter_generate on a GPU machine with vLLM, else
    letter_logprob."""
    eval_option_likelihood: bool = True
    """Also score every option by its mean log-likelihood as the reply (options not shown): the
    second metric."""
    eval_engine: EvalEngine = Field(default_factory=EvalEngine)
    eval_max_tokens: int = Field(8, ge=1)
    """Reply budget of letter_generate (the letter is read from the reply's start)."""
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

    @field_validator("mix")
    @classmethod
    def _lewin_keeps_a_share(cls, v: list[MixSource]) -> list[MixSource]:
        if sum(m.ratio for m in v) >= 1:
            raise ValueError(f"the mix ratios sum to {sum(m.ratio for m in v):g}: Lewin's shards need a share (< 1)")
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
