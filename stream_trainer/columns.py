"""Columnar views of decoded events: what a TrainingBatch hands to the learners.

Times are kept in two forms on purpose: observations compare timestamps exactly (duplicate
and out-of-order detection), so they carry integer microseconds; trust decays in float
seconds, as DESIGN section 3 defines it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class ObservationColumns:
    """Observations of one batch, in input (offset) order."""

    variable: list[str]
    ts_us: npt.NDArray[np.int64]  # microseconds since the epoch, UTC
    value: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.variable)


@dataclass(frozen=True, slots=True)
class FeedbackColumns:
    """Feedback of one batch, in input (offset) order."""

    rule_id: list[str]
    event_id: list[str]
    ts_s: npt.NDArray[np.float64]  # seconds since the epoch, UTC
    success: npt.NDArray[np.bool_]
    weight: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.rule_id)
