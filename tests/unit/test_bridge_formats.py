"""Readers of the batch bridge (issue 13): JSON Lines, CSV and Parquet rows as event values."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream_trainer.bridge.files import InputFileError, Opened, discover
from stream_trainer.bridge.formats import cell_value, field_kinds, read_csv, read_jsonl
from stream_trainer.bridge.parquet import read_parquet
from stream_trainer.bridge.records import Rows, batches, to_records
from stream_trainer.errors import DecodeError
from stream_trainer.events import decode_feedback, decode_observation


def opened(data: bytes) -> Opened:
    stream = io.BytesIO(data)
    return Opened(stream, stream)  # type: ignore[arg-type]


def flatten(chunks: list[Rows]) -> tuple[list[bytes], list[int], int]:
    values = [v for c in chunks for v in c.values]
    lines = [n for c in chunks for n in c.lines]
    return values, lines, sum(c.blank for c in chunks)


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
def test_jsonl_lines_keep_their_bytes_and_numbers_across_block_boundaries(block: int) -> None:
    data = b'{"a":1}\n\n{"b":"x y"}\r\n   \n{"c":[1,2,3]}\n{"last":"no newline"}'
    values, lines, blank = flatten(list(read_jsonl(opened(data), block_bytes=block)))
    assert values == [
        b'{"a":1}', b'{"b":"x y"}', b"   ", b'{"c":[1,2,3]}', b'{"last":"no newline"}'
    ]  # fmt: skip
    assert lines == [1, 3, 4, 5, 6]
    assert blank == 1  # an empty line is no event; a line of spaces is (refused: malformed)


def test_jsonl_keeps_bytes_that_are_not_utf8_for_validation_to_refuse() -> None:
    (chunk,) = read_jsonl(opened(b'{"note":"caf\xe9"}\n'))
    assert chunk.values == [b'{"note":"caf\xe9"}']


def test_csv_cells_become_the_wire_types_of_their_fields() -> None:
    assert field_kinds("observation") == {"value": "number"}
    assert field_kinds("feedback") == {"success": "boolean", "weight": "number", "error": "number"}
    assert cell_value("1.25", "number") == 1.25
    assert cell_value("3", "number") == 3 and isinstance(cell_value("3", "number"), int)
    assert cell_value(" -2e3 ", "number") == -2000.0
    assert cell_value("abc", "number") == "abc"  # then refused by validation, as in JSON
    assert cell_value("1_000", "number") == "1_000"
    assert bytes(cell_value("nan", "number")) == b"NaN"
    assert bytes(cell_value("-inf", "number")) == b"-Infinity"
    assert bytes(cell_value("1e999", "number")) == b"Infinity"
    assert cell_value("TRUE", "boolean") is True and cell_value("false", "boolean") is False
    assert cell_value("yes", "boolean") == "yes"
    assert cell_value("007", None) == "007"  # a string field stays a string


def test_csv_rows_are_wire_json_with_their_original_text_and_first_line() -> None:
    data = (
        "\ufeffevent_id,rule_id,ts,success,weight,note\r\n"
        "1,rule.a,2026-01-01T00:00:00Z,true,2,\r\n"
        "\r\n"
        '2,rule.a,2026-01-01T00:00:01Z,false,,"two\nlines"\r\n'
        "3,rule.a,2026-01-01T00:00:02Z,true\r\n"
        "4,rule.a,2026-01-01T00:00:03Z,nope,1,x\r\n"
    ).encode()
    (chunk,) = read_csv(opened(data), "feedback", "f.csv")
    docs = [msgspec.json.decode(v) for v in chunk.values]
    assert docs[0] == {
        "event_id": "1", "rule_id": "rule.a", "ts": "2026-01-01T00:00:00Z", "success": True,
        "weight": 2,
    }  # fmt: skip
    assert docs[1]["note"] == "two\nlines" and "weight" not in docs[1]
    assert list(chunk.lines) == [2, 4, 7]
    assert chunk.originals is not None
    assert chunk.originals[1] == b'2,rule.a,2026-01-01T00:00:01Z,false,,"two\nlines"'
    assert chunk.blank == 1
    (refused,) = chunk.refused
    assert (refused.line, refused.reason) == (6, "malformed")
    assert refused.original == b"3,rule.a,2026-01-01T00:00:02Z,true"
    decode_feedback(chunk.values[0])
    with pytest.raises(DecodeError) as info:
        decode_feedback(chunk.values[2])
    assert info.value.reason == "schema"  # success "nope" is a string, as in JSON


def test_csv_cells_that_are_not_utf8_are_refused_as_malformed() -> None:
    data = b"event_id,variable,ts,value\nx,caf\xe9,2026-01-01T00:00:00Z,1\n"
    (chunk,) = read_csv(opened(data), "observation", "o.csv")
    assert chunk.originals == [b"x,caf\xe9,2026-01-01T00:00:00Z,1"]
    with pytest.raises(DecodeError) as info:
        decode_observation(chunk.values[0])
    assert info.value.reason == "malformed"


@pytest.mark.parametrize("header", [b"\n", b",,\n", b"a,b,a\n"])
def test_a_csv_without_a_usable_header_is_an_error(header: bytes) -> None:
    with pytest.raises(InputFileError, match=r"o\.csv"):
        list(read_csv(opened(header + b"1,2,3\n"), "observation", "o.csv"))
    assert list(read_csv(opened(b""), "observation", "o.csv")) == []  # empty: no events


def test_parquet_rows_stream_by_row_group_with_nulls_missing(tmp_path: Path) -> None:
    n = 2500
    table = pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "variable": ["v"] * n,
            "ts": pa.array(
                [datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1e6 + i for i in range(n)],
                pa.float64(),
            )
            .cast(pa.int64())
            .cast(pa.timestamp("us", tz="UTC")),
            "value": [math.nan if i == 7 else float(i) for i in range(n)],
            "source": [None if i % 2 else "s" for i in range(n)],
        }
    )
    path = tmp_path / "o.parquet"
    pq.write_table(table, path, row_group_size=1000)
    (item,) = discover([str(path)])
    chunks = list(read_parquet(item, batch_rows=600))
    assert [len(c) for c in chunks] == [600, 400, 600, 400, 500]  # never across row groups
    values, lines, _ = flatten(chunks)
    assert lines == list(range(1, n + 1))
    first = decode_observation(values[0])
    assert first.ts == datetime(2026, 1, 1, tzinfo=UTC) and first.source == "s"
    assert decode_observation(values[1]).source is None
    with pytest.raises(DecodeError) as info:
        decode_observation(values[7])
    assert info.value.reason == "non_finite"


def test_parquet_timestamps_without_a_zone_are_naive(tmp_path: Path) -> None:
    table = pa.table(
        {"event_id": ["e"], "variable": ["v"], "ts": [datetime(2026, 1, 1)], "value": [1.0]}
    )
    pq.write_table(table, tmp_path / "o.parquet")
    (item,) = discover([str(tmp_path / "o.parquet")])
    ((value,),) = [c.values for c in read_parquet(item, 100)]
    with pytest.raises(DecodeError) as info:
        decode_observation(value)
    assert info.value.reason == "naive_timestamp"


def test_a_file_that_is_not_parquet_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "o.parquet").write_bytes(b"PAR1 not really")
    (item,) = discover([str(tmp_path / "o.parquet")])
    with pytest.raises(InputFileError, match=r"o\.parquet"):
        list(read_parquet(item, 100))


def test_batches_recut_chunks_exactly_and_account_every_line_once() -> None:
    from stream_trainer.bridge.records import Refused

    chunks = [
        Rows([b"a%d" % i for i in range(7)], range(1, 8), blank=1, position=10),
        Rows([], [], refused=[Refused(9, b"r", "malformed", "x")], blank=2, position=20),
        Rows([b"b%d" % i for i in range(5)], [10, 12, 13, 14, 15], position=30),
    ]
    out = list(batches(chunks, 4))
    assert [len(b) for b in out] == [4, 4, 4]
    assert [v for b in out for v in b.values] == [v for c in chunks for v in c.values]
    assert [n for b in out for n in b.lines] == [*range(1, 8), 10, 12, 13, 14, 15]
    assert sum(b.blank for b in out) == 3 and sum(len(b.refused) for b in out) == 1
    records = to_records(out[1], "pulse.observations", source=2, first_offset=4)
    assert [(r.offset, r.line, r.value) for r in records[:2]] == [(4, 5, b"a4"), (5, 6, b"a5")]
    assert records[0].topic == "pulse.observations" and records[0].key is None
    assert records[0].source == 2 and records[0].original is None
