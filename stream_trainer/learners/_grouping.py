"""Numpy helpers shared by the learners: key -> row maps, growable arrays, group-wise scans.

A batch names its models by string key. Both learners turn those keys into small integer
codes once (``first_appearance_codes``), then do everything else with integer arrays, so the
only per-event Python work left is one dict lookup per event done at C speed by ``map``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ScalarT = TypeVar("ScalarT", bound=np.generic)

_MIN_CAPACITY = 16


def first_appearance_codes(keys: Sequence[str]) -> tuple[list[str], IntArray]:
    """Distinct keys in order of first appearance, and each event's index into them."""
    local = {key: code for code, key in enumerate(dict.fromkeys(keys))}
    codes = np.fromiter(map(local.__getitem__, keys), dtype=np.int64, count=len(keys))
    return list(local), codes


def grown(array: npt.NDArray[ScalarT], size: int) -> npt.NDArray[ScalarT]:
    """``array`` with room for at least ``size`` rows (doubling, so growth is amortised)."""
    capacity = array.shape[0]
    if size <= capacity:
        return array
    new_capacity = max(size, 2 * capacity, _MIN_CAPACITY)
    bigger = np.zeros((new_capacity, *array.shape[1:]), dtype=array.dtype)
    bigger[:capacity] = array
    return bigger


class RowIndex:
    """Maps model keys to dense row numbers of the learner's state arrays."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def assign(self, keys: Sequence[str]) -> tuple[IntArray, BoolArray]:
        """Rows of ``keys`` (distinct), allocating new rows at the end for unknown keys."""
        found = list(map(self._rows.get, keys, itertools.repeat(-1)))
        rows = np.array(found, dtype=np.int64).reshape(len(keys))
        is_new = rows < 0
        for i in np.flatnonzero(is_new).tolist():
            rows[i] = self._rows[keys[i]] = len(self._rows)
        return rows, is_new

    def lookup(self, keys: Sequence[str]) -> IntArray:
        """Rows of known ``keys``; an unknown key raises KeyError naming it."""
        try:
            return np.fromiter(map(self._rows.__getitem__, keys), dtype=np.int64, count=len(keys))
        except KeyError as exc:
            raise KeyError(f"no model state for key {exc.args[0]!r}") from exc


@dataclass(frozen=True, slots=True)
class Groups:
    """Events of a batch sorted by group (stable, so input order is kept inside a group)."""

    order: IntArray  # sorted position -> input position
    codes: IntArray  # group code of each sorted event (non-decreasing)
    starts: IntArray  # group code -> first sorted position
    counts: IntArray  # group code -> number of events

    @classmethod
    def of(cls, codes: IntArray, n_groups: int) -> Groups:
        order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=n_groups)
        starts = np.cumsum(counts) - counts
        return cls(order=order, codes=codes[order], starts=starts, counts=counts)

    def rank(self) -> IntArray:
        """Position of each sorted event inside its group (0 for the group's first)."""
        return np.arange(self.codes.shape[0], dtype=np.int64) - self.starts[self.codes]

    def exclusive_cummax(self, values: IntArray, bound: int) -> IntArray:
        """Group-wise running max of ``values`` over the *previous* events, 0 if none.

        ``values`` are in [0, bound). Adding ``code * bound`` makes the groups' ranges
        disjoint and increasing, so one global ``maximum.accumulate`` never leaks a max
        from one group into the next.
        """
        offset = self.codes * bound
        inclusive = np.maximum.accumulate(values + offset) - offset
        exclusive = np.empty_like(inclusive)
        exclusive[1:] = inclusive[:-1]
        if exclusive.shape[0]:
            exclusive[self.rank() == 0] = 0
        return exclusive

    def by_rank(self, positions: IntArray) -> tuple[IntArray, IntArray]:
        """``positions`` (sorted, grouped) reordered step by step, and the step bounds.

        Step k holds the k-th of ``positions`` of every group that has one, so a sequential
        per-model update can run once per step for all models at once.
        """
        codes = self.codes[positions]
        counts = np.bincount(codes, minlength=self.counts.shape[0])
        starts = np.cumsum(counts) - counts
        step = np.arange(positions.shape[0], dtype=np.int64) - starts[codes]
        by_step = np.argsort(step, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(step))))
        return positions[by_step], bounds.astype(np.int64)
