"""`stream-trainer train`: learn from files through the service's own batch path, no Kafka.

Each file is cut into batches of ``max_batch_events`` records; every batch goes through
`batching.decode_batch` (the service's validation) and `TaskState.learn` (the service's
learners), so the final versions are the stream's for the same per-key order (DESIGN
section 3: the learners are batch-invariant). Only one batch of records is alive at a time.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from stream_trainer.batching import InvalidRecord, KafkaRecord, PendingBatch, decode_batch
from stream_trainer.bridge.files import display_name
from stream_trainer.bridge.inputs import (
    INPUT_NAMES,
    FileStats,
    PlannedFile,
    file_rows,
    plan_inputs,
    reason_totals,
)
from stream_trainer.bridge.outputs import OutputDir, dead_letter_entry
from stream_trainer.bridge.progress import FileProgress
from stream_trainer.bridge.records import OBSERVATION, FileRecord, Kind, Rows, batches, to_records
from stream_trainer.config import Settings
from stream_trainer.events import ModelVersion, RuleVersion, utc_now
from stream_trainer.state import TaskState

GC_THRESHOLD = 100_000  # gen-0 allocations between collections (CPython's default: 700)
LEARNER_SETTINGS = (
    "max_batch_events",
    "max_event_bytes",
    "ar_order",
    "rls_forgetting",
    "rls_initial_p",
    "trust_half_life_s",
    "trust_retire_below",
    "trust_probation_below",
    "dedupe_window_s",
)


class Learner:
    """The service's decode-and-learn path; the one place that names the core's API."""

    def __init__(self, settings: Settings) -> None:
        self._state = TaskState(settings)
        self._max_event_bytes = settings.max_event_bytes

    def learn(self, kind: Kind, records: list[FileRecord]) -> tuple[list[InvalidRecord], int]:
        """Validate and learn one batch: (refused records, events applied)."""
        batch_records = cast(list[KafkaRecord], records)
        observations = batch_records if kind == OBSERVATION else []
        feedback = [] if kind == OBSERVATION else batch_records
        pending = PendingBatch(
            task=0, generation=0, opened_at=0.0, observations=observations, feedback=feedback
        )
        # Files have no Kafka key to check against the event's name.
        batch = decode_batch(pending, self._max_event_bytes, check_keys=False)
        learned = self._state.learn(batch)
        return learned.invalid, learned.observations_applied + learned.feedback_applied

    def final_versions(
        self, published_at: datetime
    ) -> tuple[list[RuleVersion], list[ModelVersion]]:
        """Every key's version, published once (as one commit at the end would)."""
        self._state.publish(published_at)
        return self._state.final_versions(published_at)


@dataclass(frozen=True, slots=True)
class TrainOptions:
    observations: Sequence[str]
    feedback: Sequence[str]
    output_dir: Path
    parquet: bool = False
    published_at: datetime | None = None


@dataclass(slots=True)
class TrainResult:
    summary: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)


