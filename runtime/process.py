"""Child-process hygiene shared by the Kafka supervisor and the node supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn: the kernel sends `sig` to the child when this process dies (even by SIGKILL), so no orphan
    keeps producing or holds the Kafka data directory's lock.

    Call it in the parent: it remembers the parent's pid, so a parent that died between fork and prctl (which
    would leave the child without the signal) makes the child exit at once instead.
    """
    parent = os.getpid()

    def arm() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os._exit(1)

    return arm


async def terminate(process: asyncio.subprocess.Process, timeout_s: float = 10.0) -> None:
    """SIGTERM, wait up to timeout_s for a clean exit, then SIGKILL."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
