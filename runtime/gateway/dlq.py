"""The DLQ workflow on the gateway: browse dead letters with their decoded readings, and reprocess them (approved
ones, or all that pass the current validator rules) into the validator's clean topic exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from streamforge.engine.plan import NodePlan
from streamforge.engine.records import epoch_ms, json_safe
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import Decoder, Encoder, encoder_for
from streamforge.nodes.validator import JUDGED_ALONE, ValidatorConfig, judge_alone
from streamforge.runtime.errors import ApiError
from streamforge.runtime.kafka.clients import (
    READ_TO_END_WAIT_MS,
    BatchProducer,
    assigned_partitions,
    node_headers,
    read_range,
)
from streamforge.runtime.kafka.topics import create_topics

if TYPE_CHECKING:
    from streamforge.runtime.gateway.gateway import Gateway

log = logging.getLogger("streamforge.dlq")

MARKERS_TOPIC = "_streamforge.dlq.reprocessed"  # compacted: dead-letter id -> the job that reprocessed it
SCAN_PER_PARTITION = 20_000  # a listing looks at the newest dead letters of each partition, at most this many
CHUNK = 500  # dead letters per transaction
KEPT_JOBS = 50


def letter_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


@dataclass(frozen=True)
class DlqFilter:
    """What /api/v1/dlq narrows to; every field optional."""

    reason: str | None = None
    flow: str | None = None
    node: str | None = None
    asset: str | None = None
    since: str | None = None  # ISO 8601, by failed_at
    until: str | None = None
    ids: frozenset[str] | None = None
    include_reprocessed: bool = True

    @classmethod
    def parse(cls, args: dict[str, Any]) -> DlqFilter:
        text = {k: str(args[k]) if args.get(k) else None for k in ("reason", "flow", "node", "asset", "since", "until")}
        for bound in ("since", "until"):
            if text[bound] is not None:
                try:
                    datetime.fromisoformat(str(text[bound]))
                except ValueError:
                    raise ApiError(422, "invalid", f"`{bound}` {text[bound]!r} is not an ISO 8601 time, "
                                   "e.g. 2026-12-01T10:00:00+00:00") from None  # fmt: skip
        ids = args.get("ids")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise ApiError(422, "invalid", '`ids` is a list of dead-letter ids such as "dlq.telemetry/3/120"')
        return cls(text["reason"], text["flow"], text["node"], text["asset"], text["since"], text["until"],
                   frozenset(ids) if ids is not None else None,
                   args.get("include_reprocessed", True) is not False)  # fmt: skip

    def matches(self, letter: Letter) -> bool:
        failed_ms = letter.failed_ms
        return (
            (self.reason is None or self.reason in letter.codes)
            and (self.flow is None or letter.flow == self.flow)
            and (self.node is None or letter.node == self.node)
            and (self.asset is None or letter.asset_id == self.asset)
            and (self.since is None or failed_ms >= epoch_ms(datetime.fromisoformat(self.since)))
            and (self.until is None or failed_ms <= epoch_ms(datetime.fromisoformat(self.until)))
            and (self.ids is None or letter.id in self.ids)
            and (self.include_reprocessed or letter.reprocessed is None)
        )


@dataclass
class Letter:
    """One dead letter as read back: where it is, who refused it and why, and the reading it holds."""

    id: str
    flow: str
    node: str
    dead: dict[str, Any]  # the DeadLetter record
    reading: dict[str, Any] | None  # its payload decoded (None: it does not decode, e.g. a decode_error)
    payload_error: str | None = None
    reprocessed: dict[str, Any] | None = None  # the marker, once a job reprocessed it

    @property
    def codes(self) -> list[str]:
        return [r["code"] for r in self.dead["reasons"]]

    @property
    def asset_id(self) -> str | None:
        asset = self.dead.get("asset_id") or (self.reading or {}).get("asset_id")
        return str(asset) if asset else None

    @property
    def failed_ms(self) -> int:
        return epoch_ms(self.dead["failed_at"])

    def to_dict(self) -> dict[str, Any]:
        dead = {k: v for k, v in self.dead.items() if k != "payload"}
        return json_safe({"id": self.id, "flow": self.flow, "node": self.node, **dead, "reading": self.reading,
                          "payload_error": self.payload_error, "reprocessed": self.reprocessed})  # fmt: skip


@dataclass
class Job:
    """One reprocessing run: approved letters, or every letter of a validator re-judged by its current rules."""

    id: str
    kind: Literal["approve", "revalidate"]
    user: str
    flow: str | None
    node: str | None
    state: str = "RUNNING"  # RUNNING, DONE, FAILED
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    total: int = 0
    done: int = 0  # letters looked at so far
    reprocessed: int = 0  # sent to clean by this job
    already: int = 0  # reprocessed by an earlier job: skipped, never sent twice
    still_failing: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # why letters stayed, by reason
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DeadLetters:
    """Reads the gateway's `dlq.*` topics and runs reprocessing jobs, one at a time.

    Guarantee: reprocessing is exactly once. Each chunk of readings goes to the clean topic in one Kafka transaction
    together with a marker per dead letter (topic `_streamforge.dlq.reprocessed`, compacted); a job first reads the
    markers back and skips what any earlier job sent, so a letter approved twice, or a job repeated after a crash,
    lands once. Readers of the clean topic use read_committed (every StreamForge consumer does)."""

    def __init__(self, gateway: Gateway, gateway_id: Callable[[], str]) -> None:
        self.gateway, self.gateway_id = gateway, gateway_id
        self.jobs: dict[str, Job] = {}
        self._running: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._encoders: dict[str, Encoder] = {}

    def _consumer(self) -> AIOKafkaConsumer:
        return self.gateway.env.kafka.consumer(group_id=None, enable_auto_commit=False,
                                               isolation_level="read_committed",
                                               fetch_max_wait_ms=READ_TO_END_WAIT_MS)  # fmt: skip

    async def _ensure_markers_topic(self) -> None:
        await create_topics(self.gateway.env.kafka, [NewTopic(MARKERS_TOPIC, 1, 1, topic_configs={
            "cleanup.policy": "compact"})])  # fmt: skip

    async def read(self, wanted: DlqFilter, scan: int | None = SCAN_PER_PARTITION) -> tuple[list[Letter], int]:
        """The dead letters matching `wanted` (newest `scan` per partition, None: all), oldest first; and how many
        were looked at."""
        await self._ensure_markers_topic()
        consumer = self._consumer()
        await consumer.start()
        try:
            # Subscribed without a group, the consumer is given every partition of these topics.
            consumer.subscribe([MARKERS_TOPIC, *(t for t in await consumer.topics() if t.startswith("dlq."))])
            partitions = await assigned_partitions(consumer, 10.0)
            starts, ends = await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)
            whole = scan is None
            ranges = {tp: (starts[tp] if whole or tp.topic == MARKERS_TOPIC else max(starts[tp], ends[tp] - scan),
                           ends[tp]) for tp in partitions}  # fmt: skip
            raw = [record async for records in read_range(consumer, ranges) for record in records]
        finally:
            await consumer.stop()
        markers = {r.key.decode(): json.loads(r.value) for r in raw
                   if r.topic == MARKERS_TOPIC and r.key is not None and r.value is not None}  # fmt: skip
        raw = [r for r in raw if r.topic != MARKERS_TOPIC]
        decoder = Decoder(self.gateway.env.registry)
        decoded = await decoder.decode_batch([r.value or b"" for r in raw])
        dead = [(raw[i], record) for i, record in decoded.ok]
        readings = await decoder.decode_batch([record["payload"] for _, record in dead])
        read_ok = dict(readings.ok)
        errors = {error.index: error.message for error in readings.errors}
        letters = []
        for index, (message, record) in enumerate(dead):
            headers = dict(message.headers)
            key = letter_id(message.topic, message.partition, message.offset)
            flow, node = headers.get("sf-flow", b"").decode(), headers.get("sf-node", b"").decode() or record["node_id"]
            letter = Letter(key, flow, node, record, read_ok.get(index), errors.get(index), markers.get(key))
            if wanted.matches(letter):
                letters.append(letter)
        letters.sort(key=lambda letter: (letter.failed_ms, letter.id))
        return letters, len(raw)

    async def listing(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            limit = max(1, min(int(args.get("limit") or 200), 2000))
        except (TypeError, ValueError):
            raise ApiError(400, "bad_request", f"`limit` is a whole number from 1 to 2000, e.g. ?limit=200; got "
                           f"{str(args.get('limit'))[:40]!r}") from None  # fmt: skip
        letters, scanned = await self.read(DlqFilter.parse(args))
        waiting = [letter for letter in letters if letter.reprocessed is None]
        counts = Counter(code for letter in waiting for code in set(letter.codes))
        return {"records": [letter.to_dict() for letter in reversed(letters[-limit:])],
                "total": len(letters), "waiting": len(waiting), "scanned": scanned,
                "counts_by_reason": dict(counts.most_common())}  # fmt: skip

    # -- reprocessing -------------------------------------------------------------------------------

    def _validator(self, flow: str, node: str) -> NodePlan:
        plan = self.gateway.plans.get(flow)
        found = next((n for n in plan.nodes if n.node_id == node), None) if plan else None
        if found is None:
            raise ApiError(409, "not_running", f"node {node!r} of flow {flow!r} is not running here: reprocessing "
                           "sends readings through the validator that refused them; deploy it first")  # fmt: skip
        if found.type != "validator":
            raise ApiError(409, "not_reprocessable", f"node {node!r} is a {found.type}, not a validator: only "
                           "readings a validator refused can be reprocessed; fix the cause downstream")  # fmt: skip
        return found

    def start(self, kind: Literal["approve", "revalidate"], args: dict[str, Any], user: str) -> dict[str, Any]:
        """Start a job (one runs at a time); its id and first progress, at once."""
        if self._running is not None and not self._running.done():
            raise ApiError(409, "busy", "another reprocessing job is running: wait for it, then try again")
        if kind == "approve":
            ids = args.get("ids")
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise ApiError(422, "invalid", '`ids`: the dead letters to approve, e.g. ["dlq.telemetry/3/120"]')
            wanted, flow, node = DlqFilter(ids=frozenset(ids)), None, None
        else:
            flow, node = args.get("flow"), args.get("node")
            if not isinstance(flow, str) or not isinstance(node, str):
                raise ApiError(422, "invalid", "`flow` and `node`: the validator whose current rules re-judge them")
            self._validator(flow, node)
            wanted = DlqFilter(flow=flow, node=node, include_reprocessed=False)
        job = Job(uuid.uuid4().hex[:12], kind, user, flow, node)
        self.jobs[job.id] = job
        for old in list(self.jobs)[:-KEPT_JOBS]:
            del self.jobs[old]
        self._running = asyncio.create_task(self._run(job, wanted), name=f"dlq-job-{job.id}")
        log.info("reprocessing job started", extra={"job": job.id, "kind": kind, "user": user, "flow": flow,
                                                     "node": node})  # fmt: skip
        return job.to_dict()

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no reprocessing job {job_id!r} on this gateway (it keeps the last "
                           f"{KEPT_JOBS}, and none across its restarts)")  # fmt: skip
        return job.to_dict()

    async def _run(self, job: Job, wanted: DlqFilter) -> None:
        try:
            async with self._lock:
                await self._reprocess(job, wanted)
            job.state = "DONE"
        except Exception as exc:  # the job's outcome is its record: what failed, and how far it got
            job.state, job.error = "FAILED", f"{type(exc).__name__}: {exc}"
            log.error("reprocessing job failed", extra={"job": job.id, "error": job.error})
        finally:
            job.finished_at = time.time()
            log.info("reprocessing job ended", extra={k: v for k, v in job.to_dict().items() if k != "id"} | {
                "job": job.id})  # fmt: skip

    def _verdict(self, job: Job, letter: Letter) -> dict[str, Any] | None:
        """The reading to send to clean, or None (and why it stays counted)."""
        if letter.reprocessed is not None:
            job.already += 1
            return None
        reading = letter.reading
        if reading is None:
            job.refused["payload_error"] = job.refused.get("payload_error", 0) + 1
            return None
        try:
            plan = self._validator(letter.flow, letter.node)
        except ApiError as refused:
            job.refused[refused.code] = job.refused.get(refused.code, 0) + 1
            return None
        metadata = {**reading.get("metadata", {}), "sf-reprocessed": job.id, "sf-dlq": letter.id}
        if job.kind == "approve":
            # An operator vouched for it: forwarded, and flagged as not passed by the rules.
            return {**reading, "quality": "UNCERTAIN", "metadata": {**metadata, "sf-approved-by": job.user,
                                                                     "sf-reasons": ",".join(letter.codes)}}  # fmt: skip
        stays = [code for code in letter.codes if code not in JUDGED_ALONE]
        if not stays:
            config = ValidatorConfig.model_validate(plan.config)
            rule = config.rule_for(reading["asset_id"], reading["parameter"])
            stays = [found["code"] for found in judge_alone(rule, reading)]
        if stays:
            job.still_failing += 1
            for code in set(stays):
                job.refused[code] = job.refused.get(code, 0) + 1
            return None
        return {
            **reading,
            "quality": "GOOD" if reading["quality"] == "BAD" else reading["quality"],
            "metadata": metadata,
        }

    async def _encoder(self, topic: str) -> Encoder:
        if topic not in self._encoders:
            self._encoders[topic] = await encoder_for(self.gateway.env.registry, f"{topic}-value",
                                                      SCHEMAS["telemetry"])  # fmt: skip
        return self._encoders[topic]

    async def _reprocess(self, job: Job, wanted: DlqFilter) -> None:
        letters, _ = await self.read(wanted, scan=None)
        if wanted.ids is not None:
            missing = wanted.ids - {letter.id for letter in letters}
            if missing:
                raise ApiError(404, "not_found", f"no dead letter {sorted(missing)[0]} ({len(missing)} not found)")
        job.total = len(letters)
        producer = BatchProducer(self.gateway.env.kafka,
                                 transactional_id=f"streamforge.{self.gateway_id()}.dlq-reprocess")  # fmt: skip
        await producer.start()  # fences a predecessor that died mid-transaction, aborting it
        try:
            for first in range(0, len(letters), CHUNK):
                await self._chunk(job, producer, letters[first : first + CHUNK])
        finally:
            await producer.stop()

    async def _chunk(self, job: Job, producer: BatchProducer, letters: Sequence[Letter]) -> None:
        sending = [(letter, reading) for letter in letters if (reading := self._verdict(job, letter)) is not None]
        if sending:
            transactional = producer.producer
            await transactional.begin_transaction()
            try:
                by_origin: dict[tuple[str, str], list[tuple[Letter, dict[str, Any]]]] = {}
                for letter, reading in sending:
                    by_origin.setdefault((letter.flow, letter.node), []).append((letter, reading))
                for (flow, node), items in by_origin.items():
                    topic = next(o.topic for o in self._validator(flow, node).outputs if o.port == "clean")
                    report = await producer.send_records(topic, [r for _, r in items], await self._encoder(topic),
                                                         node_headers(flow, node))  # fmt: skip
                    if report.failed or report.rejected:
                        raise RuntimeError(f"{len(report.failed) + len(report.rejected)} readings to {topic} were not "
                                           f"accepted: {(report.failed or report.rejected)[0]}")  # fmt: skip
                marker = json.dumps({"job": job.id, "kind": job.kind, "user": job.user, "at": time.time()}).encode()
                report = await producer.send_raw(MARKERS_TOPIC, [(i, letter.id.encode(), marker)
                                                                 for i, (letter, _) in enumerate(sending)])  # fmt: skip
                if report.failed:
                    raise RuntimeError(f"reprocessing markers not acknowledged: {report.failed[0][1]!r}")
                await transactional.commit_transaction()
            except BaseException:
                with contextlib.suppress(KafkaError):
                    await transactional.abort_transaction()
                raise
            job.reprocessed += len(sending)
        job.done += len(letters)
