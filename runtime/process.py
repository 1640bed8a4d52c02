"""Child-process hygiene shared by the Kafka supervisor and the node supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal


def die_with_parent() -> None:
    """preexec_fn: the kernel kills this child when the gateway dies (even by SIGKILL), so no orphan keeps
    producing or holds the Kafka data directory's lock."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


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
