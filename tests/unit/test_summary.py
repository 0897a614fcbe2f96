"""`ops.summary.Summary`: sampled gauges from fake tasks and a fake consumer, and its line."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import TopicPartition

from stream_trainer.aio import cancel_and_wait
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.ops.summary import Summary
from stream_trainer.progress import Progress

OBS, FB = "obs", "fb"


@dataclass
class FakeState:
    model_counts: dict[str, int]


@dataclass
class FakeTask:
    counts: dict[str, int]
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def state(self) -> FakeState:
        return FakeState(self.counts)


@dataclass
class FakeTasks:
    tasks: dict[int, FakeTask] = field(default_factory=dict)


class FakeConsumer:
    def __init__(self) -> None:
        self.high: dict[TopicPartition, int | None] = {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.high)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high[tp]


def summary(tasks: FakeTasks, consumer: FakeConsumer, interval_s: float = 10.0) -> Summary:
    return Summary(TrainerMetrics(), tasks, Progress(), consumer, interval_s)  # type: ignore[arg-type]


def gauge(s: Summary, name: str, **labels: str) -> float | None:
    value = s._metrics.registry.get_sample_value(f"stream_trainer_{name}", labels)
    return None if value is None else float(value)


def rule_summary(active: int, probation: int, retired: int, ids: int) -> dict[str, Any]:
    return {
        "status": {"active": active, "probation": probation, "retired": retired},
        "dedupe_ids": ids,
        "dedupe_bytes": 32 * ids,
        "dedupe_evicted": ids // 10,
    }


def test_lag_is_the_high_watermark_minus_the_committed_offset() -> None:
    consumer = FakeConsumer()
    consumer.high = {
        TopicPartition(OBS, 0): 100,
        TopicPartition(FB, 0): 7,
        TopicPartition(OBS, 1): 50,
        TopicPartition(FB, 1): None,  # no fetch yet: no watermark
    }
    tasks = FakeTasks(
        {
            0: FakeTask({}, {TopicPartition(OBS, 0): 60, TopicPartition(FB, 0): 9}),
            1: FakeTask({}, {}),  # nothing committed yet
        }
    )
    s = summary(tasks, consumer)
    assert s.update_lag() == 40
    assert gauge(s, "consumer_lag", topic=OBS, partition="0") == 40
    assert gauge(s, "consumer_lag", topic=FB, partition="0") == 0  # never negative
    assert gauge(s, "consumer_lag", topic=OBS, partition="1") is None
    assert gauge(s, "consumer_lag", topic=FB, partition="1") is None


def test_lag_of_a_partition_this_member_no_longer_owns_is_not_reported() -> None:
    # Another member reports it now; a stale value here would be counted twice.
    consumer = FakeConsumer()
    consumer.high = {TopicPartition(OBS, 0): 100}
    tasks = FakeTasks({0: FakeTask({}, {TopicPartition(OBS, 0): 60})})
    s = summary(tasks, consumer)
    s.update_lag()
    consumer.high = {}
    tasks.tasks.clear()
    assert s.update_lag() == 0
    assert gauge(s, "consumer_lag", topic=OBS, partition="0") is None


def test_model_gauges_sum_the_tasks() -> None:
    tasks = FakeTasks(
        {
            0: FakeTask({"rule": 3, "model": 5}, summaries={"rule": rule_summary(2, 1, 0, 30)}),
            1: FakeTask({"rule": 1, "model": 0}, summaries={"rule": rule_summary(0, 0, 1, 10)}),
            2: FakeTask({"rule": 0, "model": 2}),  # not summarised yet
        }
    )
    s = summary(tasks, FakeConsumer())
    s.update_model_gauges()
    assert gauge(s, "models", kind="rule") == 4
    assert gauge(s, "models", kind="model") == 7
    assert gauge(s, "rules", status="active") == 2
    assert gauge(s, "rules", status="probation") == 1
    assert gauge(s, "rules", status="retired") == 1
    assert gauge(s, "dedupe_ids") == 40
    assert gauge(s, "dedupe_bytes") == 32 * 40
    assert gauge(s, "dedupe_evicted") == 4


def test_model_gauges_fall_to_zero_when_the_tasks_are_revoked() -> None:
    tasks = FakeTasks(
        {0: FakeTask({"rule": 3, "model": 5}, summaries={"rule": rule_summary(3, 0, 0, 9)})}
    )
    s = summary(tasks, FakeConsumer())
    s.update_model_gauges()
    tasks.tasks.clear()
    s.update_model_gauges()
    assert gauge(s, "rules", status="active") == 0
    assert gauge(s, "dedupe_ids") == 0
    assert gauge(s, "models", kind="rule") == 0, "the gauge keeps the revoked tasks' count"
    assert gauge(s, "models", kind="model") == 0


async def test_run_logs_a_summary_line_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer()
    consumer.high = {TopicPartition(OBS, 0): 12}
    tasks = FakeTasks({0: FakeTask({"model": 1}, {TopicPartition(OBS, 0): 2})})
    s = summary(tasks, consumer, interval_s=0.001)
    s._progress.batches_queued = 3
    with caplog.at_level(logging.INFO, logger="stream_trainer.ops.summary"):
        runner = asyncio.create_task(s.run())
        for _ in range(1000):
            if any("summary:" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.001)
        await cancel_and_wait(runner)
    line = next(r for r in caplog.records if "summary:" in r.getMessage())
    assert "3 batches, lag 10" in line.getMessage()
    assert line.lag == 10  # type: ignore[attr-defined]  # structured field for json logs
    assert gauge(s, "models", kind="model") == 1
