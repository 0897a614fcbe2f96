"""Publishers (`stream_trainer.client`) against a real broker: keys, order, nothing extra.

Validation and delivery errors, with a fake producer: `tests/unit/test_client.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_trainer.client import FeedbackPublisher, ObservationPublisher
from stream_trainer.errors import DecodeError
from stream_trainer.events import decode_feedback, decode_observation
from tests.sample_events import feedback as _feedback
from tests.sample_events import observation as _observation


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
