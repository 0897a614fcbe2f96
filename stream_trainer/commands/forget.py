"""`stream-trainer forget rule RULE_ID` / `forget model VARIABLE`: ask the trainer to drop a key.

The request is a tombstone on the key's *input* topic (Kafka's convention for a delete): a
record with key = the rule_id on the feedback topic, or key = the variable on the
observations topic, and a null value, in the key's default partition (the one its events
use). The task owning that partition applies it in order with the events around it: it
deletes the key's state and, in the same transaction, writes tombstones to the changelog
and to the version topic. An event for the key after the tombstone starts a new life at
version 1. This command only produces the tombstone (idempotent producer, ``acks=all``) and
waits for its acknowledgement; it does not wait for the trainer.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from dataclasses import dataclass
from typing import Final, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.commands.show import key_partition
from stream_trainer.config import Settings
from stream_trainer.errors import ConfigError, KafkaError, TopologyError
from stream_trainer.events import MAX_NAME_LENGTH
from stream_trainer.kafka.clients import new_producer

Kind = Literal["rule", "model"]
# Where a key's state lives: its changelog key prefix and what its input events are called.
CHANGELOG_LETTER: Final[dict[str, str]] = {"rule": "r", "model": "m"}
EVENTS: Final[dict[str, str]] = {"rule": "feedback", "model": "observations"}
NEXT_EVENT: Final[dict[str, str]] = {"rule": "feedback event", "model": "observation"}


@dataclass(frozen=True, slots=True)
class Target:
    """Where the tombstone of one key goes, and where its effects will show."""

    kind: Kind
    key: str
    input_topic: str
    version_topic: str
    changelog_topic: str

    @property
    def raw_key(self) -> bytes:
        return self.key.encode("utf-8")

    @property
    def changelog_key(self) -> str:
        return f"{CHANGELOG_LETTER[self.kind]}:{self.key}"


def validate_key(kind: str, key: str) -> str:
    """The key as the trainer accepts it in a tombstone (1..200 characters, UTF-8)."""
    what = "rule_id" if kind == "rule" else "variable"
    if not key:
        raise ConfigError(f"the {what} must not be empty")
    if len(key) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"the {what} has {len(key)} characters; names are at most {MAX_NAME_LENGTH}"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"the {what} {key!r} is not valid UTF-8") from exc
    return key


def target_of(settings: Settings, kind: Kind, key: str) -> Target:
    rule = kind == "rule"
    return Target(
        kind=kind,
        key=validate_key(kind, key),
        input_topic=settings.topic_feedback if rule else settings.topic_observations,
        version_topic=settings.topic_rule_versions if rule else settings.topic_model_versions,
        changelog_topic=settings.changelog_topic,
    )


async def _partition_count(producer: AIOKafkaProducer, topic: str) -> int:
    """The topic's partition count from metadata (not aiokafka's 40 s wait when it is missing)."""
    client = producer.client
    await client.add_topic(topic)  # resolves once a metadata update including it is done
    if client.cluster.partitions_for_topic(topic) is None:
        await client.force_metadata_update()
    if topic in client.cluster.unauthorized_topics:
        raise KafkaError(f"not authorized to write to {topic}")
    partitions = client.cluster.partitions_for_topic(topic)
    if not partitions:
        raise TopologyError(f"topic {topic} does not exist (check the topic settings)")
    return len(partitions)


async def send_tombstone(settings: Settings, target: Target, *, dry_run: bool) -> tuple[int, int]:
    """Produce the key's tombstone and wait for the ack: (partition, offset; -1 if dry run)."""
    producer = new_producer(settings, client_id="stream-trainer-forget")
    try:
        await producer.start()
        count = await _partition_count(producer, target.input_topic)
        partition = key_partition(target.raw_key, count)
        if dry_run:
            return partition, -1
        ack = await producer.send(target.input_topic, None, key=target.raw_key, partition=partition)
        metadata = await ack
        return partition, int(metadata.offset)
    except AioKafkaError as exc:
        raise KafkaError(
            f"cannot write the tombstone to {target.input_topic}: {exc!r}", retriable=True
        ) from exc
    finally:
        await producer.stop()


def describe_effects(target: Target, partition: int) -> str:
    """What happens next, for the operator (printed after the ack)."""
    what = "rule" if target.kind == "rule" else "model of variable"
    events = EVENTS[target.kind]
    return "\n".join(
        [
            f"The trainer task owning partition {partition} applies it in order, after the "
            f"{events} before it. In one transaction it",
            f"  - deletes the {what} {target.key!r} from its state (if it holds none, "
            "nothing is written);",
            f"  - writes a tombstone to {target.changelog_topic} (key {target.changelog_key});",
            f"  - writes a tombstone to {target.version_topic} (key {target.key}): readers "
            "see it (views drop the key, `show` says forgotten).",
            f"The next {NEXT_EVENT[target.kind]} for {target.key!r} after this tombstone "
            "starts a new life at version 1.",
            f"Check with: stream-trainer show {target.kind} {shlex.quote(target.key)} --history",
        ]
    )


def _confirm(target: Target) -> bool:
    if not sys.stdin.isatty():
        print("stream-trainer: refusing to forget without a terminal: pass --yes", file=sys.stderr)
        return False
    question = (
        f"Forget {target.kind} {target.key!r}? Its learned state and published versions are "
        "deleted; this cannot be undone. [y/N] "
    )
    try:
        answer = input(question)
    except EOFError:  # Ctrl-D: no answer is a no
        print()
        return False
    return answer.strip().lower() in ("y", "yes")


def forget(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0: tombstone written (or dry run); 1: not confirmed; errors raise (exit 2).

    Synchronous: the question is asked before any event loop runs (`input` blocks).
    """
    target = target_of(settings, args.kind, args.key)
    if not args.dry_run and not args.yes and not _confirm(target):
        print("stream-trainer: nothing written", file=sys.stderr)
        return 1
    partition, offset = asyncio.run(send_tombstone(settings, target, dry_run=args.dry_run))
    where = f"{target.input_topic} partition {partition}"
    if args.dry_run:
        print(f"dry run: would write a tombstone for {target.kind} {target.key!r} to {where}")
        return 0
    print(f"forget {target.kind} {target.key!r}: tombstone written to {where}, offset {offset}")
    print(describe_effects(target, partition))
    return 0
