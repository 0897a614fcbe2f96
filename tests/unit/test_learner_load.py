"""Bulk `load`: many keys at once from a changelog, the latest record of a key wins."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from stream_trainer.columns import FeedbackColumns, ObservationColumns
from stream_trainer.learners import Forecaster, TrustLearner

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _latest(*publications: list[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes]]:
    changelog: dict[bytes, bytes | None] = {}
    for state in publications:
        changelog.update(state)
    return [(k, v) for k, v in changelog.items() if v is not None]


def test_forecaster_load_keeps_the_last_record_of_each_key() -> None:
    source = Forecaster()
    ts = np.arange(1, 41, dtype=np.int64) * 1_000_000
    values = np.sin(np.arange(40.0))
    names = ["a", "b"] * 20
    source.learn_batch(ObservationColumns(names[:20], ts[:20], values[:20]))
    early = source.flush(NOW).state
    source.learn_batch(ObservationColumns(["a"] * 10, ts[20:30], values[20:30]))
    late = source.flush(NOW).state

    early_only = Forecaster()
    early_only.load(_latest(early))
    restored = Forecaster()
    restored.load(_latest(early, late))  # b's last record is early, a's is late
    assert restored.versions(["a"], NOW) == source.versions(["a"], NOW)
    assert restored.versions(["b"], NOW) == early_only.versions(["b"], NOW)
    assert restored.versions(["a"], NOW) != early_only.versions(["a"], NOW)


def test_trust_load_keeps_the_last_record_of_each_key() -> None:
    source = TrustLearner()
    batch = FeedbackColumns(
        ["r1", "r2", "r1"], ["e1", "e2", "e3"], np.array([1.0, 2.0, 3.0]),
        np.array([True, False, True]), np.ones(3),
    )  # fmt: skip
    source.learn_batch(batch)
    first = source.flush(NOW).state
    source.learn_batch(
        FeedbackColumns(["r1"], ["e4"], np.array([4.0]), np.array([False]), np.ones(1))
    )
    restored = TrustLearner()
    restored.load(_latest(first, source.flush(NOW).state))
    assert restored.versions(["r1", "r2"], NOW) == source.versions(["r1", "r2"], NOW)
