"""The seeded Pulse traffic generator: deterministic, valid, and true to its ground truth."""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import islice

import numpy as np
import numpy.typing as npt
import pytest

from stream_trainer import events as ev
from stream_trainer.dev import invalid as inv
from stream_trainer.dev import synthetic as syn
from stream_trainer.errors import DecodeError


def decode(kind: str, value: bytes) -> ev.Observation | ev.Feedback:
    return ev.decode_observation(value) if kind == syn.OBSERVATION else ev.decode_feedback(value)


def decoded(records: list[syn.Record]) -> list[tuple[str, bytes, ev.Observation | ev.Feedback]]:
    return [(kind, key, decode(kind, value)) for kind, key, value in records]


def test_same_seed_same_bytes_and_other_seed_other_bytes() -> None:
    def make(seed: int) -> list[syn.Record]:
        return list(syn.SyntheticPulse(seed, 5, 4, regime_switch_at=0.5).records(1500))

    assert make(11) == make(11)
    assert make(11) != make(12)
    pulse = syn.SyntheticPulse(11, 5, 4)
    assert list(pulse.records(300)) == list(pulse.records(300))  # each call starts afresh
    assert list(inv.bad_records(pulse, 30)) == list(
        inv.bad_records(syn.SyntheticPulse(11, 5, 4), 30)
    )


def test_every_record_decodes_with_matching_key_and_unique_id() -> None:
    pulse = syn.SyntheticPulse(3, 20, 10)
    events = decoded(list(pulse.records(3000, feedback_ratio=0.4)))
    kinds = Counter(kind for kind, _, _ in events)
    assert 0.35 < kinds[syn.FEEDBACK] / len(events) < 0.45
    for kind, key, event in events:
        name = event.variable if isinstance(event, ev.Observation) else event.rule_id
        assert key == name.encode()
        assert event.event_id.startswith(f"{kind[0]}-3-")
        assert name in (pulse.variables if kind == syn.OBSERVATION else pulse.rules)
    assert len({event.event_id for _, _, event in events}) == len(events)


def test_names_look_like_pulse_ids() -> None:
    pulse = syn.SyntheticPulse(0, 3, 7)
    assert pulse.variables == ["var_00000", "var_00001", "var_00002"]
    assert pulse.rules[0] == "rule.momentum.v00000"
    assert pulse.rules[6] == "rule.meanrev.v00006"


def test_records_are_about_150_bytes() -> None:
    sizes = [len(value) for _, _, value in syn.SyntheticPulse(5, 100, 100_000).records(2000)]
    assert 100 <= float(np.mean(sizes)) <= 200
    assert max(sizes) < 300


def test_observation_timestamps_strictly_increase_per_variable() -> None:
    pulse = syn.SyntheticPulse(8, 7, 3, step_s=30.0)
    last: dict[str, int] = {}
    counts: Counter[str] = Counter()
    for _, _, event in decoded(list(pulse.records(4000, feedback_ratio=0.5))):
        if isinstance(event, ev.Observation):
            micros = ev.ts_us(event.ts)
            assert micros > last.get(event.variable, -1)
            last[event.variable] = micros
            counts[event.variable] += 1
    assert set(counts) == set(pulse.variables)
    assert max(counts.values()) - min(counts.values()) <= 1  # round-robin per round
    # Each variable is observed about every step_s of event time.
    span_s = (max(last.values()) - ev.ts_us(pulse.start)) / 1e6
    assert span_s / (4000 / 2 / 7) == pytest.approx(30.0, rel=0.05)


def test_some_feedback_is_late_but_most_is_in_order() -> None:
    pulse = syn.SyntheticPulse(9, 5, 5, late_fraction=0.05, late_max_s=600.0)
    stamps = [
        ev.ts_us(event.ts)
        for _, _, event in decoded(list(pulse.records(6000, feedback_ratio=0.8)))
        if isinstance(event, ev.Feedback)
    ]
    running_max = np.maximum.accumulate(stamps)
    late = np.flatnonzero(np.asarray(stamps) < running_max)
    assert 0.03 < len(late) / len(stamps) < 0.07
    assert (running_max[late] - np.asarray(stamps)[late]).max() <= 600 * 1_000_000


def test_no_late_feedback_when_disabled() -> None:
    pulse = syn.SyntheticPulse(9, 5, 5, late_fraction=0.0)
    stamps = [
        ev.ts_us(event.ts)
        for _, _, event in decoded(list(pulse.records(2000)))
        if isinstance(event, ev.Feedback)
    ]
    assert stamps == sorted(stamps)


def fit_ar(values: npt.NDArray[np.float64], order: int) -> npt.NDArray[np.float64]:
    """Least-squares [c, a_1..a_p] of y_t on [1, y_{t-1}, ..., y_{t-p}]."""
    rows = [values[order - i - 1 : len(values) - i - 1] for i in range(order)]
    design = np.column_stack([np.ones(len(values) - order), *rows])
    solution, *_ = np.linalg.lstsq(design, values[order:], rcond=None)
    return np.asarray(solution, np.float64)


def series(records: list[syn.Record], variable: str) -> npt.NDArray[np.float64]:
    return np.array(
        [
            event.value
            for _, _, event in decoded(records)
            if isinstance(event, ev.Observation) and event.variable == variable
        ]
    )


