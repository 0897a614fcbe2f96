"""Forecaster: batch invariance against the reference, rejections, AR recovery, tracking."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_trainer.errors import ConfigError, StateFormatError
from stream_trainer.events import ModelVersion, from_ts_us
from stream_trainer.learners import Forecaster
from tests.reference_learners import ObservationEvent, observation_columns, reference_forecaster

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _learn(learner: Forecaster, events: list[ObservationEvent], sizes: list[int]) -> dict[int, str]:
    rejected: dict[int, str] = {}
    start = 0
    for size in sizes:
        result = learner.learn_batch(observation_columns(events[start : start + size]))
        for pos, reason in zip(
            result.rejected_positions.tolist(), result.rejected_reasons, strict=True
        ):
            rejected[start + pos] = reason
        start += size
    assert start == len(events)
    return rejected


@st.composite
def observation_streams(draw: st.DrawFn) -> list[ObservationEvent]:
    """Interleaved variables; steps back or in place (out of order), exact repeats
    (duplicates); values from a seeded normal so RLS stays well conditioned."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 80))
    last: dict[str, ObservationEvent] = {}
    events: list[ObservationEvent] = []
    for _ in range(n):
        variable = draw(st.sampled_from(["x", "y", "z"]))
        previous = last.get(variable)
        if previous is not None and draw(st.integers(0, 9)) == 0:
            events.append(previous)  # a redelivery
            continue
        base = previous[1] if previous is not None else 1_700_000_000_000_000
        ts = base + draw(st.integers(-2, 6)) * 1_000_000
        event = (variable, ts, float(rng.normal(1.0, 2.0)))
        events.append(event)
        if previous is None or ts > previous[1]:
            last[variable] = event
    return events


@st.composite
def sizes_for(draw: st.DrawFn, n: int) -> list[int]:
    mode = draw(st.sampled_from(["random", "ones", "whole"]))
    if mode == "ones":
        return [1] * n
    if mode == "whole":
        return [n]
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(draw(st.integers(1, n - sum(sizes))))
    return sizes


def _assert_close(actual: float, expected: float, rel: float = 1e-6) -> None:
    assert actual == pytest.approx(expected, rel=rel, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), order=st.sampled_from([1, 2, 3]))
def test_any_batching_matches_reference(data: st.DataObject, order: int) -> None:
    events = data.draw(observation_streams())
    sizes = data.draw(sizes_for(len(events)))
    learner = Forecaster(order=order)
    rejected = _learn(learner, events, sizes)
    expected = reference_forecaster(events, order=order)
    assert rejected == expected.rejected
    assert len(learner) == len(expected.models)
    for version in learner.versions(sorted(expected.models), NOW):
        model = expected.models[version.model_id]
        assert version.n_observations == model["n_observations"]
        assert version.order == order
        assert len(version.coefficients) == order + 1
        for got, want in zip(version.coefficients, model["coefficients"], strict=True):
            _assert_close(got, want)
        _assert_close(version.mse, model["mse"])
        _assert_close(version.baseline_mse, model["baseline_mse"])
        assert (version.skill is None) == (model["skill"] is None)
        if version.skill is not None:
            _assert_close(version.skill, model["skill"])
        assert version.trained_through == from_ts_us(model["trained_through_us"])


def test_rejections_within_one_batch() -> None:
    t0 = 1_700_000_000_000_000
    events = [
        ("v", t0, 1.0),
        ("v", t0, 1.0),  # same ts and value: duplicate
        ("v", t0, 2.0),  # same ts, other value: out of order
        ("w", t0 - 5, 3.0),  # another variable has its own clock
        ("v", t0 - 1, 1.0),  # older: out of order
        ("v", t0 + 1, 4.0),
        ("v", t0, 1.0),  # duplicate of an earlier applied one, but not the last: out of order
    ]
    learner = Forecaster(order=1)
    result = learner.learn_batch(observation_columns(events))
    assert result.rejected_positions.tolist() == [1, 2, 4, 6]
    assert result.rejected_reasons == ["duplicate", "out_of_order", "out_of_order", "out_of_order"]
    assert result.touched == ["v", "w"]
    v, w = learner.versions(["v", "w"], NOW)
    assert (v.n_observations, w.n_observations) == (2, 1)
    # The state's last observation is compared with the next batch too.
    again = learner.learn_batch(observation_columns([("v", t0 + 1, 4.0), ("w", t0 - 5, 3.5)]))
    assert again.rejected_reasons == ["duplicate", "out_of_order"]
    assert again.touched == []


def test_first_p_observations_only_fill_history() -> None:
    learner = Forecaster(order=3)
    learner.learn_batch(observation_columns([("v", i, float(i)) for i in range(3)]))
    version = learner.versions(["v"], NOW)[0]
    assert version.n_observations == 3
    assert version.coefficients == [0.0, 0.0, 0.0, 0.0]
    assert (version.mse, version.baseline_mse, version.skill) == (0.0, 0.0, None)
    learner.learn_batch(observation_columns([("v", 3, 5.0)]))
    version = learner.versions(["v"], NOW)[0]
    # First prediction is 0 (theta = 0): e = 5; persistence error is 5 - 2 = 3.
    assert (version.mse, version.baseline_mse) == (25.0, 9.0)
    assert version.skill == pytest.approx(1.0 - 25.0 / 9.0)


