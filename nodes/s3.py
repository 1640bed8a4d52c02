"""`s3` sink: records as Parquet files in S3 (or an S3-compatible store), partitioned Hive-style by record type, date
and hour, rolled by size or age, named by source partition and first offset so a replay rewrites the same objects."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import Field, SecretStr

from streamforge.engine.records import event_time
from streamforge.engine.retry import ConnectionSettings
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.sdk import (
    Message,
    PeerUnavailable,
    PlainUrl,
    Port,
    PortType,
    Record,
    SinkConfig,
    SinkNode,
    earliest_offsets,
)
from streamforge.engine.topics import topic_spec

MIB = 1024 * 1024
PRIMITIVES: dict[str, pa.DataType] = {"string": pa.string(), "double": pa.float64(), "float": pa.float32(),
                                      "long": pa.int64(), "int": pa.int32(), "boolean": pa.bool_(),
                                      "bytes": pa.binary()}  # fmt: skip


def arrow_type(avro: Any, named: dict[str, pa.DataType]) -> pa.DataType:
    """The Arrow type of an Avro type: records as structs, maps as maps, timestamp-millis as UTC timestamps."""
    if isinstance(avro, str):
        return PRIMITIVES.get(avro) or named[avro.rsplit(".", 1)[-1]]
    if isinstance(avro, list):  # a union: ["null", X] is a nullable X
        return arrow_type(next(t for t in avro if t != "null"), named)
    kind = avro["type"]
    if avro.get("logicalType") == "timestamp-millis":
        return pa.timestamp("ms", tz="UTC")
    if kind == "record":
        result = pa.struct([pa.field(f["name"], arrow_type(f["type"], named)) for f in avro["fields"]])
    elif kind == "enum":
        result = pa.string()
    elif kind == "map":
        return pa.map_(pa.string(), arrow_type(avro["values"], named))
    elif kind == "array":
        return pa.list_(arrow_type(avro["items"], named))
    else:
        return arrow_type(kind, named)
    named[avro["name"]] = result
    return result


def arrow_schema(record_type: str) -> pa.Schema:
    """A record type's Parquet columns, from the same Avro schema Kafka holds it in."""
    struct = arrow_type(SCHEMAS[record_type], {})
    return pa.schema([struct.field(i) for i in range(struct.num_fields)])


def moment(record: Record) -> datetime:
    """Which date/hour partition a record belongs to: its event time (a window's start, a letter's failure)."""
    if "timestamps" in record:
        return event_time(record)
    found = record.get("window_start") or record.get("failed_at")
    return found if isinstance(found, datetime) else datetime.now(UTC)


class S3Config(SinkConfig):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$", description="The bucket (it must exist)")
    prefix: str = Field("streamforge", pattern=r"^[A-Za-z0-9_\-./]{0,200}$", description="Key prefix in the bucket")
    endpoint_url: PlainUrl | None = Field(None, description="For S3-compatible stores, e.g. http://minio:9000")
    region: str = Field("us-east-1", min_length=1)
    access_key_id: str | None = Field(None, description="Default: the environment's AWS credentials")
    secret_access_key: SecretStr | None = Field(None, description="Stored as a secret")
    path_style: bool = Field(False, description="Bucket in the path, not the host name (most S3-compatible stores)")
    roll_records: int = Field(10_000, ge=1, le=5_000_000, description="A file holds at most this many records")
    roll_bytes: int = Field(64 * MIB, ge=MIB, description="…or about this many bytes of records")
    roll_age_s: float = Field(300.0, gt=0, description="…or records for this long (by the node's clock)")
    part_bytes: int = Field(8 * MIB, ge=5 * MIB, description="Files larger than this upload in parts of this size")
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    connection: ConnectionSettings = Field(default_factory=lambda: ConnectionSettings(timeout_s=30.0))


@dataclass
class OpenFile:
    """Records of one partition of the bucket (type, date, hour) from one Kafka partition, not yet uploaded."""

    record_type: str
    hour: datetime
    topic: str
    partition: int
    first_offset: int
    opened_at: float
    rows: list[Record] = field(default_factory=list)
    size: int = 0
    last_offset: int = -1

    def key(self, prefix: str) -> str:
        """Hive-style partitions; named by where its records start, so a replay overwrites, never adds."""
        where = f"type={self.record_type}/date={self.hour:%Y-%m-%d}/hour={self.hour:%H}"
        name = f"{self.topic}+{self.partition}+{self.first_offset:020d}.parquet"
        return "/".join(part for part in (prefix.strip("/"), where, name) if part)


