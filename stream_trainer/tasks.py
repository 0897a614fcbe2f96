"""Tasks: the unit of state ownership (one input partition number) and their lifecycle.

On assignment a task gets its producer (under exactly-once a transactional one with the
stable id ``{application_id}-task-{n}``, whose start fences any zombie and settles its open
transaction) and then restores its state from the changelog, in that order so the restore
sees everything the previous owner committed. A task whose commit fails (fenced, broker
gone, rebalance mid-transaction) is *reset*: its in-memory state is dropped, restored from
the changelog, and its input partitions are sought back to their committed offsets, so
nothing is applied twice (aiokafka #844/#929/#1046). While the broker is unreachable the
reset is retried under the task's `RetryBudget`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition

from stream_trainer.batching import PendingBatch, decode_batch
from stream_trainer.checkpoint import Checkpoint, CommitFailed
from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError, StreamTrainerError, TaskFencedError
from stream_trainer.kafka.group import input_partitions
from stream_trainer.kafka.producers import abandon, start_producer, stop_quietly, task_producer
from stream_trainer.kafka.restore import ChangelogRecords, read_changelog
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.ops.recorder import record_commit
from stream_trainer.publishing import AtLeastOnceCommitter, Committer, TransactionalCommitter
from stream_trainer.retry import RetryBudget
from stream_trainer.snapshot import Snapshot, SnapshotStore
from stream_trainer.state import LearnedBatch, TaskState

log = logging.getLogger(__name__)

# Below this many records a batch is decoded and learned on the loop: a thread hop costs more.
INLINE_BATCH_RECORDS = 64


class ConsumerPort(Protocol):
    """What tasks need of the group consumer (the trainer implements it)."""

    async def commit_offsets(self, offsets: dict[TopicPartition, int]) -> None: ...

    async def seek_committed(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Rewind owned partitions to their committed offsets; returns those found."""
        ...

    def owns(self, task: int) -> bool: ...


@dataclass(slots=True)
class Task:
    number: int
    state: TaskState
    checkpoint: Checkpoint
    producer: AIOKafkaProducer | None  # the task's own, under exactly-once
    generation: int = 0
    resetting: bool = False
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    summarised_at: float = float("-inf")
    snapshot_at: float = float("-inf")

    @property
    def committed(self) -> dict[TopicPartition, int]:
        return self.checkpoint.committed


