"""The small uniform model API every learner implements (River-style, batch first).

A learner owns the models (one per rule or per variable) of one task, in a `ColumnStore`.
It is driven the same way whatever it learns:

- ``learn_batch(columns)`` applies one micro-batch with a compiled kernel, in arrival order,
  marks the models it changed as dirty and says which events it refused (with a reason);
- ``flush(published_at)`` publishes: +1 on the version of every dirty model, and for each
  its wire record (the version topic's value) and its changelog record, then clears dirty.
  Learning many batches between two flushes publishes once per model (the record cache);
- ``versions(keys, published_at)`` gives the current version Structs (files);
  ``current()`` the last published wire value of every model (queries after a restore);
- ``load(records)`` restores models from changelog records; ``forget(key)`` drops one;
- ``summary()`` gives the learner's gauges (e.g. rules by status).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

ColumnsT = TypeVar("ColumnsT", contravariant=True)


def _no_rows() -> npt.NDArray[np.int64]:
    return np.empty(0, dtype=np.int64)


VersionT = TypeVar("VersionT")


@dataclass(frozen=True, slots=True)
class LearnResult:
    """What one ``learn_batch`` call did.

    ``rejected_positions`` are positions in the input columns of events that were not
    applied, with the dead-letter reason at the same index in ``rejected_reasons``.
    ``applied_rows`` holds the store row of each applied event (repeats allowed), and
    ``touched`` names the models the batch changed, in order of first appearance: built
    only when asked for (the service never does; it publishes from the dirty flags), and
    valid until the learner's next `learn_batch` or `forget`.
    """

    rejected_positions: npt.NDArray[np.int64] = field(default_factory=_no_rows)
    rejected_reasons: list[str] = field(default_factory=list)
    applied_rows: npt.NDArray[np.int64] = field(default_factory=_no_rows)
    row_keys: Sequence[str] = ()

    @property
    def touched(self) -> list[str]:
        _, first = np.unique(self.applied_rows, return_index=True)
        return [self.row_keys[r] for r in self.applied_rows[np.sort(first)].tolist()]


@dataclass(frozen=True, slots=True)
class Flushed:
    """One publication of a learner: per changed model its key, wire value and state.

    ``state`` holds (changelog key suffix, value) pairs; a value of None is a tombstone.
    Besides one record per model, a learner may log records of its own (the trust
    learner's dedupe memory), hence pairs rather than one value per key.
    """

    keys: list[str]
    values: list[bytes]
    state: list[tuple[bytes, bytes | None]]
    # Per metric name, one value per published model (e.g. "trust", "skill").
    samples: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    @staticmethod
    def empty() -> Flushed:
        return Flushed([], [], [])


class Learner(Protocol[ColumnsT, VersionT]):
    """Protocol shared by TrustLearner and Forecaster."""

    def learn_batch(self, columns: ColumnsT) -> LearnResult: ...

    def flush(self, published_at: datetime) -> Flushed: ...

    def current(self) -> Flushed:
        """Every model's last published wire value, without publishing anything."""
        ...

    def versions(self, keys: Sequence[str], published_at: datetime) -> list[VersionT]: ...

    def load(self, records: Sequence[tuple[bytes, bytes]]) -> None: ...

    def forget(self, key: str) -> bool: ...

    def summary(self) -> dict[str, Any]: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[str]: ...
