"""Text readers: JSON Lines and CSV, streamed in blocks, each row one event value.

JSON Lines values are the line's bytes exactly (so validation sees what a producer would
have sent); empty lines are skipped (a line of spaces is an event: refused, malformed).
A CSV row becomes the wire JSON of its cells: the header names the fields, an empty cell
is a missing field, and cells of the contract's number and boolean fields turn into JSON
numbers and ``true``/``false`` (anything else stays a string, which validation then
refuses as the stream would refuse a string there)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator
from typing import Any, Final

import msgspec

from stream_trainer.bridge.files import InputFileError, Opened
from stream_trainer.bridge.records import OBSERVATION, Kind, Refused, Rows
from stream_trainer.events import Feedback, Observation, Reason

BLOCK_BYTES: Final = 1 << 20
CSV_CHUNK_ROWS: Final = 4096
_ENCODER: Final = msgspec.json.Encoder()
# JSON has no NaN or Infinity; a producer that writes them gets `non_finite` from the
# service, so a CSV cell holding one is written the same way.
_NON_FINITE: Final = {
    "nan": msgspec.Raw(b"NaN"),
    "inf": msgspec.Raw(b"Infinity"),
    "-inf": msgspec.Raw(b"-Infinity"),
}
_BOOLEANS: Final = {"true": True, "false": False}


# ------------------------------------------------------------------------- JSON Lines


def read_jsonl(opened: Opened, block_bytes: int = BLOCK_BYTES) -> Iterator[Rows]:
    """Every non-empty line of the stream, one chunk per block read."""
    read = opened.stream.read
    parts: list[bytes] = []  # the start of a line that spans blocks
    next_line = 1
    while block := read(block_bytes):
        # Split the block itself (no copy of it); its last piece is an unfinished line.
        lines = block.split(b"\n")
        if len(lines) == 1:
            parts.append(block)
            continue
        has_cr = b"\r" in block
        if parts:
            lines[0] = b"".join((*parts, lines[0]))
            has_cr = has_cr or lines[0].endswith(b"\r")  # "\r" | "\n" across two blocks
        tail = lines.pop()
        parts = [tail] if tail else []
        yield _jsonl_rows(lines, next_line, has_cr, opened.position())
        next_line += len(lines)
    if parts:
        yield _jsonl_rows([b"".join(parts)], next_line, True, opened.position())


def _jsonl_rows(lines: list[bytes], first: int, has_cr: bool, position: int) -> Rows:
    if has_cr:
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if all(lines):  # no empty line: the common case, at C speed
        return Rows(lines, range(first, first + len(lines)), position=position)
    values = [line for line in lines if line]
    numbers = [number for number, line in enumerate(lines, first) if line]
    return Rows(values, numbers, blank=len(lines) - len(values), position=position)


# -------------------------------------------------------------------------------- CSV


def field_kinds(kind: Kind) -> dict[str, str]:
    """Field name -> "number" | "boolean" for the contract's non-string fields."""
    event_type = Observation if kind == OBSERVATION else Feedback
    info = msgspec.inspect.type_info(event_type)
    assert isinstance(info, msgspec.inspect.StructType)
    kinds: dict[str, str] = {}
    for f in info.fields:
        types = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
        types = tuple(t.type if isinstance(t, msgspec.inspect.Metadata) else t for t in types)
        if any(isinstance(t, msgspec.inspect.FloatType) for t in types):
            kinds[f.encode_name] = "number"
        elif any(isinstance(t, msgspec.inspect.BoolType) for t in types):
            kinds[f.encode_name] = "boolean"
    return kinds


def cell_value(cell: str, kind: str | None) -> Any:
    """A CSV cell as the JSON value a producer would have written."""
    if kind == "number":
        text = cell.strip()
        try:
            number = float(text)
        except ValueError:
            return cell
        if "_" in text:
            return cell  # float() accepts 1_000; JSON does not
        if math.isfinite(number):
            return int(text) if text.lstrip("+-").isdigit() else number
        return _NON_FINITE["nan" if math.isnan(number) else ("-inf" if number < 0 else "inf")]
    if kind == "boolean":
        return _BOOLEANS.get(cell.strip().lower(), cell)
    return cell


