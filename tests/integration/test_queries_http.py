"""`/v1` queries on running trainers (real broker): exactly what the version topics hold.

Two trainers share a group over 4 partitions. Once every input is committed, each key of the
version topics is asked of both members: its owner answers the key's latest version
byte-for-byte, the other 404 naming the key's partition. Listings page through the owned
keys in order, `status=` filtering as the versions say. Ids that need URL encoding (`/`,
spaces, a literal `%20`, non-ASCII) are part of the stream. After one member stops, the
other answers every key from the state it restored from the changelog.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from stream_trainer.commands.show import key_partition
from stream_trainer.ops.queries import STATUSES
from tests.integration import harness as h
from tests.integration.ops_client import (
    ODD_IDS,
    free_port,
    get,
    key_history,
    latest,
    odd_events,
    one,
    page_body,
    page_through,
    wait_ready,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 4
# Thresholds inside the synthetic rules' success rates (0.55..0.9): every status occurs.
SETTINGS: dict[str, Any] = {
    "max_batch_events": 500,
    "trust_retire_below": 0.7,
    "trust_probation_below": 0.8,
}
COLLECTIONS = ("rules", "models")


async def eventually(check: Callable[[], Awaitable[list[str]]], timeout_s: float) -> list[str]:
    """`check()` until it finds no problem; the last problems if it never did.

    Committed offsets (what `wait_consumed` sees) land a moment before the member records
    the versions it committed, and a rebalance takes a few seconds: both are waited out.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        problems = await check()
        if not problems or time.monotonic() > deadline:
            return problems
        await asyncio.sleep(0.5)


async def _topic_latest(bootstrap: str, topics: h.Topics) -> dict[str, dict[bytes, bytes]]:
    return {
        "rules": latest(await key_history(bootstrap, topics.rule_versions)),
        "models": latest(await key_history(bootstrap, topics.model_versions)),
    }


async def _one_key_problems(
    ports: Sequence[int], collection: str, key: bytes, value: bytes, owners: dict[int, set[int]]
) -> list[str]:
    """The key's owner answers `value` exactly; every other member 404 naming the partition."""
    partition = key_partition(key, PARTITIONS)
    problems = []
    found = 0
    for port in ports:
        status, body = await get(port, one(collection, key))
        if status == 200:
            found += 1
            owners[port].add(partition)
            if body != value:
                problems.append(f"{port} {collection} {key!r}: {body[:80]!r} != {value[:80]!r}")
            continue
        answer = json.loads(body)
        if status != 404 or answer.get("partition") != partition or "own" not in answer["error"]:
            problems.append(f"{port} {collection} {key!r}: {status} {answer}")
    if found != 1:
        problems.append(f"{collection} {key!r}: answered by {found} members, not 1")
    return problems


async def _unknown_key_problems(ports: Sequence[int], owners: dict[int, set[int]]) -> list[str]:
    """An unknown key: 404 'unknown' from its partition's owner, 404 'does not own' elsewhere."""
    problems = []
    for n in range(40):
        key = f"rule.nobody/é {n}%"
        partition = key_partition(key.encode(), PARTITIONS)
        for port in ports:
            status, body = await get(port, one("rules", key))
            answer = json.loads(body)
            mine = partition in owners[port]
            word = "unknown rule" if mine else "does not own"
            if status != 404 or answer.get("partition") != partition or word not in answer["error"]:
                problems.append(f"{port} unknown {key!r}: {status} {answer}")
    return problems


async def _listing_problems(
    port: int, owned: set[int], want: dict[str, dict[bytes, bytes]]
) -> list[str]:
    """Pages in key order, exactly the owned keys' wire values; `status=` filters by status."""
    problems = []
    for collection in COLLECTIONS:
        values = want[collection]
        mine = sorted(k for k in values if key_partition(k, PARTITIONS) in owned)
        filters = [("", mine)]
        if collection == "rules":
            filters += [
                (f"status={s}", [k for k in mine if json.loads(values[k])["status"] == s])
                for s in STATUSES
            ]
        for query, expected in filters:
            pages = await page_through(port, collection, query)
            listed = [key for ids, _ in pages for key in ids]
            if listed != expected:
                problems.append(f"{port} {collection}?{query}: {len(listed)} keys, not {expected}")
                continue
            for ids, body in pages:
                cursor = json.loads(body)["next"]
                exact = page_body([values[k] for k in ids], cursor and cursor.encode())
                if body != exact:
                    problems.append(f"{port} {collection}?{query}: page {body[:120]!r} differs")
    return problems


async def query_problems(bootstrap: str, topics: h.Topics, ports: Sequence[int]) -> list[str]:
    """Everything the members answer that differs from the version topics."""
    want = await _topic_latest(bootstrap, topics)
    owners: dict[int, set[int]] = {port: set() for port in ports}
    problems = []
    for collection in COLLECTIONS:
        for key, value in want[collection].items():
            problems += await _one_key_problems(ports, collection, key, value, owners)
    if problems:
        return problems[:20]
    claimed = [p for port in ports for p in owners[port]]
    if sorted(claimed) != list(range(PARTITIONS)):
        return [f"partitions answered {owners} are not each owned once"]
    problems += await _unknown_key_problems(ports, owners)
    for port in ports:
        problems += await _listing_problems(port, owners[port], want)
    return problems


async def test_queries_answer_the_version_topics_by_owner(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics, records = await h.seeded_stream(
        kafka_bootstrap, "queries", partitions=PARTITIONS, seed=31, models=150, events=20_000,
        produce_first=0,
    )  # fmt: skip
    records += odd_events(ODD_IDS, 40)
    log = tmp_path / "trainer.log"
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            procs.append(h.start_trainer(kafka_bootstrap, topics, log, http_port=port, **SETTINGS))
            await wait_ready(port, procs[-1])
        await wait_ready(ports[0], procs[0])  # settled after the second member joined
        await h.produce(kafka_bootstrap, topics, records)
        await h.wait_consumed(kafka_bootstrap, topics, timeout_s=180, procs=procs)

        problems = await eventually(lambda: query_problems(kafka_bootstrap, topics, ports), 60)
        assert problems == [], "\n".join(problems[:20])
        want = await _topic_latest(kafka_bootstrap, topics)
        assert {k.decode() for k in want["rules"]} >= set(ODD_IDS)
        assert {k.decode() for k in want["models"]} >= set(ODD_IDS)
        statuses = {json.loads(v)["status"] for v in want["rules"].values()}
        assert statuses == set(STATUSES), "the status filter must be tested on every status"

        # One member leaves: the other restores its partitions and answers them too.
        assert h.stop_trainer(procs.pop()) == 0
        problems = await eventually(lambda: query_problems(kafka_bootstrap, topics, ports[:1]), 90)
        assert problems == [], "\n".join(problems[:20])
    finally:
        for proc in procs:
            assert h.stop_trainer(proc) == 0, log.read_text()[-3000:]
