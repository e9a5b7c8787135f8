"""Run locks (issue 16, safe concurrency): one run at a time per storage root and stage (and source),
held in a lock file under ``<storage.root>/_locks/``; a second run stops at start with one line
naming the holder (or waits), stale locks (dead pid, old heartbeat, SIGKILL) are taken over, and
the lock is released when the stage ends or fails."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lewin.jobs.run_lock import RunLock, RunLockHeld, lock_key
from lewin.jobs.stage import Funnel, RunContext, Stage
from lewin.schemas.config import ConfigError, LewinConfig, load_config

from .conftest import ENGINE, FIXTURES

KEY = "ingest-reddit"


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def _plant(root: Path, key: str = KEY, *, host: str | None = None, pid: int = 1, run_id: str = "old-run",
           heartbeat_age_s: float = 0) -> Path:
    """A lock file as another run would have left it."""
    t = datetime.now(timezone.utc) - timedelta(seconds=heartbeat_age_s)
    path = root / "_locks" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "run_id": run_id, "host": host or socket.gethostname(), "pid": pid,
                                "started": _iso(t), "heartbeat": _iso(t), "token": "planted"}))
    return path


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _owner(path: Path) -> dict:
    return json.loads(path.read_text())


# --- the CLI: two concurrent ingests on one fresh root ---------------------------------------------
@pytest.mark.skipif(ENGINE != "embedded", reason="runs the CLI on the default engine")
def test_two_concurrent_ingests_one_runs_the_other_exits_2_naming_the_holder(tmp_path):
    from deltalake import DeltaTable

    root = tmp_path / "t"
    cmd = [sys.executable, "-m", "lewin.jobs.cli", "--set", f"storage.root={root}", "ingest", "--source", "reddit",
           "--path", str(FIXTURES / "curate" / "reddit")]
    # the winner holds the lock a few seconds before ingesting, so the runs overlap however fast it is
    env = dict(os.environ, LEWIN_RUN_LOCK_HOLD_SECONDS="4", COLUMNS="200")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], [o[1][-2000:] for o in outs]
    won, lost = (0, 1) if codes[0] == 0 else (1, 0)
    stderr = outs[lost][1]
    said = [line for line in stderr.splitlines() if "lock" in line]
    assert len(said) == 1, stderr
    m = re.search(r"error: another run holds the ingest-reddit lock \(.*_locks/ingest-reddit\.lock\): "
                  r"run (ingest-\S+) \(host (\S+), pid (\d+)\) since (\S+Z), last heartbeat \d+s ago", said[0])
    assert m, said[0]
    assert m.group(2) == socket.gethostname() and int(m.group(3)) == procs[won].pid
    assert "kept" not in outs[lost][0] + stderr, "the second run did no work"

    ids = DeltaTable(str(root / "bronze_reddit")).to_pyarrow_table(columns=["record_id"]).column(0).to_pylist()
    kept = int(re.search(r"(\d+) kept", outs[won][0]).group(1))
    assert ids and len(ids) == len(set(ids)) == kept, "every record once"
    log_rows = DeltaTable(str(root / "ingest_log")).to_pyarrow_table().to_pylist()
    assert len(log_rows) == 1, log_rows
    runs = [r for r in DeltaTable(str(root / "runs")).to_pyarrow_table().to_pylist() if r["stage"] == "ingest"]
    assert [r["run_id"] for r in runs] == [m.group(1)] and runs[0]["kept"] == kept
    assert not (root / "_locks" / "ingest-reddit.lock").exists(), "released at the end"


# --- the lock itself ---------------------------------------------------------------------------------
def test_a_held_lock_stops_a_second_run_with_one_line(tmp_path):
    with RunLock(str(tmp_path), KEY, "run-a"):
        path = tmp_path / "_locks" / f"{KEY}.lock"
        owner = _owner(path)
        assert owner["run_id"] == "run-a" and owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        t0 = time.monotonic()
        with pytest.raises(RunLockHeld) as err:
            RunLock(str(tmp_path), KEY, "run-b").acquire()
        assert time.monotonic() - t0 < 1, "no wait by default"
        msg = str(err.value)
        assert "\n" not in msg and "run run-a" in msg and f"pid {os.getpid()}" in msg and owner["started"] in msg
        assert _owner(path)["run_id"] == "run-a", "the loser leaves the holder's file alone"
        RunLock(str(tmp_path), "ingest-twitter", "run-c").acquire().release()  # another source: its own lock
    assert not path.exists()


def test_a_second_run_waits_for_the_lock_when_told_to(tmp_path):
    holder = RunLock(str(tmp_path), KEY, "run-a").acquire()
    threading.Timer(1.0, holder.release).start()
    t0 = time.monotonic()
    with RunLock(str(tmp_path), KEY, "run-b", wait_seconds=20, poll_seconds=0.2):
        assert 0.8 < time.monotonic() - t0 < 10
        assert _owner(tmp_path / "_locks" / f"{KEY}.lock")["run_id"] == "run-b"
    with RunLock(str(tmp_path), KEY, "run-c"):
        with pytest.raises(RunLockHeld, match="after waiting"):
            RunLock(str(tmp_path), KEY, "run-d", wait_seconds=0.5, poll_seconds=0.1).acquire()


@pytest.mark.parametrize("case", ["dead_pid", "old_heartbeat"])
def test_a_stale_lock_is_taken_over_with_a_log_line(tmp_path, caplog, case):
    if case == "dead_pid":  # this host, process gone: stale however fresh its heartbeat
        path = _plant(tmp_path, pid=_dead_pid())
        why = "is gone"
    else:  # another host (its pid means nothing here), heartbeat older than the timeout
        path = _plant(tmp_path, host="elsewhere", pid=os.getpid(), heartbeat_age_s=120)
        why = "heartbeat is 1[12]\\ds old"
    with caplog.at_level("WARNING", logger="lewin.jobs.run_lock"):
        with RunLock(str(tmp_path), KEY, "run-new", stale_seconds=60):
            assert _owner(path)["run_id"] == "run-new"
    said = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
    assert len(said) == 1 and "run old-run" in said[0] and re.search(why, said[0]), said
    assert not path.exists()


def test_a_live_lock_is_not_taken_over(tmp_path):
    # another host, fresh heartbeat; and this host, a live process: both hold
    _plant(tmp_path, host="elsewhere", pid=_dead_pid(), heartbeat_age_s=5)
    with pytest.raises(RunLockHeld, match=r"run old-run \(host elsewhere"):
        RunLock(str(tmp_path), KEY, "run-new", stale_seconds=60).acquire()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _plant(tmp_path, pid=live.pid, heartbeat_age_s=30)
        with pytest.raises(RunLockHeld, match=f"pid {live.pid}"):
            RunLock(str(tmp_path), KEY, "run-new", stale_seconds=60).acquire()
    finally:
        live.kill()
        live.wait()


def test_a_sigkilled_run_leaves_a_lock_the_next_run_takes_over(tmp_path, caplog):
    code = ("import os, signal, sys; from lewin.jobs.run_lock import RunLock; "
            f"RunLock(sys.argv[1], {KEY!r}, 'killed-run').acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=120)
    assert r.returncode == -signal.SIGKILL
    path = tmp_path / "_locks" / f"{KEY}.lock"
    assert _owner(path)["run_id"] == "killed-run", "SIGKILL leaves the lock behind"
    with caplog.at_level("WARNING", logger="lewin.jobs.run_lock"):
        with RunLock(str(tmp_path), KEY, "next-run"):
            assert _owner(path)["run_id"] == "next-run"
    assert any("taking over" in r.getMessage() and "killed-run" in r.getMessage() for r in caplog.records)


def test_the_heartbeat_advances_while_the_lock_is_held(tmp_path):
    path = tmp_path / "_locks" / f"{KEY}.lock"
    with RunLock(str(tmp_path), KEY, "run-a", heartbeat_seconds=0.2) as lock:
        first = _owner(path)
        time.sleep(1.5)
        later = _owner(path)
        assert later["heartbeat"] > first["heartbeat"] and later["started"] == first["started"]
        assert not lock.lost
    assert not path.exists()


def test_lock_keys_and_settings():
    from lewin.jobs.ingest import IngestStage

    assert lock_key(IngestStage("reddit", [])) == "ingest-reddit"
    assert lock_key(_Probe()) == "probe"
    assert LewinConfig().run.lock_wait_seconds == 0
    with pytest.raises(ConfigError, match="lock_heartbeat_seconds"):
        load_config(None, ["run.lock_stale_seconds=10", "run.lock_heartbeat_seconds=8"])


# --- Stage.execute holds the lock --------------------------------------------------------------------
class _Probe(Stage):
    name = "probe"

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.ran = False
        self.lock_during_run: dict | None = None

    def run(self, ctx: RunContext) -> list[Funnel]:
        self.ran = True
        path = Path(ctx.cfg.storage.root_location) / "_locks" / "probe.lock"
        self.lock_during_run = _owner(path)
        if self.fail:
            raise RuntimeError("the stage failed")
        return [Funnel(stage="probe", records_in=1, kept=1)]


def test_execute_holds_the_lock_and_releases_it_after_an_exception(store, cfg):
    lock = Path(cfg.storage.root_location) / "_locks" / "probe.lock"
    with RunLock(cfg.storage.root_location, "probe", "someone-else"):
        blocked = _Probe()
        with pytest.raises(RunLockHeld, match="someone-else"):
            blocked.execute(store, cfg)
        assert not blocked.ran and not store.exists("runs"), "nothing happens before the lock"

    bad = _Probe(fail=True)
    with pytest.raises(RuntimeError, match="the stage failed"):
        bad.execute(store, cfg, run_id="probe-failing")
    assert bad.lock_during_run["run_id"] == "probe-failing" and bad.lock_during_run["pid"] == os.getpid()
    assert not lock.exists(), "released after the exception"

    ok = _Probe()
    ok.execute(store, cfg)
    assert ok.lock_during_run["run_id"] == ok.last_run_id and not lock.exists()


# --- object store: the conditional create ------------------------------------------------------------
def test_the_lock_on_an_object_store_is_exclusive(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import boto3
    import s3fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for k, v in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                     "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                     "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        boto3.client("s3").create_bucket(Bucket="lake")
        s3fs.S3FileSystem.clear_instance_cache()
        with RunLock("s3://lake/root", KEY, "run-a", heartbeat_seconds=0.3):
            owner = json.loads(s3fs.S3FileSystem().cat_file("lake/root/_locks/ingest-reddit.lock"))
            assert owner["run_id"] == "run-a"
            with pytest.raises(RunLockHeld, match="run run-a"):
                RunLock("s3://lake/root", KEY, "run-b").acquire()
        assert not s3fs.S3FileSystem().exists("lake/root/_locks/ingest-reddit.lock")
        with RunLock("s3://lake/root", KEY, "run-b"):
            pass
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()
