"""Columnar views of decoded events: what a TrainingBatch hands to the learners.

Times are kept in two forms on purpose: observations compare timestamps exactly (duplicate
and out-of-order detection), so they carry integer microseconds; trust decays in float
seconds, as DESIGN section 3 defines it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Final

import numpy as np
import numpy.typing as npt

from stream_trainer.events import Feedback, Observation, ts_us


@dataclass(frozen=True, slots=True)
class ObservationColumns:
    """Observations of one batch, in input (offset) order."""

    variable: list[str]
    ts_us: npt.NDArray[np.int64]  # microseconds since the epoch, UTC
    value: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.variable)

    def slice(self, start: int, stop: int) -> ObservationColumns:
        return ObservationColumns(
            self.variable[start:stop], self.ts_us[start:stop], self.value[start:stop]
        )


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

    def slice(self, start: int, stop: int) -> FeedbackColumns:
        return FeedbackColumns(
            self.rule_id[start:stop],
            self.event_id[start:stop],
            self.ts_s[start:stop],
            self.success[start:stop],
            self.weight[start:stop],
        )


_OBSERVATION_FIELDS: Final = attrgetter("variable", "ts", "value")
_FEEDBACK_FIELDS: Final = attrgetter("rule_id", "event_id", "ts", "success", "weight")
# rint(timestamp() * 1e6) is exact while |seconds| < 2**32 (until 2106): timestamp() is
# correctly rounded (error <= 0.24 us there) and the product adds <= 0.25 us, < 0.5 in all.
_EXACT_FLOAT_SECONDS: Final = 2.0**32


def ts_us_array(timestamps: Sequence[datetime]) -> npt.NDArray[np.int64]:
    """``ts_us`` of each tz-aware datetime, exact, faster than calling it per element.

    Decoded events are always aware; a naive value here would be read as local time.
    """
    seconds = ts_s_array(timestamps)
    micros = np.rint(seconds * 1e6).astype(np.int64)
    for i in np.flatnonzero(np.abs(seconds) >= _EXACT_FLOAT_SECONDS).tolist():
        micros[i] = ts_us(timestamps[i])
    return micros


def ts_s_array(timestamps: Sequence[datetime]) -> npt.NDArray[np.float64]:
    """``ts_s`` of each tz-aware datetime (``timestamp()`` of an aware value is the same
    correctly rounded microseconds / 10**6)."""
    return np.fromiter(map(datetime.timestamp, timestamps), np.float64, len(timestamps))


def observations_to_columns(events: Sequence[Observation]) -> ObservationColumns:
    """Columns of a batch's observations, in the given order."""
    if not events:
        return ObservationColumns([], np.empty(0, np.int64), np.empty(0, np.float64))
    variable, ts, value = zip(*map(_OBSERVATION_FIELDS, events), strict=True)
    return ObservationColumns(
        variable=list(variable),
        ts_us=ts_us_array(ts),
        value=np.array(value, np.float64),
    )


def feedback_to_columns(events: Sequence[Feedback]) -> FeedbackColumns:
    """Columns of a batch's feedback, in the given order."""
    if not events:
        empty = np.empty(0, np.float64)
        return FeedbackColumns([], [], empty, np.empty(0, np.bool_), empty.copy())
    rule_id, event_id, ts, success, weight = zip(*map(_FEEDBACK_FIELDS, events), strict=True)
    return FeedbackColumns(
        rule_id=list(rule_id),
        event_id=list(event_id),
        ts_s=ts_s_array(ts),
        success=np.array(success, np.bool_),
        weight=np.array(weight, np.float64),
    )
