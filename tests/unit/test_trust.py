"""TrustLearner: closed form, batch invariance against the reference, coverage, dedupe,
publication (flush), the changelog formats (new, legacy, unknown) and forget."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta as beta_dist

from stream_trainer.columns import FeedbackColumns
from stream_trainer.errors import StateFormatError
from stream_trainer.events import RuleVersion, from_ts_us
from stream_trainer.learners import TrustLearner
from stream_trainer.learners.dedupe import BYTES_PER_ID
from tests.reference_learners import FeedbackEvent, feedback_columns, reference_trust

NOW = datetime(2024, 1, 1, tzinfo=UTC)
DAY = 86_400.0
Log = dict[bytes, bytes]


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


def _publish(learner: TrustLearner, log: Log) -> None:
    """Flush into a compacted changelog (latest value per key, tombstones delete)."""
    for suffix, value in learner.flush(NOW).state:
        if value is None:
            log.pop(suffix, None)
        else:
            log[suffix] = value


def _one(learner: TrustLearner, rule_id: str) -> RuleVersion:
    return learner.versions([rule_id], NOW)[0]


def test_closed_form_by_hand() -> None:
    half_life = 10.0
    learner = TrustLearner(half_life_s=half_life, dedupe_window_s=0.0)
    learner.learn_batch(
        feedback_columns([("r", "e1", 0.0, True, 1.0), ("r", "e2", 10.0, False, 2.0)])
    )
    learner.flush(NOW)
    # Late feedback (t=5 < T) is decayed to the current T=20 like the rest.
    learner.learn_batch(
        feedback_columns([("r", "e3", 20.0, True, 1.0), ("r", "e4", 5.0, True, 4.0)])
    )
    learner.flush(NOW)
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


def assert_matches_reference(
    learner: TrustLearner, events: list[FeedbackEvent], rejected: dict[int, str], **kw: float
) -> None:
    expected = reference_trust(events, **kw)
    assert rejected == expected.rejected
    assert len(learner) == len(expected.models)
    for version in learner.versions(sorted(expected.models), NOW):
        model = expected.models[version.rule_id]
        for name in ("alpha", "beta", "trust", "trust_low", "trust_high", "evidence"):
            assert _close(getattr(version, name), model[name]), name
        if abs(model["trust"] - 0.5) > 1e-9 and abs(model["trust_high"] - 0.35) > 1e-9:
            assert version.status == model["status"]
        assert version.trained_through == from_ts_us(round(model["trained_through_s"] * 1e6))


@settings(max_examples=80, deadline=None)
@given(data=st.data(), half_life_days=st.sampled_from([0.5, 3.0, 30.0]))
def test_any_batching_matches_reference(data: st.DataObject, half_life_days: float) -> None:
    events = data.draw(feedback_streams())
    sizes = data.draw(sizes_for(len(events)))
    learner = TrustLearner(half_life_s=half_life_days * DAY)
    rejected = _learn(learner, events, sizes)
    assert_matches_reference(learner, events, rejected, half_life_s=half_life_days * DAY)


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
    learner.flush(NOW)
    again = learner.learn_batch(
        feedback_columns([("q", "e", 0.0, True, 1.0), ("r", "e", 10.0, False, 1.0)])
    )
    assert again.rejected_positions.tolist() == [1]  # same id on another rule is fine
    assert again.touched == ["q"]
    flushed = learner.flush(NOW)
    assert flushed.keys == ["q"]  # r did not change: not published again
    assert _one(learner, "r").alpha == 2.0
    assert _one(learner, "r").version == 1


def test_duplicate_event_id_accepted_after_window() -> None:
    learner = TrustLearner(dedupe_window_s=DAY)
    learner.learn_batch(feedback_columns([("r", "e", 0.0, True, 1.0)]))
    learner.learn_batch(feedback_columns([("r", "later", 2 * DAY, True, 1.0)]))
    result = learner.learn_batch(feedback_columns([("r", "e", 0.0, True, 1.0)]))
    assert result.rejected_positions.tolist() == []
    assert result.touched == ["r"]


def test_touched_in_order_of_first_appearance_and_only_if_applied() -> None:
    learner = TrustLearner()
    learner.learn_batch(feedback_columns([("a", "x", 0.0, True, 1.0)]))
    result = learner.learn_batch(
        feedback_columns(
            [("a", "x", 1.0, True, 1.0), ("b", "y", 1.0, True, 1.0), ("a", "z", 1.0, True, 1.0)]
        )
    )
    assert result.touched == ["a", "b"]
    dup_only = learner.learn_batch(feedback_columns([("b", "y", 1.0, True, 1.0)]))
    assert dup_only.touched == []


def test_flush_publishes_each_changed_rule_once_with_version_plus_one() -> None:
    learner = TrustLearner()
    for i in range(3):  # three batches, one publication
        learner.learn_batch(feedback_columns([("r", f"e{i}", float(i), True, 1.0)]))
    learner.learn_batch(feedback_columns([("q", "e", 0.0, False, 1.0)]))
    flushed = learner.flush(NOW)
    assert sorted(flushed.keys) == ["q", "r"]
    wire = [msgspec.json.decode(v, type=RuleVersion) for v in flushed.values]
    assert wire == learner.versions(flushed.keys, NOW)
    assert {v.rule_id: v.version for v in wire} == {"q": 1, "r": 1}
    rule_records = {s: v for s, v in flushed.state if s.startswith(b":")}
    assert set(rule_records) == {b":q", b":r"}
    assert all(v is not None and v[0] == 1 for v in rule_records.values())
    assert learner.flush(NOW).keys == []  # nothing changed since
    learner.learn_batch(feedback_columns([("r", "e9", 9.0, True, 1.0)]))
    assert [
        msgspec.json.decode(v, type=RuleVersion).version for v in learner.flush(NOW).values
    ] == [2]


def test_dedupe_state_survives_flush_and_load() -> None:
    learner = TrustLearner(dedupe_window_s=DAY)
    learner.learn_batch(feedback_columns([("r", "e", 0.0, True, 1.0)]))
    log: Log = {}
    _publish(learner, log)
    assert any(s.startswith(b"#d:") for s in log)
    restored = TrustLearner(dedupe_window_s=DAY)
    restored.load(list(log.items()))
    result = restored.learn_batch(feedback_columns([("r", "e", 0.0, True, 1.0)]))
    assert result.rejected_reasons == ["duplicate_event_id"]
    assert _one(restored, "r") == _one(learner, "r")


def test_ids_outside_the_window_are_pruned_but_recent_ones_still_dedupe() -> None:
    learner = TrustLearner(dedupe_window_s=10.0, dedupe_max_bytes=64 * BYTES_PER_ID)
    log: Log = {}
    for i in range(2000):
        learner.learn_batch(feedback_columns([("r", f"e{i}", float(i), True, 1.0)]))
        if i % 50 == 0:
            _publish(learner, log)
    _publish(learner, log)
    summary = learner.summary()
    assert summary["dedupe_ids"] <= 64 and summary["dedupe_evicted"] == 0
    restored = TrustLearner(dedupe_window_s=10.0, dedupe_max_bytes=64 * BYTES_PER_ID)
    restored.load(list(log.items()))
    for target in (learner, restored):
        result = target.learn_batch(feedback_columns([("r", "e1995", 1995.0, True, 1.0)]))
        assert result.rejected_reasons == ["duplicate_event_id"]
    entries = sum((len(v) - 1) // 24 for s, v in log.items() if s.startswith(b"#"))
    assert entries < 200  # buckets of dead ids were tombstoned


class _RuleState(msgspec.Struct, array_like=True, frozen=True):
    """The previous release's rule record, copied verbatim (the legacy format)."""

    ref_time: float
    success: float
    failure: float
    version: int
    recent: dict[str, float]


