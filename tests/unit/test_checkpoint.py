"""`checkpoint`: the pending work of a task (`PendingCommit`), when it is due, and `commit`
through a fake `Committer`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition

from stream_trainer.batching import InvalidRecord, TrainingBatch
from stream_trainer.checkpoint import Checkpoint, CommitFailed, PendingCommit
from stream_trainer.config import Settings
from stream_trainer.errors import DeadLetterError, KafkaError, TaskFencedError
from stream_trainer.events import TrainingMetrics
from stream_trainer.publishing import BatchOutputs, FirstOffsets
from stream_trainer.state import LearnedBatch, Publication, TaskState
from tests.sample_events import T0
from tests.unit.core_fakes import FB, OBS, Inputs

SETTINGS = Settings(commit_interval_ms=100, cache_max_events=10)
CHANGELOG = SETTINGS.changelog_topic
RULES = SETTINGS.topic_rule_versions


def learned(batch: TrainingBatch, applied: dict[str, int] | None = None) -> LearnedBatch:
    return LearnedBatch(batch, list(batch.invalid), applied or {"model": 1})


# -- PendingCommit ----------------------------------------------------------------------------


def test_pending_work_accumulates_across_batches() -> None:
    inputs = Inputs(task=2)
    first = inputs.batch([inputs.obs("a", 1), inputs.obs("a", 2), inputs.fb("r", 1, True)])
    second = inputs.batch([inputs.raw(OBS, b"a", b"nope"), inputs.obs("a", 3)])
    third = inputs.batch([inputs.fb("r", 2, False), inputs.raw(FB, b"r", b"[]")])
    assert PendingCommit().empty
    pending = PendingCommit()
    pending.add(learned(first, {"model": 2, "rule": 1}), 0.25)
    pending.add(learned(second, {"model": 1}), 0.5)
    pending.add(learned(third, {"rule": 1}), 0.25)
    assert not pending.empty and pending.opened_at is not None
    assert pending.events == 3 + 2 + 2
    assert pending.applied == {"model": 3, "rule": 2}
    assert pending.learn_seconds == pytest.approx(1.0)
    assert [(inv.record.topic, inv.record.offset) for inv in pending.invalid] == [(OBS, 2), (FB, 2)]
    # The offsets to commit: past the last record of each partition seen so far.
    assert pending.offsets == {TopicPartition(OBS, 2): 4, TopicPartition(FB, 2): 3}
    assert pending.batch_id == f"{first.batch_id}..{third.batch_id}"
    assert pending.batch_id == "2:0-1:0-0..2:-:1-2"


def test_one_batch_keeps_its_own_id_and_the_oldest_event_time_is_kept() -> None:
    inputs = Inputs()
    late = inputs.batch([inputs.obs("a", 50)])
    early = inputs.batch([inputs.fb("r", 7, True), inputs.obs("a", 60)])
    pending = PendingCommit()
    pending.add(learned(late), 0.0)
    assert pending.batch_id == late.batch_id == "0:0-0:-"
    pending.add(learned(early), 0.0)
    assert pending.oldest_event_us == (T0.timestamp() + 7) * 1e6


def test_a_batch_of_only_invalid_records_counts_and_has_no_event_time() -> None:
    inputs = Inputs()
    batch = inputs.batch([inputs.raw(OBS, b"a", b"{"), inputs.raw(OBS, None, None)])
    pending = PendingCommit()
    pending.add(learned(batch, {"model": 0, "rule": 0}), 0.0)
    assert (pending.events, len(pending.invalid), pending.oldest_event_us) == (2, 2, None)
    assert pending.offsets == {TopicPartition(OBS, 0): 2}


# -- due_in ---------------------------------------------------------------------------------


def checkpoint(committer: FakeCommitter | None = None) -> Checkpoint:
    return Checkpoint(0, TaskState(SETTINGS), committer or FakeCommitter())


def test_nothing_pending_is_never_due() -> None:
    assert checkpoint().due_in(SETTINGS, now=1e9) is None


def test_due_by_the_interval_after_the_first_uncommitted_batch() -> None:
    cp, inputs = checkpoint(), Inputs()
    cp.add(learned(inputs.batch([inputs.obs("a", 1)])), 0.0)
    opened = cp.pending.opened_at
    assert opened is not None
    assert cp.due_in(SETTINGS, opened) == pytest.approx(0.1)
    cp.add(learned(inputs.batch([inputs.obs("a", 2)])), 0.0)  # a later batch: same deadline
    assert cp.pending.opened_at == opened
    assert cp.due_in(SETTINGS, opened + 0.04) == pytest.approx(0.06)
    assert cp.due_in(SETTINGS, opened + 0.1) == 0.0
    assert cp.due_in(SETTINGS, opened + 5.0) == 0.0


def test_due_at_once_when_the_cache_holds_cache_max_events() -> None:
    cp, inputs = checkpoint(), Inputs()
    cp.add(learned(inputs.batch([inputs.obs("a", s) for s in range(1, 10)])), 0.0)
    opened = cp.pending.opened_at
    assert opened is not None and cp.due_in(SETTINGS, opened) == pytest.approx(0.1)  # 9 < 10
    cp.add(learned(inputs.batch([inputs.raw(OBS, b"a", b"bad")])), 0.0)  # invalid ones count
    assert cp.due_in(SETTINGS, opened) == 0.0


# -- commit -----------------------------------------------------------------------------------


class FakeCommitter:
    """Records what it is asked to commit; fails with `error` when set."""

    def __init__(self, first: FirstOffsets | None = None) -> None:
        self.first = first or {}
        self.error: KafkaError | None = None
        self.committed: list[BatchOutputs] = []

    async def commit(self, outputs: BatchOutputs) -> FirstOffsets:
        if self.error is not None:
            raise self.error
        self.committed.append(outputs)
        return self.first


def outputs(
    offsets: dict[TopicPartition, int], versions: list[tuple[str, bytes, bytes | None]]
) -> BatchOutputs:
    metrics = TrainingMetrics("b", 0, 0, 0, 0, 0, 0.0, 0.0, datetime(2026, 1, 1, tzinfo=UTC))
    publication = Publication(versions, [], {}, {})
    invalid: list[InvalidRecord] = []
    return BatchOutputs([], offsets, metrics, invalid, publication)


def with_pending(cp: Checkpoint, offset: int) -> dict[TopicPartition, int]:
    inputs = Inputs()
    inputs.next_offset[OBS] = offset - 1
    cp.add(learned(inputs.batch([inputs.obs("a", offset)])), 0.0)
    return dict(cp.pending.offsets)


async def test_a_successful_commit_moves_the_committed_offsets_and_holds_the_versions() -> None:
    committer = FakeCommitter({(CHANGELOG, 0): 41, (RULES, 1): 7})
    cp = checkpoint(committer)
    offsets = with_pending(cp, 5)
    out = outputs(offsets, [(RULES, b"r1", b"v1"), (RULES, b"r2", b"v1")])
    await cp.commit(out, CHANGELOG)
    assert committer.committed == [out]
    assert cp.committed == {TopicPartition(OBS, 0): 5}
    assert cp.versions == {RULES: {b"r1": b"v1", b"r2": b"v1"}}
    assert cp.changelog_offset == 41
    assert cp.pending.empty  # the next commit starts from nothing


async def test_versions_are_held_latest_per_key_and_a_tombstone_deletes() -> None:
    committer = FakeCommitter()
    cp = checkpoint(committer)
    with_pending(cp, 1)
    await cp.commit(outputs({}, [(RULES, b"r1", b"v1"), (RULES, b"r2", b"v1")]), CHANGELOG)
    with_pending(cp, 2)
    await cp.commit(outputs({}, [(RULES, b"r1", None), (RULES, b"r2", b"v2")]), CHANGELOG)
    assert cp.versions == {RULES: {b"r2": b"v2"}}
    cp.hold_versions([(RULES, b"r1", b"v1-new-life"), (RULES, b"gone", None)])
    assert cp.versions == {RULES: {b"r1": b"v1-new-life", b"r2": b"v2"}}


async def test_a_commit_that_writes_no_changelog_keeps_the_last_changelog_offset() -> None:
    committer = FakeCommitter({(CHANGELOG, 0): 12})
    cp = checkpoint(committer)
    with_pending(cp, 1)
    await cp.commit(outputs({}, []), CHANGELOG)
    committer.first = {(CHANGELOG, 1): 99}  # another task's partition: not ours
    with_pending(cp, 2)
    await cp.commit(outputs({}, []), CHANGELOG)
    assert cp.changelog_offset == 12


@pytest.mark.parametrize(
    ("error", "retriable"),
    [
        (KafkaError("transaction aborted", retriable=True), True),
        (TaskFencedError("producer fenced"), True),
        (DeadLetterError("dead-letter topic gone"), False),
        (KafkaError("not authorised", retriable=False), False),
    ],
)
async def test_a_failed_commit_is_commit_failed_and_moves_nothing(
    error: KafkaError, retriable: bool
) -> None:
    committer = FakeCommitter({(CHANGELOG, 0): 3})
    cp = checkpoint(committer)
    with_pending(cp, 4)
    await cp.commit(outputs(dict(cp.pending.offsets), [(RULES, b"r", b"v1")]), CHANGELOG)
    committer.error = error
    with_pending(cp, 9)
    with pytest.raises(CommitFailed) as raised:
        await cp.commit(outputs(dict(cp.pending.offsets), [(RULES, b"r", b"v2")]), CHANGELOG)
    failed = raised.value
    assert failed.cause is error and failed.__cause__ is error
    assert failed.retriable is retriable and failed.task == 0
    assert str(error) in str(failed) and "task 0" in str(failed)
    assert cp.committed == {TopicPartition(OBS, 0): 4}  # the last successful commit's
    assert cp.versions == {RULES: {b"r": b"v1"}}
    assert cp.changelog_offset == 3
    assert cp.pending.empty  # the failed work is gone: the task is rebuilt from the changelog


async def test_prepare_publishes_the_state_into_the_outputs_of_the_pending_work() -> None:
    cp, inputs = checkpoint(), Inputs()
    batch = inputs.batch([inputs.obs("a", 1), inputs.fb("r", 1, True)])
    cp.add(cp.state.learn(batch), 0.0)
    out = cp.prepare(SETTINGS, "instance-1")
    assert sorted((t, k) for t, k, _ in out.publication.versions) == [
        (SETTINGS.topic_model_versions, b"a"),
        (RULES, b"r"),
    ]
    assert out.offsets == cp.pending.offsets
    assert out.metrics.batch_id == batch.batch_id
    assert (out.metrics.observations, out.metrics.feedback) == (1, 1)
