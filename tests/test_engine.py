"""Engine factory and table store edges."""

from __future__ import annotations

import os

import pytest

from lewin.jobs.engine import get_engine
from lewin.schemas import tables as T
from lewin.schemas.config import EngineConfig

from .conftest import ENGINE


def test_connect_needs_a_url():
    with pytest.raises(ValueError, match="engine.remote"):
        get_engine(EngineConfig(kind="connect"))


@pytest.mark.skipif(ENGINE != "embedded", reason="embedded engine only")
def test_embedded_engine_uses_every_core_for_python(engine):
    import os

    assert engine.kind == "embedded" and engine.table_format == "delta"
    assert engine.python_workers == len(os.sched_getaffinity(0))


@pytest.mark.transforms
def test_ensure_register_and_insert_new_is_idempotent(store, spark):
    store.ensure("runs", T.RUNS)
    store.ensure("runs", T.RUNS)
    assert store.count("runs") == 0
    from datetime import datetime, timezone

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = [(f"r{i}", "ingest", "reddit", now, now, 1, 0, 1, 0, 5, 5, 0, 0, 0, None) for i in range(3)]
    df = spark.createDataFrame(rows, T.RUNS)
    store.insert_new("runs", df, ["run_id"], T.RUNS)
    store.insert_new("runs", df, ["run_id"], T.RUNS)
    assert store.count("runs") == 3
    store.register_all()
    assert spark.sql(f"SELECT count(*) AS n FROM {store.storage.database}.runs").collect()[0]["n"] == 3
    upd = spark.createDataFrame([("r0", "ingest", "reddit", now, now, 9, 0, 1, 0, 5, 5, 0, 0, 0, None)], T.RUNS)
    store.upsert("runs", upd, ["run_id"], T.RUNS)
    assert store.read("runs").where("run_id = 'r0'").collect()[0]["files"] == 9
    assert store.count("runs") == 3


_IDLE_SCRIPT = """
import os, sys, time
from lewin.jobs.engine import get_engine
from lewin.schemas.config import EngineConfig
eng = get_engine(EngineConfig(kind="embedded"))
assert eng.spark.range(3).count() == 3
time.sleep(float(sys.argv[1]))  # idle far past the server's 2-second session limit
print("after-idle", eng.spark.range(5).count())
eng.stop()
"""


@pytest.mark.skipif(ENGINE != "embedded", reason="embedded engine only")
@pytest.mark.parametrize("keepalive", [True, False])
def test_embedded_session_survives_idle_past_the_server_timeout(tmp_path, keepalive):
    """Sail ends sessions idle longer than its session timeout; the engine keeps its session alive.
    The control run (keep-alive disabled) shows the timeout is real, so the test can fail."""
    import subprocess
    import sys

    env = dict(os.environ, SAIL_SPARK__SESSION_TIMEOUT_SECS="2")
    for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
        env.pop(var, None)
    script = _IDLE_SCRIPT
    if not keepalive:
        script = script.replace("from lewin.jobs.engine import get_engine",
                                "import lewin.jobs.engine as E\nE._KeepAlive.__init__ = lambda self, *a: None\n"
                                "E._KeepAlive.stop = lambda self: None\nget_engine = E.get_engine")
    r = subprocess.run([sys.executable, "-c", script, "7"], env=env, capture_output=True, text=True,
                       timeout=180, cwd=tmp_path)
    if keepalive:
        assert r.returncode == 0, r.stderr[-3000:]
        assert "after-idle 5" in r.stdout
    else:
        assert r.returncode != 0 and "after-idle" not in r.stdout