@contextlib.contextmanager
def collector_tuned() -> Iterator[None]:
    """Fewer garbage collections while learning (restored after).

    Each batch allocates ~10 objects per event (records, events, column lists); with the
    default gen-0 threshold of 700 the collector runs every ~70 events and costs a third of
    the run. The batch path makes no reference cycles worth collecting that often.
    """
    previous = gc.get_threshold()
    gc.freeze()  # the import-time heap is never garbage: keep it out of every collection
    gc.set_threshold(GC_THRESHOLD, *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


def run_train(settings: Settings, options: TrainOptions, progress: FileProgress) -> TrainResult:
    """Learn from every input, then write the outputs (all or nothing)."""
    with collector_tuned():
        return _run_train(settings, options, progress)


def _run_train(settings: Settings, options: TrainOptions, progress: FileProgress) -> TrainResult:
    started_wall, started = utc_now(), time.perf_counter()
    planned = plan_inputs(settings, options.observations, options.feedback)
    learner = Learner(settings)
    stats: list[FileStats] = []
    with OutputDir(options.output_dir) as out:
        offsets = {kind: 0 for kind in INPUT_NAMES}
        for index, item in enumerate(planned):
            file_stats = FileStats(item, item.item.size)
            stats.append(file_stats)
            progress.start(index + 1, len(planned), display_name(item.item), file_stats.size)
            offsets[item.kind] = _train_file(
                settings, learner, item, index, file_stats, out, progress, offsets[item.kind]
            )
            progress.done()
        published_at = options.published_at or utc_now()
        rules, models = learner.final_versions(published_at)
        rules.sort(key=_rule_id)
        models.sort(key=_model_id)
        out.versions(rules, models, options.parquet)
        duration = time.perf_counter() - started
        summary = _summary(settings, stats, len(rules), len(models), duration)
        summary.update(started_at=started_wall, published_at=published_at)
        out.summary(summary)
        return TrainResult(summary, out.commit())


def _train_file(
    settings: Settings,
    learner: Learner,
    planned: PlannedFile,
    index: int,
    stats: FileStats,
    out: OutputDir,
    progress: FileProgress,
    offset: int,
) -> int:
    """Learn one file batch by batch; returns the kind's next record offset."""
    size = settings.max_batch_events
    for rows in batches(file_rows(planned, size), size):
        records = to_records(rows, planned.topic, index, offset)
        offset += len(records)
        invalid, applied = learner.learn(planned.kind, records) if records else ([], 0)
        stats.records += len(records) + len(rows.refused)
        stats.blank += rows.blank
        stats.done += applied
        out.dead_letters(_dead_letters(planned, rows, invalid, stats))
        progress.update(rows.position, stats.records)
    return offset


def _dead_letters(
    planned: PlannedFile, rows: Rows, invalid: list[InvalidRecord], stats: FileStats
) -> list[dict[str, Any]]:
    name, kind = planned.item.name, INPUT_NAMES[planned.kind]
    entries = []
    for refused in rows.refused:
        stats.invalid[refused.reason] += 1
        entries.append(
            dead_letter_entry(
                name, refused.line, kind, refused.reason, refused.detail, refused.original
            )
        )
    for bad in invalid:
        record = cast(FileRecord, bad.record)
        stats.invalid[bad.reason] += 1
        original = record.value if record.original is None else record.original
        entries.append(dead_letter_entry(name, record.line, kind, bad.reason, bad.detail, original))
    entries.sort(key=_line)
    return entries


def _summary(
    settings: Settings, stats: list[FileStats], rules: int, models: int, duration: float
) -> dict[str, Any]:
    records = sum(s.records for s in stats)
    applied = {name: 0 for name in INPUT_NAMES.values()}
    for s in stats:
        applied[INPUT_NAMES[s.planned.kind]] += s.done
    by_reason = reason_totals(stats)
    return {
        "inputs": [s.to_json("applied") for s in stats],
        "totals": {
            "records": records,
            "blank_lines": sum(s.blank for s in stats),
            "observations_applied": applied["observations"],
            "feedback_applied": applied["feedback"],
            "invalid": sum(by_reason.values()),
            "invalid_by_reason": by_reason,
        },
        "rules": rules,
        "models": models,
        "duration_s": round(duration, 3),
        "events_per_s": round(records / duration) if duration > 0 else None,
        "settings": {name: getattr(settings, name) for name in LEARNER_SETTINGS},
    }


def summary_line(result: TrainResult, output_dir: Path) -> str:
    totals = result.summary["totals"]
    return (
        f"train: {totals['records']:,} events from {len(result.summary['inputs'])} files "
        f"in {result.summary['duration_s']:,.1f} s ({result.summary['events_per_s'] or 0:,} "
        f"events/s): {result.summary['rules']:,} rules, {result.summary['models']:,} models, "
        f"{totals['invalid']:,} dead letters -> {output_dir}"
    )


def _rule_id(version: RuleVersion) -> str:
    return version.rule_id


def _model_id(version: ModelVersion) -> str:
    return version.model_id


def _line(entry: dict[str, Any]) -> int:
    return int(entry["line"])
