"""Seeded synthetic Pulse traffic: the demo producer's, the tests' and the benchmarks' input.

Everything is a pure function of the constructor arguments (and of ``n_events``): the same
seed gives the same bytes. The ground truth is exposed so tests can check what the learners
recover: every variable is an AR(2) or AR(3) process with known coefficients (optionally
switching regime part-way), every rule succeeds at a known rate (some degrade mid-run).

Records are ``(kind, key, value)`` tuples ready for a Kafka producer. Invalid records, with
the dead-letter reason each must get, come from `stream_trainer.dev.invalid`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import numpy as np

from stream_trainer.events import (
    Feedback,
    Observation,
    encode,
    from_ts_us,
    ts_us,
)

OBSERVATION: Final = "observation"
FEEDBACK: Final = "feedback"
DEFAULT_START: Final = datetime(2026, 1, 1, tzinfo=UTC)
RULE_FAMILIES: Final = ("momentum", "meanrev", "breakout", "carry", "seasonal")

Record = tuple[str, bytes, bytes]

_CHUNK: Final = 1024  # random draws are vectorised per chunk of records
_MAX_ROOT: Final = 0.8  # |AR roots| <= 0.8 keeps every process stationary


@dataclass(frozen=True, slots=True)
class _Process:
    """One variable's AR(p): y_t = c + sum_i a_i y_{t-i} + noise."""

    mean: float
    before: tuple[float, ...]  # (c, a_1, ..., a_p)
    after: tuple[float, ...]  # the same after the regime switch


def variable_name(index: int) -> str:
    return f"var_{index:05d}"


def rule_name(index: int) -> str:
    return f"rule.{RULE_FAMILIES[index % len(RULE_FAMILIES)]}.v{index:05d}"


class SyntheticPulse:
    """Deterministic Pulse traffic for ``n_variables`` variables and ``n_rules`` rules.

    The stream clock advances by the same tick on every record, chosen so that each variable
    is observed about every ``step_s`` seconds of event time; observation timestamps are
    therefore strictly increasing per variable (and overall). Feedback carries the clock's
    time, except a ``late_fraction`` of it that is back-dated by up to ``late_max_s``.
    ``regime_switch_at`` and ``degrade_at`` are fractions of the ``n_events`` of a
    :meth:`records` call.
    """

    def __init__(
        self,
        seed: int,
        n_variables: int,
        n_rules: int,
        start: datetime = DEFAULT_START,
        step_s: float = 60.0,
        *,
        ar_orders: Sequence[int] = (2, 3),
        noise_std: float = 1.0,
        regime_switch_at: float | None = None,
        degrading_rules: int | Sequence[str] = 1,
        degrade_at: float = 0.5,
        degraded_rate: float = 0.15,
        late_fraction: float = 0.02,
        late_max_s: float = 3600.0,
        source: str = "pulse.synthetic",
    ) -> None:
        _check_arguments(seed, n_variables, n_rules, start, step_s, ar_orders)
        self.seed = seed
        self.start = start
        self.step_s = step_s
        self.noise_std = noise_std
        self.regime_switch_at = regime_switch_at
        self.degrade_at = degrade_at
        self.degraded_rate = degraded_rate
        self.late_fraction = late_fraction
        self.late_max_s = late_max_s
        self.source = source
        self.variables = [variable_name(i) for i in range(n_variables)]
        self.rules = [rule_name(i) for i in range(n_rules)]
        params = np.random.default_rng([seed, 0])
        self._processes = [
            _make_process(params, ar_orders[i % len(ar_orders)]) for i in range(n_variables)
        ]
        self._rates = params.uniform(0.55, 0.9, n_rules)
        self.degrading_rules = _pick_degrading(self.rules, degrading_rules)

    # ------------------------------------------------------------------ ground truth

    def true_coefficients(self, variable: str, *, after_switch: bool = False) -> list[float]:
        """``[intercept, a_1, ..., a_p]`` of a variable (the ModelVersion layout)."""
        process = self._processes[self.variables.index(variable)]
        return list(process.after if after_switch else process.before)

    def true_mean(self, variable: str) -> float:
        """The stationary mean of a variable (the same in both regimes)."""
        return self._processes[self.variables.index(variable)].mean

    def true_rate(self, rule_id: str, *, degraded: bool = False) -> float:
        """The success probability of a rule (after ``degrade_at`` if ``degraded``)."""
        if degraded and rule_id in self.degrading_rules:
            return self.degraded_rate
        return float(self._rates[self.rules.index(rule_id)])

    def switch_index(self, n_events: int) -> int | None:
        """First record index of the new regime in ``records(n_events)``, if any."""
        return None if self.regime_switch_at is None else int(self.regime_switch_at * n_events)

    def degrade_index(self, n_events: int) -> int:
        """First record index at which the degrading rules run at ``degraded_rate``."""
        return int(self.degrade_at * n_events)

    # ----------------------------------------------------------------------- traffic

    def records(self, n_events: int, feedback_ratio: float = 0.5) -> Iterator[Record]:
        """``n_events`` interleaved valid records, lazily (a huge n streams forever)."""
        if not 0.0 <= feedback_ratio <= 1.0:
            raise ValueError(f"feedback_ratio must be in [0, 1], got {feedback_ratio}")
        stream = _Stream(self, n_events, feedback_ratio)
        return stream.run()


