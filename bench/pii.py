"""PII scrubbing: Lewin's scrubber vs Presidio as usually deployed (``AnalyzerEngine().analyze``
then ``AnonymizerEngine().anonymize``, per row, as in Presidio's Spark sample; default
recognizers; the same offline spaCy small model), on the same labelled evaluation set
(``lewin.udfs.pii_eval``), in one run.

Prints per-type precision and recall for both, docs/s on one core for both (and Lewin on every
core through its worker pool), and the per-core speed ratio.

    python bench/pii.py --n 90
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cores  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=90, help="generated posts (the real posts are added to them)")
    ap.add_argument("--repeat", type=int, default=3, help="timing passes over the set (best is kept)")
    ap.add_argument("--seed", type=int, default=7, help="seed of the generated posts (7: the reference set)")
    a = ap.parse_args()

    import pyarrow as pa

    from lewin.schemas.config import load_config
    from lewin.udfs import pii
    from lewin.udfs.pii_eval import TYPES, build, score
    from lewin.udfs.pool import pooled_batches

    shared = (PROJECT / ".." / "shared" / "data").resolve()
    docs = build(shared if shared.is_dir() else None, n_generated=a.n, seed=a.seed)
    texts = [d.text for d in docs]
    chars = sum(map(len, texts)) / len(texts)
    print(f"evaluation set: {len(docs)} docs ({sum(d.origin == 'real' for d in docs)} real), {chars:.0f} chars/doc, "
          f"{sum(len(d.gold) for d in docs)} labelled spans")

    cfg = load_config().pii
    opts = pii.PiiOptions(entities=tuple(cfg.entities), min_score=tuple(cfg.min_score.items()),
                          spacy_model=cfg.spacy_model, ner_window=cfg.ner_window, salt=os.urandom(32))
    det = pii.detector(opts.entities, opts.spacy_model, opts.ner_window)
    min_score = dict(opts.min_score)
    lewin_pred = [[(f.start, f.end, f.etype) for f in pii.resolve(fs, min_score)] for fs in det.detect(texts)]
    batch = pa.record_batch({"record_id": [d.doc_id for d in docs], "user_id": ["u"] * len(docs), "text": texts,
                             "title": [None] * len(docs)})
    best = float("inf")
    for _ in range(a.repeat):
        t = time.perf_counter()
        next(pii.scrub_batch(batch, opts))
        best = min(best, time.perf_counter() - t)
    lewin_1core = len(docs) / best

    import functools

    chunks = [batch.slice(i, 16) for i in range(0, batch.num_rows, 16)]
    fn = functools.partial(pii.scrub_batch, opts=opts)
    list(pooled_batches(fn, chunks, cores()))  # warm the workers (models load once per process)
    t = time.perf_counter()
    for _ in range(a.repeat):
        list(pooled_batches(fn, chunks, cores()))
    lewin_all = len(docs) * a.repeat / (time.perf_counter() - t)

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_anonymizer import AnonymizerEngine

    pii._offline_tldextract()
    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": cfg.spacy_model}]})
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine())
    anonymizer = AnonymizerEngine()
    analyzer.analyze(texts[0], language="en")
    base_pred = []
    best = float("inf")
    for rep in range(a.repeat):
        t = time.perf_counter()
        preds = []
        for text in texts:
            res = analyzer.analyze(text, language="en")
            anonymizer.anonymize(text=text, analyzer_results=res)
            preds.append([(f.start, f.end, f.etype) for f in pii.resolve(
                [pii.Found(r.start, r.end, r.entity_type, r.score) for r in res], {})])
        best = min(best, time.perf_counter() - t)
        base_pred = preds
    base_1core = len(docs) / best

    ours = score(docs, lewin_pred)
    theirs = score(docs, base_pred, aliases={"LOCATION": "STREET_ADDRESS"})

    def f(x):
        return "   -  " if x is None else f"{x:6.3f}"

    print(f"{'type':16s} {'gold':>5s}   {'lewin P':>7s} {'lewin R':>7s}   {'presidio P':>10s} {'presidio R':>10s}")
    recall_ok = True
    for t in TYPES:
        o, b = ours[t], theirs[t]
        print(f"{t:16s} {o['gold']:5d}   {f(o['precision']):>7s} {f(o['recall']):>7s}   {f(b['precision']):>10s} {f(b['recall']):>10s}")
        if o["recall"] is not None and b["recall"] is not None and o["recall"] < b["recall"]:
            recall_ok = False
    print("(presidio has no street-address recognizer: its LOCATION spans are scored as STREET_ADDRESS)")
    print(f"lewin: {lewin_1core:.1f} docs/s on one core, {lewin_all:.1f} docs/s on {cores()} cores")
    print(f"presidio per-row: {base_1core:.1f} docs/s on one core")
    print(f"recall_per_type_at_least_baseline: {recall_ok}")
    print(f"lewin_docs_per_s_per_core: {lewin_1core:.1f}")
    print(f"presidio_docs_per_s_per_core: {base_1core:.1f}")
    print(f"speed_ratio_per_core: {lewin_1core / base_1core:.2f}")


if __name__ == "__main__":
    main()
