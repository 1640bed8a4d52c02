"""`postgres` sink: batched, idempotent upserts of telemetry, aggregates and alarms into PostgreSQL."""

from __future__ import annotations

from streamforge.nodes.protocols.sql import SqlSink, SqlSinkConfig


class Postgres(SqlSink[SqlSinkConfig]):
    """Each batch is one transaction: COPY into a temp table, then INSERT ... ON CONFLICT on the natural key.

    A replayed batch (after a crash before the offset commit) updates the same rows: no duplicates. For hypertables,
    use the `timescaledb` sink: the same tables and upserts.
    """

    type = "postgres"
    description = "PostgreSQL: idempotent batched upserts, tables created if absent"


NODE = Postgres
