"""Every core for Python-heavy batch UDFs, on engines that run UDFs in one interpreter.

Sail (the embedded engine) executes Python UDFs on threads of a single interpreter, so a
CPU-bound ``mapInArrow`` runs on one core however many partitions it has. ``pooled_batches`` hands
each task to a per-process pool of worker processes (created once, reused by every UDF call and
partition; each worker loads its models once) and streams the Arrow results back through
temporary IPC files, so memory stays bounded whatever the task returns. On classic Spark and
Databricks every task already has its own Python worker process: there ``workers`` is 1 and the
task runs inline.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

_LOCK = threading.Lock()
_POOLS: dict[int, ProcessPoolExecutor] = {}


def _executor(workers: int) -> ProcessPoolExecutor:
    with _LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            # forkserver: children fork from a clean helper process, never from a process that
            # runs Sail's threads; the preload list keeps it from importing the caller's __main__.
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["pyarrow", "lewin.udfs.readers", "lewin.udfs.sources"])
            pool = ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
            )
            _POOLS[workers] = pool
        return pool


def _worker_init(owner_pid: int) -> None:
    """Workers leave with their owner: a SIGKILLed job must not leave orphans holding its
    output pipes and CPU (the pool's own shutdown never runs then)."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(owner_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # pid reused by another user's process: owner is gone
                os._exit(1)

    threading.Thread(target=watch, name="lewin-pool-watchdog", daemon=True).start()


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Worker processes start by re-importing the parent's ``__main__`` (spawn/forkserver
    semantics), which re-runs any script without an ``if __name__ == "__main__"`` guard. The
    workers only need ``lewin``: hide ``__main__``'s origin while they are being started."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__["__spec__"] = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _submit(pool: ProcessPoolExecutor, *args: Any) -> Future:
    # ProcessPoolExecutor starts workers on demand inside submit(): keep __main__ hidden there.
    with _LOCK, _main_not_reimported():
        return pool.submit(*args)


def shutdown() -> None:
    with _LOCK:
        for pool in _POOLS.values():
            pool.shutdown(wait=False, cancel_futures=True)
        _POOLS.clear()


atexit.register(shutdown)


def _run_to_ipc(fn: Callable[[Any], Iterable[pa.RecordBatch]], item: Any, tmpdir: str) -> str | None:
    """Worker side: run one task, spill its batches to an Arrow IPC file, return the path."""
    path = os.path.join(tmpdir, f"lewin-{uuid.uuid4().hex}.arrow")
    writer = None
    try:
        for batch in fn(item):
            if writer is None:
                writer = pa.ipc.new_file(path, batch.schema)
            writer.write_batch(batch)
    finally:
        if writer is not None:
            writer.close()
    return path if writer is not None else None


def _drain(path: str | None) -> Iterator[pa.RecordBatch]:
    if path is None:
        return
    try:
        with pa.OSFile(path, "rb") as f:  # read into memory (not mapped): the file goes away next
            reader = pa.ipc.open_file(f)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
    finally:
        os.unlink(path)


def _spill_dir() -> str:
    """Spill files live in RAM where the machine has a tmpfs (they are read back at once)."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return shm
    return tempfile.gettempdir()


def pooled_batches(
    fn: Callable[[Any], Iterable[pa.RecordBatch]], items: Iterable[Any], workers: int
) -> Iterator[pa.RecordBatch]:
    """``fn(item)`` for every item, results in item order. ``fn`` must be a module-level function
    (or a ``functools.partial`` of one) so worker processes can import it. At most ``2 × workers``
    items are in flight, so an endless input (a partition's batches) streams in bounded memory."""
    if workers <= 1:
        for item in items:
            yield from fn(item)
        return
    pool = _executor(workers)
    tmpdir = _spill_dir()
    window: deque[Future] = deque()
    it = iter(items)
    try:
        while True:
            while len(window) < 2 * workers:
                try:
                    item = next(it)
                except StopIteration:
                    break
                window.append(_submit(pool, _run_to_ipc, fn, item, tmpdir))
            if not window:
                return
            yield from _drain(window.popleft().result())
    finally:
        for fut in window:  # a consumer that stops early (or an error) must not leak spill files
            if fut.cancel():
                continue
            try:
                p = fut.result()
                if p and os.path.exists(p):
                    os.unlink(p)
            except Exception:
                pass


def map_in_arrow_pooled(df, fn: Callable[[pa.RecordBatch], Iterable[pa.RecordBatch]], schema, workers: int):
    """``df.mapInArrow`` whose batches each go through ``fn`` on the worker pool."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from pooled_batches(fn, batches, workers)

    return df.mapInArrow(run, schema)
