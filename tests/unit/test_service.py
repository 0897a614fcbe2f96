"""`service.Trainer` through its seams, no broker: a fake group consumer (`trainer_fakes`),
fake task producers, changelog and committer; the real batcher, pool, tasks and learners."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from aiokafka import TopicPartition as TP
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from stream_trainer.errors import (
    BrokerUnavailableError,
    DeadLetterError,
    KafkaError,
)
from stream_trainer.tasks import TaskManager
from tests.unit.fake_consumer import FakeConsumer
from tests.unit.trainer_fakes import (
    FB,
    HOLD,
    OBS,
    SETTINGS,
    Gated,
    SpinGuard,
    World,
    calls,
    fill,
    pending_events,
    stopped,
    tps,
    until,
    world,
)

__all__ = ["world"]  # the fixture

# -- the happy path -----------------------------------------------------------------------------


async def test_records_flow_through_batcher_and_pool_to_a_commit(world: World) -> None:
    ends = fill(world)
    trainer = world.trainer()
    await trainer.start()
    # A worker may still be busy after its commit (summaries): wait until it is done too.
    await until(
        trainer, lambda: world.committed == ends and trainer.held_batches == 0, "all committed"
    )
    assert world.versions(b"a") == [1] and world.versions(b"b") == [1]
    assert sorted(task for task, _ in world.commits) == [0, 1]
    for task, outputs in world.commits:
        assert outputs.offsets == {tp: ends[tp] for tp in tps(task) if tp in ends}
    assert world.learned() == 5 and trainer.progress.events == 5
    assert trainer.ready
    await stopped(trainer)
    assert world.consumer.stops == 1
    assert [p.stopped for p in world.producers] == [True, True]


async def test_at_least_once_commits_the_offsets_through_the_consumer(world: World) -> None:
    ends = fill(world)
    settings = msgspec.structs.replace(SETTINGS, processing_guarantee="at_least_once")
    trainer = world.trainer(settings)
    await trainer.start()
    consumer = world.consumer
    await until(trainer, lambda: world.committed == ends, "offsets committed")
    assert sorted(map(sorted, map(dict.items, consumer.commits))) == sorted(
        [[(TP(OBS, 0), 3)], [(TP(FB, 1), 2)]]
    )
    [shared] = world.shared
    assert {topic for topic, *_ in shared.sent} >= {SETTINGS.topic_model_versions}
    await stopped(trainer)
    assert shared.stopped and world.producers == []


# -- failures of the consume loop ---------------------------------------------------------------


async def test_a_listener_error_is_raised_by_the_consume_loop(world: World) -> None:
    fill(world)
    world.producer_error = KafkaError("task producer not authorised", retriable=False)
    trainer = world.trainer()
    await trainer.start()
    with pytest.raises(KafkaError, match="not authorised"):
        await asyncio.wait_for(trainer.wait(), 3.0)
    assert len(world.consumer.listener_errors) == 1  # aiokafka swallowed it
    with pytest.raises(KafkaError, match="not authorised"):
        await trainer.stop()
    assert world.commits == [] and world.consumer.stops == 1


async def readyz(port: int) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_a_retriable_fetch_error_is_retried_and_readiness_names_the_consumer(
    world: World,
) -> None:
    ends = fill(world)
    settings = msgspec.structs.replace(SETTINGS, http_host="127.0.0.1", http_port=0)
    trainer = world.trainer(settings, serve_http=True)
    probes: list[tuple[int, bytes]] = []

    async def probe(consumer: FakeConsumer) -> None:
        if consumer.getmany_calls in (2, 3):  # after the first and the second failure
            port = trainer.http_port
            assert port is not None
            probes.append(await readyz(port))

    await trainer.start()
    consumer = world.consumer
    consumer.getmany_errors = [KafkaConnectionError(), KafkaConnectionError()]
    consumer.before_getmany = probe
    await until(trainer, lambda: world.committed == ends, "records committed after the retries")
    assert len(probes) == 2
    for status, body in probes:
        assert status == 503
        assert body.startswith(b"consumer waiting on the broker: consumer failed:"), body
        assert b"KafkaConnectionError" in body
    assert await readyz(trainer.http_port or 0) == (200, b"ready\n")
    retries = trainer.metrics.broker_retries.labels(cause="KafkaConnectionError")
    assert retries._value.get() == 2
    await stopped(trainer)


async def test_fetch_errors_past_the_broker_timeout_stop_the_trainer(world: World) -> None:
    settings = msgspec.structs.replace(SETTINGS, broker_timeout_s=0.05)
    trainer = world.trainer(settings)
    await trainer.start()
    world.consumer.getmany_errors = [KafkaConnectionError() for _ in range(10_000)]
    with pytest.raises(BrokerUnavailableError, match="consumer"):
        await asyncio.wait_for(trainer.wait(), 3.0)
    with pytest.raises(BrokerUnavailableError):
        await trainer.stop()
    assert world.consumer.stops == 1


async def test_a_fatal_fetch_error_stops_the_trainer_at_once(world: World) -> None:
    trainer = world.trainer()
    await trainer.start()
    world.consumer.getmany_errors = [TopicAuthorizationFailedError()]
    with pytest.raises(KafkaError, match="TopicAuthorizationFailed") as failed:
        await asyncio.wait_for(trainer.wait(), 3.0)
    assert not failed.value.retriable and not isinstance(failed.value, BrokerUnavailableError)
    with pytest.raises(KafkaError):
        await trainer.stop()


async def test_a_commit_failing_for_good_stops_the_trainer(world: World) -> None:
    t0 = world.feed(0)
    world.append(t0.obs("a", 1), t0.obs("a", 2))
    world.commit_failures.append(DeadLetterError("cannot write to dead-letter topic"))
    trainer = world.trainer()
    await trainer.start()
    with pytest.raises(DeadLetterError):
        await asyncio.wait_for(trainer.wait(), 3.0)
    with pytest.raises(DeadLetterError):
        await trainer.stop()
    assert world.consumer.stops == 1 and all(p.stopped for p in world.producers)


async def test_a_fatal_commit_failure_does_not_wedge_the_loop_while_others_are_due(
    world: World,
) -> None:
    # Task 1 fails for good at once (cache bound); task 0's one event falls due 50 ms later.
    settings = msgspec.structs.replace(SETTINGS, commit_interval_ms=50, cache_max_events=3)
    t0, t1 = world.feed(0), world.feed(1)
    world.append(t0.obs("a", 1))
    world.append(t1.obs("z", 1), t1.obs("z", 2), t1.obs("z", 3))
    world.commit_failures.append(DeadLetterError("cannot write to dead-letter topic"))
    guards: list[SpinGuard] = []

    def guarded(tasks: TaskManager) -> SpinGuard:
        guards.append(SpinGuard(tasks))
        return guards[0]

    trainer = world.trainer(settings, processor=guarded)
    await trainer.start()
    with pytest.raises(DeadLetterError):
        await asyncio.wait_for(trainer.wait(), 3.0)
    assert pending_events(trainer, 0) == 1
    await asyncio.sleep(0.1)  # past task 0's commit interval, as a stop() may well take
    spun = guards[0].asked > guards[0].limit
    with pytest.raises(DeadLetterError):
        await trainer.stop()
    assert not spun, "task 0's pool worker spun without awaiting: the event loop was starved"


# -- nothing is lost or applied twice -----------------------------------------------------------


async def test_records_handed_out_before_the_task_is_restored_are_read_again(
    world: World,
) -> None:
    ends = fill(world)
    trainer = world.trainer()
    await trainer.start()
    consumer = world.consumer
    consumer.hand_out_early = True  # takes effect at the first getmany (the assignment)
    await until(trainer, lambda: world.committed == ends, "every record committed")
    assert (TP(OBS, 0), 0) in consumer.seeks and (TP(FB, 1), 0) in consumer.seeks
    assert world.learned() == 5 and trainer.progress.events == 5  # each record once
    assert world.versions(b"a") == [1]
    await stopped(trainer)


async def test_a_failed_commit_rewinds_the_task_to_its_committed_offsets(world: World) -> None:
    t0 = world.feed(0)
    world.append(t0.obs("a", 1), t0.obs("a", 2))
    world.commit_failures.append(KafkaError("transaction aborted", retriable=True))
    trainer = world.trainer()
    await trainer.start()
    ends = {TP(OBS, 0): 2}
    await until(trainer, lambda: world.committed == ends, "committed after the reset")
    assert world.events[0] == "commit 0 failed"
    assert (TP(OBS, 0), 0) in world.consumer.seeks  # no committed offset: the beginning
    assert world.versions(b"a") == [1] and world.learned() == 2  # the failed one never was
    world.append(t0.obs("a", 3))
    await until(trainer, lambda: world.committed[TP(OBS, 0)] == 3, "the next record")
    assert world.versions(b"a") == [1, 2]
    await stopped(trainer)


async def test_revoke_commits_the_pending_work_before_dropping_the_task(world: World) -> None:
    fill(world)
    trainer = world.trainer(HOLD)
    await trainer.start()
    await until(
        trainer,
        lambda: pending_events(trainer, 0) == 3 and pending_events(trainer, 1) == 2,
        "both tasks learned their records",
    )
    assert world.commits == []  # held: the interval has not run out
    world.consumer.rebalance(tps(1))  # task 0 moves to another member
    await until(
        trainer, lambda: trainer.ready and sorted(trainer._tasks.tasks) == [1], "task 0 dropped"
    )
    assert world.committed == {TP(OBS, 0): 3, TP(FB, 1): 2}
    first_stop = world.events.index("producer 0 stopped")
    assert "commit 0" in world.events[:first_stop]
    assert trainer.paused_tasks == set()
    # Task 1 came back from the changelog its commit wrote, with nothing to read again.
    assert trainer._tasks.tasks[1].state.model_counts["rule"] == 1
    await stopped(trainer)
    assert len(world.commits) == 2


# -- backpressure -------------------------------------------------------------------------------


async def test_a_slow_task_is_paused_with_its_batches_held_and_resumed_after(
    world: World,
) -> None:
    settings = msgspec.structs.replace(SETTINGS, queue_max_batches=1, max_batch_events=2)
    t0, t1 = world.feed(0), world.feed(1)
    world.append(*(t0.obs("a", s) for s in range(1, 11)))
    world.append(*(t1.obs("z", s) for s in range(1, 5)))
    gated: list[Gated] = []

    def processor(tasks: TaskManager) -> Gated:
        gated.append(Gated(tasks, 0))
        return gated[0]

    trainer = world.trainer(settings, processor=processor)
    await trainer.start()
    consumer = world.consumer
    await until(trainer, lambda: trainer.paused_tasks == {0}, "task 0 paused")
    await until(
        trainer,
        lambda: world.committed.get(TP(OBS, 1)) == 4 and trainer._pool.idle(1),
        "task 1 goes on",
    )
    assert consumer.paused() == tps(0)
    fetched_0 = trainer.progress.fetched[TP(OBS, 0)]
    assert fetched_0 < 10  # the pause bounds what is read ahead
    assert trainer.held_batches == fetched_0 // 2  # every closed batch: queued, busy or held
    await calls(trainer, consumer, 3)
    assert trainer.progress.fetched[TP(OBS, 0)] == fetched_0  # nothing fetched while paused
    gated[0].gate.set()
    await until(
        trainer,
        lambda: world.committed.get(TP(OBS, 0)) == 10 and trainer.held_batches == 0,
        "task 0 caught up",
    )
    assert trainer.paused_tasks == set() and consumer.paused() == set()
    assert world.versions(b"a")[-1] == len(world.versions(b"a"))  # gapless
    await stopped(trainer)


# -- readiness ----------------------------------------------------------------------------------


async def test_ready_once_warm_assigned_and_restored(world: World) -> None:
    fill(world)
    trainer = world.trainer()
    assert not trainer.ready
    assert trainer._readiness.reason() == "compiling the learner kernels"
    seen: list[str] = []

    async def note(consumer: FakeConsumer) -> None:
        seen.append(trainer._readiness.reason())

    world.on_restore = lambda: seen.append(trainer._readiness.reason())
    await trainer.start()
    world.consumer.before_getmany = note
    await until(trainer, lambda: trainer.ready, "ready")
    assert seen[:2] == ["waiting for partition assignment", "restoring state from the changelog"]
    assert trainer.metrics.registry.get_sample_value("stream_trainer_ready") == 1.0
    seen.clear()
    world.consumer.rebalance(tps(0))
    await until(
        trainer, lambda: trainer.ready and sorted(trainer._tasks.tasks) == [0], "reassigned"
    )
    assert "restoring state from the changelog" in seen  # task 0 again
    await stopped(trainer)
