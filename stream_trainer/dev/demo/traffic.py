"""The demo's traffic: a seeded Pulse stream, its input topics and a paced producer.

The stream is laid out in event time so that the trainer's own settings make it
interesting: it spans `SPAN_HALF_LIVES` trust half-lives ending now, so by the end the
degraded rule's recent failures outweigh its good past, and every variable gets enough
observations after its regime switch for the forecaster to have moved to the new regime.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.errors import TopicAlreadyExistsError

from stream_trainer.config import Settings
from stream_trainer.dev.invalid import bad_records
from stream_trainer.dev.synthetic import OBSERVATION, SyntheticPulse
from stream_trainer.errors import KafkaError
from stream_trainer.kafka.admin import partition_counts, replication_factor
from stream_trainer.kafka.clients import new_admin, new_producer

INPUT_PARTITIONS = 6
SPAN_HALF_LIVES = 4.0
FEEDBACK_RATIO = 0.5
REGIME_SWITCH_AT = 0.3  # leaves ~2 forgetting windows of the new regime at the end
DEGRADE_AT = 0.5
BAD_FRACTION = 0.005
TOPIC_VISIBLE_TIMEOUT_S = 30.0
CLIENT_ID = "stream-trainer-demo"
_TICK_S = 0.05  # the producer sends one slice of records per tick
_MAX_UNACKED_TICKS = 4  # how far sends may run ahead of broker acknowledgements

Record = tuple[str, bytes | None, bytes]
TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    """What to generate: `events` valid records plus `bad_fraction` of invalid ones."""

    seed: int
    events: int
    variables: int
    rules: int
    rate: float  # events/s; <= 0 means as fast as the broker takes them
    bad_fraction: float = BAD_FRACTION

    @property
    def bad_events(self) -> int:
        return round(self.events * self.bad_fraction)

    @property
    def total(self) -> int:
        return self.events + self.bad_events

    def pulse(self, settings: Settings, now: datetime | None = None) -> SyntheticPulse:
        """The ground truth, with a clock spanning SPAN_HALF_LIVES half-lives up to now."""
        span_s = SPAN_HALF_LIVES * settings.trust_half_life_s
        observations = max(1.0, self.events * (1.0 - FEEDBACK_RATIO))
        end = (now or datetime.now(UTC)).replace(microsecond=0)
        return SyntheticPulse(
            self.seed,
            self.variables,
            self.rules,
            start=end - timedelta(seconds=span_s),
            step_s=span_s * self.variables / observations,
            regime_switch_at=REGIME_SWITCH_AT,
            degrading_rules=1,
            degrade_at=DEGRADE_AT,
        )


def traffic(pulse: SyntheticPulse, plan: TrafficPlan, max_event_bytes: int) -> Iterator[Record]:
    """Valid records with one invalid record spread evenly every 1/bad_fraction of them."""
    bad = bad_records(pulse, plan.bad_events, max_event_bytes=max_event_bytes)
    every = round(1 / plan.bad_fraction) if plan.bad_fraction > 0 else 0
    for i, record in enumerate(pulse.records(plan.events, FEEDBACK_RATIO)):
        yield record
        if every and i % every == every - 1:
            invalid = next(bad, None)
            if invalid is not None:
                yield invalid[0], invalid[1], invalid[2]
    for kind, key, value, _ in bad:  # rounding can leave one for the very end
        yield kind, key, value


@dataclass(slots=True)
class Produced:
    """Producer progress: records sent, acknowledged, and the acknowledged end offsets."""

    sent: int = 0
    acked: int = 0
    done: bool = False
    ends: dict[TopicPartitionKey, int] = field(default_factory=dict)

    def record(self, metadata: Any) -> None:
        key = (metadata.topic, metadata.partition)
        self.ends[key] = max(self.ends.get(key, 0), metadata.offset + 1)
        self.acked += 1


async def ensure_input_topics(settings: Settings, partitions: int = INPUT_PARTITIONS) -> None:
    """Create the input topics with `partitions` partitions each, unless they exist."""
    admin = new_admin(settings, client_id=CLIENT_ID)
    try:
        await admin.start()
        counts = await partition_counts(admin)
        wanted = (settings.topic_observations, settings.topic_feedback)
        replication = replication_factor(admin, settings)
        new = [NewTopic(t, partitions, replication) for t in wanted if t not in counts]
        if new:
            # Created meanwhile by another producer is what we wanted anyway.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            await _until_described(admin, wanted)
    except AioKafkaError as exc:
        raise KafkaError(f"cannot create the demo's input topics: {exc!r}") from exc
    finally:
        await admin.close()


async def _until_described(admin: AIOKafkaAdminClient, topics: tuple[str, ...]) -> None:
    """Creation returns before every broker's metadata has the topics; the trainer's
    own topic check would then fail, so wait (briefly) until they are listed."""
    deadline = time.monotonic() + TOPIC_VISIBLE_TIMEOUT_S
    while not set(topics) <= set(await partition_counts(admin)):
        if time.monotonic() >= deadline:
            raise KafkaError(f"topics {', '.join(topics)} not visible after creation")
        await asyncio.sleep(0.1)


async def wait_reachable(settings: Settings, timeout_s: float) -> None:
    """Retry connecting until the cluster answers (compose starts Kafka alongside us)."""
    deadline = time.monotonic() + timeout_s
    while True:
        admin = new_admin(settings, client_id=CLIENT_ID)
        try:
            await admin.start()
            return
        except AioKafkaError as exc:
            if time.monotonic() >= deadline:
                raise KafkaError(
                    f"Kafka at {settings.bootstrap_servers} did not answer within "
                    f"{timeout_s:.0f} s: {exc!r}",
                    retriable=True,
                ) from exc
        finally:
            await admin.close()
        await asyncio.sleep(1.0)


def demo_producer(settings: Settings) -> AIOKafkaProducer:
    return new_producer(
        settings,
        client_id=CLIENT_ID,
        linger_ms=20,
        # The invalid records include a few just over max_event_bytes (64 KiB by default).
        max_request_size=4 * max(settings.max_event_bytes, 256 * 1024),
    )


async def produce(
    settings: Settings, records: Iterable[Record], rate: float, produced: Produced
) -> None:
    """Send `records` at about `rate` records/s, keyed, and wait for every acknowledgement."""
    producer = demo_producer(settings)
    try:
        await producer.start()
        await _paced_send(producer, settings, records, rate, produced)
        await producer.flush()
    except AioKafkaError as exc:
        raise KafkaError(f"demo producer failed: {exc!r}", retriable=exc.retriable) from exc
    finally:
        await producer.stop()
    produced.done = True


async def _paced_send(
    producer: AIOKafkaProducer,
    settings: Settings,
    records: Iterable[Record],
    rate: float,
    produced: Produced,
) -> None:
    per_tick = max(1, round(rate * _TICK_S)) if rate > 0 else 1000
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending: list[asyncio.Future[Any]] = []
    source = iter(records)
    while chunk := list(itertools.islice(source, per_tick)):
        for kind, key, value in chunk:
            topic = settings.topic_observations if kind == OBSERVATION else settings.topic_feedback
            pending.append(await producer.send(topic, value, key=key))
        produced.sent += len(chunk)
        if len(pending) >= _MAX_UNACKED_TICKS * per_tick:
            await _settle(pending, produced)
        delay = started + produced.sent / rate - loop.time() if rate > 0 else 0.0
        await asyncio.sleep(max(delay, 0.0))  # also lets the trainer run between slices
    await _settle(pending, produced)


async def _settle(pending: list[asyncio.Future[Any]], produced: Produced) -> None:
    for metadata in await asyncio.gather(*pending):
        produced.record(metadata)
    pending.clear()
