"""Lewin on a real multi-process cluster: a Spark standalone master and two workers (each its own
JVM, whose executors are JVMs of their own with their own Python workers), then Spark's own Spark
Connect server on that cluster.

The bundled sample goes through ``lewin run`` (LLM off, so ingest -> curate -> scrub -> label
(``unlabelled``) -> users -> emit, whose MCQ options then come from other users' answers) three
times, each CLI in a subprocess so classic mode never meets this process's Spark Connect session:

* on the embedded engine (Delta tables, read back with ``deltalake``), the reference;
* ``engine.kind=spark`` against the standalone master (Parquet tables: no Delta jars here);
* ``engine.kind=connect`` against the Spark Connect server (``storage.format=parquet``: the
  tables live in the server's warehouse, registered by name).

Kept and rejected record ids, the scrubbed texts, users with their record counts and the emitted
samples must be the same on all three (they also are with Spark's default code generation, AQE
and shuffle partitions; ``FAST_CONF`` only saves CPU). The classic and Connect runs must also have
had executors on both workers, and their Python stages must have run tasks in both executors (the
applications' event logs say which executor ran which task). About 5-6 minutes on 2 busy cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.classic]

SALT = "cluster-test-key"
# LLM stages off, no label gate. `off` must be quoted: YAML 1.1 reads a bare off as false.
PIPELINE = ["--set", 'llm.labels="off"', "--set", "llm.enabled=false"]
# On 2 cores and ~250 records a run is ~900 tiny Spark jobs, so the JVMs' compilers dominate:
# interpreted expressions instead of Janino code generation per query, and the C1 JIT only, halve
# the driver's and the executors' CPU (measured: driver 129 s -> 66 s, executors 114 s -> ~45 s).
FAST_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.locality.wait": "0",
    "spark.driver.host": "127.0.0.1",
    "spark.executor.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    # one plain JSON-lines file per application: which executor ran which task
    "spark.eventLog.enabled": "true",
    "spark.eventLog.compress": "false",
    "spark.eventLog.rolling.enabled": "false",
}
RUN_TIMEOUT_S = 900
# physical operators that run Python (an RDD scope's name in the event log)
_PYTHON_OPERATOR = re.compile(r"Python|Pandas|Arrow")


def _java() -> None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("a Spark standalone cluster needs a JVM (Java 17); none found")


def _spark_home() -> Path:
    from pyspark.find_spark_home import _find_spark_home

    return Path(_find_spark_home())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # this process may hold a Spark Connect session, which marks the environment as Connect mode
    for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
        env.pop(var, None)
    env.update(
        TZ="UTC", LEWIN_PII_SALT=SALT, SPARK_HOME=str(_spark_home()), SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,  # executors' Python workers import lewin from this venv
        SPARK_DAEMON_MEMORY="512m", SPARK_DAEMON_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    )
    return env


class _Proc:
    """A process we started, in its own process group (a worker's executors and their Python
    workers are its children), logging to a file."""

    def __init__(self, name: str, args: list[str], log: Path, cwd: Path, env: dict[str, str],
                 stdout: Path | None = None):
        """``log`` gets stderr, and stdout unless ``stdout`` names a file of its own."""
        self.name, self.log = name, log
        self._fhs = [open(log, "wb")] + ([open(stdout, "wb")] if stdout else [])
        self.popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=self._fhs[-1], stderr=self._fhs[0],
                                      start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 4000) -> str:
        try:
            return f"--- {self.name} ({self.log}) ---\n" + self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the group (Spark's shutdown hooks stop executors), SIGKILL to what is left of
        it after ``timeout``. A process that already ended is only reaped."""
        if self.alive():
            pgid = self.popen.pid  # start_new_session: the group id is the process id
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.popen.wait(wait)
                except subprocess.TimeoutExpired:
                    pass
        for fh in self._fhs:
            fh.close()


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _wait(what: str, check, timeout: float, procs: list[_Proc], interval: float = 0.5):
    """Poll ``check()`` until it returns something truthy; fail early if a process died."""
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if not p.alive():
                pytest.fail(f"{p.name} exited ({p.popen.returncode}) while waiting for {what}\n{p.tail()}")
        try:
            got = check()
        except OSError:  # not listening yet
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n" + "\n".join(p.tail() for p in procs))
        time.sleep(interval)


