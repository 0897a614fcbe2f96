"""What `train` and `backfill` read: the input plan, each file's rows, each file's counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_trainer.bridge.files import InputFile, InputFileError, discover, open_input
from stream_trainer.bridge.formats import read_csv, read_jsonl
from stream_trainer.bridge.parquet import read_parquet
from stream_trainer.bridge.records import FEEDBACK, OBSERVATION, Kind, Rows
from stream_trainer.config import Settings

INPUT_NAMES: dict[str, str] = {OBSERVATION: "observations", FEEDBACK: "feedback"}


@dataclass(frozen=True, slots=True)
class PlannedFile:
    kind: Kind
    item: InputFile
    topic: str


def plan_inputs(
    settings: Settings, observations: Sequence[str], feedback: Sequence[str]
) -> list[PlannedFile]:
    """Observation files then feedback files, each list in the order given.

    The two learners are independent, so only the order within each kind matters (it is
    the per-key order, as a partition's would be).
    """
    if not observations and not feedback:
        raise InputFileError("no inputs: give --observations and/or --feedback")
    planned = [
        PlannedFile(OBSERVATION, item, settings.topic_observations)
        for item in discover(observations)
    ]
    planned += [PlannedFile(FEEDBACK, item, settings.topic_feedback) for item in discover(feedback)]
    paths = [p.item.path.resolve() for p in planned]
    if len(set(paths)) != len(paths):
        raise InputFileError("a file is given both as observations and as feedback")
    return planned


def file_rows(planned: PlannedFile, chunk_rows: int) -> Iterator[Rows]:
    """Every row of one file in chunks (closing the file when exhausted or closed)."""
    item = planned.item
    if item.format == "parquet":
        yield from read_parquet(item, chunk_rows)
        return
    with open_input(item) as opened:
        if item.format == "jsonl":
            yield from read_jsonl(opened)
        else:
            yield from read_csv(opened, planned.kind, item.name)


@dataclass(slots=True)
class FileStats:
    """Counts of one input file (a `summary.json` entry)."""

    planned: PlannedFile
    size: int
    records: int = 0  # event rows (valid or not); blank lines are not events
    blank: int = 0
    done: int = 0  # applied (train) or sent (backfill)
    invalid: Counter[str] = field(default_factory=Counter)

    def to_json(self, done_name: str) -> dict[str, Any]:
        item = self.planned.item
        return {
            "file": item.name,
            "input": INPUT_NAMES[self.planned.kind],
            "format": item.format,
            "compression": item.compression or None,
            "bytes": self.size,
            "records": self.records,
            "blank_lines": self.blank,
            done_name: self.done,
            "invalid": sum(self.invalid.values()),
            "invalid_by_reason": dict(sorted(self.invalid.items())),
        }


def reason_totals(stats: Sequence[FileStats]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for s in stats:
        total.update(s.invalid)
    return dict(sorted(total.items()))
