"""What the queries and forget tests share: a tiny HTTP client for the ops port, a free
port, odd ids and their events, and the version/changelog topics read with tombstones.

`harness.read_outputs` decodes every version record, so it cannot read a topic holding
tombstones; `key_history` keeps them (value None).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from stream_trainer.events import Feedback, Observation, encode
from tests.integration import harness as h

# Ids a URL must encode: a slash, spaces, a literal "%20", non-ASCII.
ODD_IDS = ("a/b", "with space", "100%", "é✓ü", "slash/and space%20 é")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def get(port: int, path: str) -> tuple[int, bytes]:
    """GET `path` (already URL-encoded) on 127.0.0.1:port: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode("ascii"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def one(collection: str, key: str | bytes) -> str:
    """The path of one key, every byte outside unreserved characters percent-encoded."""
    return f"/v1/{collection}/{quote(key, safe='')}"


async def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Until /readyz answers 200 (partitions assigned and restored)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited with {proc.returncode}")
        try:
            if (await get(port, "/readyz"))[0] == 200:
                return
        except (ConnectionError, OSError):
            pass  # not listening yet
        await asyncio.sleep(0.2)
    raise AssertionError(f"trainer on port {port} not ready within {timeout_s}s")


async def page_through(
    port: int, collection: str, query: str = "", limit: int = 7
) -> list[tuple[list[bytes], bytes]]:
    """Every page of a listing, following `next`: (the items' ids, the raw body)."""
    pages: list[tuple[list[bytes], bytes]] = []
    after: str | None = None
    while True:
        params = f"limit={limit}" + (f"&{query}" if query else "")
        if after is not None:
            params += f"&after={quote(after, safe='')}"
        status, body = await get(port, f"/v1/{collection}?{params}")
        assert status == 200, body
        page = json.loads(body)
        assert len(page["items"]) <= limit
        field = "rule_id" if collection == "rules" else "model_id"
        pages.append(([str(item[field]).encode() for item in page["items"]], body))
        after = page["next"]
        if after is None:
            return pages


def page_body(values: Sequence[bytes], next_key: bytes | None) -> bytes:
    """The exact body a listing page of these wire values must have."""
    cursor = b"null" if next_key is None else json.dumps(next_key.decode()).encode()
    return b'{"items":[' + b",".join(values) + b'],"next":' + cursor + b"}"


async def key_history(bootstrap: str, topic: str) -> dict[bytes, list[bytes | None]]:
    """Every committed record per key, in offset order (None: a tombstone)."""
    history: dict[bytes, list[bytes | None]] = defaultdict(list)
    for record in await h.read_all(bootstrap, topic):
        history[record.key].append(record.value)
    return history


def latest(history: dict[bytes, list[bytes | None]]) -> dict[bytes, bytes]:
    """The latest value per key, keys whose latest record is a tombstone left out."""
    return {k: v[-1] for k, v in history.items() if v[-1] is not None}


def odd_events(ids: Sequence[str], count: int, start: datetime = T0) -> list[h.InputRecord]:
    """`count` observations and feedback for each id (as a variable and as a rule)."""
    records: list[h.InputRecord] = []
    tag = int(start.timestamp())
    for n in range(count):
        ts = start + timedelta(minutes=n)
        for i, key in enumerate(ids):
            value = 10.0 + i + 0.5 * ((n * 7 + i) % 5)
            obs = Observation(event_id=f"o-{i}-{n}-{tag}", variable=key, ts=ts, value=value)
            success = (n + i) % 3 != 0
            fb = Feedback(event_id=f"f-{i}-{n}-{tag}", rule_id=key, ts=ts, success=success)
            records.append(("observation", key.encode(), encode(obs)))
            records.append(("feedback", key.encode(), encode(fb)))
    return records
