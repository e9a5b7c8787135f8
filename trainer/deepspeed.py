"""DeepSpeed ZeRO configuration chosen by model size.

Mixed-precision Adam keeps ~16 bytes per parameter: bf16 weights (2) and gradients (2) plus fp32
master weights and two Adam moments (12). ZeRO-2 shards gradients and optimizer states over the
GPUs but keeps a full bf16 copy of the weights on each; ZeRO-3 shards the weights too (more
communication, so it is used only when ZeRO-2 does not fit); CPU offload (slowest) only when even
ZeRO-3 does not fit. ``headroom`` is the share of GPU memory the model states may take: activations
at 8192 tokens, buffers and fragmentation need the rest.

Batch sizes, clipping, optimizer hyper-parameters and bf16 are ``"auto"``: transformers' DeepSpeed
integration fills them from ``TrainingArguments`` so the two can never disagree. There is no
``scheduler`` section: the Trainer's own cosine schedule drives DeepSpeed's optimizer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

BYTES_WEIGHTS = 2  # bf16
BYTES_GRADS = 2  # bf16
BYTES_OPTIMIZER = 12  # fp32 master copy + Adam first and second moments


def zero_plan(n_params: int, n_gpus: int, gpu_mem_gb: float, headroom: float = 0.5) -> tuple[int, list[str]]:
    """(ZeRO stage, what to offload to CPU: [] / ["optimizer"] / ["optimizer", "param"])."""
    budget = gpu_mem_gb * 1e9 * headroom
    sharded = (BYTES_GRADS + BYTES_OPTIMIZER) * n_params / n_gpus
    if BYTES_WEIGHTS * n_params + sharded <= budget:
        return 2, []
    if (BYTES_WEIGHTS + BYTES_GRADS + BYTES_OPTIMIZER) * n_params / n_gpus <= budget:
        return 3, []
    if (BYTES_WEIGHTS + BYTES_GRADS) * n_params / n_gpus <= budget:
        return 3, ["optimizer"]
    return 3, ["optimizer", "param"]


def zero_config(n_params: int, n_gpus: int, gpu_mem_gb: float, headroom: float = 0.5) -> dict:
    """A DeepSpeed config dict for the HF Trainer (``TrainingArguments(deepspeed=...)``)."""
    stage, offload = zero_plan(n_params, n_gpus, gpu_mem_gb, headroom)
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto"}
    if stage == 3:
        zero.update({
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            # save_model() writes whole weights, not per-rank shards
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    for what in offload:
        zero[f"offload_{what}"] = {"device": "cpu", "pin_memory": True}
    return {
        "bf16": {"enabled": "auto"},
        # DeepSpeed's own AdamW: with optimizer offload it must be DeepSpeed's (CPU Adam)
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
        "zero_optimization": zero,
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
    }


def resolve_deepspeed(setting: str, n_params: int, n_processes: int) -> tuple[dict | None, str]:
    """The DeepSpeed config to train with (None = plain Trainer) and why."""
    import torch

    if setting == "off":
        return None, "deepspeed=off"
    if not torch.cuda.is_available():
        return None, "no CUDA device: DeepSpeed ZeRO needs GPUs, training with the plain Trainer on CPU"
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return None, "deepspeed is not installed (pip install 'lewin[deepspeed]'): plain Trainer"
    if setting == "auto":
        gpu_mem_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
        config = zero_config(n_params, n_processes, gpu_mem_gb)
        stage = config["zero_optimization"]["stage"]
        return config, f"ZeRO-{stage} for {n_params / 1e9:.2f}B params on {n_processes} x {gpu_mem_gb:.0f} GB"
    return json.loads(Path(setting).read_text(encoding="utf-8")), f"DeepSpeed config {setting}"
