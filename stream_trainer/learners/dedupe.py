"""The event-id dedupe memory of one task's trust learner: bounded in bytes, changelogged.

It remembers, per (rule, event id), the newest ts at which that rule applied that id, as
flat numpy columns plus an open-addressing table (see `_trust_kernel`):

    ======================  ========  =============================================
    column                  bytes/id  why
    ======================  ========  =============================================
    key (u64)               8         64-bit hash of (rule incarnation, event id)
    rule (u64)              8         the rule incarnation's hash: its clock, forget
    ts (f64)                8         newest applied ts of the id (the window test)
    table slots (2 x u64)   16        load <= 0.5; a slot holds a 32-bit fingerprint
                                      of the key, so a probe reads no other array
    ======================  ========  =============================================

so **40 bytes per remembered id** (`BYTES_PER_ID`); ``max_bytes`` (the ``dedupe_max_bytes``
setting, 64 MiB = 1,677,721 ids by default) bounds the memory these hold. Besides, the ids
changed since the last flush are listed (4 bytes each, until the flush) and small changelog
records keep their keys (8 bytes each, < 2 x 2000 per bucket: their sizes halve).

Ids are grouped by event-time bucket ``floor(ts / bucket_s)``, ``bucket_s = window / 16``
(at least 1 s). When the arrays are full, ids dead by the window (ts < their rule's T -
window, which can never refuse anything again) are pruned first; if that frees too little
and the bound is reached (the store is still more than 7/8 full), **the oldest buckets by
event time are evicted whole** until the store is at most 3/4 full: those ids are
forgotten (a redelivery of one of them is applied again), counted in ``evicted``, and
their changelog records tombstoned. All of this happens when the arrays fill up, at the
same event whatever the batch boundaries.

64-bit keys: two different (rule, id) pairs share a key with probability ~2^-64 per pair,
which would make the second look like a duplicate (~1e-7 for a million events against two
million remembered ids).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from stream_trainer.errors import ConfigError
from stream_trainer.learners import _trust_kernel as kernel
from stream_trainer.learners._dedupe_log import ENTRY, DedupeLog, Entries, Records

BYTES_PER_ID = 40
_MIN_CAPACITY = 1024
_MIN_IDS = 16
# At the bound, a prune that leaves the store at most 7/8 full is enough (a prune is O(n),
# so at least n/8 inserts follow it); otherwise the oldest buckets are evicted down to 3/4.
_PRUNED_ENOUGH = 0.875
_LOW_WATER = 0.75

U64Array = npt.NDArray[np.uint64]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]


class DedupeStore:
    """Remembered (rule, event id) -> newest applied ts, bounded by ``max_bytes``."""

    def __init__(self, window_s: float, max_bytes: int) -> None:
        if max_bytes // BYTES_PER_ID < _MIN_IDS:
            raise ConfigError(
                f"dedupe_max_bytes must be >= {_MIN_IDS * BYTES_PER_ID} "
                f"({BYTES_PER_ID} bytes per remembered id), got {max_bytes}"
            )
        self.window_s = float(window_s)
        finite = np.isfinite(self.window_s)
        self.bucket_s = max(self.window_s / 16.0, 1.0) if finite else 86_400.0
        self.max_ids = min(max_bytes // BYTES_PER_ID, 2**31 - 1)
        self.evicted = 0  # ids forgotten at the bound, in total
        self.log = DedupeLog()
        capacity = min(_MIN_CAPACITY, self.max_ids)
        self.keys: U64Array = np.zeros(capacity, dtype=np.uint64)
        self.rules: U64Array = np.zeros(capacity, dtype=np.uint64)
        self.ts: F64Array = np.zeros(capacity, dtype=np.float64)
        self.slots = np.zeros(2 * capacity, dtype=np.uint64)
        self.pending = np.zeros(64, dtype=np.int32)  # entries changed since the last flush
        self.meta = np.zeros(2, dtype=np.int64)  # [count, n_pending], updated by the kernels

    def __len__(self) -> int:
        return int(self.meta[0])

    @property
    def nbytes(self) -> int:
        arrays = (self.keys, self.rules, self.ts, self.slots, self.pending, self.meta)
        return sum(a.nbytes for a in arrays) + 8 * self.log.small_keys

    def bucket_ids(self, ts: F64Array) -> I64Array:
        return np.floor(ts / self.bucket_s).astype(np.int64)

    def reserve_pending(self, n: int) -> None:
        """Room in ``pending`` for ``n`` more changed entries (kernels do not grow it)."""
        need = int(self.meta[1]) + n
        if need > self.pending.shape[0]:
            bigger = np.zeros(max(need, 2 * self.pending.shape[0]), dtype=np.int32)
            bigger[: self.meta[1]] = self.pending[: self.meta[1]]
            self.pending = bigger

    # -- room -----------------------------------------------------------------------------

    def make_room(self, rule_hashes: U64Array | None, clocks: F64Array | None) -> None:
        """The arrays are full: prune dead ids (given every rule's hash and clock T), else
        grow, else evict the oldest buckets."""
        capacity = self.keys.shape[0]
        if rule_hashes is not None and clocks is not None:
            self.prune(rule_hashes, clocks)
            enough = capacity // 2 if capacity < self.max_ids else int(_PRUNED_ENOUGH * capacity)
            if len(self) <= enough:
                return
        if capacity < self.max_ids:
            self._resize(min(2 * capacity, self.max_ids))
        elif len(self) > int(_LOW_WATER * self.max_ids):
            self._evict(int(_LOW_WATER * self.max_ids))

    def prune(self, rule_hashes: U64Array, clocks: F64Array) -> None:
        """Drop ids dead by the window, and those of rules no longer held (forgotten)."""
        live = kernel.live_entries(
            self.rules, self.ts, len(self), rule_hashes, clocks, self.window_s
        )
        self._compact(live)
        uniq, counts = np.unique(self.bucket_ids(self.ts[: len(self)]), return_counts=True)
        self.log.reconcile(dict(zip(uniq.tolist(), counts.tolist(), strict=True)))

    def forget_rule(self, rule_hash: np.uint64) -> None:
        """Drop a rule's ids; the buckets that held them are rewritten at the next flush."""
        n = len(self)
        mine = self.rules[:n] == rule_hash
        if mine.any():
            self.log.rewrite.update(np.unique(self.bucket_ids(self.ts[:n][mine])).tolist())
            self._compact(~mine)

    def _evict(self, low: int) -> None:
        n = len(self)
        buckets = self.bucket_ids(self.ts[:n])
        uniq, counts = np.unique(buckets, return_counts=True)
        last = int(uniq[np.searchsorted(np.cumsum(counts), n - low)])
        keep = buckets > last
        self.evicted += n - int(keep.sum())
        self._compact(keep)
        self.log.evict_through(last)

    def _compact(self, keep: npt.NDArray[np.bool_]) -> None:
        """Keep the entries where ``keep`` (in order), then rebuild the table."""
        if not keep.all():
            kernel.compact(
                keep, self.keys, self.rules, self.ts, self.pending, self.meta, self.slots
            )

    def _resize(self, capacity: int) -> None:
        n = len(self)
        for name in ("keys", "rules", "ts"):
            old = getattr(self, name)
            new = np.zeros(capacity, dtype=old.dtype)
            new[:n] = old[:n]
            setattr(self, name, new)
        self.slots = np.empty(2 * capacity, dtype=np.uint64)
        kernel.rebuild(self.keys, n, self.slots)

    # -- changelog ------------------------------------------------------------------------

    def flush(self) -> Records:
        """Changelog records for what changed since the last flush (tombstones included)."""
        appended = self._entries(_distinct(self.pending[: self.meta[1]]))
        rewritten: dict[int, Entries] = {}
        if self.log.rewrite:
            buckets = self.bucket_ids(self.ts[: len(self)])
            chosen = np.flatnonzero(np.isin(buckets, np.fromiter(self.log.rewrite, np.int64)))
            chosen = chosen[np.argsort(buckets[chosen], kind="stable")]
            rewritten = {b: _EMPTY for b in self.log.rewrite}
            uniq, starts = np.unique(buckets[chosen], return_index=True)
            parts = np.split(chosen, starts[1:]) if chosen.shape[0] else []
            for b, part in zip(uniq.tolist(), parts, strict=True):
                rewritten[b] = self._entries(part)
        records = self.log.flush(
            appended, self.bucket_ids(appended["ts"]), rewritten, self._resolve
        )
        self.meta[1] = 0
        return records

    def load(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Restore from dedupe records (latest value per key); the newest ts per id wins."""
        parts = [self.log.load(suffix, value) for suffix, value in records]
        if parts:
            entries = np.concatenate(parts)
            self.insert(entries["key"], entries["rule"], entries["ts"], log=False)

    def insert(self, keys: U64Array, rules: U64Array, ts: F64Array, *, log: bool) -> None:
        """Merge entries in (newest ts per key); ``log``: write them at the next flush."""
        keys, rules = np.ascontiguousarray(keys), np.ascontiguousarray(rules)
        ts = np.ascontiguousarray(ts)
        if log:
            self.reserve_pending(keys.shape[0])
        start = 0
        while start < keys.shape[0]:
            start = kernel.merge_entries(
                start, keys, rules, ts, log,
                self.keys, self.rules, self.ts, self.slots, self.pending, self.meta,
            )  # fmt: skip
            if start < keys.shape[0]:
                self.make_room(None, None)

    def _entries(self, idx: I64Array) -> Entries:
        rows = kernel.gather(
            np.ascontiguousarray(idx, dtype=np.int64), self.keys, self.rules, self.ts
        )
        return rows.view(ENTRY).reshape(idx.shape[0])

    def _resolve(self, keys: U64Array, bucket: int) -> Entries:
        """Current entries of ``keys`` that still live in ``bucket`` (for record merges)."""
        idx = kernel.lookup(np.ascontiguousarray(keys), self.keys, self.slots)
        entries = self._entries(idx[idx >= 0])
        current: Entries = entries[self.bucket_ids(entries["ts"]) == bucket]
        return current


_EMPTY: Entries = np.empty(0, dtype=ENTRY)


def _distinct(values: npt.NDArray[np.int32]) -> I64Array:
    """Sorted distinct values (np.unique's hash path is slow on large int arrays)."""
    ordered = np.sort(values).astype(np.int64)
    if ordered.shape[0] < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
