"""Fresh compacted version topics, and versions written to them transactionally.

Used by the view and `show` tests to produce versions directly (no trainer), with the
same keying (the default partitioner) as the trainer, committed or aborted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_trainer.events import ModelVersion, RuleVersion, encode

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# (key, value or None for a tombstone, explicit partition or None for the default one)
Write = tuple[str, RuleVersion | ModelVersion | None, int | None]


async def version_topic(bootstrap: str, label: str, partitions: int = 6) -> str:
    name = f"t{label}-{uuid.uuid4().hex[:8]}.versions"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"cleanup.policy": "compact"}
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()
    return name


def rule(rule_id: str, version: int, trust: float | None = None) -> RuleVersion:
    t = trust if trust is not None else (version % 10) / 10 + 0.05
    return RuleVersion(
        rule_id=rule_id,
        version=version,
        alpha=1.0 + version,
        beta=1.0 + version / 2,
        trust=t,
        trust_low=t / 2,
        trust_high=min(1.0, t * 1.5),
        evidence=float(version),
        status="active" if t >= 0.5 else "probation",
        trained_through=T0 + timedelta(seconds=version),
        published_at=T0 + timedelta(seconds=version, microseconds=500),
    )


def model(variable: str, version: int) -> ModelVersion:
    return ModelVersion(
        model_id=variable,
        version=version,
        order=2,
        coefficients=[0.5, 0.9 - version / 1000, 0.01],
        n_observations=10 * version,
        mse=1.0 / version,
        baseline_mse=2.0 / version,
        skill=0.5 if version > 1 else None,
        trained_through=T0 + timedelta(seconds=version),
        published_at=T0 + timedelta(seconds=version, microseconds=500),
    )


class VersionWriter:
    """A transactional producer: each `commit`/`abort` call is one transaction."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            transactional_id=f"versions-{uuid.uuid4().hex[:8]}",
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
        )

    async def __aenter__(self) -> VersionWriter:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def commit(self, topic: str, writes: Iterable[Write]) -> int:
        async with self._producer.transaction():
            return await self._send(topic, writes)

    async def abort(self, topic: str, writes: Iterable[Write]) -> int:
        """Write inside a transaction, wait until the records are in the log, then abort."""
        await self._producer.begin_transaction()
        count = await self._send(topic, writes)
        await self._producer.abort_transaction()
        return count

    async def _send(self, topic: str, writes: Iterable[Write]) -> int:
        futures = []
        for key, value, partition in writes:
            raw = None if value is None else encode(value)
            futures.append(
                await self._producer.send(topic, raw, key=key.encode(), partition=partition)
            )
        await asyncio.gather(*futures)
        return len(futures)


def committed(writes: Iterable[Write]) -> dict[str, RuleVersion | ModelVersion | None]:
    """The latest per key of writes in order (tombstones as None), by the views' rules."""
    latest: dict[str, RuleVersion | ModelVersion | None] = {}
    for key, value, _ in writes:
        held = latest.get(key)
        if value is None or held is None or value.version > held.version:
            latest[key] = value
    return latest
