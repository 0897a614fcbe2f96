"""TrustLearner: closed form, batch invariance against the reference, coverage, dedupe."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta as beta_dist

from stream_trainer.errors import DecodeError
from stream_trainer.events import RuleVersion, from_ts_us
from stream_trainer.learners import TrustLearner
from tests.reference_learners import FeedbackEvent, feedback_columns, reference_trust

NOW = datetime(2024, 1, 1, tzinfo=UTC)
DAY = 86_400.0


def _learn(learner: TrustLearner, events: list[FeedbackEvent], sizes: list[int]) -> dict[int, str]:
    """Feed ``events`` in batches of ``sizes``; rejections by stream index."""
    rejected: dict[int, str] = {}
    start = 0
    for size in sizes:
        result = learner.learn_batch(feedback_columns(events[start : start + size]))
        for pos, reason in zip(
            result.rejected_positions.tolist(), result.rejected_reasons, strict=True
        ):
            rejected[start + pos] = reason
        start += size
    assert start == len(events)
    return rejected


def _one(learner: TrustLearner, rule_id: str) -> RuleVersion:
    return learner.versions([rule_id], NOW)[0]


def test_closed_form_by_hand() -> None:
    half_life = 10.0
    learner = TrustLearner(half_life_s=half_life, dedupe_window_s=0.0)
    learner.learn_batch(
        feedback_columns([("r", "e1", 0.0, True, 1.0), ("r", "e2", 10.0, False, 2.0)])
    )
    # Late feedback (t=5 < T) is decayed to the current T=20 like the rest.
    learner.learn_batch(
        feedback_columns([("r", "e3", 20.0, True, 1.0), ("r", "e4", 5.0, True, 4.0)])
    )
    # At T = 20: successes 1 * 2^-2 + 1 + 4 * 2^-1.5, failures 2 * 2^-1.
    succ = 0.25 + 1.0 + 4.0 * 2.0**-1.5
    fail = 1.0
    version = _one(learner, "r")
    assert version.alpha == pytest.approx(1.0 + succ, rel=1e-12)
    assert version.beta == pytest.approx(1.0 + fail, rel=1e-12)
    assert version.trust == pytest.approx((1 + succ) / (2 + succ + fail), rel=1e-12)
    assert version.evidence == pytest.approx(succ + fail, rel=1e-12)
    assert version.trust_low == pytest.approx(beta_dist.ppf(0.025, 1 + succ, 1 + fail), rel=1e-9)
    assert version.trust_high == pytest.approx(beta_dist.ppf(0.975, 1 + succ, 1 + fail), rel=1e-9)
    assert version.trained_through == from_ts_us(20_000_000)
    assert version.version == 2
    assert version.status == "active"


def test_prior_only_after_all_evidence_decays() -> None:
    learner = TrustLearner(half_life_s=1.0)
    learner.learn_batch(feedback_columns([("r", "old", 0.0, False, 1.0)]))
    learner.learn_batch(feedback_columns([("r", "new", 5000.0, True, 1.0)]))
    version = _one(learner, "r")
    assert version.beta == 1.0  # 2^-5000 underflows: the prior alone is left
    assert version.alpha == 2.0


@st.composite
def feedback_streams(draw: st.DrawFn) -> list[FeedbackEvent]:
    """Few rules and ids (so duplicates happen), hours apart (so the day window matters)."""
    n = draw(st.integers(1, 60))
    return [
        (
            draw(st.sampled_from(["a", "b", "c"])),
            draw(st.sampled_from(["e0", "e1", "e2", "e3", "e4", "e5"])),
            float(draw(st.integers(0, 24 * 6)) * 3600),
            draw(st.booleans()),
            draw(st.floats(0.1, 10.0)),
        )
        for _ in range(n)
    ]


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


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), half_life_days=st.sampled_from([0.5, 3.0, 30.0]))
def test_any_batching_matches_reference(data: st.DataObject, half_life_days: float) -> None:
    events = data.draw(feedback_streams())
    sizes = data.draw(sizes_for(len(events)))
    learner = TrustLearner(half_life_s=half_life_days * DAY)
    rejected = _learn(learner, events, sizes)
    expected = reference_trust(events, half_life_s=half_life_days * DAY)
    assert rejected == expected.rejected
    assert len(learner) == len(expected.models)
    for version in learner.versions(sorted(expected.models), NOW):
        model = expected.models[version.rule_id]
        for name in ("alpha", "beta", "trust", "trust_low", "trust_high", "evidence"):
            assert _close(getattr(version, name), model[name]), name
        if abs(model["trust"] - 0.5) > 1e-9 and abs(model["trust_high"] - 0.35) > 1e-9:
            assert version.status == model["status"]
        assert version.trained_through == from_ts_us(round(model["trained_through_s"] * 1e6))


def test_credible_intervals_cover_true_rates() -> None:
    rng = np.random.default_rng(20240101)
    n_rules, per_rule = 500, 40
    rates = rng.uniform(0.05, 0.95, n_rules)
    rules = np.repeat(np.arange(n_rules), per_rule)
    success = rng.random(rules.shape[0]) < rates[rules]
    events = [
        (f"rule{r}", f"ev{i}", 1e9 + (i % per_rule), bool(s), 1.0)
        for i, (r, s) in enumerate(zip(rules.tolist(), success.tolist(), strict=True))
    ]
    learner = TrustLearner()
    learner.learn_batch(feedback_columns(events))
    versions = learner.versions([f"rule{r}" for r in range(n_rules)], NOW)
    low = np.array([v.trust_low for v in versions])
    high = np.array([v.trust_high for v in versions])
    covered = (low <= rates) & (rates <= high)
    assert covered.mean() >= 0.90
    assert np.all(high - low < 0.5)  # 40 events must narrow the interval from the prior's


def test_status_thresholds() -> None:
    learner = TrustLearner()
    events = [("good", f"g{i}", 1e9, True, 1.0) for i in range(20)]
    events += [("meh", f"m{i}", 1e9, i < 4, 1.0) for i in range(10)]
    events += [("bad", f"b{i}", 1e9, False, 1.0) for i in range(20)]
    learner.learn_batch(feedback_columns(events))
    good, meh, bad = learner.versions(["good", "meh", "bad"], NOW)
    assert (good.status, meh.status, bad.status) == ("active", "probation", "retired")
    assert meh.trust_high >= 0.35 > bad.trust_high
    # Stricter thresholds move the same posteriors.
    strict = TrustLearner(retire_below=0.8, probation_below=0.96)
    strict.learn_batch(feedback_columns(events))
    assert [v.status for v in strict.versions(["good", "meh", "bad"], NOW)] == [
        "probation",
        "retired",
        "retired",
    ]


def test_duplicate_event_id_rejected_within_window_in_and_across_batches() -> None:
    learner = TrustLearner(dedupe_window_s=DAY)
    first = learner.learn_batch(
        feedback_columns([("r", "e", 0.0, True, 1.0), ("r", "e", 0.0, True, 1.0)])
    )
    assert first.rejected_positions.tolist() == [1]
    assert first.rejected_reasons == ["duplicate_event_id"]
    again = learner.learn_batch(
        feedback_columns([("q", "e", 0.0, True, 1.0), ("r", "e", 10.0, False, 1.0)])
    )
    assert again.rejected_positions.tolist() == [1]  # same id on another rule is fine
    assert again.touched == ["q"]
    assert _one(learner, "r").alpha == 2.0
    assert _one(learner, "r").version == 1


def test_duplicate_event_id_accepted_after_window() -> None:
    learner = TrustLearner(dedupe_window_s=DAY)
    learner.learn_batch(feedback_columns([("r", "e", 0.0, True, 1.0)]))
    learner.learn_batch(feedback_columns([("r", "later", 2 * DAY, True, 1.0)]))
    result = learner.learn_batch(feedback_columns([("r", "e", 0.0, True, 1.0)]))
    assert result.rejected_positions.tolist() == []
    assert result.touched == ["r"]


def test_dedupe_state_survives_dump_and_load() -> None:
    learner = TrustLearner(dedupe_window_s=DAY)
    learner.learn_batch(feedback_columns([("r", "e", 0.0, True, 1.0)]))
    restored = TrustLearner(dedupe_window_s=DAY)
    restored.load(learner.dump(["r"]))
    result = restored.learn_batch(feedback_columns([("r", "e", 0.0, True, 1.0)]))
    assert result.rejected_reasons == ["duplicate_event_id"]
    assert _one(restored, "r") == _one(learner, "r")


def test_recent_ids_are_pruned_but_still_dedupe() -> None:
    learner = TrustLearner(dedupe_window_s=10.0)
    for i in range(200):
        learner.learn_batch(feedback_columns([("r", f"e{i}", float(i), True, 1.0)]))
    record = learner.dump(["r"])[0][1]
    assert len(record) < 400  # only the ~11 ids inside the window are written
    result = learner.learn_batch(feedback_columns([("r", "e195", 195.0, True, 1.0)]))
    assert result.rejected_reasons == ["duplicate_event_id"]


def test_load_rejects_garbage() -> None:
    with pytest.raises(DecodeError) as info:
        TrustLearner().load([("r", b"\x93not a state")])
    assert info.value.reason == "invalid_state"


def test_versions_of_unknown_rule_raise() -> None:
    with pytest.raises(KeyError, match="nope"):
        TrustLearner().versions(["nope"], NOW)


def test_status_counts_agree_with_published_statuses() -> None:
    from datetime import UTC, datetime

    from stream_trainer.columns import FeedbackColumns

    learner = TrustLearner()
    rng = np.random.default_rng(3)
    n = 600
    rules = [f"r{i % 60}" for i in range(n)]
    rates = np.linspace(0.05, 0.95, 60)
    success = rng.random(n) < rates[np.arange(n) % 60]
    learner.learn_batch(
        FeedbackColumns(rules, [f"e{i}" for i in range(n)], np.arange(n, dtype=float),
                        success, np.ones(n))
    )  # fmt: skip
    keys = sorted(set(rules))
    published = [v.status for v in learner.versions(keys, datetime.now(UTC))]
    counts = learner.status_counts()
    assert counts == {s: published.count(s) for s in ("active", "probation", "retired")}
    assert counts["retired"] > 0 and counts["active"] > 0
