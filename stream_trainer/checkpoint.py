"""The checkpoint: a task's learned-but-uncommitted work, and the one place it commits.

Batches are learned as they arrive and held in the task's `PendingCommit` (the record
cache). A commit is due `commit_interval_ms` after the first uncommitted batch, or sooner
once `cache_max_events` events wait. Committing publishes once per changed key, in the
fixed order of Kafka Streams / Quix Streams: every output and changelog record delivered,
then the input offsets, then the transaction commit (at-least-once: flush, then commit
offsets). A commit that fails is reported as `CommitFailed`; `tasks.TaskManager` owns the
recovery (reset, restore, seek back), under the retry budget of `retry.RetryBudget`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import TopicPartition

from stream_trainer.batching import InvalidRecord
from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.events import utc_now
from stream_trainer.publishing import BatchOutputs, Committer, build_outputs
from stream_trainer.state import LearnedBatch, Publication, TaskState


@dataclass(slots=True)
class PendingCommit:
    """Everything learned since the last commit of one task."""

    opened_at: float | None = None  # monotonic time the first uncommitted record came in
    events: int = 0
    learn_seconds: float = 0.0
    invalid: list[InvalidRecord] = field(default_factory=list)
    applied: dict[str, int] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    spans: list[str] = field(default_factory=list)
    oldest_event_us: float | None = None

    def add(self, learned: LearnedBatch, seconds: float) -> None:
        batch = learned.batch
        if self.opened_at is None:
            # The interval runs from when the batch's first record was fetched, not from
            # when it was learned: a commit then comes commit_interval_ms after an event
            # arrived at the latest (plus the transaction), whatever the linger.
            self.opened_at = batch.opened_at
        self.events += batch.input_records
        self.learn_seconds += seconds
        self.invalid.extend(learned.invalid)
        for kind, count in learned.applied.items():
            self.applied[kind] = self.applied.get(kind, 0) + count
        for (topic, partition), offset in batch.next_offsets.items():
            self.offsets[TopicPartition(topic, partition)] = offset
        self.spans.append(batch.batch_id)
        oldest = batch.oldest_event_us()
        if oldest is not None and (self.oldest_event_us is None or oldest < self.oldest_event_us):
            self.oldest_event_us = oldest

    @property
    def empty(self) -> bool:
        return self.opened_at is None

    @property
    def batch_id(self) -> str:
        """The input offsets this commit covers (first and last batch), deterministic."""
        if len(self.spans) == 1:
            return self.spans[0]
        return f"{self.spans[0]}..{self.spans[-1]}"


class CommitFailed(KafkaError):
    """A task's commit did not happen; its learned state must be rebuilt from the changelog."""

    def __init__(self, task: int, cause: KafkaError) -> None:
        super().__init__(f"task {task}: {cause}", retriable=cause.retriable)
        self.task = task
        self.cause = cause


class Checkpoint:
    """The pending work of one task and its committer; `commit` publishes and commits it."""

    def __init__(self, number: int, state: TaskState, committer: Committer) -> None:
        self.number = number
        self.state = state
        self.committer = committer
        self.pending = PendingCommit()
        self.committed: dict[TopicPartition, int] = {}
        # First changelog offset of the last commit that wrote any (for the snapshot).
        self.changelog_offset: int | None = None
        # The last committed wire value of every key, per version topic (HTTP queries).
        self.versions: dict[str, dict[bytes, bytes]] = {}

    def add(self, learned: LearnedBatch, seconds: float) -> None:
        self.pending.add(learned, seconds)

    def hold_versions(self, versions: list[tuple[str, bytes, bytes | None]]) -> None:
        """Remember committed versions (latest per key; a tombstone deletes)."""
        for topic, key, value in versions:
            held = self.versions.setdefault(topic, {})
            if value is None:
                held.pop(key, None)
            else:
                held[key] = value

    def due_in(self, settings: Settings, now: float) -> float | None:
        """Seconds until a commit is due (0: now); None when nothing waits."""
        opened = self.pending.opened_at
        if opened is None:
            return None
        if self.pending.events >= settings.cache_max_events:
            return 0.0
        return max(0.0, opened + settings.commit_interval_ms / 1000.0 - now)

    def prepare(self, settings: Settings, instance_id: str) -> BatchOutputs:
        """Publish the learners' changes into output records (CPU work: off the loop)."""
        published_at = utc_now()
        publication: Publication = self.state.publish(published_at)
        return build_outputs(
            self.number, self.pending, publication, settings, instance_id, published_at
        )

    async def commit(self, outputs: BatchOutputs, changelog_topic: str) -> None:
        """Deliver and commit; raises `CommitFailed` (the pending work is then lost)."""
        pending, self.pending = self.pending, PendingCommit()
        try:
            first = await self.committer.commit(outputs)
        except KafkaError as exc:
            raise CommitFailed(self.number, exc) from exc
        self.committed.update(pending.offsets)
        self.hold_versions(outputs.publication.versions)
        offset = first.get((changelog_topic, self.number))
        if offset is not None:
            self.changelog_offset = offset
