"""The per-worker process pool used by Python-heavy UDFs on the embedded engine."""

from __future__ import annotations

import functools
import os

import pyarrow as pa
import pytest

from lewin.udfs.pool import pooled_batches


def _batches_for(n: int, rows: int = 3):
    for k in range(n):
        yield pa.record_batch({"task": [n] * rows, "k": [k] * rows, "pid": [os.getpid()] * rows})


def _boom(n: int):
    if n == 2:
        raise ValueError("task 2 failed")
    yield pa.record_batch({"task": [n]})


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_task_order(workers):
    out = list(pooled_batches(_batches_for, [3, 0, 2, 5], workers))
    assert [(b["task"][0].as_py(), b["k"][0].as_py()) for b in out] == [
        (3, 0), (3, 1), (3, 2), (2, 0), (2, 1), (5, 0), (5, 1), (5, 2), (5, 3), (5, 4)
    ]
    pids = {b["pid"][0].as_py() for b in out}
    if workers == 1:
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids, "tasks ran in worker processes"


def test_partial_functions_and_errors_propagate():
    fn = functools.partial(_batches_for, rows=1)
    assert sum(b.num_rows for b in pooled_batches(fn, [2, 2], 2)) == 4
    with pytest.raises(ValueError, match="task 2 failed"):
        list(pooled_batches(_boom, [1, 2, 3], 2))
