"""Per-task learner state: applying a batch, and its changelog records.

A task owns one `TrustLearner` and one `Forecaster`. Applying a `TrainingBatch` mutates
them and returns everything the batch must publish. The changelog is a compacted topic
co-partitioned with the inputs (task n writes partition n); its keys are ``r:<rule_id>`` and
``m:<variable>`` so one topic holds both learners' models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from stream_trainer.batching import InvalidRecord, KafkaRecord, TrainingBatch
from stream_trainer.config import Settings
from stream_trainer.events import ModelVersion, RuleVersion
from stream_trainer.learners.base import LearnResult
from stream_trainer.learners.forecaster import Forecaster
from stream_trainer.learners.trust import TrustLearner

RULE_PREFIX = b"r:"
MODEL_PREFIX = b"m:"


@dataclass(frozen=True, slots=True)
class AppliedBatch:
    """What applying one batch produced: versions to publish and state to log."""

    batch: TrainingBatch
    rule_versions: list[RuleVersion]
    model_versions: list[ModelVersion]
    invalid: list[InvalidRecord]
    changelog: list[tuple[bytes, bytes]]
    observations_applied: int
    feedback_applied: int
    published_at: datetime


class TaskState:
    """The learners of one task."""

    def __init__(self, settings: Settings) -> None:
        self.trust = TrustLearner(
            half_life_s=settings.trust_half_life_s,
            retire_below=settings.trust_retire_below,
            probation_below=settings.trust_probation_below,
            dedupe_window_s=settings.dedupe_window_s,
        )
        self.forecaster = Forecaster(
            order=settings.ar_order,
            forgetting=settings.rls_forgetting,
            initial_p=settings.rls_initial_p,
        )

    def apply(self, batch: TrainingBatch, published_at: datetime) -> AppliedBatch:
        """Learn from a batch (CPU-bound: the pool runs this in a worker thread)."""
        invalid = list(batch.invalid)
        model_result = self.forecaster.learn_batch(batch.observations)
        invalid.extend(_rejected(model_result, batch.observation_records))
        rule_result = self.trust.learn_batch(batch.feedback)
        invalid.extend(_rejected(rule_result, batch.feedback_records))
        return AppliedBatch(
            batch=batch,
            rule_versions=self.trust.versions(rule_result.touched, published_at),
            model_versions=self.forecaster.versions(model_result.touched, published_at),
            invalid=invalid,
            changelog=self._changelog(rule_result.touched, model_result.touched),
            observations_applied=len(batch.observations) - len(model_result.rejected_positions),
            feedback_applied=len(batch.feedback) - len(rule_result.rejected_positions),
            published_at=published_at,
        )

    def _changelog(self, rules: list[str], models: list[str]) -> list[tuple[bytes, bytes]]:
        records = [(RULE_PREFIX + k.encode(), v) for k, v in self.trust.dump(rules)]
        records.extend((MODEL_PREFIX + k.encode(), v) for k, v in self.forecaster.dump(models))
        return records

    def restore(self, records: Iterable[tuple[bytes, bytes]]) -> int:
        """Load changelog records (oldest first; later records of a key win)."""
        latest: dict[bytes, bytes] = {}
        for key, value in records:
            latest[key] = value
        rules = [(k[2:].decode(), v) for k, v in latest.items() if k.startswith(RULE_PREFIX)]
        models = [(k[2:].decode(), v) for k, v in latest.items() if k.startswith(MODEL_PREFIX)]
        self.trust.load(rules)
        self.forecaster.load(models)
        return len(latest)

    @property
    def model_counts(self) -> tuple[int, int]:
        """(rules, models) held by this task."""
        return len(self.trust), len(self.forecaster)


def _rejected(result: LearnResult, records: list[KafkaRecord]) -> list[InvalidRecord]:
    return [
        InvalidRecord(records[int(pos)], reason, f"refused by the learner: {reason}")
        for pos, reason in zip(result.rejected_positions, result.rejected_reasons, strict=True)
    ]
