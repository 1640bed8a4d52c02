"""Process hygiene: children that die with their parent and stop in time, memory freed back to the system."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
RETURN_ABOVE_BYTES = 256 * 1024


def return_freed_memory() -> None:
    """Have glibc's malloc give freed memory back to the system at a fixed threshold, for a long-running process.

    By default glibc raises both thresholds after a large block is freed (up to 32 MB to map, 64 MB to keep at the
    heap's top): once a gateway at 10,000 series freed its first few-MB buffers, ~30 MB it had freed stayed in its
    RSS for good (mallinfo2: keepcost 28 MB). Fixed, a block over 256 KiB (a Kafka fetch, a producer batch) is
    mapped on its own and unmapped when freed, and the heap's free top is released past 256 KiB. No-op elsewhere
    than glibc."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, RETURN_ABOVE_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, RETURN_ABOVE_BYTES)


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
