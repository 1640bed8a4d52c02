"""postgres sink on a real PostgreSQL: tables created, idempotent upserts, recovery after an outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from streamforge.engine.records import telemetry
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.postgres import Postgres

T0 = datetime(2026, 1, 29, 10, 0, tzinfo=UTC)


def readings(n: int, value: float = 1.0) -> list[dict[str, Any]]:
    return [telemetry("pump_1", "pressure", value + i, unit="bar", device_time=T0 + timedelta(seconds=i),
                      gateway_time=T0 + timedelta(seconds=i, milliseconds=7)) for i in range(n)]  # fmt: skip


def aggregate(count: int) -> dict[str, Any]:
    return {"asset_id": "pump_1", "parameter": "pressure", "resolution": "1min", "window_start": T0,
            "window_end": T0 + timedelta(minutes=1), "unit": "bar", "metadata": {},
            "aggregates": {"avg": 2.0, "min": 1.0, "max": 3.0, "first": 1.0, "last": 3.0, "count": count}}  # fmt: skip


@pytest.fixture
def prefix(unique: str) -> str:
    return "t" + str(abs(hash(unique)) % 10**9) + "_"


async def test_tables_are_created_and_replays_are_idempotent(postgres_dsn: str, prefix: str) -> None:
    async with NodeHarness(Postgres, {"dsn": postgres_dsn, "table_prefix": prefix}) as sink:
        await sink.write(readings(100), port="telemetry")
        await sink.write(readings(100), port="telemetry")  # the same batch again, as after a crash
        await sink.write(readings(10, value=50.0), port="telemetry")  # a replay with corrected values
        await sink.write([aggregate(59), aggregate(60)], port="aggregates")
    connection = await asyncpg.connect(postgres_dsn)
    try:
        assert await connection.fetchval(f"SELECT count(*) FROM {prefix}telemetry") == 100
        assert await connection.fetchval(f"SELECT value FROM {prefix}telemetry WHERE time = $1", T0) == 50.0
        row = await connection.fetchrow(f"SELECT * FROM {prefix}telemetry WHERE time = $1", T0 + timedelta(seconds=20))
        assert row is not None
        assert (row["asset_id"], row["unit"], row["quality"], row["clock_skew_ms"]) == ("pump_1", "bar", "GOOD", 7)
        assert await connection.fetchval(f"SELECT count FROM {prefix}aggregates") == 60
    finally:
        await connection.close()


async def test_outage_raises_then_reconnects(postgres_dsn: str, prefix: str) -> None:
    async with NodeHarness(Postgres, {"dsn": postgres_dsn, "table_prefix": prefix}) as sink:
        await sink.write(readings(5), port="telemetry")
        admin = await asyncpg.connect(postgres_dsn)
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                            "AND datname = current_database() AND application_name = ''")  # fmt: skip
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)):
            await sink.write(readings(6), port="telemetry")  # the runner retries this batch with backoff
        await sink.write(readings(6), port="telemetry")
        assert await admin.fetchval(f"SELECT count(*) FROM {prefix}telemetry") == 6
        await admin.close()


def test_bad_config_is_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="table_prefix"):
        Postgres.Config.model_validate({"dsn": "postgresql://x", "table_prefix": "Robert'); DROP TABLE"})


async def test_rows_the_database_refuses_are_dead_letters_and_the_rest_is_written(
    postgres_dsn: str, prefix: str
) -> None:
    connection = await asyncpg.connect(postgres_dsn)
    try:  # the customer's own table, with a rule of theirs: no negative pressure
        await connection.execute(f"CREATE TABLE {prefix}telemetry (time timestamptz, asset_id text, parameter text, "
                                 "value double precision CHECK (value >= 0), unit text, quality text, "
                                 "device_time timestamptz, gateway_time timestamptz, clock_skew_ms bigint, "
                                 "PRIMARY KEY (asset_id, parameter, time))")  # fmt: skip
        batch = readings(10)
        batch[3]["value"] = -4.0  # breaks the CHECK constraint
        batch[7]["asset_id"] = "pump\x00"  # PostgreSQL text cannot hold NUL
        async with NodeHarness(Postgres, {"dsn": postgres_dsn, "table_prefix": prefix}) as sink:
            refused = await sink.write(batch, port="telemetry")
        assert sorted(letter["source_offset"] for letter in refused) == [3, 7]
        codes = {letter["source_offset"]: letter["reasons"][0] for letter in refused}
        assert codes[3]["code"] == "sql_23514" and f"{prefix}telemetry_value_check" in codes[3]["message"]
        assert codes[7]["code"].startswith("sql_22")
        stored = await connection.fetch(f"SELECT value FROM {prefix}telemetry ORDER BY time")
        assert [r["value"] for r in stored] == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 9.0, 10.0]
    finally:
        await connection.close()
