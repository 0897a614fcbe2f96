"""Tasks: the unit of state ownership (one input partition number) and their lifecycle.

On assignment a task gets its producer (under exactly-once a transactional one with the
stable id ``{application_id}-task-{n}``, whose start fences any zombie and settles its open
transaction) and then restores its state from the changelog, in that order so the restore
sees everything the previous owner committed. A task whose commit fails (fenced, broker
gone, rebalance mid-transaction) is *reset*: its in-memory state is dropped, restored from
the changelog, and its input partitions are sought back to their committed offsets, so
nothing is applied twice (aiokafka #844/#929/#1046).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.batching import PendingBatch, decode_batch
from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError, TaskFencedError
from stream_trainer.events import utc_now
from stream_trainer.kafka.clients import client_options
from stream_trainer.kafka.restore import read_changelog
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.publishing import (
    AtLeastOnceCommitter,
    BatchOutputs,
    Committer,
    TransactionalCommitter,
    build_outputs,
)
from stream_trainer.state import AppliedBatch, TaskState

log = logging.getLogger(__name__)

# Below this many records a batch is decoded and learned on the loop: a thread hop costs more.
INLINE_BATCH_RECORDS = 64


@dataclass(slots=True)
class Task:
    number: int
    state: TaskState
    committer: Committer
    producer: AIOKafkaProducer | None  # the task's own, under exactly-once
    generation: int = 0
    resetting: bool = False
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    status_counts: dict[str, int] = field(default_factory=dict)
    status_refreshed_at: float = float("-inf")


def producer_options(settings: Settings) -> dict[str, object]:
    return {
        **client_options(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
    }


class TaskManager:
    """Creates, processes, resets and drops the tasks assigned to this process."""

    def __init__(
        self,
        settings: Settings,
        metrics: TrainerMetrics,
        instance_id: str,
        commit_offsets: Callable[[dict[TopicPartition, int]], Awaitable[None]],
        seek_committed: Callable[[list[TopicPartition]], Awaitable[None]],
        still_assigned: Callable[[int], bool],
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._instance_id = instance_id
        self._commit_offsets = commit_offsets
        self._seek_committed = seek_committed
        self._still_assigned = still_assigned
        self._shared_producer: AIOKafkaProducer | None = None
        self.tasks: dict[int, Task] = {}
        self.restoring = False
        # Caps decode+learn only: a task waiting on its transaction must not hold a slot.
        self._cpu_slots = asyncio.Semaphore(settings.workers)

    async def start(self) -> None:
        if not self._settings.exactly_once:
            self._shared_producer = AIOKafkaProducer(**producer_options(self._settings))
            await _start_producer(self._shared_producer)

    async def stop(self) -> None:
        for number in list(self.tasks):
            await self.drop(number)
        if self._shared_producer is not None:
            await self._shared_producer.stop()
            self._shared_producer = None

    def input_partitions(self, number: int) -> list[TopicPartition]:
        s = self._settings
        return [
            TopicPartition(s.topic_observations, number),
            TopicPartition(s.topic_feedback, number),
        ]

    async def assign(self, numbers: list[int]) -> None:
        """Create and restore tasks (producers first, so zombies are fenced before restore)."""
        new = [n for n in numbers if n not in self.tasks]
        if not new:
            return
        self.restoring = True
        started = time.monotonic()
        try:
            producers = {n: await self._task_producer(n) for n in new}
            restored = await read_changelog(self._settings, new)
            for n in new:
                state = TaskState(self._settings)
                count = state.restore(restored.get(n, []))
                self.tasks[n] = Task(n, state, self._committer(producers[n]), producers[n])
                log.info("task %d assigned: restored %d models", n, count)
        finally:
            self.restoring = False
        self._metrics.state_restore.observe(time.monotonic() - started)

    async def drop(self, number: int) -> None:
        """Forget a task (revoked or shutting down): its state lives on in the changelog."""
        task = self.tasks.pop(number, None)
        if task is not None and task.producer is not None:
            await _stop_quietly(task.producer, number)

    async def reset(self, number: int, cause: BaseException) -> None:
        """Abandon a task's in-memory state after a failed commit and rebuild it."""
        task = self.tasks.get(number)
        if task is None:
            return
        task.resetting = True
        task.generation += 1
        log.warning("task %d reset after %r: restoring from the changelog", number, cause)
        await self.drop(number)
        await self.assign([number])
        replacement = self.tasks[number]
        replacement.generation = task.generation
        replacement.resetting = True
        try:
            await self._seek_committed(self.input_partitions(number))
        finally:
            replacement.resetting = False

    async def process(self, pending: PendingBatch) -> None:
        """Decode, learn and commit one batch (the pool calls this, in order per task)."""
        task = self.tasks.get(pending.task)
        if task is None or task.resetting or task.generation != pending.generation:
            return  # stale: its records will be read again from the committed offsets
        started = time.monotonic()
        applied = await self._apply(task, pending)
        learned = time.monotonic() - started
        outputs = build_outputs(applied, self._settings, self._instance_id, learned)
        try:
            await task.committer.commit(outputs)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            result = "fenced" if isinstance(exc, TaskFencedError) else "aborted"
            self._metrics.transactions.labels(result=result).inc()
            self._metrics.commit_failures.inc()
            if self._still_assigned(pending.task):
                await self.reset(pending.task, exc)
            else:
                # Another member owns it now; re-initialising our producer would fence
                # the rightful owner. Our rebalance listener will revoke it.
                log.warning("task %d lost to another member: dropping it", pending.task)
                await self.drop(pending.task)
            return
        task.committed.update(outputs.offsets)
        self._record(applied, outputs, time.monotonic() - started)
        await self._refresh_status_counts(task)

    async def _refresh_status_counts(self, task: Task) -> None:
        """Recount rules by status, from the task's own worker so no batch races it."""
        now = time.monotonic()
        if now - task.status_refreshed_at < self._settings.summary_interval_s:
            return
        task.status_refreshed_at = now
        task.status_counts = await asyncio.to_thread(task.state.trust.status_counts)

    async def _apply(self, task: Task, pending: PendingBatch) -> AppliedBatch:
        def work() -> AppliedBatch:
            batch = decode_batch(pending, self._settings.max_event_bytes)
            return task.state.apply(batch, utc_now())

        if len(pending) < INLINE_BATCH_RECORDS:
            return work()
        async with self._cpu_slots:
            return await asyncio.to_thread(work)

    def _committer(self, producer: AIOKafkaProducer | None) -> Committer:
        s = self._settings
        if producer is not None:
            return TransactionalCommitter(producer, s.application_id, s.topic_dead_letter)
        assert self._shared_producer is not None
        return AtLeastOnceCommitter(
            self._shared_producer, self._commit_offsets, s.topic_dead_letter
        )

    async def _task_producer(self, number: int) -> AIOKafkaProducer | None:
        if not self._settings.exactly_once:
            return None
        producer = AIOKafkaProducer(
            **producer_options(self._settings),
            transactional_id=f"{self._settings.application_id}-task-{number}",
            client_id=f"{self._instance_id}-task-{number}",
        )
        await _start_producer(producer)
        return producer

    def _record(self, applied: AppliedBatch, outputs: BatchOutputs, seconds: float) -> None:
        m = self._metrics
        batch = applied.batch
        m.batch_events.observe(batch.input_records)
        m.batch_duration.observe(seconds)
        if self._settings.exactly_once:
            m.transactions.labels(result="committed").inc()
        for reason, count in Counter(inv.reason for inv in applied.invalid).items():
            m.events_invalid.labels(reason=reason).inc(count)
        m.versions_published.labels(kind="rule").inc(len(applied.rule_versions))
        m.versions_published.labels(kind="model").inc(len(applied.model_versions))
        for rv in applied.rule_versions:
            m.rule_trust.observe(rv.trust)
        for mv in applied.model_versions:
            if mv.skill is not None:
                m.forecast_skill.observe(mv.skill)
        age_ms = outputs.metrics.max_event_age_ms
        if age_ms > 0:
            m.event_age.observe(age_ms / 1000.0)


async def _start_producer(producer: AIOKafkaProducer) -> None:
    try:
        await producer.start()
    except AioKafkaError as exc:
        await producer.stop()
        raise KafkaError(f"cannot start producer: {exc!r}", retriable=True) from exc


async def _stop_quietly(producer: AIOKafkaProducer, number: int) -> None:
    try:
        await producer.stop()
    except AioKafkaError:
        # The task is being dropped; its open transaction (if any) is aborted by the
        # coordinator or fenced by the next owner, so nothing can leak out of it.
        log.warning("task %d: producer did not stop cleanly", number, exc_info=True)
