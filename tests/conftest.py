"""Shared fixtures: one engine per test session, a fresh table store per test.

``LEWIN_TEST_ENGINE`` picks the engine (default ``embedded``: the local Sail server). PySpark
cannot hold a Spark Connect and a classic session in one process, so the classic-Spark run of
the engine-agnostic tests (marker ``transforms``) happens in a subprocess started by
``tests/test_classic_engine.py``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from lewin.jobs.engine import get_engine
from lewin.jobs.tables import TableStore
from lewin.schemas.config import EngineConfig, LewinConfig, StorageConfig

ENGINE = os.environ.get("LEWIN_TEST_ENGINE", "embedded")
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


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory):
    """One `lewin -v run` on the bundled sample (every stage, LLM included), shared by the tests
    that inspect its tables and its output. The surrogate key comes from the environment."""
    import subprocess
    import sys

    if ENGINE != "embedded":
        pytest.skip("the CLI runs the default (embedded) engine")
    cwd = tmp_path_factory.mktemp("sample_run")
    env = dict(os.environ, LEWIN_PII_SALT="leak-test-key")
    # the timeout only stops a hang: the run takes 11-20 min on 2 cores, more on a loaded machine
    r = subprocess.run([sys.executable, "-m", "lewin.jobs.cli", "-v", "run"], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=2700)
    assert r.returncode == 0, r.stderr[-3000:]
    return cwd, r
