"""`stream-trainer show rule RULE_ID` / `show model VARIABLE`: one key's published versions.

Only the key's own partition is read (the default partitioner's murmur2, as the trainer
publishes), ``read_committed``, from the beginning to its end offset: fast on big topics.
The latest version is chosen by the same rules as the live views (`views.table`): a version
not newer than the one before it is ignored, a tombstone means the key was forgotten.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError, TopologyError
from stream_trainer.events import ModelVersion, RuleVersion
from stream_trainer.kafka.clients import (
    new_consumer,
    read_to_end,
    stop_consumer,
    topic_partitions,
)
from stream_trainer.kafka.partitioning import default_partitions
from stream_trainer.views.table import supersedes

Version = RuleVersion | ModelVersion
DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    "rule": msgspec.json.Decoder(RuleVersion),
    "model": msgspec.json.Decoder(ModelVersion),
}
HISTORY_COLUMNS: Final = {
    "rule": ("version", "trust", "trust_low", "trust_high", "evidence", "status"),
    "model": ("version", "n_observations", "mse", "baseline_mse", "skill", "coefficients"),
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One retained record of the key: a version, a tombstone (None), or invalid."""

    offset: int
    raw: bytes | None
    version: Version | None
    problem: str = ""  # why the record is not a valid version ("" if it is)


@dataclass(frozen=True, slots=True)
class KeyHistory:
    kind: str
    key: str
    topic: str
    partition: int
    partitions: int
    entries: list[Entry]

    @property
    def latest(self) -> Entry | None:
        """The current version (None: unknown or forgotten), by the views' rules."""
        latest: Entry | None = None
        for entry in self.entries:
            if entry.raw is None:
                latest = None
            elif entry.version is not None and (
                latest is None or supersedes(_version(latest), entry.version.version)
            ):
                latest = entry
        return latest

    @property
    def forgotten_at(self) -> Entry | None:
        """The tombstone that forgot the key, if the key's last word is one."""
        last = next(
            (e for e in reversed(self.entries) if e.raw is None or e.version is not None), None
        )
        return last if last is not None and last.raw is None else None

    @property
    def where(self) -> str:
        return f"{self.topic} partition {self.partition} of {self.partitions}"


def _version(entry: Entry) -> int:
    assert entry.version is not None
    return entry.version.version


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` (as the trainer publishes)."""
    return int(default_partitions([key], partitions)[0])


async def read_key(settings: Settings, kind: str, key: str, topic: str) -> KeyHistory:
    """Every retained record of `key` in its partition, read_committed, in offset order."""
    consumer = new_consumer(
        settings,
        client_id="stream-trainer-show",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    raw_key = key.encode("utf-8")
    try:
        await consumer.start()
        tps = await topic_partitions(consumer, topic)
        if not tps:
            raise TopologyError(f"topic {topic} does not exist (has the trainer run?)")
        tp = TopicPartition(topic, key_partition(raw_key, len(tps)))
        records: list[ConsumerRecord] = []
        async for _, batch in read_to_end(consumer, [tp]):
            records.extend(r for r in batch if r.key == raw_key)
    except AioKafkaError as exc:
        raise KafkaError(f"cannot read {topic}: {exc!r}", retriable=True) from exc
    finally:
        await stop_consumer(consumer)
    entries = [_entry(kind, key, r) for r in records]
    return KeyHistory(kind, key, topic, tp.partition, len(tps), entries)


def _entry(kind: str, key: str, record: ConsumerRecord) -> Entry:
    if record.value is None:
        return Entry(record.offset, None, None)
    try:
        version: Version = DECODERS[kind].decode(record.value)
    except msgspec.DecodeError as exc:
        return Entry(record.offset, record.value, None, f"invalid: {exc}")
    if (version.rule_id if isinstance(version, RuleVersion) else version.model_id) != key:
        return Entry(record.offset, record.value, None, "invalid: id differs from the key")
    return Entry(record.offset, record.value, version)


# ----------------------------------------------------------------------- formatting


def format_value(value: Any) -> str:
    """A field as a person reads it (exact values: ``--format json``)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return "-" if value is None else str(value)


def format_latest(history: KeyHistory, entry: Entry) -> str:
    assert entry.version is not None
    fields = msgspec.structs.asdict(entry.version)
    width = max(len(name) for name in fields)
    lines = [f"{history.kind} {history.key}  ({history.where}, offset {entry.offset})"]
    lines += [f"  {name.ljust(width)}  {format_value(value)}" for name, value in fields.items()]
    return "\n".join(lines)


def format_history(history: KeyHistory) -> str:
    columns = HISTORY_COLUMNS[history.kind]
    header = ("offset", *columns, "trained_through", "published_at")
    rows = [tuple(name.upper() for name in header)]
    for entry in history.entries:
        if entry.version is None:
            note = "(forgotten: tombstone)" if entry.raw is None else f"({entry.problem})"
            rows.append((str(entry.offset), note))
            continue
        v = entry.version
        cells = [getattr(v, c) for c in (*columns, "trained_through", "published_at")]
        rows.append((str(entry.offset), *map(format_value, cells)))
    # A note row (tombstone, invalid) spans the columns: it does not set their width.
    widths = [max(len(r[i]) for r in rows if len(r) == len(header)) for i in range(len(header))]
    count = len(history.entries)
    records = f"{count} record" + ("" if count == 1 else "s")
    lines = [f"{history.kind} {history.key}  ({history.where}, {records})"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in rows]
    return "\n".join(lines)


def wire_json(raw: bytes | None) -> str:
    """The record's value as one line of JSON (``null`` for a tombstone)."""
    if raw is None:
        return "null"
    text = raw.decode("utf-8", "replace")
    if "\n" in text or "\r" in text:
        # The trainer writes compact JSON; another producer might not.
        text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    return text


def render(history: KeyHistory, *, all_versions: bool, fmt: str) -> str:
    """What `show` prints on stdout ("" when there is nothing to print)."""
    if all_versions:
        if not history.entries:
            return ""
        if fmt == "json":
            return "\n".join(wire_json(e.raw) for e in history.entries)
        return format_history(history)
    latest = history.latest
    if latest is None:
        return ""
    return wire_json(latest.raw) if fmt == "json" else format_latest(history, latest)


def missing_message(history: KeyHistory) -> str | None:
    """Why there is no current version (None: there is one)."""
    if history.latest is not None:
        return None
    tombstone = history.forgotten_at
    if tombstone is not None:
        return (
            f"{history.kind} {history.key!r} was forgotten "
            f"(tombstone in {history.where}, offset {tombstone.offset})"
        )
    found = "only invalid records" if history.entries else "no record"
    return f"no {history.kind} {history.key!r}: {history.where} holds {found} with that key"


async def show(settings: Settings, args: argparse.Namespace) -> int:
    """Print the key's latest version (or history); exit 1 if it has no current version."""
    default = settings.topic_rule_versions if args.kind == "rule" else settings.topic_model_versions
    history = await read_key(settings, args.kind, args.key, args.topic or default)
    text = render(history, all_versions=args.history, fmt=args.format)
    if text:
        print(text)
    problem = missing_message(history)
    if problem is not None:
        print(f"stream-trainer: {problem}", file=sys.stderr)
        return 1
    return 0
