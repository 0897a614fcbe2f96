"""What a backfill sends: the inputs after a resume point, in chunks, validated.

Validation is the service's own decoders; a valid event is keyed by its ``variable`` /
``rule_id``, as the service expects its input records to be.
"""

from __future__ import annotations

import bisect
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from stream_trainer.bridge.inputs import PlannedFile, file_rows
from stream_trainer.bridge.records import OBSERVATION, Rows, batches
from stream_trainer.config import Settings
from stream_trainer.errors import ConfigError, DecodeError
from stream_trainer.events import decode_feedbacks, decode_observations
from stream_trainer.kafka.sender import OutputRecord

CHUNK_EVENTS: Final = 5_000

Mark = tuple[str, int]  # (file, line): how far the input is sent


@dataclass(frozen=True, slots=True)
class Prepared:
    """One chunk, validated: what to send, and the invalid lines (line, reason, detail)."""

    records: list[OutputRecord]
    lines: list[int]  # each record's line, increasing
    invalid: list[tuple[int, str, str]]
    rows: int
    blank: int
    position: int
    last_line: int  # the chunk's last line (0: none)


def prepare(planned: PlannedFile, rows: Rows, settings: Settings, send_invalid: bool) -> Prepared:
    """Validate one chunk as the service will: the records to send and the invalid lines."""
    keys, errors = _validated_keys(planned, rows.values, settings.max_event_bytes)
    bad = dict(errors)
    topic = planned.topic
    records: list[OutputRecord] = []
    lines: list[int] = []
    invalid = [(r.line, r.reason, r.detail) for r in rows.refused]
    for position, (value, line) in enumerate(zip(rows.values, rows.lines, strict=True)):
        error = bad.get(position)
        if error is None:
            records.append(OutputRecord(topic, next(keys), value))
        else:
            invalid.append((line, error.reason, error.detail))
            if not send_invalid:
                continue
            records.append(OutputRecord(topic, best_effort_key(value), value))
        lines.append(line)
    if send_invalid and rows.refused:
        pairs = [*zip(lines, records, strict=True)]
        pairs += [(r.line, OutputRecord(topic, None, r.original)) for r in rows.refused]
        pairs.sort(key=_first)  # file order, so "sent through line n" stays true
        lines, records = [p[0] for p in pairs], [p[1] for p in pairs]
    invalid.sort()
    last_line = max(rows.lines[-1] if len(rows.lines) else 0, *(r.line for r in rows.refused), 0)
    count = len(rows) + len(rows.refused)
    return Prepared(records, lines, invalid, count, rows.blank, rows.position, last_line)


def _first(pair: tuple[int, OutputRecord]) -> int:
    return pair[0]


def _validated_keys(
    planned: PlannedFile, values: list[bytes], max_bytes: int
) -> tuple[Iterator[bytes], list[tuple[int, DecodeError]]]:
    """The Kafka key of each valid event (in order), and the errors of the invalid ones."""
    if planned.kind == OBSERVATION:
        observations, errors = decode_observations(values, max_bytes=max_bytes)
        return (o.variable.encode() for o in observations), errors
    feedback, errors = decode_feedbacks(values, max_bytes=max_bytes)
    return (f.rule_id.encode() for f in feedback), errors


def best_effort_key(value: bytes) -> bytes | None:
    """The name field of an invalid event when one can be read (so it lands with its model)."""
    try:
        document = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return None
    if isinstance(document, dict):
        for name in ("variable", "rule_id"):
            if isinstance(document.get(name), str):
                return str(document[name]).encode("utf-8", "surrogateescape")
    return None


def chunks(
    planned: PlannedFile, limit: int | None, after_line: int = 0
) -> Generator[Rows, None, None]:
    """The file's rows after `after_line` in send-sized chunks, cut after `limit` rows."""
    for read in batches(file_rows(planned, CHUNK_EVENTS), CHUNK_EVENTS):
        rows = _after(read, after_line) if after_line else read
        if not len(rows) and not rows.refused:
            continue
        if limit is not None and len(rows) >= limit:
            yield _truncated(rows, limit)
            return
        if limit is not None:
            limit -= len(rows) + len(rows.refused)
        yield rows


def _after(rows: Rows, line: int) -> Rows:
    """The rows past `line` (lines increase within a file)."""
    start = bisect.bisect_right(rows.lines, line)
    refused = [r for r in rows.refused if r.line > line]
    blank = rows.blank if start < len(rows) else 0
    return Rows(rows.values[start:], rows.lines[start:], None, refused, blank, rows.position)


def resume_point(planned: list[PlannedFile], mark: Mark | None) -> tuple[int, int]:
    """(index of the file to start in, line to start after) for `--resume-after FILE:LINE`."""
    if mark is None:
        return 0, 0
    name, line = mark
    target = Path(name).resolve()
    for index, item in enumerate(planned):
        if item.item.path.resolve() == target:
            return index, line
    raise ConfigError(f"--resume-after: {name} is not one of the inputs")


def parse_mark(text: str) -> Mark:
    """``FILE:LINE`` as printed by an interrupted backfill."""
    name, _, line = text.rpartition(":")
    if not name or not line.isdigit():
        raise ConfigError(
            f"--resume-after takes FILE:LINE (as an interrupted run prints): {text!r}"
        )
    return name, int(line)


def _truncated(rows: Rows, limit: int) -> Rows:
    last = rows.lines[limit - 1] if limit > 0 else 0
    refused = [r for r in rows.refused if r.line < last]
    return Rows(rows.values[:limit], rows.lines[:limit], None, refused, rows.blank, rows.position)
