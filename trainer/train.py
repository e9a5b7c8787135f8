"""Full fine-tuning on Lewin shards with the transformers Trainer (DeepSpeed ZeRO on GPUs).

The loss covers assistant tokens only: labels are -100 everywhere else (``data.py``), and the
model's causal-LM loss averages over the labelled tokens of the whole accumulated batch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lewin.trainer.config import TrainConfig, dump_train_config, world_size

log = logging.getLogger(__name__)


def fit(cfg: TrainConfig) -> dict:
    """Train, then write the model, tokenizer and ``train_metrics.json`` to ``<output_dir>/finetuned``."""
    import torch
    import yaml
    from transformers import Trainer, TrainingArguments, set_seed

    from lewin.trainer.data import PadCollator, encode_records, training_records
    from lewin.trainer.deepspeed import resolve_deepspeed
    from lewin.trainer.models import count_parameters, load_model, load_tokenizer

    set_seed(cfg.seed)
    out = Path(cfg.output_dir) / "finetuned"
    tokenizer = load_tokenizer(cfg.base_model, cfg.gguf_file)
    records, data_mix = training_records(cfg)
    features, stats = encode_records(records, tokenizer, cfg.max_length)
    log.info("training samples: %s; data: %s", stats.as_dict(), data_mix)
    if not features:
        raise ValueError(f"no trainable samples in {cfg.shards_dir}/train ({stats.as_dict()})")

    n_processes = world_size()
    ds_config, ds_reason = resolve_deepspeed(cfg.deepspeed, count_parameters(cfg.base_model, cfg.gguf_file), n_processes)
    (log.info if ds_config else log.warning)("DeepSpeed %s: %s", "on" if ds_config else "off", ds_reason)
    cuda = torch.cuda.is_available()
    # transformers 5.x renamed gradient_checkpointing (kept as a deprecated alias) to activation_checkpointing
    checkpointing = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
                     else "gradient_checkpointing")
    args = TrainingArguments(
        output_dir=str(Path(cfg.output_dir) / "checkpoints"),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps(n_processes),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps or -1,
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        logging_steps=1,
        save_strategy="epoch" if cfg.save_checkpoints else "no",
        save_total_limit=1,
        eval_strategy="no",
        report_to="none",
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        deepspeed=ds_config,
        **{checkpointing: cfg.gradient_checkpointing},
        remove_unused_columns=False,  # the collator's own columns; nothing to drop
        disable_tqdm=True,
    )
    # after TrainingArguments: with ZeRO-3 it makes from_pretrained partition the weights as they load
    model = load_model(cfg.base_model, cfg.gguf_file)
    model.config.use_cache = False  # no KV cache while training (and incompatible with checkpointing)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=features,
        data_collator=PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
    )
    result = trainer.train()
    model.config.use_cache = True
    trainer.save_model(str(out))  # gathers ZeRO-3 shards; writes on the main process only
    losses = [{"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate"), "grad_norm": h.get("grad_norm")}
              for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "steps": trainer.state.global_step,
        "losses": losses,
        "first_loss": losses[0]["loss"] if losses else None,
        "last_loss": losses[-1]["loss"] if losses else None,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "deepspeed": ds_config is not None,
        "deepspeed_reason": ds_reason,
        "zero_stage": ds_config["zero_optimization"]["stage"] if ds_config else None,
        "world_size": n_processes,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "samples": stats.as_dict(),
        "data": data_mix,  # which tasks, and the external ShareGPT mix with the achieved shares
        "config": yaml.safe_load(dump_train_config(cfg)),
    }
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
        (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    log.info("fine-tuned model in %s: %d steps, loss %s -> %s", out, metrics["steps"], metrics["first_loss"], metrics["last_loss"])
    return metrics