def _lewin_args(*sets: str) -> list[str]:
    args = [sys.executable, "-m", "lewin.jobs.cli"]
    for s in sets:
        args += ["--set", s]
    return args + PIPELINE + ["run"]


def _run(cwd: Path, *sets: str) -> None:
    r = subprocess.run(_lewin_args(*sets), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    (cwd / "lewin.out").write_text(r.stdout)
    (cwd / "lewin.err").write_text(r.stderr)
    assert r.returncode == 0, r.stdout[-2000:] + "\n" + r.stderr[-5000:]
    assert "every funnel reconciles" in r.stdout, r.stdout[-3000:]


def _conf(conf: dict[str, str]) -> str:
    return "engine.spark_conf=" + json.dumps(conf)  # a YAML flow mapping


# --- what is compared -------------------------------------------------------------------------
def _snapshot(read, manifest: str | Path) -> dict:
    """``read(table) -> list[dict]``; ``manifest``: emit's manifest.json (its text, or its path)."""
    if isinstance(manifest, Path):
        manifest = manifest.read_text()
    return {
        "kept record ids (silver_records)": sorted(x["record_id"] for x in read("silver_records")),
        "rejected (record id, rule)": sorted((x["record_id"], x["rule"]) for x in read("rejected")),
        "scrubbed (record id, text, title)": sorted((x["record_id"], x["text"], x["title"] or "")
                                                    for x in read("silver_records_scrubbed")),
        "users (source, user id, n_records)": sorted((x["source"], x["user_id"], x["n_records"]) for x in read("users")),
        "shard samples (id, task, split)": sorted((x["sample_id"], x["task"], x["split"]) for x in read("shard_samples")),
        "emit counts (split -> task -> source -> n)": json.loads(manifest)["counts"],
    }


def _parquet_reader(root: Path):
    import pyarrow.parquet as pq

    return lambda name: pq.read_table(str(root / name)).to_pylist()


def _assert_same(got: dict, want: dict, engine: str) -> None:
    assert want["kept record ids (silver_records)"] and want["users (source, user id, n_records)"]
    assert want["shard samples (id, task, split)"], "emit wrote no samples on the embedded engine"
    bad = []
    for key, w in want.items():
        g = got[key]
        if g == w:
            continue
        if isinstance(w, list):
            sw, sg = set(map(repr, w)), set(map(repr, g))
            bad.append(f"{key}: {len(g)} on {engine} vs {len(w)} embedded; only on {engine}: {sorted(sg - sw)[:3]}; "
                       f"only embedded: {sorted(sw - sg)[:3]}")
        else:
            bad.append(f"{key}: {g} on {engine} vs {w} embedded")
    assert not bad, "\n".join(bad)


# --- where the work ran ---------------------------------------------------------------------
def _events(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # an in-progress log's last line may be partial
            pass
    return out


def _python_tasks_by_executor(events: list[dict]) -> tuple[dict[str, int], dict[str, str]]:
    """Tasks of stages that run a Python operator, per executor id; each executor's worker UI."""
    python_stages: set[int] = set()
    by_executor: dict[str, int] = {}
    worker_ui: dict[str, str] = {}
    for e in events:
        kind = e.get("Event")
        if kind in ("SparkListenerStageSubmitted", "SparkListenerStageCompleted"):
            info = e["Stage Info"]
            scopes = [json.loads(r["Scope"])["name"] for r in info.get("RDD Info", []) if r.get("Scope")]
            if any(_PYTHON_OPERATOR.search(s) for s in scopes):
                python_stages.add(info["Stage ID"])
        elif kind == "SparkListenerTaskEnd" and e["Stage ID"] in python_stages:
            ex = e["Task Info"]["Executor ID"]
            by_executor[ex] = by_executor.get(ex, 0) + 1
        elif kind == "SparkListenerExecutorAdded":
            logs = e["Executor Info"].get("Log Urls", {})
            worker_ui[e["Executor ID"]] = re.sub(r"/logPage/.*", "", logs.get("stderr", ""))
    return by_executor, worker_ui


@dataclass
class Cluster:
    url: str
    webui: str
    procs: list[_Proc]

    def workers(self) -> list[dict]:
        return _json(f"{self.webui}/json/")["workers"]

    def executors_of(self, app_id: str) -> dict[str, int]:
        """Worker id -> executors it ran (or runs) for ``app_id``."""
        out = {}
        for w in self.workers():
            ws = _json(f"{w['webuiaddress']}/json/")
            out[w["id"]] = sum(1 for x in ws["executors"] + ws["finishedexecutors"] if x["appid"] == app_id)
        return out


def _check_distributed(cluster: Cluster, app_id: str, events: list[dict]) -> None:
    workers = {w["webuiaddress"].rstrip("/"): w["id"] for w in cluster.workers()}

    def on_both() -> dict | None:
        per_worker = cluster.executors_of(app_id)
        return per_worker if len(per_worker) == 2 and all(per_worker.values()) else None

    _wait(f"executors of {app_id} on both workers", on_both, 30, cluster.procs)
    by_executor, worker_ui = _python_tasks_by_executor(events)
    # Python tasks in two executors, which sit on the two different workers
    assert len(by_executor) >= 2 and all(n > 0 for n in by_executor.values()), by_executor
    hosts = {workers.get(worker_ui.get(ex, "").rstrip("/")) for ex in by_executor}
    assert len(hosts - {None}) == 2, (by_executor, worker_ui, workers)


# --- fixtures ---------------------------------------------------------------------------------
@dataclass
class _Pending:
    cwd: Path
    proc: _Proc
    _snap: dict | None = None

    def snapshot(self) -> dict:
        if self._snap is None:
            try:
                rc = self.proc.popen.wait(RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail("the embedded run timed out\n" + self.proc.tail())
            out = (self.cwd / "lewin.out").read_text(errors="replace")
            assert rc == 0 and "every funnel reconciles" in out, self.proc.tail(6000)
            from deltalake import DeltaTable

            root = self.cwd / "lewin-data"
            self._snap = _snapshot(lambda n: DeltaTable(str(root / n)).to_pyarrow_table().to_pylist(),
                                    root / "shards" / "manifest.json")
        return self._snap


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The reference run on the embedded engine, started at once in the background (it overlaps
    the cluster's start); ``snapshot()`` waits for it."""
    _java()
    cwd = tmp_path_factory.mktemp("embedded")
    proc = _Proc("lewin (embedded)", _lewin_args(), cwd / "lewin.err", cwd, _env(), stdout=cwd / "lewin.out")
    pending = _Pending(cwd, proc)
    yield pending
    proc.stop(timeout=5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A standalone master and two 1-core workers, each a separate JVM started with pyspark's
    ``spark-class``; stopped (TERM, then KILL) at the end, also when the start fails."""
    _java()
    base = tmp_path_factory.mktemp("cluster")
    spark_class = str(_spark_home() / "bin" / "spark-class")
    port, ui = _free_port(), _free_port()
    url, webui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui}"
    procs: list[_Proc] = []
    try:
        procs.append(_Proc("master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                      "--port", str(port), "--webui-port", str(ui)], base / "master.log", base, _env()))
        _wait("the master's web UI", lambda: _json(f"{webui}/json/").get("status") == "ALIVE", 120, procs)
        for i in (1, 2):
            work = base / f"worker{i}"
            work.mkdir()
            procs.append(_Proc(f"worker{i}", [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--cores", "1",
                                              "--memory", "2g", "--host", "127.0.0.1", "--webui-port", "0",
                                              "--work-dir", str(work)], base / f"worker{i}.log", base, _env()))
        _wait("2 ALIVE workers", lambda: sum(w["state"] == "ALIVE" for w in _json(f"{webui}/json/")["workers"]) == 2,
              120, procs)
        yield Cluster(url, webui, procs)
    finally:
        for p in reversed(procs):  # workers first: they stop their executors
            p.stop()


@dataclass
class ConnectServer:
    remote: str
    warehouse: Path
    eventlog: Path
    proc: _Proc


@pytest.fixture(scope="module")
def connect_server(cluster, tmp_path_factory):
    """Spark's own Spark Connect server (the jar ships in pyspark), its executors on the cluster."""
    base = tmp_path_factory.mktemp("connect_server")
    home = _spark_home()
    jar = next(iter(sorted((home / "jars").glob("spark-connect_*.jar"))), None)
    if jar is None:
        pytest.skip(f"no spark-connect jar under {home / 'jars'}")
    port = _free_port()
    warehouse, eventlog = base / "warehouse", base / "eventlog"
    eventlog.mkdir()
    conf = {**FAST_CONF, "spark.eventLog.dir": str(eventlog), "spark.sql.warehouse.dir": str(warehouse),
            "spark.connect.grpc.binding.address": "127.0.0.1", "spark.connect.grpc.binding.port": str(port),
            "spark.ui.enabled": "false", "spark.sql.session.timeZone": "UTC"}
    args = [str(home / "bin" / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
            "--name", "lewin-connect-server", "--master", cluster.url, "--jars", str(jar)]
    for k, v in conf.items():
        args += ["--conf", f"{k}={v}"]
    proc = _Proc("spark connect server", args, base / "server.log", base, _env())
    try:
        _wait("the Spark Connect server", lambda: "Spark Connect server started" in proc.log.read_text(errors="replace"),
              180, [proc])
        yield ConnectServer(f"sc://127.0.0.1:{port}", warehouse, eventlog, proc)
    finally:
        proc.stop()


# --- tests -------------------------------------------------------------------------------------
def test_pipeline_on_a_standalone_cluster_matches_the_embedded_engine(embedded, cluster, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("classic")
    eventlog = cwd / "eventlog"
    eventlog.mkdir()
    conf = {**FAST_CONF, "spark.eventLog.dir": str(eventlog)}
    _run(cwd, "engine.kind=spark", f"engine.master={cluster.url}", "engine.shuffle_partitions=2", _conf(conf))
    logs = [p for p in eventlog.iterdir() if p.name.startswith("app-")]
    assert len(logs) == 1, logs
    _check_distributed(cluster, logs[0].name.removesuffix(".inprogress"), _events(logs[0]))
    root = cwd / "lewin-data"
    assert any((root / "users").glob("*.parquet")) and not (root / "users" / "_delta_log").exists()  # no Delta jars
    _assert_same(_snapshot(_parquet_reader(root), root / "shards" / "manifest.json"), embedded.snapshot(), "the standalone cluster")


def test_pipeline_through_a_spark_connect_server_matches_the_embedded_engine(embedded, cluster, connect_server,
                                                                           tmp_path_factory):
    cwd = tmp_path_factory.mktemp("connect")
    _run(cwd, "engine.kind=connect", f"engine.remote={connect_server.remote}", "engine.shuffle_partitions=2",
         "storage.format=parquet")
    apps = [a for a in _json(f"{cluster.webui}/json/")["activeapps"] if a["name"] == "lewin-connect-server"]
    assert len(apps) == 1, apps
    logs = [p for p in connect_server.eventlog.iterdir() if p.name.startswith("app-")]
    assert len(logs) == 1, logs
    _check_distributed(cluster, apps[0]["id"], _events(logs[0]))
    db = connect_server.warehouse / "lewin.db"  # the tables by name, in the server's warehouse
    _assert_same(_snapshot(_parquet_reader(db), cwd / "lewin-data" / "shards" / "manifest.json"), embedded.snapshot(),
                 "the Spark Connect server")
