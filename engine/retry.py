"""The one backoff and the one restart window: device reconnects, sink retries, node and broker restarts."""

from __future__ import annotations

import random
from collections import deque
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field


class Backoff:
    """Exponential backoff with full jitter, so many gateways (or many nodes) do not retry in step."""

    def __init__(self, first_s: float, longest_s: float, rng: random.Random | None = None) -> None:
        self.first_s, self.longest_s = first_s, longest_s
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.longest_s, self.first_s * 2**self.failures)
        self.failures += 1
        return self._rng.uniform(min(self.first_s / 2, ceiling), ceiling)

    def reset(self) -> None:
        self.failures = 0


class ConnectionSettings(BaseModel):
    """Timeouts and reconnect pacing of a node's device or destination: a `connection` field of its config."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=3.0, gt=0, description="A request unanswered this long is a failure")
    reconnect_min_s: float = Field(default=0.5, gt=0, description="First wait before reconnecting")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="Longest wait between reconnects")

    def backoff(self) -> Backoff:
        return Backoff(self.reconnect_min_s, self.reconnect_max_s)


class RestartWindow:
    """Spec: auto-restart at most `max_restarts` times within `window_s`; one more means FAILED (a person)."""

    def __init__(self, max_restarts: int, window_s: float) -> None:
        self.max_restarts, self.window_s = max_restarts, window_s
        self._recent: deque[float] = deque()

    def allows(self, now: float) -> bool:
        """Record a failure at `now` (monotonic seconds); False once the limit is passed."""
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.window_s:
            self._recent.popleft()
        return len(self._recent) <= self.max_restarts


class CircuitState(IntEnum):
    """As exported by `streamforge_sink_circuit_state`."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitSettings(BaseModel):
    """When a sink stops hammering a destination that keeps failing: a `circuit` field of its config."""

    model_config = ConfigDict(extra="forbid")

    failures_to_open: int = Field(default=5, ge=1, description="Consecutive failed writes that open the circuit")
    open_s: float = Field(default=30.0, gt=0, description="How long an open circuit waits before one trial write")


class CircuitBreaker:
    """Closed -> open after `failures_to_open` consecutive failures -> half-open after `open_s`: one trial, which
    closes it or opens it again."""

    def __init__(self, settings: CircuitSettings) -> None:
        self.settings = settings
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.trial_at = 0.0  # monotonic time of the next trial while open

    def failure(self, now: float) -> bool:
        """Count a failure at `now`; True when it opened the circuit."""
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN or self.failures >= self.settings.failures_to_open:
            self.state, self.trial_at = CircuitState.OPEN, now + self.settings.open_s
            return True
        return False

    def half_open(self) -> None:
        self.state = CircuitState.HALF_OPEN

    def success(self) -> None:
        self.state, self.failures = CircuitState.CLOSED, 0
