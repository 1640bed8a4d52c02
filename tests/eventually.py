"""The one way a test waits for something asynchronous: poll a check until it holds, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    timeout_s: float = ...,
    interval_s: float = ...,
    what: str = ...,
    state: Callable[[], object] | None = ...,
) -> T: ...
@overload
async def eventually(
    check: Callable[[], T | None],
    timeout_s: float = ...,
    interval_s: float = ...,
    what: str = ...,
    state: Callable[[], object] | None = ...,
) -> T: ...
async def eventually(
    check: Callable[[], Any],
    timeout_s: float = 60.0,
    interval_s: float = 0.1,
    what: str = "",
    state: Callable[[], object] | None = None,
) -> Any:
    """The first truthy value `check()` returns (awaited if it is a coroutine); AssertionError with the last value
    seen (or `state()`, what there is to see) once `timeout_s` has passed. An exception from the check fails at
    once: a check must not hide bugs."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = state() if state is not None else value
            raise AssertionError(f"{what or 'condition'} not met within {timeout_s} s; saw: {seen!r}"[:3000])
        await asyncio.sleep(interval_s)
