"""`kafka` sink: records to the customer's own Kafka cluster (TLS, SASL PLAIN or SCRAM), a topic per record type,
keyed by asset, acks=all; exactly once through transactions that carry the source offsets; JSON, or Avro in the
Confluent wire format."""

from __future__ import annotations

import contextlib
import functools
import json
import ssl
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError
from pydantic import Field, SecretStr, model_validator

from streamforge.engine.records import json_value, reason
from streamforge.engine.schema_registry import HttpSchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.sdk import Message, PeerUnavailable, PlainUrl, Port, PortType, Record, SinkConfig, SinkNode
from streamforge.engine.serde import Encoder, encoder_for
from streamforge.engine.topics import topic_spec
from streamforge.nodes.protocols.tls import client_context
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.clients import READ_TO_END_WAIT_MS, BatchProducer, read_to_end
from streamforge.runtime.kafka.topics import create_topics

DEFAULT_TOPICS = {"telemetry": "streamforge.telemetry", "aggregate": "streamforge.aggregates",
                  "alarm": "streamforge.alarms", "event": "streamforge.events",
                  "dead_letter": "streamforge.dead-letters"}  # fmt: skip


def record_key(field: str, record: Record) -> str:
    """The Kafka key: the asset (an alarm: its id), so one asset's records stay in order in one partition."""
    return str(record.get(field) or "")


