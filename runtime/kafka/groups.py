"""A new flow's consumer groups start at the end of their input topics as they were at its first deploy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    GroupLoadInProgressError,
    NoError,
    NotCoordinatorForGroupError,
    for_code,
)
from aiokafka.protocol.commit import OffsetFetchRequest

from streamforge.engine.retry import Backoff
from streamforge.runtime.kafka.access import KafkaAccess

log = logging.getLogger("streamforge.kafka.groups")

# A fresh broker creates __consumer_offsets on the first group request; a restarted one loads it again.
COORDINATOR_WAIT_S = 30.0
NOT_READY = (GroupCoordinatorNotAvailableError, GroupLoadInProgressError, NotCoordinatorForGroupError)


async def start_new_flow_at_end(kafka: KafkaAccess, groups: Mapping[str, Sequence[str]]) -> bool:
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
    admin = kafka.admin()
    await admin.start()
    try:
        for group in groups:
            if await committed_offsets(admin, group):
                return False
        inputs = sorted({topic for topics in groups.values() for topic in topics})
        partitions = {t["topic"]: [TopicPartition(t["topic"], p["partition"]) for p in t["partitions"]]
                      for t in await admin.describe_topics(inputs)}  # fmt: skip
    finally:
        await admin.close()
    reader = kafka.consumer(enable_auto_commit=False)
    await reader.start()
    try:
        ends = await reader.end_offsets([tp for tps in partitions.values() for tp in tps])
    finally:
        await reader.stop()
    for group, topics in groups.items():
        committer = kafka.consumer(group_id=group, enable_auto_commit=False)
        await committer.start()
        try:
            owned = [tp for topic in topics for tp in partitions[topic]]
            committer.assign(owned)
            await committer.commit({tp: ends[tp] for tp in owned})
        finally:
            await committer.stop()
    return True


async def committed_offsets(admin: AIOKafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets, waiting out a coordinator that is not elected yet or still loading.

    Why not `admin.list_consumer_group_offsets`: aiokafka 0.14 ignores the answer's top-level error code. A broker
    restarted after a SIGKILL answers COORDINATOR_LOAD_IN_PROGRESS there, with no partitions, until it has read
    __consumer_offsets again (measured: ~200 ms for 240,000 commits), and aiokafka returns {}: "never committed".
    A flow that ran was then taken for new and would have skipped its backlog."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + COORDINATOR_WAIT_S
    backoff = Backoff(0.05, 1.0)
    while True:
        try:
            coordinator = await admin.find_coordinator(group)
            # The public call drops the error this answer carries: the request is sent as it does, read here.
            return offsets_in(await admin._send_request(OffsetFetchRequest(group, None), coordinator))
        except NOT_READY as error:
            if loop.time() > deadline:
                raise
            log.info("group coordinator not ready; asking again", extra={"group": group, "error": repr(error)})
            await asyncio.sleep(backoff.next_delay())


def offsets_in(response: Any) -> dict[TopicPartition, int]:
    """The committed offsets an OffsetFetch answer carries; an error in it, for the group or a partition, raised."""
    error = for_code(getattr(response, "error_code", 0))  # v2 and later; v1 has errors by partition only
    if error is not NoError:
        raise error("the group's offsets were not read")
    offsets: dict[TopicPartition, int] = {}
    for topic, partitions in response.topics:
        for partition, offset, _metadata, code in partitions:
            if code:
                raise for_code(code)(f"the group's offset of {topic} [{partition}] was not read")
            if offset >= 0:  # -1: none committed
                offsets[TopicPartition(topic, partition)] = offset
    return offsets