def _check_arguments(
    seed: int,
    n_variables: int,
    n_rules: int,
    start: datetime,
    step_s: float,
    ar_orders: Sequence[int],
) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if n_variables < 1 or n_rules < 1:
        raise ValueError("need at least one variable and one rule")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if not step_s > 0:
        raise ValueError(f"step_s must be > 0, got {step_s}")
    if not ar_orders or min(ar_orders) < 1:
        raise ValueError(f"ar_orders must be positive, got {ar_orders}")


def _make_process(rng: np.random.Generator, order: int) -> _Process:
    mean = float(rng.uniform(10.0, 100.0))
    return _Process(mean, _ar_coefficients(rng, order, mean), _ar_coefficients(rng, order, mean))


def _ar_coefficients(rng: np.random.Generator, order: int, mean: float) -> tuple[float, ...]:
    roots = rng.uniform(-_MAX_ROOT, _MAX_ROOT, order)
    lags = -np.poly(roots)[1:]  # 1 - sum a_i z^i has roots 1/roots: stationary
    intercept = mean * (1.0 - float(lags.sum()))
    return (intercept, *(float(a) for a in lags))


def _pick_degrading(rules: list[str], degrading: int | Sequence[str]) -> tuple[str, ...]:
    if isinstance(degrading, int):
        return tuple(rules[:degrading])
    unknown = set(degrading) - set(rules)
    if unknown:
        raise ValueError(f"unknown degrading rules: {sorted(unknown)}")
    return tuple(degrading)


class _Stream:
    """The mutable state of one :meth:`SyntheticPulse.records` run."""

    def __init__(self, pulse: SyntheticPulse, n_events: int, feedback_ratio: float) -> None:
        self.pulse = pulse
        self.n_events = n_events
        self.feedback_ratio = feedback_ratio
        self.rng = np.random.default_rng([pulse.seed, 1])
        n_variables = len(pulse.variables)
        per_variable = (1.0 - feedback_ratio) if feedback_ratio < 1.0 else 1.0
        self.tick_us = max(1, round(pulse.step_s * 1e6 * per_variable / n_variables))
        self.start_us = ts_us(pulse.start)
        self.lags = [[p.mean] * (len(p.before) - 1) for p in pulse._processes]
        self.switch = pulse.switch_index(n_events)
        self.degrade = pulse.degrade_index(n_events)
        self.degrading = {pulse.rules.index(r) for r in pulse.degrading_rules}
        self.round: list[int] = []

    def run(self) -> Iterator[Record]:
        for chunk_start in range(0, self.n_events, _CHUNK):
            # Always draw whole chunks: a shorter run is then a prefix of a longer one.
            draws: list[list[float]] = self.rng.random((_CHUNK, 4)).tolist()
            noise: list[float] = self.rng.standard_normal(_CHUNK).tolist()
            for j in range(min(_CHUNK, self.n_events - chunk_start)):
                i = chunk_start + j
                if draws[j][0] < self.feedback_ratio:
                    yield self._feedback(i, draws[j], noise[j])
                else:
                    yield self._observation(i, noise[j])

    def _next_variable(self) -> int:
        if not self.round:
            # A fresh random order per round: every variable once per round.
            self.round = self.rng.permutation(len(self.pulse.variables)).tolist()[::-1]
        return self.round.pop()

    def _observation(self, i: int, noise: float) -> Record:
        v = self._next_variable()
        process = self.pulse._processes[v]
        after = self.switch is not None and i >= self.switch
        coefficients = process.after if after else process.before
        lags = self.lags[v]
        y = coefficients[0] + sum(a * lag for a, lag in zip(coefficients[1:], lags, strict=True))
        value = round(y + self.pulse.noise_std * noise, 4)
        lags.insert(0, value)
        lags.pop()
        event = Observation(
            event_id=f"o-{self.pulse.seed}-{i}",
            variable=self.pulse.variables[v],
            ts=from_ts_us(self.start_us + i * self.tick_us),
            value=value,
            source=self.pulse.source,
        )
        return OBSERVATION, event.variable.encode(), encode(event)

    def _feedback(self, i: int, draws: list[float], noise: float) -> Record:
        pulse = self.pulse
        r = min(int(draws[1] * len(pulse.rules)), len(pulse.rules) - 1)
        rate = float(pulse._rates[r])
        if i >= self.degrade and r in self.degrading:
            rate = pulse.degraded_rate
        success = bool(draws[2] < rate)
        when = self.start_us + i * self.tick_us
        if draws[3] < pulse.late_fraction:
            when -= round(draws[3] / pulse.late_fraction * pulse.late_max_s * 1e6)
        event = Feedback(
            event_id=f"f-{pulse.seed}-{i}",
            rule_id=pulse.rules[r],
            ts=from_ts_us(when),
            success=success,
            forecast_id=f"fc-{pulse.seed}-{i}",
            error=round(abs(noise) * (0.5 if success else 2.0), 4),
        )
        return FEEDBACK, event.rule_id.encode(), encode(event)