def _simulate_ar2(
    rng: np.random.Generator,
    n_vars: int,
    n_steps: int,
    coef: tuple[float, float, float],
    start: np.ndarray | None = None,
) -> np.ndarray:
    """(n_steps, n_vars) paths of y_t = c0 + c1 y_{t-1} + c2 y_{t-2} + N(0, 1)."""
    c0, c1, c2 = coef
    y = np.zeros((n_steps + 2, n_vars))
    if start is not None:
        y[:2] = start
    noise = rng.normal(size=(n_steps, n_vars))
    for t in range(2, n_steps + 2):
        y[t] = c0 + c1 * y[t - 1] + c2 * y[t - 2] + noise[t - 2]
    return y[2:]


def _feed(learner: Forecaster, paths: np.ndarray, t_start: int, batch_steps: int) -> None:
    """Interleave all variables step by step, as a busy topic would."""
    n_steps, n_vars = paths.shape
    names = [f"v{i}" for i in range(n_vars)]
    for lo in range(0, n_steps, batch_steps):
        block = paths[lo : lo + batch_steps]
        ts = np.repeat(np.arange(t_start + lo, t_start + lo + block.shape[0]), n_vars)
        learner.learn_batch(
            observation_columns(
                list(zip(names * block.shape[0], ts.tolist(), block.ravel().tolist(), strict=True))
            )
        )


def _coefficients(learner: Forecaster, n_vars: int) -> tuple[np.ndarray, list[ModelVersion]]:
    versions = learner.versions([f"v{i}" for i in range(n_vars)], NOW)
    return np.array([v.coefficients for v in versions]), versions


def test_recovers_ar2_coefficients_and_gains_skill() -> None:
    true = np.array([0.5, 0.6, -0.2])
    n_vars = 40
    rng = np.random.default_rng(7)
    learner = Forecaster(order=2, forgetting=1.0)
    _feed(learner, _simulate_ar2(rng, n_vars, 5000, (0.5, 0.6, -0.2)), 0, 250)
    coefficients, versions = _coefficients(learner, n_vars)
    # Averaging 40 independent fits shrinks the sampling noise below the 3% band.
    assert np.all(np.abs(coefficients.mean(axis=0) - true) <= 0.03 * np.abs(true))
    assert np.all(np.abs(coefficients - true) <= 0.1)
    assert all(v.n_observations == 5000 for v in versions)
    assert all(v.skill is not None and v.skill > 0 for v in versions)


def test_tracks_a_regime_switch_with_forgetting() -> None:
    old, new = (0.5, 0.6, -0.2), (-0.3, 0.1, 0.45)
    n_vars = 40
    rng = np.random.default_rng(11)
    learner = Forecaster(order=2, forgetting=0.995)
    before = _simulate_ar2(rng, n_vars, 5000, old)
    _feed(learner, before, 0, 500)
    after = _simulate_ar2(rng, n_vars, 1500, new, start=before[-2:])
    _feed(learner, after, 5000, 500)
    coefficients, versions = _coefficients(learner, n_vars)
    mean = coefficients.mean(axis=0)
    assert np.all(np.abs(mean - np.array(new)) <= 0.05)
    assert np.all(np.abs(mean - np.array(old)) >= 0.3)
    assert all(v.skill is not None and v.skill > 0 for v in versions)


def test_flushed_state_round_trip_is_exact() -> None:
    learner = Forecaster(order=2)
    learner.learn_batch(observation_columns([("v", i, float(i % 7)) for i in range(20)]))
    state = learner.flush(NOW).state
    assert [key for key, _ in state] == [b":v"]
    restored = Forecaster(order=2)
    restored.load([(k, v) for k, v in state if v is not None])
    assert restored.versions(["v"], NOW) == learner.versions(["v"], NOW)


def test_load_rejects_garbage_other_orders_and_newer_formats() -> None:
    learner = Forecaster(order=2)
    learner.learn_batch(observation_columns([("v", 1, 1.0)]))
    ((key, value),) = learner.flush(NOW).state
    assert value is not None and value[0] == 1  # the format byte
    with pytest.raises(StateFormatError, match="bytes expected"):
        Forecaster(order=3).load([(key, value)])
    with pytest.raises(StateFormatError, match="corrupt"):
        Forecaster(order=2).load([(b":v", b"\x93\xc1")])
    with pytest.raises(StateFormatError, match="format 2 is unknown"):
        Forecaster(order=2).load([(b":v", b"\x02" + value[1:])])


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"order": 0}, "ar_order"),
        ({"forgetting": 0.0}, "rls_forgetting"),
        ({"initial_p": -1.0}, "rls_initial_p"),
    ],
)
def test_invalid_settings(kwargs: dict[str, float], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        Forecaster(**kwargs)  # type: ignore[arg-type]
