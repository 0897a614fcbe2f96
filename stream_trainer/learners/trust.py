"""Rule trust: Beta-Bernoulli with forgetting in event time (DESIGN section 3).

Per rule we keep the reference time ``T`` (newest applied feedback ts; -inf before any)
and the decayed success and failure sums ``A`` and ``B`` *at T*; ``alpha = 1 + A`` and
``beta = 1 + B``. An event ``(t, w, success)`` first moves the rule to ``t`` if ``t > T``
(both sums times ``2^(-(t-T)/H)``), then adds ``w 2^(-(T-t)/H)`` to ``A`` or ``B``: the
numbers the closed form gives for the whole stream, whatever the batch boundaries (up to
rounding). A compiled kernel (`_trust_kernel.learn`) does this per event in arrival order.

Redelivered feedback is refused by ``event_id`` (reason ``duplicate_event_id``): an event is
a duplicate when the same rule already applied the same id at a ts no older than
``T - dedupe_window_s``, where ``T`` is the rule's event-time clock just before the event;
an applied id records the newest ts it was applied at. Tying the window to ``T`` (not to
processing time) keeps the rule deterministic and batch-invariant, and lets ids older than
the window be forgotten without changing results. The ids live in a `DedupeStore` bounded
by ``dedupe_max_bytes`` (see `dedupe` for what is forgotten at the bound).

A rule's ids are keyed by its *incarnation* hash: the stable hash of its id salted with the
task's forget epoch (how many rules it had forgotten when the rule's row was created),
stored in the rule's record. A rule that is forgotten and comes back is a new incarnation,
so ids of the old one (in memory or in old changelog records) can never refuse its events.

Changelog records (suffixes; the task prefixes its letter): ``:<rule_id>`` holds the rule's
row (format byte 1, then T, A, B, version, hash little-endian); ``#d:<bucket>:<seq>`` the
dedupe records; ``#epoch`` the forget epoch (format byte 1, then an i64). Rule records of
the previous release (msgpack arrays with the recent ids inline) are still read; their ids
move into the dedupe store.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from scipy.special import betaincinv

from stream_trainer.columns import FeedbackColumns
from stream_trainer.errors import ConfigError, StateFormatError
from stream_trainer.events import (
    Reason,
    RuleStatus,
    RuleVersion,
    encode_many,
    from_ts_us,
    ts_us,
)
from stream_trainer.learners import _trust_kernel as kernel
from stream_trainer.learners.base import Flushed, LearnResult
from stream_trainer.learners.dedupe import DedupeStore
from stream_trainer.learners.hashing import hash_strings, pair_keys, salted
from stream_trainer.learners.store import ColumnStore, Field, FloatArray, IntArray

DUPLICATE_EVENT_ID = Reason.DUPLICATE_EVENT_ID.value
FORMAT = 1  # first byte of a rule record
_LEGACY_FORMATS = range(0x90, 0xA0)  # msgpack fixarray headers: the previous release's records
_STATUSES: tuple[RuleStatus, ...] = ("active", "probation", "retired")
_EPOCH = b"#epoch"
_EPOCH_RECORD = struct.Struct("<Bq")
_FIELDS = (
    Field("ref", "f8", default=-np.inf),  # T
    Field("succ", "f8"),  # A at T
    Field("fail", "f8"),  # B at T
    Field("version", "i8"),  # versions published so far
    Field("hash", "u8"),  # incarnation hash (keys the rule's remembered ids)
    Field("published_us", "i8"),  # published_at of the last version
)


class _LegacyRuleState(msgspec.Struct, array_like=True, frozen=True):
    """A rule's changelog record as the previous release wrote it (msgpack)."""

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
        dedupe_max_bytes: int = 64 * 2**20,
    ) -> None:
        if not half_life_s > 0:
            raise ConfigError(f"trust_half_life_s must be > 0, got {half_life_s}")
        if not dedupe_window_s >= 0:
            raise ConfigError(f"dedupe_window_s must be >= 0, got {dedupe_window_s}")
        self.half_life_s = float(half_life_s)
        self.retire_below = float(retire_below)
        self.probation_below = float(probation_below)
        self.dedupe_window_s = float(dedupe_window_s)
        self._store = ColumnStore(_FIELDS, FORMAT)
        self._dedupe = DedupeStore(self.dedupe_window_s, dedupe_max_bytes)
        self._mark = np.zeros(0, dtype=np.int8)  # per-row scratch of learn_batch, all 0 between
        self._epoch = 0  # rules forgotten so far: salts the hash of new rule incarnations
        self._epoch_changed = False

    def __len__(self) -> int:
        return len(self._store)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    # -- learning -------------------------------------------------------------------------

    def learn_batch(self, columns: FeedbackColumns) -> LearnResult:
        """Apply one batch of feedback; see the module docstring for the semantics."""
        n = len(columns)
        if n == 0:
            return LearnResult()
        store, dedupe = self._store, self._dedupe
        ts, success, weight = (
            _writable(a) for a in (columns.ts_s, columns.success, columns.weight)
        )
        known = len(store)
        rows = store.rows_of_events(columns.rule_id)
        if len(store) > known:  # new rows, allocated at the end: their incarnation hashes
            names = hash_strings(store.keys[known:])
            store["hash"][known : len(store)] = salted(
                names, np.full(len(names), self._epoch, float)
            )
        id_hash = hash_strings(columns.event_id)
        if self._mark.shape[0] < store.dirty.shape[0]:
            self._mark = np.zeros(store.dirty.shape[0], dtype=np.int8)
        order, n_order = np.empty(n, dtype=np.int64), np.zeros(1, dtype=np.int64)
        codes = np.zeros(n, dtype=np.uint8)
        dedupe.reserve_pending(n)
        start = 0
        while True:
            start = kernel.learn(
                start, rows, id_hash, ts, success, weight,
                store["hash"], store["ref"], store["succ"], store["fail"], store.dirty,
                self._mark, order, n_order,
                dedupe.keys, dedupe.rules, dedupe.ts, dedupe.slots, dedupe.pending, dedupe.meta,
                self.dedupe_window_s, self.half_life_s, codes,
            )  # fmt: skip
            if start == n:
                break
            dedupe.make_room(store["hash"][: len(store)], store["ref"][: len(store)])
        touched = kernel.touched_rows(order, n_order, self._mark)
        rejected = np.flatnonzero(codes).astype(np.int64)
        return LearnResult(
            rejected_positions=rejected,
            rejected_reasons=[DUPLICATE_EVENT_ID] * rejected.shape[0],
            applied_rows=touched.astype(np.int64),
            row_keys=store.keys,
        )

    # -- publishing -----------------------------------------------------------------------

    def flush(self, published_at: datetime) -> Flushed:
        """Publish every rule changed since the last flush (+1 on its version) and the
        changelog records of the rules and of the dedupe store."""
        store = self._store
        keys, rows = store.dirty_keys()
        store["version"][rows] += 1
        store["published_us"][rows] = ts_us(published_at)
        values = encode_many(self._versions(keys, rows, published_at))
        state: list[tuple[bytes, bytes | None]] = [
            (b":" + key.encode(), value) for key, value in zip(keys, store.pack(rows), strict=True)
        ]
        state.extend(self._dedupe.flush())
        if self._epoch_changed:
            state.append((_EPOCH, _EPOCH_RECORD.pack(FORMAT, self._epoch)))
            self._epoch_changed = False
        store.clear_dirty()
        succ, fail = store["succ"][rows], store["fail"][rows]
        trust = (1.0 + succ) / (2.0 + succ + fail)
        return Flushed(keys, values, state, {"trust": trust})

    def current(self) -> Flushed:
        """Every rule's last published wire value (as restored or flushed), unchanged."""
        keys = self._store.keys
        rows = np.arange(len(keys), dtype=np.int64)
        at = [from_ts_us(us) for us in self._store["published_us"][rows].tolist()]
        return Flushed(list(keys), encode_many(self._versions(keys, rows, at)), [])

    def versions(self, keys: Sequence[str], published_at: datetime) -> list[RuleVersion]:
        """The RuleVersion of each of ``keys`` (all known) as learned so far; ``version`` is
        the number of the last publication (a rule changed since keeps it until `flush`)."""
        return self._versions(keys, self._store.lookup(keys), published_at)

    def _versions(
        self, keys: Sequence[str], rows: IntArray, published_at: datetime | list[datetime]
    ) -> list[RuleVersion]:
        store = self._store
        when = published_at if isinstance(published_at, list) else [published_at] * len(keys)
        succ, fail = store["succ"][rows], store["fail"][rows]
        alpha, beta = 1.0 + succ, 1.0 + fail
        trust = alpha / (alpha + beta)
        low = betaincinv(alpha, beta, 0.025)
        high = betaincinv(alpha, beta, 0.975)
        status = _status_codes(trust, high, self.retire_below, self.probation_below)
        trained_us = np.round(store["ref"][rows] * 1e6).astype(np.int64)
        return [
            RuleVersion(
                rule_id=key,
                version=version,
                alpha=a,
                beta=b,
                trust=tr,
                trust_low=lo,
                trust_high=hi,
                evidence=ev,
                status=_STATUSES[st],
                trained_through=from_ts_us(us),
                published_at=at,
            )
            for key, version, a, b, tr, lo, hi, ev, st, us, at in zip(
                keys,
                store["version"][rows].tolist(),
                alpha.tolist(),
                beta.tolist(),
                trust.tolist(),
                low.tolist(),
                high.tolist(),
                (succ + fail).tolist(),
                status.tolist(),
                trained_us.tolist(),
                when,
                strict=True,
            )
        ]

    def summary(self) -> dict[str, Any]:
        """Rules by status and the dedupe store's gauges."""
        n = len(self)
        alpha = 1.0 + self._store["succ"][:n]
        beta = 1.0 + self._store["fail"][:n]
        high = betaincinv(alpha, beta, 0.975)
        codes = _status_codes(alpha / (alpha + beta), high, self.retire_below, self.probation_below)
        counts = np.bincount(codes, minlength=len(_STATUSES))
        return {
            "status": dict(zip(_STATUSES, counts.tolist(), strict=True)),
            "dedupe_ids": len(self._dedupe),
            "dedupe_evicted": self._dedupe.evicted,
            "dedupe_bytes": self._dedupe.nbytes,
        }

    # -- state ----------------------------------------------------------------------------

    def load(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Insert or replace rules and remembered ids from changelog records (the latest
        value per key), in this release's format or the previous one's."""
        keys: list[str] = []
        values: list[bytes] = []
        legacy: list[tuple[str, bytes]] = []
        dedupe: list[tuple[bytes, bytes]] = []
        for suffix, value in records:
            if suffix == _EPOCH:
                self._epoch = _load_epoch(value)
                continue
            if suffix[:1] == b"#":
                dedupe.append((suffix, value))
                continue
            key = _rule_key(suffix)
            head = value[0] if value else None
            if head == FORMAT:
                keys.append(key)
                values.append(value)
            elif head in _LEGACY_FORMATS:
                legacy.append((key, value))
            else:
                raise StateFormatError(
                    f"rule record {suffix!r}: unknown format byte {head!r} (this release "
                    f"reads {FORMAT} and the previous msgpack format): written by a newer "
                    "release?"
                )
        if keys:
            self._store.unpack(keys, values)
        if legacy:
            self._load_legacy(legacy)
        self._dedupe.load(dedupe)

    def _load_legacy(self, records: list[tuple[str, bytes]]) -> None:
        decoder = msgspec.msgpack.Decoder(_LegacyRuleState)
        states: list[_LegacyRuleState] = []
        for key, value in records:
            try:
                states.append(decoder.decode(value))
            except msgspec.DecodeError as exc:
                raise StateFormatError(f"rule record {key!r} (msgpack format): {exc}") from exc
        keys = [key for key, _ in records]
        hashes = salted(hash_strings(keys), np.full(len(keys), -np.inf))
        self._store.assign(
            keys,
            {
                "ref": [s.ref_time for s in states],
                "succ": [s.success for s in states],
                "fail": [s.failure for s in states],
                "version": [s.version for s in states],
                "hash": hashes,
                # Not recorded before format 1: the nearest time known.
                "published_us": [round(s.ref_time * 1e6) for s in states],
            },
        )
        counts = [len(s.recent) for s in states]
        rules = np.repeat(hashes, counts)
        ids = [eid for s in states for eid in s.recent]
        ts = np.array([t for s in states for t in s.recent.values()], dtype=np.float64)
        # Logged at the next flush: the legacy record is replaced by a new one at the
        # rule's next publication, and its ids must not be lost with it.
        self._dedupe.insert(pair_keys(rules, hash_strings(ids)), rules, ts, log=True)

    def forget(self, key: str) -> bool:
        """Drop a rule and its remembered ids; False if it was unknown. The task writes the
        rule record's tombstone; the dedupe records that held its ids are rewritten at the
        next flush (stale copies elsewhere age out: they name the old incarnation)."""
        row = self._store.row(key)
        if row is None:
            return False
        self._dedupe.forget_rule(self._store["hash"][row])
        self._store.remove(key)
        self._epoch += 1
        self._epoch_changed = True
        return True


def _load_epoch(value: bytes) -> int:
    if len(value) != _EPOCH_RECORD.size or value[0] != FORMAT:
        raise StateFormatError(
            f"record {_EPOCH!r}: {len(value)} bytes, format byte {value[:1]!r}; this release "
            f"reads format {FORMAT} (written by a newer release?)"
        )
    epoch: int = _EPOCH_RECORD.unpack(value)[1]
    return epoch


def _rule_key(suffix: bytes) -> str:
    if suffix[:1] != b":":
        raise StateFormatError(f"trust learner record {suffix!r}: unknown key")
    try:
        return suffix[1:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StateFormatError(f"rule record {suffix!r}: key is not UTF-8") from exc


def _writable(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """A C-contiguous writable array: the one layout the kernels are compiled for."""
    if array.flags.c_contiguous and array.flags.writeable:
        return array
    return np.array(array, order="C")


def _status_codes(
    trust: FloatArray, high: FloatArray, retire_below: float, probation_below: float
) -> IntArray:
    return np.where(high < retire_below, 2, np.where(trust < probation_below, 1, 0))
