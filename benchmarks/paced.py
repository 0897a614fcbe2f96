"""Steady traffic and a process's own resource use: the pieces of the CPU step and the soak.

`produce_paced` sends the seeded mix at a fixed rate (10 ms ticks, acks gathered in the
background) until a deadline; `ProcessSampler` reads a process's CPU seconds (utime +
stime of all its threads, from ``/proc/<pid>/stat``) and RSS, together with the group's
committed input offsets, every ``interval_s``. The figures are the process's own: the
driver, the broker and anything else on the machine are not in them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from benchmarks.common import FEEDBACK, SyntheticPulse, Topics, Workload, rss_bytes
from tests.integration import harness

TICK_S = 0.01
MAX_PENDING = 2_000  # batches not yet acknowledged before the producer waits for acks
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (``/proc/<pid>/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def endless(workload: Workload, rate: float, speed: float = 1.0) -> Iterator[harness.InputRecord]:
    """The workload's seeded mix for as long as it is consumed (generated lazily).

    Event time starts now and runs ``speed`` times as fast as the wall clock at ``rate``
    events/s (1:1 observations:feedback), as a live producer's would: the trust half-life
    and the dedupe window then span what they would in production.
    """
    step_s = speed * workload.n_variables / (rate * 0.5)
    start = datetime.now(UTC).replace(microsecond=0)
    pulse = SyntheticPulse(
        workload.seed, workload.n_variables, workload.n_rules, start=start, step_s=step_s
    )
    return iter(pulse.records(2**62))


@dataclass
class Sent:
    """Producer progress."""

    sent: int = 0
    started: float | None = None
    finished: float | None = None

    def rate(self) -> float | None:
        if self.started is None or self.finished is None or self.finished <= self.started:
            return None
        return self.sent / (self.finished - self.started)


async def send_batches(
    producer: AIOKafkaProducer, items: Iterable[tuple[str, int, bytes | None, bytes | None]]
) -> list[asyncio.Future[Any]]:
    """Send ``(topic, partition, key, value)`` items as one batch per partition (no send()
    per record: a Python driver then keeps up with 10k events/s on a shared machine)."""
    groups: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
    for topic, partition, key, value in items:
        groups[(topic, partition)].append((key, value))
    futures = []
    for (topic, partition), group in groups.items():
        batch = producer.create_batch()
        for key, value in group:
            while batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


class Partitioner:
    """Topic and partition of an input record, as the default (murmur2) partitioner picks."""

    def __init__(self, topics: Topics, partitions: int) -> None:
        self.topics = topics
        self.every = list(range(partitions))
        self.partitioner = DefaultPartitioner()

    def __call__(self, kind: str, key: bytes | None) -> tuple[str, int]:
        topic = self.topics.feedback if kind == FEEDBACK else self.topics.observations
        return topic, self.partitioner(key, self.every, self.every)


async def produce_paced(
    bootstrap: str,
    topics: Topics,
    records: Iterator[harness.InputRecord],
    rate: float,
    seconds: float,
    progress: Sent,
    partitions: int = 6,
) -> None:
    """Send ``records`` at ``rate`` per second for ``seconds``; wait for every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    place = Partitioner(topics, partitions)
    try:
        pending: list[asyncio.Future[Any]] = []
        started = progress.started = time.monotonic()
        while (now := time.monotonic()) < started + seconds:
            due = max(0, int((now - started) * rate) + 1 - progress.sent)
            tick = [(*place(kind, key), key, value) for kind, key, value in islice(records, due)]
            pending += await send_batches(producer, tick)
            progress.sent += len(tick)
            if len(pending) >= MAX_PENDING:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(TICK_S)
        await asyncio.gather(*pending)
        progress.finished = time.monotonic()
    finally:
        await producer.stop()


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float  # since the sampler started
    cpu_s: float
    rss_bytes: int
    committed: int  # the group's committed input offsets, summed
    sent: int


@dataclass
class ProcessSampler:
    """Samples one process and its consumer group every ``interval_s`` until cancelled."""

    bootstrap: str
    group: str
    pid: int
    sent: Sent
    interval_s: float
    samples: list[Sample] = field(default_factory=list)

    async def run(self) -> None:
        started = time.monotonic()
        while True:
            committed = await harness.committed_offsets(self.bootstrap, self.group)
            self.samples.append(
                Sample(
                    t_s=time.monotonic() - started,
                    cpu_s=cpu_seconds(self.pid),
                    rss_bytes=rss_bytes(self.pid),
                    committed=sum(committed.values()),
                    sent=self.sent.sent,
                )
            )
            await asyncio.sleep(self.interval_s)


def summarise(samples: list[Sample], warmup_s: float) -> dict[str, Any]:
    """CPU per event and RSS slope over the samples after ``warmup_s``."""
    steady = [s for s in samples if s.t_s >= warmup_s]
    if len(steady) < 2:
        return {"steady_samples": len(steady), "cpu_us_per_event": None, "rss_slope_mb_per_h": None}
    first, last = steady[0], steady[-1]
    events = last.committed - first.committed
    cpu = last.cpu_s - first.cpu_s
    hours = np.array([s.t_s for s in steady]) / 3600.0
    rss_mb = np.array([s.rss_bytes for s in steady]) / 1e6
    slope, _ = np.polyfit(hours, rss_mb, 1)
    # The second half alone tells a store still filling up to its bound (the dedupe memory
    # holds every fresh id for 24 h of event time) from steady growth.
    half = len(steady) // 2
    late = float(np.polyfit(hours[half:], rss_mb[half:], 1)[0]) if len(steady) >= 4 else None
    return {
        "steady_samples": len(steady),
        "steady_s": last.t_s - first.t_s,
        "steady_events": events,
        "steady_events_per_s": events / (last.t_s - first.t_s),
        "cpu_s": cpu,
        "cpu_us_per_event": 1e6 * cpu / events if events > 0 else None,
        "cpu_cores": cpu / (last.t_s - first.t_s),
        "rss_mb_first": float(rss_mb[0]),
        "rss_mb_last": float(rss_mb[-1]),
        "rss_mb_max": float(rss_mb.max()),
        "rss_slope_mb_per_h": float(slope),
        "rss_slope_second_half_mb_per_h": late,
    }
