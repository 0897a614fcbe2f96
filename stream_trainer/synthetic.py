"""Seeded synthetic Pulse traffic: the demo producer's, the tests' and the benchmarks' input.

Everything is a pure function of the constructor arguments (and of ``n_events``): the same
seed gives the same bytes. The ground truth is exposed so tests can check what the learners
recover: every variable is an AR(2) or AR(3) process with known coefficients (optionally
switching regime part-way), every rule succeeds at a known rate (some degrade mid-run).

Records are ``(kind, key, value)`` tuples ready for a Kafka producer; the invalid ones carry
the dead-letter reason they must get: ``(kind, key, value, expected_reason)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import numpy as np

from stream_trainer.events import (
    DEFAULT_MAX_EVENT_BYTES,
    MAX_NAME_LENGTH,
    Feedback,
    Observation,
    Reason,
    decode_feedback,
    decode_observation,
    encode,
    from_ts_us,
    ts_us,
)

OBSERVATION: Final = "observation"
FEEDBACK: Final = "feedback"
DEFAULT_START: Final = datetime(2026, 1, 1, tzinfo=UTC)
RULE_FAMILIES: Final = ("momentum", "meanrev", "breakout", "carry", "seasonal")

Record = tuple[str, bytes, bytes]
BadRecord = tuple[str, bytes | None, bytes, str]

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

    def bad_records(
        self, n: int, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    ) -> Iterator[BadRecord]:
        """``n`` invalid records cycling through every reason a decoder can give.

        Oversized values are ``max_event_bytes`` + a little, so tests can lower the limit
        (and the service's ``max_event_bytes``) to keep traffic small.
        """
        rng = np.random.default_rng([self.seed, 2])
        templates = _BadTemplates(self, max_event_bytes)
        for i in range(n):
            make = _BAD_VARIANTS[i % len(_BAD_VARIANTS)]
            yield make(templates, rng, i)


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


# ---------------------------------------------------------------------- invalid records


class _BadTemplates:
    """Valid events to break, one per bad record (unique event ids)."""

    def __init__(self, pulse: SyntheticPulse, max_event_bytes: int) -> None:
        self.pulse = pulse
        self.max_event_bytes = max_event_bytes

    def observation(self, i: int) -> dict[str, Any]:
        pulse = self.pulse
        event = Observation(
            event_id=f"bo-{pulse.seed}-{i}",
            variable=pulse.variables[i % len(pulse.variables)],
            ts=pulse.start,
            value=1.5,
            source=pulse.source,
        )
        return msgspec.to_builtins(event)  # type: ignore[no-any-return]

    def feedback(self, i: int) -> dict[str, Any]:
        pulse = self.pulse
        event = Feedback(
            event_id=f"bf-{pulse.seed}-{i}",
            rule_id=pulse.rules[i % len(pulse.rules)],
            ts=pulse.start,
            success=True,
            weight=1.0,
            error=0.25,
        )
        return msgspec.to_builtins(event)  # type: ignore[no-any-return]


def _dumps(document: object) -> bytes:
    # Python's json writes NaN/Infinity literals, as a careless producer would.
    return json.dumps(document, separators=(",", ":")).encode()


def _key(event: dict[str, Any]) -> bytes:
    return str(event.get("variable", event.get("rule_id", ""))).encode()


def _bad(kind: str, event: dict[str, Any], reason: Reason) -> BadRecord:
    return kind, _key(event), _dumps(event), str(reason)


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _not_json(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    raw = _dumps(t.observation(i))
    cut = raw[: int(rng.integers(1, len(raw) - 1))]  # a truncated document
    return OBSERVATION, None, _pick(rng, [cut, b"not json", b""]), Reason.MALFORMED.value


def _not_object(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.feedback(i)
    value = _pick(rng, [_dumps([event]), b'"a string"', b"42", b"null", b"true"])
    return FEEDBACK, _key(event), value, Reason.MALFORMED.value


def _not_utf8(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.observation(i)
    # An unknown field with Latin-1 bytes: msgspec alone would skip it unchecked.
    raw = _dumps(event)[:-1] + b',"note":"caf\xe9"}'
    return OBSERVATION, _key(event), raw, Reason.MALFORMED.value


def _missing_field(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.feedback(i)
    del event[_pick(rng, ["event_id", "rule_id", "ts", "success"])]
    return _bad(FEEDBACK, event, Reason.SCHEMA)


def _wrong_type(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.observation(i)
    field, value = _pick(
        rng, [("value", "1.5"), ("value", True), ("ts", 1767225600), ("event_id", 7)]
    )
    event[field] = value
    return _bad(OBSERVATION, event, Reason.SCHEMA)


def _out_of_range(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.feedback(i)
    field, value = _pick(rng, [("weight", 0.0), ("weight", -1.0), ("error", -0.5), ("rule_id", "")])
    event[field] = value
    return _bad(FEEDBACK, event, Reason.SCHEMA)


def _non_finite(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    kind, event = _pick(rng, [(OBSERVATION, t.observation(i)), (FEEDBACK, t.feedback(i))])
    field = "value" if kind == OBSERVATION else _pick(rng, ["weight", "error"])
    event[field] = _pick(rng, [float("nan"), float("inf"), float("-inf")])
    return _bad(kind, event, Reason.NON_FINITE)


def _overflow(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    event = t.observation(i)
    raw = _dumps(event).replace(b'"value":1.5', b'"value":' + _pick(rng, [b"1e999", b"-2e400"]))
    return OBSERVATION, _key(event), raw, Reason.NON_FINITE.value


def _naive_ts(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    kind, event = _pick(rng, [(OBSERVATION, t.observation(i)), (FEEDBACK, t.feedback(i))])
    event["ts"] = _pick(rng, ["2026-01-01T00:00:00", "2026-01-01T12:30:00.250000"])
    return _bad(kind, event, Reason.NAIVE_TIMESTAMP)


def _long_name(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    kind, event = _pick(rng, [(OBSERVATION, t.observation(i)), (FEEDBACK, t.feedback(i))])
    field = "variable" if kind == OBSERVATION else "rule_id"
    event[field] = "x" * int(rng.integers(MAX_NAME_LENGTH + 1, 2 * MAX_NAME_LENGTH))
    return _bad(kind, event, Reason.NAME_TOO_LONG)


def _oversized(t: _BadTemplates, rng: np.random.Generator, i: int) -> BadRecord:
    kind, event = _pick(rng, [(OBSERVATION, t.observation(i)), (FEEDBACK, t.feedback(i))])
    event["padding"] = "p" * (t.max_event_bytes + int(rng.integers(1, 64)))
    return _bad(kind, event, Reason.OVERSIZED)


_BadVariant = Callable[[_BadTemplates, np.random.Generator, int], BadRecord]
_BAD_VARIANTS: Final[tuple[_BadVariant, ...]] = (
    _not_json,
    _missing_field,
    _non_finite,
    _naive_ts,
    _long_name,
    _not_object,
    _wrong_type,
    _overflow,
    _out_of_range,
    _not_utf8,
    _oversized,
)


# ------------------------------------------------------------ contextual invalid records


def duplicate_of(record: Record) -> BadRecord:
    """A re-send of ``record``, to be produced after it (same partition).

    An observation keeps its ts and value under a new event_id (reason ``duplicate``); a
    feedback keeps its event_id and gains an unknown field, so the bytes differ from the
    original's while the event is the same (reason ``duplicate_event_id``).
    """
    kind, key, value = record
    if kind == OBSERVATION:
        observation = decode_observation(value)
        copy = msgspec.structs.replace(observation, event_id=f"{observation.event_id}-dup")
        return kind, key, encode(copy), Reason.DUPLICATE.value
    decode_feedback(value)  # only valid feedback can be a duplicate
    return kind, key, value[:-1] + b',"retry":1}', Reason.DUPLICATE_EVENT_ID.value


def out_of_order_of(record: Record, *, by_s: float = 1.0) -> BadRecord:
    """An observation of the same variable ``by_s`` seconds older than ``record``'s.

    Produced after ``record`` (same partition), it is not strictly newer than the last
    applied observation of its variable, whose ts differs: reason ``out_of_order``.
    """
    kind, key, value = record
    if kind != OBSERVATION:
        raise ValueError("out_of_order applies to observations only")
    observation = decode_observation(value)
    older = msgspec.structs.replace(
        observation,
        event_id=f"{observation.event_id}-ooo",
        ts=from_ts_us(ts_us(observation.ts) - max(1, round(by_s * 1e6))),
    )
    return kind, key, encode(older), Reason.OUT_OF_ORDER.value


def key_mismatch_of(record: Record) -> BadRecord:
    """``record``'s event under a new event_id, keyed by another name: ``key_mismatch``."""
    kind, key, value = record
    event: Observation | Feedback = (
        decode_observation(value) if kind == OBSERVATION else decode_feedback(value)
    )
    copy = msgspec.structs.replace(event, event_id=f"{event.event_id}-km")
    return kind, b"mismatch." + key, encode(copy), Reason.KEY_MISMATCH.value
