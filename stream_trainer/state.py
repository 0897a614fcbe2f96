"""Per-task learner state: learning batches, publishing what changed, changelog and restore.

A task holds one entry per learner: which input it learns from, which letter prefixes its
changelog keys, which topic gets its versions. Learning and publishing are separate steps:
batches are learned as they arrive, and a commit publishes once per changed key (the
record cache of Kafka Streams). The changelog is a compacted topic co-partitioned with the
inputs (task n writes partition n); its keys are ``<letter>:<key>`` for a model's state
(``r:<rule_id>``, ``m:<variable>``) and ``<letter>#<name>`` for a learner's own records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stream_trainer.batching import Forget, InvalidRecord, KafkaRecord, Kind, TrainingBatch
from stream_trainer.config import Settings
from stream_trainer.learners.base import Learner
from stream_trainer.learners.forecaster import Forecaster
from stream_trainer.learners.store import FloatArray
from stream_trainer.learners.trust import TrustLearner

Changelog = list[tuple[bytes, bytes | None]]


@dataclass(frozen=True, slots=True)
class LearnerEntry:
    """One learner of a task and how it is wired to the batch and the topics."""

    kind: str  # "rule" | "model": metric label, HTTP path, CLI word
    letter: bytes  # changelog key prefix, one byte
    input: Kind  # which input topic feeds it
    learner: Learner[Any, Any]
    columns: Callable[[TrainingBatch], Any]
    records: Callable[[TrainingBatch], list[KafkaRecord]]
    version_topic: str


def default_entries(settings: Settings) -> list[LearnerEntry]:
    """Rule trust from feedback, AR forecasters from observations (DESIGN section 3)."""
    trust = TrustLearner(
        half_life_s=settings.trust_half_life_s,
        retire_below=settings.trust_retire_below,
        probation_below=settings.trust_probation_below,
        dedupe_window_s=settings.dedupe_window_s,
        dedupe_max_bytes=settings.dedupe_max_bytes,
    )
    forecaster = Forecaster(
        order=settings.ar_order,
        forgetting=settings.rls_forgetting,
        initial_p=settings.rls_initial_p,
    )
    return [
        LearnerEntry(
            "rule",
            b"r",
            "feedback",
            trust,
            lambda b: b.feedback,
            lambda b: b.feedback_records,
            settings.topic_rule_versions,
        ),
        LearnerEntry(
            "model",
            b"m",
            "observation",
            forecaster,
            lambda b: b.observations,
            lambda b: b.observation_records,
            settings.topic_model_versions,
        ),
    ]


@dataclass(frozen=True, slots=True)
class LearnedBatch:
    """What learning one batch did: its refused records and the events applied per kind."""

    batch: TrainingBatch
    invalid: list[InvalidRecord]
    applied: dict[str, int]

    @property
    def observations_applied(self) -> int:
        return self.applied.get("model", 0)

    @property
    def feedback_applied(self) -> int:
        return self.applied.get("rule", 0)


@dataclass(frozen=True, slots=True)
class Publication:
    """One commit's share of state: versions per topic, changelog records, counts."""

    versions: list[tuple[str, bytes, bytes | None]]  # topic, key, wire value (None: tombstone)
    changelog: Changelog
    updated: dict[str, int]  # kind -> keys published
    forgotten: dict[str, int]  # kind -> keys deleted (tombstones published)
    samples: dict[str, FloatArray] = field(default_factory=dict)  # metric -> per model


