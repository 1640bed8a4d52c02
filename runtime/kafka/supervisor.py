"""Supervisor for the embedded broker: start, watch, restart after a crash with data kept, report health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from streamforge.engine.retry import Backoff, RestartWindow
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.broker import Broker, BrokerSettings, wait_ready
from streamforge.runtime.kafka.install import distribution
from streamforge.runtime.process import die_with_parent, terminate

log = logging.getLogger("streamforge.kafka")


class BrokerState(StrEnum):
    STARTING = "STARTING"
    HEALTHY = "HEALTHY"
    RESTARTING = "RESTARTING"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


class EmbeddedKafka:
    """`async with EmbeddedKafka(data_dir) as kafka:` runs a supervised single-node KRaft broker.

    A broker that dies is restarted on the same data and ports; more than `max_restarts`
    within `restart_window_s` marks it FAILED (spec: max 5 restarts in 5 minutes).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        cache_dir: str | Path | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        start_timeout_s: float = 120.0,
        max_restarts: int = 5,
        restart_window_s: float = 300.0,
        restart_backoff_s: float = 0.5,
        broker_properties: dict[str, str] | None = None,
        format_arguments: Sequence[str] = (),
    ) -> None:
        self.broker = Broker(distribution(cache_dir), data_dir, broker_properties, format_arguments)
        self._ports = (port, controller_port)
        self.start_timeout_s = start_timeout_s
        self.state = BrokerState.STOPPED
        self.restarts = 0
        self.last_error: str | None = None
        self.settings: BrokerSettings | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._window = RestartWindow(max_restarts, restart_window_s)
        self._backoff = Backoff(restart_backoff_s, 30.0)
        self._healthy = asyncio.Event()
        self._stopping = False
        self._arm_death_signal = die_with_parent(signal.SIGTERM)

    @property
    def bootstrap(self) -> str:
        if self.settings is None:
            raise RuntimeError("the embedded Kafka has not been started")
        return self.settings.bootstrap

    @property
    def access(self) -> KafkaAccess:
        """What this broker's clients (the gateway's, its workers') connect with: bootstrap and SCRAM login."""
        if self.settings is None:
            raise RuntimeError("the embedded Kafka has not been started")
        return self.broker.access(self.settings)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def data_dir(self) -> Path:
        return self.broker.data_dir

    async def __aenter__(self) -> EmbeddedKafka:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._stopping = False
        stray = await asyncio.to_thread(self.broker.stop_stray)
        if stray is not None:
            log.warning("stopped a broker left running on this data directory", extra={"pid": stray,
                        "data_dir": str(self.data_dir)})  # fmt: skip
        self.settings = await asyncio.to_thread(self.broker.prepare, *self._ports)
        self.state = BrokerState.STARTING
        try:
            await self._spawn_until_ready()
        except BaseException:
            if self._process is not None:
                await terminate(self._process)
            self.state = BrokerState.FAILED
            raise
        self._watcher = asyncio.create_task(self._watch(), name="kafka-supervisor")

    async def _spawn_until_ready(self) -> None:
        assert self.settings is not None
        self.broker.check_ports_free(self.settings)
        stderr = (self.data_dir / "broker.stderr").open("ab")
        try:
            # Its own session keeps a terminal's Ctrl-C from reaching it before the gateway has stopped its
            # nodes; the parent-death SIGTERM makes it shut down cleanly if the gateway dies, even by SIGKILL.
            self._process = await asyncio.create_subprocess_exec(
                *self.broker.command(self.settings),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=self._arm_death_signal,
            )
        finally:
            stderr.close()
        process = self._process
        log.info("kafka started", extra={"pid": process.pid, "bootstrap": self.bootstrap})
        await wait_ready(self.access, self.start_timeout_s, alive=lambda: process.returncode is None)
        await self.broker.check_ours(process.pid, self.settings)
        self.state = BrokerState.HEALTHY
        self._healthy.set()
        self._backoff.reset()
        log.info("kafka ready", extra={"pid": process.pid, "bootstrap": self.bootstrap,
                                       "cluster_id": self.settings.cluster_id})  # fmt: skip

    async def _watch(self) -> None:
        while not self._stopping:
            assert self._process is not None
            returncode = await self._process.wait()
            if self._stopping:
                return
            self._healthy.clear()
            self.last_error = f"broker exited with code {returncode}"
            if not self._window.allows(time.monotonic()):
                self.state = BrokerState.FAILED
                log.error("kafka failed: restart limit reached", extra={"error": self.last_error})
                return
            self.state = BrokerState.RESTARTING
            self.restarts += 1
            log.warning(
                "kafka crashed; restarting on the same data",
                extra={"error": self.last_error, "restarts": self.restarts},
            )
            await asyncio.sleep(self._backoff.next_delay())
            try:
                await self._spawn_until_ready()
            except (RuntimeError, TimeoutError, KafkaError) as exc:
                self.last_error = str(exc)
                log.error("kafka restart failed", extra={"error": self.last_error})
                if self._process is not None and self._process.returncode is None:
                    self._process.kill()

    async def wait_healthy(self, timeout_s: float = 120.0) -> None:
        await asyncio.wait_for(self._healthy.wait(), timeout_s)

    def kill(self) -> None:
        """SIGKILL the broker (chaos testing); the supervisor restarts it."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGKILL)

    def health(self) -> dict[str, Any]:
        return {
            "component": "kafka",
            "status": self.state.value,
            "pid": self.pid,
            "bootstrap": None if self.settings is None else self.bootstrap,
            "version": self.broker.dist.version,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "data_dir": str(self.data_dir),
        }

    async def stop(self, timeout_s: float = 30.0) -> None:
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self._process is not None:
            await terminate(self._process, timeout_s)
        self._healthy.clear()
        self.state = BrokerState.STOPPED


@contextlib.asynccontextmanager
async def kafka_or_existing(data_dir: Path, existing: KafkaAccess | None) -> AsyncIterator[EmbeddedKafka | None]:
    """The supervised embedded broker under data_dir/kafka, or None when an existing cluster is given."""
    if existing is not None:
        yield None
        return
    async with EmbeddedKafka(data_dir / "kafka") as kafka:
        yield kafka
