"""Latency: feedback produced -> its RuleVersion visible to a ``read_committed`` consumer.

A trainer (exactly-once) runs on fresh topics; after a warm-up, the driver produces the
seeded mix at a steady rate for ``duration_s`` while a ``read_committed`` consumer tails
``rule-versions``. Feedback timestamps are strictly increasing per rule (no late feedback),
so a feedback event is visible once a RuleVersion of its rule has ``trained_through`` >= its
ts; its latency is that version's receive time minus the event's send time (one clock, one
process). The driver shares the 2 cores with the trainer and the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.common import SEED, Topics, Workload
from stream_trainer.events import RuleVersion, decode_feedback, ts_s
from stream_trainer.kafka.clients import stop_consumer
from stream_trainer.synthetic import FEEDBACK, SyntheticPulse
from tests.integration import harness

TICK_S = 0.01
WARMUP_EVENTS = 2000


class _Tracker:
    """Feedback sent but not yet visible, per rule, in ts order."""

    def __init__(self) -> None:
        self.pending: dict[str, deque[tuple[float, float]]] = defaultdict(deque)
        self.latencies: list[float] = []
        self.outstanding = 0
        self.all_seen = asyncio.Event()

    def sent(self, rule_id: str, ts: float, at: float) -> None:
        self.pending[rule_id].append((ts, at))
        self.outstanding += 1
        self.all_seen.clear()

    def seen(self, version: RuleVersion, at: float) -> None:
        queue = self.pending.get(version.rule_id)
        through = ts_s(version.trained_through)
        while queue and queue[0][0] <= through:
            _, sent_at = queue.popleft()
            self.latencies.append(at - sent_at)
            self.outstanding -= 1
        if self.outstanding == 0:
            self.all_seen.set()


async def run_latency(
    bootstrap: str, rate: float, duration_s: float, log_dir: Path, workload: Workload
) -> dict[str, Any]:
    topics = Topics(f"blat-{uuid.uuid4().hex[:8]}")
    await harness.create_inputs(bootstrap, topics, workload.partitions)
    n = WARMUP_EVENTS + int(rate * duration_s)
    pulse = SyntheticPulse(SEED + 1, workload.n_variables, workload.n_rules, late_fraction=0.0)
    records = list(pulse.records(n))
    await harness.produce(bootstrap, topics, records[:WARMUP_EVENTS])
    log_path = log_dir / f"latency-{topics.prefix}.log"
    proc = harness.start_trainer(bootstrap, topics, log_path, log_level="WARNING")
    try:
        await harness.wait_consumed(bootstrap, topics, timeout_s=120, procs=[proc])
        tracker = _Tracker()
        tail = asyncio.create_task(_tail(bootstrap, topics.rule_versions, tracker))
        try:
            await asyncio.sleep(0.5)  # the tail consumer is positioned at the end
            sent_s = await _produce_steadily(
                bootstrap, topics, records[WARMUP_EVENTS:], rate, tracker
            )
            with contextlib.suppress(TimeoutError):  # what is still unseen is reported
                await asyncio.wait_for(tracker.all_seen.wait(), timeout=30)
        finally:
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)
    finally:
        harness.stop_trainer(proc)
    lat = np.array(tracker.latencies) * 1000.0
    return {
        "target_rate": rate,
        "achieved_rate": (n - WARMUP_EVENTS) / sent_s,
        "feedback_events": len(tracker.latencies) + tracker.outstanding,
        "unmatched": tracker.outstanding,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "max_ms": float(lat.max()) if len(lat) else None,
        "log": str(log_path),
    }


async def _produce_steadily(
    bootstrap: str,
    topics: Topics,
    records: Sequence[harness.InputRecord],
    rate: float,
    tracker: _Tracker,
) -> float:
    """Send ``records`` at ``rate`` per second in 10 ms ticks; returns seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    started = time.monotonic()
    try:
        sent = 0
        futures = []
        while sent < len(records):
            due = min(len(records), int((time.monotonic() - started) * rate) + 1)
            for kind, key, value in records[sent:due]:
                topic = topics.feedback if kind == FEEDBACK else topics.observations
                futures.append(await producer.send(topic, value, key=key))
                if kind == FEEDBACK:
                    fb = decode_feedback(value)
                    tracker.sent(fb.rule_id, ts_s(fb.ts), time.monotonic())
            sent = max(sent, due)
            await asyncio.sleep(TICK_S)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def _tail(bootstrap: str, topic: str, tracker: _Tracker) -> None:
    decoder = msgspec.json.Decoder(RuleVersion)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while True:
            fetched = await consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in fetched.values():
                for record in records:
                    tracker.seen(decoder.decode(record.value), now)
    finally:
        await stop_consumer(consumer)
