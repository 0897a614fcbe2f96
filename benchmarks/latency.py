"""Latency: feedback produced -> its RuleVersion visible to a ``read_committed`` consumer.

A trainer (exactly-once) runs on fresh topics; after a warm-up, the driver produces the
seeded mix at a steady rate for ``duration_s`` while a ``read_committed`` consumer tails
``rule-versions``. Feedback timestamps are strictly increasing per rule (no late feedback),
so a feedback event is visible once a RuleVersion of its rule has ``trained_through`` >= its
ts; its latency is that version's receive time minus the event's send time (one clock, one
process). The records are partitioned (the default partitioner's murmur2, as the trainer's
co-partitioning expects) and decoded before the clock starts, and each 10 ms tick sends one
batch per partition, so the driver can keep up with 10k events/s on a shared machine. It
shares the 2 cores with the trainer and the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.common import FEEDBACK, SEED, SyntheticPulse, Topics, Workload
from benchmarks.paced import Partitioner, send_batches
from stream_trainer.events import RuleVersion, decode_feedback, ts_s
from stream_trainer.kafka.clients import stop_consumer
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
    planned = _plan(records[WARMUP_EVENTS:], topics, workload.partitions)
    await harness.produce(bootstrap, topics, records[:WARMUP_EVENTS])
    log_path = log_dir / f"latency-{topics.prefix}.log"
    # INFO: harness.stop_trainer waits for the "trainer started" line before its SIGTERM.
    proc = harness.start_trainer(
        bootstrap, topics, log_path, log_level="INFO", summary_interval_s=60
    )
    try:
        await harness.wait_consumed(bootstrap, topics, timeout_s=120, procs=[proc])
        tracker = _Tracker()
        tail = asyncio.create_task(_tail(bootstrap, topics.rule_versions, tracker))
        try:
            await asyncio.sleep(0.5)  # the tail consumer is positioned at the end
            sent_s = await _produce_steadily(bootstrap, planned, rate, tracker)
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


@dataclass(frozen=True, slots=True)
class _Planned:
    """One record to send, with its partition and (feedback only) what the tracker needs."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    rule_id: str | None
    ts: float


def _plan(
    records: Sequence[harness.InputRecord], topics: Topics, partitions: int
) -> list[_Planned]:
    """Partition and decode before the clock starts: the paced loop only sends."""
    place = Partitioner(topics, partitions)
    planned = []
    for kind, key, value in records:
        fb = decode_feedback(value) if kind == FEEDBACK else None
        planned.append(
            _Planned(
                *place(kind, key),
                key,
                value,
                fb.rule_id if fb is not None else None,
                ts_s(fb.ts) if fb is not None else 0.0,
            )
        )
    return planned


async def _produce_steadily(
    bootstrap: str, planned: Sequence[_Planned], rate: float, tracker: _Tracker
) -> float:
    """Send ``planned`` at ``rate`` per second in 10 ms ticks; returns seconds taken."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    started = time.monotonic()
    try:
        sent = 0
        futures: list[asyncio.Future[Any]] = []
        while sent < len(planned):
            due = min(len(planned), int((time.monotonic() - started) * rate) + 1)
            tick = planned[sent:due]
            futures += await send_batches(
                producer, [(r.topic, r.partition, r.key, r.value) for r in tick]
            )
            now = time.monotonic()
            for record in tick:
                if record.rule_id is not None:
                    tracker.sent(record.rule_id, record.ts, now)
            sent = max(sent, due)
            await asyncio.sleep(TICK_S)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def _tail(bootstrap: str, topic: str, tracker: _Tracker) -> None:
    decoder = msgspec.json.Decoder(RuleVersion)
    # A read_committed fetch that finds nothing new is parked by the broker for up to
    # fetch_max_wait_ms, and a commit marker does not always wake it: with the default
    # 500 ms the reader, not the trainer, would set the figure.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        fetch_max_wait_ms=20,
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
