"""`stream-trainer dead-letters`: inspect dead letters and re-publish them once fixed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.commands._time import parse_utc_time
from stream_trainer.config import Settings
from stream_trainer.errors import ConfigError, KafkaError
from stream_trainer.kafka.clients import (
    new_consumer,
    new_producer,
    read_to_end,
    stop_consumer,
    topic_partitions,
)

PAYLOAD_PREFIX = 60


@dataclass(frozen=True, slots=True)
class DeadLetter:
    offset: int
    partition: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        return self.headers.get("reason", "?")

    @property
    def source(self) -> str:
        topic, partition, offset = (
            self.headers.get(f"source.{name}", "?") for name in ("topic", "partition", "offset")
        )
        return f"{topic}[{partition}]@{offset}"


async def read_dead_letters(
    settings: Settings, reasons: Sequence[str] | None, since_ms: int | None, limit: int
) -> list[DeadLetter]:
    """Committed dead letters, oldest first, filtered by reason and time."""
    consumer = new_consumer(settings)
    try:
        await consumer.start()
        tps = await topic_partitions(consumer, settings.topic_dead_letter)
        found: list[DeadLetter] = []
        async for _, records in read_to_end(consumer, tps):
            found.extend(_select(records, reasons, since_ms))
        found.sort(key=lambda d: d.timestamp_ms)
        return found[:limit]
    except AioKafkaError as exc:
        raise KafkaError(
            f"cannot read {settings.topic_dead_letter}: {exc!r}", retriable=True
        ) from exc
    finally:
        await stop_consumer(consumer)


def _select(
    records: Sequence[ConsumerRecord], reasons: Sequence[str] | None, since_ms: int | None
) -> list[DeadLetter]:
    selected = []
    for r in records:
        headers = {k: v.decode("utf-8", "replace") for k, v in r.headers or ()}
        letter = DeadLetter(r.offset, r.partition, r.timestamp, r.key, r.value, headers)
        if reasons and letter.reason not in reasons:
            continue
        if since_ms is not None and letter.timestamp_ms < since_ms:
            continue
        selected.append(letter)
    return selected


def format_table(letters: Sequence[DeadLetter]) -> str:
    rows = [("WRITTEN (UTC)", "REASON", "SOURCE", "PAYLOAD")]
    for d in letters:
        written = f"{datetime.fromtimestamp(d.timestamp_ms / 1000, tz=UTC):%Y-%m-%d %H:%M:%S}"
        payload = (d.value or b"").decode("utf-8", "replace").replace("\n", " ")
        if len(payload) > PAYLOAD_PREFIX:
            payload = payload[:PAYLOAD_PREFIX] + "..."
        rows.append((written, d.reason, d.source, payload))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in rows
    )


async def replay_dead_letters(settings: Settings, letters: Sequence[DeadLetter]) -> int:
    """Re-publish to the source topic with the original key and bytes."""
    producer = new_producer(settings)
    try:
        await producer.start()
        for d in letters:
            topic = d.headers.get("source.topic")
            if not topic:
                continue
            await producer.send(
                topic,
                d.value,
                key=d.key,
                headers=[
                    (
                        "replayed-from",
                        f"{settings.topic_dead_letter}[{d.partition}]@{d.offset}".encode(),
                    )
                ],
            )
        await producer.flush()
    except AioKafkaError as exc:
        raise KafkaError(f"re-publishing failed: {exc!r}", retriable=True) from exc
    finally:
        await producer.stop()
    return len(letters)


def _since_ms(since: str | None) -> int | None:
    return None if since is None else int(parse_utc_time(since, "--since").timestamp() * 1000)


async def dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    if args.limit <= 0:
        raise ConfigError("--limit must be > 0")
    letters = await read_dead_letters(settings, args.reason, _since_ms(args.since), args.limit)
    print(format_table(letters))
    print(f"{len(letters)} dead letter(s)", file=sys.stderr)
    if not args.replay or not letters:
        return 0
    if not args.yes and not _confirm(len(letters)):
        print("nothing re-published", file=sys.stderr)
        return 1
    count = await replay_dead_letters(settings, letters)
    print(f"re-published {count} record(s) to their source topics", file=sys.stderr)
    return 0


def _confirm(count: int) -> bool:
    if not sys.stdin.isatty():
        print("refusing to re-publish without a terminal: pass --yes", file=sys.stderr)
        return False
    answer = input(f"Re-publish {count} dead letter(s) to their source topics? [y/N] ")
    return answer.strip().lower() in ("y", "yes")
