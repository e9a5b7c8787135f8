"""Environment checks at start (issue 16 item 5): a bad storage root, a missing input path, an
engine endpoint that is not set or not reachable each stop the command before any engine starts,
with exit code 2 and one line naming the key and the location. No test here starts an engine."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time

import pytest

from lewin.jobs import preflight
from lewin.jobs.preflight import PreflightError, input_problems, problems, storage_problems
from lewin.schemas.config import ConfigError, LewinConfig, StorageConfig, load_config

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def lewin(*args, cwd, timeout=60):
    env = {k: v for k, v in os.environ.items() if k != "LEWIN_CONFIG"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "lewin.jobs.cli", *args], capture_output=True, text=True, cwd=cwd,
                       timeout=timeout, env=env)
    r.elapsed = time.monotonic() - t0
    return r


def one_error_line(r) -> str:
    """The command stopped with exit code 2 and printed exactly one line: the error."""
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def _cfg(root, **engine) -> LewinConfig:
    return LewinConfig.model_validate({"storage": {"root": str(root)}, "engine": engine})


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections (the kernel's backlog) and never answers: a
    blackholed or hung endpoint as far as the client can tell."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


# --- a valid environment passes ------------------------------------------------------------------
def test_a_valid_local_root_passes_and_the_checks_leave_nothing_behind(tmp_path):
    root = tmp_path / "a" / "b" / "tables"  # missing, creatable
    cfg = _cfg(root)
    assert problems(cfg, write=True) == []
    assert not (tmp_path / "a").exists(), "the creatability probe must take its folders back"
    assert preflight.check(cfg, write=False) == [f"storage.root {root} does not exist yet: no tables"]
    assert not (tmp_path / "a").exists(), "a read-only command never creates the root"
    root.mkdir(parents=True)
    assert problems(cfg, write=True, inputs=[("--path", str(tmp_path))]) == []
    assert preflight.check(cfg, write=False) == []
    assert list(root.iterdir()) == [], "the write probe is deleted"


def test_the_default_config_passes_in_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert problems(load_config(), write=True) == []


# --- a) a root that is a file ----------------------------------------------------------------------
@pytest.mark.parametrize("command", [["status"], ["sql", "SELECT 1"], ["run"]])
def test_a_root_that_is_a_file_is_one_line_everywhere(tmp_path, command):
    (tmp_path / "afile").write_text("not a folder")
    r = lewin("--set", "storage.root=afile", *command, cwd=tmp_path)
    line = one_error_line(r)
    assert line == f"error: storage.root: {tmp_path / 'afile'} is a file, not a folder"


# --- b) a root that cannot be written ---------------------------------------------------------
def test_a_root_under_a_file_cannot_be_created_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = lewin("--set", "storage.root=afile/sub", "curate", cwd=tmp_path)
    line = one_error_line(r)
    assert line == f"error: storage.root: {tmp_path / 'afile' / 'sub'} cannot be created: {tmp_path / 'afile'} is a file, not a folder"


@pytest.mark.skipif(IS_ROOT, reason="running as root: chmod 555 does not stop root from writing "
                    "(the read-only cases are covered by the uncreatable root and the EROFS test)")
@pytest.mark.parametrize("sub", ["", "new/sub"])
def test_a_read_only_root_is_one_line(tmp_path, sub):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = lewin("--set", f"storage.root={ro / sub if sub else ro}", "curate", cwd=tmp_path)
    finally:
        ro.chmod(0o755)
    line = one_error_line(r)
    assert "storage.root" in line and str(ro) in line and ("not writable" in line or "cannot be created" in line)


def test_a_read_only_file_system_is_reported_for_writing_only(tmp_path, monkeypatch):
    """EROFS / EACCES as the OS reports them (as root, the only way to get them without a mount)."""
    def refuse(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(preflight.tempfile, "mkstemp", refuse)
    st = StorageConfig(root=str(tmp_path))
    assert storage_problems(st, "embedded", write=True) == [
        f"storage.root: {tmp_path} is not writable (Read-only file system)"]
    assert storage_problems(st, "embedded", write=False) == []  # status / sql only read

    def no_mkdir(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(preflight.os, "mkdir", no_mkdir)
    st = StorageConfig(root=str(tmp_path / "new" / "sub"))
    assert storage_problems(st, "embedded", write=True) == [
        f"storage.root: {tmp_path / 'new' / 'sub'} cannot be created in {tmp_path} (Permission denied)"]


# --- object-store roots go through lewin.udfs.fs --------------------------------------------------
def test_an_object_store_root_is_probed_through_the_filesystem_layer(monkeypatch):
    from lewin.udfs import fs

    root = "memory://lake/lewin_preflight"
    fs.rm(root)
    assert storage_problems(StorageConfig(root=root), "embedded", write=True) == []
    assert not fs.exists(fs.join(root, "_lewin_probe")) and fs.list_files(root) == [], "the probe is deleted"
    fs.write_bytes("memory://lake/an_object", b"x")
    assert storage_problems(StorageConfig(root="memory://lake/an_object"), "embedded", write=False) == [
        "storage.root: memory://lake/an_object is a file (an object), not a folder"]

    def denied(loc, data):
        raise PermissionError("AccessDenied: PutObject on lake/lewin_preflight/_lewin_probe/x.probe")

    monkeypatch.setattr(fs, "write_bytes", denied)
    (line,) = storage_problems(StorageConfig(root=root), "embedded", write=True)
    assert line.startswith(f"storage.root: {root} is not writable (PermissionError: AccessDenied")


@pytest.mark.skipif(os.path.isdir("/dbfs"), reason="a Databricks cluster: the FUSE mount is checked like a folder")
def test_a_workspace_root_under_databricks_connect_is_not_checked():
    for root in ("dbfs:/lewin", "dbfs:/Volumes/main/lewin/data", "/Volumes/main/lewin/data"):
        assert storage_problems(StorageConfig(root=root), "databricks", write=True) == [], root
    assert not os.path.exists("/dbfs") and not os.path.exists("/Volumes/main")


# --- c) input paths -------------------------------------------------------------------------------
def test_a_missing_configured_input_path_is_one_line_under_run(tmp_path):
    r = lewin("--set", "ingest.sources.reddit.paths=[no_such_dump]", "run", cwd=tmp_path)
    assert one_error_line(r) == "error: ingest.sources.reddit.paths: no_such_dump does not exist"
    assert not (tmp_path / "lewin-data").exists()


@pytest.mark.parametrize("args,needle", [
    (["ingest", "--source", "reddit", "--path", "/no/such/dump"], "error: --path: /no/such/dump does not exist"),
    (["run", "--data", "/no/such/data"], "error: --data: data folder does not exist: /no/such/data"),
])
def test_a_missing_command_line_input_is_one_line(tmp_path, args, needle):
    assert one_error_line(lewin(*args, cwd=tmp_path)) == needle


def test_globs_and_urls_are_checked_through_their_folder(tmp_path):
    from lewin.udfs import fs

    (tmp_path / "rs").mkdir()
    (tmp_path / "f.txt").write_text("x")
    g = str(tmp_path / "rs" / "*.zst")
    assert preflight.glob_prefix(g) == str(tmp_path / "rs")
    assert preflight.glob_prefix("s3://lake/dumps/RS_{2019,2020}*.zst") == "s3://lake/dumps"
    assert preflight.glob_prefix("s3://lake/dumps/RS_2019.zst") is None
    assert input_problems([("k", g)], engine_kind="spark") == []  # Spark expands the pattern
    assert input_problems([("k", str(tmp_path / "nope" / "*.zst"))], engine_kind="spark") == [
        f"k: {tmp_path / 'nope' / '*.zst'}: its folder {tmp_path / 'nope'} does not exist"]
    assert input_problems([("k", str(tmp_path / "f.txt" / "*.zst"))], engine_kind="spark") == [
        f"k: {tmp_path / 'f.txt' / '*.zst'}: {tmp_path / 'f.txt'} is a file, not a folder"]
    (line,) = input_problems([("k", g)], engine_kind="embedded")  # the driver lists: no patterns
    assert line.startswith(f"k: {g} is a glob pattern") and f"give the folder ({tmp_path / 'rs'})" in line
    fs.write_bytes("memory://dumps/reddit/RS_1.zst", b"x")
    assert input_problems([("k", "memory://dumps/reddit"), ("k", "memory://dumps/reddit/*.zst")],
                          engine_kind="spark") == []
    assert input_problems([("k", "memory://dumps/twitter")]) == ["k: memory://dumps/twitter does not exist"]
    assert input_problems([("--data", str(tmp_path / "f.txt"))], folders=True) == [
        f"--data: {tmp_path / 'f.txt'} is a file, not a folder"]
    (line,) = input_problems([("k", "nosuchscheme://x/y")])
    assert line.startswith("k: ") and "\n" not in line


# --- d) engine.kind=connect without engine.remote ------------------------------------------------
def test_connect_without_a_remote_is_one_line(tmp_path):
    line = one_error_line(lewin("--set", "engine.kind=connect", "status", cwd=tmp_path))
    assert line.startswith("error: engine.remote: not set; engine.kind=connect needs a Spark Connect URL")
    line = one_error_line(lewin("--set", "engine.kind=connect", "--set", "engine.remote=http://host:15002",
                                "status", cwd=tmp_path))
    assert line.startswith("error: engine.remote: 'http://host:15002' is not a Spark Connect URL")


# --- e) an unreachable engine.remote -----------------------------------------------------------------
def test_connect_timeout_is_a_validated_key():
    assert load_config().engine.connect_timeout_seconds == 30
    assert load_config(None, ["engine.connect_timeout_seconds=2.5"]).engine.connect_timeout_seconds == 2.5
    for bad in ("0", "-1", "soon", "1e9", ".nan"):
        with pytest.raises(ConfigError, match="engine.connect_timeout_seconds"):
            load_config(None, [f"engine.connect_timeout_seconds={bad}"])


def test_a_refused_remote_is_one_line_at_once(tmp_path, closed_port):
    remote = f"sc://127.0.0.1:{closed_port}"
    r = lewin("--set", "engine.kind=connect", "--set", f"engine.remote={remote}", "status", cwd=tmp_path)
    assert one_error_line(r) == (f"error: engine.remote: {remote}: connection refused: nothing listens on "
                                 f"127.0.0.1:{closed_port} (engine.connect_timeout_seconds=30)")
    assert r.elapsed < 30


def test_a_remote_that_never_answers_fails_within_the_timeout(tmp_path, silent_port):
    remote = f"sc://127.0.0.1:{silent_port}"
    t0 = time.monotonic()
    with pytest.raises(PreflightError, match=f"engine.remote: {remote}: .*within 1s"):
        from lewin.jobs.engine import probe_remote

        probe_remote(remote, 1.0)
    assert time.monotonic() - t0 < 2.5
    r = lewin("--set", "engine.kind=connect", "--set", f"engine.remote={remote}",
              "--set", "engine.connect_timeout_seconds=2", "ingest", "--source", "reddit", "--path", ".", cwd=tmp_path)
    line = one_error_line(r)
    assert line.startswith(f"error: engine.remote: {remote}: 127.0.0.1:{silent_port} accepts connections but no gRPC "
                           "handshake completed within 2s")
    # the timeout plus the interpreter's start (seconds on a loaded machine); without the probe it
    # hangs until the subprocess timeout (60 s). The probe's own precision is checked above.
    assert r.elapsed < 2 + 15, r.elapsed
    assert not (tmp_path / "lewin-data").exists()


def test_a_spark_master_that_refuses_is_one_line(closed_port):
    from lewin.jobs.engine import probe_master

    master = f"spark://127.0.0.1:{closed_port}"
    with pytest.raises(PreflightError) as exc:
        probe_master(master, 1.0)
    assert exc.value.problems == [f"engine.master: {master}: connection refused: nothing listens on "
                                  f"127.0.0.1:{closed_port} (engine.connect_timeout_seconds=1)"]
    assert preflight.engine_problems(LewinConfig.model_validate(
        {"engine": {"kind": "spark", "master": "spark://h:port"}}).engine) == [
        "engine.master: 'spark://h:port': 'h:port' is not host:port"]
