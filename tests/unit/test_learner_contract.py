"""The Learner contract, checked the same way on both learners (River style)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import pytest

from stream_trainer.learners import Forecaster, Learner, LearnResult, TrustLearner
from tests.reference_learners import feedback_columns, observation_columns

NOW = datetime(2024, 1, 1, tzinfo=UTC)

AnyLearner = Learner[Any, Any]


@dataclass(frozen=True)
class Case:
    """How to build a learner, a seeded stream for it, and its columns."""

    make: Callable[[], AnyLearner]
    stream: Callable[[int], list[tuple[Any, ...]]]
    columns: Callable[[list[Any]], Any]


def _feedback_stream(seed: int) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    n = 400
    ts = 1e9 + np.cumsum(rng.integers(-3_600, 20_000, n))
    return [
        (f"rule{r}", f"ev{e}", float(t), bool(s), float(w))
        for r, e, t, s, w in zip(
            rng.integers(0, 12, n).tolist(),
            rng.integers(0, 300, n).tolist(),  # some ids repeat: duplicates
            ts.tolist(),
            (rng.random(n) < 0.6).tolist(),
            rng.uniform(0.5, 2.0, n).tolist(),
            strict=True,
        )
    ]


def _observation_stream(seed: int) -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    n = 400
    ts = 1_700_000_000_000_000 + np.cumsum(rng.integers(-1, 4, n))  # some out of order
    return [
        (f"var{v}", int(t), float(y))
        for v, t, y in zip(
            rng.integers(0, 12, n).tolist(), ts.tolist(), rng.normal(size=n).tolist(), strict=True
        )
    ]


CASES = {
    "trust": Case(TrustLearner, _feedback_stream, feedback_columns),
    "forecaster": Case(Forecaster, _observation_stream, observation_columns),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def _run(
    case: Case,
    learner: AnyLearner,
    events: list[Any],
    sizes: Sequence[int],
    changelog: dict[bytes, bytes | None] | None = None,
) -> list[LearnResult]:
    """Learn batch by batch, publishing after each (into ``changelog`` when given)."""
    results, start = [], 0
    for size in sizes:
        results.append(learner.learn_batch(case.columns(events[start : start + size])))
        flushed = learner.flush(NOW)
        if changelog is not None:
            changelog.update(flushed.state)
        start += size
    return results


def _live(changelog: dict[bytes, bytes | None]) -> list[tuple[bytes, bytes]]:
    """The records a restore loads: the latest of each key, tombstones dropped."""
    return [(key, value) for key, value in changelog.items() if value is not None]


def _keys(events: list[Any]) -> list[str]:
    return sorted({event[0] for event in events})


def _without_versions(records: list[Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in msgspec.structs.asdict(r).items() if k != "version"} for r in records]


def _rejections(results: list[LearnResult], sizes: Sequence[int]) -> list[tuple[int, str]]:
    out, start = [], 0
    for result, size in zip(results, sizes, strict=True):
        out += [
            (start + p, r)
            for p, r in zip(
                result.rejected_positions.tolist(), result.rejected_reasons, strict=True
            )
        ]
        start += size
    return out


def _approx_equal(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for left, right in zip(a, b, strict=True):
        for name, value in left.items():
            if isinstance(value, float):
                assert value == pytest.approx(right[name], rel=1e-9, abs=1e-12), name
            elif isinstance(value, list):
                assert value == pytest.approx(right[name], rel=1e-6, abs=1e-12), name
            else:
                assert value == right[name], name


def test_one_at_a_time_equals_many_at_once(case: Case) -> None:
    events = case.stream(1)
    keys = _keys(events)
    single, whole = case.make(), case.make()
    ones = [1] * len(events)
    rejected_single = _rejections(_run(case, single, events, ones), ones)
    rejected_whole = _rejections(_run(case, whole, events, [len(events)]), [len(events)])
    assert rejected_single == rejected_whole
    assert rejected_whole  # the streams are built to exercise rejections
    _approx_equal(
        _without_versions(single.versions(keys, NOW)), _without_versions(whole.versions(keys, NOW))
    )


def test_dump_load_then_continue_equals_never_dumped(case: Case) -> None:
    events = case.stream(2)
    keys = _keys(events)
    head, tail = events[:250], events[250:]
    straight = case.make()
    _run(case, straight, head, [50] * 5)
    _run(case, straight, tail, [30] * 5)
    interrupted = case.make()
    changelog: dict[bytes, bytes | None] = {}
    _run(case, interrupted, head, [50] * 5, changelog)
    restored = case.make()
    restored.load(_live(changelog))
    assert len(restored) == len(_keys(head))
    _run(case, restored, tail, [30] * 5)
    assert restored.versions(keys, NOW) == straight.versions(keys, NOW)  # bit for bit


def test_versions_count_publications_from_one(case: Case) -> None:
    events = case.stream(3)
    learner = case.make()
    expected: dict[str, int] = {}
    start = 0
    for size in [1, 7, 60, 2, 130, 200]:
        batch = events[start : start + size]
        result = learner.learn_batch(case.columns(batch))
        rejected = set(result.rejected_positions.tolist())
        applied = {e[0] for i, e in enumerate(batch) if i not in rejected}
        in_batch_order = dict.fromkeys(e[0] for e in batch)
        assert result.touched == [k for k in in_batch_order if k in applied]
        flushed = learner.flush(NOW)
        assert sorted(flushed.keys) == sorted(applied)
        assert len(flushed.values) == len(flushed.keys)
        for key in flushed.keys:
            expected[key] = expected.get(key, 0) + 1
        keys = sorted(expected)
        assert [v.version for v in learner.versions(keys, NOW)] == [expected[k] for k in keys]
        assert len(learner) == len(expected)
        start += size


def test_many_batches_between_flushes_publish_once_per_key(case: Case) -> None:
    events = case.stream(6)
    learner = case.make()
    _run_unflushed = [learner.learn_batch(case.columns(events[i : i + 40])) for i in (0, 40, 80)]
    assert all(r.touched for r in _run_unflushed)
    flushed = learner.flush(NOW)
    assert len(flushed.keys) == len(set(flushed.keys)) == len(learner)
    assert {v.version for v in learner.versions(list(learner), NOW)} == {1}
    assert learner.flush(NOW).keys == []  # nothing changed since


def test_forget_drops_a_key_and_it_starts_afresh(case: Case) -> None:
    events = case.stream(7)[:100]
    learner = case.make()
    _run(case, learner, events, [100])
    key = _keys(events)[0]
    assert learner.forget(key)
    assert key not in set(learner)
    assert not learner.forget(key)
    again = [e for e in events if e[0] == key][:1]
    learner.learn_batch(case.columns(again))
    learner.flush(NOW)
    assert learner.versions([key], NOW)[0].version == 1


def test_summary_is_a_dict(case: Case) -> None:
    learner = case.make()
    _run(case, learner, case.stream(8)[:50], [50])
    assert isinstance(learner.summary(), dict)


def test_empty_batch_changes_nothing(case: Case) -> None:
    learner = case.make()
    events = case.stream(4)[:20]
    _run(case, learner, events, [20])
    keys = _keys(events)
    before = learner.versions(keys, NOW)
    result = learner.learn_batch(case.columns([]))
    assert result.touched == []
    assert result.rejected_positions.shape == (0,)
    assert learner.flush(NOW).keys == []
    assert learner.versions(keys, NOW) == before


def test_rejected_positions_are_sorted_and_reasoned(case: Case) -> None:
    events = case.stream(5)
    result = _run(case, case.make(), events, [len(events)])[0]
    positions = result.rejected_positions.tolist()
    assert positions == sorted(set(positions))
    assert len(result.rejected_reasons) == len(positions)
    assert result.rejected_positions.dtype == np.int64
