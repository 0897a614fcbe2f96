"""The periodic one-line summary, and the gauges that are sampled rather than counted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from aiokafka import AIOKafkaConsumer

from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.progress import Progress
from stream_trainer.tasks import TaskManager

log = logging.getLogger(__name__)

STATUSES = ("active", "probation", "retired")


class Summary:
    """Every `interval_s`: lag and model gauges, then one INFO line (events/s, lag)."""

    def __init__(
        self,
        metrics: TrainerMetrics,
        tasks: TaskManager,
        progress: Progress,
        consumer: AIOKafkaConsumer,
        interval_s: float,
    ) -> None:
        self._metrics = metrics
        self._tasks = tasks
        self._progress = progress
        self._consumer = consumer
        self._interval_s = interval_s
        self._lag_labels: set[tuple[str, str]] = set()

    async def run(self) -> None:
        last_events, last_time = self._progress.events, time.monotonic()
        while True:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic()
            rate = (self._progress.events - last_events) / (now - last_time)
            last_events, last_time = self._progress.events, now
            lag = self.update_lag()
            self.update_model_gauges()
            log.info(
                "summary: %.0f events/s, %d batches, lag %d",
                rate,
                self._progress.batches_queued,
                lag,
                extra={"events_per_s": round(rate), "lag": lag},
            )

    def update_lag(self) -> int:
        """Per partition: high watermark minus our committed offset. Returns the total."""
        total = 0
        reported: set[tuple[str, str]] = set()
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            task = self._tasks.tasks.get(tp.partition)
            done = task.committed.get(tp) if task else None
            if high is None or done is None:
                continue
            lag = max(0, high - done)
            labels = (tp.topic, str(tp.partition))
            self._metrics.consumer_lag.labels(*labels).set(lag)
            reported.add(labels)
            total += lag
        # A partition another member owns now is reported there: drop ours.
        for labels in self._lag_labels - reported:
            self._metrics.consumer_lag.remove(*labels)
        self._lag_labels = reported
        return total

    def update_model_gauges(self) -> None:
        held: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        dedupe: Counter[str] = Counter()
        for task in self._tasks.tasks.values():
            held.update(task.state.model_counts)
            rule_summary = task.summaries.get("rule", {})
            by_status.update(rule_summary.get("status", {}))
            dedupe.update({k: v for k, v in rule_summary.items() if k.startswith("dedupe_")})
        for kind in ("rule", "model", *held):
            self._metrics.models.labels(kind=kind).set(held[kind])
        for status in STATUSES:
            self._metrics.rules_by_status.labels(status=status).set(by_status[status])
        self._metrics.dedupe_ids.set(dedupe["dedupe_ids"])
        self._metrics.dedupe_bytes.set(dedupe["dedupe_bytes"])
        self._metrics.dedupe_evicted.set(dedupe["dedupe_evicted"])
