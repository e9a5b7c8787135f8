"""Lewin trainer: full fine-tuning on Lewin shards, 1:1 weight merge, MCQ evaluation (separate from the Spark code)."""
