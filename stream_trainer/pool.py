"""Async worker pool: per-task order, cross-task parallelism, bounded queues.

Each task has a bounded queue and one worker coroutine, so its batches are processed
strictly in order while different tasks proceed in parallel (the processor caps the
CPU-bound part, see `TaskManager`). `offer` never waits: a full queue answers False, which
the consumer loop turns into pausing that task's partitions (backpressure) until
`has_room` is True.

Workers never die silently: an error the processor cannot handle is kept, the pool stops
taking work, and `check()` re-raises it on the owner's next call (aiokafka style).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from stream_trainer.aio import cancel_and_wait
from stream_trainer.batching import PendingBatch

log = logging.getLogger(__name__)


class Processor(Protocol):
    """What the pool drives: learning batches, and committing a task's learned work."""

    async def process(self, batch: PendingBatch) -> None: ...

    def commit_due_in(self, task: int) -> float | None:
        """Seconds until the task must commit (0: now), None when nothing is pending."""
        ...

    async def commit(self, task: int) -> None: ...


class _TaskQueue:
    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[PendingBatch] = asyncio.Queue(maxsize)
        self.busy = False
        self.worker: asyncio.Task[None] | None = None
        # Held for each step of work: a worker is only ever cancelled between steps,
        # never inside a transaction.
        self.step = asyncio.Lock()


class WorkerPool:
    """Runs `process(batch)` for queued batches: in order per task, in parallel across tasks."""

    def __init__(self, processor: Processor, queue_size: int, max_batch_events: int) -> None:
        self._processor = processor
        self._max_events = max_batch_events
        self._queue_size = queue_size
        self._tasks: dict[int, _TaskQueue] = {}
        self._error: BaseException | None = None

    def add_task(self, task: int) -> None:
        if task in self._tasks:
            return
        entry = _TaskQueue(self._queue_size)
        entry.worker = asyncio.create_task(self._work(task, entry), name=f"worker-task-{task}")
        self._tasks[task] = entry

    def offer(self, batch: PendingBatch) -> bool:
        """Queue a batch without waiting; False when the task's queue is full (or unknown)."""
        entry = self._tasks.get(batch.task)
        if entry is None:
            raise KeyError(f"task {batch.task} is not in the pool")
        try:
            entry.queue.put_nowait(batch)
        except asyncio.QueueFull:
            return False
        return True

    def has_room(self, task: int) -> bool:
        entry = self._tasks.get(task)
        return entry is not None and not entry.queue.full()

    def discard_queued(self, task: int) -> int:
        """Drop batches not yet started (after a reset they would be stale)."""
        entry = self._tasks.get(task)
        dropped = 0
        while entry is not None and not entry.queue.empty():
            entry.queue.get_nowait()
            entry.queue.task_done()
            dropped += 1
        return dropped

    async def drain(self, task: int) -> None:
        """Wait until every queued batch of the task has been processed and committed."""
        entry = self._tasks.get(task)
        if entry is not None:
            await entry.queue.join()
            async with entry.step:
                await self._run(task, self._processor.commit(task))

    async def remove_task(self, task: int, *, finish_queued: bool) -> None:
        """Stop a task's worker after its in-flight (and optionally queued) batches."""
        entry = self._tasks.get(task)
        if entry is None:
            return
        if not finish_queued:
            self.discard_queued(task)
        if entry.worker is not None and not entry.worker.done():
            await entry.queue.join()
        del self._tasks[task]
        async with entry.step:
            await cancel_and_wait(entry.worker)
            if finish_queued:
                await self._run(task, self._processor.commit(task))

    def idle(self, task: int) -> bool:
        entry = self._tasks.get(task)
        return entry is None or (entry.queue.empty() and not entry.busy)

    @property
    def depth(self) -> int:
        return sum(e.queue.qsize() + int(e.busy) for e in self._tasks.values())

    @property
    def tasks(self) -> list[int]:
        return list(self._tasks)

    def check(self) -> None:
        """Re-raise the first error a worker could not handle."""
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        entries = list(self._tasks.values())
        self._tasks.clear()
        for entry in entries:
            async with entry.step:
                await cancel_and_wait(entry.worker)

    async def abort(self) -> None:
        """Cancel every worker now, even mid-step (leaving without the broker)."""
        entries = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(*(entry.worker for entry in entries))

    async def _work(self, task: int, entry: _TaskQueue) -> None:
        while True:
            batch = await self._next(task, entry.queue)
            async with entry.step:
                if batch is None:
                    await self._run(task, self._processor.commit(task))
                    continue
                taken = 1 + self._coalesce(batch, entry.queue)
                entry.busy = True
                try:
                    await self._run(task, self._processor.process(batch))
                finally:
                    entry.busy = False
                    for _ in range(taken):
                        entry.queue.task_done()

    async def _next(self, task: int, queue: asyncio.Queue[PendingBatch]) -> PendingBatch | None:
        """The next batch, or None when the task's commit falls due before one arrives."""
        # After a failure nothing more is committed: wait for batches (to mark them done)
        # rather than for a commit that would never happen, which would spin.
        due = None if self._error is not None else self._processor.commit_due_in(task)
        if due is None:
            return await queue.get()
        if not queue.empty():
            return queue.get_nowait()
        try:
            return await asyncio.wait_for(queue.get(), timeout=due) if due > 0 else None
        except TimeoutError:
            return None

    async def _run(self, task: int, step: Coroutine[Any, Any, None]) -> None:
        """Run one step of a task's work; an error is kept for `check()`, never lost."""
        if self._error is not None:
            step.close()
            return
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("task %d: processing failed", task)
            self._error = self._error or exc

    def _coalesce(self, batch: PendingBatch, queue: asyncio.Queue[PendingBatch]) -> int:
        """Fold queued batches of the task into `batch`, up to the batch size limit.

        Under a backlog this turns many small (lingered) batches into few full ones: one
        transaction instead of several. Boundaries do not change the models (batch
        invariance), only the per-batch overhead.
        """
        merged = 0
        while not queue.empty():
            later = queue._queue[0]  # type: ignore[attr-defined]  # peek: asyncio has no API
            if later.generation != batch.generation or len(batch) + len(later) > self._max_events:
                break
            batch.absorb(queue.get_nowait())
            merged += 1
        return merged
