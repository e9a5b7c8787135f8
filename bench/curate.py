"""Curation throughput: the same N synthetic Reddit-like JSONL records through

  (a) Lewin on the embedded engine: ``ingest`` (JSONL -> bronze Delta) then ``curate`` (rules,
      cleaning, fastText language ID -> silver Delta), every core;
  (b) datatrove's LocalPipelineExecutor with equivalent rules: JsonlReader -> the same Reddit
      rules (LambdaFilter) -> the same HTML/URL/markdown cleaning (regex, in a pipeline step) ->
      the 300-character rule -> LanguageFilter (fastText lid.176, English >= 0.65) -> JsonlWriter,
      one task per input file on the same cores;
  (c) pyarrow in a single process for the rule part (read, filter, strip), as the near-the-metal
      reference line.

Lewin runs with exact dedup and the datatrove quality taggers switched off: neither is part of
the datatrove pipeline it is compared with. Each side runs in its own process, in one run.

    python bench/curate.py --n 200000
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import cores, run_child, write_reddit_jsonl  # noqa: E402

# The cleaning both sides apply (a subset of lewin.udfs.clean in Python's re syntax).
_STRIP = [
    (re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(\s[^<>]{0,500})?/?>"), " "),
    (re.compile(r"!?\[([^\]\n]{0,300})\]\([^)\s]{0,1000}\)"), r"\1"),
    (re.compile(r"(?i)\b(https?://|ftp://|www\.)[^\s<>\"']+"), " "),
    (re.compile(r"\*\*([^*\n]+)\*\*"), r"\1"),
    (re.compile(r"[ \t]+"), " "),
]
_ENTITIES = [("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&nbsp;", " ")]
_SYSTEM = re.compile(r"(?i)^(automoderator|reddit|\[deleted\]|\[removed\]|.*bot|bot_.*)$")


def _clean(text: str) -> str:
    for a, b in _ENTITIES:
        text = text.replace(a, b)
    for rx, repl in _STRIP:
        text = rx.sub(repl, text)
    return text.strip()


# --- (b) datatrove -----------------------------------------------------------------------------------
def _adapter(self, data: dict, path: str, id_in_file: int | str):
    return {"text": data.get("selftext") or "", "id": data.get("id"), "metadata": {
        "author": data.get("author"), "score": data.get("score"), "num_comments": data.get("num_comments"),
        "distinguished": data.get("distinguished")}}


def _rules(doc) -> bool:
    m = doc.metadata
    if (m.get("score") or 0) < 2 or (m.get("num_comments") or 0) < 2:
        return False
    if m.get("distinguished") in ("moderator", "admin", "special"):
        return False
    author = m.get("author") or ""
    if _SYSTEM.match(author) or doc.text.strip() in ("[deleted]", "[removed]"):
        return False
    return True


def _clean_step(data, rank: int = 0, world_size: int = 1):
    for doc in data:
        doc.text = _clean(doc.text)
        yield doc


class _NumpyScores:
    """fasttext-predict returns plain floats; datatrove calls ``.item()`` on each score."""

    def __init__(self, model):
        self.model = model

    def predict(self, text, k=-1):
        import numpy as np

        labels, probs = self.model.predict(text, k=k)
        return labels, np.array(probs)


class _LocalFT176:
    """datatrove's FT176LID with the offline lid.176.ftz (datatrove would download lid.176.bin);
    the model loads lazily in each worker, as datatrove's own does."""

    def __init__(self, languages):
        self.languages = languages
        self._lid = None

    def predict(self, doc):
        if self._lid is None:
            import fasttext
            from datatrove.utils.lid import FT176LID

            from lewin.udfs.langid import default_model_path

            self._lid = FT176LID(self.languages)
            self._lid._model = _NumpyScores(fasttext.load_model(default_model_path()))
        return self._lid.predict(doc)


def _accept_fasttext_predict() -> None:
    """datatrove asks for the `fasttext-numpy2-wheel` distribution; the installed `fasttext` module
    is fasttext-predict (the same C++ predict, NumPy-2 safe), which serves the same model. At
    module level because datatrove's workers re-import this file and re-check on unpickling."""
    try:
        import datatrove.utils._import_utils as deps
    except ImportError:
        return
    accept = deps._is_distribution_available
    deps._is_distribution_available = lambda name: name == "fasttext-numpy2-wheel" or accept(name)


_accept_fasttext_predict()


def run_datatrove(data: str, out: str, tasks: int, workers: int) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.filters import LambdaFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    lang = LanguageFilter(languages=["en"], language_threshold=0.65)
    lang.model = _LocalFT176(["en"])
    pipeline = [
        JsonlReader(data, adapter=_adapter, glob_pattern="*.jsonl"),
        LambdaFilter(_rules),
        _clean_step,
        LambdaFilter(lambda d: len(d.text) >= 300),
        lang,
        JsonlWriter(out, compression=None),
    ]
    t = time.perf_counter()
    LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=out + "_logs",
                          skip_completed=False).run()
    secs = time.perf_counter() - t
    kept = sum(1 for p in Path(out).glob("*.jsonl") for _ in open(p))
    print(json.dumps({"seconds": secs, "kept": kept}))


