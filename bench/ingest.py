"""Ingest throughput: N synthetic Reddit-like records through ``lewin ingest`` on the embedded
engine (Sail + Delta) and on classic local Spark (``local[*]``; Parquet tables, no Delta jars
offline), each in its own process, in one run. Prints records/s per core and peak memory.

    python bench/ingest.py --n 1000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cores, run_child, write_reddit_jsonl  # noqa: E402


def child(engine: str, data: str, root: str) -> None:
    from lewin.jobs.engine import get_engine
    from lewin.jobs.ingest import ingest
    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import load_config

    cfg = load_config(None, [f"engine.kind={engine}", f"storage.root={root}"])
    t0 = time.perf_counter()
    eng = get_engine(cfg.engine)
    started = time.perf_counter() - t0
    store = TableStore(eng, cfg.storage)
    t1 = time.perf_counter()
    r = ingest(store, cfg, "reddit", [data])
    secs = time.perf_counter() - t1
    print(json.dumps({"engine": engine, "seconds": secs, "startup": started, "records": r.records_in,
                      "kept": r.kept, "quarantined": r.quarantined, "reconciles": r.reconciles}))
    eng.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--engines", default="embedded,spark")
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "DATA", "ROOT"))
    a = ap.parse_args()
    if a.child:
        child(*a.child)
        return
    work = Path(tempfile.mkdtemp(prefix="lewin-bench-ingest-"))
    try:
        t = time.perf_counter()
        paths = write_reddit_jsonl(work / "data", a.n, a.files)
        mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"generated {a.n} records, {mb:.0f} MB in {len(paths)} files ({time.perf_counter() - t:.1f}s)")
        n_cores = cores()
        results = {}
        for engine in a.engines.split(","):
            res, peak = run_child([__file__, "--child", engine, str(work / "data"), str(work / f"tables-{engine}")])
            assert res["records"] == a.n and res["reconciles"], res
            res["peak_rss_mb"] = peak / 1e6
            res["per_core"] = a.n / res["seconds"] / n_cores
            results[engine] = res
            print(f"{engine:9s} {res['seconds']:7.1f}s (+{res['startup']:.1f}s start)  "
                  f"{a.n / res['seconds']:9.0f} rec/s  {res['per_core']:8.0f} rec/s/core  peak {peak / 1e6:6.0f} MB  "
                  f"kept {res['kept']} quarantined {res['quarantined']}")
        print(f"cores: {n_cores}")
        for engine, res in results.items():
            print(f"{engine}_records_per_s_per_core: {res['per_core']:.0f}")
            print(f"{engine}_peak_rss_mb: {res['peak_rss_mb']:.0f}")
        if "embedded" in results and "spark" in results:
            print(f"ratio_per_core_embedded_vs_spark: {results['embedded']['per_core'] / results['spark']['per_core']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
