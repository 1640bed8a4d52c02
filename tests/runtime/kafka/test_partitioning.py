"""Keyed records land where the Java client (and aiokafka) would put them: murmur2 equal to aiokafka's, key by key,
whether or not a producer remembers its keys' partitions."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2

from streamforge.runtime.kafka import clients, partitioning
from streamforge.runtime.kafka.clients import BatchProducer
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.conftest import create_topic


def test_murmur2_equals_aiokafkas_for_keys_of_every_length_and_byte() -> None:
    rng = random.Random(15)
    keys = [bytes(rng.randrange(256) for _ in range(length)) for length in range(0, 130) for _ in range(20)]
    keys += [b"pump_1", "Pumpe-Größe|druck|2026-01-29T10:00:00+00:00".encode(), bytes(range(256))]
    for key in keys:
        assert partitioning.murmur2(key) == murmur2(key), key


def test_the_partition_is_the_default_partitioners() -> None:
    rng = random.Random(16)
    for count in (1, 3, 12, 50):
        partitions = list(range(count))
        for _ in range(500):
            key = f"asset_{rng.randrange(10**9)}|temperature|{rng.random()}".encode()
            assert partitioning.partition_of(key, count) == DefaultPartitioner()(key, partitions, partitions)


async def test_a_producer_whose_keys_never_repeat_stops_remembering_them_and_partitions_alike(
    kafka: EmbeddedKafka, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An aggregate's key (asset|parameter|window) is new every time: remembering it only costs memory. A producer
    of repeating keys (asset ids) keeps its memory. Either way each record lands where the Java client puts it."""
    monkeypatch.setattr(clients, "PARTITIONS_KEPT", 50)
    topic = await create_topic(kafka.access, f"{unique}.keys")
    windows = [(i, f"pump_{i % 7}|pressure|{i}".encode(), b"v") for i in range(120)]
    assets = [(i, f"pump_{i % 40}".encode(), b"v") for i in range(120)]
    landed: dict[bytes, int] = {}
    for items, remembers in ((windows, False), (assets, True)):
        async with BatchProducer(kafka.access) as producer:
            for start in range(0, 120, 30):
                report = await producer.send_raw(topic, items[start : start + 30])
                assert len(report.delivered) == 30
                for indexes, partition, _ in report.acknowledged:
                    landed.update((items[index][1], partition) for index in indexes)
            assert (producer._partition_of is not None) == remembers
    assert landed == {key: partitioning.partition_of(key, 12) for _, key, _ in windows + assets}
