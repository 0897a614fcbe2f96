"""`service.Trainer` start and stop through its seams (see test_service.py): a failed start
stops what started, stop() drains, commits and closes even after a failure."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from aiokafka import TopicPartition as TP
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from stream_trainer.errors import KafkaError, TopologyError
from tests.unit.trainer_fakes import (
    FB,
    HOLD,
    OBS,
    SETTINGS,
    World,
    fill,
    pending_events,
    stopped,
    until,
    world,
)

__all__ = ["world"]  # the fixture


# -- start and stop -----------------------------------------------------------------------------


async def test_stop_drains_commits_and_closes_everything_after_the_loop_failed(
    world: World,
) -> None:
    fill(world)
    trainer = world.trainer(HOLD)
    await trainer.start()
    await until(
        trainer,
        lambda: pending_events(trainer, 0) == 3 and pending_events(trainer, 1) == 2,
        "both tasks learned their records",
    )
    world.consumer.getmany_errors.append(TopicAuthorizationFailedError())
    with pytest.raises(KafkaError, match="consumer failed"):
        await asyncio.wait_for(trainer.wait(), 3.0)
    with pytest.raises(KafkaError, match="consumer failed"):
        await trainer.stop()
    assert world.committed == {TP(OBS, 0): 3, TP(FB, 1): 2}  # drained and committed
    assert world.consumer.stops == 1 and all(p.stopped for p in world.producers)
    assert trainer._tasks.tasks == {} and trainer._pool.tasks == []


async def test_stop_commits_the_pending_work_before_leaving_the_group(world: World) -> None:
    ends = fill(world)
    trainer = world.trainer(HOLD)
    await trainer.start()
    await until(
        trainer,
        lambda: pending_events(trainer, 0) == 3 and pending_events(trainer, 1) == 2,
        "both tasks learned their records",
    )
    await stopped(trainer)
    assert world.committed == ends
    left = world.events.index("consumer stopped")
    assert sorted(world.events[:left]) == ["commit 0", "commit 1"]
    assert sorted(world.events[left + 1 :]) == ["producer 0 stopped", "producer 1 stopped"]


async def test_stop_closes_the_tasks_even_when_the_consumer_fails_to_stop(world: World) -> None:
    fill(world)
    trainer = world.trainer()
    await trainer.start()
    await until(trainer, lambda: len(world.producers) == 2, "tasks assigned")
    world.consumer.errors["stop"] = KafkaConnectionError()
    trainer.request_stop()
    with pytest.raises(Exception, match="KafkaConnectionError"):
        await trainer.stop()
    assert all(p.stopped for p in world.producers) and trainer._tasks.tasks == {}


async def test_a_start_failing_midway_stops_what_started(world: World) -> None:
    settings = msgspec.structs.replace(SETTINGS, processing_guarantee="at_least_once")
    world.consumer_errors["start"] = KafkaConnectionError()
    trainer = world.trainer(settings)
    with pytest.raises(KafkaError, match="cannot start consumer") as failed:
        await trainer.start()
    assert failed.value.retriable
    [shared] = world.shared
    assert shared.stopped, "the shared producer was left running"
    assert world.consumer.stops == 1
    await trainer.stop()  # `run` stops again after a failed start: harmless


async def test_a_failed_end_offsets_read_stops_the_consumer_and_is_our_error(
    world: World,
) -> None:
    world.consumer_errors["end_offsets"] = KafkaConnectionError()
    trainer = world.trainer(until_end=True)
    with pytest.raises(KafkaError) as failed:  # ours: the CLI reports it, no traceback
        await trainer.start()
    assert failed.value.retriable
    assert world.consumer.stops == 1


async def test_a_failed_topology_check_starts_nothing(world: World) -> None:
    world.topology_error = TopologyError("inputs are not co-partitioned")
    trainer = world.trainer()
    with pytest.raises(TopologyError):
        await trainer.start()
    assert world.consumers == [] and world.producers == [] and world.shared == []
    await trainer.stop()


async def test_a_summary_failure_surfaces_from_wait(world: World) -> None:
    fill(world)
    trainer = world.trainer(msgspec.structs.replace(SETTINGS, summary_interval_s=0.001))
    await trainer.start()
    world.consumer.errors["highwater"] = RuntimeError("summary broke")
    with pytest.raises(RuntimeError, match="summary broke"):
        await asyncio.wait_for(trainer.wait(), 3.0)
    await trainer.stop()
    assert world.consumer.stops == 1
