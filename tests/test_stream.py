"""Streaming ingestion (``lewin ingest --stream`` / ``--watch``) on classic local Spark, and the
embedded engine's ``--watch`` polls.

The classic runs are CLI subprocesses (``engine.kind=spark``, ``local[2]``, Parquet tables: no
Delta jars offline), since this process may hold a Spark Connect session. One classic scenario
shares three processes over the bundled sample's blogger files, one file per micro-batch:

1. ``--stream``, SIGKILLed after micro-batch 1 has been ingested and logged, before Spark commits
   it to the checkpoint (failpoint ``ingest.stream_batch_1_done``);
2. ``--stream`` again, which replays micro-batch 1 and is SIGKILLed after micro-batch 2's bronze
   MERGE, before its files reach the ingest log (failpoint ``ingest.after_bronze_merge``);
3. ``--watch``, which replays micro-batch 2, then ingests the files the test drops into the folder
   while it runs, and exits 0 on SIGTERM.

Every record must end in bronze exactly once, as a batch ingest of the same files (on the embedded
engine, in this process) puts it there. Measured: 110-135 s for the whole file on 2 cores shared
with other test runs (load 5-6), most of it three JVM starts and each run's first micro-batch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.classic]

# on 2 cores a micro-batch is a dozen tiny Spark jobs: interpreted expressions and the C1 JIT only
# (as tests/test_cluster.py does), two shuffle partitions
FAST_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    "spark.ui.showConsoleProgress": "false",
}
CLASSIC = ["--set", "engine.kind=spark", "--set", "engine.master=local[2]", "--set", "engine.shuffle_partitions=2",
           "--set", "engine.spark_conf=" + json.dumps(FAST_CONF)]
OLD_MTIME = 1_577_836_800  # 2020-01-01: dumps copied in with their original, older mtimes
TIMEOUT_S = 240


def _java() -> None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("classic Spark needs a JVM (Java 17); none found")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # this process may hold a Spark Connect session, which marks the environment as Connect mode
    for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE", "LEWIN_FAILPOINT"):
        env.pop(var, None)
    # COLUMNS: rich's log lines unwrapped, so the tests can read them
    env.update(TZ="UTC", PYSPARK_PYTHON=sys.executable, COLUMNS="400", **extra)
    return env


@dataclass
class _Cli:
    """A ``lewin`` CLI subprocess in its own process group (classic Spark's JVM is its child),
    output to files so a killed run cannot hang the test."""

    name: str
    args: list[str]
    base: Path
    env: dict[str, str] = field(default_factory=_env)

    def __post_init__(self):
        self.out, self.err = self.base / f"{self.name}.out", self.base / f"{self.name}.err"
        with self.out.open("w") as o, self.err.open("w") as e:
            self.proc = subprocess.Popen([sys.executable, "-m", "lewin.jobs.cli", *self.args], stdout=o, stderr=e,
                                         env=self.env, cwd=self.base, start_new_session=True)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.reap()

    def reap(self) -> None:
        """Kill what is left of the group (a killed driver's JVM), then the process if still alive."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)

    def tail(self) -> str:
        return f"--- {self.name} stderr ---\n{self.stderr()[-4000:]}\n--- stdout ---\n{self.stdout()[-1500:]}"


def _lewin(root: Path, *args: str, classic: bool = True) -> list[str]:
    return ["--set", f"storage.root={root}", "--set", "llm.enabled=false", "--set", "ingest.batch_max_files=1",
            *(CLASSIC if classic else []), *args]


def _read(root: Path, table: str, delta: bool = False) -> list[dict]:
    """A table's committed rows: Delta (embedded) through deltalake, Parquet (classic) through
    pyarrow (which skips Spark's ``_temporary`` folder of a write in progress)."""
    path = root / table
    if delta:
        if not (path / "_delta_log").is_dir():
            return []
        from deltalake import DeltaTable

        return DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    if not path.is_dir() or not any(path.glob("*.parquet")):
        return []
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist()


def _wait_for(what: str, check, cli: _Cli, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if cli.proc.poll() is not None:
            pytest.fail(f"{cli.name} exited ({cli.proc.returncode}) while waiting for {what}\n{cli.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{cli.tail()}")
        time.sleep(0.3)


def _drop(src: Path, folder: Path, mtime: int | None = None) -> Path:
    """Put a file into a watched folder atomically (a hidden temporary name, then a rename), as a
    file source requires."""
    tmp, dst = folder / f".{src.name}.part", folder / src.name
    shutil.copyfile(src, tmp)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, dst)
    return dst


def _bronze(rows: list[dict]) -> list[tuple]:
    """What a bronze row holds, without its run's lineage (run id, time, folder)."""
    return sorted((r["record_id"], Path(r["_file"]).name, r["_line"], r["user_id"], r["text"]) for r in rows)


def _log_paths(root: Path, delta: bool = False) -> list[str]:
    return sorted(Path(r["path"]).name for r in _read(root, "ingest_log", delta))


def _blogger_files() -> list[Path]:
    from lewin.jobs.cli import bundled_sample

    return sorted(p for p in (bundled_sample() / "blogger").iterdir() if p.is_file())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, engine):
    """A batch ingest of the blogger sample on the embedded engine (in this process): the bronze
    rows and funnel every streaming run must end with."""
    from lewin.jobs.ingest import ingest
    from lewin.jobs.tables import TableStore
    from lewin.schemas.config import LewinConfig, StorageConfig

    base = tmp_path_factory.mktemp("stream_reference")
    data = base / "blogger"
    data.mkdir()
    for f in _blogger_files():
        shutil.copy2(f, data / f.name)
    cfg = LewinConfig(storage=StorageConfig(root=base / "tables", database="t_stream_reference"))
    store = TableStore(engine, cfg.storage)
    result = ingest(store, cfg, "blogger", [str(data)])
    rows = [r.asDict() for r in store.read("bronze_blogger").collect()]
    assert result.files == 5 and result.kept == len(rows) > 0 and result.reconciles
    # no record in two files: which file a bronze row names does not depend on the ingest order
    assert result.duplicates == 0
    return _bronze(rows), result


@dataclass
class _Scenario:
    root: Path
    data: Path
    files: list[Path]
    runs: dict[str, _Cli]
    after: dict[str, dict]


@pytest.fixture(scope="module")
def classic_scenario(tmp_path_factory):
    """The three classic runs of the module docstring; what the tables held after each kill."""
    _java()
    base = tmp_path_factory.mktemp("stream_classic")
    root, data = base / "tables", base / "in" / "blogger"
    data.mkdir(parents=True)
    files = _blogger_files()
    first, dropped = files[:3], files[3:]
    for f in first:
        shutil.copy2(f, data / f.name)
    stream = _lewin(root, "ingest", "--source", "blogger", "--path", str(data), "--stream")
    runs: dict[str, _Cli] = {}
    after: dict[str, dict] = {}

    def snapshot() -> dict:
        ck = root / "_checkpoints" / "ingest_blogger"
        return {"log": _log_paths(root), "bronze": _bronze(_read(root, "bronze_blogger")),
                "offsets": sorted(p.name for p in (ck / "offsets").glob("[0-9]*")),
                "commits": sorted(p.name for p in (ck / "commits").glob("[0-9]*"))}

    for name, failpoint in (("killed_after_log", "ingest.stream_batch_1_done"),
                            ("killed_after_merge", "ingest.after_bronze_merge")):
        cli = runs[name] = _Cli(name, stream, base, _env(LEWIN_FAILPOINT=failpoint))
        rc = cli.wait()
        assert rc == -signal.SIGKILL, f"{name}: expected a SIGKILL at {failpoint}, got {rc}\n{cli.tail()}"
        after[name] = snapshot()

    watch = runs["watch"] = _Cli("watch", _lewin(root, "--set", "ingest.watch_seconds=1", "ingest", "--source",
                                                  "blogger", "--path", str(data), "--watch"), base)
    try:
        _wait_for("the replay of the killed micro-batch", lambda: len(_log_paths(root)) >= 3, watch)
        for f in dropped:  # one at a time, each while the watch runs
            _drop(f, data, OLD_MTIME)
            _wait_for(f"{f.name} in the ingest log", lambda f=f: f.name in _log_paths(root), watch)
        time.sleep(2)  # a few idle triggers: nothing may be ingested twice
        watch.proc.send_signal(signal.SIGTERM)  # the driver only: it stops its query, then Spark
        rc = watch.wait()
    finally:
        watch.reap()
    assert rc == 0, f"the watch did not exit cleanly on SIGTERM (rc={rc})\n{watch.tail()}"
    return _Scenario(root, data, files, runs, after)


def test_killed_mid_stream_then_restarted_every_record_once(classic_scenario, reference):
    s, (want_bronze, want) = classic_scenario, reference
    names = [f.name for f in s.files]
    # the end state: every file logged once, every record in bronze once, as a batch ingest has it
    assert _log_paths(s.root) == sorted(names), "each file in the ingest log exactly once"
    got = _bronze(_read(s.root, "bronze_blogger"))
    assert len({r[0] for r in got}) == len(got), "a record id twice in bronze"
    assert got == want_bronze, "bronze differs from a batch ingest of the same files"
    # the funnel counts every record once too: the lost funnel row of the killed micro-batch 2 is
    # made up by its replay (its records as duplicates); micro-batch 1's replay writes no row
    runs = [r for r in _read(s.root, "runs") if r["stage"] == "ingest"]
    assert sum(r["records_in"] for r in runs) == want.records_in, runs
    assert sum(r["files"] for r in runs) == len(names)
    assert all(r["records_in"] == r["kept"] + r["duplicates"] + r["rejected"] + r["quarantined"] for r in runs)

    # kill 1: micro-batch 0 committed; micro-batch 1 ingested and logged, not committed
    k1 = s.after["killed_after_log"]
    assert k1["commits"] == ["0"] and k1["offsets"] == ["0", "1"], k1
    assert len(k1["log"]) == 2 and len(set(k1["log"])) == 2, k1["log"]
    # kill 2: the restart replayed micro-batch 1 without ingesting it again, then died in
    # micro-batch 2 after the bronze MERGE, before the ingest log
    k2 = s.after["killed_after_merge"]
    assert k2["commits"] == ["0", "1"] and k2["offsets"] == ["0", "1", "2"], k2
    assert k2["log"] == k1["log"], "the replayed micro-batch was logged again"
    third = (set(names[:3]) - set(k1["log"])).pop()
    assert any(row[1] == third for row in k2["bronze"]), "the crash came before the bronze write"
    assert "micro-batch 1: 1 files, 0 new" in s.runs["killed_after_merge"].stderr(), s.runs["killed_after_merge"].tail()
    # the watch replayed micro-batch 2, whose file was not logged: read again, nothing written twice
    assert "micro-batch 2: 1 files, 1 new" in s.runs["watch"].stderr(), s.runs["watch"].tail()


def test_files_dropped_while_watching_are_ingested_once(classic_scenario, reference):
    s, (want_bronze, _) = classic_scenario, reference
    err = s.runs["watch"].stderr()
    dropped = [f.name for f in s.files[3:]]
    # each dropped file (mtime years before the others: the source must not age it out) came in
    # its own micro-batch while the watch ran, and nothing was ingested twice
    assert err.count(": 1 files, 1 new") == 1 + len(dropped), err[-3000:]
    assert "0 new" not in err, "a file came back in a later micro-batch"
    log = _read(s.root, "ingest_log")
    for name in dropped:
        mine = [r for r in log if Path(r["path"]).name == name]
        assert len(mine) == 1 and mine[0]["mtime_ns"] == OLD_MTIME * 10**9, mine
        assert mine[0]["records"] == sum(1 for r in want_bronze if r[1] == name) > 0
    assert "stopping after the current batch" in err
    out = s.runs["watch"].stdout()
    assert "micro-batches with new files" in out and "DOES NOT RECONCILE" not in out, out


def test_embedded_watch_polls_ingest_files_added_between_polls_once(tmp_path, reference):
    want_bronze, _ = reference
    files = _blogger_files()
    data = tmp_path / "in" / "blogger"
    data.mkdir(parents=True)
    shutil.copy2(files[0], data / files[0].name)
    root = tmp_path / "tables"
    cli = _Cli("embedded_watch", _lewin(root, "--set", "ingest.watch_seconds=1", "ingest", "--source", "blogger",
                                        "--path", str(data), "--watch", "--max-polls", "120", classic=False), tmp_path)
    try:
        _wait_for("the first poll", lambda: len(_log_paths(root, delta=True)) == 1, cli, timeout=120)
        for f in files[1:3]:
            _drop(f, data)
            _wait_for(f"{f.name} in the ingest log", lambda f=f: f.name in _log_paths(root, delta=True), cli,
                      timeout=60)
        time.sleep(2.5)  # idle polls
        cli.proc.send_signal(signal.SIGTERM)
        rc = cli.wait(60)
    finally:
        cli.reap()
    assert rc == 0, cli.tail()
    names = sorted(f.name for f in files[:3])
    assert _log_paths(root, delta=True) == names
    assert _bronze(_read(root, "bronze_blogger", delta=True)) == [r for r in want_bronze if r[1] in names]
    err = cli.stderr()
    polls = [tuple(map(int, m)) for m in re.findall(r"blogger poll (\d+): (\d+) files, (\d+) new", err)]
    assert [p[0] for p in polls] == list(range(1, len(polls) + 1)), err[-3000:]
    assert sum(p[2] for p in polls) == 3 and polls[0][1:] == (1, 1), polls  # each file new in one poll only
    assert polls[-1][1:] == (3, 0), "no idle poll after the last file"


def test_stream_settings_are_validated_and_the_checkpoint_defaults_under_the_root(tmp_path):
    from lewin.jobs.stream import checkpoint_location
    from lewin.schemas.config import ConfigError, load_config

    cfg = load_config(None, [f"storage.root={tmp_path}"])
    assert cfg.ingest.watch_seconds == 60
    assert checkpoint_location(cfg, "reddit") == str(tmp_path / "_checkpoints" / "ingest_reddit")
    cfg = load_config(None, [f"ingest.checkpoint_dir={tmp_path / 'ck'}"])
    assert checkpoint_location(cfg, "reddit") == str(tmp_path / "ck" / "ingest_reddit")
    for bad in ("ingest.watch_seconds=0", "ingest.checkpoint_dir=' '", "ingest.checkpoint_dir=/x/*"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(None, [bad])


def test_the_foreach_batch_function_pickles_without_a_session():
    """Spark Connect pickles the foreachBatch function to run it on the server."""
    from types import SimpleNamespace

    from pyspark import cloudpickle

    from lewin.jobs.stream import MicroBatchIngest
    from lewin.schemas.config import LewinConfig

    engine = SimpleNamespace(kind="connect", python_workers=1, table_format="delta")
    fn = MicroBatchIngest(LewinConfig(), "reddit", "ingest-x", engine, store=object())  # object(): unpicklable
    back = cloudpickle.loads(cloudpickle.dumps(fn))
    assert back._store is None and back.cfg == fn.cfg
    assert (back.source, back.run_id, back.kind) == ("reddit", "ingest-x", "connect")
