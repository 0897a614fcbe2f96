"""`kafka.restore.read_changelog` with a fake consumer: from where, up to where, what is kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.kafka import restore

SETTINGS = Settings()
TOPIC = SETTINGS.changelog_topic


@dataclass(frozen=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Partition:
    records: list[Record]
    beginning: int = 0
    end: int | None = None  # past the last record: transaction markers


@dataclass
class FakeConsumer:
    """Serves each partition's records in fetches of at most `fetch` records; the position
    jumps over offsets without a record (compacted away, or transaction markers)."""

    log: dict[int, Partition]
    fetch: int = 2
    fail_start: Exception | None = None
    stopped: bool = False
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    fetched_from: list[tuple[int, int]] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def _end(self, p: int) -> int:
        part = self.log[p]
        last = part.records[-1].offset + 1 if part.records else part.beginning
        return part.end if part.end is not None else last

    async def start(self) -> None:
        if self.fail_start is not None:
            raise self.fail_start

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, partitions: list[TopicPartition]) -> None:
        assert all(tp.topic == TOPIC for tp in partitions)

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.log[tp.partition].beginning for tp in tps}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._end(tp.partition) for tp in tps}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def getmany(
        self, *tps: TopicPartition, timeout_ms: int
    ) -> dict[TopicPartition, list[Record]]:
        out: dict[TopicPartition, list[Record]] = {}
        for tp in tps:
            at = self.positions[tp]
            self.fetched_from.append((tp.partition, at))
            batch = [r for r in self.log[tp.partition].records if r.offset >= at][: self.fetch]
            if batch:
                out[tp] = batch
                self.positions[tp] = batch[-1].offset + 1
            else:
                self.positions[tp] = self._end(tp.partition)
        return out


@dataclass
class Cluster:
    """The changelog partitions, and the consumers `read_changelog` opened on them."""

    log: dict[int, Partition] = field(default_factory=dict)
    fail_start: Exception | None = None
    consumers: list[FakeConsumer] = field(default_factory=list)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Cluster:
    world = Cluster()

    def new_consumer(settings: Settings, **kwargs: Any) -> FakeConsumer:
        consumer = FakeConsumer(world.log, fail_start=world.fail_start, kwargs=kwargs)
        world.consumers.append(consumer)
        return consumer

    monkeypatch.setattr(restore, "new_consumer", new_consumer)
    return world


def records(*spec: tuple[int, bytes | None, bytes | None]) -> list[Record]:
    return [Record(o, k, v) for o, k, v in spec]


async def test_each_partition_is_read_from_its_beginning_with_tombstones_kept(
    cluster: Cluster,
) -> None:
    cluster.log.update(
        {
            0: Partition(
                records((3, b"m:a", b"1"), (4, None, b"x"), (6, b"m:a", None), (7, b"r:b", b"2")),
                beginning=3,
            ),
            1: Partition(records((0, b"m:c", b"3"))),
        },
    )
    tails = await restore.read_changelog(SETTINGS, {0: None, 1: None})
    assert tails[0].records == [(b"m:a", b"1"), (b"m:a", None), (b"r:b", b"2")]  # unkeyed skipped
    assert (tails[0].start, tails[0].end) == (3, 8)
    assert tails[1].records == [(b"m:c", b"3")]
    [consumer] = cluster.consumers
    assert consumer.stopped
    assert consumer.kwargs["isolation_level"] == "read_committed"
    assert consumer.kwargs["group_id"] is None


async def test_a_start_offset_reads_only_the_tail(cluster: Cluster) -> None:
    cluster.log.update({0: Partition(records(*((o, b"m:a", str(o).encode()) for o in range(10))))})
    tails = await restore.read_changelog(SETTINGS, {0: 7})
    assert tails[0].start == 7
    assert tails[0].records == [(b"m:a", b"7"), (b"m:a", b"8"), (b"m:a", b"9")]
    assert min(at for _, at in cluster.consumers[0].fetched_from) == 7


@pytest.mark.parametrize("stale", [2, 50])
async def test_a_start_outside_the_log_falls_back_to_the_whole_partition(
    cluster: Cluster, stale: int
) -> None:
    # Before the beginning: compacted or deleted since the snapshot; past the end: the
    # changelog was recreated. Either way the snapshot cannot be trusted.
    cluster.log.update({0: Partition(records((5, b"m:a", b"5"), (6, b"m:b", b"6")), beginning=5)})
    tails = await restore.read_changelog(SETTINGS, {0: stale})
    assert tails[0].start == 5
    assert tails[0].records == [(b"m:a", b"5"), (b"m:b", b"6")]


async def test_the_read_ends_at_the_end_offset_past_transaction_markers(
    cluster: Cluster,
) -> None:
    cluster.log.update({0: Partition(records((0, b"m:a", b"0"), (2, b"m:a", b"2")), end=4)})
    tails = await restore.read_changelog(SETTINGS, {0: None})
    assert tails[0].records == [(b"m:a", b"0"), (b"m:a", b"2")]
    assert tails[0].end == 4


async def test_an_empty_partition_is_not_fetched(cluster: Cluster) -> None:
    cluster.log.update({0: Partition([], beginning=9), 1: Partition(records((0, b"m:a", b"0")))})
    tails = await restore.read_changelog(SETTINGS, {0: None, 1: None})
    assert tails[0].records == [] and (tails[0].start, tails[0].end) == (9, 9)
    assert {p for p, _ in cluster.consumers[0].fetched_from} == {1}


async def test_nothing_to_restore_opens_no_consumer(cluster: Cluster) -> None:
    assert await restore.read_changelog(SETTINGS, {}) == {}
    assert cluster.consumers == []


async def test_a_broker_failure_is_retriable_and_the_consumer_stopped(cluster: Cluster) -> None:
    cluster.log[0] = Partition([])
    cluster.fail_start = KafkaConnectionError("no broker")
    with pytest.raises(KafkaError, match="changelog restore failed") as raised:
        await restore.read_changelog(SETTINGS, {0: None})
    assert raised.value.retriable
    assert raised.value.__cause__ is cluster.fail_start
    assert cluster.consumers[0].stopped
