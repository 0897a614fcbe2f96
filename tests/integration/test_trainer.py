"""The streaming trainer end to end on a real broker (issue 3).

The trainer runs as a real subprocess through its CLI; the outputs are read back
``read_committed`` and compared with the sequential reference learners.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from stream_trainer.batching import PendingBatch
from stream_trainer.config import load_settings
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.service import Collaborators, Trainer
from stream_trainer.tasks import TaskManager
from tests.integration import harness as h

pytestmark = pytest.mark.kafka


async def test_cli_run_learns_exactly_the_reference_models_and_drains_on_sigterm(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics, records = await h.seeded_stream(
        kafka_bootstrap, "core", partitions=4, seed=11, models=300, events=40_000
    )

    proc = h.start_trainer(kafka_bootstrap, topics, tmp_path / "trainer.log")
    try:
        await h.wait_consumed(kafka_bootstrap, topics, timeout_s=180, procs=[proc])
    finally:
        rc = h.stop_trainer(proc)
    assert rc == 0, (tmp_path / "trainer.log").read_text()[-3000:]

    ends = await h.end_offsets(kafka_bootstrap, [topics.observations, topics.feedback])
    committed = await h.committed_offsets(kafka_bootstrap, topics.application_id)
    assert {tp: committed.get(tp) for tp in ends} == ends

    outputs = await h.read_outputs(kafka_bootstrap, topics)
    expected = h.expected_models(records)
    assert h.verify(outputs, expected) == []
    assert len(outputs.rules) == 300 and len(outputs.models) == 300
    log = (tmp_path / "trainer.log").read_text()
    assert "received SIGTERM: draining" in log and "trainer stopped" in log


async def test_sigterm_drains_while_input_is_still_arriving(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A stop mid-stream commits what it applied; a second run finishes: still exact."""
    topics, records = await h.seeded_stream(
        kafka_bootstrap, "drain", partitions=2, seed=12, models=100, events=30_000,
        produce_first=15_000,
    )  # fmt: skip
    log = tmp_path / "trainer.log"
    proc = h.start_trainer(kafka_bootstrap, topics, log, max_batch_events=500)
    await h.wait_consumed(kafka_bootstrap, topics, timeout_s=120, procs=[proc])
    producing = asyncio.create_task(h.produce(kafka_bootstrap, topics, records[15_000:]))
    await asyncio.sleep(0.3)
    assert h.stop_trainer(proc) == 0
    await producing
    proc = h.start_trainer(kafka_bootstrap, topics, log)
    try:
        await h.wait_consumed(kafka_bootstrap, topics, timeout_s=120, procs=[proc])
    finally:
        assert h.stop_trainer(proc) == 0
    outputs = await h.read_outputs(kafka_bootstrap, topics)
    assert h.verify(outputs, h.expected_models(records)) == []


class _Slow:
    """The task manager, 20 ms slower per batch: the queue fills, partitions pause."""

    def __init__(self, tasks: TaskManager) -> None:
        self._tasks = tasks

    async def process(self, batch: PendingBatch) -> None:
        await asyncio.sleep(0.02)
        await self._tasks.process(batch)

    def commit_due_in(self, task: int) -> float | None:
        return self._tasks.commit_due_in(task)

    async def commit(self, task: int) -> None:
        await self._tasks.commit(task)


async def test_backpressure_pauses_partitions_and_loses_nothing(kafka_bootstrap: str) -> None:
    """A slow worker and a one-batch queue: partitions pause, memory stays bounded."""
    topics, records = await h.seeded_stream(
        kafka_bootstrap, "backpressure", partitions=2, seed=13, models=50, events=6_000
    )
    settings = load_settings(
        environ=topics.env(kafka_bootstrap),
        max_batch_events=200,
        queue_max_batches=1,
        worker_concurrency=1,
        processing_guarantee="at_least_once",
    )
    trainer = Trainer(
        settings,
        TrainerMetrics(),
        until_end=True,
        serve_http=False,
        parts=Collaborators(processor=_Slow),
    )
    paused_seen = 0
    max_held = 0
    await trainer.start()
    try:
        deadline = time.monotonic() + 120
        while not trainer._loop_task.done():  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "trainer did not reach the end"
            paused_seen = max(paused_seen, len(trainer.paused_tasks))
            max_held = max(max_held, trainer.held_batches)
            await asyncio.sleep(0.005)
        await trainer.wait()
    finally:
        await trainer.stop()
    assert paused_seen >= 1, "the consumer never paused a partition"
    assert trainer.paused_tasks == set(), "partitions stayed paused after the backlog cleared"
    # Per task: one queued, one in flight, and at most two closed by the fetch that found
    # the queue full: never the whole 6,000-event input (30 batches).
    assert max_held <= 2 * (1 + 1 + 2)
    outputs = await h.read_outputs(kafka_bootstrap, topics)
    assert h.verify(outputs, h.expected_models(records)) == []
