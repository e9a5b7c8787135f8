"""Shared helpers for the benchmarks: synthetic Reddit-like dumps, child runs with peak memory."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

WORDS = (
    "i me my we our you he she they it was is are have had do did not but and or so because when then just "
    "really very time day week year people friend family work job home school money life love feel think know "
    "want need tell told said asked went came made took got gave found felt thought started stopped tried "
    "always never sometimes today yesterday tomorrow morning night mother father sister brother partner boss "
    "dog cat car house city trip dinner coffee phone message call email advice help problem question answer"
).split()


def synth_text(rng: random.Random, chars: int) -> str:
    out, n = [], 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    s = " ".join(out)
    return s[0].upper() + s[1:] + "."


def write_reddit_jsonl(out_dir: Path, n: int, files: int = 8, seed: int = 7) -> list[Path]:
    """``n`` Pushshift-like submissions (~750 bytes on average, a realistic length mix) in
    ``files`` JSONL files, with the usual share of bots, deleted and removed posts."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"RS_part{i:03d}.jsonl" for i in range(files)]
    handles = [p.open("w", encoding="utf-8") for p in paths]
    lengths = [40, 120, 250, 350, 450, 600, 900, 1400]
    users = max(1, n // 6)
    try:
        for i in range(n):
            author = rng.choice(["AutoModerator", "[deleted]"]) if rng.random() < 0.03 else f"user{rng.randrange(users)}"
            text = synth_text(rng, rng.choice(lengths))
            r = rng.random()
            if r < 0.02:
                text = "[removed]"
            elif r < 0.04:
                text = f"<p>{text}</p> see https://example.com/{i}?ref=x &amp; more"
            rec = {
                "id": f"t{i:x}", "author": author, "created_utc": 1600000000 + i * 7, "score": rng.randrange(0, 60),
                "num_comments": rng.randrange(0, 30), "title": synth_text(rng, rng.choice([20, 40, 70])),
                "selftext": text, "subreddit": rng.choice(["AskReddit", "offmychest", "relationship_advice"]),
                "distinguished": "moderator" if rng.random() < 0.005 else None, "stickied": False,
            }
            handles[i % files].write(json.dumps(rec) + "\n")
    finally:
        for h in handles:
            h.close()
    return paths


def _tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants (bytes), from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    total, stack = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


def run_child(args: list[str], env: dict | None = None) -> tuple[dict, int]:
    """Run ``python <args>`` and return (the JSON it printed last, peak RSS of its process tree)."""
    here = str(Path(__file__).parent)  # Spark's Python workers import bench helpers by name
    base = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(base, **(env or {})))
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    stop.set()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{err[-4000:]}")
    last = [ln for ln in out.splitlines() if ln.startswith("{")][-1]
    return json.loads(last), peak


def cores() -> int:
    return len(os.sched_getaffinity(0))


def cpu_work(batch):
    """A CPU-bound, pure-Python batch function (a stand-in for per-document NLP)."""
    import pyarrow as pa

    texts = batch.column("text").to_pylist()
    scores = []
    for t in texts:
        h = 0
        for _ in range(40):
            for ch in t:
                h = (h * 31 + ord(ch)) & 0xFFFFFFFF
        scores.append(h)
    yield pa.record_batch({"score": pa.array(scores, pa.int64())})
