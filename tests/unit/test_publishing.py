"""`publishing`: the output records of a commit, and both committers with a fake producer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerFenced,
    RequestTimedOutError,
)

from stream_trainer import __version__
from stream_trainer.checkpoint import PendingCommit
from stream_trainer.config import Settings
from stream_trainer.errors import DeadLetterError, KafkaError, TaskFencedError
from stream_trainer.events import TrainingMetrics
from stream_trainer.kafka.sender import OutputRecord
from stream_trainer.publishing import (
    AtLeastOnceCommitter,
    BatchOutputs,
    TransactionalCommitter,
    build_outputs,
)
from stream_trainer.state import Publication, TaskState
from tests.sample_events import T0
from tests.unit.core_fakes import FB, OBS, FakeProducer, Inputs, Rec

SETTINGS = Settings()
DLQ = SETTINGS.topic_dead_letter
METRICS = SETTINGS.topic_training_metrics
CHANGELOG = SETTINGS.changelog_topic
PUBLISHED = datetime(2026, 3, 1, tzinfo=UTC)
TASK = 2


def commit_of(batches: list[list[Rec]], inputs: Inputs) -> tuple[PendingCommit, Publication]:
    """Learn the batches in a real TaskState, as a task does between two commits."""
    state, pending = TaskState(SETTINGS), PendingCommit()
    for records in batches:
        pending.add(state.learn(inputs.batch(records)), 0.01)
    return pending, state.publish(PUBLISHED)


def mixed(inputs: Inputs) -> list[list[Rec]]:
    return [
        [inputs.obs("a", 1), inputs.obs("a", 2), inputs.obs("a", 2), inputs.fb("r", 3, True)],
        [inputs.raw(OBS, b"a", b"{"), inputs.fb("r", 4, False), inputs.fb("r", 5, True, "f-r-3")],
        [inputs.obs("b", 9), inputs.raw(FB, b"other", b'{"event_id": 1}')],
    ]


def build(pending: PendingCommit, publication: Publication) -> BatchOutputs:
    return build_outputs(TASK, pending, publication, SETTINGS, "inst-1", PUBLISHED)


def on(out: BatchOutputs, topic: str) -> list[OutputRecord]:
    return [r for r in out.records if r.topic == topic]


def metrics_of(out: BatchOutputs) -> TrainingMetrics:
    [record] = on(out, METRICS)
    assert record.key == b"inst-1"
    assert record.value is not None
    decoded = msgspec.json.decode(record.value, type=TrainingMetrics)
    assert decoded == out.metrics
    return decoded


# -- build_outputs ----------------------------------------------------------------------------


def test_one_metrics_record_per_commit_accounts_for_every_input_record() -> None:
    inputs = Inputs(task=TASK)
    pending, publication = commit_of(mixed(inputs), inputs)
    metrics = metrics_of(build(pending, publication))
    assert metrics.observations + metrics.feedback + metrics.invalid == pending.events == 9
    assert (metrics.observations, metrics.feedback, metrics.invalid) == (3, 2, 4)
    assert (metrics.models_updated, metrics.rules_updated) == (2, 1)
    assert metrics.batch_id == pending.batch_id and ".." in metrics.batch_id
    assert metrics.published_at == PUBLISHED
    assert metrics.duration_ms == pytest.approx(30.0)
    oldest = (T0.timestamp() + 1) * 1e3
    assert metrics.max_event_age_ms == pytest.approx(PUBLISHED.timestamp() * 1e3 - oldest)


def test_records_that_forget_a_key_are_accounted_for_too() -> None:
    # DESIGN section 2: observations + feedback + invalid add up to the input records.
    inputs = Inputs(task=TASK)
    batch = [inputs.obs("a", 1), inputs.forget(OBS, "a"), inputs.fb("r", 1, True)]
    pending, publication = commit_of([batch, [inputs.forget(FB, "r")]], inputs)
    metrics = metrics_of(build(pending, publication))
    assert metrics.observations + metrics.feedback + metrics.invalid == pending.events == 4


def test_dead_letters_keep_the_original_record_and_name_the_reason_and_source() -> None:
    inputs = Inputs(task=TASK)
    pending, publication = commit_of(mixed(inputs), inputs)
    out = build(pending, publication)
    letters = on(out, DLQ)
    assert [(r.key, r.value) for r in letters] == [
        (inv.record.key, inv.record.value) for inv in pending.invalid
    ]
    by_reason = {dict(r.headers or [])[b"reason".decode()]: dict(r.headers or []) for r in letters}
    assert sorted(by_reason) == [b"duplicate", b"duplicate_event_id", b"malformed", b"schema"]
    dup = by_reason[b"duplicate"]
    assert dup["source.topic"] == OBS.encode()
    assert dup["source.partition"] == str(TASK).encode()
    assert dup["source.offset"] == b"2"
    assert dup["trainer.version"] == __version__.encode()
    assert dup["error"]
    assert all(r.partition is None for r in letters)  # keyed as the input: default partitioner
    assert out.invalid == pending.invalid


def test_a_long_error_detail_is_cut_in_the_header() -> None:
    inputs = Inputs(task=TASK)
    pending, publication = commit_of([[inputs.raw(OBS, b"k" * 300, b"x" * 70_000)]], inputs)
    [letter] = on(build(pending, publication), DLQ)
    headers = dict(letter.headers or [])
    assert headers["reason"] == b"oversized"
    assert len(headers["error"]) <= 500


def test_changelog_records_go_to_the_tasks_partition_and_versions_to_their_topics() -> None:
    inputs = Inputs(task=TASK)
    pending, publication = commit_of(mixed(inputs), inputs)
    out = build(pending, publication)
    changelog = on(out, CHANGELOG)
    assert [(r.key, r.value) for r in changelog] == publication.changelog
    assert {r.partition for r in changelog} == {TASK}
    versions = [
        r
        for r in out.records
        if r.topic in (SETTINGS.topic_model_versions, SETTINGS.topic_rule_versions)
    ]
    assert [(r.topic, r.key, r.value) for r in versions] == publication.versions
    assert all(r.partition is None for r in versions)
    assert len(out.records) == len(versions) + len(pending.invalid) + len(changelog) + 1
    assert out.offsets == pending.offsets and out.offsets is not pending.offsets
    assert out.publication is publication


def test_a_forget_publishes_tombstones_on_the_version_topic_and_the_changelog() -> None:
    inputs = Inputs(task=TASK)
    pending, publication = commit_of([[inputs.obs("a", 1)], [inputs.forget(OBS, "a")]], inputs)
    out = build(pending, publication)
    assert [(r.key, r.value) for r in on(out, SETTINGS.topic_model_versions)] == [(b"a", None)]
    assert [(r.key, r.value, r.partition) for r in on(out, CHANGELOG)] == [(b"m:a", None, TASK)]


# -- committers -------------------------------------------------------------------------------


def outputs() -> BatchOutputs:
    inputs = Inputs(task=TASK)
    pending, publication = commit_of(mixed(inputs), inputs)
    return build(pending, publication)


def transactional(producer: FakeProducer) -> TransactionalCommitter:
    return TransactionalCommitter(producer, "app", DLQ)


async def test_a_transaction_sends_everything_then_the_offsets_then_commits() -> None:
    producer, out = FakeProducer(), outputs()
    first = await transactional(producer).commit(out)
    assert producer.names() == ["begin", "send", "offsets", "commit"]
    assert ("offsets", out.offsets, "app") in producer.calls
    assert len(producer.sent) == len(out.records)
    changelog_sent = [(k, v) for t, p, k, v, _ in producer.sent if t == CHANGELOG]
    assert changelog_sent == out.publication.changelog  # in order, to partition TASK
    assert {p for t, p, *_ in producer.sent if t == CHANGELOG} == {TASK}
    assert first[(CHANGELOG, TASK)] == 0
    assert set(first) == {(t, p) for t, p, *_ in producer.sent}


async def test_first_offsets_are_the_lowest_written_per_partition() -> None:
    producer = FakeProducer()
    producer.end[(CHANGELOG, TASK)] = 40
    first = await transactional(producer).commit(outputs())
    await transactional(producer).commit(outputs())
    assert first[(CHANGELOG, TASK)] == 40


@pytest.mark.parametrize(
    ("refused", "retriable"),
    [
        (RequestTimedOutError(), True),
        (AioKafkaError("bad"), True),
        (MessageSizeTooLargeError(), False),
    ],
)
async def test_a_refused_send_aborts_and_never_commits_the_offsets(
    refused: Exception, retriable: bool
) -> None:
    producer = FakeProducer()
    producer.refuse[SETTINGS.topic_model_versions] = refused
    with pytest.raises(KafkaError) as raised:
        await transactional(producer).commit(outputs())
    assert not isinstance(raised.value, DeadLetterError)
    assert raised.value.retriable is retriable
    assert raised.value.__cause__ is refused
    assert producer.names() == ["begin", "send", "abort"]


async def test_a_refused_dead_letter_is_a_dead_letter_error_and_aborts() -> None:
    producer = FakeProducer()
    producer.refuse[DLQ] = MessageSizeTooLargeError()
    with pytest.raises(DeadLetterError, match=DLQ) as raised:
        await transactional(producer).commit(outputs())
    assert not raised.value.retriable
    assert producer.names() == ["begin", "send", "abort"]


async def test_a_timed_out_dead_letter_is_retried_like_any_send() -> None:
    producer = FakeProducer()
    producer.refuse[DLQ] = RequestTimedOutError()
    with pytest.raises(KafkaError) as raised:
        await transactional(producer).commit(outputs())
    assert not isinstance(raised.value, DeadLetterError)
    assert raised.value.retriable


@pytest.mark.parametrize("where", ["begin", "commit"])
async def test_a_fenced_producer_is_task_fenced(where: str) -> None:
    producer = FakeProducer()
    producer.raise_on[where] = ProducerFenced()
    with pytest.raises(TaskFencedError) as raised:
        await transactional(producer).commit(outputs())
    assert raised.value.retriable
    assert isinstance(raised.value.__cause__, ProducerFenced)
    # Fenced: nothing to abort (another producer owns the transactional id now).
    full = ["begin", "send", "offsets", "commit"]
    assert producer.names() == full[: full.index(where) + 1]


async def test_a_send_refused_as_fenced_is_task_fenced() -> None:
    producer = FakeProducer()
    producer.refuse[CHANGELOG] = ProducerFenced()
    producer.raise_on["abort"] = ProducerFenced()  # a fenced producer cannot abort either
    with pytest.raises(TaskFencedError):
        await transactional(producer).commit(outputs())
    assert "offsets" not in producer.names() and "commit" not in producer.names()


@pytest.mark.parametrize("where", ["offsets", "commit"])
async def test_a_broker_error_in_the_transaction_aborts_it_retriably(where: str) -> None:
    producer = FakeProducer()
    producer.raise_on[where] = KafkaTimeoutError()
    with pytest.raises(KafkaError, match="aborted") as raised:
        await transactional(producer).commit(outputs())
    assert raised.value.retriable
    assert producer.names()[-1] == "abort"


async def test_a_failing_begin_is_retriable_and_sends_nothing() -> None:
    producer = FakeProducer()
    producer.raise_on["begin"] = KafkaTimeoutError()
    with pytest.raises(KafkaError, match="begin") as raised:
        await transactional(producer).commit(outputs())
    assert raised.value.retriable and producer.names() == ["begin"]


@pytest.mark.parametrize(
    ("abort_error", "expected"),
    [(ProducerFenced(), TaskFencedError), (KafkaTimeoutError(), KafkaError)],
)
async def test_a_failing_abort_is_reported_retriably(
    abort_error: Exception, expected: type[KafkaError]
) -> None:
    producer = FakeProducer()
    producer.raise_on["commit"] = KafkaTimeoutError()
    producer.raise_on["abort"] = abort_error
    with pytest.raises(expected) as raised:
        await transactional(producer).commit(outputs())
    assert raised.value.retriable


def at_least_once(
    producer: FakeProducer,
) -> tuple[AtLeastOnceCommitter, list[dict[TopicPartition, int]]]:
    committed: list[dict[TopicPartition, int]] = []

    async def commit_offsets(offsets: dict[TopicPartition, int]) -> None:
        producer.calls.append(("commit_offsets",))
        committed.append(offsets)

    return AtLeastOnceCommitter(producer, commit_offsets, DLQ), committed


async def test_at_least_once_delivers_everything_before_committing_the_offsets() -> None:
    producer, out = FakeProducer(), outputs()
    committer, committed = at_least_once(producer)
    first = await committer.commit(out)
    assert producer.names() == ["send", "commit_offsets"]  # no transaction
    assert committed == [out.offsets]
    assert len(producer.sent) == len(out.records)
    assert first[(CHANGELOG, TASK)] == 0


@pytest.mark.parametrize(("topic", "error"), [(CHANGELOG, KafkaError), (DLQ, DeadLetterError)])
async def test_at_least_once_never_commits_offsets_past_a_refused_send(
    topic: str, error: type[KafkaError]
) -> None:
    producer = FakeProducer()
    producer.refuse[topic] = MessageSizeTooLargeError()
    committer, committed = at_least_once(producer)
    with pytest.raises(error):
        await committer.commit(outputs())
    assert committed == []


async def test_at_least_once_reports_an_offset_commit_lost_to_a_rebalance() -> None:
    producer = FakeProducer()

    async def fenced(offsets: dict[TopicPartition, int]) -> None:
        raise TaskFencedError("offset commit failed (rebalanced)")

    commit: Callable[[dict[TopicPartition, int]], Awaitable[None]] = fenced
    committer = AtLeastOnceCommitter(producer, commit, DLQ)
    with pytest.raises(TaskFencedError):
        await committer.commit(outputs())


async def test_at_least_once_wraps_a_broker_error_while_sending() -> None:
    producer = FakeProducer()

    async def no_metadata(topic: str) -> None:
        raise KafkaTimeoutError()

    producer._wait_on_metadata = no_metadata  # type: ignore[method-assign]
    committer, committed = at_least_once(producer)
    with pytest.raises(KafkaError, match="publishing failed") as raised:
        await committer.commit(outputs())
    assert raised.value.retriable and committed == []
