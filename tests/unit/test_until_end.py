"""``--until-end``: `until_end.EndOfInput.reached()` with small fakes, then the trainer's
loop ending on it (fake group consumer of `trainer_fakes`, no broker)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import cast

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_trainer.progress import Progress
from stream_trainer.tasks import TaskManager
from stream_trainer.until_end import EndOfInput
from tests.unit.trainer_fakes import FB, OBS, Gated, World, until, world

__all__ = ["world"]  # the fixture

O0, F0, O1 = TopicPartition(OBS, 0), TopicPartition(FB, 0), TopicPartition(OBS, 1)


@dataclass
class OwnedTask:
    committed: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass
class Tasks:
    tasks: dict[int, OwnedTask] = field(default_factory=dict)


@dataclass
class Positions:
    at: dict[TopicPartition, int] = field(default_factory=dict)
    asked: list[TopicPartition] = field(default_factory=list)

    async def position(self, tp: TopicPartition) -> int:
        self.asked.append(tp)
        return self.at[tp]


@dataclass
class Case:
    """What `EndOfInput` reads, set per test."""

    ends: dict[TopicPartition, int]
    committed: dict[int, dict[TopicPartition, int]] = field(default_factory=dict)
    fetched: dict[TopicPartition, int] = field(default_factory=dict)
    positions: Positions = field(default_factory=Positions)
    unsettled: set[int] = field(default_factory=set)
    open_records: int = 0

    async def reached(self) -> bool:
        progress = Progress(end_offsets=self.ends, fetched=self.fetched)
        tasks = Tasks({n: OwnedTask(c) for n, c in self.committed.items()})
        end = EndOfInput(
            progress,
            cast(TaskManager, tasks),
            lambda: cast(AIOKafkaConsumer, self.positions),
            lambda task: task in tasks.tasks and task not in self.unsettled,
            lambda: self.open_records,
        )
        return await end.reached()


async def test_no_input_partitions_is_the_end() -> None:
    assert await Case(ends={}).reached()


async def test_empty_partitions_are_at_their_end_without_an_owner() -> None:
    assert await Case(ends={O0: 0, F0: 0}).reached()


async def test_everything_committed_is_the_end_without_asking_positions() -> None:
    case = Case(ends={O0: 5, F0: 2}, committed={0: {O0: 5, F0: 2}}, fetched={O0: 5, F0: 2})
    assert await case.reached()
    assert case.positions.asked == []


async def test_records_left_to_commit_are_not_the_end() -> None:
    case = Case(ends={O0: 5}, committed={0: {O0: 3}}, fetched={O0: 5})
    case.positions.at = {O0: 5}
    assert not await case.reached()  # fetched and at the end, but 3 and 4 not committed


async def test_records_not_yet_fetched_are_not_the_end() -> None:
    case = Case(ends={O0: 5}, committed={0: {O0: 3}}, fetched={O0: 3})
    case.positions.at = {O0: 3}
    assert not await case.reached()


async def test_only_transaction_markers_past_the_last_record_is_the_end() -> None:
    # Offsets 0-2 are records, 3 a commit marker: committed 3, position 4 == end.
    case = Case(ends={O0: 4, F0: 0}, committed={0: {O0: 3}}, fetched={O0: 3})
    case.positions.at = {O0: 4}
    assert await case.reached()
    assert case.positions.asked == [O0]


async def test_a_partition_of_only_markers_is_the_end_once_read_past_them() -> None:
    case = Case(ends={F0: 2}, committed={0: {}})
    case.positions.at = {F0: 1}
    assert not await case.reached()
    case.positions.at = {F0: 2}
    assert await case.reached()


async def test_markers_do_not_end_a_task_with_work_in_flight() -> None:
    case = Case(ends={O0: 4}, committed={0: {O0: 3}}, fetched={O0: 3}, unsettled={0})
    case.positions.at = {O0: 4}
    assert not await case.reached()


async def test_markers_do_not_end_while_records_wait_in_an_open_batch() -> None:
    case = Case(ends={O0: 4}, committed={0: {O0: 3}}, fetched={O0: 3}, open_records=1)
    case.positions.at = {O0: 4}
    assert not await case.reached()


async def test_a_partition_of_a_task_not_owned_here_is_not_the_end() -> None:
    case = Case(ends={O0: 3, O1: 2}, committed={0: {O0: 3}}, fetched={O0: 3})
    assert not await case.reached()  # task 1 is not ours: its offsets are not known here


async def test_every_partition_must_be_at_its_end() -> None:
    case = Case(ends={O0: 3, F0: 2}, committed={0: {O0: 3, F0: 1}}, fetched={O0: 3, F0: 2})
    case.positions.at = {F0: 2}
    assert not await case.reached()


# -- the trainer's loop -------------------------------------------------------------------------


async def test_the_loop_ends_once_everything_up_to_the_end_offsets_is_committed(
    world: World,
) -> None:
    t0, t1 = world.feed(0), world.feed(1)
    world.append(t0.obs("a", 1), t0.obs("a", 2), t0.fb("r", 1, True))
    world.append(t1.obs("b", 1))
    trainer = world.trainer(until_end=True)
    await trainer.start()
    assert trainer.progress.end_offsets == {O0: 2, F0: 1, O1: 1, TopicPartition(FB, 1): 0}
    world.append(t0.obs("a", 3))  # after the start: not waited for
    await asyncio.wait_for(trainer.wait(), 3.0)
    assert world.committed[F0] == 1 and world.committed[O1] == 1
    assert world.committed[O0] >= 2
    await trainer.stop()


async def test_the_loop_ends_when_only_transaction_markers_follow_the_last_record(
    world: World,
) -> None:
    t0 = world.feed(0)
    world.append(t0.obs("a", 1), t0.obs("a", 2))
    world.marker(O0)  # the commit marker of the producer's transaction
    world.marker(F0)  # an aborted transaction's marker, no record
    trainer = world.trainer(until_end=True)
    await trainer.start()
    await asyncio.wait_for(trainer.wait(), 3.0)
    assert world.committed == {O0: 2}  # never 3: the marker is no record to commit
    assert trainer.progress.end_offsets[O0] == 3
    await trainer.stop()


async def test_a_restart_with_nothing_new_ends_at_once(world: World) -> None:
    t0 = world.feed(0)
    world.append(t0.obs("a", 1), t0.obs("a", 2))
    world.committed = {O0: 2}  # committed by an earlier run
    trainer = world.trainer(until_end=True)
    await trainer.start()
    await asyncio.wait_for(trainer.wait(), 3.0)
    assert world.commits == []
    await trainer.stop()


async def test_the_loop_does_not_end_while_a_batch_is_still_being_learned(
    world: World,
) -> None:
    t0 = world.feed(0)
    world.append(t0.obs("a", 1), t0.obs("a", 2))
    gated: list[Gated] = []

    def processor(tasks: TaskManager) -> Gated:
        gated.append(Gated(tasks, 0))
        return gated[0]

    trainer = world.trainer(until_end=True, processor=processor)
    await trainer.start()
    consumer = world.consumer
    await until(trainer, lambda: trainer.progress.fetched.get(O0) == 2, "records fetched")
    target = consumer.getmany_calls + 5
    await until(trainer, lambda: consumer.getmany_calls >= target, "a few more fetches")
    assert world.committed == {}
    gated[0].gate.set()
    await asyncio.wait_for(trainer.wait(), 3.0)
    assert world.committed == {O0: 2}
    await trainer.stop()
