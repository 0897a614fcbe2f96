"""Per-variable online AR(p) forecasters by recursive least squares (DESIGN section 3).

RLS is sequential within a variable but variables are independent, so a batch is applied
"step by step": step k applies the k-th accepted observation of every variable that has
one, with batched numpy ops over stacks of (p+1, p+1) matrices. The Python loop runs as
many times as the busiest variable has events in the batch, not once per event.

An observation is applied only if its ts is strictly newer than the last applied one of
its variable (within the batch too); otherwise it is refused as ``duplicate`` (same ts and
value as the last applied) or ``out_of_order``. Since applied timestamps strictly
increase, "newer than the last applied" is "newer than every earlier ts", which is a
group-wise running max and needs no sequential loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec
import numpy as np

from stream_trainer.columns import ObservationColumns
from stream_trainer.errors import ConfigError, DecodeError
from stream_trainer.events import ModelVersion, Reason, from_ts_us
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

DUPLICATE = Reason.DUPLICATE.value
OUT_OF_ORDER = Reason.OUT_OF_ORDER.value


class _ModelState(msgspec.Struct, array_like=True, frozen=True):
    """One variable's changelog record (msgpack); ``p`` is flattened row-major."""

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
        width = order + 1
        self._index = RowIndex()
        self._theta: FloatArray = np.empty((0, width))
        self._p: FloatArray = np.empty((0, width, width))
        self._history: FloatArray = np.empty((0, order))  # column 0 is y_{t-1}
        self._count: IntArray = np.empty(0, dtype=np.int64)  # = n_observations
        self._err: FloatArray = np.empty(0)  # S
        self._weight: FloatArray = np.empty(0)  # W
        self._base_err: FloatArray = np.empty(0)  # S_base
        self._last_ts: IntArray = np.empty(0, dtype=np.int64)
        self._last_value: FloatArray = np.empty(0)
        self._version: IntArray = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._index)

    # -- learning -------------------------------------------------------------------------

    def learn_batch(self, columns: ObservationColumns) -> LearnResult:
        """Apply one batch of observations; see the module docstring for the semantics."""
        if len(columns) == 0:
            return LearnResult(touched=[])
        keys, codes = first_appearance_codes(columns.variable)
        rows = self._rows_for(keys)
        groups = Groups.of(codes, len(keys))
        ts = columns.ts_us[groups.order]
        values = columns.value[groups.order]
        accepted, duplicate = self._classify(groups, rows, ts, values)
        positions, bounds = groups.by_rank(np.flatnonzero(accepted))
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            step = positions[lo:hi]
            self._apply_step(rows[groups.codes[step]], values[step], ts[step])
        touched = np.flatnonzero(np.bincount(groups.codes[accepted], minlength=len(keys)))
        self._version[rows[touched]] += 1
        refused = np.flatnonzero(~accepted)
        input_positions = groups.order[refused]
        by_input = np.argsort(input_positions, kind="stable")
        reasons = np.where(duplicate[refused], DUPLICATE, OUT_OF_ORDER)[by_input]
        return LearnResult(
            touched=[keys[c] for c in touched.tolist()],
            rejected_positions=input_positions[by_input].astype(np.int64),
            rejected_reasons=[str(reason) for reason in reasons.tolist()],
        )

    def _rows_for(self, keys: Sequence[str]) -> IntArray:
        rows, is_new = self._index.assign(keys)
        if is_new.any():
            size = len(self._index)
            self._theta = grown(self._theta, size)
            self._p = grown(self._p, size)
            self._history = grown(self._history, size)
            self._count = grown(self._count, size)
            self._err = grown(self._err, size)
            self._weight = grown(self._weight, size)
            self._base_err = grown(self._base_err, size)
            self._last_ts = grown(self._last_ts, size)
            self._last_value = grown(self._last_value, size)
            self._version = grown(self._version, size)
            self._reset(rows[is_new])
        return rows

    def _reset(self, rows: IntArray) -> None:
        self._theta[rows] = 0.0
        self._p[rows] = self.initial_p * np.eye(self.order + 1)
        self._history[rows] = 0.0
        for array in (self._count, self._last_ts, self._version):
            array[rows] = 0
        for farray in (self._err, self._weight, self._base_err, self._last_value):
            farray[rows] = 0.0

    def _classify(
        self, groups: Groups, rows: IntArray, ts: IntArray, values: FloatArray
    ) -> tuple[BoolArray, BoolArray]:
        """(accepted, duplicate) per sorted event: a group-wise running max of ts.

        Timestamps are replaced by their ranks among the batch's and the state's ts, so
        the running max can run on small integers (see ``Groups.exclusive_cummax``).
        """
        n = ts.shape[0]
        has_state = self._count[rows] > 0
        state_ts = self._last_ts[rows]
        distinct, inverse = np.unique(
            np.concatenate((ts, state_ts[has_state])), return_inverse=True
        )
        bound = distinct.shape[0] + 1
        rank = inverse[:n].astype(np.int64) + 1  # 0 is "nothing before"
        state_rank = np.zeros(rows.shape[0], dtype=np.int64)
        state_rank[has_state] = inverse[n:] + 1
        before = np.maximum(groups.exclusive_cummax(rank, bound), state_rank[groups.codes])
        accepted = rank > before
        # The last applied event before each one: the latest accepted in its group, or
        # the state if there is none (1-based position, 0 = none).
        marks = np.where(accepted, np.arange(1, n + 1), 0)
        last = groups.exclusive_cummax(marks, n + 1)
        prior_ts = np.where(last > 0, ts[last - 1], state_ts[groups.codes])
        prior_value = np.where(last > 0, values[last - 1], self._last_value[rows][groups.codes])
        has_prior = (last > 0) | has_state[groups.codes]
        duplicate = ~accepted & has_prior & (ts == prior_ts) & (values == prior_value)
        return accepted, duplicate

    def _apply_step(self, rows: IntArray, y: FloatArray, ts: IntArray) -> None:
        """Apply one observation to each of ``rows`` (distinct): predict, learn, shift."""
        warm = self._count[rows] >= self.order
        if warm.any():
            self._rls(rows[warm], y[warm])
        self._history[rows, 1:] = self._history[rows, :-1]
        self._history[rows, 0] = y
        self._count[rows] += 1
        self._last_ts[rows] = ts
        self._last_value[rows] = y

    def _rls(self, rows: IntArray, y: FloatArray) -> None:
        lam = self.forgetting
        history = self._history[rows]
        x = np.empty((rows.shape[0], self.order + 1))
        x[:, 0] = 1.0
        x[:, 1:] = history
        theta = self._theta[rows]
        p = self._p[rows]
        err = y - np.einsum("ni,ni->n", theta, x)
        self._err[rows] = lam * self._err[rows] + err * err
        self._weight[rows] = lam * self._weight[rows] + 1.0
        self._base_err[rows] = lam * self._base_err[rows] + (y - history[:, 0]) ** 2
        px = np.einsum("nij,nj->ni", p, x)
        xp = np.einsum("ni,nij->nj", x, p)
        gain = px / (lam + np.einsum("ni,ni->n", x, px))[:, None]
        self._theta[rows] = theta + gain * err[:, None]
        self._p[rows] = (p - gain[:, :, None] * xp[:, None, :]) / lam

    # -- publishing and state -------------------------------------------------------------

    def versions(self, keys: Sequence[str], published_at: datetime) -> list[ModelVersion]:
        """The ModelVersion records of ``keys`` (all known), as of their last batch.

        ``mse`` and ``baseline_mse`` are 0.0 until the first prediction (W = 0), and
        ``skill`` is None until both are defined and the baseline is non-zero.
        """
        rows = self._index.lookup(keys)
        weight = self._weight[rows]
        defined = weight > 0
        safe_weight = np.where(defined, weight, 1.0)
        mse = np.where(defined, self._err[rows] / safe_weight, 0.0)
        base = np.where(defined, self._base_err[rows] / safe_weight, 0.0)
        has_skill = defined & (base > 0)
        skill = 1.0 - mse / np.where(has_skill, base, 1.0)
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
                published_at=published_at,
            )
            for key, version, coefficients, count, m, b, s, ok, last_us in zip(
                keys,
                self._version[rows].tolist(),
                self._theta[rows].tolist(),
                self._count[rows].tolist(),
                mse.tolist(),
                base.tolist(),
                skill.tolist(),
                has_skill.tolist(),
                self._last_ts[rows].tolist(),
                strict=True,
            )
        ]

    def dump(self, keys: Sequence[str]) -> list[tuple[str, bytes]]:
        """Changelog records (key, msgpack bytes) of ``keys`` (all known)."""
        rows = self._index.lookup(keys)
        encode = msgspec.msgpack.encode
        return [
            (
                key,
                encode(
                    _ModelState(
                        order=self.order,
                        theta=self._theta[row].tolist(),
                        p=self._p[row].ravel().tolist(),
                        history=self._history[row].tolist(),
                        count=int(self._count[row]),
                        err_sum=float(self._err[row]),
                        weight_sum=float(self._weight[row]),
                        base_err_sum=float(self._base_err[row]),
                        last_ts_us=int(self._last_ts[row]),
                        last_value=float(self._last_value[row]),
                        version=int(self._version[row]),
                    )
                ),
            )
            for key, row in zip(keys, rows.tolist(), strict=True)
        ]

    def load(self, records: Iterable[tuple[str, bytes]]) -> None:
        """Insert or replace variables from changelog records made by ``dump`` (later win).

        Decoded one by one, stored in one vectorised step (see `TrustLearner.load`).
        """
        decoder = msgspec.msgpack.Decoder(_ModelState)
        width = self.order + 1
        keys: list[str] = []
        states: list[_ModelState] = []
        for key, payload in records:
            try:
                state = decoder.decode(payload)
            except msgspec.DecodeError as exc:
                raise DecodeError("invalid_state", f"variable {key!r}: {exc}") from exc
            shapes = (len(state.theta), len(state.p), len(state.history))
            if state.order != self.order or shapes != (width, width * width, self.order):
                raise DecodeError(
                    "invalid_state",
                    f"variable {key!r}: state of order {state.order}, learner has {self.order}",
                )
            keys.append(key)
            states.append(state)
        if not keys:
            return
        rows = self._rows_for(keys)
        self._theta[rows] = np.array([st.theta for st in states], dtype=np.float64)
        p = np.array([st.p for st in states], dtype=np.float64)
        self._p[rows] = p.reshape(len(states), width, width)
        self._history[rows] = np.array([st.history for st in states], dtype=np.float64)
        self._count[rows] = [st.count for st in states]
        self._err[rows] = [st.err_sum for st in states]
        self._weight[rows] = [st.weight_sum for st in states]
        self._base_err[rows] = [st.base_err_sum for st in states]
        self._last_ts[rows] = [st.last_ts_us for st in states]
        self._last_value[rows] = [st.last_value for st in states]
        self._version[rows] = [st.version for st in states]
