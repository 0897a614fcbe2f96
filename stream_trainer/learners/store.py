"""The column store both learners keep their models in: one row per key, one array per field.

Learner kernels (numba) read and write the arrays in place, so state is flat numpy memory,
not one Python object per model. The store does the bookkeeping every learner needs the
same way: key -> row, growth by doubling, defaults for new rows, removal (the last row
moves into the hole, so rows stay dense), a dirty flag per row (changed since the last
publication), and the changelog encoding of a row: one format byte followed by the row's
fields packed little-endian, so a whole set of rows is encoded and decoded with one numpy
call each way.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_trainer.errors import StateFormatError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_MIN_CAPACITY = 16


@dataclass(frozen=True, slots=True)
class Field:
    """One column: a name, a numpy dtype, the per-row shape and the value of a new row."""

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    default: float = 0.0
    identity: bool = False  # a square matrix field whose new rows are ``default * I``


class ColumnStore:
    """Rows of named numpy columns addressed by string key (one learner's models)."""

    def __init__(self, fields: Sequence[Field], format_byte: int) -> None:
        self.fields = tuple(fields)
        self.format_byte = format_byte
        self._rows: dict[str, int] = {}
        self._keys: list[str] = []
        self.columns: dict[str, npt.NDArray[Any]] = {
            f.name: np.empty((0, *f.shape), dtype=f.dtype) for f in self.fields
        }
        self.dirty: BoolArray = np.zeros(0, dtype=np.bool_)
        self.record_dtype = np.dtype(
            [("format", "u1")]
            + [(f.name, np.dtype(f.dtype).newbyteorder("<"), f.shape) for f in self.fields]
        )

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._keys))

    @property
    def keys(self) -> list[str]:
        """Keys in row order."""
        return self._keys

    def __getitem__(self, name: str) -> npt.NDArray[Any]:
        return self.columns[name]

    # -- rows -----------------------------------------------------------------------------

    def rows_of_events(self, keys: Sequence[str]) -> IntArray:
        """The row of each event's key, allocating rows for keys seen for the first time."""
        found = np.fromiter(map(self._rows.get, keys, itertools.repeat(-1)), np.int64, len(keys))
        missing = np.flatnonzero(found < 0)
        if missing.shape[0]:
            for i in missing.tolist():
                row = self._rows.get(keys[i])
                found[i] = row if row is not None else self._allocate(keys[i])
            self._initialise(len(self._keys))
        return found

    def rows_for(self, keys: Sequence[str]) -> IntArray:
        """Rows of distinct ``keys``, allocating rows for unknown ones."""
        return self.rows_of_events(keys)

    def lookup(self, keys: Sequence[str]) -> IntArray:
        """Rows of known ``keys``; an unknown key raises KeyError naming it."""
        try:
            return np.fromiter(map(self._rows.__getitem__, keys), np.int64, len(keys))
        except KeyError as exc:
            raise KeyError(f"no model state for key {exc.args[0]!r}") from exc

    def row(self, key: str) -> int | None:
        return self._rows.get(key)

    def dirty_keys(self) -> tuple[list[str], IntArray]:
        """Keys and rows changed since the last `clear_dirty`, in row order."""
        rows = np.flatnonzero(self.dirty[: len(self._keys)])
        keys = self._keys
        return [keys[r] for r in rows.tolist()], rows.astype(np.int64)

    def clear_dirty(self) -> None:
        self.dirty[:] = False

    def remove(self, key: str) -> bool:
        """Drop a key's row (the last row moves into its place); False if it was unknown."""
        row = self._rows.pop(key, None)
        if row is None:
            return False
        last = len(self._keys) - 1
        if row != last:
            moved = self._keys[last]
            self._keys[row] = moved
            self._rows[moved] = row
            for array in self.columns.values():
                array[row] = array[last]
            self.dirty[row] = self.dirty[last]
        self._keys.pop()
        self._reset_rows(np.array([last], dtype=np.int64))
        return True

    def _allocate(self, key: str) -> int:
        row = len(self._keys)
        self._rows[key] = row
        self._keys.append(key)
        return row

    def _initialise(self, size: int) -> None:
        """Grow to ``size`` rows; rows past the previous size get their defaults."""
        capacity = self.dirty.shape[0]
        if size > capacity:
            new_capacity = max(size, 2 * capacity, _MIN_CAPACITY)
            for name, array in self.columns.items():
                bigger = np.empty((new_capacity, *array.shape[1:]), dtype=array.dtype)
                bigger[:capacity] = array
                self.columns[name] = bigger
            dirty = np.zeros(new_capacity, dtype=np.bool_)
            dirty[:capacity] = self.dirty
            self.dirty = dirty
            self._reset_rows(np.arange(capacity, new_capacity, dtype=np.int64))

    def _reset_rows(self, rows: IntArray) -> None:
        for field in self.fields:
            array = self.columns[field.name]
            if field.identity:
                array[rows] = field.default * np.eye(field.shape[0])
            else:
                array[rows] = field.default
        self.dirty[rows] = False

    # -- changelog encoding ---------------------------------------------------------------

    def pack(self, rows: IntArray) -> list[bytes]:
        """Each row as one changelog value: the format byte, then its fields."""
        records = np.empty(rows.shape[0], dtype=self.record_dtype)
        records["format"] = self.format_byte
        for field in self.fields:
            records[field.name] = self.columns[field.name][rows]
        blob = records.tobytes()
        size = self.record_dtype.itemsize
        return [blob[i : i + size] for i in range(0, len(blob), size)]

    def unpack(self, keys: Sequence[str], values: Sequence[bytes]) -> None:
        """Insert or replace ``keys`` from values made by `pack` (all of this format)."""
        size = self.record_dtype.itemsize
        bad = [k for k, v in zip(keys, values, strict=True) if len(v) != size]
        if bad:
            raise StateFormatError(
                f"changelog record of {bad[0]!r} has {size} bytes expected for format "
                f"{self.format_byte}: written with other learner settings?"
            )
        records = np.frombuffer(b"".join(values), dtype=self.record_dtype)
        self.assign(keys, {f.name: records[f.name] for f in self.fields})

    def assign(self, keys: Sequence[str], values: dict[str, npt.ArrayLike]) -> IntArray:
        """Set whole rows of ``keys`` (allocated if new) from per-field arrays."""
        rows = self.rows_for(keys)
        for name, array in values.items():
            self.columns[name][rows] = array
        return rows