class TaskState:
    """The learners of one task."""

    def __init__(
        self,
        settings: Settings,
        entries: Sequence[LearnerEntry] | None = None,
        *,
        keep_records: bool = False,
    ) -> None:
        self.entries = list(entries if entries is not None else default_entries(settings))
        # The latest changelog record per key, for the local snapshot (state_dir only).
        self.records: dict[bytes, bytes] | None = {} if keep_records else None
        self._by_kind = {e.kind: e for e in self.entries}
        self._by_letter = {e.letter: e for e in self.entries}
        self._forgotten: list[tuple[LearnerEntry, str]] = []

    def entry(self, kind: str) -> LearnerEntry:
        return self._by_kind[kind]

    def learn(self, batch: TrainingBatch) -> LearnedBatch:
        """Learn from a batch (CPU-bound: the caller runs it off the event loop)."""
        invalid = list(batch.invalid)
        applied: dict[str, int] = {}
        for entry in self.entries:
            forgets = [f for f in batch.forgets if f.kind == entry.input]
            columns, records = entry.columns(batch), entry.records(batch)
            refused = self._learn_around(entry, columns, forgets)
            invalid.extend(
                InvalidRecord(records[pos], reason, f"refused by the learner: {reason}")
                for pos, reason in refused
            )
            # A forget is an applied record of its input: the counts add up to the input.
            applied[entry.kind] = len(columns) - len(refused) + len(forgets)
        return LearnedBatch(batch, invalid, applied)

    def _learn_around(
        self, entry: LearnerEntry, columns: Any, forgets: list[Forget]
    ) -> list[tuple[int, str]]:
        """Learn the columns, forgetting keys at their tombstones' positions."""
        refused: list[tuple[int, str]] = []
        start = 0
        for stop, forget in [*((f.position, f) for f in forgets), (len(columns), None)]:
            if stop > start or forget is None:
                part = columns if (start, stop) == (0, len(columns)) else columns.slice(start, stop)
                result = entry.learner.learn_batch(part)
                refused.extend(
                    (start + int(pos), reason)
                    for pos, reason in zip(
                        result.rejected_positions.tolist(), result.rejected_reasons, strict=True
                    )
                )
            if forget is not None:
                self.forget(entry.kind, forget.key)
            start = stop
        return refused

    def publish(self, published_at: datetime) -> Publication:
        """Versions and changelog records of every key changed since the last publish."""
        versions: list[tuple[str, bytes, bytes | None]] = []
        changelog: Changelog = []
        updated: dict[str, int] = {}
        forgotten: dict[str, int] = {}
        samples: dict[str, FloatArray] = {}
        for entry, key in self._forgotten:
            raw = key.encode()
            versions.append((entry.version_topic, raw, None))
            changelog.append((entry.letter + b":" + raw, None))
            forgotten[entry.kind] = forgotten.get(entry.kind, 0) + 1
        self._forgotten.clear()
        for entry in self.entries:
            flushed = entry.learner.flush(published_at)
            topic = entry.version_topic
            versions.extend(
                (topic, k.encode(), v) for k, v in zip(flushed.keys, flushed.values, strict=True)
            )
            changelog.extend((entry.letter + suffix, value) for suffix, value in flushed.state)
            updated[entry.kind] = len(flushed.keys)
            samples.update(flushed.samples)
        if self.records is not None:
            _apply(self.records, changelog)
        return Publication(versions, changelog, updated, forgotten, samples)

    def current_versions(self) -> list[tuple[str, bytes, bytes | None]]:
        """(topic, key, last published wire value) of every key held: after a restore,
        what the version topics hold for this task."""
        out: list[tuple[str, bytes, bytes | None]] = []
        for entry in self.entries:
            current = entry.learner.current()
            out.extend(
                (entry.version_topic, k.encode(), v)
                for k, v in zip(current.keys, current.values, strict=True)
            )
        return out

    def forget(self, kind: str, key: str) -> bool:
        """Drop a key; the next publish writes its tombstones. False if it was unknown.

        A key learned again before that publish is published as a new life (version 1)
        after its tombstones, in that order.
        """
        entry = self._by_kind[kind]
        if not entry.learner.forget(key):
            return False
        self._forgotten.append((entry, key))
        return True

    def restore(self, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """Load changelog records (oldest first; later records of a key win, None deletes)."""
        latest: dict[bytes, bytes | None] = dict(records)
        if self.records is not None:
            _apply(self.records, latest.items())
        routed: dict[bytes, list[tuple[bytes, bytes]]] = {e.letter: [] for e in self.entries}
        for key, value in latest.items():
            target = routed.get(key[:1])
            if target is not None and value is not None:
                target.append((key[1:], value))
        for letter, items in routed.items():
            self._by_letter[letter].learner.load(items)
        return sum(len(items) for items in routed.values())

    def final_versions(self, published_at: datetime) -> tuple[list[Any], list[Any]]:
        """The current (rule, model) version Structs of every key this task holds."""
        rules, models = self._by_kind["rule"].learner, self._by_kind["model"].learner
        return rules.versions(list(rules), published_at), models.versions(
            list(models), published_at
        )

    @property
    def model_counts(self) -> dict[str, int]:
        """Keys held per kind."""
        return {e.kind: len(e.learner) for e in self.entries}

    def summaries(self) -> dict[str, dict[str, Any]]:
        return {e.kind: e.learner.summary() for e in self.entries}


def _apply(records: dict[bytes, bytes], changes: Iterable[tuple[bytes, bytes | None]]) -> None:
    for key, value in changes:
        if value is None:
            records.pop(key, None)
        else:
            records[key] = value
