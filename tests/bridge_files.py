"""Seeded histories written as the files `train` and `backfill` read (shared by the tests).

A history is the synthetic stream with bad records mixed in: re-sent duplicates,
out-of-order observations and invalid events, each with the dead-letter reason it must
get. `write_*` write one kind's values as JSON Lines, CSV or Parquet, optionally compressed.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from stream_trainer.dev.invalid import bad_records, duplicate_of, out_of_order_of
from stream_trainer.dev.synthetic import SyntheticPulse

OBSERVATION_FIELDS = ("event_id", "variable", "ts", "value", "source")
FEEDBACK_FIELDS = ("event_id", "rule_id", "ts", "success", "weight", "forecast_id", "error")
FIELDS = {"observation": OBSERVATION_FIELDS, "feedback": FEEDBACK_FIELDS}
ARROW_TYPES = {
    "value": pa.float64(),
    "weight": pa.float64(),
    "error": pa.float64(),
    "success": pa.bool_(),
}


@dataclass(frozen=True)
class Entry:
    """One input record: kind, Kafka key, value bytes, and the reason it must get (or None)."""

    kind: str
    key: bytes | None
    value: bytes
    reason: str | None


def kafka_history(seed: int, models: int, events: int, bad_every: int = 7) -> list[Entry]:
    """Valid synthetic traffic with every kind of bad record a Kafka record can carry.

    Empty values are left out: a file has no way to hold one (an empty line is no event).
    """
    pulse = SyntheticPulse(seed=seed, n_variables=models, n_rules=models)
    bad = (b for b in bad_records(pulse, events, max_event_bytes=2048) if b[2].strip())
    rng = random.Random(seed)
    out: list[Entry] = []
    for record in pulse.records(events):
        out.append(Entry(*record, None))
        roll = rng.random()
        if roll < 0.04:
            out.append(Entry(*duplicate_of(record)))
        elif roll < 0.07 and record[0] == "observation":
            out.append(Entry(*out_of_order_of(record)))
        elif rng.randrange(bad_every) == 0:
            kind, key, value, reason = next(bad)
            out.append(Entry(kind, key, value, reason))
    return out


def tabular_history(
    seed: int, models: int, events: int
) -> list[tuple[str, dict[str, Any], str | None]]:
    """A history every format can hold: (kind, document, expected reason or None).

    Invalid documents are the ones a typed table can express: missing fields, naive
    timestamps, over-long names, non-finite numbers, out-of-range weights, plus the
    learners' own refusals (duplicates, out-of-order observations).
    """
    pulse = SyntheticPulse(seed=seed, n_variables=models, n_rules=models)
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any], str | None]] = []
    for record in pulse.records(events):
        kind = record[0]
        out.append((kind, json.loads(record[2]), None))
        roll = rng.random()
        if roll < 0.04:
            dup = duplicate_of(record)
            out.append((kind, json.loads(dup[2]), dup[3]))
        elif roll < 0.07 and kind == "observation":
            ooo = out_of_order_of(record)
            out.append((kind, json.loads(ooo[2]), ooo[3]))
        elif roll < 0.15:
            out.append(_broken(kind, json.loads(record[2]), rng))
    return out


def _broken(kind: str, doc: dict[str, Any], rng: random.Random) -> tuple[str, dict[str, Any], str]:
    doc["event_id"] += "-bad"
    name = "variable" if kind == "observation" else "rule_id"
    number = "value" if kind == "observation" else "weight"
    choice = rng.randrange(5)
    if choice == 0:
        del doc[rng.choice(["event_id", name, "ts"])]
        return kind, doc, "schema"
    if choice == 1:
        doc["ts"] = doc["ts"].rstrip("Z")
        return kind, doc, "naive_timestamp"
    if choice == 2:
        doc[name] = "x" * 250
        return kind, doc, "name_too_long"
    if choice == 3:
        doc[number] = rng.choice([math.nan, math.inf, -math.inf])
        return kind, doc, "non_finite"
    if kind == "feedback":
        doc["weight"] = rng.choice([0.0, -1.0])
    else:
        del doc["value"]
    return kind, doc, "schema"


def original_bytes(letter: dict[str, Any]) -> bytes:
    """The line or row a `dead-letters.jsonl` entry holds, as bytes."""
    if "original" in letter:
        return str(letter["original"]).encode()
    return base64.b64decode(letter["original_base64"])


def dumps(doc: dict[str, Any]) -> bytes:
    # Python's json writes NaN/Infinity literals, as a careless producer would.
    return json.dumps(doc, separators=(",", ":")).encode()


def compressed(data: bytes, compression: str) -> bytes:
    if compression == "gz":
        return gzip.compress(data, mtime=0)
    if compression == "zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


def write_jsonl(path: Path, values: Sequence[bytes], compression: str = "") -> Path:
    path = path.with_name(path.name + (f".{compression}" if compression else ""))
    path.write_bytes(compressed(b"".join(v + b"\n" for v in values), compression))
    return path


def write_csv(path: Path, kind: str, docs: Sequence[dict[str, Any]], compression: str = "") -> Path:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(FIELDS[kind])
    writer.writerows([_cell(doc.get(f)) for f in FIELDS[kind]] for doc in docs)
    path = path.with_name(path.name + (f".{compression}" if compression else ""))
    path.write_bytes(compressed(text.getvalue().encode(), compression))
    return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_parquet(
    path: Path, kind: str, docs: Sequence[dict[str, Any]], row_group_size: int = 1000
) -> Path:
    schema = pa.schema([(f, ARROW_TYPES.get(f, pa.string())) for f in FIELDS[kind]])
    table = pa.Table.from_pylist([{f: d.get(f) for f in FIELDS[kind]} for d in docs], schema)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path