class S3Sink(SinkNode[S3Config]):
    """Records wait in memory per (type, date, hour, Kafka partition) until their file rolls (records, bytes or
    age); its offsets are held back until then (retained), so a crash replays them into the same object key, cut at
    the same record: counts are counted again, and where a file was rolled by age is kept in the table `rolled`.
    Upload failures raise: the runtime retries (backoff, circuit breaker, DEGRADED); what is already in a file is
    never added twice."""

    type = "s3"
    category = "sinks"
    icon = "bucket"
    description = "S3 / S3-compatible: Parquet files by type/date/hour, rolled by size or age, replay-safe names"
    inputs = (Port("in", PortType.ANY, description="Records of any type, one Parquet schema per type"),)

    async def start(self) -> None:
        self._schemas: dict[str, pa.Schema] = {}
        self._open: dict[tuple[str, datetime, str, int], OpenFile] = {}
        self._next: dict[tuple[str, int], int] = {}  # next offset to take per Kafka partition: a retry adds nothing
        self._rolled = self.context.state.table("rolled", int)  # (topic, partition, first offset) -> last, by age
        self._client: Any = None
        self._context: Any = None

    async def connect(self) -> None:
        config = self.config
        timeout = config.connection.timeout_s
        settings = AioConfig(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1},
                             s3={"addressing_style": "path" if config.path_style else "auto"})  # fmt: skip
        secret = config.secret_access_key.get_secret_value() if config.secret_access_key else None
        self._context = get_session().create_client(
            "s3", region_name=config.region, endpoint_url=config.endpoint_url, aws_access_key_id=config.access_key_id,
            aws_secret_access_key=secret, config=settings,
        )  # fmt: skip
        self._client = await self._context.__aenter__()
        try:
            await self._client.head_bucket(Bucket=config.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise PeerUnavailable(f"bucket {config.bucket} at {config.endpoint_url or 'AWS'}: {exc}") from exc

    async def close(self) -> None:
        if self._context is not None:
            await self._context.__aexit__(None, None, None)
        self._client = self._context = None

    def retained(self) -> dict[tuple[str, int], int]:
        return earliest_offsets(((f.topic, f.partition), f.first_offset) for f in self._open.values())

    async def write(self, batch: Sequence[Message]) -> None:
        now = self.clock.monotonic()
        self._forget_rolls()
        for message in batch:
            where = (message.topic, message.partition)
            if message.offset < self._next.get(where, -1):
                continue  # already in an open or uploaded file: this is a retry of the same batch
            self._next[where] = message.offset + 1
            record_type = topic_spec(message.topic).record_type
            hour = moment(message.record).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
            slot = (record_type, hour, message.topic, message.partition)
            file = self._open.get(slot)
            if file is None:
                file = self._open[slot] = OpenFile(record_type, hour, message.topic, message.partition,
                                                   message.offset, now)  # fmt: skip
            file.rows.append(message.record)
            file.size += len(message.raw) or 256
            file.last_offset = message.offset
            if self._full(file):  # rolled at the same record on a replay: the same objects again
                await self._upload(file)
                del self._open[slot]
        await self._flush(self._full)  # one whose upload failed before: this retry uploads it

    def _full(self, file: OpenFile) -> bool:
        rolled_at = self._rolled.get((file.topic, file.partition, file.first_offset))
        return (len(file.rows) >= self.config.roll_records or file.size >= self.config.roll_bytes
                or (rolled_at is not None and file.last_offset >= rolled_at))  # fmt: skip

    async def tick(self, now: datetime) -> None:
        oldest = self.clock.monotonic() - self.config.roll_age_s
        for file in self._open.values():
            if file.opened_at <= oldest:  # recorded first: a replay cuts this file here too, not by the clock
                self._rolled[(file.topic, file.partition, file.first_offset)] = file.last_offset
        await self._flush(self._full)

    def _forget_rolls(self) -> None:
        """Rolls at offsets that are committed now: never replayed again."""
        held = self.retained()
        for key in list(self._rolled):
            topic, partition, first = key
            committed = held.get((str(topic), int(partition)), self._next.get((str(topic), int(partition)), 0))
            if int(first) < committed and self._rolled[key] < committed:
                del self._rolled[key]

    async def _flush(self, due: Any) -> None:
        for slot, file in sorted(self._open.items(), key=lambda item: item[1].first_offset):
            if due(file):
                await self._upload(file)
                del self._open[slot]

    def parquet(self, file: OpenFile) -> bytes:
        schema = self._schemas.get(file.record_type)
        if schema is None:
            schema = self._schemas[file.record_type] = arrow_schema(file.record_type)
        table = pa.Table.from_pylist(file.rows, schema=schema)
        out = io.BytesIO()
        pq.write_table(table, out, compression=self.config.compression)
        return out.getvalue()

    async def _upload(self, file: OpenFile) -> None:
        data, key, bucket = self.parquet(file), file.key(self.config.prefix), self.config.bucket
        try:
            if len(data) <= self.config.part_bytes:
                await self._client.put_object(Bucket=bucket, Key=key, Body=data)
                return
            upload = await self._client.create_multipart_upload(Bucket=bucket, Key=key)
            parts = []
            try:
                size = self.config.part_bytes
                for number, start in enumerate(range(0, len(data), size), start=1):
                    body = data[start : start + size]
                    part = await self._client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                                          PartNumber=number, Body=body)  # fmt: skip
                    parts.append({"PartNumber": number, "ETag": part["ETag"]})
                await self._client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                                             MultipartUpload={"Parts": parts})  # fmt: skip
            except BaseException:
                await self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                raise
        except (ClientError, BotoCoreError) as exc:
            raise PeerUnavailable(f"upload of s3://{bucket}/{key} failed: {exc}") from exc


NODE = S3Sink
