"""Checks of the environment a command needs, run at start before any engine or work.

Each check is a function returning problems: one line each, naming the config key (or the
command-line option) and the location, e.g. ``storage.root: /data/x is a file, not a folder``.
``check`` gathers them and raises ``PreflightError``; the CLI prints each line and exits 2.

* ``storage_problems``: ``storage.root`` is a folder (or can be one) the command can use:
  readable for the read-only commands (``status``, ``sql``, ``audit``, which never create it),
  and for the others writable, proved by writing and deleting a probe (a local file, or an
  object under ``<root>/_lewin_probe/`` through ``lewin.udfs.fs``).
* ``input_problems``: every input path exists (a glob: its folder part).
* ``engine_problems``: the engine's settings name an endpoint (``engine.remote`` for
  ``connect``). Reaching it, within ``engine.connect_timeout_seconds``, is ``get_engine``'s first
  step (``lewin.jobs.engine.probe_remote``), since only it knows when a session is about to start.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from typing import Iterable

from lewin.schemas.config import EngineConfig, LewinConfig, StorageConfig
from lewin.udfs import fs

ROOT_KEY = "storage.root"
PROBE_DIR = "_lewin_probe"
_GLOB = re.compile(r"[*?\[{]")


class PreflightError(ValueError):
    """The environment lacks something the configuration names: ``problems`` holds one line
    each (``str()`` joins them)."""

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def _why(exc: BaseException) -> str:
    """An exception as a short phrase on one line (``Permission denied``, a store's first line)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# --- storage.root ----------------------------------------------------------------------------
def storage_problems(storage: StorageConfig, engine_kind: str, *, write: bool) -> list[str]:
    """Problems with ``storage.root`` for a command that writes (``write``) or only reads."""
    raw = os.fspath(storage.root)
    if not raw.strip():
        return [f"{ROOT_KEY}: empty; set a local folder or an object-store URL"]
    root = storage.root_location
    sch = fs.scheme(root)
    if engine_kind == "databricks" and (sch == "dbfs" or root.startswith("/Volumes/")):
        # A workspace location (DBFS, a Unity Catalog volume) is visible to this process only on
        # a cluster, through the FUSE mounts /dbfs and /Volumes. Under Databricks Connect the
        # driver runs elsewhere and the location exists only in the workspace, where the engine
        # and Unity Catalog's grants decide: nothing here can check it, so the check is skipped.
        # On a cluster the mount is there and the root is checked like any folder: the run locks
        # and the PII key file go through the same mount (``lewin.udfs.fs``), so the probe asks
        # no more than the run itself needs.
        if not os.path.isdir("/Volumes" if _local_path(root).startswith("/Volumes/") else "/dbfs"):
            return []
    if fs.is_local(root):
        return _local_root_problems(root, _local_path(root), write=write)
    return _store_root_problems(root, write=write)


def _local_path(root: str) -> str:
    """The local path of a local location (``dbfs:/x`` -> its FUSE path ``/dbfs/x``)."""
    if fs.scheme(root) == "dbfs":
        rest = "/" + root[len("dbfs:"):].lstrip("/")
        return rest if rest.startswith("/Volumes/") else "/dbfs" + rest
    return root


def _nearest_existing(path: str) -> str:
    p = path
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def _local_root_problems(shown: str, path: str, *, write: bool) -> list[str]:
    if os.path.exists(path):
        if not os.path.isdir(path):
            return [f"{ROOT_KEY}: {shown} is a file, not a folder"]
        if not os.access(path, os.R_OK | os.X_OK):
            return [f"{ROOT_KEY}: {shown} cannot be read (permission denied)"]
        if write:
            try:
                fd, probe = tempfile.mkstemp(prefix=".lewin_probe_", dir=path)
                os.close(fd)
                os.remove(probe)
            except OSError as exc:
                return [f"{ROOT_KEY}: {shown} is not writable ({_why(exc)})"]
        return []
    if os.path.lexists(path):
        return [f"{ROOT_KEY}: {shown} is a broken link (its target {os.path.realpath(path)} does not exist)"]
    anc = _nearest_existing(path)
    if os.path.exists(anc) and not os.path.isdir(anc):
        return [f"{ROOT_KEY}: {shown} cannot be created: {anc} is a file, not a folder"]
    if not os.path.exists(anc):  # a broken link on the way
        return [f"{ROOT_KEY}: {shown} cannot be created: {anc} is a broken link"]
    if not write:
        # a read-only command does not create the root: no tables yet (``storage_notes``)
        return []
    # creatable and writable: make the missing folders, write a probe, and take it all back, so
    # a command that stops later (say, an unreachable engine) leaves nothing behind
    created: list[str] = []
    try:
        p = path
        missing = []
        while not os.path.lexists(p):
            missing.append(p)
            p = os.path.dirname(p)
        for d in reversed(missing):
            os.mkdir(d)
            created.append(d)
        fd, probe = tempfile.mkstemp(prefix=".lewin_probe_", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        where = f" in {anc}" if not created else ""
        return [f"{ROOT_KEY}: {shown} cannot be created{where} ({_why(exc)})"]
    finally:
        for d in reversed(created):
            try:
                os.rmdir(d)
            except OSError:  # pragma: no cover - someone else wrote there meanwhile: keep it
                break
    return []


def _store_root_problems(root: str, *, write: bool) -> list[str]:
    """An object-store (or other fsspec) root: not an object, and writable (a probe object under
    ``<root>/_lewin_probe/``, deleted at once). Object stores have no folders to create: a
    writable prefix is all a root needs."""
    try:
        if fs.isfile(root):
            return [f"{ROOT_KEY}: {root} is a file (an object), not a folder"]
        if not write:
            return []
        probe = fs.join(root, PROBE_DIR, f"{uuid.uuid4().hex}.probe")
        fs.write_bytes(probe, b"lewin preflight probe\n")
        fs.rm(probe)
        try:  # the probe folder, where the store has folders; another run's probe may be in it
            if not fs.list_files(fs.join(root, PROBE_DIR)):
                fs.rm(fs.join(root, PROBE_DIR))
        except Exception:  # pragma: no cover - cosmetic
            pass
    except (ImportError, ValueError) as exc:  # no filesystem for the scheme, a malformed URL
        return [f"{ROOT_KEY}: {str(exc).strip().splitlines()[0] if str(exc).strip() else root}"]
    except Exception as exc:  # credentials, a missing bucket, a read-only grant ...
        what = "is not writable" if write else "cannot be read"
        return [f"{ROOT_KEY}: {root} {what} ({_why(exc)})"]
    return []


def storage_notes(storage: StorageConfig) -> list[str]:
    """Informational lines for a read-only command (a root that does not exist yet)."""
    root = storage.root_location
    try:
        missing = not fs.exists(root)
    except Exception:
        return []
    return [f"{ROOT_KEY} {root} does not exist yet: no tables"] if missing else []


# --- input paths -----------------------------------------------------------------------------
def glob_prefix(loc: str) -> str | None:
    """The folder part of a glob pattern (``/data/rs/*.zst`` -> ``/data/rs``), or None when
    ``loc`` is no pattern. ``*?[{`` are pattern characters (``{a,b}``: Hadoop's braces)."""
    sch = fs.scheme(loc)
    start = len(sch) + 1 if sch else 0  # the scheme itself never holds a pattern
    m = _GLOB.search(loc, start)
    if m is None:
        return None
    head = loc[:m.start()]
    cut = head.rfind("/")
    if cut < 0:
        return "."
    prefix = head[:cut] or "/"
    if sch and prefix.endswith(":/"):  # s3://bucket* : the pattern is in the bucket name
        return prefix + "/"
    return prefix


def input_problems(items: Iterable[tuple[str, str]], *, engine_kind: str = "embedded",
                   folders: bool = False) -> list[str]:
    """Problems with input locations, given as (key, location): the config key
    (``ingest.sources.reddit.paths``) or option (``--path``) each came from. ``folders``: each
    must be a folder (``--data``). A glob pattern is checked through its folder part; the
    embedded engine lists inputs on the driver, which reads files and folders, not patterns."""
    problems: list[str] = []
    for key, loc in items:
        loc = os.fspath(loc)
        if not loc.strip():
            problems.append(f"{key}: an empty path")
            continue
        prefix = glob_prefix(loc)
        target = loc if prefix is None else prefix
        try:
            there = fs.exists(target)
            is_dir = there and fs.isdir(target)
        except (ImportError, ValueError) as exc:  # no filesystem for the scheme, a malformed URL
            problems.append(f"{key}: {str(exc).splitlines()[0] if str(exc).strip() else loc}")
            continue
        except Exception as exc:  # credentials, a missing bucket, permissions ...
            problems.append(f"{key}: {loc} cannot be read ({_why(exc)})")
            continue
        if prefix is not None:
            if not there:
                problems.append(f"{key}: {loc}: its folder {prefix} does not exist")
            elif not is_dir:
                problems.append(f"{key}: {loc}: {prefix} is a file, not a folder")
            elif engine_kind == "embedded":
                problems.append(f"{key}: {loc} is a glob pattern; the embedded engine reads files and folders, "
                                f"not patterns: give the folder ({prefix})")
            continue
        if not there:
            problems.append(f"{key}: {loc} does not exist")
        elif folders and not is_dir:
            problems.append(f"{key}: {loc} is a file, not a folder")
        elif fs.is_local(loc) and fs.scheme(loc) is None and not os.access(loc, os.R_OK | (os.X_OK if is_dir else 0)):
            problems.append(f"{key}: {loc} cannot be read (permission denied)")
    return problems


def config_inputs(cfg: LewinConfig) -> list[tuple[str, str]]:
    """(key, location) of every input path the configuration names (``ingest.sources``)."""
    out: list[tuple[str, str]] = []
    for source, sc in cfg.ingest.sources.items():
        out += [(f"ingest.sources.{source}.paths", p) for p in sc.paths]
        if sc.users_path:
            out.append((f"ingest.sources.{source}.users_path", sc.users_path))
    return out


# --- the engine's settings -------------------------------------------------------------------
def engine_problems(engine: EngineConfig) -> list[str]:
    """Settings that cannot name a reachable engine (checked without touching the network)."""
    if engine.kind == "connect":
        if not (engine.remote or "").strip():
            return ["engine.remote: not set; engine.kind=connect needs a Spark Connect URL (sc://host:15002)"]
        from lewin.jobs.engine import parse_remote

        try:
            parse_remote(engine.remote)
        except PreflightError as exc:
            return exc.problems
    if engine.kind == "spark" and engine.master.startswith("spark://"):
        from lewin.jobs.engine import parse_master

        try:
            parse_master(engine.master)
        except PreflightError as exc:
            return exc.problems
    return []


# --- all of them -----------------------------------------------------------------------------
def problems(cfg: LewinConfig, *, write: bool, inputs: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Every problem of a command's environment: the storage root (for writing, or reading
    only), ``inputs`` ((key, location) pairs) and the engine's settings."""
    return (storage_problems(cfg.storage, cfg.engine.kind, write=write)
            + input_problems(inputs, engine_kind=cfg.engine.kind)
            + engine_problems(cfg.engine))


def check(cfg: LewinConfig, *, write: bool, inputs: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Raise ``PreflightError`` with every problem; else return notes worth a log line."""
    found = problems(cfg, write=write, inputs=inputs)
    if found:
        raise PreflightError(found)
    return [] if write else storage_notes(cfg.storage)
