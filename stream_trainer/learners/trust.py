"""Rule trust: Beta-Bernoulli with forgetting in event time (DESIGN section 3).

Per rule we keep the reference time ``T`` (newest applied feedback ts) and the decayed
success and failure sums ``A`` and ``B`` *at T*; ``alpha = 1 + A`` and ``beta = 1 + B``.
Moving a rule from ``T`` to ``T' >= T`` multiplies both sums by ``2^(-(T'-T)/H)``, so a batch
is folded in as ``A' = A 2^(-(T'-T)/H) + sum_i w_i 2^(-(T'-t_i)/H)``: the same numbers the
closed form gives for the whole stream, whatever the batch boundaries (up to rounding).

Redelivered feedback is refused by ``event_id`` (reason ``duplicate_event_id``): an event is
a duplicate when the same rule already applied the same id at a ts no older than
``T - dedupe_window_s``, where ``T`` is the rule's event-time clock just before the event.
Tying the window to ``T`` (not to processing time) keeps the rule deterministic and
batch-invariant, and lets ids older than the window be forgotten without changing results.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec
import numpy as np
from scipy.special import betaincinv

from stream_trainer.columns import FeedbackColumns
from stream_trainer.errors import ConfigError, DecodeError
from stream_trainer.events import Reason, RuleStatus, RuleVersion, from_ts_us
from stream_trainer.learners._grouping import (
    BoolArray,
    FloatArray,
    Groups,
    IntArray,
    RowIndex,
    first_appearance_codes,
    grown,
)
from stream_trainer.learners.base import LearnResult

DUPLICATE_EVENT_ID = Reason.DUPLICATE_EVENT_ID.value
_PRUNE_MIN = 8  # recent-id dicts smaller than this are never worth pruning
_STATUSES: tuple[RuleStatus, ...] = ("active", "probation", "retired")


class _RuleState(msgspec.Struct, array_like=True, frozen=True):
    """One rule's changelog record (msgpack)."""

    ref_time: float
    success: float
    failure: float
    version: int
    recent: dict[str, float]


