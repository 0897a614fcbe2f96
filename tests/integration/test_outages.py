"""Broker outages: the trainer rides them out, or exits cleanly once its budget is spent.

Each test runs a broker of its own (SIGSTOP/SIGTERM would hurt every other test of the
session) and one trainer subprocess with a known HTTP port, polled from a thread. The input
(one seeded set, its reference computed once) is produced in parts: one before the trainer
starts, one right before each outage, the last after it. Small batches, each its own
transaction, keep the trainer busy with the part just produced when the broker goes away,
so transactions are open across the outage, not just an idle consumer.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from stream_trainer.dev.broker.config import choose_free_ports
from stream_trainer.dev.broker.local_broker import LocalKafkaBroker
from stream_trainer.dev.synthetic import SyntheticPulse
from tests.integration import harness as h
from tests.integration.broker_control import (
    HealthProbe,
    chunks,
    committed_total,
    own_broker,
    scrape,
    stalled,
    wait_progress,
    wait_ready,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 16_000
PARTITIONS = 4
MODELS = 200
# One transaction per 10 events, one batch queued per task: a part takes the trainer
# several seconds, so the outage lands while it is mid-part.
SLOW: dict[str, Any] = {"max_batch_events": 10, "cache_max_events": 10, "queue_max_batches": 1}
# Degraded is one WARNING per component and one INFO on recovery, not a screen of client
# errors per second; a few more for the rebalance an outage may cause.
LOUD_LINES_PER_OUTAGE = 2 * (PARTITIONS + 1)
EXIT_GUARD_S = 240.0  # hang guards only: the assertions are on states, never on time
CONSUME_GUARD_S = 300.0

Inputs = tuple[list[h.InputRecord], h.Expected]


@dataclass(frozen=True)
class Outage:
    kind: Literal["stall", "down"]  # SIGSTOP ... SIGCONT, or SIGTERM ... start again
    seconds: float

    async def run(self, broker: LocalKafkaBroker) -> None:
        if self.kind == "stall":
            with stalled(broker):
                await asyncio.sleep(self.seconds)
            return
        broker.stop()  # a controlled shutdown; the data dir stays
        await asyncio.sleep(self.seconds)
        broker.start()  # same data dir and ports, from the main thread (see own_broker)


@pytest.fixture(scope="module")
def inputs() -> Inputs:
    pulse = SyntheticPulse(seed=61, n_variables=MODELS, n_rules=MODELS)
    records: list[h.InputRecord] = list(pulse.records(EVENTS))
    return records, h.expected_models(records)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafkaBroker]:
    own = own_broker(tmp_path / "kafka")
    try:
        yield own
    finally:
        own.close()


async def test_broker_stalled_20_s_then_90_s_is_ridden_out(
    broker: LocalKafkaBroker, inputs: Inputs, tmp_path: Path
) -> None:
    # 90 s is past the producers' 60 s transaction timeout (aiokafka's transaction_timeout_ms;
    # the broker's transaction.max.timeout.ms is 15 min): a transaction open when the broker
    # froze is aborted if the broker's abort scan runs before it reads the queued EndTxn
    # (a race on resume), and the task is reset; either way the outputs must be exact.
    await _ride_out(broker, inputs, tmp_path, "stall", [Outage("stall", 20), Outage("stall", 90)])


async def test_broker_stopped_and_restarted_after_60_s_is_ridden_out(
    broker: LocalKafkaBroker, inputs: Inputs, tmp_path: Path
) -> None:
    await _ride_out(broker, inputs, tmp_path, "restart", [Outage("down", 60)])


async def test_broker_gone_past_the_timeout_exits_with_one_line_and_restart_completes(
    broker: LocalKafkaBroker, inputs: Inputs, tmp_path: Path
) -> None:
    records, expected = inputs
    first, middle, last = chunks(records, 3)
    topics, log = await _prepare(broker, tmp_path, "timeout", first)
    port = choose_free_ports(1)[0]
    settings = {"http_port": port, "broker_timeout_s": 15, **SLOW}
    proc = h.start_trainer(broker.bootstrap, topics, log, **settings)
    try:
        await asyncio.to_thread(h.wait_started, proc)
        await h.wait_consumed(broker.bootstrap, topics, timeout_s=CONSUME_GUARD_S, procs=[proc])
        await _produce_and_catch_mid_part(broker, topics, middle, len(first), proc)
        start = log.stat().st_size
        broker.stop()
        with HealthProbe(port) as probe:
            code = await asyncio.to_thread(_exit_code, proc, EXIT_GUARD_S)
    finally:
        _kill(proc)
    tail = log.read_bytes()[start:].decode(errors="replace")
    assert code is not None, f"still running {EXIT_GUARD_S:.0f} s after the broker went away"
    assert code != 0, tail[-3000:]
    errors = [line for line in tail.splitlines() if line.startswith("stream-trainer: error:")]
    assert len(errors) == 1, tail[-3000:]
    assert "broker unavailable" in errors[0] and "broker_timeout_s=15" in errors[0], errors[0]
    assert "Traceback" not in tail, "one line, no traceback below --log-level DEBUG"
    healthz = {a.status for a in probe.answers if a.path == "/healthz" and a.status is not None}
    assert healthz == {200}, "/healthz answers 200 until the budget runs out"

    broker.start()
    proc = h.start_trainer(broker.bootstrap, topics, log, http_port=port, **SLOW)
    try:
        await h.produce(broker.bootstrap, topics, last)
        await h.wait_consumed(broker.bootstrap, topics, timeout_s=CONSUME_GUARD_S, procs=[proc])
        assert h.stop_trainer(proc) == 0
    finally:
        _kill(proc)
    problems = await _problems(broker, topics, expected)
    assert problems == [], h.summarize(problems)


# -- the shared scenario ---------------------------------------------------------------


async def _ride_out(
    broker: LocalKafkaBroker, inputs: Inputs, tmp_path: Path, label: str, outages: list[Outage]
) -> None:
    """Parts of the input around each outage: the trainer never exits, every symptom is as
    the issue says, the outputs are exact. All problems are reported together."""
    records, expected = inputs
    parts = chunks(records, len(outages) + 2)
    topics, log = await _prepare(broker, tmp_path, label, parts[0])
    port = choose_free_ports(1)[0]
    proc = h.start_trainer(broker.bootstrap, topics, log, http_port=port, **SLOW)
    symptoms: list[str] = []
    try:
        await asyncio.to_thread(h.wait_started, proc)
        with HealthProbe(port) as probe:
            produced = len(parts[0])
            for outage, part in zip(outages, parts[1:-1], strict=True):
                await h.wait_consumed(
                    broker.bootstrap, topics, timeout_s=CONSUME_GUARD_S, procs=[proc]
                )
                await wait_ready(probe, proc)
                await _produce_and_catch_mid_part(broker, topics, part, produced, proc)
                symptoms += await _survive(broker, proc, probe, port, log, outage)
                produced += len(part)
            await h.produce(broker.bootstrap, topics, parts[-1])
            await h.wait_consumed(broker.bootstrap, topics, timeout_s=CONSUME_GUARD_S, procs=[proc])
        assert h.stop_trainer(proc) == 0, log.read_text()[-3000:]
    finally:
        _kill(proc)
    problems = symptoms + await _problems(broker, topics, expected)
    assert problems == [], h.summarize(problems)


async def _survive(
    broker: LocalKafkaBroker,
    proc: subprocess.Popen[bytes],
    probe: HealthProbe,
    port: int,
    log: Path,
    outage: Outage,
) -> list[str]:
    """One outage; how the trainer's behaviour differs from what the issue promises."""
    name = f"{outage.kind} {outage.seconds:.0f} s"
    mark, log_mark, before = probe.mark(), log.stat().st_size, scrape(port)
    await outage.run(broker)
    assert proc.poll() is None, f"{name}: the trainer exited with {proc.returncode}"
    await wait_ready(probe, proc)
    after = scrape(port)
    problems = []
    readyz = probe.since(mark, "/readyz")
    if not [a for a in readyz if a.status == 503 and "broker" in a.body]:
        problems.append(f"{name}: /readyz never said it waits on the broker: {_statuses(readyz)}")
    healthz = probe.since(mark, "/healthz")
    if {a.status for a in healthz} != {200}:
        problems.append(f"{name}: /healthz not always 200: {_statuses(healthz)}")
    if _grew(before, after, "stream_trainer_broker_retries_total") <= 0:
        problems.append(f"{name}: stream_trainer_broker_retries_total did not grow")
    loud = _loud_lines(log, log_mark)
    if len(loud) > LOUD_LINES_PER_OUTAGE:
        problems.append(f"{name}: {len(loud)} WARNING/ERROR log lines, e.g. {loud[:3]}")
    return problems


