#!/usr/bin/env bash
# Full fine-tuning on one 8-GPU node with DeepSpeed ZeRO, then merge and evaluate.
#   pip install 'lewin[deepspeed]' && CONFIG=infra/trainer/train.yaml infra/trainer/launch.sh
# (`lewin-train all` does the same in one process: it relaunches `fit` on every GPU with torchrun.)
set -euo pipefail
CONFIG=${CONFIG:-infra/trainer/train.yaml}
NUM_GPUS=${NUM_GPUS:-8}

# One process per GPU. --no_local_rank: ranks come from the environment (the CLI has no --local_rank).
deepspeed --num_gpus "$NUM_GPUS" --no_local_rank --module lewin.trainer.cli --config "$CONFIG" fit
# Equivalent launchers:
#   accelerate launch --num_processes "$NUM_GPUS" --module lewin.trainer.cli --config "$CONFIG" fit
#   torchrun --standalone --nproc_per_node "$NUM_GPUS" -m lewin.trainer.cli --config "$CONFIG" fit

lewin-train --config "$CONFIG" merge      # 1:1 weights of fine-tuned and base -> <output_dir>/merged
lewin-train --config "$CONFIG" evaluate   # base vs merged on the MCQ sets -> <output_dir>/eval_report.json
