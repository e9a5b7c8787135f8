"""k-core scaling: a synthetic power-law user-item graph at N and 10 N interactions through
``lewin.udfs.kcore`` on the embedded engine (checkpointing every round to Delta), with
plain-Python peeling at N as the baseline and as a correctness check.

Prints rounds and seconds for both sizes and the growth ratio (10N time / N time).

    python bench/kcore.py --n 1000000
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
from _common import cores, run_child  # noqa: E402


def make_graph(n: int, path: Path, seed: int = 11) -> None:
    """``n`` draws of (user, item) with Zipf-like popularity on both sides (user rank^-0.9 over
    n/4 users, item rank^-1 over n/20 items): a few very active users and very popular items and
    a long tail of one-off buyers, as in review data. Repeated pairs collapse to one edge."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users, n_items = max(10, n // 4), max(10, n // 20)
    wu = 1.0 / np.arange(1, n_users + 1) ** 0.9
    wi = 1.0 / np.arange(1, n_items + 1) ** 1.0
    users = rng.choice(n_users, n, p=wu / wu.sum())
    items = rng.choice(n_items, n, p=wi / wi.sum())
    tb = pa.table({"user_id": pa.array(users).cast(pa.string()), "item_id": pa.array(items).cast(pa.string())})
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(tb, path / "edges.parquet")


def run_lewin(edges: str, root: str) -> None:
    from lewin.jobs.engine import get_engine
    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import load_config
    from lewin.udfs.kcore import kcore

    cfg = load_config(None, [f"storage.root={root}"])
    eng = get_engine(cfg.engine)
    store = TableStore(eng, cfg.storage)
    df = eng.spark.read.parquet(edges)
    t = time.perf_counter()
    core, rounds = kcore(df, 8, 3, store.checkpointer(("_kc_0", "_kc_1")))
    secs = time.perf_counter() - t
    store.overwrite("core", core)
    print(json.dumps({"seconds": secs, "rounds": len(rounds), "core": rounds[-1].interactions,
                      "sizes": [r.interactions for r in rounds]}))
    eng.stop()


def run_python(edges: str, core_table: str) -> None:
    import pyarrow.parquet as pq

    from lewin.udfs.kcore import kcore_reference

    tb = pq.read_table(Path(edges) / "edges.parquet")
    e = set(zip(tb["user_id"].to_pylist(), tb["item_id"].to_pylist()))
    t = time.perf_counter()
    core = kcore_reference(e, 8, 3)
    secs = time.perf_counter() - t
    same = None
    if core_table:
        from deltalake import DeltaTable

        got = DeltaTable(core_table).to_pyarrow_table()
        same = set(zip(got["user_id"].to_pylist(), got["item_id"].to_pylist())) == core
    print(json.dumps({"seconds": secs, "core": len(core), "same_as_lewin": same}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        kind, *args = a.child
        (run_lewin if kind == "lewin" else run_python)(*args)
        return
    work = Path(tempfile.mkdtemp(prefix="lewin-bench-kcore-"))
    try:
        results = {}
        for n in (a.n, a.n * a.scale):
            make_graph(n, work / f"g{n}")
            res, mem = run_child([__file__, "--child", "lewin", str(work / f"g{n}"), str(work / f"t{n}")])
            results[n] = res
            print(f"lewin  n={n:>10,}  {res['rounds']:3d} rounds  {res['seconds']:7.1f}s  core {res['core']:,} "
                  f"interactions  peak {mem / 1e6:.0f} MB  sizes {res['sizes']}")
        py, _ = run_child([__file__, "--child", "python", str(work / f"g{a.n}"), str(work / f"t{a.n}" / "core")])
        print(f"python n={a.n:>10,}  peeling {py['seconds']:7.1f}s  core {py['core']:,}  identical to Lewin: {py['same_as_lewin']}")
        small, big = results[a.n], results[a.n * a.scale]
        print(f"cores: {cores()}")
        print(f"rounds_{a.n}: {small['rounds']}")
        print(f"rounds_{a.n * a.scale}: {big['rounds']}")
        print(f"seconds_{a.n}: {small['seconds']:.1f}")
        print(f"seconds_{a.n * a.scale}: {big['seconds']:.1f}")
        print(f"growth_ratio: {big['seconds'] / small['seconds']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
