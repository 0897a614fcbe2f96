"""The Faust adapter's pure logic: grouping, learning, outputs, restore (no broker, no Faust)."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_trainer.config import Settings
from stream_trainer.dev.invalid import bad_records
from stream_trainer.dev.synthetic import SyntheticPulse
from stream_trainer.errors import ConfigError
from stream_trainer.events import ModelVersion, RuleVersion, TrainingMetrics
from stream_trainer.integrations.faust import FaustLearnerHost
from stream_trainer.publishing import BatchOutputs
from tests.integration.harness import InputRecord, Outputs, expected_models, new_topics, verify

PARTITIONS = 3
PUBLISHED_AT = datetime(2026, 6, 1, tzinfo=UTC)
TOPICS = new_topics("faust-unit")
SETTINGS = Settings(
    topic_observations=TOPICS.observations,
    topic_feedback=TOPICS.feedback,
    topic_model_versions=TOPICS.model_versions,
    topic_rule_versions=TOPICS.rule_versions,
    topic_training_metrics=TOPICS.metrics,
    topic_dead_letter=TOPICS.dead_letter,
    max_event_bytes=2048,
)


@dataclass(frozen=True, slots=True)
class FakeMessage:
    """The fields of a Faust ``Message`` the adapter reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def to_messages(records: Sequence[InputRecord]) -> list[FakeMessage]:
    """Partition by key like Kafka's producer would (any stable hash will do here)."""
    offsets: dict[tuple[str, int], int] = {}
    messages = []
    for kind, key, value in records:
        topic = TOPICS.observations if kind == "observation" else TOPICS.feedback
        partition = zlib.crc32(key or b"") % PARTITIONS
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        messages.append(FakeMessage(topic, partition, offset, key, value))
    return messages


def synthetic(n: int, n_bad: int = 0) -> list[InputRecord]:
    pulse = SyntheticPulse(seed=11, n_variables=7, n_rules=5)
    records: list[InputRecord] = list(pulse.records(n))
    for i, (kind, key, value, _reason) in enumerate(
        bad_records(pulse, n_bad, max_event_bytes=2048)
    ):
        records.insert((i * 7) % len(records), (kind, key, value))
    return records


def collect(outputs: Sequence[BatchOutputs]) -> Outputs:
    out = Outputs()
    for batch in outputs:
        for rec in batch.records:
            if rec.value is None:  # a tombstone: only dedupe records of the changelog
                assert rec.topic.endswith("changelog") and rec.key.startswith(b"r#d:")
                continue
            if rec.topic == TOPICS.rule_versions:
                rv = msgspec.json.decode(rec.value, type=RuleVersion)
                out.rules[rv.rule_id].append(rv)
            elif rec.topic == TOPICS.model_versions:
                mv = msgspec.json.decode(rec.value, type=ModelVersion)
                out.models[mv.model_id].append(mv)
            elif rec.topic == TOPICS.metrics:
                out.metrics.append(msgspec.json.decode(rec.value, type=TrainingMetrics))
            elif rec.topic == TOPICS.dead_letter:
                out.dead_letters.append(rec)
    return out


def run_chunks(host: FaustLearnerHost, messages: list[FakeMessage], cuts: list[int]) -> Outputs:
    outputs: list[BatchOutputs] = []
    bounds = [0, *sorted(c % (len(messages) + 1) for c in cuts), len(messages)]
    for start, end in itertools.pairwise(bounds):
        outputs.extend(host.process(messages[start:end], PUBLISHED_AT))
    return collect(outputs)


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_any_take_boundaries_give_the_reference_models(cuts: list[int]) -> None:
    records = synthetic(300, n_bad=11)
    host = FaustLearnerHost(SETTINGS)
    out = run_chunks(host, to_messages(records), cuts)
    assert verify(out, expected_models(records)) == []
    assert host.partitions == sorted({m.partition for m in to_messages(records)})


def test_one_event_per_call_gives_the_reference_models() -> None:
    records = synthetic(80, n_bad=3)
    messages = to_messages(records)
    out = run_chunks(FaustLearnerHost(SETTINGS), messages, list(range(len(messages))))
    assert verify(out, expected_models(records)) == []


