"""Exactly-once, recovery and scale-out: kill -9 at any instant changes nothing.

Modelled on Kafka Streams' EOS system tests: pre-fill the inputs, run the trainer as a
real subprocess, SIGKILL it at seeded random moments, restart it each time, let it
finish, then read every output ``read_committed`` from the beginning and verify it against
the sequential reference learners (values, versions 1..n per key, every input accounted
for exactly once). The same verifier run under at-least-once must find duplicates.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from pathlib import Path

import pytest

from stream_trainer.dev.broker.local_broker import LocalKafkaBroker
from tests.integration import harness as h

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

KILLS = 10
EVENTS = 100_000


async def _kill_repeatedly(
    bootstrap: str, topics: h.Topics, log: Path, seed: int, **settings: object
) -> int:
    """Start, SIGKILL after a random delay, restart: KILLS times. Returns kills that hit work."""
    rng = random.Random(seed)
    hits = 0
    for _ in range(KILLS):
        proc = h.start_trainer(bootstrap, topics, log, group_instance_id="slot-0", **settings)
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        assert proc.poll() is None, log.read_text()[-2000:]
        before = await h.committed_offsets(bootstrap, topics.application_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        hits += int(sum(before.values()) < EVENTS)
    return hits


async def _finish(bootstrap: str, topics: h.Topics, log: Path, **settings: object) -> None:
    proc = h.start_trainer(bootstrap, topics, log, group_instance_id="slot-0", **settings)
    try:
        await h.wait_consumed(bootstrap, topics, timeout_s=300, procs=[proc])
    finally:
        assert h.stop_trainer(proc) == 0


async def _prefill(bootstrap: str, label: str, seed: int) -> tuple[h.Topics, list[h.InputRecord]]:
    return await h.seeded_stream(
        bootstrap, label, partitions=4, seed=seed, models=400, events=EVENTS
    )


async def test_kill_9_ten_times_gives_exactly_the_uninterrupted_models(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics, records = await _prefill(kafka_bootstrap, "eos", seed=21)
    log = tmp_path / "trainer.log"
    # Small batches: many transactions, so the kills land mid-stream, not after the end.
    settings = {
        "max_batch_events": 200,
        "commit_interval_ms": 20,
        "processing_guarantee": "exactly_once",
    }
    hits = await _kill_repeatedly(kafka_bootstrap, topics, log, seed=4, **settings)
    assert hits >= 3, "the kills should land while there is work in flight"
    await _finish(kafka_bootstrap, topics, log, **settings)

    outputs = await h.read_outputs(kafka_bootstrap, topics)
    problems = h.verify(outputs, h.expected_models(records))
    assert problems == [], h.summarize(problems)


async def test_the_verifier_detects_duplicates_under_at_least_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics, records = await _prefill(kafka_bootstrap, "alo", seed=22)
    log = tmp_path / "trainer.log"
    # Many commits: a kill between publishing and committing the offsets (the window in
    # which at-least-once duplicates) is then all but certain among the ten.
    settings = {
        "max_batch_events": 200,
        "commit_interval_ms": 20,
        "processing_guarantee": "at_least_once",
    }
    await _kill_repeatedly(kafka_bootstrap, topics, log, seed=4, **settings)
    await _finish(kafka_bootstrap, topics, log, **settings)

    outputs = await h.read_outputs(kafka_bootstrap, topics)
    problems = h.verify(outputs, h.expected_models(records))
    assert any("reported twice" in p or "not 1..n" in p or "account for" in p for p in problems)


async def test_scale_out_and_in_mid_run_gives_the_single_process_models(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics, records = await h.seeded_stream(
        kafka_bootstrap, "scale", partitions=6, seed=23, models=300, events=60_000,
        produce_first=30_000,
    )  # fmt: skip
    second = records[30_000:]
    log = tmp_path / "trainer.log"
    settings = {"max_batch_events": 500}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(h.start_trainer(kafka_bootstrap, topics, log, **settings))
        procs.append(h.start_trainer(kafka_bootstrap, topics, log, **settings))
        await asyncio.sleep(4)
        procs.append(h.start_trainer(kafka_bootstrap, topics, log, **settings))
        producing = asyncio.create_task(h.produce(kafka_bootstrap, topics, second))
        await asyncio.sleep(4)
        assert h.stop_trainer(procs.pop(0)) == 0  # scale in mid-run
        await producing
        await h.wait_consumed(kafka_bootstrap, topics, timeout_s=240, procs=procs)
    finally:
        for proc in procs:
            assert h.stop_trainer(proc) == 0
    outputs = await h.read_outputs(kafka_bootstrap, topics)
    assert h.verify(outputs, h.expected_models(records)) == []


async def test_broker_restart_mid_run_recovers_by_itself(
    kafka_bootstrap: str, local_broker: LocalKafkaBroker | None, tmp_path: Path
) -> None:
    if local_broker is None:
        pytest.skip("needs the project's own local broker to restart (external cluster in use)")
    topics, records = await h.seeded_stream(
        kafka_bootstrap, "restart", partitions=3, seed=24, models=200, events=40_000,
        produce_first=20_000,
    )  # fmt: skip
    log = tmp_path / "trainer.log"
    proc = h.start_trainer(kafka_bootstrap, topics, log, max_batch_events=500)
    try:
        await asyncio.sleep(3)
        await asyncio.to_thread(local_broker.restart)
        await h.produce(kafka_bootstrap, topics, records[20_000:])
        await h.wait_consumed(kafka_bootstrap, topics, timeout_s=240, procs=[proc])
    finally:
        assert h.stop_trainer(proc) == 0, log.read_text()[-3000:]
    outputs = await h.read_outputs(kafka_bootstrap, topics)
    assert h.verify(outputs, h.expected_models(records)) == []


async def test_replay_equals_live(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics, records = await h.seeded_stream(
        kafka_bootstrap, "replay", partitions=3, seed=25, models=150, events=20_000
    )
    log = tmp_path / "trainer.log"
    proc = h.start_trainer(kafka_bootstrap, topics, log, max_batch_events=300)
    try:
        await h.wait_consumed(kafka_bootstrap, topics, timeout_s=120, procs=[proc])
    finally:
        assert h.stop_trainer(proc) == 0
    live = await h.read_outputs(kafka_bootstrap, topics)

    replay = await asyncio.create_subprocess_exec(
        *h.cli("replay", "--from", "earliest", "--output-prefix", "replay."),
        env=h.cli_env(kafka_bootstrap, topics),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(replay.communicate(), timeout=180)
    assert replay.returncode == 0, stderr.decode()[-3000:]
    assert b"replay done: 20000 events" in stderr

    replayed = await h.read_outputs(kafka_bootstrap, h.Topics(topics.prefix), prefix="replay.")
    assert h.verify(replayed, h.expected_models(records)) == []
    for rule_id, versions in live.rules.items():
        assert replayed.rules[rule_id][-1].trust == pytest.approx(versions[-1].trust, rel=1e-9)
    for var, versions in live.models.items():
        got = replayed.models[var][-1].coefficients
        assert got == pytest.approx(versions[-1].coefficients, rel=1e-6)