class TaskManager:
    """Creates, processes, commits, resets and drops the tasks assigned to this process."""

    def __init__(
        self,
        settings: Settings,
        metrics: TrainerMetrics,
        instance_id: str,
        consumer: ConsumerPort,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._instance_id = instance_id
        self._consumer = consumer
        self._shared_producer: AIOKafkaProducer | None = None
        self.tasks: dict[int, Task] = {}
        self.budgets: dict[int, RetryBudget] = {}
        self.restoring = False
        self._snapshots = (
            SnapshotStore(settings.state_dir, settings.application_id)
            if settings.state_dir
            else None
        )
        # Caps decode+learn only: a task waiting on its transaction must not hold a slot.
        self._cpu_slots = asyncio.Semaphore(settings.workers)

    async def start(self) -> None:
        if not self._settings.exactly_once:
            self._shared_producer = await start_producer(self._settings)

    async def stop(self, *, abandon_producers: bool = False) -> None:
        """Drop every task; with `abandon_producers` (broker away) without delivering."""
        if abandon_producers:
            for number, task in list(self.tasks.items()):
                if task.producer is not None:
                    await abandon(task.producer, f"task {number}")
                del self.tasks[number]
        for number in list(self.tasks):
            await self.drop(number)
        if self._shared_producer is not None:
            if abandon_producers:
                await abandon(self._shared_producer, "shared")
            else:
                await stop_quietly(self._shared_producer, "shared")
            self._shared_producer = None

    def input_partitions(self, number: int) -> list[TopicPartition]:
        return input_partitions(self._settings, number)

    @property
    def degraded(self) -> list[str]:
        """Why tasks are waiting on the broker (empty when none is)."""
        return [
            f"{b.name} waiting on the broker ({b.attempts} attempts): {b.cause}"
            for _, b in sorted(self.budgets.items())
            if b.degraded
        ]

    # -- assignment -----------------------------------------------------------------------

    async def assign(self, numbers: list[int]) -> None:
        """Create and restore tasks (producers first, so zombies are fenced before restore)."""
        new = [n for n in numbers if n not in self.tasks]
        if not new:
            return
        self.restoring = True
        started = time.monotonic()
        producers: dict[int, AIOKafkaProducer | None] = {}
        try:
            for n in new:
                producers[n] = await task_producer(self._settings, self._instance_id, n)
            await self._restore(new, producers)
        except BaseException:
            for n, producer in producers.items():
                if n not in self.tasks and producer is not None:
                    await stop_quietly(producer, f"task {n}")
            raise
        finally:
            self.restoring = False
        self._metrics.state_restore.observe(time.monotonic() - started)

    async def _restore(self, new: list[int], producers: dict[int, AIOKafkaProducer | None]) -> None:
        snapshots = {n: await self._load_snapshot(n) for n in new}
        starts = {n: snap.changelog_offset if snap else None for n, snap in snapshots.items()}
        tails = await read_changelog(self._settings, starts)
        for n in new:
            snap = snapshots[n] if tails[n].start == starts[n] else None
            records = (snap.records if snap else []) + tails[n].records
            self.tasks[n] = await self._restored_task(n, producers[n], records)
            log.info(
                "task %d assigned: %d keys from %d changelog records%s",
                n,
                sum(self.tasks[n].state.model_counts.values()),
                len(tails[n].records),
                " after a local snapshot" if snap else "",
            )

    async def assign_with_retry(self, numbers: list[int]) -> None:
        """`assign`, retrying retriable failures (broker away) under the retry budget."""
        budget = RetryBudget(self._settings.broker_timeout_s, "assignment", metrics=self._metrics)
        self.budgets[-1] = budget
        try:
            while True:
                try:
                    await self.assign(numbers)
                    break
                except KafkaError as exc:
                    for n in numbers:
                        await self.drop(n)
                    await asyncio.sleep(budget.failed(exc))
            budget.succeeded()
        finally:
            del self.budgets[-1]

    async def _restored_task(
        self, number: int, producer: AIOKafkaProducer | None, records: ChangelogRecords
    ) -> Task:
        state = TaskState(self._settings, keep_records=self._snapshots is not None)
        # Decoding and loading is CPU work: in a thread, so heartbeats and /healthz go on.
        await asyncio.to_thread(state.restore, records)
        checkpoint = Checkpoint(number, state, self._committer(producer))
        checkpoint.hold_versions(await asyncio.to_thread(state.current_versions))
        return Task(number, state, checkpoint, producer)

    async def _load_snapshot(self, number: int) -> Snapshot | None:
        if self._snapshots is None:
            return None
        return await asyncio.to_thread(self._snapshots.load, number)

    async def _maybe_snapshot(self, task: Task) -> None:
        """Write the task's snapshot after a commit, at most every snapshot interval."""
        offset = task.checkpoint.changelog_offset
        if self._snapshots is None or task.state.records is None or offset is None:
            return
        now = time.monotonic()
        if now - task.snapshot_at < self._settings.snapshot_interval_s:
            return
        task.snapshot_at = now
        await asyncio.to_thread(self._snapshots.save, task.number, offset, task.state.records)

    async def drop(self, number: int) -> None:
        """Forget a task (revoked or shutting down): its state lives on in the changelog."""
        task = self.tasks.pop(number, None)
        if task is not None and task.producer is not None:
            await stop_quietly(task.producer, f"task {number}")

    # -- processing -----------------------------------------------------------------------

    async def process(self, pending: PendingBatch) -> None:
        """Decode and learn one batch, then commit if due (in order per task, by the pool)."""
        task = self.tasks.get(pending.task)
        if task is None or task.resetting or task.generation != pending.generation:
            return  # stale: its records will be read again from the committed offsets
        started = time.monotonic()
        learned = await self._learn(task, pending)
        task.checkpoint.add(learned, time.monotonic() - started)
        if self.commit_due_in(pending.task) == 0.0:
            await self.commit(pending.task)

    def commit_due_in(self, number: int) -> float | None:
        task = self.tasks.get(number)
        if task is None or task.resetting:
            return None
        return task.checkpoint.due_in(self._settings, time.monotonic())

    async def commit(self, number: int) -> None:
        """Publish and commit a task's pending work now (interval due, drain, revoke)."""
        task = self.tasks.get(number)
        if task is None or task.resetting or task.checkpoint.pending.empty:
            return
        started = time.monotonic()
        async with self._cpu_slots:
            outputs = await asyncio.to_thread(
                task.checkpoint.prepare, self._settings, self._instance_id
            )
        try:
            await task.checkpoint.commit(outputs, self._settings.changelog_topic)
        except CommitFailed as exc:
            await self._recover(task, exc)
            return
        self._succeeded(number)
        await self._maybe_snapshot(task)
        record_commit(self._metrics, outputs, time.monotonic() - started, self._settings)
        await self._refresh_summaries(task)

    async def _learn(self, task: Task, pending: PendingBatch) -> LearnedBatch:
        def work() -> LearnedBatch:
            batch = decode_batch(pending, self._settings.max_event_bytes)
            return task.state.learn(batch)

        if len(pending) < INLINE_BATCH_RECORDS:
            return work()
        async with self._cpu_slots:
            return await asyncio.to_thread(work)

    async def _refresh_summaries(self, task: Task) -> None:
        """Recompute the learners' gauges, from the task's own worker so no batch races it."""
        now = time.monotonic()
        if now - task.summarised_at < self._settings.summary_interval_s:
            return
        task.summarised_at = now
        task.summaries = await asyncio.to_thread(task.state.summaries)

    # -- recovery -------------------------------------------------------------------------

    async def _recover(self, task: Task, failure: CommitFailed) -> None:
        cause = failure.cause
        if not cause.retriable:
            raise cause
        if self._settings.exactly_once:
            result = "fenced" if isinstance(cause, TaskFencedError) else "aborted"
            self._metrics.transactions.labels(result=result).inc()
        self._metrics.commit_failures.inc()
        if not self._consumer.owns(task.number):
            # Another member owns it now; re-initialising our producer would fence
            # the rightful owner. Our rebalance listener will revoke it.
            log.warning("task %d lost to another member: dropping it", task.number)
            await self.drop(task.number)
            return
        await self.reset(task.number, cause)

    async def reset(self, number: int, cause: BaseException) -> None:
        """Abandon a task's in-memory state after a failed commit and rebuild it."""
        task = self.tasks.get(number)
        if task is None:
            return
        task.resetting = True
        generation = task.generation + 1
        log.info("task %d reset after %r: restoring from the changelog", number, cause)
        budget = self.budgets.setdefault(number, self._new_budget(number))
        if isinstance(cause, StreamTrainerError):
            budget.failed(cause)
        while True:
            if not self._consumer.owns(number):
                # Revoked while we waited: starting its producer would fence the new owner.
                log.info("task %d no longer assigned here: reset abandoned", number)
                await self.drop(number)
                return
            try:
                await self._rebuild(number, generation)
            except KafkaError as exc:
                await asyncio.sleep(budget.failed(exc))
                continue
            self._succeeded(number)
            return

    async def _rebuild(self, number: int, generation: int) -> None:
        await self.drop(number)
        await self.assign([number])
        replacement = self.tasks[number]
        replacement.generation = generation
        replacement.resetting = True
        try:
            found = await self._consumer.seek_committed(self.input_partitions(number))
            replacement.checkpoint.committed.update(found)
        finally:
            replacement.resetting = False

    def _new_budget(self, number: int) -> RetryBudget:
        return RetryBudget(
            self._settings.broker_timeout_s, f"task {number}", metrics=self._metrics, seed=number
        )

    def _succeeded(self, number: int) -> None:
        budget = self.budgets.get(number)
        if budget is not None:
            budget.succeeded()

    def _committer(self, producer: AIOKafkaProducer | None) -> Committer:
        s = self._settings
        if producer is not None:
            return TransactionalCommitter(producer, s.application_id, s.topic_dead_letter)
        assert self._shared_producer is not None
        return AtLeastOnceCommitter(
            self._shared_producer, self._consumer.commit_offsets, s.topic_dead_letter
        )
