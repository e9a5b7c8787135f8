"""The engine-agnostic tests (marker ``transforms``) again, on classic local PySpark.

PySpark cannot hold a Spark Connect and a classic session in one process, so this runs them in a
subprocess with ``LEWIN_TEST_ENGINE=spark`` (classic ``local[2]``; tables as Parquet where the
Delta jars are absent, as here: no Maven access).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ENGINE


@pytest.mark.classic
@pytest.mark.slow
def test_transforms_on_classic_spark():
    if ENGINE != "embedded":
        pytest.skip("this is the classic run already")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("classic Spark needs a JVM (Java 17); none found")
    env = dict(os.environ, LEWIN_TEST_ENGINE="spark")
    # this process holds a Spark Connect session, which marks the environment as Connect mode
    for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
        env.pop(var, None)
    tests = Path(__file__).parent
    r = subprocess.run(
        [sys.executable, "-m", "pytest", str(tests), "-m", "transforms", "-q", "-p", "no:cacheprovider"],
        env=env, capture_output=True, text=True, timeout=2400, cwd=tests.parent,
    )
    tail = (r.stdout[-6000:] + "\n" + r.stderr[-3000:]).strip()
    assert r.returncode == 0, tail
    m = re.search(r"(\d+) passed", r.stdout)
    assert m and int(m.group(1)) >= 30, f"too few transform tests ran on classic Spark:\n{tail}"
    print(r.stdout.strip().splitlines()[-1])
