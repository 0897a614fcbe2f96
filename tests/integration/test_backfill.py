"""`stream-trainer backfill` into a real broker (issue 13).

A backfill that stops part-way (``--limit``, then Ctrl-C), is resumed, then rerun in full
publishes some events two or three times; the trainer must still learn each event once (event-id
dedupe for feedback, ts order for observations), so its models equal the reference
learners run on the history once. Invalid lines are not sent unless ``--send-invalid``.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stream_trainer.errors import DecodeError
from stream_trainer.events import decode_feedback, decode_observation
from tests import bridge_files as bf
from tests.integration import harness as h

pytestmark = pytest.mark.kafka

LEARNER_REASONS = {"duplicate", "out_of_order", "duplicate_event_id"}


def write_inputs(tmp_path: Path) -> tuple[list[str], list[h.InputRecord], int]:
    """Observations as Parquet, feedback as gzipped CSV; the CLI arguments and the history."""
    history = bf.tabular_history(seed=51, models=80, events=8000)
    obs = [d for k, d, _ in history if k == "observation"]
    fb = [d for k, d, _ in history if k == "feedback"]
    obs_path = bf.write_parquet(tmp_path / "observations.parquet", "observation", obs, 700)
    fb_path = bf.write_csv(tmp_path / "feedback.csv", "feedback", fb, "gz")
    records = [(k, _key(k, d), bf.dumps(d)) for k, d, _ in history]
    invalid = sum(1 for _, _, reason in history if reason and reason not in LEARNER_REASONS)
    args = ["--observations", str(obs_path), "--feedback", str(fb_path)]
    return args, records, invalid


def _key(kind: str, doc: dict[str, object]) -> bytes | None:
    name = doc.get("variable" if kind == "observation" else "rule_id")
    return name.encode() if isinstance(name, str) else None


def backfill(topics: h.Topics, bootstrap: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = h.cli_env(bootstrap, topics)
    return subprocess.run(h.cli("backfill", *args), env=env, capture_output=True, timeout=300)


def start_backfill(topics: h.Topics, bootstrap: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        h.cli("backfill", *args),
        env=h.cli_env(bootstrap, topics),
        stderr=subprocess.PIPE,
        # A shell's background job inherits SIGINT ignored; the child must see Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


async def input_records(bootstrap: str, topics: h.Topics) -> list[h.InputRecord]:
    """What the input topics hold, per partition in offset order (a trainer's view)."""
    records: list[h.InputRecord] = []
    for kind, topic in (("observation", topics.observations), ("feedback", topics.feedback)):
        records += [(kind, r.key, r.value) for r in await h.read_all(bootstrap, topic)]
    return records


def event_of(record: h.InputRecord) -> tuple[str, str, object]:
    """(kind, event_id, ts) of a valid record: the same event whatever its bytes."""
    kind, _, value = record
    event = (decode_observation if kind == "observation" else decode_feedback)(value)
    return kind, event.event_id, event.ts


def decodes(record: h.InputRecord) -> bool:
    kind, _, value = record
    try:
        (decode_observation if kind == "observation" else decode_feedback)(value)
    except DecodeError:
        return False
    return True


async def test_dry_run_sends_nothing_and_exits_1_on_invalid_lines(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    args, _, invalid = write_inputs(tmp_path)
    topics = h.new_topics("backfill-dry")
    await h.create_inputs(kafka_bootstrap, topics, partitions=2)
    done = backfill(topics, kafka_bootstrap, "--dry-run", "--report-limit", "1000", *args)
    assert done.returncode == 1, done.stderr.decode()
    err = done.stderr.decode()
    assert f"{invalid:,} invalid (not sent)" in err
    assert "feedback.csv.gz:" in err and "observations.parquet:" in err
    ends = await h.end_offsets(kafka_bootstrap, [topics.observations, topics.feedback])
    assert sum(ends.values()) == 0


async def test_interrupted_backfills_and_a_rerun_learn_each_event_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    args, history, _ = write_inputs(tmp_path)
    topics = h.new_topics("backfill")
    await h.create_inputs(kafka_bootstrap, topics, partitions=3)

    # 1. Stopped by --limit part-way through the observations.
    first = backfill(topics, kafka_bootstrap, "--limit", "2500", *args)
    assert first.returncode == 1, first.stderr.decode()  # invalid lines found, not sent
    # 2. Stopped by Ctrl-C part-way, rate-limited (~10 s in all) so the signal lands mid-run.
    after_limit = await published_count(kafka_bootstrap, topics)
    proc = start_backfill(topics, kafka_bootstrap, "--rate", "800", *args)
    await wait_for_records(kafka_bootstrap, topics, more_than=after_limit + 500)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert proc.stderr is not None
    resume = re.search(r"--resume-after (\S+:\d+)\)", proc.stderr.read().decode())
    assert resume is not None
    # 3. Resumed after the last acknowledged line: with it, every valid line is in Kafka.
    resumed = backfill(topics, kafka_bootstrap, "--resume-after", resume.group(1), *args)
    assert resumed.returncode == 1, resumed.stderr.decode()
    published = await input_records(kafka_bootstrap, topics)
    assert all(map(decodes, published)), "an invalid line was sent without --send-invalid"
    assert {event_of(r) for r in history if decodes(r)} <= {event_of(r) for r in published}
    assert len(published) < 2 * len(history)
    # 4. A full rerun, with the invalid lines sent too (the trainer dead-letters them).
    rerun = backfill(topics, kafka_bootstrap, "--send-invalid", *args)
    assert rerun.returncode == 0, rerun.stderr.decode()

    log = tmp_path / "trainer.log"
    trainer = h.start_trainer(kafka_bootstrap, topics, log, "--until-end")
    try:
        assert trainer.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if trainer.poll() is None:
            trainer.kill()
    outputs = await h.read_outputs(kafka_bootstrap, topics)
    everything = await input_records(kafka_bootstrap, topics)
    assert h.verify(outputs, h.expected_models(everything)) == []
    # The models are those of the history learned once: the reruns were harmless.
    once = h.expected_models(history)
    assert set(outputs.rules) == set(once.trust.models)
    assert set(outputs.models) == set(once.forecaster.models)
    problems = []
    for rule_id, ref in once.trust.models.items():
        problems += h._compare_rule(outputs.rules[rule_id][-1], ref)
    for variable, ref in once.forecaster.models.items():
        problems += h._compare_model(outputs.models[variable][-1], ref)
    assert problems == [], h.summarize(problems)
    reasons = {dict(r.headers)["reason"].decode() for r in outputs.dead_letters}
    assert reasons >= LEARNER_REASONS and reasons - LEARNER_REASONS  # re-sends + --send-invalid


async def published_count(bootstrap: str, topics: h.Topics) -> int:
    ends = await h.end_offsets(bootstrap, [topics.observations, topics.feedback])
    return sum(ends.values())


async def wait_for_records(bootstrap: str, topics: h.Topics, more_than: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if await published_count(bootstrap, topics) > more_than:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the backfill sent nothing")
