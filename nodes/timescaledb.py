"""`timescaledb` sink: the `postgres` sink's tables and idempotent upserts, as hypertables on device time with the
chunk interval, compression and retention the config asks for."""

from __future__ import annotations

import asyncpg
from pydantic import Field

from streamforge.engine.sdk import PeerUnavailable
from streamforge.nodes.protocols.sql import SqlSink, SqlSinkConfig, Table

INTERVAL = r"^[1-9][0-9]{0,5} (second|minute|hour|day|week|month|year)s?$"


class TimescaleDbConfig(SqlSinkConfig):
    chunk_interval: str = Field("1 day", pattern=INTERVAL, description="Time range of one chunk, e.g. 1 day")
    compress_after: str | None = Field(
        None, pattern=INTERVAL, description="Compress chunks older than this, e.g. 7 days"
    )
    retention: str | None = Field(None, pattern=INTERVAL, description="Drop chunks older than this, e.g. 1 year")


def hypertable_statements(table: Table, name: str, config: TimescaleDbConfig) -> list[tuple[str, tuple[str, ...]]]:
    """What makes `name` a hypertable with its policies; each statement may run again (if_not_exists)."""
    statements: list[tuple[str, tuple[str, ...]]] = [(
        "SELECT create_hypertable($1::regclass, by_range($2, $3::interval), if_not_exists => TRUE, "
        "migrate_data => TRUE)", (name, table.time_column, config.chunk_interval),
    )]  # fmt: skip
    if config.compress_after is not None:
        segment = ",".join(column for column in table.key if column != table.time_column)
        statements += [
            (f"ALTER TABLE {name} SET (timescaledb.compress, timescaledb.compress_segmentby = '{segment}')", ()),
            ("SELECT add_compression_policy($1::regclass, $2::interval, if_not_exists => TRUE)",
             (name, config.compress_after)),
        ]  # fmt: skip
    if config.retention is not None:
        statements.append(("SELECT add_retention_policy($1::regclass, $2::interval, if_not_exists => TRUE)",
                           (name, config.retention)))  # fmt: skip
    return statements


class TimescaleDb(SqlSink[TimescaleDbConfig]):
    """As `postgres`, and on first use each table becomes a hypertable partitioned by its time column (device time
    for readings and alarms, window start for aggregates). A database without the TimescaleDB extension is reported
    (DEGRADED, saying how to install it) and retried; Kafka keeps the backlog meanwhile."""

    type = "timescaledb"
    description = "TimescaleDB: the postgres sink's upserts into hypertables, with compression and retention"

    async def prepare(self, connection: asyncpg.Connection) -> None:
        if await connection.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'") is None:
            available = await connection.fetchval(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
            )
            database = await connection.fetchval("SELECT current_database()")
            if available is None:
                raise PeerUnavailable(f"database {database} has no TimescaleDB: install the extension on its server "
                                      "(or use the postgres sink)")  # fmt: skip
            await connection.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")

    async def create(self, connection: asyncpg.Connection, table: Table) -> None:
        await super().create(connection, table)
        name = f"{self.config.schema_name}.{self.config.table_prefix}{table.suffix}"
        for statement, arguments in hypertable_statements(table, name, self.config):
            await connection.execute(statement, *arguments)


NODE = TimescaleDb
