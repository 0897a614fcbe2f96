"""Bad input never crashes the trainer and is never lost (DESIGN section 5)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from stream_trainer.config import load_settings
from stream_trainer.dev.invalid import (
    bad_records,
    duplicate_of,
    key_mismatch_of,
    out_of_order_of,
)
from stream_trainer.dev.synthetic import SyntheticPulse
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.service import Trainer
from tests.integration import harness as h

pytestmark = pytest.mark.kafka

MAX_EVENT_BYTES = 4096  # small, so oversized test records stay small
Expectation = tuple[str, bytes | None, bytes | None]  # reason, key, value


def interleave(
    valid: list[h.InputRecord], bad: list[tuple[str, bytes | None, bytes | None, str]], seed: int
) -> tuple[list[h.InputRecord], list[Expectation]]:
    """Valid records with bad ones mixed in; contextual ones right after their original."""
    rng = random.Random(seed)
    stream: list[h.InputRecord] = []
    expected: list[Expectation] = []
    bad_iter = iter(bad)
    for record in valid:
        stream.append(record)
        roll = rng.random()
        if roll < 0.05:
            derived = duplicate_of(record)
        elif roll < 0.08 and record[0] == "observation":
            derived = out_of_order_of(record)
        elif roll < 0.11:
            derived = key_mismatch_of(record)
        elif roll < 0.31:
            derived = next(bad_iter, None)  # type: ignore[arg-type]
        else:
            continue
        if derived is None:
            continue
        kind, key, value, reason = derived
        stream.append((kind, key, value))
        expected.append((reason, key, value))
    return stream, expected


async def run_until_end(bootstrap: str, topics: h.Topics) -> Trainer:
    settings = load_settings(
        environ=topics.env(bootstrap), max_event_bytes=MAX_EVENT_BYTES, max_batch_events=2000
    )
    trainer = Trainer(settings, TrainerMetrics(), until_end=True, serve_http=False)
    await trainer.start()
    try:
        await asyncio.wait_for(trainer.wait(), timeout=240)
    finally:
        await trainer.stop()
    return trainer


def invalid_counts(metrics: TrainerMetrics) -> Counter[str]:
    counts: Counter[str] = Counter()
    for family in metrics.registry.collect():
        if family.name == "stream_trainer_events_invalid":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["reason"]] += int(sample.value)
    return counts


async def test_every_invalid_record_is_dead_lettered_once_with_reason_and_bytes(
    kafka_bootstrap: str,
) -> None:
    pulse = SyntheticPulse(seed=31, n_variables=200, n_rules=200)
    valid = list(pulse.records(40_000))
    bad = list(bad_records(pulse, 8_000, max_event_bytes=MAX_EVENT_BYTES))
    stream, expected_letters = interleave(valid, bad, seed=5)
    assert len(expected_letters) >= 10_000
    every_reason = {
        "malformed", "schema", "non_finite", "naive_timestamp", "name_too_long", "oversized",
        "out_of_order", "duplicate", "duplicate_event_id", "key_mismatch",
    }  # fmt: skip
    assert {reason for reason, _, _ in expected_letters} == every_reason

    topics = h.new_topics("dlq")
    await h.create_inputs(kafka_bootstrap, topics, partitions=4)
    await h.produce(kafka_bootstrap, topics, stream)
    trainer = await run_until_end(kafka_bootstrap, topics)

    outputs = await h.read_outputs(kafka_bootstrap, topics)
    expected = h.expected_models(stream, max_event_bytes=MAX_EVENT_BYTES)
    assert expected.invalid == len(expected_letters)
    assert h.verify(outputs, expected) == []
    clean = h.expected_models(valid)
    assert clean.trust.models == expected.trust.models
    assert clean.forecaster.models.keys() == expected.forecaster.models.keys()

    letters = Counter(
        (dict(r.headers)["reason"].decode(), r.key, r.value) for r in outputs.dead_letters
    )
    assert letters == Counter(expected_letters)
    for record in outputs.dead_letters:
        headers = dict(record.headers)
        assert {
            "error",
            "source.topic",
            "source.partition",
            "source.offset",
            "trainer.version",
        } <= set(headers)
        assert headers["source.topic"].decode() in (topics.observations, topics.feedback)

    by_reason = Counter(reason for reason, _, _ in expected_letters)
    assert invalid_counts(trainer.metrics) == by_reason
    assert sum(m.invalid for m in outputs.metrics) == len(expected_letters)


async def test_duplicate_feedback_is_applied_once_also_across_a_restart(
    kafka_bootstrap: str,
) -> None:
    pulse = SyntheticPulse(seed=32, n_variables=20, n_rules=50)
    first = [r for r in pulse.records(6_000) if r[0] == "feedback"]
    resent = [duplicate_of(r) for r in first[::3]]
    topics = h.new_topics("dedupe")
    await h.create_inputs(kafka_bootstrap, topics, partitions=2)
    await h.produce(kafka_bootstrap, topics, first)
    await run_until_end(kafka_bootstrap, topics)

    # A new trainer process (state restored from the changelog) sees the re-sends.
    await h.produce(kafka_bootstrap, topics, [(k, key, v) for k, key, v, _ in resent])
    await run_until_end(kafka_bootstrap, topics)

    stream = first + [(k, key, v) for k, key, v, _ in resent]
    outputs = await h.read_outputs(kafka_bootstrap, topics)
    expected = h.expected_models(stream)
    assert h.verify(outputs, expected) == []
    reasons = Counter(dict(r.headers)["reason"].decode() for r in outputs.dead_letters)
    assert reasons == Counter({"duplicate_event_id": len(resent)})


async def test_dead_letters_cli_lists_and_replays(kafka_bootstrap: str, tmp_path: Path) -> None:
    pulse = SyntheticPulse(seed=33, n_variables=10, n_rules=10)
    valid = list(pulse.records(500))
    mismatched = [key_mismatch_of(r) for r in valid[:7]]
    topics = h.new_topics("dlcli")
    await h.create_inputs(kafka_bootstrap, topics, partitions=1)
    await h.produce(kafka_bootstrap, topics, valid + [(k, key, v) for k, key, v, _ in mismatched])
    await run_until_end(kafka_bootstrap, topics)

    env = h.cli_env(kafka_bootstrap, topics)
    listing = await asyncio.create_subprocess_exec(
        *h.cli("dead-letters", "--reason", "key_mismatch", "--limit", "5"),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await listing.communicate()
    assert listing.returncode == 0, err.decode()
    rows = out.decode().splitlines()
    assert rows[0].split()[:3] == ["WRITTEN", "(UTC)", "REASON"]
    assert len(rows) == 1 + 5 and all("key_mismatch" in row for row in rows[1:])

    before = await h.end_offsets(kafka_bootstrap, [topics.observations, topics.feedback])
    replay = await asyncio.create_subprocess_exec(
        *h.cli("dead-letters", "--replay", "--yes"), env=env, stdout=asyncio.subprocess.PIPE
    )
    await replay.communicate()
    assert replay.returncode == 0
    after = await h.end_offsets(kafka_bootstrap, [topics.observations, topics.feedback])
    assert sum(after.values()) - sum(before.values()) == len(mismatched)

    refused = await asyncio.create_subprocess_exec(
        *h.cli("dead-letters", "--replay"), env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await refused.communicate()
    assert refused.returncode == 1 and b"--yes" in err
