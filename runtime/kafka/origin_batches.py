"""Whole record batches from nodes a consumer is not wired to are passed over unread, their records never made."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiokafka import TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException

# On the first record of every batch a StreamForge producer builds: all records of this batch carry my sf-flow and
# sf-node. Only such a batch is judged by its first record; any other (an external producer's, a mirror's, one
# batch mixing origins) is read record by record as before. Consumers strip it from what they hand on, so no node
# copies it onto a record of a batch that mixes origins.
ONE_ORIGIN = ("sf-batch", b"one-origin")
JUDGED_KEPT = 4096  # distinct header sets judged and remembered (a producer stamps one set on all it sends)


class OriginFilter:
    """What one consumer passes over, and how much: handed to aiokafka as the value deserializer (the one argument
    it passes on to each partition's records), where it stands for the identity if the unpacking below is not in
    place."""

    def __init__(self, upstream: set[tuple[bytes, bytes]]) -> None:
        self.upstream = upstream
        self._judged: dict[tuple[tuple[str, bytes], ...], bool] = {}
        self.skipped = 0  # records passed over since last taken
        self.skipped_to: dict[TopicPartition, int] = {}  # per partition: the offset after the last batch passed over

    def __call__(self, value: bytes | None) -> bytes | None:
        return value

    def passes_over(self, headers: tuple[tuple[str, bytes], ...]) -> bool:
        """True for the first record of a one-origin batch whose origin is not upstream of this consumer."""
        judged = self._judged.get(headers)
        if judged is None:
            found = dict(headers)
            origin = (found.get("sf-flow", b""), found.get("sf-node", b""))
            judged = found.get(ONE_ORIGIN[0]) == ONE_ORIGIN[1] and origin not in self.upstream
            if len(self._judged) < JUDGED_KEPT:
                self._judged[headers] = judged
        return judged

    def take(self) -> tuple[int, dict[TopicPartition, int]]:
        """What was passed over since the last call: the record count, and per partition the offset after it."""
        taken = self.skipped, self.skipped_to
        self.skipped, self.skipped_to = 0, {}
        return taken


class OriginBatches(fetcher.PartitionRecords):  # type: ignore[misc]
    """aiokafka's unpacking of a fetched partition (aiokafka 0.14.0, `PartitionRecords._unpack_records`), with one
    step added: a batch whose first record says it is all from a node not wired to the consumer is passed over.

    Why: reading the spec topics that flows share, a consumer made every other flow's record (~2.3 µs each) only to
    drop it by its headers; with 3 more flows beside it a validator ran at 0.62-0.70 of its rate alone.
    Consumers without an OriginFilter unpack exactly as aiokafka does."""

    def __init__(
        self,
        tp: TopicPartition,
        records: Any,
        aborted_transactions: Any,
        fetch_offset: int,
        key_deserializer: Any,
        value_deserializer: Any,
        check_crcs: bool,
        isolation_level: int,
    ) -> None:
        passes = value_deserializer if isinstance(value_deserializer, OriginFilter) else None
        super().__init__(tp, records, aborted_transactions, fetch_offset, key_deserializer,
                         None if passes else value_deserializer, check_crcs, isolation_level)  # fmt: skip
        if passes is not None:
            self._records_iterator = self._unpack_judged(passes)

    def _unpack_judged(self, passes: OriginFilter) -> Iterator[Any]:
        tp, records = self._tp, self._records
        while records.has_next():
            batch = records.next_batch()
            if self._check_crcs and not batch.validate_crc():
                raise CorruptRecordException(f"Invalid CRC - {tp}")
            if self._isolation_level == fetcher.READ_COMMITTED and batch.producer_id is not None:
                self._consume_aborted_up_to(batch.base_offset)
                if batch.is_control_batch and self._contains_abort_marker(batch):
                    self._aborted_producers.discard(batch.producer_id)
                if batch.is_transactional and batch.producer_id in self._aborted_producers:
                    self.next_fetch_offset = batch.next_offset
                    continue
            if batch.is_control_batch:
                self.next_fetch_offset = batch.next_offset
                continue
            batch_records = iter(batch)  # once: the compiled batch is its own iterator and refuses a second iter()
            record = next(batch_records, None)
            if record is not None and passes.passes_over(tuple(record.headers)):
                passes.skipped += batch.next_offset - max(record.offset, self.next_fetch_offset)
                passes.skipped_to[tp] = self.next_fetch_offset = batch.next_offset
                continue
            while record is not None:
                if record.offset >= self.next_fetch_offset:  # below: a compressed set's records already read
                    consumer_record = self._consumer_record(tp, record)
                    self.next_fetch_offset = record.offset + 1
                    yield consumer_record
                record = next(batch_records, None)
            self.next_fetch_offset = batch.next_offset


fetcher.PartitionRecords = OriginBatches  # the fetcher makes every partition's records by this module-level name
