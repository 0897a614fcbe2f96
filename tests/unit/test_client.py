"""Publishers (`stream_trainer.client`) against a fake producer: validation, keys, errors.

The same publishers against a real broker: `tests/integration/test_client_broker.py`.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NotLeaderForPartitionError

from stream_trainer.client import FeedbackPublisher, ObservationPublisher
from stream_trainer.errors import DecodeError, EncodeError, KafkaError
from stream_trainer.events import Feedback, decode_feedback
from tests.sample_events import feedback as _feedback
from tests.sample_events import observation as _observation


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
        with pytest.raises(EncodeError):
            await publisher.publish(_observation(1, source=object()))  # not encodable
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
