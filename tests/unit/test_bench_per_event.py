"""The benchmarks' per-event learners (benchmarks/per_event.py) equal the reference learners."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from benchmarks import per_event
from stream_trainer.events import ts_s, ts_us
from tests.reference_learners import (
    FeedbackEvent,
    ObservationEvent,
    reference_forecaster,
    reference_trust,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _feedback(seed: int, n: int) -> list[FeedbackEvent]:
    rng = np.random.default_rng(seed)
    events: list[FeedbackEvent] = []
    for i in range(n):
        # Late events, re-sent ids (inside and outside the dedupe window) included.
        ts = 1e9 + 600.0 * i - (float(rng.uniform(0, 90_000)) if rng.random() < 0.2 else 0.0)
        event_id = f"e{int(rng.integers(0, i + 1))}" if rng.random() < 0.2 else f"e{i}"
        rule = f"r{int(rng.integers(0, 4))}"
        events.append((rule, event_id, ts, bool(rng.random() < 0.6), float(rng.uniform(0.5, 2))))
    return events


def _observations(seed: int, n: int) -> list[ObservationEvent]:
    rng = np.random.default_rng(seed)
    events: list[ObservationEvent] = []
    lags = {v: [10.0, 10.0, 10.0] for v in ("a", "b", "c")}
    for i in range(n):
        variable = ("a", "b", "c")[int(rng.integers(0, 3))]
        y = 2.0 + 0.5 * lags[variable][0] + 0.2 * lags[variable][1] + float(rng.normal())
        lags[variable] = [y, *lags[variable][:2]]
        ts = 1_000_000 * i
        if rng.random() < 0.1 and events:
            ts = events[-1][1] - 1  # not newer than the last applied: refused
        events.append((variable, ts, round(y, 4)))
    return events


def _run_trust(events: list[FeedbackEvent]) -> tuple[dict[str, list[object]], set[int]]:
    params = per_event.TrustParams()
    states: dict[str, list[object]] = {}
    seen: dict[tuple[str, str], float] = {}
    rejected: set[int] = set()
    for index, (rule, event_id, ts, success, weight) in enumerate(events):
        state, newest = states.get(rule), seen.get((rule, event_id))
        if per_event.is_duplicate(state, newest, params):
            rejected.add(index)
            continue
        seen[(rule, event_id)] = ts if newest is None else max(newest, ts)
        states[rule] = per_event.trust_step(state, ts, success, weight, params)
    return states, rejected


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_trust_matches_reference(seed: int) -> None:
    events = _feedback(seed, 400)
    expected = reference_trust(events)
    states, rejected = _run_trust(events)
    assert rejected == set(expected.rejected)
    assert rejected  # the stream does exercise the dedupe memory
    params = per_event.TrustParams()
    for rule, model in expected.models.items():
        version = per_event.rule_version(rule, states[rule], NOW, params)
        assert version.version == model["n_applied"]
        for field in ("alpha", "beta", "trust", "trust_low", "trust_high", "evidence"):
            assert getattr(version, field) == pytest.approx(model[field], rel=1e-9), field
        assert version.status == model["status"]
        assert ts_s(version.trained_through) == pytest.approx(model["trained_through_s"])


@pytest.mark.parametrize("seed", [1, 2])
def test_forecaster_matches_reference(seed: int) -> None:
    events = _observations(seed, 600)
    expected = reference_forecaster(events)
    params = per_event.RlsParams()
    states: dict[str, list[object]] = {}
    rejected: dict[int, str] = {}
    for index, (variable, ts, value) in enumerate(events):
        reason = per_event.rejection(states.get(variable), ts, value)
        if reason is not None:
            rejected[index] = reason
            continue
        states[variable] = per_event.rls_step(states.get(variable), ts, value, params)
    assert rejected == expected.rejected
    assert rejected  # the stream does exercise refusals
    for variable, model in expected.models.items():
        version = per_event.model_version(variable, states[variable], NOW, params)
        assert version.coefficients == pytest.approx(model["coefficients"], rel=1e-6)
        assert version.n_observations == model["n_observations"]
        assert version.version == model["n_observations"]
        assert version.mse == pytest.approx(model["mse"], rel=1e-6)
        assert version.baseline_mse == pytest.approx(model["baseline_mse"], rel=1e-6)
        assert ts_us(version.trained_through) == model["trained_through_us"]


def test_duplicate_observation_is_named() -> None:
    params = per_event.RlsParams()
    state = per_event.rls_step(None, 10, 1.5, params)
    assert per_event.rejection(state, 10, 1.5) == "duplicate"
    assert per_event.rejection(state, 10, 2.5) == "out_of_order"
    assert per_event.rejection(state, 11, 1.5) is None