def test_legacy_record_loads_with_its_recent_ids() -> None:
    legacy = msgspec.msgpack.encode(
        _RuleState(ref_time=100.0, success=3.0, failure=1.0, version=7, recent={"e1": 90.0})
    )
    assert 0x90 <= legacy[0] <= 0x9F
    learner = TrustLearner(dedupe_window_s=DAY)
    learner.load([(b":old", legacy)])
    version = _one(learner, "old")
    assert (version.alpha, version.beta, version.version) == (4.0, 2.0, 7)
    assert version.trained_through == from_ts_us(100_000_000)
    dup = learner.learn_batch(feedback_columns([("old", "e1", 95.0, True, 1.0)]))
    assert dup.rejected_reasons == ["duplicate_event_id"]
    fresh = learner.learn_batch(feedback_columns([("old", "e2", 100.0, True, 1.0)]))
    assert fresh.touched == ["old"]
    # The next publication moves the legacy ids into dedupe records: they survive it.
    log: Log = {b":old": legacy}
    _publish(learner, log)
    assert log[b":old"][0] == 1
    restored = TrustLearner(dedupe_window_s=DAY)
    restored.load(list(log.items()))
    again = restored.learn_batch(feedback_columns([("old", "e1", 95.0, True, 1.0)]))
    assert again.rejected_reasons == ["duplicate_event_id"]
    assert _one(restored, "old").version == 8


