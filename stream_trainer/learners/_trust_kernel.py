"""Compiled kernels of the trust learner and its dedupe store (numba, ``nogil``).

``learn`` is the hot path: one loop over a batch's feedback in arrival order doing, per
event, the dedupe lookup (and insert) in an open-addressing table held in numpy arrays,
the decay and fold of DESIGN section 3, the dirty mark and the refusal code. The table
maps a 64-bit (rule, event id) key to an entry index by linear probing from a home slot
chosen by the key's top 32 bits scaled to the table size (so the size need not be a power
of two and the byte bound is used fully).

The dedupe arrays are one set of columns per remembered id: ``keys`` (u64), ``rules``
(u64, the rule incarnation's hash), ``ts`` (f64, newest applied ts of that id) and the
table ``slots`` (u64: fingerprint and entry index) with two slots per entry of capacity
(load <= 0.5). ``meta`` holds ``[count, n_pending]``: entries in use, and how many entry
indices ``pending`` lists as changed since the last changelog flush.

Kernels stop, rather than grow, when the entry arrays are full: ``learn`` and
``merge_entries`` return the index of the first event they did not process, the caller
makes room (prune, grow or evict) and calls again from there. Room is thus made at the same
event of the stream whatever the batch boundaries.

`warm_up` compiles every kernel (numba caches them on disk, see ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

from stream_trainer.learners import hashing
from stream_trainer.learners._intrinsics import prefetch
from stream_trainer.learners.hashing import pair_key

DUPLICATE = 1  # refusal code of an event whose id its rule already applied in the window
_LOW = np.uint64(0xFFFFFFFF)
# Events ahead whose home slot is prefetched: a table larger than the caches costs one
# memory round trip per event, and a probe branch waiting on it would serialise the loop.
_PREFETCH_AHEAD = 16

U64Array = npt.NDArray[np.uint64]
I32Array = npt.NDArray[np.int32]
F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]


@numba.njit(cache=True, nogil=True, inline="always")
def _home(key: np.uint64, n_slots: int) -> np.int64:
    return np.int64(((key >> np.uint64(32)) * np.uint64(n_slots)) >> np.uint64(32))


@numba.njit(cache=True, nogil=True, inline="always")
def _find(key: np.uint64, keys: U64Array, slots: U64Array) -> np.int64:
    """The slot holding ``key``, or the empty slot where it would go.

    A slot holds ``fingerprint << 32 | (entry + 1)`` (0: empty), the fingerprint being the
    key's low 32 bits: probing compares within the slot array (a cache line holds 8 slots)
    and reads ``keys`` only on a fingerprint match, one cache miss per event, not two.
    """
    n_slots = slots.shape[0]
    fingerprint = key & _LOW
    s = _home(key, n_slots)
    while True:
        v = slots[s]
        if v == 0:
            return s
        if (v >> np.uint64(32)) == fingerprint and keys[_entry(v)] == key:
            return s
        s += 1
        if s == n_slots:
            s = np.int64(0)


@numba.njit(cache=True, nogil=True, inline="always")
def _entry(v: np.uint64) -> np.int64:
    """The entry a slot value points to, -1 for an empty slot."""
    return np.int64(v & _LOW) - 1


@numba.njit(cache=True, nogil=True, inline="always")
def _slot_value(key: np.uint64, entry: int) -> np.uint64:
    return ((key & _LOW) << np.uint64(32)) | np.uint64(entry + 1)


@numba.njit(cache=True, nogil=True)
def learn(
    start: int,
    rows: I64Array,
    id_hash: U64Array,
    ts: F64Array,
    success: npt.NDArray[np.bool_],
    weight: F64Array,
    rule_hash: U64Array,
    ref: F64Array,
    succ: F64Array,
    fail: F64Array,
    dirty: npt.NDArray[np.bool_],
    mark: npt.NDArray[np.int8],
    order: I64Array,
    n_order: I64Array,
    keys: U64Array,
    rules: U64Array,
    ets: F64Array,
    slots: U64Array,
    pending: I32Array,
    meta: I64Array,
    window: float,
    half_life: float,
    codes: npt.NDArray[np.uint8],
) -> int:
    """Apply events ``start..`` in order; returns where it stopped (len(rows) when done).

    ``mark``/``order`` list the batch's rules in order of first appearance (mark 1) and
    which of them applied an event (mark 2); the caller resets ``mark`` after the batch.
    """
    count, n_pending, k = meta[0], meta[1], n_order[0]
    capacity, n, n_slots = keys.shape[0], rows.shape[0], slots.shape[0]
    event_keys = np.empty(n, dtype=np.uint64)
    for j in range(start, n):
        event_keys[j] = pair_key(rule_hash[rows[j]], id_hash[j])
    i = start
    while i < n:
        if i + _PREFETCH_AHEAD < n:
            prefetch(slots, _home(event_keys[i + _PREFETCH_AHEAD], n_slots))
        r, t, key = rows[i], ts[i], event_keys[i]
        if mark[r] == 0:
            mark[r] = 1
            order[k] = r
            k += 1
        clock = ref[r]
        s = _find(key, keys, slots)
        e = _entry(slots[s])
        if e >= 0:
            seen = ets[e]
            if seen >= clock - window:
                codes[i] = DUPLICATE
                i += 1
                continue
            if t > seen:  # an id records the newest ts it was applied at
                ets[e] = t
                pending[n_pending] = e
                n_pending += 1
        else:
            if count == capacity:
                break
            keys[count], rules[count], ets[count] = key, rule_hash[r], t
            slots[s] = _slot_value(key, count)
            pending[n_pending] = count
            n_pending += 1
            count += 1
        if t > clock:  # move the rule's reference time; at T = -inf the factor is 0
            decay = np.exp2(-(t - clock) / half_life)
            succ[r] *= decay
            fail[r] *= decay
            ref[r] = t
            clock = t
        contribution = weight[i] * np.exp2(-(clock - t) / half_life)
        if success[i]:
            succ[r] += contribution
        else:
            fail[r] += contribution
        mark[r] = 2
        dirty[r] = True
        i += 1
    meta[0], meta[1], n_order[0] = count, n_pending, k
    return i


@numba.njit(cache=True, nogil=True)
def touched_rows(order: I64Array, n_order: I64Array, mark: npt.NDArray[np.int8]) -> I64Array:
    """After a batch: its rules that applied an event, in order of first appearance; resets
    ``mark`` to all zeros for the next batch."""
    k = 0
    for j in range(n_order[0]):
        r = order[j]
        if mark[r] == 2:
            order[k] = r
            k += 1
        mark[r] = 0
    return order[:k]


@numba.njit(cache=True, nogil=True)
def merge_entries(
    start: int,
    new_keys: U64Array,
    new_rules: U64Array,
    new_ts: F64Array,
    log: bool,
    keys: U64Array,
    rules: U64Array,
    ets: F64Array,
    slots: U64Array,
    pending: I32Array,
    meta: I64Array,
) -> int:
    """Insert entries ``start..`` (a known key keeps the newest ts); returns where it stopped.

    With ``log`` the inserted or changed entries are listed in ``pending``.
    """
    count, n_pending = meta[0], meta[1]
    capacity = keys.shape[0]
    i = start
    while i < new_keys.shape[0]:
        s = _find(new_keys[i], keys, slots)
        e = _entry(slots[s])
        if e < 0:
            if count == capacity:
                break
            e = count
            keys[e], rules[e], ets[e] = new_keys[i], new_rules[i], new_ts[i]
            slots[s] = _slot_value(new_keys[i], e)
            count += 1
        elif new_ts[i] > ets[e]:
            ets[e] = new_ts[i]
        else:
            i += 1
            continue
        if log:
            pending[n_pending] = e
            n_pending += 1
        i += 1
    meta[0], meta[1] = count, n_pending
    return i


@numba.njit(cache=True, nogil=True)
def rebuild(keys: U64Array, count: int, slots: U64Array) -> None:
    """Refill ``slots`` with entries ``0..count`` (after compaction or growth)."""
    slots[:] = 0
    n_slots = slots.shape[0]
    for e in range(count):
        if e + _PREFETCH_AHEAD < count:
            prefetch(slots, _home(keys[e + _PREFETCH_AHEAD], n_slots))
        slots[_find(keys[e], keys, slots)] = _slot_value(keys[e], e)


@numba.njit(cache=True, nogil=True)
def live_entries(
    rules: U64Array, ets: F64Array, count: int, rule_hash: U64Array, ref: F64Array, window: float
) -> npt.NDArray[np.bool_]:
    """Which entries can still refuse an event: their rule is held and ts >= its T - window."""
    size = 16
    while size < 2 * rule_hash.shape[0]:
        size *= 2
    mask = np.uint64(size - 1)
    table_hash = np.zeros(size, dtype=np.uint64)
    table_row = np.full(size, -1, dtype=np.int64)
    for r in range(rule_hash.shape[0]):
        s = np.int64(rule_hash[r] & mask)
        while table_row[s] >= 0 and table_hash[s] != rule_hash[r]:
            s = (s + 1) & (size - 1)
        table_hash[s], table_row[s] = rule_hash[r], r
    live = np.zeros(count, dtype=np.bool_)
    for e in range(count):
        s = np.int64(rules[e] & mask)
        while table_row[s] >= 0 and table_hash[s] != rules[e]:
            s = (s + 1) & (size - 1)
        row = table_row[s]
        live[e] = row >= 0 and ets[e] >= ref[row] - window
    return live


@numba.njit(cache=True, nogil=True)
def compact(
    keep: npt.NDArray[np.bool_],
    keys: U64Array,
    rules: U64Array,
    ets: F64Array,
    pending: npt.NDArray[np.int32],
    meta: I64Array,
    slots: U64Array,
) -> None:
    """Keep the entries where ``keep`` (in order), renumber ``pending``, rebuild the table."""
    count, n_pending = meta[0], meta[1]
    new_index = np.empty(count, dtype=np.int64)
    m = 0
    for e in range(count):
        if keep[e]:
            keys[m], rules[m], ets[m] = keys[e], rules[e], ets[e]
            new_index[e] = m
            m += 1
        else:
            new_index[e] = -1
    p = 0
    for j in range(n_pending):
        e = new_index[pending[j]]
        if e >= 0:
            pending[p] = e
            p += 1
    meta[0], meta[1] = m, p
    rebuild(keys, m, slots)


@numba.njit(cache=True, nogil=True)
def gather(idx: I64Array, keys: U64Array, rules: U64Array, ets: F64Array) -> U64Array:
    """Rows (key, rule, ts bits) of entries ``idx``: the changelog's entry layout."""
    out = np.empty((idx.shape[0], 3), dtype=np.uint64)
    bits = ets.view(np.uint64)
    for j in range(idx.shape[0]):
        e = idx[j]
        out[j, 0], out[j, 1], out[j, 2] = keys[e], rules[e], bits[e]
    return out


