"""Live views: catch-up rate (versions/s), state memory per key, and `get` cost.

    python -m benchmarks.views [--bootstrap HOST:PORT] [--versions 200000] [--keys 20000]

Produces `--versions` rule versions over `--keys` rules (round-robin, so each key ends at
versions/keys) into a fresh compacted topic, in transactions of 5,000 records as the trainer
commits them, then times a `RuleView` from start to `ready()`, and, for comparison, a plain
read_committed read of the same topic with no decoding. Memory is measured apart, with
tracemalloc, on a `VersionTable` fed `--memory-keys` distinct rules (what a view holds).
Without `--bootstrap` a local broker is started for the run and stopped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.common import broker_or_local, emit, machine, rule_name
from stream_trainer.config import Settings
from stream_trainer.events import RuleVersion, encode
from stream_trainer.kafka.clients import read_to_end, stop_consumer, topic_partitions
from stream_trainer.views import RuleView, VersionTable
from stream_trainer.views.codecs import RULES

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TRANSACTION = 5_000


def version(i: int, v: int) -> RuleVersion:
    """A realistic rule version (full-precision floats, microsecond timestamps)."""
    trust = (i * 0.6180339887498949 + v * 0.1) % 1.0
    return RuleVersion(
        rule_id=rule_name(i),
        version=v,
        alpha=1.0 + v * 0.7316354,
        beta=1.0 + v * 0.2681734,
        trust=trust,
        trust_low=trust * 0.8123,
        trust_high=min(1.0, trust * 1.1734),
        evidence=v * 0.98765432,
        status="active" if trust >= 0.5 else "probation",
        trained_through=T0 + timedelta(seconds=v * 61.123457),
        published_at=T0 + timedelta(seconds=v * 61.5, microseconds=i % 1000),
    )


async def produce(bootstrap: str, topic: str, versions: int, keys: int, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"cleanup.policy": "compact"}
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"bench-{topic}", linger_ms=20,
        max_batch_size=512 * 1024, enable_idempotence=True, acks="all",
    )  # fmt: skip
    await producer.start()
    try:
        for start in range(0, versions, TRANSACTION):
            async with producer.transaction():
                futures = []
                for n in range(start, min(start + TRANSACTION, versions)):
                    i, v = n % keys, n // keys + 1
                    value = encode(version(i, v))
                    futures.append(await producer.send(topic, value, key=rule_name(i).encode()))
                await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def time_view(bootstrap: str, topic: str) -> dict[str, Any]:
    settings = Settings(bootstrap_servers=bootstrap, topic_rule_versions=topic)
    started = time.perf_counter()
    async with RuleView(settings) as view:
        await view.ready()
        ready_s = time.perf_counter() - started
        records, keys = view.stats.records, len(view)
        names = list(view)
        started = time.perf_counter()
        for name in names:
            view.get(name)
        get_us = (time.perf_counter() - started) / len(names) * 1e6
    return {"view_ready_s": ready_s, "records": records, "keys": keys,
            "versions_per_s": records / ready_s, "get_us": get_us}  # fmt: skip


async def time_plain_read(bootstrap: str, topic: str) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed",
        enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024,
    )  # fmt: skip
    await consumer.start()
    try:
        started = time.perf_counter()
        count = 0
        async for _, records in read_to_end(consumer, await topic_partitions(consumer, topic)):
            count += len(records)
        read_s = time.perf_counter() - started
    finally:
        await stop_consumer(consumer)
    return {"plain_read_s": read_s, "plain_records_per_s": count / read_s}


def memory_per_key(keys: int) -> dict[str, Any]:
    records = [(rule_name(i).encode(), encode(version(i, 17 + i % 50))) for i in range(keys)]
    gc.collect()
    tracemalloc.start()
    try:
        table = VersionTable(RULES)
        for key, value in records:
            table.apply(key, value)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    wire = sum(len(v) for _, v in records) / keys
    return {"memory_keys": len(table), "bytes_per_key": held / keys, "wire_json_bytes": wire}


async def run(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    topic = f"bench-views-{uuid.uuid4().hex[:8]}.rule-versions"
    started = time.perf_counter()
    await produce(bootstrap, topic, args.versions, args.keys, args.partitions)
    produce_s = time.perf_counter() - started
    view = await time_view(bootstrap, topic)
    if view["records"] != args.versions or view["keys"] != min(args.keys, args.versions):
        raise RuntimeError(f"view read {view['records']} records, {view['keys']} keys")
    return {
        "versions": args.versions, "partitions": args.partitions, "produce_s": produce_s,
        **view, **await time_plain_read(bootstrap, topic), **memory_per_key(args.memory_keys),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "machine": machine(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="an existing broker (default: start one)")
    parser.add_argument("--versions", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--memory-keys", type=int, default=100_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with broker_or_local(args.bootstrap) as bootstrap:
        result = asyncio.run(run(args, bootstrap))
    emit(result, args.json)


if __name__ == "__main__":
    main()
