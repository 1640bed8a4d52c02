"""What the SQL sinks (`postgres`, `timescaledb`) share: the tables records become, their natural keys, and one
transaction per batch of COPY into a staging table then INSERT ... ON CONFLICT, so a replay updates, never adds;
rows the database refuses (a constraint, a value it cannot store) are found by halving and become dead letters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from pydantic import Field, SecretStr

from streamforge.engine.records import event_time, reason
from streamforge.engine.retry import ConnectionSettings
from streamforge.engine.sdk import Message, Port, PortType, Record, SinkConfig, SinkNode

IDENTIFIER = r"^[a-z_][a-z0-9_]{0,40}$"
REFUSED_CLASSES = ("22", "23")  # SQLSTATE data exception, integrity constraint violation: the rows, not the database


@dataclass(frozen=True)
class Table:
    """One destination table: its columns, natural key, and how a record becomes a row."""

    suffix: str
    columns: tuple[tuple[str, str], ...]  # (name, SQL type)
    key: tuple[str, ...]
    time_column: str
    row: Callable[[Record], tuple[Any, ...]]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def key_of(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        names = self.names
        return tuple(row[names.index(k)] for k in self.key)


def _telemetry_row(r: Record) -> tuple[Any, ...]:
    ts = r["timestamps"]
    return (event_time(r), r["asset_id"], r["parameter"], r["value"], r["unit"],
            r["quality"], ts["device_time"], ts["gateway_time"], r["clock_skew_ms"])  # fmt: skip


def _aggregate_row(r: Record) -> tuple[Any, ...]:
    a = r["aggregates"]
    return (r["window_start"], r["window_end"], r["asset_id"], r["parameter"], r["resolution"], a["avg"], a["min"],
            a["max"], a["first"], a["last"], a["count"], r["unit"])  # fmt: skip


def _alarm_row(r: Record) -> tuple[Any, ...]:
    return (event_time(r), r["alarm_id"], r["state"], r["asset_id"], r["parameter"],
            r["rule_id"], r["severity"], r["value"], r["threshold"], r["message"], r["changed_by"])  # fmt: skip


TABLES = {
    "telemetry": Table("telemetry", (
        ("time", "timestamptz"), ("asset_id", "text"), ("parameter", "text"), ("value", "double precision"),
        ("unit", "text"), ("quality", "text"), ("device_time", "timestamptz"), ("gateway_time", "timestamptz"),
        ("clock_skew_ms", "bigint"),
    ), ("asset_id", "parameter", "time"), "time", _telemetry_row),
    "aggregates": Table("aggregates", (
        ("window_start", "timestamptz"), ("window_end", "timestamptz"), ("asset_id", "text"), ("parameter", "text"),
        ("resolution", "text"), ("avg", "double precision"), ("min", "double precision"), ("max", "double precision"),
        ("first", "double precision"), ("last", "double precision"), ("count", "bigint"), ("unit", "text"),
    ), ("asset_id", "parameter", "resolution", "window_start"), "window_start", _aggregate_row),
    "alarms": Table("alarms", (
        ("time", "timestamptz"), ("alarm_id", "text"), ("state", "text"), ("asset_id", "text"), ("parameter", "text"),
        ("rule_id", "text"), ("severity", "text"), ("value", "double precision"), ("threshold", "double precision"),
        ("message", "text"), ("changed_by", "text"),
    ), ("alarm_id", "state", "time"), "time", _alarm_row),
}  # fmt: skip

PORT_TABLE = {"telemetry": "telemetry", "aggregates": "aggregates", "alarms": "alarms"}


class SqlSinkConfig(SinkConfig):
    dsn: SecretStr = Field(description="postgresql://user:password@host:port/db; stored as a secret")
    table_prefix: str = Field("sf_", pattern=r"^[a-z_][a-z0-9_]{0,20}$", description="Tables: <prefix>telemetry, ...")
    schema_name: str = Field("public", pattern=IDENTIFIER)
    connection: ConnectionSettings = Field(default_factory=lambda: ConnectionSettings(timeout_s=10.0))


SqlConfigT = TypeVar("SqlConfigT", bound=SqlSinkConfig)


class SqlSink(SinkNode[SqlConfigT]):
    """connect() opens the connection and creates the tables (`prepare` adds what a database flavour needs); each
    batch is one transaction. A database that is down is the runtime's to retry (DEGRADED), never a failed deploy,
    and Kafka keeps the backlog meanwhile. A row the database refuses (SQLSTATE class 22 or 23: a CHECK or NOT NULL
    constraint of the customer's, a NUL in a text) goes to the DLQ with the database's words; the rest of its batch
    is written."""

    category = "sinks"
    icon = "database"
    inputs = (
        Port("telemetry", PortType.TELEMETRY, required=False, description="Readings -> <prefix>telemetry"),
        Port("aggregates", PortType.AGGREGATE, required=False, description="Windows -> <prefix>aggregates"),
        Port("alarms", PortType.ALARM, required=False, description="Alarm transitions -> <prefix>alarms"),
    )

    async def start(self) -> None:
        self._connection: asyncpg.Connection | None = None

    async def connect(self) -> None:
        connection = await asyncpg.connect(self.config.dsn.get_secret_value(), timeout=self.config.connection.timeout_s)
        self._connection = connection
        await self.prepare(connection)
        for table in TABLES.values():
            await self.create(connection, table)

    async def prepare(self, connection: asyncpg.Connection) -> None:
        """Before the tables are created (e.g. check an extension)."""

    async def create(self, connection: asyncpg.Connection, table: Table) -> None:
        columns = ", ".join(f'"{name}" {sql}' for name, sql in table.columns)
        key = ", ".join(f'"{name}"' for name in table.key)
        await connection.execute(f"CREATE TABLE IF NOT EXISTS {self.table_name(table.suffix)} "
                                 f"({columns}, PRIMARY KEY ({key}))")  # fmt: skip

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.terminate()  # a write may have failed halfway: nothing of it is worth a clean goodbye
        self._connection = None

    def table_name(self, suffix: str) -> str:
        return f'"{self.config.schema_name}"."{self.config.table_prefix}{suffix}"'

    async def write(self, batch: Sequence[Message]) -> Sequence[Record] | None:
        rows: dict[str, dict[tuple[Any, ...], tuple[tuple[Any, ...], Message]]] = {}
        for message in batch:
            table = TABLES[PORT_TABLE[message.port]]
            row = table.row(message.record)
            rows.setdefault(table.suffix, {})[table.key_of(row)] = (row, message)  # last one wins, as on replay
        connection = self._connection
        assert connection is not None  # the runtime writes only while connected
        refused: list[Record] = []
        async with connection.transaction():
            for suffix, keyed in rows.items():
                refused += await self._upsert_refusing(connection, TABLES[suffix], list(keyed.values()))
        return refused

    async def _upsert_refusing(self, connection: asyncpg.Connection, table: Table,
                               entries: list[tuple[tuple[Any, ...], Message]]) -> list[Record]:  # fmt: skip
        """Upsert `entries` in a savepoint; if the database refuses rows, halve until each refused row is alone, and
        return those as dead letters with the database's reason. Anything else (connection lost) raises."""
        try:
            async with connection.transaction():  # nested: a savepoint, so a refusal undoes only this part
                await self._upsert(connection, table, [row for row, _ in entries])
            return []
        except (asyncpg.PostgresError, asyncpg.DataError) as exc:
            state = str(getattr(exc, "sqlstate", None) or "")
            if not (isinstance(exc, asyncpg.DataError) or state.startswith(REFUSED_CLASSES)):
                raise
            if len(entries) > 1:
                half = len(entries) // 2
                return (await self._upsert_refusing(connection, table, entries[:half])
                        + await self._upsert_refusing(connection, table, entries[half:]))  # fmt: skip
            detail = getattr(exc, "detail", None)
            why = reason(f"sql_{state or 'data_error'}", f"{self.table_name(table.suffix)} refused the row: "
                         f"{type(exc).__name__}: {exc}" + (f" ({detail})" if detail else ""))  # fmt: skip
            return [entries[0][1].dead_letter(self.context.node_id, why)]

    async def _upsert(self, connection: asyncpg.Connection, table: Table, rows: list[tuple[Any, ...]]) -> None:
        names = table.names
        staging = f"sf_stage_{table.suffix}"
        await connection.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {self.table_name(table.suffix)}) ON COMMIT DELETE ROWS"
        )
        await connection.copy_records_to_table(staging, records=rows, columns=names)
        quoted = ", ".join(f'"{n}"' for n in names)
        updates = ", ".join(f'"{n}" = EXCLUDED."{n}"' for n in names if n not in table.key)
        key = ", ".join(f'"{k}"' for k in table.key)
        await connection.execute(
            f"INSERT INTO {self.table_name(table.suffix)} ({quoted}) SELECT {quoted} FROM {staging} "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )
