"""Parquet inputs (pyarrow, the optional ``files`` extra): one row group at a time.

A row becomes the wire JSON of its columns: null is a missing field, timestamps are written
as RFC 3339 (a column without a time zone gives naive timestamps, which validation refuses
as the stream would), and a NaN or infinite float is written as the ``NaN``/``Infinity``
literal a careless producer would send, so it is refused as ``non_finite``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from stream_trainer.bridge.files import InputFile, InputFileError, optional_module
from stream_trainer.bridge.records import Rows

_ENCODER: Final = msgspec.json.Encoder()
_NAN: Final = msgspec.Raw(b"NaN")
_INF: Final = msgspec.Raw(b"Infinity")
_NEG_INF: Final = msgspec.Raw(b"-Infinity")


def read_parquet(item: InputFile, batch_rows: int) -> Iterator[Rows]:
    """Every row of the file, in order, in chunks of at most `batch_rows`."""
    pq = optional_module("pyarrow.parquet", f"reading {item.path}")
    try:
        parquet = pq.ParquetFile(item.path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputFileError(f"{item.path}: not a readable Parquet file: {exc}") from exc
    metadata = parquet.metadata
    next_row = 1
    position = 0
    for group in range(metadata.num_row_groups):
        info = metadata.row_group(group)
        group_bytes = sum(info.column(c).total_compressed_size for c in range(info.num_columns))
        for batch in _batches(parquet, group, batch_rows, item):
            values = encode_rows(batch.to_pylist(), _has_nulls(batch), _has_floats(batch))
            yield Rows(values, range(next_row, next_row + len(values)), position=position)
            next_row += len(values)
        position += group_bytes
    if metadata.num_row_groups == 0:
        yield Rows([], range(0), position=position)


def _batches(parquet: Any, group: int, batch_rows: int, item: InputFile) -> Iterator[Any]:
    try:
        yield from parquet.iter_batches(batch_size=batch_rows, row_groups=[group])
    except (OSError, ValueError) as exc:
        raise InputFileError(f"{item.path}: row group {group} cannot be read: {exc}") from exc


def _has_nulls(batch: Any) -> bool:
    return any(column.null_count for column in batch.columns)


def _has_floats(batch: Any) -> bool:
    pa = optional_module("pyarrow", "reading Parquet")
    return any(pa.types.is_floating(column.type) for column in batch.columns)


def encode_rows(rows: list[dict[str, Any]], nulls: bool, floats: bool) -> list[bytes]:
    """Each row dict as wire JSON bytes."""
    if nulls:
        rows = [{k: v for k, v in row.items() if v is not None} for row in rows]
    if floats:
        rows = [_literal_non_finite(row) for row in rows]
    return list(map(_ENCODER.encode, rows))


def _literal_non_finite(row: dict[str, Any]) -> dict[str, Any]:
    if all(not isinstance(v, float) or math.isfinite(v) for v in row.values()):
        return row
    return {k: _literal(v) if isinstance(v, float) else v for k, v in row.items()}


def _literal(value: float) -> Any:
    if math.isnan(value):
        return _NAN
    if math.isinf(value):
        return _INF if value > 0 else _NEG_INF
    return value
