"""Named crash points for recovery tests: ``LEWIN_FAILPOINT=<name>`` kills the process there
with SIGKILL, as a machine loss or OOM kill would (no cleanup, no exception handlers)."""

from __future__ import annotations

import os
import signal


def hit(name: str) -> None:
    if os.environ.get("LEWIN_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
