"""decode_batch: the one-call fast path gives exactly what record-by-record decoding gives."""

from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_trainer import batching
from stream_trainer.batching import PendingBatch, TrainingBatch, decode_batch


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _obs(i: int, variable: str = "spx") -> bytes:
    return (
        f'{{"event_id":"o{i}","variable":"{variable}",'
        f'"ts":"2026-01-01T00:00:{i % 60:02d}Z","value":{i}.5}}'
    ).encode()


# Values that are each wrong alone but could fool a join into the right element count.
TRICKY: list[tuple[bytes | None, bytes | None]] = [
    (b"spx", _obs(1) + b"," + _obs(2)),  # two documents in one value
    (b"spx", b""),
    (b"spx", _obs(3) + b"]"),
    (b"spx", b"[" + _obs(4)),
    (b"spx", b" "),
    (b"spx", _obs(5).replace(b"spx", "spx\u00e9".encode())),  # non-ASCII, key mismatch
    (b"spx", None),  # a keyed tombstone: forget
    (None, None),
    (b"other", _obs(6)),  # key mismatch
    (b"spx", b"42"),
    (b"spx", _obs(7)),  # valid
]


def _batch(pairs: list[tuple[bytes | None, bytes | None]]) -> PendingBatch:
    records = [Rec("obs", 0, i, k, v) for i, (k, v) in enumerate(pairs)]
    return PendingBatch(0, 0, 0.0, observations=records)  # type: ignore[arg-type]


def _summary(batch: TrainingBatch) -> tuple[object, ...]:
    return (
        batch.observations.variable,
        batch.observations.ts_us.tolist(),
        batch.observations.value.tolist(),
        [r.offset for r in batch.observation_records],
        [(inv.record.offset, inv.reason) for inv in batch.invalid],
        [(f.position, f.key) for f in batch.forgets],
    )


def _slow(pending: PendingBatch, max_event_bytes: int = 65_536) -> TrainingBatch:
    with mock.patch.object(batching, "_decode_valid_batch", return_value=None):
        return decode_batch(pending, max_event_bytes)


def test_valid_records_take_the_fast_path() -> None:
    pending = _batch([(b"spx", _obs(i)) for i in range(50)])
    batch = decode_batch(pending, 65_536)
    assert len(batch.observations) == 50 and not batch.invalid


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(range(len(TRICKY))), max_size=12))
def test_fast_path_equals_record_by_record(picks: list[int]) -> None:
    pending = _batch([TRICKY[i] for i in picks])
    assert _summary(decode_batch(pending, 65_536)) == _summary(_slow(pending))


def test_oversized_value_is_refused_on_both_paths() -> None:
    pending = _batch([(b"spx", _obs(1)), (b"spx", _obs(2) + b" " * 100)])
    fast = decode_batch(pending, 120)
    assert [inv.reason for inv in fast.invalid] == ["oversized"]
    assert _summary(fast) == _summary(_slow(pending, 120))
