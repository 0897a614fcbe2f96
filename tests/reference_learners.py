"""Plain sequential reference implementations of the two learners (DESIGN section 3).

They are written for obviousness, not speed: one Python step per event, the trust sums in
closed form over all applied events at the end. Tests (unit and integration) compare the
vectorised learners, fed the same stream in any batching, with these.

Both functions take the *whole* stream in input order and return a ``ReferenceResult``:

- ``models``: final state per model key, a plain dict (fields listed on each function);
- ``rejected``: ``{index in the stream: dead-letter reason}`` for every refused event.

Example (integration test)::

    expected = reference_forecaster([(o.variable, ts_us(o.ts), o.value) for o in sent])
    assert expected.models["spx_close"]["n_observations"] == published.n_observations
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import beta as beta_dist

from stream_trainer.columns import FeedbackColumns, ObservationColumns

FeedbackEvent = tuple[str, str, float, bool, float]  # rule_id, event_id, ts_s, success, weight
ObservationEvent = tuple[str, int, float]  # variable, ts_us, value


def feedback_columns(events: list[FeedbackEvent]) -> FeedbackColumns:
    """The columns a batch of these feedback events hands to ``TrustLearner``."""
    return FeedbackColumns(
        rule_id=[e[0] for e in events],
        event_id=[e[1] for e in events],
        ts_s=np.array([e[2] for e in events], dtype=np.float64),
        success=np.array([e[3] for e in events], dtype=np.bool_),
        weight=np.array([e[4] for e in events], dtype=np.float64),
    )


def observation_columns(events: list[ObservationEvent]) -> ObservationColumns:
    """The columns a batch of these observations hands to ``Forecaster``."""
    return ObservationColumns(
        variable=[e[0] for e in events],
        ts_us=np.array([e[1] for e in events], dtype=np.int64),
        value=np.array([e[2] for e in events], dtype=np.float64),
    )


@dataclass
class ReferenceResult:
    """Final models by key, and the refused events by stream index with their reason."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)


@dataclass
class _Rule:
    clock: float = -np.inf  # T: newest applied ts
    applied: list[tuple[float, bool, float]] = field(default_factory=list)
    newest_use: dict[str, float] = field(default_factory=dict)  # event_id -> newest applied ts


def reference_trust(
    events: Iterable[FeedbackEvent],
    half_life_s: float = 2_592_000.0,
    retire_below: float = 0.35,
    probation_below: float = 0.5,
    dedupe_window_s: float = 86_400.0,
) -> ReferenceResult:
    """Rule trust from the whole stream ``(rule_id, event_id, ts_s, success, weight)``.

    An event is refused (``duplicate_event_id``) when its rule already applied the same
    event_id at a ts >= T - dedupe_window_s, T being the rule's newest applied ts just
    before this event. Models hold: ``alpha``, ``beta``, ``trust``, ``trust_low``,
    ``trust_high``, ``evidence``, ``status``, ``trained_through_s`` (T), ``n_applied``.
    """
    rules: dict[str, _Rule] = {}
    result = ReferenceResult()
    for index, (rule_id, event_id, ts, success, weight) in enumerate(events):
        rule = rules.setdefault(rule_id, _Rule())
        seen = rule.newest_use.get(event_id)
        if seen is not None and seen >= rule.clock - dedupe_window_s:
            result.rejected[index] = "duplicate_event_id"
            continue
        rule.newest_use[event_id] = ts if seen is None else max(seen, ts)
        rule.clock = max(rule.clock, ts)
        rule.applied.append((ts, success, weight))
    for rule_id, rule in rules.items():
        result.models[rule_id] = _trust_model(rule, half_life_s, retire_below, probation_below)
    return result


def _trust_model(
    rule: _Rule, half_life_s: float, retire_below: float, probation_below: float
) -> dict[str, Any]:
    succ = sum(w * 2.0 ** (-(rule.clock - t) / half_life_s) for t, s, w in rule.applied if s)
    fail = sum(w * 2.0 ** (-(rule.clock - t) / half_life_s) for t, s, w in rule.applied if not s)
    alpha, beta = 1.0 + succ, 1.0 + fail
    trust = alpha / (alpha + beta)
    low = float(beta_dist.ppf(0.025, alpha, beta))
    high = float(beta_dist.ppf(0.975, alpha, beta))
    if high < retire_below:
        status = "retired"
    elif trust < probation_below:
        status = "probation"
    else:
        status = "active"
    return {
        "alpha": alpha,
        "beta": beta,
        "trust": trust,
        "trust_low": low,
        "trust_high": high,
        "evidence": succ + fail,
        "status": status,
        "trained_through_s": rule.clock,
        "n_applied": len(rule.applied),
    }


@dataclass
class _Model:
    order: int
    initial_p: float
    theta: np.ndarray = field(init=False)
    p: np.ndarray = field(init=False)
    history: list[float] = field(default_factory=list)  # most recent first
    n: int = 0
    s: float = 0.0
    w: float = 0.0
    s_base: float = 0.0
    last: tuple[int, float] | None = None  # (ts_us, value) of the last applied observation

    def __post_init__(self) -> None:
        self.theta = np.zeros(self.order + 1)
        self.p = self.initial_p * np.eye(self.order + 1)


def reference_forecaster(
    events: Iterable[ObservationEvent],
    order: int = 3,
    forgetting: float = 0.995,
    initial_p: float = 1000.0,
) -> ReferenceResult:
    """AR(order) RLS per variable from the whole stream ``(variable, ts_us, value)``.

    Models hold: ``coefficients`` (list, intercept first), ``n_observations``, ``mse``,
    ``baseline_mse`` (both 0.0 while W = 0), ``skill`` (None while undefined),
    ``trained_through_us``.
    """
    models: dict[str, _Model] = {}
    result = ReferenceResult()
    for index, (variable, ts, value) in enumerate(events):
        model = models.setdefault(variable, _Model(order, initial_p))
        if model.last is not None and ts <= model.last[0]:
            same = (ts, value) == model.last
            result.rejected[index] = "duplicate" if same else "out_of_order"
            continue
        _rls_step(model, value, forgetting)
        model.last = (ts, value)
    for variable, model in models.items():
        result.models[variable] = _forecaster_model(model)
    return result


def _rls_step(model: _Model, y: float, lam: float) -> None:
    if model.n >= model.order:
        x = np.array([1.0, *model.history[: model.order]])
        e = y - float(model.theta @ x)
        model.s = lam * model.s + e * e
        model.w = lam * model.w + 1.0
        model.s_base = lam * model.s_base + (y - model.history[0]) ** 2
        px = model.p @ x
        k = px / (lam + float(x @ px))
        model.theta = model.theta + k * e
        model.p = (model.p - np.outer(k, x @ model.p)) / lam
    model.history.insert(0, y)
    del model.history[model.order :]
    model.n += 1


def _forecaster_model(model: _Model) -> dict[str, Any]:
    mse = model.s / model.w if model.w > 0 else 0.0
    baseline = model.s_base / model.w if model.w > 0 else 0.0
    return {
        "coefficients": model.theta.tolist(),
        "n_observations": model.n,
        "mse": mse,
        "baseline_mse": baseline,
        "skill": 1.0 - mse / baseline if model.w > 0 and baseline > 0 else None,
        "trained_through_us": model.last[0] if model.last is not None else None,
    }
