"""`timescaledb` sink. TimescaleDB is not packaged for this machine's Debian, so what runs here is: against the real
PostgreSQL, a database without the extension is refused with how to fix it (DEGRADED, retried, never a failed
deploy); and the hypertable statements are checked as text. The tables and upserts are the postgres sink's own
(nodes/protocols/sql.py), tested in test_postgres.py."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamforge.engine.sdk import PeerUnavailable
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.protocols.sql import TABLES
from streamforge.nodes.timescaledb import TimescaleDb, TimescaleDbConfig, hypertable_statements


async def test_a_database_without_the_extension_is_refused_with_the_fix(postgres_dsn: str) -> None:
    with pytest.raises(PeerUnavailable, match=r"database \w+ has no TimescaleDB: install the extension"):
        async with NodeHarness(TimescaleDb, {"dsn": postgres_dsn, "table_prefix": "ts_"}):
            pass


def test_hypertables_on_device_time_with_chunks_compression_and_retention() -> None:
    config = TimescaleDbConfig.model_validate({"dsn": "postgresql://x/y", "chunk_interval": "6 hours",
                                               "compress_after": "7 days", "retention": "1 year"})  # fmt: skip
    statements = hypertable_statements(TABLES["telemetry"], "public.sf_telemetry", config)
    assert statements[0][1] == ("public.sf_telemetry", "time", "6 hours")
    assert "by_range" in statements[0][0] and "if_not_exists => TRUE" in statements[0][0]
    assert "timescaledb.compress_segmentby = 'asset_id,parameter'" in statements[1][0]
    assert [s[1] for s in statements[2:]] == [("public.sf_telemetry", "7 days"), ("public.sf_telemetry", "1 year")]
    aggregates = hypertable_statements(TABLES["aggregates"], "public.sf_aggregates", config)
    assert aggregates[0][1][1] == "window_start"  # aggregates are partitioned by their window
    plain = TimescaleDbConfig.model_validate({"dsn": "postgresql://x/y"})
    assert len(hypertable_statements(TABLES["alarms"], "public.sf_alarms", plain)) == 1  # no policies asked for
    with pytest.raises(ValidationError, match="chunk_interval"):
        TimescaleDbConfig.model_validate({"dsn": "postgresql://x/y", "chunk_interval": "1 fortnight"})
