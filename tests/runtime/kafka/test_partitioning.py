"""Keyed records land where the Java client (and aiokafka) would put them: murmur2 equal to aiokafka's, key by key."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2

from streamforge.runtime.kafka import partitioning


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