def test_one_batch_per_partition_in_partition_order() -> None:
    messages = to_messages(synthetic(200))
    outputs = FaustLearnerHost(SETTINGS).process(messages, PUBLISHED_AT)
    tasks = [next(iter(o.offsets)).partition for o in outputs]
    assert tasks == sorted({m.partition for m in messages})
    for batch in outputs:
        # Offsets to commit are last offset + 1 of each topic-partition in the batch.
        for tp, offset in batch.offsets.items():
            last = max(m.offset for m in messages if (m.topic, m.partition) == tp)
            assert offset == last + 1
        changelog = [r for r in batch.records if r.topic == SETTINGS.changelog_topic]
        assert changelog
        assert {r.partition for r in changelog} == {next(iter(batch.offsets)).partition}


def test_invalid_records_become_dead_letters_with_their_source() -> None:
    pulse = SyntheticPulse(seed=3, n_variables=2, n_rules=2)
    bad = list(bad_records(pulse, 11, max_event_bytes=2048))
    messages = to_messages([(k, key, value) for k, key, value, _ in bad])
    outputs = FaustLearnerHost(SETTINGS).process(messages, PUBLISHED_AT)
    letters = [r for o in outputs for r in o.records if r.topic == TOPICS.dead_letter]
    assert sorted(dict(r.headers or [])["reason"].decode() for r in letters) == sorted(
        reason for *_, reason in bad
    )
    sources = {
        (
            dict(r.headers or [])["source.topic"].decode(),
            int(dict(r.headers or [])["source.offset"]),
        )
        for r in letters
    }
    assert sources == {(m.topic, m.offset) for m in messages}


def test_restore_from_published_changelog_continues_exactly() -> None:
    records = synthetic(400)
    messages = to_messages(records)
    first = FaustLearnerHost(SETTINGS)
    outputs = first.process(messages[:200], PUBLISHED_AT)
    second = FaustLearnerHost(SETTINGS)
    for partition in first.partitions:
        changelog = [
            (r.key, r.value)
            for o in outputs
            for r in o.records
            if r.topic == SETTINGS.changelog_topic and r.partition == partition
        ]
        assert second.restore(partition, changelog) > 0  # type: ignore[arg-type]
    tail_restored = collect(second.process(messages[200:], PUBLISHED_AT))
    tail_original = collect(first.process(messages[200:], PUBLISHED_AT))
    assert tail_restored.rules == tail_original.rules
    assert tail_restored.models == tail_original.models


def test_drop_forgets_a_partition() -> None:
    messages = to_messages(synthetic(60))
    host = FaustLearnerHost(SETTINGS)
    host.process(messages, PUBLISHED_AT)
    gone = host.partitions[0]
    host.drop(gone)
    assert gone not in host.partitions
    again = collect(host.process([m for m in messages if m.partition == gone], PUBLISHED_AT))
    # Fresh state: every republished version starts again from 1.
    assert {v[0].version for v in again.rules.values()} <= {1}


def test_records_from_another_topic_are_refused() -> None:
    stray = FakeMessage("some.other.topic", 0, 0, b"k", b"{}")
    with pytest.raises(ConfigError, match=r"some\.other\.topic"):
        FaustLearnerHost(SETTINGS).process([stray])


async def test_publish_sends_every_record_in_order_with_faust_signature() -> None:
    outputs = FaustLearnerHost(SETTINGS).process(to_messages(synthetic(50, 2)), PUBLISHED_AT)
    sent: list[tuple[Any, ...]] = []

    async def send(
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> str:
        sent.append((topic, key, value, partition, timestamp, headers))
        return f"delivery-{len(sent)}"

    deliveries = await FaustLearnerHost(SETTINGS).publish(outputs, send)
    expected = [
        (r.topic, r.key, r.value, r.partition, None, r.headers) for o in outputs for r in o.records
    ]
    assert sent == expected
    assert deliveries == [f"delivery-{i}" for i in range(1, len(expected) + 1)]
