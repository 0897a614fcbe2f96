"""The dedupe store behind TrustLearner: stable hashing, restore equivalence, bounded
records, eviction at the byte bound (oldest buckets first, counted), and forget."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_trainer.columns import FeedbackColumns
from stream_trainer.learners import TrustLearner
from stream_trainer.learners._dedupe_log import FULL
from stream_trainer.learners.dedupe import BYTES_PER_ID
from stream_trainer.learners.hashing import hash_strings, hash_strings_slow
from tests.reference_learners import FeedbackEvent, feedback_columns, reference_trust

NOW = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = 3600.0
Log = dict[bytes, bytes]


def _publish(learner: TrustLearner, log: Log) -> list[tuple[bytes, bytes | None]]:
    state = learner.flush(NOW).state
    for suffix, value in state:
        if value is None:
            log.pop(suffix, None)
        else:
            log[suffix] = value
    return state


def _restored(log: Log, **kw: float) -> TrustLearner:
    learner = TrustLearner(**kw)  # type: ignore[arg-type]
    learner.load(list(log.items()))
    return learner


def _state(learner: TrustLearner) -> list[tuple[object, ...]]:
    """Everything a rule publishes but its version number and publication time."""
    return [
        (v.rule_id, v.alpha, v.beta, v.trust, v.trust_low, v.trust_high, v.trained_through)
        for v in learner.versions(sorted(learner), NOW)
    ]


def _rejections(learner: TrustLearner, events: list[FeedbackEvent], offset: int) -> set[int]:
    result = learner.learn_batch(feedback_columns(events))
    return {offset + p for p in result.rejected_positions.tolist()}


# -- hashing ----------------------------------------------------------------------------


def test_hashes_are_pinned_as_they_are_part_of_the_changelog_format() -> None:
    assert hash_strings(["", "a", "abc", "\u00e9", "ev-1"]).tolist() == [
        16294208416658607535,
        4215961999801924120,
        12223937187045418275,
        5512043816623830573,
        1698739687192371612,
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40) | st.text("ab\x00", max_size=20), min_size=1, max_size=30))
def test_fast_hash_path_equals_per_string_encoding(strings: list[str]) -> None:
    fast = hash_strings(strings)
    assert fast.tolist() == hash_strings_slow(strings).tolist()
    assert fast.tolist() == [hash_strings_slow([s])[0] for s in strings]


# -- restore equivalence ----------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> list[FeedbackEvent]:
    """Few rules and ids (duplicates), hours apart (the 6 h window and its buckets matter)."""
    n = draw(st.integers(1, 80))
    return [
        (
            draw(st.sampled_from(["a", "b", "c"])),
            draw(st.sampled_from([f"e{i}" for i in range(8)])),
            float(draw(st.integers(0, 48)) * HOUR),
            draw(st.booleans()),
            draw(st.floats(0.1, 10.0)),
        )
        for _ in range(n)
    ]


@settings(max_examples=120, deadline=None)
@given(events=streams(), data=st.data())
def test_flush_and_restore_anywhere_gives_the_uninterrupted_results(
    events: list[FeedbackEvent], data: st.DataObject
) -> None:
    """Split the stream into batches; after each, maybe flush, maybe restart from the log."""
    window = 6 * HOUR
    whole = TrustLearner(dedupe_window_s=window)
    expected = _rejections(whole, events, 0)
    learner = TrustLearner(dedupe_window_s=window)
    log: Log = {}
    rejected: set[int] = set()
    start = 0
    while start < len(events):
        size = data.draw(st.integers(1, len(events) - start))
        rejected |= _rejections(learner, events[start : start + size], start)
        start += size
        step = data.draw(st.sampled_from(["none", "flush", "restart"]))
        if step != "none":
            _publish(learner, log)
        if step == "restart":  # a compacted topic keeps no useful order between keys
            records = list(log.items())
            data.draw(st.randoms(use_true_random=False)).shuffle(records)
            learner = TrustLearner(dedupe_window_s=window)
            learner.load(records)
    assert rejected == expected
    assert rejected == set(reference_trust(events, dedupe_window_s=window).rejected)
    assert _state(learner) == _state(whole)


@settings(max_examples=60, deadline=None)
@given(events=streams(), data=st.data())
def test_eviction_at_the_bound_is_batch_invariant(
    events: list[FeedbackEvent], data: st.DataObject
) -> None:
    """Room is made when the arrays fill up, at the same event whatever the batching."""
    kw = {"dedupe_window_s": 1e9, "dedupe_max_bytes": 16 * BYTES_PER_ID}
    whole = TrustLearner(**kw)  # type: ignore[arg-type]
    expected = _rejections(whole, events, 0)
    learner = TrustLearner(**kw)  # type: ignore[arg-type]
    rejected: set[int] = set()
    start = 0
    while start < len(events):
        size = data.draw(st.integers(1, len(events) - start))
        rejected |= _rejections(learner, events[start : start + size], start)
        start += size
        if data.draw(st.booleans()):
            learner.flush(NOW)
    assert rejected == expected
    assert _state(learner) == _state(whole)
    assert learner.summary()["dedupe_evicted"] == whole.summary()["dedupe_evicted"]


# -- bounded records --------------------------------------------------------------------


def _hot(n: int, start: float = 1.7e9, rate: float = 10.0, rule: str = "hot") -> FeedbackColumns:
    ts = start + np.arange(n) / rate
    ids = [f"{rule}-{start}-{i}" for i in range(n)]
    return FeedbackColumns([rule] * n, ids, ts, np.ones(n, bool), np.ones(n))


def test_one_id_per_flush_keeps_few_small_records_per_bucket() -> None:
    learner = TrustLearner()
    log: Log = {}
    columns = _hot(6000, start=5400.0 * 314_815, rate=2.0)  # 3000 s: within one 5400 s bucket
    written = 0
    for i in range(len(columns)):
        one = FeedbackColumns(
            columns.rule_id[i : i + 1],
            columns.event_id[i : i + 1],
            columns.ts_s[i : i + 1],
            columns.success[i : i + 1],
            columns.weight[i : i + 1],
        )
        learner.learn_batch(one)
        written += sum(len(v) for _, v in _publish(learner, log) if v is not None)
    dedupe = {s: v for s, v in log.items() if s.startswith(b"#d:")}
    assert len({s.split(b":")[1] for s in dedupe}) == 1
    assert len(dedupe) <= 6000 // FULL + math.log2(FULL) + 2
    assert sum((len(v) - 1) // 24 for v in dedupe.values()) == 6000
    assert written < 6000 * 24 * (math.log2(FULL) + 2)  # each id rewritten O(log FULL) times


def test_records_of_a_large_flush_are_split_below_64_kib() -> None:
    learner = TrustLearner()
    learner.learn_batch(_hot(50_000, rate=1000.0))
    state = learner.flush(NOW).state
    sizes = [len(v) for s, v in state if s.startswith(b"#d:") and v is not None]
    assert sum((size - 1) // 24 for size in sizes) == 50_000
    assert max(sizes) == 1 + 24 * FULL < 64 * 1024


def test_dead_buckets_are_tombstoned_and_restore_reads_only_live_ids() -> None:
    learner = TrustLearner(dedupe_window_s=HOUR, dedupe_max_bytes=5000 * BYTES_PER_ID)
    log: Log = {}
    for k in range(40):  # 40 hours at 1 id/s: the window holds ~3600
        learner.learn_batch(_hot(3600, start=1.7e9 + k * HOUR, rate=1.0))
        _publish(learner, log)
    entries = sum((len(v) - 1) // 24 for s, v in log.items() if s.startswith(b"#d:"))
    assert entries < 3 * 5000
    assert learner.summary()["dedupe_evicted"] == 0
    restored = _restored(log, dedupe_window_s=HOUR)
    last = _hot(3600, start=1.7e9 + 39 * HOUR, rate=1.0)
    for target in (learner, restored):
        assert target.learn_batch(last).rejected_positions.shape[0] == 3600


# -- the byte bound ---------------------------------------------------------------------


def test_at_the_bound_the_oldest_buckets_are_evicted_whole_and_counted() -> None:
    # Window 1600 s: buckets of 100 s. 16 ids fit; ids every 10 s, 10 per bucket.
    learner = TrustLearner(dedupe_window_s=1600.0, dedupe_max_bytes=16 * BYTES_PER_ID)
    log: Log = {}
    first = [("r", f"e{i}", 10.0 * i, True, 1.0) for i in range(15)]
    learner.learn_batch(feedback_columns(first))
    _publish(learner, log)
    assert {s for s in log if s.startswith(b"#")} == {b"#d:0:0", b"#d:1:0"}
    learner.learn_batch(feedback_columns([("r", f"e{i}", 10.0 * i, True, 1.0) for i in (15, 16)]))
    summary = learner.summary()
    assert summary["dedupe_evicted"] == 10  # bucket 0 (e0..e9) as a whole
    assert summary["dedupe_ids"] == 7
    assert summary["dedupe_bytes"] <= 16 * BYTES_PER_ID + 1024  # + pending list, small keys
    state = dict(_publish(learner, log))
    assert state[b"#d:0:0"] is None  # its record is tombstoned
    assert b"#d:0:0" not in log
    again = learner.learn_batch(
        feedback_columns([("r", "e3", 30.0, True, 1.0), ("r", "e12", 120.0, True, 1.0)])
    )
    assert again.rejected_positions.tolist() == [1]  # e3 was forgotten, e12 was not
    assert _restored(log, dedupe_window_s=1600.0).summary()["dedupe_ids"] == 7


def test_dead_ids_are_pruned_before_anything_is_evicted() -> None:
    learner = TrustLearner(dedupe_window_s=100.0, dedupe_max_bytes=16 * BYTES_PER_ID)
    for i in range(200):  # 1 id every 10 s: ~11 inside the window at any time
        learner.learn_batch(feedback_columns([("r", f"e{i}", 10.0 * i, True, 1.0)]))
    assert learner.summary()["dedupe_evicted"] == 0
    assert learner.learn_batch(feedback_columns([("r", "e195", 1950.0, True, 1.0)])).touched == []


# -- forget -----------------------------------------------------------------------------


def test_forgotten_ids_never_come_back_even_from_stale_records() -> None:
    learner = TrustLearner(dedupe_window_s=100.0)
    log: Log = {}
    learner.learn_batch(feedback_columns([("r", "e", 0.0, True, 1.0), ("k", "x", 0.0, True, 1.0)]))
    _publish(learner, log)  # e@0 in bucket 0
    learner.learn_batch(feedback_columns([("r", "y", 500.0, True, 1.0)]))
    learner.learn_batch(feedback_columns([("r", "e", 501.0, True, 1.0)]))  # e applies again
    _publish(learner, log)  # e@501 in a later bucket; the copy in bucket 0 is stale
    assert learner.forget("r")
    _publish(learner, log)
    log.pop(b":r")  # the task's tombstone
    restored = _restored(log, dedupe_window_s=100.0)
    replay = [("r", "e", 0.0, True, 1.0), ("r", "e", 501.0, True, 1.0), ("k", "x", 0.0, True, 1.0)]
    for target in (learner, restored):
        assert _rejections(target, replay, 0) == {1, 2}  # r afresh: e applies once
    assert _state(learner) == _state(restored)
