"""Per-variable online AR(p) forecasters by recursive least squares (DESIGN section 3).

A batch is applied by one compiled loop over its observations in arrival order
(`_forecaster_kernel.learn`), over state in a `ColumnStore`. An observation is applied only
if its ts is strictly newer than the last applied one of its variable; otherwise it is
refused as ``duplicate`` (same ts and value as the last applied) or ``out_of_order``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from stream_trainer.columns import ObservationColumns
from stream_trainer.errors import ConfigError, StateFormatError
from stream_trainer.events import ModelVersion, Reason, from_ts_us, ts_us
from stream_trainer.learners import _forecaster_kernel as kernel
from stream_trainer.learners.base import Flushed, LearnResult
from stream_trainer.learners.store import ColumnStore, Field, IntArray

FORMAT = 1  # changelog record format byte; 0x90-0x9f is the legacy msgpack record
_REASONS = {
    kernel.DUPLICATE: Reason.DUPLICATE.value,
    kernel.OUT_OF_ORDER: Reason.OUT_OF_ORDER.value,
}


class _LegacyModelState(msgspec.Struct, array_like=True, frozen=True):
    """The changelog record of releases before format 1 (msgpack); ``p`` row-major."""

    order: int
    theta: list[float]
    p: list[float]
    history: list[float]  # most recent first
    count: int
    err_sum: float
    weight_sum: float
    base_err_sum: float
    last_ts_us: int
    last_value: float
    version: int


def _fields(order: int, initial_p: float) -> list[Field]:
    width = order + 1
    return [
        Field("order", "i8", default=order),
        Field("theta", "f8", (width,)),
        Field("p", "f8", (width, width), initial_p, identity=True),
        Field("history", "f8", (order,)),  # column 0 is y_{t-1}
        Field("count", "i8"),  # = n_observations
        Field("sums", "f8", (3,)),  # S, W, S_base
        Field("last_ts", "i8"),
        Field("last_value", "f8"),
        Field("version", "i8"),
        Field("published_us", "i8"),  # published_at of the last version
    ]


class Forecaster:
    """AR(p) RLS forecasters of many variables, one micro-batch of observations at a time."""

    def __init__(
        self, order: int = 3, forgetting: float = 0.995, initial_p: float = 1000.0
    ) -> None:
        if order < 1:
            raise ConfigError(f"ar_order must be >= 1, got {order}")
        if not 0.0 < forgetting <= 1.0:
            raise ConfigError(f"rls_forgetting must be in (0, 1], got {forgetting}")
        if not initial_p > 0:
            raise ConfigError(f"rls_initial_p must be > 0, got {initial_p}")
        self.order = order
        self.forgetting = float(forgetting)
        self.initial_p = float(initial_p)
        self.store = ColumnStore(_fields(order, self.initial_p), FORMAT)

    def __len__(self) -> int:
        return len(self.store)

    def __iter__(self) -> Iterator[str]:
        return iter(self.store)

    def learn_batch(self, columns: ObservationColumns) -> LearnResult:
        """Apply one batch of observations; see the module docstring for the semantics."""
        if len(columns) == 0:
            return LearnResult()
        rows = self.store.rows_of_events(columns.variable)
        c = self.store.columns
        outcome = kernel.learn(
            rows,
            columns.ts_us,
            columns.value,
            c["theta"],
            c["p"],
            c["history"],
            c["count"],
            c["sums"],
            c["last_ts"],
            c["last_value"],
            self.store.dirty,
            self.forgetting,
        )
        refused = np.flatnonzero(outcome).astype(np.int64)
        return LearnResult(
            rejected_positions=refused,
            rejected_reasons=[_REASONS[code] for code in outcome[refused].tolist()],
            applied_rows=rows[outcome == kernel.APPLIED],
            row_keys=self.store.keys,
        )

    def flush(self, published_at: datetime) -> Flushed:
        """Publish every variable changed since the last flush (+1 on its version)."""
        keys, rows = self.store.dirty_keys()
        if not keys:
            return Flushed.empty()
        self.store["version"][rows] += 1
        self.store["published_us"][rows] = ts_us(published_at)
        self.store.clear_dirty()
        versions = self._versions(keys, rows, published_at)
        values = list(map(msgspec.json.encode, versions))
        packed = zip(keys, self.store.pack(rows), strict=True)
        state: list[tuple[bytes, bytes | None]] = [(b":" + k.encode(), v) for k, v in packed]
        skill = np.array([v.skill for v in versions if v.skill is not None], dtype=np.float64)
        return Flushed(keys, values, state, {"skill": skill})

    def current(self) -> Flushed:
        """Every model's last published wire value (as restored or flushed), unchanged."""
        keys = self.store.keys
        rows = np.arange(len(keys), dtype=np.int64)
        published = self.store["published_us"][rows]
        values = [msgspec.json.encode(v) for v in self._versions(keys, rows, None, published)]
        return Flushed(list(keys), values, [])

    def versions(self, keys: Sequence[str], published_at: datetime) -> list[ModelVersion]:
        """The ModelVersion records of ``keys`` (all known), as of now."""
        return self._versions(keys, self.store.lookup(keys), published_at)

    def _versions(
        self,
        keys: Sequence[str],
        rows: IntArray,
        published_at: datetime | None,
        published_us: IntArray | None = None,
    ) -> list[ModelVersion]:
        """``mse`` and ``baseline_mse`` are 0.0 until the first prediction (W = 0), and
        ``skill`` is None until both are defined and the baseline is non-zero."""
        c = self.store.columns
        sums = c["sums"][rows]
        weight = sums[:, 1]
        defined = weight > 0
        safe_weight = np.where(defined, weight, 1.0)
        mse = np.where(defined, sums[:, 0] / safe_weight, 0.0)
        base = np.where(defined, sums[:, 2] / safe_weight, 0.0)
        has_skill = defined & (base > 0)
        skill = 1.0 - mse / np.where(has_skill, base, 1.0)
        if published_us is not None:
            when = [from_ts_us(us) for us in published_us.tolist()]
        else:
            assert published_at is not None
            when = [published_at] * len(keys)
        return [
            ModelVersion(
                model_id=key,
                version=version,
                order=self.order,
                coefficients=coefficients,
                n_observations=count,
                mse=m,
                baseline_mse=b,
                skill=s if ok else None,
                trained_through=from_ts_us(last_us),
                published_at=at,
            )
            for key, version, coefficients, count, m, b, s, ok, last_us, at in zip(
                keys,
                c["version"][rows].tolist(),
                c["theta"][rows].tolist(),
                c["count"][rows].tolist(),
                mse.tolist(),
                base.tolist(),
                skill.tolist(),
                has_skill.tolist(),
                c["last_ts"][rows].tolist(),
                when,
                strict=True,
            )
        ]

    def load(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Insert or replace variables from changelog records (suffix ``:<variable>``)."""
        current: tuple[list[str], list[bytes]] = ([], [])
        legacy: tuple[list[str], list[bytes]] = ([], [])
        for suffix, value in records:
            key = suffix[1:].decode()
            target = current if value[:1] == b"\x01" else legacy
            target[0].append(key)
            target[1].append(value)
        if current[0]:
            self.store.unpack(*current)
            self._check_order(current[0])
        if legacy[0]:
            self._load_legacy(*legacy)

    def _check_order(self, keys: Sequence[str]) -> None:
        orders = self.store["order"][self.store.lookup(keys)]
        if (orders != self.order).any():
            raise StateFormatError(
                f"changelog holds AR({int(orders[orders != self.order][0])}) state, "
                f"the learner is AR({self.order}): ar_order changed?"
            )

    def _load_legacy(self, keys: Sequence[str], values: Sequence[bytes]) -> None:
        decoder = msgspec.msgpack.Decoder(_LegacyModelState)
        width = self.order + 1
        states = []
        for key, value in zip(keys, values, strict=True):
            if not 0x90 <= value[0] <= 0x9F:
                raise StateFormatError(
                    f"variable {key!r}: changelog format {value[0]} is unknown to this release"
                )
            try:
                state = decoder.decode(value)
            except msgspec.DecodeError as exc:
                raise StateFormatError(f"variable {key!r}: corrupt state: {exc}") from exc
            if state.order != self.order:
                raise StateFormatError(
                    f"variable {key!r}: state of order {state.order}, learner has {self.order}"
                )
            states.append(state)
        self.store.assign(
            keys,
            {
                "order": [s.order for s in states],
                "theta": [s.theta for s in states],
                "p": np.array([s.p for s in states]).reshape(-1, width, width),
                "history": [s.history for s in states],
                "count": [s.count for s in states],
                "sums": [[s.err_sum, s.weight_sum, s.base_err_sum] for s in states],
                "last_ts": [s.last_ts_us for s in states],
                "last_value": [s.last_value for s in states],
                "version": [s.version for s in states],
                # Not recorded before format 1: the nearest time known.
                "published_us": [s.last_ts_us for s in states],
            },
        )

    def forget(self, key: str) -> bool:
        return self.store.remove(key)

    def summary(self) -> dict[str, Any]:
        return {}