def read_csv(opened: Opened, kind: Kind, path: str) -> Iterator[Rows]:
    """Every data row of a CSV file with a header, in chunks of CSV_CHUNK_ROWS."""
    text = io.TextIOWrapper(
        opened.stream, encoding="utf-8-sig", errors="surrogateescape", newline=""
    )
    tap = _LineTap(text)
    reader = csv.reader(tap)
    first = next(reader, None)
    if first is None:
        return  # an empty file: no header, no events
    header = _header(first, path)
    tap.take()
    convert = _row_encoder(header, field_kinds(kind))
    while True:
        rows = _csv_chunk(reader, tap, len(header), convert, opened.position, path)
        if rows is None:
            return
        yield rows


def _header(row: list[str], path: str) -> list[str]:
    if not any(name.strip() for name in row):
        raise InputFileError(f"{path}: a CSV input needs a header row naming the fields")
    names = [name.strip() for name in row]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputFileError(f"{path}: CSV header repeats {', '.join(duplicates)}")
    return names


def _csv_chunk(
    reader: Iterator[list[str]],
    tap: _LineTap,
    width: int,
    convert: Callable[[list[str]], bytes],
    position: Callable[[], int],
    path: str,
) -> Rows | None:
    rows = Rows([], [], [])
    assert rows.originals is not None and isinstance(rows.lines, list)
    try:
        for cells in reader:
            line = tap.first_line
            original = tap.take()
            if not cells:
                rows.blank += 1
            elif len(cells) != width:
                detail = f"row has {len(cells)} cells, the header {width}"
                rows.refused.append(Refused(line, original, Reason.MALFORMED, detail))
            else:
                rows.values.append(convert(cells))
                rows.lines.append(line)
                rows.originals.append(original)
            if len(rows.values) >= CSV_CHUNK_ROWS:
                break
    except csv.Error as exc:
        raise InputFileError(f"{path}:{tap.first_line}: not CSV: {exc}") from exc
    if not rows.values and not rows.refused and not rows.blank:
        return None
    rows.position = position()
    return rows


def _row_encoder(header: list[str], kinds: dict[str, str]) -> Callable[[list[str]], bytes]:
    columns = [(name, kinds.get(name)) for name in header]

    def encode(cells: list[str]) -> bytes:
        document = {
            name: cell_value(cell, kind)
            for (name, kind), cell in zip(columns, cells, strict=True)
            if cell != ""
        }
        try:
            return _ENCODER.encode(document)
        except UnicodeEncodeError:
            # Bytes that were not UTF-8 in the file: keep them, so validation says so.
            return _surrogate_json(document)

    return encode


def _surrogate_json(document: dict[str, Any]) -> bytes:
    parts = []
    for name, value in document.items():
        rendered = _raw_json(name) + b":"
        if isinstance(value, msgspec.Raw):
            rendered += bytes(value)
        elif isinstance(value, str):
            rendered += _raw_json(value)
        else:
            rendered += _ENCODER.encode(value)
        parts.append(rendered)
    return b"{" + b",".join(parts) + b"}"


def _raw_json(text: str) -> bytes:
    # json.dumps leaves lone surrogates alone; surrogateescape turns them back into bytes.
    return json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogateescape")


class _LineTap:
    """The text lines handed to the csv reader, kept until the row they form is taken."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self._lines = iter(text)
        self._held: list[str] = []
        self._count = 0  # lines handed out so far
        self.first_line = 1  # first line of the row being read

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self._held.append(line)
        self._count += 1
        return line

    def take(self) -> bytes:
        """The held lines (one row) as the file's bytes, without the final line break."""
        original = "".join(self._held).rstrip("\r\n").encode("utf-8", "surrogateescape")
        self._held.clear()
        self.first_line = self._count + 1
        return original
