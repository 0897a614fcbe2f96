"""Host stream-trainer's learners and publisher in a Faust agent.

For a team that already runs Faust (``faust-streaming``, the ``faust`` extra) and wants the
same models without a second service. The agent reads both input topics as raw bytes and
hands the Kafka messages to a :class:`FaustLearnerHost`, which keeps one `TaskState` per
input partition (co-partitioned, as DESIGN section 4 requires), decodes and learns each
partition's records as one vectorised micro-batch, and returns the same versions, training
metrics, dead letters and changelog records that `stream-trainer run` publishes::

    app = faust.App("pulse-trainer", broker="kafka://localhost:9092")
    inputs = app.topic(
        "pulse.observations", "pulse.feedback", key_serializer="raw", value_serializer="raw"
    )
    host = FaustLearnerHost(load_settings())

    @app.agent(inputs)
    async def train(stream):
        async for events in stream.take_events(5000, within=0.05):
            await host.publish(host.process([e.message for e in events]), app.producer.send)

Micro-batches (``take_events``) are what make this fast: per event (``stream.events()``) the
numpy learners pay their fixed cost for every record. The guarantee is Faust's: events are
acked after the agent's iteration, so a crash replays them (at-least-once; versions may
repeat). Restore a partition's state with :meth:`FaustLearnerHost.restore` from the changelog
topic (``Settings.changelog_topic``, partition = input partition) when Faust assigns it, and
:meth:`FaustLearnerHost.drop` it on revocation. Nothing here imports Faust: the host works on
any records with ``topic``, ``partition``, ``offset``, ``key`` and ``value``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from stream_trainer.batching import KafkaRecord, PendingBatch, decode_batch
from stream_trainer.checkpoint import PendingCommit
from stream_trainer.config import Settings
from stream_trainer.errors import ConfigError
from stream_trainer.events import utc_now
from stream_trainer.publishing import BatchOutputs, build_outputs
from stream_trainer.state import LearnedBatch, TaskState

__all__ = ["FaustLearnerHost", "Sender"]


class Sender(Protocol):
    """Faust's ``app.producer.send`` signature (the returned awaitable is the delivery)."""

    def __call__(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> Awaitable[Any]: ...


class FaustLearnerHost:
    """The learners of every input partition a Faust worker holds, and their publisher."""

    def __init__(self, settings: Settings, instance_id: str = "faust") -> None:
        self.settings = settings
        self.instance_id = instance_id
        self._states: dict[int, TaskState] = {}

    @property
    def partitions(self) -> list[int]:
        """Input partitions that currently have learner state here."""
        return sorted(self._states)

    def state(self, partition: int) -> TaskState:
        """The learners of one input partition (created empty on first use)."""
        state = self._states.get(partition)
        if state is None:
            state = self._states[partition] = TaskState(self.settings)
        return state

    def restore(self, partition: int, changelog: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Replace a partition's state with its changelog records (oldest first)."""
        state = self._states[partition] = TaskState(self.settings)
        return state.restore(changelog)

    def drop(self, partition: int) -> None:
        """Forget a revoked partition (its state lives on in the changelog)."""
        self._states.pop(partition, None)

    def apply(self, records: Sequence[KafkaRecord]) -> list[LearnedBatch]:
        """Learn from records of any partitions: one batch per partition, partitions sorted."""
        return [learned for learned, _ in self._learn_timed(records)]

    def process(
        self, records: Sequence[KafkaRecord], published_at: datetime | None = None
    ) -> list[BatchOutputs]:
        """Learn, then publish each partition's outputs: versions, metrics, dead letters,
        changelog (one publication per partition and call, as one commit of the service)."""
        when = published_at or utc_now()
        outputs = []
        for learned, seconds in self._learn_timed(records):
            pending = PendingCommit()
            pending.add(learned, seconds)
            task = learned.batch.task
            publication = self.state(task).publish(when)
            outputs.append(
                build_outputs(task, pending, publication, self.settings, self.instance_id, when)
            )
        return outputs

    def _learn_timed(self, records: Sequence[KafkaRecord]) -> list[tuple[LearnedBatch, float]]:
        """Each partition's learned batch with its decode + learn seconds (for the metrics)."""
        done = []
        for pending in self._pending(records):
            started = time.perf_counter()
            batch = decode_batch(pending, self.settings.max_event_bytes)
            learned = self.state(pending.task).learn(batch)
            done.append((learned, time.perf_counter() - started))
        return done

    async def publish(self, outputs: Iterable[BatchOutputs], send: Sender) -> list[Any]:
        """Hand every output record to ``send`` in order; returns what each call gave back
        (with Faust's producer, delivery futures to await or let the producer flush)."""
        deliveries = []
        for batch in outputs:
            for rec in batch.records:
                deliveries.append(
                    await send(rec.topic, rec.key, rec.value, rec.partition, None, rec.headers)
                )
        return deliveries

    def _pending(self, records: Sequence[KafkaRecord]) -> list[PendingBatch]:
        """Group records by partition, keeping their order within each topic-partition."""
        observations, feedback = self.settings.topic_observations, self.settings.topic_feedback
        opened = time.monotonic()
        batches: dict[int, PendingBatch] = {}
        for record in records:
            batch = batches.get(record.partition)
            if batch is None:
                batch = batches[record.partition] = PendingBatch(record.partition, 0, opened)
            if record.topic == observations:
                batch.observations.append(record)
            elif record.topic == feedback:
                batch.feedback.append(record)
            else:
                raise ConfigError(
                    f"record from topic {record.topic!r}: the agent must read only "
                    f"{observations!r} (topic_observations) and {feedback!r} (topic_feedback)"
                )
        return [batches[p] for p in sorted(batches)]
