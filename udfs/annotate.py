"""The Python part of curation as one Arrow batch function: language ID, quality scores and
MinHash band keys.

Runs inside ``mapInArrow`` (through ``lewin.udfs.pool`` on the embedded engine), so the text
crosses into Python once for both annotations; models load once per worker process.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from lewin.udfs.langid import identify
from lewin.udfs.near_dedup import MinHashOptions, band_keys
from lewin.udfs.quality import arrow_type, quality_signals


@dataclass(frozen=True)
class AnnotateOptions:
    language: bool = True
    model_path: str | None = None
    max_chars: int = 1000
    quality: bool = True
    minhash: MinHashOptions | None = None
    """Band keys for near-duplicate detection (``near_dup_bands``); None: not computed."""
    text_column: str = "clean_text"
    skip_column: str | None = None
    """Rows where this boolean column is true are passed through unannotated (already rejected)."""


def annotate_batch(batch: pa.RecordBatch, opts: AnnotateOptions):
    """``batch`` plus ``lang`` (string), ``lang_score`` (double), ``quality_signals`` (struct)."""
    texts = batch.column(opts.text_column).to_pylist()
    if opts.skip_column:
        skip = batch.column(opts.skip_column).to_pylist()
        texts = [None if s else t for t, s in zip(texts, skip)]
    if opts.language:
        langs, scores = identify(texts, opts.model_path, opts.max_chars)
    else:
        langs, scores = [None] * len(texts), [None] * len(texts)
    signals = quality_signals(texts) if opts.quality else pa.nulls(len(texts), arrow_type())
    cols = list(batch.columns) + [
        pa.array(langs, pa.string()),
        pa.array(scores, pa.float64()),
        signals,
    ]
    names = list(batch.schema.names) + ["lang", "lang_score", "quality_signals"]
    if opts.minhash is not None:
        cols.append(band_keys(texts, opts.minhash))
        names.append("near_dup_bands")
    yield pa.RecordBatch.from_arrays(cols, names=names)
