"""Run locks: one run at a time per storage root and stage (per stage and source for per-source
stages such as ``ingest``), so two concurrent runs cannot both write the same tables.

A lock is a small JSON file, ``<storage.root>/_locks/<stage>[-<source>].lock``, written through
``lewin.udfs.fs`` and holding its owner: run id, host, pid, when it started, and a heartbeat time
that a thread refreshes every ``run.lock_heartbeat_seconds`` while the stage runs. It lives in the
storage itself, so runs on different machines sharing a bucket see each other; on metastore
engines (Databricks) tables have no folder under the root, but ``storage.root`` is still a
location and holds the locks (point it at a shared Volume or bucket when jobs run on several
clusters).

A lock is **stale**, and the next run takes it over (logging a line that says so), when its
heartbeat is older than ``run.lock_stale_seconds`` or its owner ran on this host and its pid is
gone (a SIGKILLed run). Otherwise a second run waits up to ``run.lock_wait_seconds`` (default 0)
and then raises ``RunLockHeld``, whose message is one line naming the holder.

How atomic the acquisition is, per backend:

* **local paths and FUSE mounts** (``/dbfs/…``, ``/Volumes/…``): the owner record is written to a
  private temporary file and hard-linked to the lock name (``os.link`` fails if the name exists),
  or, where hard links are not supported, created with ``os.open(O_CREAT | O_EXCL)``. Atomic on
  any POSIX filesystem (on NFS, v3 or later).
* **s3:// and s3a://** (s3fs): ``open(mode="xb")`` is a conditional PUT (``If-None-Match: *``), atomic
  on AWS S3 and on stores that honour the header (MinIO, Cloudflare R2 …); the record is then read
  back, so a store that ignores the header degrades to the guarantee of the next case.
* **other object stores** (``gs://``, ``abfss://``, ``az://`` …): an existence check, then
  ``open(mode="xb")`` (atomic where the fsspec implementation makes it so), then a read-back after
  ``_SETTLE_SECONDS``: the run whose token is in the file holds the lock. Best effort: two runs
  whose creates land within that window of each other can, rarely, both proceed.

Taking over a stale lock happens under a short-lived guard file (``<lock>.takeover``, created the
same atomic way) so two runs that both find the same stale lock cannot both replace it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from lewin.udfs import fs

if TYPE_CHECKING:  # pragma: no cover
    from lewin.jobs.stage import Stage
    from lewin.schemas.config import LewinConfig

log = logging.getLogger(__name__)

LOCKS_DIR = "_locks"
_SETTLE_SECONDS = 1.0  # read-back delay on object stores without a conditional create
_ATOMIC_CREATE = {"s3", "s3a"}  # fsspec "xb" is a conditional PUT (If-None-Match: *)
_HOLD_ENV = "LEWIN_RUN_LOCK_HOLD_SECONDS"  # test hook: hold the lock this long before the stage runs


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse(s: str) -> datetime:
    t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _pid_alive(pid: int) -> bool:
    from lewin.jobs.stage import _pid_alive as alive  # the scratch sweep's test, shared

    return True if pid <= 0 else alive(pid)  # pid unknown: only the heartbeat can tell


@dataclass
class LockOwner:
    """The record inside a lock file."""

    key: str
    run_id: str
    host: str
    pid: int
    started: str
    heartbeat: str
    token: str

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "LockOwner":
        d = json.loads(data.decode())
        return cls(key=str(d["key"]), run_id=str(d["run_id"]), host=str(d["host"]), pid=int(d["pid"]),
                   started=str(d["started"]), heartbeat=str(d["heartbeat"]), token=str(d["token"]))

    def stale_reason(self, stale_seconds: float, now: datetime | None = None) -> str | None:
        """Why this owner no longer holds the lock, or None while it does."""
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return f"its process (pid {self.pid}) is gone"
        age = ((now or _now()) - _parse(self.heartbeat)).total_seconds()
        if age > stale_seconds:
            return f"its heartbeat is {age:.0f}s old (run.lock_stale_seconds={stale_seconds:g})"
        return None

    def describe(self) -> str:
        return f"run {self.run_id} (host {self.host}, pid {self.pid}) since {self.started}"


class RunLockHeld(RuntimeError):
    """Another run holds the lock; ``str()`` is one line saying who."""

    def __init__(self, key: str, location: str, owner: LockOwner, waited: float):
        self.key, self.location, self.owner, self.waited = key, location, owner, waited
        age = max(0, round((_now() - _parse(owner.heartbeat)).total_seconds()))
        waited_s = f" after waiting {waited:g}s" if waited else ""
        super().__init__(
            f"another run holds the {key} lock ({location}){waited_s}: {owner.describe()}, last heartbeat "
            f"{age}s ago; wait for it to finish or set run.lock_wait_seconds")


def lock_key(stage: "Stage") -> str:
    """``<stage>`` or, for a per-source stage, ``<stage>-<source>``."""
    source = getattr(stage, "source", None) if stage.per_source else None
    key = f"{stage.name}-{source}" if isinstance(source, str) and source else stage.name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


class RunLock:
    """``with RunLock(root, key, run_id): …`` — held for the block, heartbeat refreshed meanwhile,
    released on the way out (exceptions included)."""

    def __init__(self, root: str, key: str, run_id: str, *, wait_seconds: float = 0.0,
                 stale_seconds: float = 300.0, heartbeat_seconds: float = 15.0, poll_seconds: float = 1.0):
        self.key, self.run_id = key, run_id
        self.location = fs.join(root, LOCKS_DIR, f"{key}.lock")
        self.wait_seconds, self.stale_seconds = wait_seconds, stale_seconds
        self.heartbeat_seconds, self.poll_seconds = heartbeat_seconds, poll_seconds
        self.token = uuid.uuid4().hex
        self.lost = False
        self._fs, self._path = fs._resolve(self.location)
        self._local = fs._is_local_fs(self._fs)
        self._scheme = fs.scheme(self.location)
        self._started = _iso(_now())
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the file ----------------------------------------------------------------------------
    def _record(self) -> LockOwner:
        return LockOwner(key=self.key, run_id=self.run_id, host=socket.gethostname(), pid=os.getpid(),
                         started=self._started, heartbeat=_iso(_now()), token=self.token)

    def _create(self, path: str, data: bytes) -> bool:
        """Create ``path`` holding ``data`` unless it exists; True when this call created it."""
        if self._local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and readers never see a half-written file
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links on this mount: exclusive create
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                return True
            finally:
                os.unlink(tmp)
        if self._scheme not in _ATOMIC_CREATE and self._fs.exists(path):
            return False
        try:
            with self._fs.open(path, "xb") as f:
                f.write(data)
        except FileExistsError:
            return False
        if self._scheme not in _ATOMIC_CREATE:
            time.sleep(_SETTLE_SECONDS)
        try:  # read back: last writer wins on a store that ignores the condition
            return LockOwner.from_bytes(self._fs.cat_file(path)).token == json.loads(data)["token"]
        except (FileNotFoundError, ValueError, KeyError):
            return False

    def _overwrite(self, path: str, data: bytes) -> None:
        if self._local:
            tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            with self._fs.open(path, "wb") as f:
                f.write(data)

    def _read(self, path: str) -> LockOwner | None:
        """The owner in ``path``; None when the file is gone. An unreadable file (a half-written
        create on a filesystem without hard links) reads as an unknown owner aged by its mtime."""
        for attempt in range(3):
            try:
                data = self._fs.cat_file(path)
            except FileNotFoundError:
                return None
            try:
                return LockOwner.from_bytes(data)
            except (ValueError, KeyError, TypeError):
                time.sleep(0.2 * (attempt + 1))
        try:
            mtime = fs.mtime_ns(self._fs.info(path), path if self._local else None)
        except FileNotFoundError:
            return None
        t = _iso(datetime.fromtimestamp(mtime / 1e9, timezone.utc) if mtime else _now())
        return LockOwner(key=self.key, run_id="<unreadable lock file>", host="?", pid=0, started=t, heartbeat=t,
                         token="")

    def _delete(self, path: str) -> None:
        try:
            self._fs.rm_file(path) if not self._local else os.unlink(path)
        except FileNotFoundError:
            pass

    # --- acquire, heartbeat, release ---------------------------------------------------------
    def _take_over(self, seen: LockOwner, reason: str) -> bool:
        """Replace a stale lock under the takeover guard; True when this run now holds it."""
        guard = self._path + ".takeover"
        if not self._create(guard, self._record().to_bytes()):
            other = self._read(guard)
            if other is not None and other.stale_reason(self.stale_seconds) is not None:
                self._delete(guard)  # a run died mid-takeover
            return False
        try:
            current = self._read(self._path)
            if current is not None and (current.token != seen.token or current.heartbeat != seen.heartbeat):
                return False  # it changed since we looked: look again
            if current is not None:
                log.warning("taking over the stale %s lock (%s) from %s: %s", self.key, self.location,
                            seen.describe(), reason)
                self._delete(self._path)
            return self._create(self._path, self._record().to_bytes())
        finally:
            self._delete(guard)

    def acquire(self) -> "RunLock":
        t0 = time.monotonic()
        self._started = _iso(_now())
        announced = False
        while True:
            if self._create(self._path, self._record().to_bytes()):
                break
            owner = self._read(self._path)
            if owner is None:
                continue  # released between our create and our read
            reason = owner.stale_reason(self.stale_seconds)
            if reason is not None:
                if self._take_over(owner, reason):
                    break
                time.sleep(0.05)  # another run is taking it over: look again
                continue
            waited = time.monotonic() - t0
            if waited >= self.wait_seconds:
                raise RunLockHeld(self.key, self.location, owner, round(waited, 1) if self.wait_seconds else 0)
            if not announced:
                log.info("waiting up to %gs for the %s lock held by %s", self.wait_seconds, self.key, owner.describe())
                announced = True
            time.sleep(min(self.poll_seconds, self.wait_seconds - waited))
        self._held = True
        log.debug("holding the %s lock (%s) for run %s", self.key, self.location, self.run_id)
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name=f"lewin-lock-{self.key}", daemon=True)
        self._thread.start()
        hold = float(os.environ.get(_HOLD_ENV) or 0)
        if hold > 0:
            time.sleep(hold)
        return self

    def beat(self) -> bool:
        """Refresh the heartbeat; False (and ``lost``) when the file is no longer this run's."""
        current = self._read(self._path)
        if current is None or current.token != self.token:
            if not self.lost:
                log.error("lost the %s lock (%s) to %s: another run may now write the same tables", self.key,
                          self.location, current.describe() if current else "nobody (the file is gone)")
            self.lost = True
            return False
        self._overwrite(self._path, self._record().to_bytes())
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                if not self.beat():
                    return
            except Exception as exc:  # a transient storage error: try again at the next beat
                log.warning("could not refresh the %s lock heartbeat: %s", self.key, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if not self._held:
            return
        self._held = False
        current = self._read(self._path)
        if current is not None and current.token == self.token:
            self._delete(self._path)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def for_stage(stage: "Stage", cfg: "LewinConfig", run_id: str) -> RunLock:
    """The lock a stage run takes under ``storage.root``, with the ``run.*`` settings."""
    rc = cfg.run
    return RunLock(cfg.storage.root_location, lock_key(stage), run_id, wait_seconds=rc.lock_wait_seconds,
                   stale_seconds=rc.lock_stale_seconds, heartbeat_seconds=rc.lock_heartbeat_seconds)
