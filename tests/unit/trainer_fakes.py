"""A tiny in-memory "broker" and the patched seams for unit tests of `service.Trainer`.

`World` holds the input partitions' logs (for `fake_consumer.FakeConsumer`), committed
offsets, changelog and commits. The `world` fixture patches the trainer's other seams:
topics, kernel warm-up, the task producers, the changelog reader and the committer (as in
test_tasks.py).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from aiokafka import TopicPartition

from stream_trainer import retry
from stream_trainer import service as service_module
from stream_trainer import tasks as tasks_module
from stream_trainer.aio import cancel_and_wait
from stream_trainer.batching import PendingBatch
from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.events import ModelVersion
from stream_trainer.kafka.admin import Topology
from stream_trainer.kafka.restore import ChangelogTail
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.publishing import BatchOutputs, FirstOffsets
from stream_trainer.service import Collaborators, Trainer
from stream_trainer.tasks import TaskManager
from tests.unit.core_fakes import FakeProducer as SharedProducer
from tests.unit.core_fakes import Inputs, Rec
from tests.unit.fake_consumer import FakeConsumer

SETTINGS = Settings(
    max_batch_linger_ms=1,
    commit_interval_ms=1,
    broker_timeout_s=30.0,
    worker_concurrency=1,
    summary_interval_s=60.0,
)
HOLD = msgspec.structs.replace(SETTINGS, commit_interval_ms=60_000)  # commits only on demand
OBS = SETTINGS.topic_observations
FB = SETTINGS.topic_feedback
CHANGELOG = SETTINGS.changelog_topic
MODELS = SETTINGS.topic_model_versions


def tps(task: int) -> set[TopicPartition]:
    return {TopicPartition(OBS, task), TopicPartition(FB, task)}


@dataclass
class TaskProducer:
    task: int
    world: World
    stopped: bool = False

    async def stop(self) -> None:
        self.stopped = True
        self.world.events.append(f"producer {self.task} stopped")


@dataclass
class World:
    """The broker the fakes share, and what they saw."""

    partitions: int = 2
    logs: dict[TopicPartition, list[Rec | None]] = field(default_factory=lambda: defaultdict(list))
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    changelog: dict[int, list[tuple[bytes, bytes | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    commits: list[tuple[int, BatchOutputs]] = field(default_factory=list)
    commit_failures: list[KafkaError] = field(default_factory=list)
    producer_error: BaseException | None = None
    producers: list[TaskProducer] = field(default_factory=list)
    shared: list[SharedProducer] = field(default_factory=list)
    consumers: list[FakeConsumer] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    inputs: dict[int, Inputs] = field(default_factory=dict)
    topology_error: BaseException | None = None
    consumer_errors: dict[str, BaseException] = field(default_factory=dict)  # for new ones
    on_restore: Callable[[], None] | None = None
    concurrent_assign: bool = False

    # -- input records --------------------------------------------------------------------

    def feed(self, task: int) -> Inputs:
        return self.inputs.setdefault(task, Inputs(task))

    def append(self, *records: Rec) -> None:
        for r in records:
            log_ = self.logs[TopicPartition(r.topic, r.partition)]
            assert r.offset == len(log_), "records are appended in offset order"
            log_.append(r)
        for consumer in self.consumers:
            consumer.wakeup.set()

    def marker(self, tp: TopicPartition) -> None:
        """A transaction marker (commit/abort): an offset that holds no record."""
        inputs = self.feed(tp.partition)
        inputs.next_offset[tp.topic] = inputs.next_offset.get(tp.topic, 0) + 1
        self.logs[tp].append(None)

    def end(self, tp: TopicPartition) -> int:
        return len(self.logs[tp])

    # -- what the trainer builds ----------------------------------------------------------

    @property
    def consumer(self) -> FakeConsumer:
        return self.consumers[-1]

    def new_consumer(self, settings: Settings, instance_id: str) -> Any:
        consumer = FakeConsumer(self, concurrent_assign=self.concurrent_assign)
        consumer.errors.update(self.consumer_errors)
        self.consumers.append(consumer)
        return consumer

    def trainer(
        self,
        settings: Settings = SETTINGS,
        *,
        until_end: bool = False,
        serve_http: bool = False,
        processor: Callable[[TaskManager], Any] | None = None,
    ) -> Trainer:
        parts = (
            Collaborators(consumer=self.new_consumer)
            if processor is None
            else Collaborators(consumer=self.new_consumer, processor=processor)
        )
        metrics = TrainerMetrics()
        return Trainer(settings, metrics, until_end=until_end, serve_http=serve_http, parts=parts)

    # -- what was committed ---------------------------------------------------------------

    def versions(self, key: bytes) -> list[int]:
        """Published versions of a model, over every commit in order."""
        return [
            msgspec.json.decode(r.value, type=ModelVersion).version
            for _, outputs in self.commits
            for r in outputs.records
            if r.topic == MODELS and r.key == key and r.value is not None
        ]

    def learned(self) -> int:
        """Input events learned by the successful commits."""
        return sum(o.metrics.observations + o.metrics.feedback for _, o in self.commits)


class FakeCommitter:
    def __init__(self, world: World, task: int) -> None:
        self._world, self._task = world, task

    async def commit(self, outputs: BatchOutputs) -> FirstOffsets:
        world = self._world
        if world.commit_failures:
            world.events.append(f"commit {self._task} failed")
            raise world.commit_failures.pop(0)
        log_ = world.changelog[self._task]
        first = len(log_)
        log_.extend((r.key or b"", r.value) for r in outputs.records if r.topic == CHANGELOG)
        world.committed.update(outputs.offsets)
        world.commits.append((self._task, outputs))
        world.events.append(f"commit {self._task}")
        return {(CHANGELOG, self._task): first} if len(log_) > first else {}


class Gated:
    """A processor whose batches of one task wait until `gate` is set (a slow task)."""

    def __init__(self, inner: TaskManager, task: int) -> None:
        self.inner, self.task, self.gate = inner, task, asyncio.Event()

    async def process(self, batch: PendingBatch) -> None:
        if batch.task == self.task:
            await self.gate.wait()
        await self.inner.process(batch)

    def commit_due_in(self, task: int) -> float | None:
        return self.inner.commit_due_in(task)

    async def commit(self, task: int) -> None:
        await self.inner.commit(task)


class SpinGuard:
    """A processor that stops a pool worker asking `commit_due_in` without end.

    A worker that never awaits starves the event loop: nothing else runs again (no fetch,
    no /healthz, no stop). Past `limit` questions the worker ends as if cancelled, so the
    test goes on to report it (an error would only surface when the task is collected).
    """

    def __init__(self, inner: TaskManager, limit: int = 10_000) -> None:
        self.inner, self.limit, self.asked = inner, limit, 0

    async def process(self, batch: PendingBatch) -> None:
        await self.inner.process(batch)

    def commit_due_in(self, task: int) -> float | None:
        self.asked += 1
        if self.asked > self.limit:
            raise asyncio.CancelledError(f"task {task}'s worker spun")
        return self.inner.commit_due_in(task)

    async def commit(self, task: int) -> None:
        await self.inner.commit(task)


@pytest.fixture(params=["inline", "concurrent"])
def world(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> World:
    """Every trainer test runs with the assignment listener inside getmany (simple) and
    beside it (as aiokafka does)."""
    w = World(concurrent_assign=request.param == "concurrent")

    async def prepare_topics(settings: Settings) -> Topology:
        if w.topology_error is not None:
            raise w.topology_error
        return Topology(w.partitions)

    async def task_producer(settings: Settings, instance_id: str, task: int) -> TaskProducer | None:
        if w.producer_error is not None:
            raise w.producer_error
        if not settings.exactly_once:
            return None
        producer = TaskProducer(task, w)
        w.producers.append(producer)
        return producer

    async def start_producer(settings: Settings, **overrides: object) -> SharedProducer:
        producer = SharedProducer(w.partitions)
        w.shared.append(producer)
        return producer

    async def read_changelog(settings: Settings, starts: dict[int, int | None]) -> dict[int, Any]:
        if w.on_restore is not None:
            w.on_restore()
        return {n: ChangelogTail(0, len(w.changelog[n]), list(w.changelog[n])) for n in starts}

    def committer(producer: TaskProducer, group_id: str, dead_letter_topic: str) -> FakeCommitter:
        return FakeCommitter(w, producer.task)

    monkeypatch.setattr(service_module, "prepare_topics", prepare_topics)
    monkeypatch.setattr(service_module, "warm_up", lambda: None)
    monkeypatch.setattr(tasks_module, "task_producer", task_producer)
    monkeypatch.setattr(tasks_module, "start_producer", start_producer)
    monkeypatch.setattr(tasks_module, "read_changelog", read_changelog)
    monkeypatch.setattr(tasks_module, "TransactionalCommitter", committer)
    monkeypatch.setattr(retry, "INITIAL_BACKOFF_S", 0.001)  # retries without real waits
    return w


async def until(trainer: Trainer, condition: Callable[[], bool], what: str) -> None:
    """Wait for a condition while the trainer runs; its failure is raised, not waited out."""
    waiter = asyncio.create_task(trainer.wait())
    deadline = asyncio.get_running_loop().time() + 3.0
    try:
        while not condition():
            if waiter.done():
                waiter.result()
                raise AssertionError(f"the trainer ended before {what}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.001)
    finally:
        await cancel_and_wait(waiter)


async def calls(trainer: Trainer, consumer: FakeConsumer, n: int) -> None:
    """Let the consume loop run `n` more getmany calls."""
    target = consumer.getmany_calls + n
    await until(trainer, lambda: consumer.getmany_calls >= target, f"{n} more fetches")


def fill(world: World) -> dict[TopicPartition, int]:
    """Three observations for task 0, two feedback records for task 1; the end offsets."""
    t0, t1 = world.feed(0), world.feed(1)
    world.append(t0.obs("a", 1), t0.obs("a", 2), t0.obs("b", 3))
    world.append(t1.fb("r", 1, True), t1.fb("r", 2, False))
    return {TopicPartition(OBS, 0): 3, TopicPartition(FB, 1): 2}


def pending_events(trainer: Trainer, task: int) -> int:
    owned = trainer._tasks.tasks.get(task)
    return 0 if owned is None else owned.checkpoint.pending.events


async def stopped(trainer: Trainer) -> None:
    """Stop as `run` does on SIGTERM: wait() returns, then stop() drains."""
    waiter = asyncio.create_task(trainer.wait())
    trainer.request_stop()
    await asyncio.wait_for(waiter, 3.0)
    await trainer.stop()
