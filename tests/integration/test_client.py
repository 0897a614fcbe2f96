"""Publishers: validation, keys and delivery errors (fake producer), then a real broker."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError

from stream_trainer.client import FeedbackPublisher, ObservationPublisher
from stream_trainer.errors import DecodeError, KafkaError
from stream_trainer.events import Feedback, Observation, decode_feedback, decode_observation

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _feedback(i: int, *, rule: str | None = None, **changes: Any) -> Feedback:
    fields: dict[str, Any] = {
        "event_id": f"f-{i}",
        "rule_id": f"rule.r{i % 3}" if rule is None else rule,
        "ts": T0 + timedelta(seconds=i),
        "success": i % 2 == 0,
    }
    fields.update(changes)
    return Feedback(**fields)


def _observation(i: int, **changes: Any) -> Observation:
    fields: dict[str, Any] = {
        "event_id": f"o-{i}",
        "variable": f"var{i % 4}",
        "ts": T0 + timedelta(seconds=i),
        "value": float(i),
    }
    fields.update(changes)
    return Observation(**fields)


class FakeProducer:
    """Records sends; each send's future is resolved by the test (or on flush)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.started = False
        self.stopped = False
        self.fail_flush: Exception | None = None

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def flush(self) -> None:
        if self.fail_flush is not None:
            raise self.fail_flush
        for future in self.futures:
            if not future.done():
                future.set_result(None)

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, key, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


INVALID_FEEDBACK = [
    _feedback(1, rule=""),
    _feedback(1, rule="r" * 201),
    _feedback(1, weight=0.0),
    _feedback(1, weight=math.nan),
    _feedback(1, error=-1.0),
    _feedback(1, ts=datetime(2024, 1, 1)),  # naive
]


@pytest.mark.parametrize("event", INVALID_FEEDBACK)
async def test_invalid_feedback_raises_and_is_not_sent(event: Feedback) -> None:
    fake = FakeProducer()
    async with FeedbackPublisher("unused:9092", producer=fake) as publisher:
        with pytest.raises(DecodeError):
            await publisher.publish(event)
    assert fake.sent == []
    assert fake.stopped


async def test_invalid_observation_raises_and_is_not_sent() -> None:
    fake = FakeProducer()
    async with ObservationPublisher("unused:9092", producer=fake) as publisher:
        for bad in (_observation(1, value=math.inf), _observation(1, variable="")):
            with pytest.raises(DecodeError):
                await publisher.publish(bad)
        with pytest.raises(DecodeError):
            await publisher.publish(_observation(1, source={1, 2}))  # not encodable
    assert fake.sent == []


async def test_oversized_event_is_rejected() -> None:
    fake = FakeProducer()
    async with ObservationPublisher("unused:9092", producer=fake, max_event_bytes=100) as pub:
        with pytest.raises(DecodeError) as info:
            await pub.publish(_observation(1, source="x" * 200))
    assert info.value.reason == "oversized"
    assert fake.sent == []


async def test_keys_topic_and_values_round_trip() -> None:
    fake = FakeProducer()
    async with FeedbackPublisher("unused:9092", topic="t.fb", producer=fake) as publisher:
        assert await publisher.publish_many(_feedback(i) for i in range(5)) == 5
    assert [(t, k) for t, k, _ in fake.sent] == [
        ("t.fb", f"rule.r{i % 3}".encode()) for i in range(5)
    ]
    assert [decode_feedback(v) for _, _, v in fake.sent] == [_feedback(i) for i in range(5)]


async def test_publish_many_is_all_or_nothing() -> None:
    fake = FakeProducer()
    events = [_observation(0), _observation(1, value=math.nan), _observation(2)]
    async with ObservationPublisher("unused:9092", producer=fake) as publisher:
        with pytest.raises(DecodeError):
            await publisher.publish_many(events)
    assert fake.sent == []


async def test_publish_does_not_wait_for_delivery() -> None:
    fake = FakeProducer()
    publisher = ObservationPublisher("unused:9092", producer=fake)
    await publisher.start()
    await publisher.publish(_observation(0))
    await publisher.publish(_observation(1))
    assert publisher.pending == 2  # nothing delivered yet, and publish returned anyway
    await publisher.flush()
    assert publisher.pending == 0
    await publisher.stop()