def test_variables_follow_their_true_ar_coefficients_across_a_regime_switch() -> None:
    pulse = syn.SyntheticPulse(21, 2, 1, regime_switch_at=0.5)
    records = list(pulse.records(24_000, feedback_ratio=0.0))
    for variable in pulse.variables:
        before = pulse.true_coefficients(variable)
        after = pulse.true_coefficients(variable, after_switch=True)
        assert len(before) == len(after) in (3, 4)  # AR(2) or AR(3), intercept first
        assert before != after
        values = series(records, variable)
        half = len(values) // 2
        order = len(before) - 1
        # Compare the lag coefficients (the intercept is poorly identified); 6000 points
        # per regime give a standard error of about 0.013.
        assert fit_ar(values[:half], order)[1:] == pytest.approx(before[1:], abs=0.06)
        assert fit_ar(values[half:], order)[1:] == pytest.approx(after[1:], abs=0.06)
        assert float(values.mean()) == pytest.approx(pulse.true_mean(variable), abs=0.5)


def test_rules_succeed_at_their_true_rate_and_the_degrading_one_degrades() -> None:
    pulse = syn.SyntheticPulse(4, 1, 3, degrading_rules=["rule.breakout.v00002"], degrade_at=0.5)
    n = 30_000
    outcomes: dict[tuple[str, bool], list[bool]] = defaultdict(list)
    for i, (_, _, event) in enumerate(decoded(list(pulse.records(n, feedback_ratio=1.0)))):
        assert isinstance(event, ev.Feedback)
        outcomes[event.rule_id, i >= pulse.degrade_index(n)].append(event.success)
    for (rule, late_phase), successes in outcomes.items():
        expected = pulse.true_rate(rule, degraded=late_phase)
        sigma = (expected * (1 - expected) / len(successes)) ** 0.5
        assert float(np.mean(successes)) == pytest.approx(expected, abs=5 * sigma)
    assert pulse.true_rate("rule.breakout.v00002", degraded=True) == pulse.degraded_rate
    assert pulse.true_rate("rule.momentum.v00000", degraded=True) > 0.5


def test_constructor_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="degrading"):
        syn.SyntheticPulse(1, 1, 1, degrading_rules=["rule.nope"])
    with pytest.raises(ValueError, match="step_s"):
        syn.SyntheticPulse(1, 1, 1, step_s=0.0)
    with pytest.raises(ValueError, match="feedback_ratio"):
        syn.SyntheticPulse(1, 1, 1).records(10, feedback_ratio=1.5)


# ------------------------------------------------------------------------ bad records


def test_every_bad_record_fails_with_its_expected_reason() -> None:
    pulse = syn.SyntheticPulse(13, 4, 4)
    bad = list(inv.bad_records(pulse, 220))
    for kind, _key, value, reason in bad:
        with pytest.raises(DecodeError) as info:
            decode(kind, value)
        assert info.value.reason == reason, (value[:120], info.value.detail)
    assert {reason for *_, reason in bad} == ev.DECODE_REASONS
    assert {kind for kind, *_ in bad} == {syn.OBSERVATION, syn.FEEDBACK}


def test_oversized_bad_records_follow_the_configured_limit() -> None:
    bad = inv.bad_records(syn.SyntheticPulse(13, 4, 4), 44, max_event_bytes=2048)
    for kind, _, value, reason in bad:
        if reason == "oversized":
            assert 2048 < len(value) < 2048 + 400
            with pytest.raises(DecodeError, match="oversized"):
                ev.decode_observation(value, max_bytes=2048)
            # Below the default limit the same bytes are a valid event.
            assert decode(kind, value)


def test_contextual_bad_records() -> None:
    records = list(syn.SyntheticPulse(17, 3, 3).records(20))
    observation = next(r for r in records if r[0] == syn.OBSERVATION)
    feedback = next(r for r in records if r[0] == syn.FEEDBACK)
    original = ev.decode_observation(observation[2])

    kind, key, value, reason = inv.duplicate_of(observation)
    dup = ev.decode_observation(value)
    assert (kind, key, reason) == (syn.OBSERVATION, observation[1], "duplicate")
    assert (dup.ts, dup.value, dup.variable) == (original.ts, original.value, original.variable)
    assert dup.event_id != original.event_id

    kind, key, value, reason = inv.duplicate_of(feedback)
    assert (key, reason) == (feedback[1], "duplicate_event_id")
    assert value != feedback[2]
    assert ev.decode_feedback(value) == ev.decode_feedback(feedback[2])

    _, key, value, reason = inv.out_of_order_of(observation, by_s=2.5)
    older = ev.decode_observation(value)
    assert (key, reason) == (observation[1], "out_of_order")
    assert ev.ts_us(original.ts) - ev.ts_us(older.ts) == 2_500_000
    assert older.variable == original.variable
    with pytest.raises(ValueError, match="observations only"):
        inv.out_of_order_of(feedback)

    for record in (observation, feedback):
        _, key, value, reason = inv.key_mismatch_of(record)
        event = decode(record[0], value)
        name = event.variable if isinstance(event, ev.Observation) else event.rule_id
        assert reason == "key_mismatch"
        assert key != name.encode()
        assert key != record[1]


def test_a_shorter_run_is_a_prefix_of_a_longer_one() -> None:
    # Without a switch or degradation (whose index scales with n_events).
    pulse = syn.SyntheticPulse(1, 2, 2, degrading_rules=0)
    endless = list(islice(pulse.records(10**12), 2100))  # lazy: never materialised
    assert endless == list(pulse.records(2100))
    assert endless[:5] == list(pulse.records(5))