class KafkaSinkConfig(SinkConfig):
    bootstrap: str = Field(pattern=r"^[^,\s]+:\d+(,[^,\s]+:\d+)*$", description="host:port[,host:port...]")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "SASL_SSL"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = Field(None, description="Stored as a secret")
    ca_file: str | None = Field(None, description="CA (PEM) the cluster's certificates chain to; default: the system's")
    cert_file: str | None = Field(None, description="Client certificate (PEM), if the cluster asks for one")
    key_file: str | None = Field(None, description="Its private key (PEM)")
    topics: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_TOPICS),
        description="Target topic per record type (telemetry, aggregate, alarm, ...)",
    )
    format: Literal["json", "avro"] = Field("json", description="avro: Confluent wire format, schemas registered")
    registry_url: PlainUrl | None = Field(None, description="The cluster's schema registry (format avro)")
    registry_token: SecretStr | None = Field(None, description="Bearer token for the registry; stored as a secret")
    exactly_once: bool = Field(True, description="Each batch commits in one transaction with the source offsets it "
                               "covers: readers with isolation.level=read_committed see every record once, a crash "
                               "included. Needs transactions on the cluster; off: at least once")  # fmt: skip
    offsets_topic: str = Field(
        "streamforge.sink-offsets",
        pattern=r"^[A-Za-z0-9._\-]{1,249}$",
        description="Compacted topic on the cluster holding those offsets (exactly_once)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSinkConfig:
        if self.security_protocol.startswith("SASL") and (self.username is None or self.password is None):
            raise ValueError(f"{self.security_protocol} needs username and password")
        if self.format == "avro" and self.registry_url is None:
            raise ValueError("format avro needs registry_url: the schemas are registered there")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self


class KafkaSink(SinkNode[KafkaSinkConfig]):
    """Lifecycle: start() loads the TLS files (a missing one refuses the deploy); connect() starts the producer
    (and, for Avro, registers each record type's schema with the cluster's registry). write() returns once the
    cluster acknowledged every record (acks=all): a failure raises and the batch is retried. A record of a type with
    no target topic is a dead letter.

    Exactly once (the default): the producer is transactional (its id names this gateway, flow and node, so a
    restarted worker fences its dead predecessor and aborts what it left open). Each batch's records and, in
    `offsets_topic`, the next source offset per partition commit in one transaction. connect() reads those offsets
    back, and write() skips what a committed transaction already holds: the replay after a crash, whose local
    commit never happened, sends nothing twice."""

    type = "kafka"
    category = "sinks"
    icon = "arrows-right"
    description = "The customer's Kafka: TLS + SASL (PLAIN/SCRAM), topic per record type, JSON or Avro"
    inputs = (Port("in", PortType.ANY, description="Records of any type, to the topic of their type"),)

    async def start(self) -> None:
        config = self.config
        self._ssl: ssl.SSLContext | None = None
        if config.security_protocol in ("SSL", "SASL_SSL"):
            self._ssl = client_context(config.ca_file, config.cert_file, config.key_file)
        self._producer: BatchProducer | None = None
        self._registry: HttpSchemaRegistry | None = None
        self._encoders: dict[str, Encoder] = {}
        context = self.context
        self._identity = f"streamforge.{context.gateway_id}.{context.flow_id}.{context.node_id}"
        # Offsets recorded by an earlier life of the local Kafka (a wiped gateway counts from 0 again) must not
        # hide new records: they are filed under an id that lives in this node's changelog, in that same Kafka.
        lives = self.context.state.table("incarnation", str)
        if ("id",) not in lives:
            lives[("id",)] = uuid.uuid4().hex
        self._offsets_key = f"{self._identity}.{lives[('id',)]}|"
        self._delivered: dict[tuple[str, int], int] = {}  # next source offset per partition a committed txn holds

    def _client_options(self) -> dict[str, Any]:
        config = self.config
        options: dict[str, Any] = {"security_protocol": config.security_protocol, "ssl_context": self._ssl}
        if config.security_protocol.startswith("SASL"):
            assert config.password is not None
            options |= {"sasl_mechanism": config.sasl_mechanism, "sasl_plain_username": config.username,
                        "sasl_plain_password": config.password.get_secret_value()}  # fmt: skip
        return options

    async def connect(self) -> None:
        config = self.config
        options = {**self._client_options(), "client_id": self._identity}
        if config.exactly_once:
            options["transactional_id"] = self._identity
        producer = BatchProducer(KafkaAccess(config.bootstrap), **options)  # the customer's login: in `options`
        self._producer = producer
        await producer.start()  # a transactional one fences a predecessor with the same id, aborting its transaction
        if config.exactly_once:
            replicas = min(3, len(producer.producer.client.cluster.brokers()))
            try:
                offsets = NewTopic(config.offsets_topic, 1, replicas, topic_configs={"cleanup.policy": "compact"})
                await create_topics(KafkaAccess(config.bootstrap), [offsets], **self._client_options())
            except KafkaError as exc:
                raise PeerUnavailable(f"cannot create {config.offsets_topic} on {config.bootstrap} ({exc!r}): create "
                                      "it (cleanup.policy=compact) or allow this user to") from exc  # fmt: skip
            self._delivered = await self._committed_offsets()
        if config.format == "avro":
            assert config.registry_url is not None
            token = config.registry_token.get_secret_value() if config.registry_token else None
            self._registry = HttpSchemaRegistry(config.registry_url, credentials=(lambda: token) if token else None)
            for record_type, topic in config.topics.items():
                self._encoders[record_type] = await encoder_for(self._registry, f"{topic}-value", SCHEMAS[record_type])

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._registry is not None:
            await self._registry.aclose()
        self._producer, self._registry = None, None

    async def _committed_offsets(self) -> dict[tuple[str, int], int]:
        """The source offsets this node's committed transactions recorded, read back from `offsets_topic`."""
        topic, prefix = self.config.offsets_topic, self._offsets_key
        consumer = AIOKafkaConsumer(bootstrap_servers=self.config.bootstrap, isolation_level="read_committed",
                                    enable_auto_commit=False, fetch_max_wait_ms=READ_TO_END_WAIT_MS,
                                    **self._client_options())  # fmt: skip
        await consumer.start()
        try:
            assert self._producer is not None
            partitions = [TopicPartition(topic, p) for p in sorted(await self._producer.producer.partitions_for(topic))]
            found: dict[tuple[str, int], int] = {}
            async for records in read_to_end(consumer, partitions):
                for record in records:
                    key = (record.key or b"").decode()
                    if key.startswith(prefix) and record.value is not None:
                        source, partition = key[len(prefix) :].rsplit("|", 1)
                        found[source, int(partition)] = int(record.value)
            return found
        finally:
            await consumer.stop()

    async def write(self, batch: Sequence[Message]) -> Sequence[Record] | None:
        assert self._producer is not None  # the runtime writes only while connected
        refused: list[Record] = []
        by_type: dict[str, list[Message]] = defaultdict(list)
        ahead: dict[tuple[str, int], int] = {}
        for message in batch:
            where = (message.topic, message.partition)
            record_type = topic_spec(message.topic).record_type
            if record_type not in self.config.topics:
                why = reason("no_target_topic", f"no topic is mapped for {record_type} records", "/topics")
                refused.append(message.dead_letter(self.context.node_id, why))
            elif message.offset >= self._delivered.get(where, 0):  # below: in a transaction committed before
                by_type[record_type].append(message)
            ahead[where] = max(ahead.get(where, self._delivered.get(where, 0)), message.offset + 1)
        if not self.config.exactly_once:
            refused += await self._send(by_type)
            return refused
        transactional = self._producer.producer
        await transactional.begin_transaction()
        try:
            refused += await self._send(by_type)
            offsets = [(i, f"{self._offsets_key}{topic}|{partition}".encode(), str(offset).encode())
                       for i, ((topic, partition), offset) in enumerate(ahead.items())]  # fmt: skip
            report = await self._producer.send_raw(self.config.offsets_topic, offsets)
            if report.failed:
                error = report.failed[0][1]
                raise PeerUnavailable(f"offsets to {self.config.offsets_topic} not acknowledged: {error!r}")
            await transactional.commit_transaction()
        except BaseException:
            with contextlib.suppress(KafkaError):
                await transactional.abort_transaction()
            raise
        self._delivered.update(ahead)
        return refused

    async def _send(self, by_type: dict[str, list[Message]]) -> list[Record]:
        """Send each type's records to its topic; raise unless all were acknowledged. Returns encoding refusals."""
        assert self._producer is not None
        refused: list[Record] = []
        for record_type, messages in by_type.items():
            topic = self.config.topics[record_type]
            records = [m.record for m in messages]
            key_of = functools.partial(record_key, "alarm_id" if record_type == "alarm" else "asset_id")
            encoder = self._encoders.get(record_type)
            if encoder is not None:
                report = await self._producer.send_records(topic, records, encoder, key_of=key_of)
                refused += [messages[e.index].dead_letter(self.context.node_id, reason("encode_error", str(e)))
                            for e in report.rejected]  # fmt: skip
            else:
                items = [(i, key_of(r).encode(), json.dumps(r, default=json_value).encode())
                         for i, r in enumerate(records)]  # fmt: skip
                report = await self._producer.send_raw(topic, items)
            if report.failed:
                error = report.failed[0][1]
                raise PeerUnavailable(f"{len(report.failed)} records to {topic} not acknowledged: {error!r}")
        return refused


NODE = KafkaSink
