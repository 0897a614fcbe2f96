"""Micro-batcher: size and linger closing, offsets, task isolation (pure logic)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_trainer.batching import MicroBatcher, PendingBatch


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None


def recs(topic: str, partition: int, start: int, n: int) -> list[Rec]:
    return [Rec(topic, partition, start + i) for i in range(n)]


def test_closes_at_max_events_and_splits_large_fetches() -> None:
    b = MicroBatcher(max_events=10, linger_ms=50)
    closed = b.add(0, 0, "observation", recs("obs", 0, 0, 25), now=0.0)
    assert [len(c) for c in closed] == [10, 10]
    assert b.open_records == 5
    assert closed[1].next_offsets() == {("obs", 0): 20}


def test_closes_after_linger_from_first_event() -> None:
    b = MicroBatcher(max_events=100, linger_ms=50)
    b.add(1, 0, "feedback", recs("fb", 1, 0, 3), now=10.0)
    assert b.due(10.049) == []
    assert b.seconds_until_due(10.0) == pytest.approx(0.05)
    b.add(1, 0, "observation", recs("obs", 1, 7, 2), now=10.04)  # does not extend linger
    (batch,) = b.due(10.05)
    assert len(batch) == 5
    assert batch.next_offsets() == {("fb", 1): 3, ("obs", 1): 9}
    assert batch.offset_span() == "1:7-8:0-2"
    assert b.seconds_until_due(11.0) is None


def test_tasks_are_batched_separately_and_discard_drops_one() -> None:
    b = MicroBatcher(max_events=100, linger_ms=50)
    b.add(0, 0, "observation", recs("obs", 0, 0, 3), now=0.0)
    b.add(1, 0, "observation", recs("obs", 1, 0, 4), now=0.0)
    assert b.discard(0) == 3
    (batch,) = b.due(now=1.0)
    assert batch.task == 1 and len(batch) == 4


def test_new_generation_starts_a_new_batch() -> None:
    b = MicroBatcher(max_events=100, linger_ms=50)
    b.add(0, 0, "observation", recs("obs", 0, 0, 3), now=0.0)
    b.add(0, 1, "observation", recs("obs", 0, 0, 2), now=0.0)  # after a reset: old dropped
    (batch,) = b.due(now=1.0)
    assert batch.generation == 1 and len(batch) == 2


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30), st.integers(1, 17))
def test_no_record_lost_or_duplicated_whatever_the_fetch_sizes(sizes: list[int], cap: int) -> None:
    b = MicroBatcher(max_events=cap, linger_ms=50)
    out: list[PendingBatch] = []
    offset = 0
    for n in sizes:
        out += b.add(0, 0, "observation", recs("obs", 0, offset, n), now=0.0)
        offset += n
    out += b.due(now=1.0)
    seen = [r.offset for batch in out for r in batch.observations]
    assert seen == list(range(offset))
    assert all(len(batch) <= cap for batch in out)
