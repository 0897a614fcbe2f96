"""`stream-trainer backfill`: publish files into the input topics, keyed as the service expects.

Every line is validated first with the service's decoders. Valid events are sent keyed by
``variable`` / ``rule_id`` (Kafka's default partitioner, so each model's events land in one
partition, in file order) through an idempotent producer, in batches, optionally at a
limited rate. Invalid lines are reported as ``file:line`` and not sent, unless
``send_invalid`` (then the trainer dead-letters them). A rerun after an interruption is
harmless for observations (refused by ts) and for feedback within the trainer's dedupe
window (refused by event id); an interrupted run names the last line Kafka acknowledged,
for ``--resume-after``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.bridge.chunks import Mark, Prepared, chunks, prepare, resume_point
from stream_trainer.bridge.files import display_name
from stream_trainer.bridge.inputs import FileStats, PlannedFile, plan_inputs
from stream_trainer.bridge.progress import FileProgress
from stream_trainer.bridge.records import Rows
from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.kafka.producers import start_producer
from stream_trainer.kafka.sender import OutputRecord, send_records

IN_FLIGHT_BATCHES: Final = 4  # sends not yet acknowledged
RATE_SLICE_S: Final = 0.05  # under --rate, send ~50 ms of events at a time
TOPIC_CHECK_S: Final = 15.0
PRODUCER_OVERRIDES: Final[dict[str, Any]] = {
    "client_id": "stream-trainer-backfill",
    "linger_ms": 20,
    "max_batch_size": 512 * 1024,
}


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    observations: Sequence[str]
    feedback: Sequence[str]
    rate: float | None = None  # events/s
    dry_run: bool = False
    send_invalid: bool = False
    limit: int | None = None  # stop after this many event rows
    report_limit: int = 20
    resume_after: Mark | None = None  # (file, line): send only what follows


@dataclass(slots=True)
class BackfillResult:
    stats: list[FileStats] = field(default_factory=list)
    invalid: int = 0
    sent: int = 0
    duration_s: float = 0.0
    interrupted: bool = False
    sent_through: Mark | None = None


class Sender:
    """Batched sends, a bounded number of unacknowledged batches, a rate limit, marks."""

    def __init__(self, producer: AIOKafkaProducer | None, rate: float | None) -> None:
        self._producer = producer
        self._rate = rate
        self._started = time.monotonic()
        self._queued = 0
        self._in_flight: deque[tuple[list[asyncio.Future[Any]], int, Mark]] = deque()
        self.acknowledged = 0
        self.acknowledged_through: Mark | None = None  # every line up to here is in Kafka

    async def send(self, name: str, prepared: Prepared, stop: asyncio.Event) -> bool:
        """Send a chunk (in slices of ~50 ms under a rate); False when stopped part-way."""
        records, lines = prepared.records, prepared.lines
        step = max(1, int(self._rate * RATE_SLICE_S)) if self._rate else max(1, len(records))
        for start in range(0, len(records), step):
            if stop.is_set():
                return False
            end = min(start + step, len(records))
            last = end == len(records)
            await self._pace(end - start)
            await self._send(
                records[start:end], (name, prepared.last_line if last else lines[end - 1])
            )
        if not records:  # every line invalid and not sent: done once the earlier ones are
            await self._send([], (name, prepared.last_line))
        return True

    async def flush(self) -> None:
        while self._in_flight:
            await self._settle_oldest()

    async def _pace(self, count: int) -> None:
        if self._rate:
            # Each slice starts no earlier than its place in an even schedule.
            delay = self._started + self._queued / self._rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        self._queued += count

    async def _send(self, records: list[OutputRecord], mark: Mark) -> None:
        futures: list[asyncio.Future[Any]] = []
        if self._producer is not None and records:
            try:
                futures = [f for _, f in await send_records(self._producer, records)]
            except AioKafkaError as exc:
                raise KafkaError(f"backfill send failed: {exc!r}") from exc
        self._in_flight.append((futures, len(records), mark))
        while len(self._in_flight) > IN_FLIGHT_BATCHES:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        futures, count, mark = self._in_flight.popleft()
        try:
            await asyncio.gather(*futures)
        except AioKafkaError as exc:
            raise KafkaError(f"backfill send failed: {exc!r}") from exc
        self.acknowledged += count
        self.acknowledged_through = mark


class _Backfill:
    """One backfill run: its sender, counts and reporting."""

    def __init__(
        self,
        settings: Settings,
        options: BackfillOptions,
        sender: Sender,
        progress: FileProgress,
        report: Callable[[str], None],
        stop: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.options = options
        self.sender = sender
        self.progress = progress
        self.report = report
        self.stop = stop
        self.result = BackfillResult()
        self.cut_short = False  # stopped by `stop` with input left to send

    @property
    def rows(self) -> int:
        return sum(s.records for s in self.result.stats)

    def remaining(self) -> int | None:
        return None if self.options.limit is None else self.options.limit - self.rows

    async def file(self, planned: PlannedFile, index: int, count: int, after_line: int) -> None:
        stats = FileStats(planned, planned.item.size)
        self.result.stats.append(stats)
        self.progress.start(index + 1, count, display_name(planned.item), stats.size)
        source = chunks(planned, self.remaining(), after_line)
        try:
            while True:
                # Reading and validating block: off the event loop, one chunk at a time.
                prepared = await asyncio.to_thread(self._next, planned, source)
                if prepared is None:
                    break
                if self.stop.is_set():
                    self.cut_short = True
                    break
                self._count(planned, stats, prepared)
                if not await self.sender.send(planned.item.name, prepared, self.stop):
                    self.cut_short = True
                    break
                self.progress.update(prepared.position, stats.records)
        finally:
            source.close()
        self.progress.done()

    def _next(self, planned: PlannedFile, source: Generator[Rows, None, None]) -> Prepared | None:
        rows = next(source, None)
        if rows is None:
            return None
        return prepare(planned, rows, self.settings, self.options.send_invalid)

    def _count(self, planned: PlannedFile, stats: FileStats, prepared: Prepared) -> None:
        for line, reason, detail in prepared.invalid:
            stats.invalid[reason] += 1
            if self.result.invalid < self.options.report_limit:
                self.report(f"{planned.item.name}:{line}: {reason}: {detail}")
            self.result.invalid += 1
        stats.records += prepared.rows
        stats.blank += prepared.blank
        stats.done += len(prepared.records)


async def run_backfill(
    settings: Settings,
    options: BackfillOptions,
    progress: FileProgress,
    report: Callable[[str], None],
    stop: asyncio.Event,
) -> BackfillResult:
    """Validate and publish every input; stops early (cleanly) when `stop` is set."""
    planned = plan_inputs(settings, options.observations, options.feedback)
    started = time.perf_counter()
    producer = None
    if not options.dry_run:
        producer = await start_producer(settings, **PRODUCER_OVERRIDES)
        try:
            await _check_topics(producer, {p.topic for p in planned})
        except BaseException:
            await producer.stop()
            raise
    first, after_line = resume_point(planned, options.resume_after)
    run = _Backfill(settings, options, Sender(producer, options.rate), progress, report, stop)
    try:
        for index in range(first, len(planned)):
            remaining = run.remaining()
            if remaining is not None and remaining <= 0:
                break
            if stop.is_set():
                run.cut_short = True
                break
            await run.file(planned[index], index, len(planned), after_line if index == first else 0)
        await run.sender.flush()
    finally:
        progress.abandon()
        if producer is not None:
            await producer.stop()
    result = run.result
    result.sent = run.sender.acknowledged
    result.sent_through = run.sender.acknowledged_through
    result.interrupted = run.cut_short
    result.duration_s = time.perf_counter() - started
    return result


async def _check_topics(producer: AIOKafkaProducer, topics: set[str]) -> None:
    """Fail fast (not after a send timeout) when an input topic does not exist."""
    for topic in sorted(topics):
        try:
            await asyncio.wait_for(producer.partitions_for(topic), TOPIC_CHECK_S)
        except (TimeoutError, AioKafkaError) as exc:
            raise KafkaError(
                f"input topic {topic} does not exist or cannot be reached: create it first"
            ) from exc


def summary_line(result: BackfillResult, options: BackfillOptions) -> str:
    rate = result.sent / result.duration_s if result.duration_s > 0 else 0.0
    rows = sum(s.records for s in result.stats)
    verb = "validated (dry run, nothing sent)" if options.dry_run else f"{result.sent:,} sent"
    invalid = ""
    if result.invalid:
        fate = "sent anyway" if options.send_invalid else "not sent"
        invalid = f"; {result.invalid:,} invalid ({fate})"
        if result.invalid > options.report_limit:
            invalid += f", the first {options.report_limit} listed above"
    stopped = ""
    if result.interrupted:
        where = result.sent_through
        resume = f" (to continue: --resume-after {where[0]}:{where[1]})" if where else ""
        stopped = "; interrupted" + (
            f", sent through {where[0]}:{where[1]}{resume}" if where else ""
        )
    return (
        f"backfill: {rows:,} events from {len(result.stats)} files, {verb} in "
        f"{result.duration_s:,.1f} s ({rate:,.0f} events/s){invalid}{stopped}"
    )
