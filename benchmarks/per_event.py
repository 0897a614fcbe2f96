"""The two learners of DESIGN section 3 as one plain step per event, for per-event peers.

A per-event stream processor (the Quix Streams peer) keeps each key's state as a small
JSON-able value in its own store and calls these once per event: no numpy (a 4x4 RLS
update in plain floats is cheaper than a dozen tiny numpy calls), no batching. State
layouts are plain lists so any key-value store can hold them.

- Trust: ``[T, succ, fail, version]`` per rule, ``T`` None until the first event; the
  event-id dedupe memory is the caller's (one store key per remembered id, as a per-event
  application would hold it), passed in as ``seen`` and returned as the new newest use.
- Forecaster: ``[theta (p+1), P ((p+1)^2, row-major), history (p, newest first), n, S, W,
  S_base, last_ts_us, last_value, version]`` per variable.

tests/unit/test_bench_per_event.py checks both against tests/reference_learners.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scipy.special import betaincinv

from stream_trainer.events import ModelVersion, RuleStatus, RuleVersion, from_ts_us

TrustState = list[Any]
ModelState = list[Any]


@dataclass(frozen=True, slots=True)
class TrustParams:
    half_life_s: float = 2_592_000.0
    retire_below: float = 0.35
    probation_below: float = 0.5
    dedupe_window_s: float = 86_400.0


@dataclass(frozen=True, slots=True)
class RlsParams:
    order: int = 3
    forgetting: float = 0.995
    initial_p: float = 1000.0


def is_duplicate(state: TrustState | None, seen: float | None, params: TrustParams) -> bool:
    """The rule already applied this event id at a ts >= T - window (DESIGN section 3)."""
    if state is None or seen is None or state[0] is None:
        return False
    return bool(seen >= state[0] - params.dedupe_window_s)


def trust_step(
    state: TrustState | None, ts_s: float, success: bool, weight: float, params: TrustParams
) -> TrustState:
    """Apply one (non-duplicate) feedback event; returns the new state (version +1)."""
    clock, succ, fail, version = state if state is not None else (None, 0.0, 0.0, 0)
    if clock is None or ts_s > clock:
        decay = 0.0 if clock is None else 2.0 ** (-(ts_s - clock) / params.half_life_s)
        succ, fail, clock = succ * decay, fail * decay, ts_s
    # Late feedback keeps T and is added with its decayed weight (commutative).
    contribution = weight * 2.0 ** (-(clock - ts_s) / params.half_life_s)
    if success:
        succ += contribution
    else:
        fail += contribution
    return [clock, succ, fail, version + 1]


def rule_version(
    rule_id: str, state: TrustState, published_at: datetime, params: TrustParams
) -> RuleVersion:
    clock, succ, fail, version = state
    alpha, beta = 1.0 + succ, 1.0 + fail
    trust = alpha / (alpha + beta)
    high = float(betaincinv(alpha, beta, 0.975))
    status: RuleStatus = "active"
    if high < params.retire_below:
        status = "retired"
    elif trust < params.probation_below:
        status = "probation"
    return RuleVersion(
        rule_id=rule_id,
        version=version,
        alpha=alpha,
        beta=beta,
        trust=trust,
        trust_low=float(betaincinv(alpha, beta, 0.025)),
        trust_high=high,
        evidence=succ + fail,
        status=status,
        trained_through=from_ts_us(round(clock * 1e6)),
        published_at=published_at,
    )


def new_model(params: RlsParams) -> ModelState:
    d = params.order + 1
    p = [params.initial_p if i == j else 0.0 for i in range(d) for j in range(d)]
    return [[0.0] * d, p, [], 0, 0.0, 0.0, 0.0, None, None, 0]


def rejection(state: ModelState | None, ts_us: int, value: float) -> str | None:
    """``duplicate`` / ``out_of_order`` for an observation not strictly newer, else None."""
    if state is None or state[7] is None or ts_us > state[7]:
        return None
    return "duplicate" if (ts_us, value) == (state[7], state[8]) else "out_of_order"


def rls_step(state: ModelState | None, ts_us: int, y: float, params: RlsParams) -> ModelState:
    """Predict, then learn, one (accepted) observation; returns the new state (version +1)."""
    theta, p, history, n, s, w, s_base, _, _, version = state or new_model(params)
    order, lam = params.order, params.forgetting
    if n >= order:
        d = order + 1
        x = [1.0, *history]
        e = y - sum(t * xi for t, xi in zip(theta, x, strict=True))
        s, w = lam * s + e * e, lam * w + 1.0
        s_base = lam * s_base + (y - history[0]) ** 2
        px = [sum(p[i * d + j] * x[j] for j in range(d)) for i in range(d)]
        gain_denominator = lam + sum(xi * pxi for xi, pxi in zip(x, px, strict=True))
        k = [pxi / gain_denominator for pxi in px]
        theta = [t + ki * e for t, ki in zip(theta, k, strict=True)]
        xp = [sum(x[i] * p[i * d + j] for i in range(d)) for j in range(d)]
        p = [(p[i * d + j] - k[i] * xp[j]) / lam for i in range(d) for j in range(d)]
    history = [y, *history][:order]
    return [theta, p, history, n + 1, s, w, s_base, ts_us, y, version + 1]


def model_version(
    variable: str, state: ModelState, published_at: datetime, params: RlsParams
) -> ModelVersion:
    theta, _, _, n, s, w, s_base, last_ts, _, version = state
    mse = s / w if w > 0 else 0.0
    baseline = s_base / w if w > 0 else 0.0
    return ModelVersion(
        model_id=variable,
        version=version,
        order=params.order,
        coefficients=list(theta),
        n_observations=n,
        mse=mse,
        baseline_mse=baseline,
        skill=1.0 - mse / baseline if w > 0 and baseline > 0 else None,
        trained_through=from_ts_us(last_ts),
        published_at=published_at,
    )
