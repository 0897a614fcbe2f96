"""`ops.recorder.record_commit`: what one successful commit adds to the metrics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stream_trainer.batching import InvalidRecord
from stream_trainer.config import Settings
from stream_trainer.events import TrainingMetrics
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.ops.recorder import record_commit
from stream_trainer.publishing import BatchOutputs
from stream_trainer.state import Publication
from tests.unit.core_fakes import OBS, Rec

PUBLISHED = datetime(2026, 3, 1, tzinfo=UTC)


def commit_outputs(
    reasons: list[str],
    updated: dict[str, int],
    forgotten: dict[str, int],
    age_ms: float = 1500.0,
) -> BatchOutputs:
    invalid = [
        InvalidRecord(Rec(OBS, 0, i, b"k", b"v"), reason, "detail")
        for i, reason in enumerate(reasons)
    ]
    metrics = TrainingMetrics(
        batch_id="0:0-9:-",
        observations=7,
        feedback=3,
        invalid=len(invalid),
        models_updated=updated.get("model", 0),
        rules_updated=updated.get("rule", 0),
        duration_ms=4.0,
        max_event_age_ms=age_ms,
        published_at=PUBLISHED,
    )
    publication = Publication([], [], updated, forgotten)
    return BatchOutputs([], {}, metrics, invalid, publication)


def value(metrics: TrainerMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(f"stream_trainer_{name}", labels)
    return 0.0 if found is None else float(found)


def test_a_commit_counts_events_invalid_versions_forgets_and_ages() -> None:
    metrics = TrainerMetrics()
    outputs = commit_outputs(
        ["malformed", "duplicate", "malformed"], {"model": 4, "rule": 2}, {"rule": 1}
    )
    record_commit(metrics, outputs, 0.02, Settings())
    record_commit(metrics, outputs, 0.04, Settings())
    assert value(metrics, "batch_events_count") == 2
    assert value(metrics, "batch_events_sum") == 2 * (7 + 3 + 3)
    assert value(metrics, "batch_duration_seconds_sum") == pytest.approx(0.06)
    assert value(metrics, "transactions_total", result="committed") == 2
    assert value(metrics, "events_invalid_total", reason="malformed") == 4
    assert value(metrics, "events_invalid_total", reason="duplicate") == 2
    assert value(metrics, "versions_published_total", kind="model") == 8
    assert value(metrics, "versions_published_total", kind="rule") == 4
    assert value(metrics, "keys_forgotten_total", kind="rule") == 2
    assert value(metrics, "keys_forgotten_total", kind="model") == 0
    assert value(metrics, "event_age_seconds_sum") == pytest.approx(3.0)
    assert value(metrics, "event_age_seconds_bucket", le="1.0") == 0
    assert value(metrics, "event_age_seconds_bucket", le="10.0") == 2


def test_at_least_once_counts_no_transaction() -> None:
    metrics = TrainerMetrics()
    record_commit(
        metrics,
        commit_outputs([], {"model": 1}, {}),
        0.01,
        Settings(processing_guarantee="at_least_once"),
    )
    assert value(metrics, "transactions_total", result="committed") == 0
    assert value(metrics, "batch_events_count") == 1


def test_a_commit_without_events_observes_no_event_age() -> None:
    metrics = TrainerMetrics()
    record_commit(metrics, commit_outputs(["schema"], {}, {}, age_ms=0.0), 0.01, Settings())
    assert value(metrics, "event_age_seconds_count") == 0
    assert value(metrics, "events_invalid_total", reason="schema") == 1
