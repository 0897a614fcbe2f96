"""Queries on the running trainer: the last committed version of a key, and paged listings.

``GET /v1/rules/{rule_id}`` and ``GET /v1/models/{variable}`` answer 200 with exactly the
wire JSON of the key's last committed version, if this member owns the key's partition;
404 with ``{"error": ..., "partition": n}`` otherwise (n is the input partition the default
partitioner gives the key, so the caller knows which member to ask). Listings,
``GET /v1/rules?status=retired&limit=100&after=CURSOR`` and ``GET /v1/models?limit=100``,
page through the keys this member owns in key order. Work per request is bounded: keys are
sorted off the event loop, and one page scans at most `MAX_SCAN` keys (a page that stops
there says so with its ``next`` cursor even when it holds fewer than ``limit`` items).
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote_to_bytes

from stream_trainer.kafka.partitioning import default_partitions

if TYPE_CHECKING:
    from stream_trainer.config import Settings
    from stream_trainer.tasks import TaskManager

MAX_LIMIT = 1000
MAX_SCAN = 20_000
STATUSES = ("active", "probation", "retired")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes


class VersionSource:
    """What queries read: per version topic, the committed versions of the owned tasks."""

    def __init__(
        self,
        topics: Mapping[str, str],
        partitions: Callable[[], int],
        held: Callable[[str], Mapping[int, Mapping[bytes, bytes]]],
    ) -> None:
        self.topics = dict(topics)  # "rules" | "models" -> version topic
        self.partitions = partitions  # input partition count
        self.held = held  # topic -> {task: {key: wire value}}

    @classmethod
    def of_tasks(
        cls, settings: Settings, tasks: TaskManager, partitions: Callable[[], int]
    ) -> VersionSource:
        """The committed versions of the tasks a trainer holds."""

        def held(topic: str) -> dict[int, dict[bytes, bytes]]:
            return {n: t.checkpoint.versions.get(topic, {}) for n, t in tasks.tasks.items()}

        topics = {"rules": settings.topic_rule_versions, "models": settings.topic_model_versions}
        return cls(topics, partitions, held)


class Queries:
    """Routes ``/v1/...`` paths; `answer` never blocks the loop for long."""

    def __init__(self, source: VersionSource) -> None:
        self._source = source
        self._sorted: dict[tuple[str, int], tuple[int, list[bytes]]] = {}

    async def answer(self, path: str, query: str) -> Answer | None:
        """The answer for a ``/v1/`` path, or None when the path is not ours."""
        parts = path.split("/")
        if len(parts) < 3 or parts[1] != "v1" or parts[2] not in self._source.topics:
            return None
        collection = parts[2]
        if len(parts) == 3:
            return await self._listing(collection, query)
        if len(parts) == 4 and parts[3]:
            return self._one(collection, unquote_to_bytes(parts[3]))
        return _error(404, "not found")

    def _one(self, collection: str, key: bytes) -> Answer:
        topic = self._source.topics[collection]
        count = self._source.partitions()
        partition = int(default_partitions([key], count)[0]) if count else -1
        held = self._source.held(topic)
        if partition not in held:
            return _error(404, "this member does not own the key's partition", partition)
        value = held[partition].get(key)
        if value is None:
            return _error(
                404, f"unknown {collection[:-1]} {key.decode(errors='replace')!r}", partition
            )
        return Answer(200, value)

    async def _listing(self, collection: str, query: str) -> Answer:
        try:
            limit, after, status = _listing_params(query, collection)
        except ValueError as exc:
            return _error(400, str(exc))
        topic = self._source.topics[collection]
        held = self._source.held(topic)
        runs = []
        for task, values in held.items():
            keys = await self._sorted_keys(topic, task, values)
            start = bisect.bisect_right(keys, after) if after is not None else 0
            runs.append([(key, values) for key in keys[start : start + MAX_SCAN]])
        items: list[bytes] = []
        last: bytes | None = None
        more = False
        for scanned, (key, values) in enumerate(heapq.merge(*runs, key=_first)):
            if len(items) >= limit or scanned >= MAX_SCAN:
                more = True
                break
            last = key
            value = values.get(key)
            if value is not None and (status is None or status in value):
                items.append(value)
        body = b'{"items":[' + b",".join(items) + b'],"next":' + _cursor(last if more else None)
        return Answer(200, body + b"}")

    async def _sorted_keys(
        self, topic: str, task: int, values: Mapping[bytes, bytes]
    ) -> list[bytes]:
        """The task's keys in order, re-sorted in a thread when the key set changed."""
        cached = self._sorted.get((topic, task))
        if cached is not None and cached[0] == len(values):
            return cached[1]
        keys = await asyncio.to_thread(sorted, list(values))
        self._sorted[(topic, task)] = (len(values), keys)
        return keys


def _listing_params(query: str, collection: str) -> tuple[int, bytes | None, bytes | None]:
    params = parse_qs(query, keep_blank_values=True)
    try:
        limit = int(params.get("limit", ["100"])[0])
    except ValueError as exc:
        raise ValueError("limit must be an integer") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be in 1..{MAX_LIMIT}")
    after = params.get("after", [None])[0]
    status = params.get("status", [None])[0]
    if status is not None and (collection != "rules" or status not in STATUSES):
        raise ValueError(f"status filters rules only, one of {', '.join(STATUSES)}")
    needle = f'"status":"{status}"'.encode() if status is not None else None
    return limit, after.encode() if after is not None else None, needle


def _first(pair: tuple[bytes, object]) -> bytes:
    return pair[0]


def _cursor(key: bytes | None) -> bytes:
    if key is None:
        return b"null"
    return json.dumps(key.decode(errors="replace")).encode()


def _error(status: int, message: str, partition: int | None = None) -> Answer:
    body: dict[str, object] = {"error": message}
    if partition is not None:
        body["partition"] = partition
    return Answer(status, json.dumps(body).encode())
