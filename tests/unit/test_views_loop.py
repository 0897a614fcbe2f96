"""The view's fetch loop against a fake consumer: readiness, updates, errors, new partitions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, TopicAuthorizationFailedError

from stream_trainer.errors import KafkaError
from stream_trainer.events import RuleVersion, encode
from stream_trainer.views import RuleView, Update, UpdatesOverflowError, ViewError
from tests.unit.test_views_table import rule

TOPIC = "pulse.rule-versions"


@dataclass
class Record:
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class FakeCluster:
    """Partitions of one topic as lists of (key, value); failures raised by getmany."""

    logs: dict[int, list[tuple[bytes | None, bytes | None]]] = field(default_factory=dict)
    failures: list[Exception] = field(default_factory=list)
    consumers: list[FakeConsumer] = field(default_factory=list)

    def append(self, partition: int, key: str, value: RuleVersion | None) -> None:
        raw = None if value is None else encode(value)
        self.logs.setdefault(partition, []).append((key.encode(), raw))

    def factory(self, **kwargs: Any) -> FakeConsumer:
        consumer = FakeConsumer(self, kwargs)
        self.consumers.append(consumer)
        return consumer


class _Client:
    async def force_metadata_update(self) -> bool:
        return True


class FakeConsumer:
    def __init__(self, cluster: FakeCluster, kwargs: dict[str, Any]) -> None:
        self.cluster = cluster
        self.kwargs = kwargs
        self.positions: dict[TopicPartition, int] = {}
        self.assigned: list[TopicPartition] = []
        self.stopped = False
        self._client = _Client()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.cluster.logs) or None

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)
        self.positions = {}  # as aiokafka: a new assignment forgets positions

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.positions[tp] = 0

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.cluster.logs[tp.partition]) for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Record]]:
        if self.cluster.failures:
            raise self.cluster.failures.pop(0)
        out = {}
        for tp in self.assigned:
            log = self.cluster.logs[tp.partition]
            start = self.positions[tp]
            batch = [Record(o, *log[o]) for o in range(start, min(start + 2, len(log)))]
            if batch:
                out[tp] = batch
                self.positions[tp] = start + len(batch)
        if not out:
            await asyncio.sleep(0.01)
        return out


def cluster_with(n_keys: int = 3, versions: int = 3, partitions: int = 2) -> FakeCluster:
    cluster = FakeCluster(logs={p: [] for p in range(partitions)})
    for v in range(1, versions + 1):
        for k in range(n_keys):
            cluster.append(k % partitions, f"rule.{k}", rule(f"rule.{k}", v))
    return cluster


def view_of(cluster: FakeCluster, **kwargs: Any) -> RuleView:
    return RuleView("localhost:1", consumer_factory=cluster.factory, **kwargs)


async def next_update(stream: Any) -> Update[RuleVersion]:
    update: Update[RuleVersion] = await asyncio.wait_for(anext(stream), 5)
    return update


def _first(item: tuple[str, int | None]) -> str:
    return item[0]


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stream_trainer.views.reader.POLL_MS", 10)
    monkeypatch.setattr("stream_trainer.views.view.RETRY_MIN_S", 0.01)


async def test_ready_after_catch_up_then_updates_in_version_order() -> None:
    cluster = cluster_with()
    seen: list[Update[RuleVersion]] = []
    async with view_of(cluster, on_update=seen.append) as view:
        updates = view.updates()  # subscribed before ready: nothing between is missed
        await view.ready()
        assert len(view) == 3 and sorted(view) == ["rule.0", "rule.1", "rule.2"]
        assert view.get("rule.1") == rule("rule.1", 3) and view.get("nope") is None
        assert seen == []  # catch-up records are not updates
        cluster.append(1, "rule.1", rule("rule.1", 4))
        cluster.append(1, "rule.1", rule("rule.1", 2))  # older: ignored
        cluster.append(1, "rule.1", rule("rule.1", 5))
        cluster.append(0, "rule.0", None)
        got = [await next_update(updates) for _ in range(3)]
        # Partitions interleave; per key (one partition) the order is the version order.
        per_key = sorted(
            ((u.key, u.version.version if u.version else None) for u in got), key=_first
        )
        assert per_key == [("rule.0", None), ("rule.1", 4), ("rule.1", 5)]
        assert seen == got
        assert "rule.0" not in view and len(view) == 2 and view.stats.stale == 1
        consumer = cluster.consumers[0]
        assert consumer.kwargs["isolation_level"] == "read_committed"
        assert consumer.kwargs["group_id"] is None
    assert consumer.stopped
    with pytest.raises(StopAsyncIteration):
        await next_update(updates)  # the stream ends with the view


@pytest.mark.usefixtures("fast_polls")
async def test_retriable_errors_and_timeouts_are_ridden_out() -> None:
    cluster = cluster_with()
    cluster.failures = [KafkaConnectionError("broker restarting"), KafkaTimeoutError()]
    async with view_of(cluster) as view:
        await asyncio.wait_for(view.ready(), 5)
        assert len(view) == 3 and not cluster.failures


async def test_a_fatal_error_is_raised_by_the_next_call() -> None:
    cluster = cluster_with()
    async with view_of(cluster) as view:
        await view.ready()
        updates = view.updates()
        cluster.failures = [TopicAuthorizationFailedError(TOPIC)]
        with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
            await next_update(updates)
        with pytest.raises(KafkaError):
            view.get("rule.0")
        with pytest.raises(KafkaError):
            await view.ready()


async def test_a_raising_callback_ends_the_view_with_its_error() -> None:
    cluster = cluster_with()

    def broken(update: Update[RuleVersion]) -> None:
        raise ValueError("bug in the service")

    async with view_of(cluster, on_update=broken) as view:
        await view.ready()
        updates = view.updates()
        cluster.append(0, "rule.0", rule("rule.0", 9))
        with pytest.raises(ValueError, match="bug in the service"):
            await next_update(updates)
        with pytest.raises(ValueError, match="bug in the service"):
            len(view)


async def test_a_slow_subscriber_is_dropped_after_max_pending_not_silently() -> None:
    cluster = cluster_with()
    async with view_of(cluster) as view:
        await view.ready()
        slow = view.updates(max_pending=2)
        fast = view.updates()
        for v in range(4, 9):
            cluster.append(0, "rule.0", rule("rule.0", v))
        fast_got = [(await next_update(fast)).version for _ in range(5)]
        assert fast_got == [rule("rule.0", v) for v in range(4, 9)]
        assert (await next_update(slow)).version == rule("rule.0", 4)
        assert (await next_update(slow)).version == rule("rule.0", 5)
        with pytest.raises(UpdatesOverflowError):
            await next_update(slow)


async def test_partitions_added_later_are_followed_from_their_beginning() -> None:
    cluster = cluster_with(partitions=2)
    async with view_of(cluster) as view:
        await view.ready()
        records_at_ready = view.stats.records
        updates = view.updates()
        cluster.logs[2] = []
        cluster.append(2, "rule.new", rule("rule.new", 1))
        assert await next_update(updates) == Update("rule.new", rule("rule.new", 1))
        assert [tp.partition for tp in view.partitions] == [0, 1, 2]
        assert view.stats.records == records_at_ready + 1  # old partitions not re-read


@pytest.mark.usefixtures("fast_polls")
async def test_a_missing_topic_gives_an_empty_ready_view_that_follows_it_once_created() -> None:
    cluster = FakeCluster()
    async with view_of(cluster) as view:
        await asyncio.wait_for(view.ready(), 5)
        assert len(view) == 0
        updates = view.updates()
        cluster.logs[0] = []
        cluster.append(0, "rule.a", rule("rule.a", 1))
        assert (await next_update(updates)).key == "rule.a"


async def test_using_a_view_outside_async_with_is_an_error() -> None:
    view = view_of(cluster_with())
    with pytest.raises(ViewError, match="not started"):
        await view.ready()
    async with view:
        with pytest.raises(ViewError, match="already started"):
            await view.start()
    with pytest.raises(StopAsyncIteration):
        await next_update(view.updates())


async def test_stopping_a_view_before_it_is_ready_fails_the_waiters() -> None:
    cluster = cluster_with()

    async def never_reached(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(cluster.logs[tp.partition]) + 1 for tp in tps}

    view = view_of(cluster)
    await view.start()
    cluster.consumers[0].end_offsets = never_reached  # type: ignore[method-assign]
    waiter = asyncio.create_task(view.ready())
    await asyncio.sleep(0.1)
    assert not waiter.done() and not view.is_ready
    await view.stop()
    with pytest.raises(ViewError, match="stopped before it was ready"):
        await waiter
