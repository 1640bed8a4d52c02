"""`kafka` sink: records to the customer's own Kafka cluster (TLS, SASL PLAIN or SCRAM), a topic per record type,
keyed by asset, through an idempotent producer with acks=all; JSON, or Avro in the Confluent wire format."""

from __future__ import annotations

import functools
import json
import ssl
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from streamforge.engine.records import json_value, reason
from streamforge.engine.schema_registry import HttpSchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.sdk import Message, PeerUnavailable, Port, PortType, Record, SinkConfig, SinkNode
from streamforge.engine.serde import Encoder, encoder_for
from streamforge.engine.topics import topic_spec
from streamforge.nodes.protocols.tls import client_context
from streamforge.runtime.kafka.clients import BatchProducer

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
    registry_url: str | None = Field(None, description="The cluster's schema registry (format avro)")
    registry_token: SecretStr | None = Field(None, description="Bearer token for the registry; stored as a secret")

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
    cluster acknowledged every record (acks=all): a failure raises and the batch is retried, the idempotent
    producer keeping retries free of duplicates. A record of a type with no target topic is a dead letter."""

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

    async def connect(self) -> None:
        config = self.config
        client_id = f"streamforge-{self.context.flow_id}-{self.context.node_id}"
        options: dict[str, Any] = {"security_protocol": config.security_protocol, "ssl_context": self._ssl,
                                   "client_id": client_id}  # fmt: skip
        if config.security_protocol.startswith("SASL"):
            assert config.password is not None
            options |= {"sasl_mechanism": config.sasl_mechanism, "sasl_plain_username": config.username,
                        "sasl_plain_password": config.password.get_secret_value()}  # fmt: skip
        producer = BatchProducer(config.bootstrap, **options)
        self._producer = producer
        await producer.start()
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

    async def write(self, batch: Sequence[Message]) -> Sequence[Record] | None:
        assert self._producer is not None  # the runtime writes only while connected
        refused: list[Record] = []
        by_type: dict[str, list[Message]] = defaultdict(list)
        for message in batch:
            record_type = topic_spec(message.topic).record_type
            if record_type in self.config.topics:
                by_type[record_type].append(message)
            else:
                why = reason("no_target_topic", f"no topic is mapped for {record_type} records", "/topics")
                refused.append(message.dead_letter(self.context.node_id, why))
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
