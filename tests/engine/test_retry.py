"""The one backoff, restart window and circuit breaker every reconnect, restart and sink retry goes through."""

from __future__ import annotations

import random

from streamforge.engine.retry import Backoff, CircuitBreaker, CircuitSettings, CircuitState, RestartWindow


def test_backoff_grows_to_its_ceiling_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [min(8.0, 0.5 * 2**n) for n in range(10)]
    assert all(0.25 <= delay <= ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert max(delays[6:]) > 4.0 and len(set(delays)) == 10  # grown, and jittered
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_restart_window_allows_max_restarts_within_the_window_only() -> None:
    window = RestartWindow(max_restarts=2, window_s=60)
    assert window.allows(0) and window.allows(10)
    assert not window.allows(20)  # a third within a minute: FAILED
    spaced = RestartWindow(max_restarts=2, window_s=60)
    assert all(spaced.allows(t) for t in (0, 50, 100, 150, 200))  # never more than 2 in any 60 s


def test_circuit_opens_after_consecutive_failures_and_one_trial_decides() -> None:
    breaker = CircuitBreaker(CircuitSettings(failures_to_open=3, open_s=30))
    assert not breaker.failure(1) and not breaker.failure(2)
    breaker.success()  # a success in between: the count starts again
    assert not breaker.failure(3) and not breaker.failure(4)
    assert breaker.failure(5) and breaker.state is CircuitState.OPEN and breaker.trial_at == 35
    breaker.half_open()
    assert breaker.failure(36) and breaker.state is CircuitState.OPEN and breaker.trial_at == 66  # the trial failed
    breaker.half_open()
    breaker.success()
    assert (breaker.state, breaker.failures) == (CircuitState.CLOSED, 0)
