"""The compiled AR(p) RLS step: one loop over a batch's observations in arrival order.

Variables are independent and each is sequential, so one pass in arrival order applies
every observation exactly as DESIGN section 3's definition does, with the state held in
the forecaster's flat arrays. ``nogil`` lets the worker thread learn while the event loop
consumes and produces.
"""

from __future__ import annotations

import numba
import numpy as np
import numpy.typing as npt

APPLIED = 0
DUPLICATE = 1
OUT_OF_ORDER = 2


@numba.njit(cache=True, nogil=True)
def learn(
    rows: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    theta: npt.NDArray[np.float64],
    p: npt.NDArray[np.float64],
    history: npt.NDArray[np.float64],
    count: npt.NDArray[np.int64],
    sums: npt.NDArray[np.float64],
    last_ts: npt.NDArray[np.int64],
    last_value: npt.NDArray[np.float64],
    dirty: npt.NDArray[np.bool_],
    forgetting: float,
) -> npt.NDArray[np.int8]:
    """Apply each observation or refuse it; returns a code per event (APPLIED, ...).

    ``sums`` holds per row (S, W, S_base): the prequential error sums.
    """
    n = rows.shape[0]
    order = history.shape[1]
    outcome = np.zeros(n, dtype=np.int8)
    scratch = np.empty((3, order + 1))  # x, P x, x' P
    for i in range(n):
        r = rows[i]
        t = ts[i]
        y = values[i]
        if count[r] > 0 and t <= last_ts[r]:
            same = t == last_ts[r] and y == last_value[r]
            outcome[i] = DUPLICATE if same else OUT_OF_ORDER
            continue
        if count[r] >= order:
            _predict_then_learn(r, y, theta, p, history, sums, forgetting, scratch)
        for j in range(order - 1, 0, -1):
            history[r, j] = history[r, j - 1]
        history[r, 0] = y
        count[r] += 1
        last_ts[r] = t
        last_value[r] = y
        dirty[r] = True
    return outcome


@numba.njit(cache=True, nogil=True, inline="always")
def _predict_then_learn(
    r: int,
    y: float,
    theta: npt.NDArray[np.float64],
    p: npt.NDArray[np.float64],
    history: npt.NDArray[np.float64],
    sums: npt.NDArray[np.float64],
    lam: float,
    scratch: npt.NDArray[np.float64],
) -> None:
    """One prequential RLS step of row ``r``: error sums first, then theta and P."""
    width = theta.shape[1]
    x, px, xp = scratch[0], scratch[1], scratch[2]
    x[0] = 1.0
    for j in range(width - 1):
        x[j + 1] = history[r, j]
    yhat = 0.0
    for j in range(width):
        yhat += theta[r, j] * x[j]
    e = y - yhat
    d = y - history[r, 0]
    sums[r, 0] = lam * sums[r, 0] + e * e
    sums[r, 1] = lam * sums[r, 1] + 1.0
    sums[r, 2] = lam * sums[r, 2] + d * d
    denom = lam
    for a in range(width):
        acc = 0.0
        acc_t = 0.0
        for b in range(width):
            acc += p[r, a, b] * x[b]
            acc_t += x[b] * p[r, b, a]
        px[a] = acc
        xp[a] = acc_t
        denom += x[a] * acc
    for a in range(width):
        gain = px[a] / denom
        theta[r, a] += gain * e
        for b in range(width):
            p[r, a, b] = (p[r, a, b] - gain * xp[b]) / lam


def warm_up() -> None:
    """Compile (or load from numba's cache) before the first batch needs it."""
    rows = np.zeros(1, dtype=np.int64)
    learn(
        rows,
        np.zeros(1, dtype=np.int64),
        np.zeros(1),
        np.zeros((1, 2)),
        np.zeros((1, 2, 2)),
        np.zeros((1, 1)),
        np.zeros(1, dtype=np.int64),
        np.zeros((1, 3)),
        np.zeros(1, dtype=np.int64),
        np.zeros(1),
        np.zeros(1, dtype=np.bool_),
        0.995,
    )
