"""Backpressure: batches a full worker queue refused, and the pausing of their partitions.

A task whose queue is full keeps its closed batches here, in order, and its input
partitions are paused (a typed signal, as in Quix Streams) until every held batch fits;
then they are resumed. Nothing is dropped, and the consumer loop never waits.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_trainer.batching import PendingBatch
from stream_trainer.pool import WorkerPool
from stream_trainer.progress import Progress

log = logging.getLogger(__name__)


class Backpressure:
    """Holds refused batches per task and pauses/resumes the task's partitions."""

    def __init__(
        self,
        pool: WorkerPool,
        consumer: Callable[[], AIOKafkaConsumer],
        owned: Callable[[int], list[TopicPartition]],
        progress: Progress,
    ) -> None:
        self._progress = progress
        self._pool = pool
        self._consumer = consumer
        self._owned = owned
        self._blocked: dict[int, deque[PendingBatch]] = defaultdict(deque)
        self._paused: set[int] = set()

    def enqueue(self, batches: list[PendingBatch]) -> None:
        for batch in batches:
            blocked = self._blocked[batch.task]
            if blocked or not self._pool.offer(batch):
                blocked.append(batch)
            else:
                self._progress.batches_queued += 1

    def apply(self) -> int:
        """Offer held batches again, pause tasks still blocked, resume the rest.

        Returns how many partitions are paused.
        """
        for task, blocked in list(self._blocked.items()):
            while blocked and self._pool.offer(blocked[0]):
                blocked.popleft()
                self._progress.batches_queued += 1
            if not blocked:
                del self._blocked[task]
        consumer = self._consumer()
        for task in set(self._blocked) - self._paused:
            consumer.pause(*self._owned(task))
            self._paused.add(task)
            log.debug("task %d paused: worker queue full", task)
        for task in self._paused - set(self._blocked):
            consumer.resume(*self._owned(task))
            self._paused.discard(task)
            log.debug("task %d resumed", task)
        return 2 * len(self._paused)

    def forget(self, task: int) -> None:
        """Drop what is held for a task (revoked, or sought back after a reset).

        A paused task is resumed: its records will be fetched again from the position
        it is sought to (a revoked one has no partitions left to resume).
        """
        self._blocked.pop(task, None)
        if task in self._paused:
            self._paused.discard(task)
            self._consumer().resume(*self._owned(task))

    def clear(self) -> None:
        self._blocked.clear()

    @property
    def held(self) -> int:
        return sum(len(blocked) for blocked in self._blocked.values())

    def holds(self, task: int) -> bool:
        return bool(self._blocked.get(task))

    @property
    def paused_tasks(self) -> set[int]:
        return set(self._paused)
