"""Shared fixtures: one engine per test session, a fresh table store per test.

``LEWIN_TEST_ENGINE`` picks the engine (default ``embedded``: the local Sail server). PySpark
cannot hold a Spark Connect and a classic session in one process, so the classic-Spark run of
the engine-agnostic tests (marker ``transforms``) happens in a subprocess started by
``tests/test_classic_engine.py``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from lewin.jobs.engine import cores, get_engine
from lewin.jobs.tables import TableStore
from lewin.schemas.config import EngineConfig, LewinConfig, StorageConfig

ENGINE = os.environ.get("LEWIN_TEST_ENGINE", "embedded")
# This worker's share of the cores under pytest-xdist: a CPU-bound library (torch, llama.cpp) with
# a spinning thread per core, while the other worker's JVMs run on the same cores, mostly waits on
# its own threads (the trainer's CPU proof: 7 min alone, 20 in the suite on 2 threads)
CPU_SHARE = max(1, cores() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = (PROJECT / ".." / "shared" / "data").resolve()
FIXTURES = Path(__file__).parent / "fixtures"
# Classic Spark in tests: hundreds of tiny queries on a few rows each, so the JVM's compilers
# dominate; interpreted expressions (no Janino code generation per query) and the C1 JIT only
# give the same results (test_cluster compares both) in about a third less time (test_kcore and
# test_clean on classic Spark: 122 s -> 81 s).
CLASSIC_TEST_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}


SAMPLE_RUN_GROUP = "sample_run"
# The longest groups first (measured on 2 cores): the scheduler hands groups out in collection
# order, so the long ones start at once and the short ones fill in around them.
_FIRST = (SAMPLE_RUN_GROUP, "tests/test_classic_engine.py", "tests/test_cluster.py", "tests/test_patterns.py")


@functools.lru_cache(maxsize=None)
def _sample_run_modules() -> frozenset[str]:
    """Test modules with a test or fixture taking the shared sample run."""
    uses = re.compile(r"def \w+\([^)]*\bsample_run\b")
    return frozenset(f"tests/{p.name}" for p in Path(__file__).parent.glob("test_*.py") if uses.search(p.read_text()))


def worker_group(nodeid: str) -> str:
    """The worker group of a test under pytest-xdist: its module (module- and session-scoped
    fixtures are built once per worker), and one group for every module on the shared sample run,
    so that run is made once per suite."""
    module = nodeid.split("::", 1)[0]
    return SAMPLE_RUN_GROUP if module in _sample_run_modules() else module


def pytest_xdist_make_scheduler(config, log):
    """``-n 2`` (pyproject.toml) distributes groups (``worker_group``), not single tests. xdist's own
    ``xdist_group`` marks cannot be used: they rename node ids, which pytest 9.2 no longer allows."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return ByGroup(config, log)


def pytest_collection_modifyitems(config, items):
    rank = {g: k for k, g in enumerate(_FIRST)}
    items.sort(key=lambda i: rank.get(worker_group(i.nodeid), len(rank)))  # stable: file order otherwise


def pytest_configure(config):
    os.environ.setdefault("TZ", "UTC")
    if ENGINE == "spark":  # a parent process's Connect session must not leak into classic mode
        for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
            os.environ.pop(var, None)


@pytest.fixture(scope="session")
def engine():
    eng = get_engine(EngineConfig(kind=ENGINE, master="local[2]", shuffle_partitions=4,
                                  spark_conf=CLASSIC_TEST_CONF if ENGINE == "spark" else {}))
    yield eng
    eng.stop()


@pytest.fixture(scope="session")
def spark(engine):
    return engine.spark


@pytest.fixture
def cfg(tmp_path) -> LewinConfig:
    # a database per test: the session catalog outlives each test's table folders
    db = f"t_{uuid.uuid4().hex[:10]}"
    return LewinConfig(storage=StorageConfig(root=tmp_path / "tables", database=db))


@pytest.fixture
def store(engine, cfg) -> TableStore:
    return TableStore(engine, cfg.storage)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real samples not present at {SHARED_DATA} (../shared/data beside the project)")
    return SHARED_DATA


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    """A private copy of the bundled sample (tests may add or touch files)."""
    from lewin.jobs.cli import bundled_sample

    dst = tmp_path / "sample"
    shutil.copytree(bundled_sample(), dst, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return dst


SCRIPTED_MODEL = "scripted-chat"
"""The served model name of the shared sample run's LLM engine (``tests/fake_openai.py``)."""


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """One `lewin -v run` on the bundled sample (every stage, LLM included), shared by the tests
    that inspect its tables, files and output. The surrogate key comes from the environment.

    The LLM stages go to the scripted OpenAI-compatible server (``tests/fake_openai.py``, on
    127.0.0.1 for the whole session; ``lewin.yaml`` in the run's folder points every later command
    there too): these tests are about the pipeline's tables, privacy, shards, report and erasure,
    not about what a model writes, and the CPU model takes 15-20 of this machine's minutes for
    the same run. The CPU model's own end-to-end run is ``test_cli.py``'s ``cpu_run`` (the
    Quickstart's run when it is there)."""
    import subprocess
    import sys

    from .fake_openai import FakeOpenAI

    if ENGINE != "embedded":
        pytest.skip("the CLI runs the default (embedded) engine")
    cwd = tmp_path_factory.mktemp("sample_run")
    env = dict(os.environ, LEWIN_PII_SALT="leak-test-key")
    env.pop("LEWIN_CONFIG", None)
    with FakeOpenAI() as srv:
        (cwd / "lewin.yaml").write_text(
            f"llm:\n  engine:\n    kind: openai\n    base_url: {srv.url}\n    model: {SCRIPTED_MODEL}\n", encoding="utf-8")
        # the timeout only stops a hang (the run takes a few minutes)
        r = subprocess.run([sys.executable, "-m", "lewin.jobs.cli", "-v", "run"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, r.stderr[-3000:]
        yield cwd, r