@numba.njit(cache=True, nogil=True)
def lookup(query: U64Array, keys: U64Array, slots: U64Array) -> I64Array:
    """Entry index of each queried key, -1 when absent."""
    out = np.empty(query.shape[0], dtype=np.int64)
    for i in range(query.shape[0]):
        out[i] = _entry(slots[_find(query[i], keys, slots)])
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel the trust learner uses.

    Called once at start, before the service reports ready, so no batch pays a compile. It
    drives a real learner through every path (growth, record merges, prune, eviction, load,
    forget): numba compiles per argument types, and these are the types the learner passes.
    """
    from datetime import UTC, datetime

    from stream_trainer.columns import FeedbackColumns
    from stream_trainer.learners.trust import TrustLearner

    hashing.warm_up()
    now = datetime.now(UTC)

    def columns(n: int, first: int, t0: float) -> FeedbackColumns:
        ids = [f"w{first + i}" for i in range(n)]
        ts = t0 + np.arange(n, dtype=np.float64)
        return FeedbackColumns(["a", "b"] * (n // 2), ids, ts, np.arange(n) % 3 == 0, np.ones(n))

    grows = TrustLearner()
    grows.learn_batch(columns(1100, 0, 0.0))  # past the first capacity: growth
    records = dict(grows.flush(now).state)
    grows.learn_batch(columns(600, 1100, 0.0))  # a small record merged into the last one
    records.update(grows.flush(now).state)
    bounded = TrustLearner(dedupe_window_s=16.0, dedupe_max_bytes=640)
    for k in range(4):  # prune and evict at a 16-id bound
        bounded.learn_batch(columns(12, 12 * k, 40.0 * k))
    records.update(bounded.flush(now).state)
    TrustLearner().load([(key, value) for key, value in records.items() if value is not None])
    grows.forget("a")
    grows.flush(now)
