"""`backpressure.Backpressure` with a fake pool and consumer: pause, resume, order, no loss."""

from __future__ import annotations

import random

from aiokafka import TopicPartition

from stream_trainer.backpressure import Backpressure
from stream_trainer.batching import PendingBatch
from stream_trainer.progress import Progress

OBS, FB = "obs", "fb"


class FakePool:
    """Takes a task's batches while it has room (`room[task]` batches)."""

    def __init__(self) -> None:
        self.room: dict[int, int] = {}
        self.taken: list[PendingBatch] = []

    def offer(self, batch: PendingBatch) -> bool:
        if self.room.get(batch.task, 0) <= 0:
            return False
        self.room[batch.task] -= 1
        self.taken.append(batch)
        return True


class FakeConsumer:
    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.calls: list[tuple[str, tuple[TopicPartition, ...]]] = []

    def pause(self, *partitions: TopicPartition) -> None:
        self.calls.append(("pause", partitions))
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.calls.append(("resume", partitions))
        self.paused.difference_update(partitions)


def owned(task: int) -> list[TopicPartition]:
    return [TopicPartition(OBS, task), TopicPartition(FB, task)]


def setup() -> tuple[Backpressure, FakePool, FakeConsumer, Progress]:
    pool, consumer, progress = FakePool(), FakeConsumer(), Progress()
    bp = Backpressure(pool, lambda: consumer, owned, progress)  # type: ignore[arg-type]
    return bp, pool, consumer, progress


_SEQ = iter(range(10**9))


def batch(task: int) -> PendingBatch:
    b = PendingBatch(task, 0, float(next(_SEQ)))  # opened_at doubles as an identity
    return b


def test_accepted_batches_pause_nothing() -> None:
    bp, pool, consumer, progress = setup()
    pool.room[0] = 2
    batches = [batch(0), batch(0)]
    bp.enqueue(batches)
    assert bp.apply() == 0
    assert pool.taken == batches and progress.batches_queued == 2
    assert consumer.calls == [] and not bp.holds(0)


def test_a_refused_batch_is_held_and_only_its_tasks_partitions_pause() -> None:
    bp, pool, consumer, progress = setup()
    pool.room = {0: 0, 1: 5}
    refused, other = batch(0), batch(1)
    bp.enqueue([refused, other])
    assert bp.holds(0) and not bp.holds(1)
    assert bp.apply() == 2  # the two input partitions of task 0
    assert consumer.paused == set(owned(0))
    assert bp.paused_tasks == {0}
    assert pool.taken == [other] and progress.batches_queued == 1
    assert bp.apply() == 2 and consumer.calls == [("pause", tuple(owned(0)))]  # paused once


def test_later_batches_of_a_blocked_task_wait_behind_the_refused_one() -> None:
    bp, pool, _, _ = setup()
    first, second, third = batch(0), batch(0), batch(0)
    bp.enqueue([first])
    pool.room[0] = 5  # room appears, but `second` must not overtake `first`
    bp.enqueue([second])
    assert pool.taken == []
    bp.enqueue([third])
    bp.apply()
    assert pool.taken == [first, second, third]
    assert not bp.holds(0)


def test_a_task_resumes_once_every_held_batch_fits() -> None:
    bp, pool, consumer, progress = setup()
    held = [batch(0), batch(0), batch(0)]
    bp.enqueue(held)
    assert bp.apply() == 2
    pool.room[0] = 2
    assert bp.apply() == 2  # one still held: stays paused
    assert consumer.paused == set(owned(0)) and pool.taken == held[:2]
    pool.room[0] = 1
    assert bp.apply() == 0
    assert consumer.paused == set() and bp.paused_tasks == set()
    assert consumer.calls[-1] == ("resume", tuple(owned(0)))
    assert pool.taken == held and progress.batches_queued == 3


def test_order_is_kept_and_nothing_lost_under_random_room() -> None:
    rng = random.Random(11)
    bp, pool, consumer, progress = setup()
    sent: list[PendingBatch] = []
    for _ in range(400):
        for task in (0, 1, 2):
            if rng.random() < 0.4:
                new = [batch(task) for _ in range(rng.randint(1, 3))]
                sent.extend(new)
                bp.enqueue(new)
            if rng.random() < 0.3:
                pool.room[task] = pool.room.get(task, 0) + rng.randint(0, 3)
        paused = bp.apply()
        assert paused == 2 * len(bp.paused_tasks)
        assert consumer.paused == {tp for t in bp.paused_tasks for tp in owned(t)}
        assert all(bp.holds(t) == (t in bp.paused_tasks) for t in (0, 1, 2))
    pool.room = {0: 10**6, 1: 10**6, 2: 10**6}
    assert bp.apply() == 0 and consumer.paused == set()
    for task in (0, 1, 2):
        assert [b for b in pool.taken if b.task == task] == [b for b in sent if b.task == task]
    assert len(pool.taken) == len(sent) == progress.batches_queued


def test_forgetting_a_revoked_task_drops_what_it_held() -> None:
    bp, pool, _, _ = setup()
    bp.enqueue([batch(0), batch(0)])
    bp.apply()
    bp.forget(0)
    pool.room[0] = 10
    bp.apply()
    assert pool.taken == [] and not bp.holds(0) and bp.paused_tasks == set()


def test_a_paused_task_sought_back_after_a_reset_is_resumed() -> None:
    # After a failed commit the task's partitions are sought back to the committed offsets
    # and `forget` drops its held batches (`service.Trainer._seek_committed`). The task is
    # still assigned: its partitions must be read again, so they must not stay paused.
    bp, pool, consumer, _ = setup()
    bp.enqueue([batch(0)])
    assert bp.apply() == 2
    bp.forget(0)
    pool.room[0] = 10
    assert bp.apply() == 0
    assert consumer.paused == set(), "task 0 stays paused forever after the reset"


def test_clear_drops_every_held_batch() -> None:
    bp, pool, _, _ = setup()
    bp.enqueue([batch(0), batch(1)])
    bp.clear()
    pool.room = {0: 5, 1: 5}
    bp.apply()
    assert pool.taken == [] and not bp.holds(0) and not bp.holds(1)