async def test_delivery_error_surfaces_on_next_publish_once() -> None:
    fake = FakeProducer()
    async with FeedbackPublisher("unused:9092", producer=fake) as publisher:
        await publisher.publish(_feedback(0))
        fake.futures[0].set_exception(NotLeaderForPartitionError())
        with pytest.raises(KafkaError) as info:
            await publisher.publish(_feedback(1))
        assert isinstance(info.value.__cause__, NotLeaderForPartitionError)
        assert info.value.retriable
        assert len(fake.sent) == 1  # the failing call sent nothing
        await publisher.publish(_feedback(1))  # reported once, then publishing goes on
    assert len(fake.sent) == 2


async def test_delivery_error_surfaces_on_close() -> None:
    fake = FakeProducer()
    publisher = FeedbackPublisher("unused:9092", producer=fake)
    await publisher.start()
    await publisher.publish(_feedback(0))
    fake.futures[0].set_exception(KafkaTimeoutError())
    with pytest.raises(KafkaError, match="1 earlier send"):
        await publisher.stop()
    assert fake.stopped  # closed even though the flush reported a failure


async def test_flush_failure_is_wrapped_and_producer_still_stopped() -> None:
    fake = FakeProducer()
    fake.fail_flush = KafkaTimeoutError()
    publisher = FeedbackPublisher("unused:9092", producer=fake)
    await publisher.start()
    with pytest.raises(KafkaError) as info:
        await publisher.stop()
    assert isinstance(info.value.__cause__, KafkaTimeoutError)
    assert fake.stopped


async def test_start_failure_is_wrapped_and_cleaned_up() -> None:
    class Unreachable(FakeProducer):
        async def start(self) -> None:
            raise KafkaConnectionError("no broker")

    fake = Unreachable()
    with pytest.raises(KafkaError) as info:
        await FeedbackPublisher("unused:9092", producer=fake).start()
    assert info.value.retriable
    assert isinstance(info.value.__cause__, KafkaConnectionError)
    assert fake.stopped


async def test_publish_before_start_is_refused() -> None:
    publisher = FeedbackPublisher("unused:9092", producer=FakeProducer())
    with pytest.raises(RuntimeError):
        await publisher.publish(_feedback(0))


# ----------------------------------------------------------------------- real broker


@pytest_asyncio.fixture(loop_scope="function")
async def topic(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(unique_name, 3, 1)])
        yield unique_name
        await admin.delete_topics([unique_name])
    finally:
        await admin.close()


async def _read(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[tuple[bytes, bytes]] = []
    try:
        # Bounded: at most 60 empty polls of 0.5 s before giving up.
        for _ in range(60):
            batch = await consumer.getmany(timeout_ms=500)
            records += [(r.key, r.value) for rs in batch.values() for r in rs]
            if len(records) >= expected:
                break
        # One more poll proves nothing extra (such as a rejected event) was written.
        batch = await consumer.getmany(timeout_ms=500)
        records += [(r.key, r.value) for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    return records


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_feedback_reaches_the_broker_keyed_by_rule(kafka_bootstrap: str, topic: str) -> None:
    events = [_feedback(i) for i in range(30)]
    async with FeedbackPublisher(kafka_bootstrap, topic=topic) as publisher:
        await publisher.publish_many(events[:10])
        for event in events[10:]:
            await publisher.publish(event)
        with pytest.raises(DecodeError):
            await publisher.publish(_feedback(99, weight=-1.0))
    records = await _read(kafka_bootstrap, topic, len(events))
    assert len(records) == len(events)
    decoded = [(key, decode_feedback(value)) for key, value in records]
    assert all(key == fb.rule_id.encode() for key, fb in decoded)
    assert sorted(fb.event_id for _, fb in decoded) == sorted(e.event_id for e in events)
    # One key lives in one partition, so each rule's events come back in publish order.
    for rule in {e.rule_id for e in events}:
        got = [fb for _, fb in decoded if fb.rule_id == rule]
        assert got == [e for e in events if e.rule_id == rule]


@pytest.mark.kafka
@pytest.mark.timeout(120)
async def test_observations_reach_the_broker_keyed_by_variable(
    kafka_bootstrap: str, topic: str
) -> None:
    events = [_observation(i) for i in range(12)]
    async with ObservationPublisher(kafka_bootstrap, topic=topic, linger_ms=20) as publisher:
        await publisher.publish_many(events)
        await publisher.flush()
        assert publisher.pending == 0
    records = await _read(kafka_bootstrap, topic, len(events))
    decoded = {decode_observation(value).event_id: key for key, value in records}
    assert decoded == {e.event_id: e.variable.encode() for e in events}
