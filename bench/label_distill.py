"""The distilled quality/harm labeller (``llm.labels: distilled``) with the real CPU LLM engine:
how many records the LLM still labels, and how well the classifier and the routed labeller agree
with the LLM on a held-out slice of its labels.

Input: N generated Pushshift-style Reddit records (``_common.write_reddit_jsonl``: bots, ads,
deleted bodies, ~3 % non-English, planted duplicates) plus the real samples of
``../shared/data`` (reddit, twitter, blogger, amazon; skipped with a note when absent), each
ingested as its source, then ``curate`` and ``scrub``, all through the ``lewin`` CLI in a fresh
storage root. Then ``lewin label`` with ``llm.labels=distilled``, the paper's thresholds
(``llm.profile`` stays ``paper``: only quality high is kept) and the default engine (llama.cpp,
SmolLM2-135M-Instruct on the CPU). Each step is timed.

The figures are read off the Delta tables with delta-rs (no Spark):
- ``record_labels``: records per source and labeller (llm | classifier), gates, keep_prob;
  ``label_calls_ratio`` = records the LLM labelled / records labelled.
- ``label_models`` (the newest row): the held-out agreement Lewin measured (keep accuracy,
  quality accuracy, harmful recall, high-quality precision; classifier alone and routed:
  classifier plus the LLM inside ``llm.distill.band``), ``n_train`` / ``n_holdout``.
- ``llm_ledger`` (artifact ``quality``): label prompts and their outcome.
- The sample and its held-out slice are recomputed here (the lowest xxhash64(seed, record_id)
  per source, as ``jobs.label.distill_sample`` draws them; Spark's xxhash64 = XXH64 chained from
  seed 42), checked against ``label_models``' counts and classifier figure. That gives what the
  model's row does not hold: the LLM's own labels on the sample (quality x harm) and the
  **majority baseline**, the keep accuracy of always answering the held-out slice's most common
  keep decision. A tiny model that calls nearly everything high/none makes agreement trivially
  high; the baseline beside it shows how much of the agreement the classifier earned.

Targets of the issue (reported, not tuned to): label_calls_ratio <= 0.05 at label_agreement >= 0.9
on a held-out slice of >= 500 records. The CPU model labels ~1.5 prompts/s on 2 cores, so the
defaults keep the LLM to about 1,500 labels. Under the default curation rules only Reddit and
Blogger keep records: the real Twitter sample loses every tweet (retweets, quotes, and the 300-
character minimum) and the real Amazon sample every review (100-character minimum, exact dedup,
then the k-core leaves no interaction); Blogger keeps 61 of 100 posts. So the held-out slice is
nearly all Reddit: 1,000 per source with half held out gives ~530 (500 Reddit + 31 Blogger), and
~1,060 sample labels plus the band's. N = 150,000 generated records keep ~62,000 after curation
(~41 %), so the sample alone is ~1.7 % of the records labelled.

Output: a table per source, then ``name: value`` lines, the headline last: ``label_records``,
``label_holdout``, ``label_majority_baseline``, ``label_agreement_classifier``,
``label_agreement`` (routed keep agreement on the held-out slice), ``label_calls_ratio``.

    python bench/label_distill.py [--work /tmp/lewin-bench-label] [--n 150000]
        [--sample-per-source 1000] [--holdout-fraction 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import xxhash
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_reddit_jsonl  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REAL_SOURCES = ("reddit", "twitter", "blogger", "amazon")


def _spark_xxhash64(*values: int | str) -> int:
    """Spark's ``xxhash64(values...)``: XXH64 of each value (int: 4 bytes little-endian; string:
    UTF-8) seeded with the previous hash, from 42; a signed long."""
    h = 42
    for v in values:
        h = xxhash.xxh64_intdigest(v.to_bytes(4, "little", signed=True) if isinstance(v, int) else v.encode(), seed=h)
    return h - (1 << 64) if h >= 1 << 63 else h


def distill_sample(ids_by_source: dict[str, list[str]], seed: int, per_source: int,
                   holdout_fraction: float) -> dict[str, bool]:
    """record_id -> held out, for the sample ``jobs.label.distill_sample`` draws (same order, same
    ties broken by record_id, same rounding of the held-out share: Spark's round is half up)."""
    out: dict[str, bool] = {}
    for ids in ids_by_source.values():
        sample = sorted(ids, key=lambda r: (_spark_xxhash64(seed, r), r))[:per_source]
        held = int(len(sample) * holdout_fraction + 0.5)
        for i, r in enumerate(sorted(sample, key=lambda r: (_spark_xxhash64(seed, "holdout", r), r))):
            out[r] = i < held
    return out


def _table(root: Path, name: str, columns: list[str]) -> list[dict]:
    path = root / name
    if not (path / "_delta_log").is_dir():
        return []
    return DeltaTable(str(path)).to_pyarrow_table(columns=columns).to_pylist()


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _lewin(root: Path, cwd: Path, *args: str, sets: tuple[str, ...] = ()) -> float:
    """Run one ``lewin`` command on the storage root (its output passes through); its seconds."""
    cmd = [sys.executable, "-m", "lewin.jobs.cli", "--set", f"storage.root={root}",
           *[x for s in sets for x in ("--set", s)], *args]
    print(f"$ lewin {' '.join(cmd[3:])}", flush=True)
    t = time.perf_counter()
    # LEWIN_CONFIG empty: a lewin.yaml of the caller's must not change what is measured
    subprocess.run(cmd, cwd=cwd, check=True, env=dict(os.environ, LEWIN_CONFIG="", COLUMNS="160"))
    secs = time.perf_counter() - t
    print(f"  ({secs:.1f} s)", flush=True)
    return secs


def measure(work: Path, n: int, sample_per_source: int, holdout_fraction: float) -> dict:
    """Generate, ingest (generated + real samples), curate, scrub and label (distilled) in a fresh
    storage root under ``work``; the figures as a dict (see the module docstring)."""
    work = Path(work).absolute()
    root = work / "lewin-data"
    shutil.rmtree(root, ignore_errors=True)
    dumps = work / "dumps" / "reddit"
    shutil.rmtree(dumps, ignore_errors=True)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    write_reddit_jsonl(dumps, n)
    seconds["generate"] = time.perf_counter() - t
    print(f"generated {n} Reddit records in {seconds['generate']:.1f} s", flush=True)

    seconds["ingest generated reddit"] = _lewin(root, work, "ingest", "--source", "reddit", "--path", str(dumps))
    real = SHARED_DATA.resolve()
    if real.is_dir():
        # as `lewin run --data DIR` does (jobs.ingest.sources_under): each <source>/ folder as it is
        for source in REAL_SOURCES:
            if (real / source).is_dir():
                seconds[f"ingest real {source}"] = _lewin(root, work, "ingest", "--source", source,
                                                          "--path", str(real / source))
            else:
                print(f"note: no real {source} sample under {real}; skipped")
    else:
        print(f"note: {real} is absent: generated Reddit records only")
    seconds["curate"] = _lewin(root, work, "curate")
    seconds["scrub"] = _lewin(root, work, "scrub")
    seconds["label"] = _lewin(root, work, "label", sets=(
        "llm.labels=distilled", f"llm.distill.sample_per_source={sample_per_source}",
        f"llm.distill.holdout_fraction={holdout_fraction}"))
    return dict(_figures(root, sample_per_source, holdout_fraction), n_generated=n, seconds=seconds,
                real_data=str(real) if real.is_dir() else None)


def _figures(root: Path, sample_per_source: int, holdout_fraction: float) -> dict:
    labels = _table(root, "record_labels", ["record_id", "source", "quality", "harm", "keep", "gate", "labeller",
                                            "keep_prob"])
    models = sorted(_table(root, "label_models", ["model_version", "created_at", "params", "n_train", "n_holdout",
                                                  "holdout_metrics"]), key=lambda r: r["created_at"])
    ledger = _table(root, "llm_ledger", ["artifact", "status", "attempts", "tokens_in", "tokens_out"])
    if not models:
        raise RuntimeError(f"no label_models row under {root}: the distilled labeller trained nothing")
    model = models[-1]
    params = json.loads(model["params"])
    keep_q, (low, high) = set(params["quality_keep"]), params["band"]
    metrics = json.loads(model["holdout_metrics"])

    ids: dict[str, list[str]] = {}
    for r in labels:
        ids.setdefault(r["source"], []).append(r["record_id"])
    sample = distill_sample(ids, params["seed"], params["sample_per_source"], params["holdout_fraction"])

    per: dict[str, dict] = {}
    for r in labels:
        s = per.setdefault(r["source"], dict(records=0, kept=0, llm=0, classifier=0, sample=0, sample_llm=0,
                                             band=0, band_outside_sample=0, gates=Counter(), sample_labels=Counter(),
                                             held=[]))
        s["records"] += 1
        s["kept"] += bool(r["keep"])
        s["gates"][r["gate"]] += 1
        s[r["labeller"] or "unlabelled"] = s.get(r["labeller"] or "unlabelled", 0) + 1
        kp = r["keep_prob"]
        in_band = kp is not None and low <= kp <= high
        s["band"] += in_band
        if r["record_id"] not in sample:
            s["band_outside_sample"] += in_band
            continue
        s["sample"] += 1
        # a sample record's label is the LLM's (it wins over the classifier); none: a dead letter
        # (then the classifier labels it outside the band)
        ok = r["labeller"] == "llm" and r["quality"] is not None and r["harm"] is not None
        s["sample_llm"] += ok
        s["sample_labels"][f"{r['quality']}/{r['harm']}" if ok else "failed"] += 1
        if sample[r["record_id"]] and ok:
            truth = r["quality"] in keep_q and r["harm"] == "none"
            clf = kp is not None and kp >= 0.5
            s["held"].append((truth, clf, truth if in_band else clf))

    def held_figures(held: list[tuple[bool, bool, bool]]) -> dict:
        keep = sum(t for t, _, _ in held)
        return dict(holdout=len(held), holdout_keep=keep, majority_baseline=_ratio(max(keep, len(held) - keep), len(held)),
                    check_classifier=_ratio(sum(t == c for t, c, _ in held), len(held)),
                    check_routed=_ratio(sum(t == x for t, _, x in held), len(held)))

    sources = {}
    for src, s in sorted(per.items()):
        sources[src] = dict({k: v for k, v in s.items() if k not in ("held", "gates", "sample_labels")},
                            gates=dict(s["gates"]), sample_labels=dict(s["sample_labels"].most_common()),
                            label_calls_ratio=_ratio(s["llm"], s["llm"] + s["classifier"]),
                            agreement=metrics.get(src), **held_figures(s["held"]))
    all_held = held_figures([h for s in per.values() for h in s["held"]])
    overall = metrics.get("all") or {}
    # the recomputed slice must be the model's: the same counts and the same classifier figure
    n_holdout = sum(json.loads(model["n_holdout"]).values())
    n_sample = sum(json.loads(model["n_train"]).values()) + n_holdout
    problems = []
    if all_held["holdout"] != (overall.get("holdout") or 0) or all_held["holdout"] != n_holdout:
        problems.append(f"held-out slice {all_held['holdout']} here, {overall.get('holdout')} in label_models")
    clf = (overall.get("classifier") or {}).get("keep_accuracy")
    if clf is not None and abs(clf - (all_held["check_classifier"] or 0)) > 1e-9:
        problems.append(f"classifier keep accuracy {all_held['check_classifier']} here, {clf} in label_models")
    if sum(s["sample_llm"] for s in per.values()) != n_sample:
        problems.append(f"{sum(s['sample_llm'] for s in per.values())} LLM labels on the sample here, "
                        f"{n_sample} in label_models")
    by = Counter()
    for r in ledger:
        if r["artifact"] == "quality":
            by[r["status"]] += 1
            by["attempts"] += r["attempts"] or 0
            by["tokens_in"] += r["tokens_in"] or 0
            by["tokens_out"] += r["tokens_out"] or 0
    llm = sum(s["llm"] for s in per.values())
    labelled = llm + sum(s["classifier"] for s in per.values())
    probs = [r["keep_prob"] for r in labels if r["keep_prob"] is not None]
    return dict(
        records=len(labels), labelled=labelled, llm_labelled=llm, classifier_labelled=labelled - llm,
        kept=sum(s["kept"] for s in per.values()), label_calls_ratio=_ratio(llm, labelled),
        sample=sum(s["sample"] for s in per.values()), sample_in_model=n_sample,
        keep_prob_range=[min(probs), max(probs)] if probs else None, band=sum(s["band"] for s in per.values()), band_outside_sample=sum(s["band_outside_sample"] for s in per.values()),
        sample_labels=dict(sum((Counter(s["sample_labels"]) for s in per.values()), Counter()).most_common()),
        ledger_quality=dict(by), model_version=model["model_version"], params=params,
        n_train=json.loads(model["n_train"]), n_holdout=json.loads(model["n_holdout"]), agreement=overall,
        holdout=all_held["holdout"], holdout_keep=all_held["holdout_keep"],
        majority_baseline=all_held["majority_baseline"],
        agreement_classifier=(overall.get("classifier") or {}).get("keep_accuracy"),
        agreement_routed=(overall.get("routed") or {}).get("keep_accuracy"),
        check="ok" if not problems else "; ".join(problems), check_routed=all_held["check_routed"],
        sources=sources)


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def report(m: dict) -> None:
    secs = m["seconds"]
    print("steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in secs.items()))
    sent = m["ledger_quality"].get("attempts", 0)
    print(f"label: {sent} label prompts sent in {secs['label']:.0f} s ({_f(sent / secs['label'], 2)} prompts/s, "
          f"engine start and training included); ledger {m['ledger_quality']}")
    print(f"label model {m['model_version']}: band {m['params']['band']}, quality_keep {m['params']['quality_keep']}, "
          f"n_train {m['n_train']}, n_holdout {m['n_holdout']}; recomputed sample check: {m['check']}")
    cols = ("source", "records", "kept", "by_llm", "by_clf", "sample", "held", "band+", "calls", "majority",
            "clf_keep", "rt_keep", "clf_q", "rt_q", "rt_harm_rec", "rt_high_prec")
    print("  ".join(f"{c:>8s}" if i else f"{c:8s}" for i, c in enumerate(cols)))
    rows = [(src, s, s.get("agreement") or {}) for src, s in m["sources"].items()]
    rows.append(("all", dict(records=m["records"], kept=m["kept"], llm=m["llm_labelled"],
                             classifier=m["classifier_labelled"], sample=m["sample"], holdout=m["holdout"],
                             band_outside_sample=m["band_outside_sample"], label_calls_ratio=m["label_calls_ratio"],
                             majority_baseline=m["majority_baseline"]), m["agreement"]))
    for src, s, a in rows:
        c, r = a.get("classifier") or {}, a.get("routed") or {}
        cells = [s["records"], s["kept"], s["llm"], s["classifier"], s["sample"], s["holdout"],
                 s["band_outside_sample"], _f(s["label_calls_ratio"]), _f(s["majority_baseline"]),
                 _f(c.get("keep_accuracy")), _f(r.get("keep_accuracy")), _f(c.get("quality_accuracy")),
                 _f(r.get("quality_accuracy")), _f(r.get("harmful_recall")), _f(r.get("high_precision"))]
        print(f"{src:8s}  " + "  ".join(f"{x!s:>8s}" for x in cells))
    print("  (held: held-out LLM labels; band+: records sent to the LLM for their keep_prob, outside the sample; "
          "calls: label_calls_ratio; majority: always the held-out slice's commonest keep decision; "
          "clf_/rt_: classifier alone / routed)")
    print("LLM labels on the sample (quality/harm):")
    for src, s in m["sources"].items():
        print(f"  {src:8s} {s['sample_labels']}")
    print(f"  {'all':8s} {m['sample_labels']}")
    for src, s in m["sources"].items():
        print(f"gates {src}: {s['gates']}")
    kp = m["keep_prob_range"] or [None, None]
    print(f"records in the band [{m['params']['band'][0]}, {m['params']['band'][1]}] (sample included): {m['band']}; "
          f"keep_prob from {_f(kp[0], 7)} to {_f(kp[1], 7)}")
    if m["majority_baseline"] is not None and (m["agreement_routed"] or 0) <= m["majority_baseline"]:
        # e.g. the CPU model calling every sampled record high/none: the classifier learns one class
        print(f"WARNING: the routed agreement ({_f(m['agreement_routed'])}) does not beat the majority baseline "
              f"({_f(m['majority_baseline'])}): on this slice it says nothing about the classifier")
    met = (m["label_calls_ratio"] is not None and m["label_calls_ratio"] <= 0.05,
           (m["agreement_routed"] or 0) >= 0.9, m["holdout"] >= 500)
    print("issue targets: label_calls_ratio <= 0.05 " + ("met" if met[0] else "NOT met")
          + "; label_agreement >= 0.9 " + ("met" if met[1] else "NOT met")
          + "; held-out slice >= 500 " + ("met" if met[2] else "NOT met"))
    print(f"label_llm_labelled: {m['llm_labelled']}")
    print(f"label_seconds: {secs['label']:.0f}")
    print(f"label_records: {m['labelled']}")
    print(f"label_holdout: {m['holdout']}")
    print(f"label_majority_baseline: {_f(m['majority_baseline'])}")
    print(f"label_agreement_classifier: {_f(m['agreement_classifier'])}")
    print(f"label_agreement: {_f(m['agreement_routed'])}")
    print(f"label_calls_ratio: {_f(m['label_calls_ratio'], 4)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lewin-bench-label"),
                    help="working folder: dumps/ and the storage root lewin-data/ (replaced)")
    ap.add_argument("--n", type=int, default=150_000, help="generated Reddit records")
    ap.add_argument("--sample-per-source", type=int, default=1000)
    ap.add_argument("--holdout-fraction", type=float, default=0.5)
    a = ap.parse_args()
    t = time.perf_counter()
    m = measure(a.work, a.n, a.sample_per_source, a.holdout_fraction)
    print(f"measured in {time.perf_counter() - t:.0f} s")
    report(m)


if __name__ == "__main__":
    main()
