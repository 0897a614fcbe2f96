"""`tasks.TaskManager` through its seams, no broker: a fake consumer port, fake producers,
a fake changelog reader and a fake committer that keep a tiny in-memory "broker".

Sleeps of the retry loop are recorded instead of slept, and move a fake clock that the
task's retry budget reads.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
import pytest
from aiokafka import TopicPartition

from stream_trainer import tasks as tasks_module
from stream_trainer.config import Settings
from stream_trainer.errors import (
    BrokerUnavailableError,
    DeadLetterError,
    KafkaError,
    TaskFencedError,
)
from stream_trainer.events import ModelVersion
from stream_trainer.kafka.restore import ChangelogTail
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.publishing import BatchOutputs, FirstOffsets
from stream_trainer.retry import RetryBudget
from stream_trainer.state import TaskState
from stream_trainer.tasks import TaskManager
from tests.unit.core_fakes import OBS, Inputs, Rec

SETTINGS = Settings(
    commit_interval_ms=100, cache_max_events=4, broker_timeout_s=30.0, worker_concurrency=1
)
CHANGELOG = SETTINGS.changelog_topic
MODELS = SETTINGS.topic_model_versions
FB = SETTINGS.topic_feedback


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeProducer:
    task: int
    stopped: bool = False

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class Broker:
    """What the fakes share: the changelog, committed offsets, and failures to inject."""

    changelog: dict[int, list[tuple[bytes, bytes | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    commits: list[BatchOutputs] = field(default_factory=list)
    commit_failures: list[KafkaError] = field(default_factory=list)
    restore_failures: list[KafkaError] = field(default_factory=list)
    restores: int = 0
    producers: list[FakeProducer] = field(default_factory=list)
    owned: set[int] = field(default_factory=lambda: {0})
    seeks: list[list[TopicPartition]] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    clock: Clock = field(default_factory=lambda: Clock())
    on_sleep: Callable[[], None] | None = None


class FakeCommitter:
    def __init__(self, broker: Broker, producer: FakeProducer) -> None:
        self._broker, self._task = broker, producer.task

    async def commit(self, outputs: BatchOutputs) -> FirstOffsets:
        broker = self._broker
        if broker.commit_failures:
            raise broker.commit_failures.pop(0)
        log = broker.changelog[self._task]
        first = len(log)
        log.extend((r.key or b"", r.value) for r in outputs.records if r.topic == CHANGELOG)
        broker.committed.update(outputs.offsets)
        broker.commits.append(outputs)
        return {(CHANGELOG, self._task): first} if len(log) > first else {}


class FakeConsumerPort:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        raise AssertionError("exactly-once commits offsets in the transaction")

    async def seek_committed(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self._broker.seeks.append(partitions)
        return {tp: self._broker.committed[tp] for tp in partitions if tp in self._broker.committed}

    def owns(self, task: int) -> bool:
        return task in self._broker.owned


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    world = Broker()
    real_sleep = asyncio.sleep

    async def task_producer(settings: Settings, instance_id: str, task: int) -> FakeProducer:
        producer = FakeProducer(task)
        world.producers.append(producer)
        return producer

    async def read_changelog(settings: Settings, starts: dict[int, int | None]) -> dict[int, Any]:
        world.restores += 1
        if world.restore_failures:
            raise world.restore_failures.pop(0)
        return {
            n: ChangelogTail(0, len(world.changelog[n]), list(world.changelog[n])) for n in starts
        }

    async def sleep(delay: float, result: Any = None) -> Any:
        world.sleeps.append(delay)
        if world.on_sleep is not None:
            world.on_sleep()
        await real_sleep(0)
        return result

    monkeypatch.setattr(tasks_module, "task_producer", task_producer)
    monkeypatch.setattr(tasks_module, "read_changelog", read_changelog)
    monkeypatch.setattr(
        tasks_module,
        "TransactionalCommitter",
        lambda producer, group_id, dead_letter_topic: FakeCommitter(world, producer),
    )
    monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.setattr(tasks_module, "RetryBudget", partial(RetryBudget, clock=world.clock))
    return world


@dataclass
class Setup:
    manager: TaskManager
    metrics: TrainerMetrics
    clock: Clock
    inputs: Inputs


async def started(broker: Broker) -> Setup:
    metrics = TrainerMetrics()
    manager = TaskManager(SETTINGS, metrics, "inst", FakeConsumerPort(broker))
    await manager.start()
    await manager.assign([0])
    return Setup(manager, metrics, broker.clock, Inputs())


async def feed(s: Setup, records: list[Rec]) -> None:
    task = s.manager.tasks[0]
    await s.manager.process(s.inputs.pending(records, generation=task.generation))


def versions_of(outputs: BatchOutputs, key: bytes) -> list[int]:
    return [
        msgspec.json.decode(r.value, type=ModelVersion).version
        for r in outputs.records
        if r.topic == MODELS and r.key == key and r.value is not None
    ]


def sample(metrics: TrainerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"stream_trainer_{name}", labels)
    return 0.0 if value is None else float(value)


# -- commit -------------------------------------------------------------------------------------


async def test_a_commit_falls_due_by_the_cache_bound_and_commits_once(broker: Broker) -> None:
    s = await started(broker)
    await feed(s, [s.inputs.obs("a", 1), s.inputs.obs("a", 2)])
    assert broker.commits == []  # 2 < cache_max_events and the interval has not run out
    due = s.manager.commit_due_in(0)
    assert due is not None and 0 < due <= 0.1
    await feed(s, [s.inputs.obs("a", 3), s.inputs.fb("r", 1, True)])
    assert len(broker.commits) == 1  # the fourth event made it due: committed in `process`
    [outputs] = broker.commits
    assert outputs.metrics.observations + outputs.metrics.feedback == 4
    assert ".." in outputs.metrics.batch_id  # one commit for both batches
    assert versions_of(outputs, b"a") == [1]
    task = s.manager.tasks[0]
    assert task.committed == {TopicPartition(OBS, 0): 3, TopicPartition(FB, 0): 1}
    assert s.manager.commit_due_in(0) is None
    await s.manager.commit(0)  # nothing pending: nothing to commit
    assert len(broker.commits) == 1
    assert sample(s.metrics, "transactions_total", result="committed") == 1


async def test_commit_publishes_what_is_pending_before_it_is_due(broker: Broker) -> None:
    s = await started(broker)
    await feed(s, [s.inputs.obs("a", 1)])
    await s.manager.commit(0)
    assert len(broker.commits) == 1
    assert s.manager.tasks[0].checkpoint.versions[MODELS].keys() == {b"a"}


# -- recovery -----------------------------------------------------------------------------------


async def committed_once(broker: Broker) -> Setup:
    s = await started(broker)
    await feed(s, [s.inputs.obs("a", 1), s.inputs.obs("a", 2)])
    await s.manager.commit(0)
    return s


async def test_a_retriable_failure_resets_the_task_from_the_changelog(broker: Broker) -> None:
    s = await committed_once(broker)
    old = s.manager.tasks[0]
    broker.commit_failures.append(KafkaError("transaction aborted", retriable=True))
    await feed(s, [s.inputs.obs("a", 3), s.inputs.obs("a", 4)])
    await s.manager.commit(0)

    task = s.manager.tasks[0]
    assert task is not old and task.generation == old.generation + 1 and not task.resetting
    assert old.producer is not None and old.producer.stopped
    assert len(broker.producers) == 2 and broker.restores == 2
    assert broker.seeks == [[TopicPartition(OBS, 0), TopicPartition(FB, 0)]]
    assert task.committed == {TopicPartition(OBS, 0): 2}
    assert task.checkpoint.versions == old.checkpoint.versions  # the committed ones only
    # The failure was retried under the budget, and the rebuild ended the streak.
    assert s.metrics.broker_retries.labels(cause="KafkaError")._value.get() == 1
    assert not s.manager.budgets[0].degraded
    assert sample(s.metrics, "transactions_total", result="aborted") == 1
    assert sample(s.metrics, "commit_failures_total") == 1

    # A batch of the old generation still queued is stale: its records are read again.
    await s.manager.process(s.inputs.pending([s.inputs.obs("a", 9)], generation=0))
    assert task.checkpoint.pending.empty
    s.inputs.next_offset[OBS] = 2  # read again from the committed offset
    await feed(s, [s.inputs.obs("a", 3), s.inputs.obs("a", 4)])
    await s.manager.commit(0)
    assert versions_of(broker.commits[-1], b"a") == [2]  # gapless: the failed one never was


async def test_a_failure_on_a_task_another_member_owns_drops_it(broker: Broker) -> None:
    s = await committed_once(broker)
    old = s.manager.tasks[0]
    broker.owned.clear()
    broker.commit_failures.append(TaskFencedError("producer fenced"))
    await feed(s, [s.inputs.obs("a", 3)])
    await s.manager.commit(0)
    assert 0 not in s.manager.tasks
    assert old.producer is not None and old.producer.stopped
    assert len(broker.producers) == 1 and broker.restores == 1 and broker.seeks == []
    assert sample(s.metrics, "transactions_total", result="fenced") == 1


async def test_a_non_retriable_failure_is_raised(broker: Broker) -> None:
    s = await committed_once(broker)
    broker.commit_failures.append(DeadLetterError("cannot write to dead-letter topic"))
    await feed(s, [s.inputs.raw(OBS, b"a", b"{")])
    with pytest.raises(DeadLetterError):
        await s.manager.commit(0)
    assert broker.restores == 1 and len(broker.producers) == 1  # no reset


async def reset_through_restore_failures(
    broker: Broker, failures: int
) -> tuple[Setup, list[list[str]]]:
    """A retriable commit failure, then `failures` failed restores before one works."""
    s = await committed_once(broker)
    broker.commit_failures.append(KafkaError("transaction aborted", retriable=True))
    broker.restore_failures.extend(
        KafkaError(f"changelog restore failed #{i}", retriable=True) for i in range(failures)
    )
    degraded: list[list[str]] = []

    def while_sleeping() -> None:
        degraded.append(s.manager.degraded)
        s.clock.now += broker.sleeps[-1]

    broker.on_sleep = while_sleeping
    await feed(s, [s.inputs.obs("a", 3)])
    await s.manager.commit(0)
    return s, degraded


async def test_restore_failing_while_the_broker_is_down_is_retried_with_backoff(
    broker: Broker,
) -> None:
    s, degraded = await reset_through_restore_failures(broker, 3)
    assert broker.restores == 1 + 4 and 0 in s.manager.tasks
    # Attempt 1 was the commit; each failed restore waits the backoff of the next attempt.
    assert len(broker.sleeps) == 3
    for attempt, delay in enumerate(broker.sleeps, start=2):
        nominal = 0.1 * 2 ** (attempt - 1)
        assert nominal / 2 <= delay <= nominal
    for i, reasons in enumerate(degraded):
        assert len(reasons) == 1 and reasons[0].startswith("task 0 waiting on the broker")
        assert f"changelog restore failed #{i}" in reasons[0]
    assert sample(s.metrics, "broker_retries_total", cause="KafkaError") == 4
    assert s.manager.tasks[0].checkpoint.versions[MODELS].keys() == {b"a"}


async def test_a_task_rebuilt_after_the_broker_came_back_is_no_longer_degraded(
    broker: Broker,
) -> None:
    s, _ = await reset_through_restore_failures(broker, 2)
    assert s.manager.degraded == [], "readiness still says the task waits on the broker"


async def test_a_failure_after_a_successful_reset_starts_a_new_streak(broker: Broker) -> None:
    s, _ = await reset_through_restore_failures(broker, 2)
    s.clock.now += SETTINGS.broker_timeout_s + 1  # a quiet task: no commit for a while
    broker.commit_failures.append(KafkaError("transaction aborted", retriable=True))
    s.inputs.next_offset[OBS] = 2
    await feed(s, [s.inputs.obs("a", 3)])
    await s.manager.commit(0)  # must reset again, not give up on the broker
    assert 0 in s.manager.tasks


async def test_restore_failing_past_the_broker_timeout_is_fatal(broker: Broker) -> None:
    s = await committed_once(broker)
    broker.commit_failures.append(KafkaError("transaction aborted", retriable=True))
    broker.restore_failures.extend(
        KafkaError("changelog restore failed", retriable=True) for _ in range(1000)
    )

    def advance() -> None:
        s.clock.now += broker.sleeps[-1]

    broker.on_sleep = advance
    await feed(s, [s.inputs.obs("a", 3)])
    with pytest.raises(BrokerUnavailableError, match="task 0"):
        await s.manager.commit(0)
    assert sum(broker.sleeps) == pytest.approx(SETTINGS.broker_timeout_s)


async def test_producers_of_failed_restore_attempts_are_stopped(broker: Broker) -> None:
    s, _ = await reset_through_restore_failures(broker, 2)
    live = s.manager.tasks[0].producer
    leaked = [p for p in broker.producers if p is not live and not p.stopped]
    assert leaked == [], f"{len(leaked)} transactional producers left running"


async def test_a_reset_stops_retrying_once_the_task_is_no_longer_owned(broker: Broker) -> None:
    # Re-creating the producer of a task another member owns would fence the rightful owner.
    s = await committed_once(broker)
    broker.commit_failures.append(KafkaError("transaction aborted", retriable=True))
    broker.restore_failures.extend(
        KafkaError("changelog restore failed", retriable=True) for _ in range(2)
    )
    producers_when_lost: list[int] = []

    def revoke() -> None:
        broker.owned.clear()
        producers_when_lost.append(len(broker.producers))

    broker.on_sleep = revoke
    await feed(s, [s.inputs.obs("a", 3)])
    await s.manager.commit(0)
    assert len(broker.producers) == producers_when_lost[0]
    assert 0 not in s.manager.tasks


async def test_stop_drops_every_task_and_stops_its_producer(broker: Broker) -> None:
    s = await started(broker)
    await s.manager.assign([0, 1])
    await s.manager.stop()
    assert s.manager.tasks == {}
    assert [p.stopped for p in broker.producers] == [True, True]


# -- assignment while the broker is away ----------------------------------------------------


async def test_an_assignment_whose_restore_fails_is_retried_until_the_broker_is_back(
    broker: Broker,
) -> None:
    metrics = TrainerMetrics()
    manager = TaskManager(SETTINGS, metrics, "inst", FakeConsumerPort(broker))
    await manager.start()
    broker.restore_failures.extend(
        KafkaError(f"changelog restore failed #{i}", retriable=True) for i in range(3)
    )
    degraded: list[list[str]] = []

    def while_sleeping() -> None:
        degraded.append(manager.degraded)
        broker.clock.now += broker.sleeps[-1]

    broker.on_sleep = while_sleeping
    await manager.assign_with_retry([0, 1])
    assert sorted(manager.tasks) == [0, 1] and broker.restores == 4
    for attempt, delay in enumerate(broker.sleeps, start=1):
        nominal = 0.1 * 2 ** (attempt - 1)
        assert nominal / 2 <= delay <= nominal
    assert [len(d) for d in degraded] == [1, 1, 1]
    for i, reasons in enumerate(degraded):
        assert reasons[0].startswith("assignment waiting on the broker")
        assert f"changelog restore failed #{i}" in reasons[0]
    assert manager.degraded == [] and manager.budgets == {}
    assert not manager.restoring
    live = {id(t.producer) for t in manager.tasks.values()}
    assert all(p.stopped for p in broker.producers if id(p) not in live)  # no producer leaks
    assert sample(metrics, "broker_unavailable_seconds_total") == pytest.approx(sum(broker.sleeps))


async def test_an_assignment_failing_past_the_broker_timeout_is_fatal(broker: Broker) -> None:
    manager = TaskManager(SETTINGS, TrainerMetrics(), "inst", FakeConsumerPort(broker))
    await manager.start()
    broker.restore_failures.extend(
        KafkaError("changelog restore failed", retriable=True) for _ in range(1000)
    )

    def advance() -> None:
        broker.clock.now += broker.sleeps[-1]

    broker.on_sleep = advance
    with pytest.raises(BrokerUnavailableError, match="assignment"):
        await manager.assign_with_retry([0])
    assert manager.tasks == {} and manager.budgets == {}
    assert all(p.stopped for p in broker.producers)


async def test_an_assignment_failing_for_good_is_raised_at_once(broker: Broker) -> None:
    manager = TaskManager(SETTINGS, TrainerMetrics(), "inst", FakeConsumerPort(broker))
    await manager.start()
    broker.restore_failures.append(KafkaError("topic authorization failed", retriable=False))
    with pytest.raises(KafkaError, match="authorization"):
        await manager.assign_with_retry([0])
    assert broker.sleeps == [] and manager.tasks == {}


async def test_restore_decodes_and_loads_off_the_event_loop(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large restore must not stall heartbeats, /healthz or the other tasks."""
    loop_thread = threading.get_ident()
    threads: list[int] = []
    restore = TaskState.restore

    def spy(self: TaskState, records: Any) -> int:
        threads.append(threading.get_ident())
        return restore(self, records)

    monkeypatch.setattr(TaskState, "restore", spy)
    await started(broker)
    assert threads and loop_thread not in threads
