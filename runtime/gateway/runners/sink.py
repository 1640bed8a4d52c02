"""The sink runner: consume -> write (on a live connection, retried while the destination is away, paused by the
circuit breaker when it keeps failing) -> commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from streamforge.engine.connection import PROGRAMMING_ERRORS, PeerLink, describe_failure
from streamforge.engine.retry import CircuitBreaker, CircuitSettings, CircuitState
from streamforge.engine.sdk import Record, SinkNode
from streamforge.runtime.gateway.runners.consumer import ConsumingRunner
from streamforge.runtime.kafka.clients import BatchProducer, ConsumedBatch

log = logging.getLogger("streamforge.runtime")


class SinkRunner(ConsumingRunner):
    """Offsets are committed only after write() returned: a crash or an outage replays, never loses."""

    node: SinkNode[Any]
    circuit = CircuitState.CLOSED

    async def _begin(self) -> None:
        self._link = PeerLink(self.node, self._connection_health)
        settings = getattr(self.node.config, "circuit", None)
        self._breaker = CircuitBreaker(settings if isinstance(settings, CircuitSettings) else CircuitSettings())
        self._circuit = self.env.metrics.sink_circuit_state.labels(**self.labels)
        self._circuit_is(CircuitState.CLOSED)
        await self._link.connect()  # a destination that is down now makes the node DEGRADED, not the deploy fail

    def detail(self) -> dict[str, Any]:
        return {**super().detail(), "circuit": self.circuit.name.lower()}

    async def _end(self) -> None:
        await self.node.close()

    async def _handle(self, producer: BatchProducer, batch: ConsumedBatch) -> None:
        refused: list[Record] = []
        if batch.records:
            records = batch.records
            self.node.plan(records)
            await self.changelog.save(producer)  # the plan is durable before anything is sent
            refused += await self._deliver(lambda: self.node.write(records), len(records))
        now = self._tick_due()
        if now is not None and self.node.retained():  # e.g. a file rolled by age; a sink holding nothing has none
            refused += await self._deliver(lambda: self.node.tick(now), 0)
        if refused:  # before the commit: a refused record is in the DLQ or its batch is replayed
            await self.outputs.dead_letters(producer, refused)
            self.env.metrics.errors.labels(**self.labels, kind="refused").inc(len(refused))
        await self.changelog.save(producer)  # what the sink remembers (e.g. what it sent) before the commit
        self._held_back(self.node.retained())

    async def _deliver(self, attempt: Callable[[], Awaitable[Sequence[Record] | None]], count: int) -> list[Record]:
        """Returns once `attempt` (a write, or a tick that flushes) succeeded, with what the destination refused;
        until then nothing past it is committed."""
        link, breaker, clock = self._link, self._breaker, self.node.clock
        while True:
            if breaker.state is CircuitState.OPEN:
                await clock.sleep(breaker.trial_at - clock.monotonic())
                breaker.half_open()
                self._circuit_is(CircuitState.HALF_OPEN)
            problem = await link.connect() if not link.connected else None
            if problem is None:
                started = time.perf_counter()
                try:
                    refused = await attempt()
                except PROGRAMMING_ERRORS:
                    raise  # a bug in the sink: the node fails with its traceback, the batch is replayed after restart
                except Exception as exc:  # the destination failed: keep the batch, reconnect, retry; never commit
                    problem = f"write failed: {describe_failure(exc)}"
                    self.cell.degrade("write", problem)  # counted once, as a write (not also as a connection)
                    await link.close()
                else:
                    self.env.metrics.sink_write_seconds.labels(**self.labels).observe(time.perf_counter() - started)
                    self.env.metrics.records_out.labels(**self.labels, port="write").inc(count)
                    self._closed()
                    return list(refused or ())
            await self._refresh_lag()  # the backlog grows while the destination is away
            await self._stay_in_group()
            if breaker.failure(clock.monotonic()):
                self._circuit_is(CircuitState.OPEN)
                why = (f"circuit open after {breaker.failures} consecutive failures; next trial in "
                       f"{breaker.settings.open_s:g} s; last: {problem}")  # fmt: skip
                self.cell.degrade("circuit", why)
                log.warning("sink circuit open", extra={**self.labels, "error": why})
            else:
                await link.wait()

    def _circuit_is(self, state: CircuitState) -> None:
        self.circuit = state
        self._circuit.set(state)

    def _closed(self) -> None:
        if self._breaker.state is not CircuitState.CLOSED or self._breaker.failures:
            log.info("sink circuit closed", extra=self.labels)
        self._breaker.success()
        self._circuit_is(CircuitState.CLOSED)
        self.cell.recover("write")
        self.cell.recover("circuit")