@pytest.mark.parametrize(
    ("suffix", "value", "match"),
    [
        (b":r", b"\x02" + bytes(40), r"b':r'.*format byte 2"),
        (b":r", b"", r"b':r'.*format byte None"),
        (b":r", b"\x93not a state", r"'r'.*msgpack"),
        (b":r", b"\x01short", r"'r'.*bytes expected for format 1"),
        (b"#d:0:0", b"\x07" + bytes(24), r"dedupe record b'#d:0:0'.*format byte 7"),
        (b"#x", b"\x01", r"b'#x'.*unknown key"),
        (b"?r", b"\x01", r"b'\?r'.*unknown key"),
    ],
)
def test_unreadable_records_raise_state_format_error(
    suffix: bytes, value: bytes, match: str
) -> None:
    with pytest.raises(StateFormatError, match=match):
        TrustLearner().load([(suffix, value)])


def test_versions_of_unknown_rule_raise() -> None:
    with pytest.raises(KeyError, match="nope"):
        TrustLearner().versions(["nope"], NOW)


def test_summary_status_counts_agree_with_published_statuses() -> None:
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
    published = [v.status for v in learner.versions(keys, NOW)]
    summary = learner.summary()
    counts = summary["status"]
    assert counts == {s: published.count(s) for s in ("active", "probation", "retired")}
    assert counts["retired"] > 0 and counts["active"] > 0
    assert summary["dedupe_ids"] == n
    assert summary["dedupe_evicted"] == 0
    assert summary["dedupe_bytes"] >= BYTES_PER_ID * n
    assert sorted(learner) == keys


def test_forget_drops_the_rule_and_its_ids_also_after_restore() -> None:
    learner = TrustLearner(dedupe_window_s=DAY)
    learner.learn_batch(
        feedback_columns([("r", "e", 0.0, True, 1.0), ("keep", "k", 0.0, True, 1.0)])
    )
    log: Log = {}
    _publish(learner, log)
    assert learner.forget("r") and not learner.forget("r")
    assert list(learner) == ["keep"]
    _publish(learner, log)
    log.pop(b":r")  # the task writes this tombstone
    assert learner.summary()["dedupe_ids"] == 1
    restored = TrustLearner(dedupe_window_s=DAY)
    restored.load(list(log.items()))
    for target in (learner, restored):
        back = target.learn_batch(
            feedback_columns([("r", "e", 0.0, False, 1.0), ("keep", "k", 0.0, True, 1.0)])
        )
        assert back.rejected_positions.tolist() == [1]  # r starts afresh, keep still dedupes
        assert (_one(target, "r").alpha, _one(target, "r").beta) == (1.0, 2.0)


def test_hot_rule_records_stay_small_and_trust_matches_reference() -> None:
    """One rule at 10 feedback/s of event time for 200k events, flushed after every batch:
    no changelog record reaches 64 KiB, and trust equals the reference."""
    n, batch = 200_000, 500
    rng = np.random.default_rng(10)
    ts = 1.7e9 + np.arange(n) / 10.0
    success = rng.random(n) < 0.7
    ids = [f"ev-{i}" for i in range(n)]
    rules = ["hot"] * n
    learner = TrustLearner()
    log: Log = {}
    largest = 0
    for lo in range(0, n, batch):
        hi = lo + batch
        result = learner.learn_batch(
            FeedbackColumns(rules[lo:hi], ids[lo:hi], ts[lo:hi], success[lo:hi], np.ones(hi - lo))
        )
        assert result.rejected_positions.shape[0] == 0
        for suffix, value in learner.flush(NOW).state:
            if value is not None:
                largest = max(largest, len(suffix) + len(value))
                log[suffix] = value
            else:
                log.pop(suffix, None)
    assert largest < 64 * 1024
    assert len(log) < 2 * n / 2000 + 200  # records proportional to the ids held
    events = list(zip(rules, ids, ts.tolist(), success.tolist(), [1.0] * n, strict=True))
    expected = reference_trust(events).models["hot"]
    version = _one(learner, "hot")
    for name in ("alpha", "beta", "trust", "trust_low", "trust_high", "evidence"):
        assert _close(getattr(version, name), expected[name]), name
    restored = TrustLearner()
    restored.load(list(log.items()))
    assert restored.summary()["dedupe_ids"] == n
    replay = restored.learn_batch(
        FeedbackColumns(rules[-5:], ids[-5:], ts[-5:], success[-5:], np.ones(5))
    )
    assert replay.rejected_positions.tolist() == [0, 1, 2, 3, 4]