async def _produce_and_catch_mid_part(
    broker: LocalKafkaBroker,
    topics: h.Topics,
    part: Sequence[h.InputRecord],
    produced: int,
    proc: subprocess.Popen[bytes],
) -> None:
    """Produce a part and return once the group committed some, not all, of it."""
    await h.produce(broker.bootstrap, topics, part)
    committed = await wait_progress(broker.bootstrap, topics, produced, proc)
    assert committed < produced + len(part), "the trainer finished the part before the outage"


async def _prepare(
    broker: LocalKafkaBroker, tmp_path: Path, label: str, first: Sequence[h.InputRecord]
) -> tuple[h.Topics, Path]:
    topics = h.new_topics(label)
    await h.create_inputs(broker.bootstrap, topics, PARTITIONS)
    await h.produce(broker.bootstrap, topics, first)
    return topics, tmp_path / "trainer.log"


async def _problems(broker: LocalKafkaBroker, topics: h.Topics, expected: h.Expected) -> list[str]:
    """Every way the outputs and committed offsets differ from the reference."""
    problems = h.verify(await h.read_outputs(broker.bootstrap, topics), expected)
    committed = await committed_total(broker.bootstrap, topics)
    if committed != expected.total:
        problems.append(f"committed {committed} input offsets, not {expected.total}")
    return problems


def _grew(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def _loud_lines(log: Path, start: int) -> list[str]:
    with log.open("rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    return [line[:200] for line in text.splitlines() if " WARNING " in line or " ERROR " in line]


def _statuses(answers: Sequence[object]) -> str:
    statuses = [str(getattr(a, "status", a)) for a in answers]
    # Runs of the same status as "200 x40", so a long outage stays readable.
    runs: list[list[Any]] = []
    for status in statuses:
        if runs and runs[-1][0] == status:
            runs[-1][1] += 1
        else:
            runs.append([status, 1])
    return " ".join(f"{s} x{n}" for s, n in runs)


def _exit_code(proc: subprocess.Popen[bytes], guard_s: float) -> int | None:
    try:
        return proc.wait(timeout=guard_s)
    except subprocess.TimeoutExpired:
        return None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
