"""Which embedded-engine set-up uses every core for Python-heavy stages?

The same CPU-bound Python batch function (``_common.cpu_work``) over N texts, as ``mapInArrow``
with 1 and with 2 partitions, under Sail's ``local`` and ``local-cluster`` modes running the UDF
inline, and under ``local`` with Lewin's worker pool (``lewin.udfs.pool``); classic Spark
(one Python worker process per task) as the reference. Each set-up runs in its own process.

    python bench/engine_modes.py --n 4000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cores, cpu_work, run_child  # noqa: E402


def child(kind: str, mode: str, workers: int, n: int) -> None:
    import random

    from pyspark.sql.types import LongType, StructField, StructType

    from lewin.jobs.engine import get_engine
    from lewin.schemas.config import EngineConfig
    from lewin.udfs.pool import map_in_arrow_pooled

    eng = get_engine(EngineConfig(kind=kind, sail_mode=mode, python_workers=workers, master="local[*]"))
    spark = eng.spark
    rng = random.Random(1)
    rows = [("".join(rng.choice("abcdefghij ") for _ in range(400)),) for _ in range(n)]
    out = StructType([StructField("score", LongType())])
    timings = {}
    for parts in (1, 2, 1, 2):  # second pass is the measured one (warm pool, warm JIT caches)
        df = spark.createDataFrame(rows, "text string").repartition(parts)
        df = df.cache() if kind == "spark" else df
        df.count()
        t = time.perf_counter()
        n_out = map_in_arrow_pooled(df, cpu_work, out, eng.python_workers).count()
        timings[parts] = time.perf_counter() - t
        assert n_out == n
    print(json.dumps({"t1": timings[1], "t2": timings[2]}))
    eng.stop()


SETUPS = [
    ("sail local, inline UDF", "embedded", "local", 1),
    ("sail local-cluster, inline UDF", "embedded", "local-cluster", 1),
    ("sail local + Lewin worker pool", "embedded", "local", 0),
    ("classic Spark local[*] (reference)", "spark", "local", 1),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--child", nargs=4)
    a = ap.parse_args()
    if a.child:
        kind, mode, workers, n = a.child
        child(kind, mode, int(workers), int(n))
        return
    print(f"cores: {cores()}; N = {a.n} texts of 400 chars; time of the UDF stage, 1 vs 2 partitions")
    speedups = {}
    for label, kind, mode, workers in SETUPS:
        res, _ = run_child([__file__, "--child", kind, mode, str(workers), str(a.n)])
        speedups[label] = res["t1"] / res["t2"]
        print(f"{label:38s} 1 part {res['t1']:6.2f}s   2 parts {res['t2']:6.2f}s   speed-up {speedups[label]:.2f}x")
    keys = ["sail_local_inline", "sail_local_cluster_inline", "sail_local_pool", "classic_spark"]
    for k, label in zip(keys, speedups):
        print(f"speedup_2_partitions_{k}: {speedups[label]:.2f}")


if __name__ == "__main__":
    main()
