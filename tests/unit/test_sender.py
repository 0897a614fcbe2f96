"""`kafka.sender.send_records` against a fake producer: partitions, batches, edge records."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from stream_trainer.errors import KafkaError
from stream_trainer.kafka.sender import NULL_VALUE_HEADER, OutputRecord, send_records

Appended = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


class FakeBatch:
    """Accepts records up to `capacity` value bytes, as a size-bounded BatchBuilder does."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[Appended] = []

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> object | None:
        used = sum(len(v or b"") for _, v, _ in self.records)
        if self.records and used + len(value or b"") > self.capacity:
            return None
        if len(value or b"") > self.capacity:
            return None
        self.records.append((key, value, headers))
        return object()


class _Metadata:
    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._partitions[topic]))


class _Client:
    def __init__(self) -> None:
        self.waited: list[str] = []

    async def _wait_on_metadata(self, topic: str) -> None:
        self.waited.append(topic)


class FakeProducer:
    def __init__(self, partitions: dict[str, int], capacity: int = 1 << 20) -> None:
        self.client = _Client()
        self._metadata = _Metadata(partitions)
        self.capacity = capacity
        self.sent: list[tuple[str, int, list[Appended]]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.records))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result((topic, partition))
        return future


def _where(producer: FakeProducer) -> dict[bytes | None, set[tuple[str, int]]]:
    placed: dict[bytes | None, set[tuple[str, int]]] = {}
    for topic, partition, records in producer.sent:
        for key, _, _ in records:
            placed.setdefault(key, set()).add((topic, partition))
    return placed


async def test_keyed_records_go_where_the_default_partitioner_puts_them() -> None:
    producer = FakeProducer({"versions": 6})
    keys = [f"rule.r{i}".encode() for i in range(40)]
    records = [OutputRecord("versions", key, b"v") for key in keys]
    await send_records(producer, records)  # type: ignore[arg-type]
    reference = DefaultPartitioner()
    expected = {key: {("versions", reference(key, list(range(6)), list(range(6))))} for key in keys}
    assert _where(producer) == expected
    assert producer.client.waited == ["versions"]


async def test_one_batch_per_partition_keeps_record_order() -> None:
    producer = FakeProducer({"t": 3})
    records = [OutputRecord("t", b"k", str(i).encode()) for i in range(5)]
    sent = await send_records(producer, records)  # type: ignore[arg-type]
    assert len(sent) == 1 and sent[0][0] == "t"
    ((_, _, batch),) = producer.sent
    assert [value for _, value, _ in batch] == [b"0", b"1", b"2", b"3", b"4"]


async def test_explicit_partitions_win_and_unkeyed_records_spread() -> None:
    producer = FakeProducer({"changelog": 4, "metrics": 2})
    records = [
        OutputRecord("changelog", b"a", b"1", partition=3),
        OutputRecord("changelog", b"b", b"2", partition=3),
        OutputRecord("metrics", None, b"m0"),
        OutputRecord("metrics", None, b"m1"),
    ]
    await send_records(producer, records)  # type: ignore[arg-type]
    by_target = {(topic, partition): len(batch) for topic, partition, batch in producer.sent}
    assert by_target == {("changelog", 3): 2, ("metrics", 0): 1, ("metrics", 1): 1}
    assert producer.client.waited == ["metrics"]  # no lookup where partitions are given


async def test_a_full_batch_is_sent_and_a_new_one_started() -> None:
    producer = FakeProducer({"t": 1}, capacity=10)
    records = [OutputRecord("t", b"k", b"x" * 4, partition=0) for _ in range(5)]
    sent = await send_records(producer, records)  # type: ignore[arg-type]
    assert [len(batch) for _, _, batch in producer.sent] == [2, 2, 1]
    assert len(sent) == 3


async def test_a_record_larger_than_a_batch_is_an_error() -> None:
    producer = FakeProducer({"t": 1}, capacity=10)
    records = [OutputRecord("t", b"k", b"small", partition=0), OutputRecord("t", b"k", b"x" * 11)]
    with pytest.raises(KafkaError, match="larger than max_batch_size"):
        await send_records(producer, records)  # type: ignore[arg-type]


async def test_a_record_without_key_and_value_is_sent_marked() -> None:
    producer = FakeProducer({"dead": 1})
    headers = [("reason", b"malformed")]
    await send_records(producer, [OutputRecord("dead", None, None, 0, headers)])  # type: ignore[arg-type]
    ((_, _, batch),) = producer.sent
    assert batch == [(None, b"", [*headers, NULL_VALUE_HEADER])]
