"""The small uniform model API every learner implements (River-style, batch first).

A learner owns the state of many models (one per rule or per variable) of one task. It is
driven the same way whatever it learns:

- ``learn_batch(columns)`` applies one micro-batch, vectorised across events and models,
  bumps the version of every model it changed and says which ones (and which events it
  refused, with a dead-letter reason);
- ``versions(keys, published_at)`` builds the wire records to publish for those models;
- ``dump(keys)`` / ``load(records)`` move model state to and from changelog records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

ColumnsT = TypeVar("ColumnsT", contravariant=True)
VersionT = TypeVar("VersionT")


@dataclass(frozen=True, slots=True)
class LearnResult:
    """What one ``learn_batch`` call changed.

    ``touched`` lists the models whose state (and version) changed, in order of first
    appearance in the batch. ``rejected_positions`` are positions in the input columns of
    events that were not applied, with the dead-letter reason at the same index in
    ``rejected_reasons``.
    """

    touched: list[str]
    rejected_positions: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.empty(0, dtype=np.int64)
    )
    rejected_reasons: list[str] = field(default_factory=list)


class Learner(Protocol, Generic[ColumnsT, VersionT]):
    """Protocol shared by TrustLearner and Forecaster."""

    def learn_batch(self, columns: ColumnsT) -> LearnResult: ...

    def versions(self, keys: Sequence[str], published_at: datetime) -> list[VersionT]: ...

    def dump(self, keys: Sequence[str]) -> list[tuple[str, bytes]]: ...

    def load(self, records: Iterable[tuple[str, bytes]]) -> None: ...

    def __len__(self) -> int: ...
