"""A new flow's consumer groups start at the end of their input topics as they were at its first deploy."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata

from streamforge.engine.retry import Backoff

COORDINATOR_WAIT_S = 30.0  # a fresh broker creates __consumer_offsets on the first group request


async def start_new_flow_at_end(bootstrap: str, groups: Mapping[str, Sequence[str]]) -> bool:
    """If none of a flow's consumer groups (group -> its input topics) has ever committed, commit each one the
    current end of every partition of its inputs, and say True.

    Why: the spec topics are shared by every flow on the gateway, and a consumer keeps only its own upstream's
    records. A flow deployed for the first time has none of its own in them yet, so reading them from the earliest
    offset only skips other flows' history, possibly days of it, before its first reading gets through.

    Why it loses nothing: this runs before any node of the flow starts, so nothing of its own is written before
    the offsets it starts from. Every partition is committed, so the flow is never seen as new again: a crash
    before its first batch resumes from these offsets, not from a later end. A node added to a flow that already
    ran has no offsets of its own and starts from the earliest retained record (spec: any sink can replay from
    local Kafka)."""
    if not groups:
        return False
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for group in groups:
            if await _offsets_of(admin, group):
                return False
        inputs = sorted({topic for topics in groups.values() for topic in topics})
        partitions = {t["topic"]: [TopicPartition(t["topic"], p["partition"]) for p in t["partitions"]]
                      for t in await admin.describe_topics(inputs)}  # fmt: skip
    finally:
        await admin.close()
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        ends = await reader.end_offsets([tp for tps in partitions.values() for tp in tps])
    finally:
        await reader.stop()
    for group, topics in groups.items():
        committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await committer.start()
        try:
            owned = [tp for topic in topics for tp in partitions[topic]]
            committer.assign(owned)
            await committer.commit({tp: ends[tp] for tp in owned})
        finally:
            await committer.stop()
    return True


async def _offsets_of(admin: AIOKafkaAdminClient, group: str) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets, waiting out a coordinator that is not elected yet (a fresh broker)."""
    deadline = asyncio.get_running_loop().time() + COORDINATOR_WAIT_S
    backoff = Backoff(0.1, 2.0)
    while True:
        try:
            offsets: dict[TopicPartition, OffsetAndMetadata] = await admin.list_consumer_group_offsets(group)
            return offsets
        except GroupCoordinatorNotAvailableError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(backoff.next_delay())
