"""Queries under load: `GET /v1/rules/{id}` latency while the trainer learns a steady stream.

    python -m benchmarks.queries [--bootstrap HOST:PORT] [--rate 10000] [--requests 3000]

Starts the trainer (`stream-trainer run`, a subprocess as in production) on fresh 6-partition
topics, sends the seeded mix (`--keys` rules and as many variables, 1:1 feedback and
observations) at `--rate` events/s and, after `--warmup-s` (every rule has a committed
version by then), times `--requests` sequential requests for random rule ids (seeded) from a
separate client process, one connection per request as the ops server serves them: connect,
send, read to the end. The same requests are then timed again with the stream stopped and
the trainer idle. The trainer's own consumption during the loaded round is reported too,
to show it kept up with the stream while answering. Without `--bootstrap` a local broker is
started for the run and stopped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchmarks.common import Workload, broker_or_local, emit, machine, rule_name
from benchmarks.paced import Sent, endless, produce_paced
from tests.integration import harness

SLOW_S = 0.05


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(port: int, path: str) -> tuple[int, float, float]:
    """One GET on a fresh connection: (status, seconds from connect to the last byte, the
    monotonic time it started)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode("ascii"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    elapsed = time.perf_counter() - started
    return int(b"".join(chunks).split(b" ", 2)[1]), elapsed, started


def measure(port: int, paths: list[str]) -> list[tuple[int, float, float]]:
    """Every request in order, back to back (runs in the client process)."""
    return [request(port, path) for path in paths]


def percentiles(results: list[tuple[int, float, float]], seconds: float) -> dict[str, Any]:
    latencies = sorted(t * 1000 for _, t, _ in results)
    first = results[0][2]
    # When the slow ones happened (s into the round): periodic stalls show as a pattern.
    slow = [[round(at - first, 2), round(t * 1000, 1)] for _, t, at in results if t > SLOW_S]

    def at(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3)

    return {
        "requests": len(results),
        "statuses": dict(Counter(status for status, _, _ in results)),
        "p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": at(1.0),
        "requests_per_s": round(len(results) / seconds, 1), "slow": slow[:30],
    }  # fmt: skip


async def timed_round(pool: ProcessPoolExecutor, port: int, paths: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    results = await asyncio.get_running_loop().run_in_executor(pool, measure, port, paths)
    return percentiles(results, time.monotonic() - started)


async def committed(bootstrap: str, topics: harness.Topics) -> int:
    return sum((await harness.committed_offsets(bootstrap, topics.application_id)).values())


async def wait_ready(port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if (await asyncio.to_thread(request, port, "/readyz"))[0] == 200:
                return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"trainer not ready within {timeout_s}s")


async def loaded_round(
    args: argparse.Namespace, bootstrap: str, topics: harness.Topics, port: int, paths: list[str]
) -> dict[str, Any]:
    """Queries while the stream runs at --rate; the trainer's consumption meanwhile."""
    workload = Workload(events=0, n_variables=args.keys, n_rules=args.keys)
    sent = Sent()
    records = endless(workload, args.rate)
    producing = asyncio.create_task(
        produce_paced(bootstrap, topics, records, args.rate, 3600, sent, workload.partitions)
    )
    try:
        await asyncio.sleep(args.warmup_s)
        with ProcessPoolExecutor(max_workers=1) as pool:
            await timed_round(pool, port, paths[:50])  # the client process warms up
            before, started = await committed(bootstrap, topics), time.monotonic()
            loaded = await timed_round(pool, port, paths)
            elapsed = time.monotonic() - started
            consumed = (await committed(bootstrap, topics) - before) / elapsed
            sent_rate = sent.sent / (time.monotonic() - (sent.started or started))
    finally:
        producing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producing
    return {**loaded, "stream_events_per_s": round(sent_rate),
            "trainer_committed_events_per_s": round(consumed)}  # fmt: skip


async def run(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    topics = harness.new_topics("bench-queries")
    await harness.create_inputs(bootstrap, topics, 6)
    rng = random.Random(args.seed)
    paths = [f"/v1/rules/{quote(rule_name(rng.randrange(args.keys)), safe='')}"
             for _ in range(args.requests)]  # fmt: skip
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "trainer.log"
        proc = harness.start_trainer(bootstrap, topics, log, http_port=port)
        try:
            await wait_ready(port)
            loaded = await loaded_round(args, bootstrap, topics, port, paths)
            await harness.wait_consumed(bootstrap, topics, timeout_s=300, procs=[proc])
            with ProcessPoolExecutor(max_workers=1) as pool:
                await timed_round(pool, port, paths[:50])
                idle = await timed_round(pool, port, paths)
        finally:
            if harness.stop_trainer(proc) != 0:
                print(log.read_text()[-3000:])
    return {
        "rate": args.rate, "keys": args.keys, "loaded": loaded, "idle": idle,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "machine": machine(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap", help="an existing broker (default: start one)")
    parser.add_argument("--rate", type=float, default=10_000, help="events/s (default 10k)")
    parser.add_argument("--keys", type=int, default=10_000, help="rules (and variables)")
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--warmup-s", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with broker_or_local(args.bootstrap) as bootstrap:
        result = asyncio.run(run(args, bootstrap))
    emit(result, args.json)


if __name__ == "__main__":
    main()
