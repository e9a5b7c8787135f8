"""Weight merge (LM-Cocktail style): an element-wise weighted average of models with one architecture.

The paper merges the fine-tuned model with its base 1:1, which keeps general ability that
fine-tuning alone erodes.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def merge_state_dicts(state_dicts: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """sum_i w_i * sd_i for floating-point tensors; integer/bool buffers are copied from the first."""
    if len(state_dicts) != len(weights) or not state_dicts:
        raise ValueError(f"{len(state_dicts)} state dicts but {len(weights)} weights")
    if not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise ValueError(f"merge weights must sum to 1 (got {sum(weights):g})")
    first = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], start=1):
        if sd.keys() != first.keys():
            raise ValueError(f"model {i} has different tensors: {sorted(set(sd) ^ set(first))[:5]}")
        bad = [k for k in first if sd[k].shape != first[k].shape]
        if bad:
            raise ValueError(f"model {i} differs in shape at {bad[:5]}")
    merged = {}
    for name, tensor in first.items():
        if tensor.is_floating_point():
            # accumulate in float32: summing bf16 halves loses precision
            total = sum(w * sd[name].to(torch.float32) for sd, w in zip(state_dicts, weights))
            merged[name] = total.to(tensor.dtype)
        else:
            merged[name] = tensor.clone()
    return merged


def merge_models(paths: Sequence[str | os.PathLike], weights: Sequence[float], out: str | os.PathLike) -> Path:
    """Merge HF model directories; the result (with the first model's tokenizer and config) goes to ``out``."""
    from lewin.trainer.models import load_model, load_tokenizer, save_model

    # keep each model's stored dtype; all models are held in memory at once
    models = [load_model(p, dtype="auto") for p in paths]
    merged = merge_state_dicts([m.state_dict() for m in models], weights)
    target = models[0]
    target.load_state_dict(merged)
    path = save_model(target, load_tokenizer(paths[0]), out)
    log.info("merged %s with weights %s into %s", [str(p) for p in paths], list(weights), path)
    return path
