"""File lines as the service's input records, in bounded chunks.

Every reader yields `Rows`: a chunk of raw event values (wire JSON bytes) with their line
numbers, plus rows refused before any JSON exists (a CSV row with the wrong number of
cells). `batches` re-cuts chunks to the batch size; `to_records` turns one batch into
`FileRecord`s, the objects `batching.PendingBatch` holds. Nothing here keeps more than
one chunk of a file.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

Kind = Literal["observation", "feedback"]
OBSERVATION: Final = "observation"
FEEDBACK: Final = "feedback"


class FileRecord(NamedTuple):
    """One file line as a record (the `batching.KafkaRecord` protocol, read-only).

    A NamedTuple rather than a frozen dataclass: it is built once per event on the hot
    path, and ``tuple.__new__`` over zipped columns is ~4x cheaper than a frozen
    dataclass's ``__init__`` (which goes through ``object.__setattr__`` per field).
    """

    topic: str
    partition: int
    offset: int  # a running count per kind: unique, increasing, like a partition's
    key: bytes | None
    value: bytes
    source: int  # index of the input file
    line: int  # 1-based line (a CSV row's first line), or row number in a Parquet file
    original: bytes | None  # CSV: the row as written; None: `value` is the original


@dataclass(frozen=True, slots=True)
class Refused:
    """A row that never became an event value (reason as the service would name it)."""

    line: int
    original: bytes
    reason: str
    detail: str


@dataclass(slots=True)
class Rows:
    """A chunk of one file: values in file order, their lines, and the rows refused."""

    values: list[bytes]
    lines: Sequence[int]  # a range when no line was skipped
    originals: list[bytes] | None = None
    refused: list[Refused] = field(default_factory=list)
    blank: int = 0  # empty lines skipped (not events)
    position: int = 0  # file bytes consumed once this chunk is used

    def __len__(self) -> int:
        return len(self.values)


def batches(chunks: Iterable[Rows], size: int) -> Iterator[Rows]:
    """The same rows re-cut into chunks of exactly `size` values (the last may be short).

    Refused rows and blank counts ride with the chunk that follows them in the file, so
    every line is accounted for exactly once.
    """
    pending: Rows | None = None
    for chunk in chunks:
        pending = chunk if pending is None else _joined(pending, chunk)
        while len(pending) >= size:
            head, pending = _split(pending, size)
            yield head
    if pending is not None and (len(pending) or pending.refused or pending.blank):
        yield pending


def _joined(a: Rows, b: Rows) -> Rows:
    if not len(a):
        return Rows(
            b.values, b.lines, b.originals, a.refused + b.refused, a.blank + b.blank, b.position
        )
    originals = None
    if a.originals is not None and b.originals is not None:
        originals = a.originals + b.originals
    return Rows(
        a.values + b.values,
        _concat(a.lines, b.lines),
        originals,
        a.refused + b.refused,
        a.blank + b.blank,
        b.position,
    )


def _concat(a: Sequence[int], b: Sequence[int]) -> Sequence[int]:
    if isinstance(a, range) and isinstance(b, range) and (not a or not b or a.stop == b.start):
        start = a.start if a else b.start
        return range(start, start + len(a) + len(b))
    return [*a, *b]


def _split(rows: Rows, size: int) -> tuple[Rows, Rows]:
    originals = rows.originals
    head = Rows(
        rows.values[:size],
        rows.lines[:size],
        originals[:size] if originals is not None else None,
        rows.refused,
        rows.blank,
        rows.position,
    )
    tail = Rows(
        rows.values[size:],
        rows.lines[size:],
        originals[size:] if originals is not None else None,
        [],
        0,
        rows.position,
    )
    return head, tail


def to_records(rows: Rows, topic: str, source: int, first_offset: int) -> list[FileRecord]:
    """The chunk's values as records, offsets counting on from `first_offset`."""
    n = len(rows.values)
    repeat = itertools.repeat
    originals: Iterable[bytes | None] = (
        rows.originals if rows.originals is not None else repeat(None)
    )
    columns = zip(
        repeat(topic, n),
        repeat(0),
        range(first_offset, first_offset + n),
        repeat(None),
        rows.values,
        repeat(source),
        rows.lines,
        originals,
        strict=False,  # the repeat() columns are endless; rows.values sets the length
    )
    # FileRecord._make is the same tuple.__new__ behind a Python-level call per record.
    return list(map(tuple.__new__, repeat(FileRecord), columns))
