"""Fakes and builders shared by the unit tests of the core (state, checkpoint, publishing,
tasks): input records of one task, their batches, and a producer that records its calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

from aiokafka import TopicPartition

from stream_trainer.batching import PendingBatch, TrainingBatch, decode_batch
from stream_trainer.config import Settings
from stream_trainer.events import encode
from tests.sample_events import T0, feedback, observation

SETTINGS = Settings()
OBS = SETTINGS.topic_observations
FB = SETTINGS.topic_feedback


@dataclass(frozen=True)
class Rec:
    """An input record with the fields the trainer reads (`batching.KafkaRecord`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Inputs:
    """Records of one task's two input partitions, with consecutive offsets per topic."""

    task: int = 0
    settings: Settings = SETTINGS
    next_offset: dict[str, int] = field(default_factory=dict)

    def record(self, topic: str, key: bytes | None, value: bytes | None) -> Rec:
        offset = self.next_offset.get(topic, 0)
        self.next_offset[topic] = offset + 1
        return Rec(topic, self.task, offset, key, value)

    def obs(self, variable: str, second: int, value: float | None = None) -> Rec:
        event = observation(
            second,
            variable=variable,
            ts=T0 + timedelta(seconds=second),
            value=float(second) if value is None else value,
            event_id=f"o-{variable}-{second}",
        )
        return self.record(self.settings.topic_observations, variable.encode(), encode(event))

    def fb(self, rule: str, second: int, success: bool, event_id: str | None = None) -> Rec:
        event = feedback(
            second,
            rule=rule,
            ts=T0 + timedelta(seconds=second),
            success=success,
            event_id=event_id or f"f-{rule}-{second}",
        )
        return self.record(self.settings.topic_feedback, rule.encode(), encode(event))

    def forget(self, topic: str, key: str) -> Rec:
        """A keyed tombstone on an input topic: a forget request."""
        return self.record(topic, key.encode(), None)

    def raw(self, topic: str, key: bytes | None, value: bytes | None) -> Rec:
        return self.record(topic, key, value)

    def pending(self, records: Iterable[Rec], generation: int = 0) -> PendingBatch:
        batch = PendingBatch(self.task, generation, time.monotonic())
        for r in records:
            obs = r.topic == self.settings.topic_observations
            (batch.observations if obs else batch.feedback).append(r)
        return batch

    def batch(self, records: Iterable[Rec], generation: int = 0) -> TrainingBatch:
        return decode_batch(self.pending(records, generation), self.settings.max_event_bytes)


class Metadata(NamedTuple):
    topic: str
    partition: int
    offset: int


class FakeRecordBatch:
    """What `producer.create_batch()` returns: it takes every record."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> object:
        self.records.append((key, value, headers))
        return object()


class FakeProducer:
    """A transactional producer that logs every call in order.

    `refuse[topic]` makes the delivery of a batch to that topic fail with that exception;
    `raise_on[method]` makes that method raise.
    """

    def __init__(self, partitions: int = 3) -> None:
        self.partitions = partitions
        self.calls: list[tuple[Any, ...]] = []
        self.refuse: dict[str, BaseException] = {}
        self.raise_on: dict[str, BaseException] = {}
        self.sent: list[tuple[str, int, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.end: dict[tuple[str, int], int] = {}
        self.stopped = False
        self.client = self
        self._metadata = self

    # -- what kafka.sender uses -----------------------------------------------------------

    async def _wait_on_metadata(self, topic: str) -> None:
        return None

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> FakeRecordBatch:
        return FakeRecordBatch()

    async def send_batch(
        self, builder: FakeRecordBatch, topic: str, *, partition: int
    ) -> asyncio.Future[Metadata]:
        self.calls.append(("send", topic, partition, len(builder.records)))
        future: asyncio.Future[Metadata] = asyncio.get_running_loop().create_future()
        if topic in self.refuse:
            future.set_exception(self.refuse[topic])
            return future
        first = self.end.get((topic, partition), 0)
        self.end[(topic, partition)] = first + len(builder.records)
        self.sent.extend((topic, partition, k, v, h) for k, v, h in builder.records)
        future.set_result(Metadata(topic, partition, first))
        return future

    # -- transactions ---------------------------------------------------------------------

    async def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.raise_on:
            raise self.raise_on[name]

    async def begin_transaction(self) -> None:
        await self._call("begin")

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        await self._call("offsets", dict(offsets), group_id)

    async def commit_transaction(self) -> None:
        await self._call("commit")

    async def abort_transaction(self) -> None:
        await self._call("abort")

    async def stop(self) -> None:
        self.stopped = True

    def names(self) -> list[str]:
        """The calls in order, sends folded to one "send" per run of sends."""
        out: list[str] = []
        for call in self.calls:
            if not (call[0] == "send" and out and out[-1] == "send"):
                out.append(call[0])
        return out
