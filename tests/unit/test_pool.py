"""Worker pool: per-task order, cross-task parallelism, bounded queues, errors surfaced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from stream_trainer.batching import PendingBatch
from stream_trainer.pool import WorkerPool


class Steps:
    """A processor whose learning is a plain function and which commits when told to."""

    def __init__(
        self, process: Callable[[PendingBatch], Awaitable[None]], interval_s: float | None = None
    ) -> None:
        self._process = process
        self._interval_s = interval_s
        self.pending: dict[int, float] = {}  # task -> time its first uncommitted batch ended
        self.commits: list[int] = []

    async def process(self, b: PendingBatch) -> None:
        await self._process(b)
        self.pending.setdefault(b.task, time.monotonic())

    def commit_due_in(self, task: int) -> float | None:
        if self._interval_s is None or task not in self.pending:
            return None
        return max(0.0, self.pending[task] + self._interval_s - time.monotonic())

    async def commit(self, task: int) -> None:
        if self.pending.pop(task, None) is not None:
            self.commits.append(task)


def batch(task: int, n: int) -> PendingBatch:
    b = PendingBatch(task=task, generation=0, opened_at=0.0)
    b.observations.extend([n])  # type: ignore[list-item]  # the payload is a marker here
    return b


async def test_batches_of_one_task_run_in_order_and_tasks_in_parallel() -> None:
    seen: list[tuple[int, int]] = []
    running = 0
    peak = 0

    async def process(b: PendingBatch) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        seen.append((b.task, b.observations[0]))  # type: ignore[arg-type]
        running -= 1

    pool = WorkerPool(Steps(process), queue_size=10, max_batch_events=1)
    for task in (0, 1, 2):
        pool.add_task(task)
    for i in range(5):
        for task in (0, 1, 2):
            assert pool.offer(batch(task, i))
    for task in (0, 1, 2):
        await pool.drain(task)
    await pool.close()
    for task in (0, 1, 2):
        assert [i for t, i in seen if t == task] == list(range(5))
    assert peak == 3  # one batch per task at a time, all tasks in parallel


async def test_full_queue_refuses_without_waiting_then_has_room() -> None:
    gate = asyncio.Event()

    async def process(b: PendingBatch) -> None:
        await gate.wait()

    pool = WorkerPool(Steps(process), queue_size=2, max_batch_events=1)
    pool.add_task(0)
    assert pool.offer(batch(0, 0))
    await asyncio.sleep(0)  # the worker takes the first batch
    assert pool.offer(batch(0, 1)) and pool.offer(batch(0, 2))
    assert not pool.offer(batch(0, 3))
    assert not pool.has_room(0)
    gate.set()
    await pool.drain(0)
    assert pool.has_room(0) and pool.idle(0)
    await pool.close()


async def test_worker_error_is_kept_and_reraised_by_check() -> None:
    async def process(b: PendingBatch) -> None:
        raise RuntimeError("boom")

    pool = WorkerPool(Steps(process), queue_size=2, max_batch_events=1)
    pool.add_task(0)
    pool.offer(batch(0, 0))
    await pool.drain(0)
    with pytest.raises(RuntimeError, match="boom"):
        pool.check()
    await pool.close()


async def test_remove_task_can_discard_queued_batches() -> None:
    done: list[int] = []
    gate = asyncio.Event()

    async def process(b: PendingBatch) -> None:
        await gate.wait()
        done.append(b.observations[0])  # type: ignore[arg-type]

    pool = WorkerPool(Steps(process), queue_size=5, max_batch_events=1)
    pool.add_task(0)
    for i in range(3):
        pool.offer(batch(0, i))
    await asyncio.sleep(0)
    removal = asyncio.create_task(pool.remove_task(0, finish_queued=False))
    await asyncio.sleep(0)
    gate.set()
    await removal
    assert done == [0]  # the in-flight batch finished; queued ones were dropped
    assert pool.tasks == []


async def test_a_backlog_is_coalesced_in_order_up_to_the_batch_size() -> None:
    seen: list[list[int]] = []
    gate = asyncio.Event()

    async def process(b: PendingBatch) -> None:
        await gate.wait()
        seen.append(list(b.observations))  # type: ignore[arg-type]

    pool = WorkerPool(Steps(process), queue_size=10, max_batch_events=3)
    pool.add_task(0)
    pool.offer(batch(0, 0))
    await asyncio.sleep(0)  # the worker takes the first batch and waits at the gate
    for i in range(1, 6):
        assert pool.offer(batch(0, i))
    gate.set()
    await pool.drain(0)
    await pool.close()
    assert seen == [[0], [1, 2, 3], [4, 5]]  # in order, never above 3 events


async def test_learned_work_commits_once_its_interval_passes_without_new_batches() -> None:
    async def process(b: PendingBatch) -> None:
        return None

    steps = Steps(process, interval_s=0.05)
    pool = WorkerPool(steps, queue_size=4, max_batch_events=10)
    pool.add_task(0)
    assert pool.offer(batch(0, 0)) and pool.offer(batch(0, 1))
    await pool.drain(0)  # drain commits what is pending
    assert steps.commits == [0]
    assert pool.offer(batch(0, 2))
    for _ in range(100):
        if len(steps.commits) == 2:
            break
        await asyncio.sleep(0.01)
    assert steps.commits == [0, 0]  # the idle worker committed when the interval ran out
    await pool.close()


async def test_removing_a_task_commits_its_pending_work_and_never_cuts_a_step() -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    finished: list[int] = []

    async def process(b: PendingBatch) -> None:
        entered.set()
        await release.wait()
        finished.append(b.observations[0])  # type: ignore[arg-type]

    steps = Steps(process, interval_s=60.0)
    pool = WorkerPool(steps, queue_size=4, max_batch_events=1)
    pool.add_task(0)
    assert pool.offer(batch(0, 7))
    await entered.wait()
    removal = asyncio.create_task(pool.remove_task(0, finish_queued=True))
    await asyncio.sleep(0.01)
    assert not removal.done()  # waits for the step in flight instead of cancelling it
    release.set()
    await removal
    assert finished == [7]
    assert steps.commits == [0]


async def test_a_backlog_is_not_coalesced_across_generations() -> None:
    # A reset bumps the task's generation: a stale batch must stay apart so that
    # `process` can drop it, instead of dragging fresh records along with it.
    seen: list[tuple[int, list[int]]] = []
    gate = asyncio.Event()

    async def process(b: PendingBatch) -> None:
        await gate.wait()
        seen.append((b.generation, list(b.observations)))  # type: ignore[arg-type]

    pool = WorkerPool(Steps(process), queue_size=10, max_batch_events=10)
    pool.add_task(0)
    pool.offer(batch(0, 0))
    await asyncio.sleep(0)
    stale, fresh = batch(0, 1), batch(0, 2)
    fresh.generation = 1
    assert pool.offer(stale) and pool.offer(fresh)
    gate.set()
    await pool.drain(0)
    await pool.close()
    assert seen == [(0, [0]), (0, [1]), (1, [2])]


async def test_after_a_worker_error_no_further_work_is_run() -> None:
    processed: list[int] = []

    async def process(b: PendingBatch) -> None:
        processed.append(b.observations[0])  # type: ignore[arg-type]
        raise RuntimeError("boom")

    pool = WorkerPool(Steps(process), queue_size=4, max_batch_events=1)
    pool.add_task(0)
    pool.add_task(1)
    assert pool.offer(batch(0, 0))
    await pool.drain(0)
    assert pool.offer(batch(0, 1)) and pool.offer(batch(1, 2))
    await pool.drain(0)
    await pool.drain(1)
    await pool.close()
    assert processed == [0]  # the pool stopped taking work at the first error
    with pytest.raises(RuntimeError, match="boom"):
        pool.check()
