"""A running node's status: the states it can be in and the one object that owns which it is in now."""

from __future__ import annotations

import logging
from enum import StrEnum

from streamforge.runtime.gateway.metrics import NodeMetrics

log = logging.getLogger("streamforge.runtime")


class NodeStatus(StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"  # running, but its device, destination or Kafka is away or misbehaving
    FAILED = "FAILED"  # restart limit reached: needs a person
    STOPPED = "STOPPED"


class StatusCell:
    """The one owner of a running node's status. DEGRADED while any cause (the device, the connection, Kafka, a
    write) has a problem, with the latest problem as `last_error`; RUNNING once every cause has recovered."""

    def __init__(self, metrics: NodeMetrics, labels: dict[str, str]) -> None:
        self._metrics, self._labels = metrics, labels
        self.status = NodeStatus.STARTING
        self.last_error: str | None = None
        self._problems: dict[str, str] = {}

    def running(self) -> None:
        self._set(NodeStatus.DEGRADED if self._problems else NodeStatus.RUNNING)

    def degrade(self, cause: str, problem: str) -> None:
        self._metrics.errors.labels(**self._labels, kind=cause).inc()
        self._problems[cause] = problem
        self.last_error = problem
        if self.status is not NodeStatus.STARTING:
            self._set(NodeStatus.DEGRADED)

    def restate(self, cause: str, problem: str) -> None:
        """A problem that goes on, in new words (e.g. how far behind): not counted again; shown if it was the latest."""
        previous = self._problems.get(cause)
        if previous is None:
            self.degrade(cause, problem)
            return
        self._problems[cause] = problem
        if self.last_error == previous:
            self.last_error = problem

    def recover(self, cause: str) -> None:
        if self._problems.pop(cause, None) is not None and not self._problems and self.status is NodeStatus.DEGRADED:
            self._set(NodeStatus.RUNNING)

    def report(self, cause: str, problem: str | None) -> None:
        """`problem` for `cause`, or None: that cause has recovered."""
        if problem is None:
            self.recover(cause)
        else:
            self.degrade(cause, problem)

    def _set(self, status: NodeStatus) -> None:
        if status is not self.status:
            error = self.last_error if status is NodeStatus.DEGRADED else None
            # A node that degrades is an operator's news (the Logs page filters on WARNING); recovering is not.
            log.log(logging.WARNING if error else logging.INFO, "node status",
                    extra={**self._labels, "status": status.value, "error": error})  # fmt: skip
        self.status = status
        for value in NodeStatus:
            self._metrics.status.labels(**self._labels, status=value.value).set(1 if value is status else 0)
