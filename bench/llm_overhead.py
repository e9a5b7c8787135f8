"""LLM stage overhead: the same N prompts through the raw CPU engine (llama.cpp, every core, in
one process) and through Lewin's stage (Spark job per chunk, worker pool, ledger writes) on the
embedded engine, in one run. Prints tokens/s for both and the pipeline efficiency
(raw engine time / stage time; 1.0 = no overhead).

    python bench/llm_overhead.py --n 32
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cores, run_child  # noqa: E402


def prompts(n: int) -> list[dict]:
    from lewin.jobs.sample_data.generate import post

    rng = random.Random(5)
    return [{"input_id": f"r{i}", "user_id": f"u{i % 5}", "source": "reddit",
             "context": json.dumps({"text": post(rng), "date": "2021-01-01"})} for i in range(n)]


def run_raw(n: str, artifact: str) -> None:
    from lewin.schemas.config import load_config
    from lewin.jobs.llm import backend_spec, prompt_options
    from lewin.schemas.llm import output_schema
    from lewin.udfs.llm_backends import Request, Sampling, get_backend
    from lewin.udfs.llm_prompts import render

    cfg = load_config(None, [f"llm.engine.threads_per_worker={cores()}"])
    opts = prompt_options(cfg)
    eng = get_backend(backend_spec(cfg))
    reqs = [Request(p["input_id"], render(artifact, json.loads(p["context"]), opts), output_schema(artifact))
            for p in prompts(int(n))]
    budget = cfg.llm.reply_budgets[artifact]
    s = cfg.llm.sampling
    t = time.perf_counter()
    out = eng.generate(reqs, Sampling(s.temperature, s.top_p, budget, s.seed))
    secs = time.perf_counter() - t
    print(json.dumps({"seconds": secs, "tokens_out": sum(o.tokens_out for o in out),
                      "tokens_in": sum(o.tokens_in for o in out), "errors": sum(o.error is not None for o in out)}))


def run_stage(n: str, artifact: str, root: str) -> None:
    from lewin.jobs.engine import get_engine
    from lewin.jobs.llm import run_artifact
    from lewin.jobs.stage import RunContext
    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import load_config

    cfg = load_config(None, [f"storage.root={root}", "llm.max_attempts=1"])
    eng = get_engine(cfg.engine)
    store = TableStore(eng, cfg.storage)
    inputs = eng.spark.createDataFrame(prompts(int(n)), "input_id string, user_id string, source string, context string")
    t = time.perf_counter()
    res = run_artifact(RunContext(store, cfg, "llm", "bench"), artifact, inputs)
    secs = time.perf_counter() - t
    print(json.dumps({"seconds": secs, "tokens_out": res.tokens_out, "tokens_in": res.tokens_in, "sent": res.sent}))
    eng.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--artifact", default="scenario")
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        kind, *args = a.child
        (run_raw if kind == "raw" else run_stage)(*args)
        return
    work = Path(tempfile.mkdtemp(prefix="lewin-bench-llm-"))
    try:
        raw, _ = run_child([__file__, "--child", "raw", str(a.n), a.artifact])
        stage, _ = run_child([__file__, "--child", "stage", str(a.n), a.artifact, str(work / "t")])
        print(f"raw engine (llama.cpp, {cores()} threads, one process): {raw['seconds']:.1f}s, "
              f"{raw['tokens_out']} tokens out, {raw['tokens_out'] / raw['seconds']:.1f} tokens/s")
        print(f"lewin stage ({cores()} workers, Spark + ledger):        {stage['seconds']:.1f}s, "
              f"{stage['tokens_out']} tokens out, {stage['tokens_out'] / stage['seconds']:.1f} tokens/s")
        print(f"raw_tokens_per_s: {raw['tokens_out'] / raw['seconds']:.1f}")
        print(f"stage_tokens_per_s: {stage['tokens_out'] / stage['seconds']:.1f}")
        print(f"pipeline_efficiency: {raw['seconds'] / stage['seconds']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