# --- (a) Lewin ---------------------------------------------------------------------------------------
def run_lewin(data: str, root: str) -> None:
    from lewin.jobs.curate import curate
    from lewin.jobs.engine import get_engine
    from lewin.jobs.ingest import ingest
    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import load_config

    cfg = load_config(None, [f"storage.root={root}", "curate.dedup.enabled=false", "curate.quality.enabled=false"])
    t0 = time.perf_counter()
    eng = get_engine(cfg.engine)
    store = TableStore(eng, cfg.storage)
    t = time.perf_counter()
    ing = ingest(store, cfg, "reddit", [data])
    t_ing = time.perf_counter() - t
    cur = curate(store, cfg, "reddit")
    secs = time.perf_counter() - t
    print(json.dumps({"seconds": secs, "startup": t - t0, "ingest_s": t_ing, "kept": cur.kept,
                      "records": ing.records_in, "steps": {**ing.seconds_by_step, **cur.seconds_by_step}}))
    eng.stop()


# --- (c) pyarrow -------------------------------------------------------------------------------------
def run_pyarrow(data: str, out: str) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    t = time.perf_counter()
    kept = 0
    for i, p in enumerate(sorted(Path(data).glob("*.jsonl"))):
        tb = pj.read_json(p)
        author = pc.fill_null(tb["author"], "")
        text = pc.fill_null(tb["selftext"], "")
        dist = pc.fill_null(tb["distinguished"].cast(pa.string()), "")
        mask = pc.and_(pc.greater_equal(tb["score"], 2), pc.greater_equal(tb["num_comments"], 2))
        mask = pc.and_(mask, pc.invert(pc.match_substring_regex(author, _SYSTEM.pattern[4:], ignore_case=True)))
        mask = pc.and_(mask, pc.invert(pc.is_in(dist, pa.array(["moderator", "admin", "special"]))))
        mask = pc.and_(mask, pc.invert(pc.is_in(text, pa.array(["[deleted]", "[removed]"]))))
        tb = tb.filter(mask)
        t2 = tb["selftext"]
        for a, b in _ENTITIES:
            t2 = pc.replace_substring(t2, a, b)
        for rx, repl in _STRIP:
            t2 = pc.replace_substring_regex(t2, rx.pattern, repl.replace("\\1", "\\1"))
        tb = tb.set_column(tb.schema.get_field_index("selftext"), "selftext", pc.utf8_trim_whitespace(t2))
        tb = tb.filter(pc.greater_equal(pc.utf8_length(tb["selftext"]), 300))
        pq.write_table(tb, f"{out}/part{i}.parquet")
        kept += tb.num_rows
    print(json.dumps({"seconds": time.perf_counter() - t, "kept": kept}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--files", type=int, default=0, help="input files (default: 2 per core)")
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        kind, *args = a.child
        {"lewin": run_lewin, "datatrove": run_datatrove, "pyarrow": run_pyarrow}[kind](
            *[int(x) if x.isdigit() else x for x in args])
        return
    n_cores = cores()
    files = a.files or 2 * n_cores
    work = Path(tempfile.mkdtemp(prefix="lewin-bench-curate-"))
    try:
        t = time.perf_counter()
        write_reddit_jsonl(work / "data", a.n, files)
        print(f"generated {a.n} records in {files} files ({time.perf_counter() - t:.1f}s); cores: {n_cores}")
        lw, lw_mem = run_child([__file__, "--child", "lewin", str(work / "data"), str(work / "lewin")])
        print(f"lewin      {lw['seconds']:7.2f}s (ingest {lw['ingest_s']:.2f}s, +{lw['startup']:.1f}s engine start) "
              f"kept {lw['kept']}  peak {lw_mem / 1e6:.0f} MB  steps {lw['steps']}")
        (work / "dt").mkdir()
        dt, dt_mem = run_child([__file__, "--child", "datatrove", str(work / "data"), str(work / "dt" / "out"),
                                str(files), str(n_cores)])
        print(f"datatrove  {dt['seconds']:7.2f}s kept {dt['kept']}  peak {dt_mem / 1e6:.0f} MB")
        (work / "pa").mkdir()
        pa_res, _ = run_child([__file__, "--child", "pyarrow", str(work / "data"), str(work / "pa")])
        print(f"pyarrow    {pa_res['seconds']:7.2f}s kept {pa_res['kept']} (rules + strip only, no language ID, 1 process)")
        lw_pc = a.n / lw["seconds"] / n_cores
        dt_pc = a.n / dt["seconds"] / n_cores
        print(f"lewin_records_per_s_per_core: {lw_pc:.0f}")
        print(f"datatrove_records_per_s_per_core: {dt_pc:.0f}")
        print(f"pyarrow_rules_records_per_s: {a.n / pa_res['seconds']:.0f}")
        print(f"ratio_per_core: {lw_pc / dt_pc:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