class TrustLearner:
    """Trust of many rules, one micro-batch of feedback at a time."""

    def __init__(
        self,
        half_life_s: float = 2_592_000.0,
        retire_below: float = 0.35,
        probation_below: float = 0.5,
        dedupe_window_s: float = 86_400.0,
    ) -> None:
        if not half_life_s > 0:
            raise ConfigError(f"trust_half_life_s must be > 0, got {half_life_s}")
        if not dedupe_window_s >= 0:
            raise ConfigError(f"dedupe_window_s must be >= 0, got {dedupe_window_s}")
        self.half_life_s = float(half_life_s)
        self.retire_below = float(retire_below)
        self.probation_below = float(probation_below)
        self.dedupe_window_s = float(dedupe_window_s)
        self._index = RowIndex()
        self._ref: FloatArray = np.empty(0)  # T per row; -inf before any feedback
        self._succ: FloatArray = np.empty(0)  # A at T
        self._fail: FloatArray = np.empty(0)  # B at T
        self._version: IntArray = np.empty(0, dtype=np.int64)
        self._id_count: IntArray = np.empty(0, dtype=np.int64)  # upper bound of len(recent)
        self._prune_at: IntArray = np.empty(0, dtype=np.int64)
        self._recent: list[dict[str, float]] = []  # row -> {event_id: newest applied ts}

    def __len__(self) -> int:
        return len(self._index)

    # -- learning -------------------------------------------------------------------------

    def learn_batch(self, columns: FeedbackColumns) -> LearnResult:
        """Apply one batch of feedback; see the module docstring for the semantics."""
        if len(columns) == 0:
            return LearnResult(touched=[])
        keys, codes = first_appearance_codes(columns.rule_id)
        rows = self._rows_for(keys)
        applied = self._dedupe(columns, codes, rows)
        touched = self._fold(columns, codes, rows, applied)
        self._maybe_prune(rows[touched])
        rejected = np.flatnonzero(~applied).astype(np.int64)
        return LearnResult(
            touched=[keys[c] for c in touched.tolist()],
            rejected_positions=rejected,
            rejected_reasons=[DUPLICATE_EVENT_ID] * rejected.shape[0],
        )

    def _rows_for(self, keys: Sequence[str]) -> IntArray:
        rows, is_new = self._index.assign(keys)
        if is_new.any():
            size = len(self._index)
            self._ref = grown(self._ref, size)
            self._succ = grown(self._succ, size)
            self._fail = grown(self._fail, size)
            self._version = grown(self._version, size)
            self._id_count = grown(self._id_count, size)
            self._prune_at = grown(self._prune_at, size)
            new = rows[is_new]
            self._ref[new] = -np.inf
            self._succ[new] = 0.0
            self._fail[new] = 0.0
            self._version[new] = 0
            self._id_count[new] = 0
            self._prune_at[new] = _PRUNE_MIN
            self._recent.extend({} for _ in range(new.shape[0]))
        return rows

    def _dedupe(self, columns: FeedbackColumns, codes: IntArray, rows: IntArray) -> BoolArray:
        """Which events to apply; records the applied ids in the rules' recent-id dicts.

        This is the one per-event Python step: a dict membership test per event (and an
        insert per applied one). Only rules where an id repeats (in the batch or against
        the recent ids) take the exact sequential path, so the common case stays cheap.
        """
        n = len(columns)
        event_ids = columns.event_id
        event_rows = rows[codes].tolist()
        stores = list(map(self._recent.__getitem__, event_rows))
        ts = columns.ts_s.tolist()
        applied = np.ones(n, dtype=np.bool_)
        # map() and set() keep both scans at C speed. Ids are meant to be unique, so an id
        # repeated anywhere in the batch (even on another rule) just takes the exact path.
        if len(set(event_ids)) < n or any(map(dict.__contains__, stores, event_ids)):
            affected = self._affected_codes(codes, stores, event_rows, event_ids)
            groups = Groups.of(codes, rows.shape[0])
            for code in sorted(affected):
                self._dedupe_rule(code, rows, groups, event_ids, ts, applied)
            fresh = (~np.isin(codes, np.fromiter(affected, dtype=np.int64))).tolist()
            fresh_ids = [itertools.compress(column, fresh) for column in (stores, event_ids, ts)]
            collections.deque(map(dict.__setitem__, *fresh_ids), maxlen=0)
        else:
            # Every id is new to its rule and unique in the batch: record them all.
            collections.deque(map(dict.__setitem__, stores, event_ids, ts), maxlen=0)
        return applied

    @staticmethod
    def _affected_codes(
        codes: IntArray,
        stores: Sequence[dict[str, float]],
        event_rows: Sequence[int],
        event_ids: Sequence[str],
    ) -> set[int]:
        """Codes of the rules with an id seen before (in the batch or the recent ids)."""
        affected: set[int] = set()
        seen: set[tuple[int, str]] = set()
        for code, store, row, eid in zip(
            codes.tolist(), stores, event_rows, event_ids, strict=True
        ):
            if eid in store or (row, eid) in seen:
                affected.add(code)
            seen.add((row, eid))
        return affected

    def _dedupe_rule(
        self,
        code: int,
        rows: IntArray,
        groups: Groups,
        event_ids: Sequence[str],
        ts: Sequence[float],
        applied: BoolArray,
    ) -> None:
        """Exact sequential dedupe of one rule's events in this batch (rare path)."""
        row = int(rows[code])
        store = self._recent[row]
        clock = float(self._ref[row])
        start = int(groups.starts[code])
        for i in groups.order[start : start + int(groups.counts[code])].tolist():
            eid, t = event_ids[i], ts[i]
            seen = store.get(eid)
            if seen is not None and seen >= clock - self.dedupe_window_s:
                applied[i] = False
                continue
            store[eid] = t if seen is None else max(seen, t)
            clock = max(clock, t)

    def _fold(
        self, columns: FeedbackColumns, codes: IntArray, rows: IntArray, applied: BoolArray
    ) -> IntArray:
        """Fold the applied events into A, B and T; returns the touched codes (sorted)."""
        positions = np.flatnonzero(applied)
        ev_codes = codes[positions]
        ev_ts = columns.ts_s[positions]
        n_keys = rows.shape[0]
        touched = np.flatnonzero(np.bincount(ev_codes, minlength=n_keys))
        old_ref = self._ref[rows]
        new_ref = old_ref.copy()
        np.maximum.at(new_ref, ev_codes, ev_ts)
        contrib = columns.weight[positions] * np.exp2(
            -(new_ref[ev_codes] - ev_ts) / self.half_life_s
        )
        success = columns.success[positions]
        add_succ = np.bincount(ev_codes, weights=np.where(success, contrib, 0.0), minlength=n_keys)
        add_fail = np.bincount(ev_codes, weights=np.where(success, 0.0, contrib), minlength=n_keys)
        t_rows = rows[touched]
        # A rule's first batch has T = -inf: the decay factor is exactly 0 and A is 0.
        decay = np.exp2(-(new_ref[touched] - old_ref[touched]) / self.half_life_s)
        self._succ[t_rows] = self._succ[t_rows] * decay + add_succ[touched]
        self._fail[t_rows] = self._fail[t_rows] * decay + add_fail[touched]
        self._ref[t_rows] = new_ref[touched]
        self._version[t_rows] += 1
        self._id_count[rows] += np.bincount(ev_codes, minlength=n_keys)
        return touched

    def _maybe_prune(self, rows: IntArray) -> None:
        """Drop ids outside the window; amortised: a dict is scanned when it doubled."""
        due = rows[self._id_count[rows] >= self._prune_at[rows]]
        for row in due.tolist():
            kept = self._fresh_ids(row)
            self._recent[row] = kept
            self._id_count[row] = len(kept)
            self._prune_at[row] = max(_PRUNE_MIN, 2 * len(kept))

    def _fresh_ids(self, row: int) -> dict[str, float]:
        horizon = float(self._ref[row]) - self.dedupe_window_s
        return {eid: t for eid, t in self._recent[row].items() if t >= horizon}

    # -- publishing and state -------------------------------------------------------------

    def versions(self, keys: Sequence[str], published_at: datetime) -> list[RuleVersion]:
        """The RuleVersion records of ``keys`` (all known), as of their last batch."""
        rows = self._index.lookup(keys)
        alpha = 1.0 + self._succ[rows]
        beta = 1.0 + self._fail[rows]
        trust = alpha / (alpha + beta)
        low = betaincinv(alpha, beta, 0.025)
        high = betaincinv(alpha, beta, 0.975)
        evidence = self._succ[rows] + self._fail[rows]
        status = _status(trust, high, self.retire_below, self.probation_below)
        trained_us = np.round(self._ref[rows] * 1e6).astype(np.int64)
        return [
            RuleVersion(
                rule_id=key,
                version=int(version),
                alpha=float(a),
                beta=float(b),
                trust=float(tr),
                trust_low=float(lo),
                trust_high=float(hi),
                evidence=ev,
                status=st,
                trained_through=from_ts_us(int(us)),
                published_at=published_at,
            )
            for key, version, a, b, tr, lo, hi, ev, st, us in zip(
                keys,
                self._version[rows].tolist(),
                alpha.tolist(),
                beta.tolist(),
                trust.tolist(),
                low.tolist(),
                high.tolist(),
                evidence.tolist(),
                status,
                trained_us.tolist(),
                strict=True,
            )
        ]

    def status_counts(self) -> dict[str, int]:
        """How many of the learner's rules are in each status (for the rules gauge)."""
        n = len(self)
        alpha = 1.0 + self._succ[:n]
        beta = 1.0 + self._fail[:n]
        high = betaincinv(alpha, beta, 0.975)
        codes = _status_codes(alpha / (alpha + beta), high, self.retire_below, self.probation_below)
        counts = np.bincount(codes, minlength=len(_STATUSES))
        return dict(zip(_STATUSES, counts.tolist(), strict=True))

    def dump(self, keys: Sequence[str]) -> list[tuple[str, bytes]]:
        """Changelog records (key, msgpack bytes) of ``keys``; ids outside the window are
        left out, as they can no longer reject anything."""
        rows = self._index.lookup(keys)
        encode = msgspec.msgpack.encode
        return [
            (
                key,
                encode(
                    _RuleState(
                        ref_time=float(self._ref[row]),
                        success=float(self._succ[row]),
                        failure=float(self._fail[row]),
                        version=int(self._version[row]),
                        recent=self._fresh_ids(row),
                    )
                ),
            )
            for key, row in zip(keys, rows.tolist(), strict=True)
        ]

    def load(self, records: Iterable[tuple[str, bytes]]) -> None:
        """Insert or replace rules from changelog records made by ``dump`` (later ones win).

        Decoded one by one, stored in one vectorised step: a restore loads every model of
        a task at once, and per-key row allocation would dominate it.
        """
        decoder = msgspec.msgpack.Decoder(_RuleState)
        keys: list[str] = []
        states: list[_RuleState] = []
        for key, payload in records:
            try:
                states.append(decoder.decode(payload))
            except msgspec.DecodeError as exc:
                raise DecodeError("invalid_state", f"rule {key!r}: {exc}") from exc
            keys.append(key)
        if not keys:
            return
        rows = self._rows_for(keys)
        self._ref[rows] = [st.ref_time for st in states]
        self._succ[rows] = [st.success for st in states]
        self._fail[rows] = [st.failure for st in states]
        self._version[rows] = [st.version for st in states]
        counts = np.array([len(st.recent) for st in states], dtype=np.int64)
        self._id_count[rows] = counts
        self._prune_at[rows] = np.maximum(_PRUNE_MIN, 2 * counts)
        for row, state in zip(rows.tolist(), states, strict=True):
            self._recent[row] = dict(state.recent)


def _status_codes(
    trust: FloatArray, high: FloatArray, retire_below: float, probation_below: float
) -> IntArray:
    return np.where(high < retire_below, 2, np.where(trust < probation_below, 1, 0))


def _status(
    trust: FloatArray, high: FloatArray, retire_below: float, probation_below: float
) -> list[RuleStatus]:
    codes = _status_codes(trust, high, retire_below, probation_below)
    return [_STATUSES[code] for code in codes.tolist()]
