"""Outage tests' tools: a broker of the test's own to stall or stop, and probe recorders.

`own_broker` starts a `LocalKafkaBroker` on a fresh data dir (not the session one: the
tests SIGSTOP and SIGTERM it). `stalled` freezes the broker process (SIGSTOP) and always
thaws it again, even when the test fails inside. `HealthProbe` polls a trainer's /readyz and
/healthz from a thread, so the record is complete whatever the test's event loop is doing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from stream_trainer.dev.broker.local_broker import LocalKafkaBroker
from tests.integration import harness as h

POLL_S = 0.25
HTTP_TIMEOUT_S = 5.0


def own_broker(data_dir: Path) -> LocalKafkaBroker:
    """A started broker of the caller's own on `data_dir` (kept after close, for its logs).

    Started from the calling (main) thread, so the JVM dies with the test process.
    """
    broker = LocalKafkaBroker(data_dir=data_dir)
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return broker


@contextmanager
def stalled(broker: LocalKafkaBroker) -> Iterator[None]:
    """The broker process frozen (SIGSTOP) for the body; resumed (SIGCONT) on any exit."""
    pid = broker.pid
    assert pid is not None, "the broker is not running"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@dataclass(frozen=True)
class Answer:
    path: str
    status: int | None  # None: no HTTP answer (refused, timed out)
    body: str


class HealthProbe:
    """Polls /readyz and /healthz every `POLL_S` in a thread; `answers` is the record."""

    def __init__(self, port: int) -> None:
        self._base = f"http://127.0.0.1:{port}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._answers: list[Answer] = []
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    def mark(self) -> int:
        """A position in the record, to look at what came after it."""
        with self._lock:
            return len(self._answers)

    def since(self, mark: int, path: str) -> list[Answer]:
        return [a for a in self.answers[mark:] if a.path == path]

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in ("/readyz", "/healthz"):
                answer = self._get(path)
                with self._lock:
                    self._answers.append(answer)
            self._stop.wait(POLL_S)

    def _get(self, path: str) -> Answer:
        try:
            with urllib.request.urlopen(self._base + path, timeout=HTTP_TIMEOUT_S) as response:
                return Answer(path, response.status, response.read().decode())
        except urllib.error.HTTPError as exc:
            return Answer(path, exc.code, exc.read().decode())
        except OSError as exc:
            return Answer(path, None, repr(exc))


def scrape(port: int) -> dict[str, float]:
    """The trainer's /metrics, each sample name summed over its labels."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def wait_ready(
    probe: HealthProbe, proc: subprocess.Popen[bytes], guard_s: float = 180.0
) -> None:
    """Until the latest /readyz answer is 200 (`guard_s` is a hang guard only)."""
    deadline = time.monotonic() + guard_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"trainer exited with {proc.returncode}"
        readyz = [a for a in probe.answers[-4:] if a.path == "/readyz"]
        if readyz and readyz[-1].status == 200:
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"trainer not ready within {guard_s:.0f} s: {probe.answers[-4:]}")


async def committed_total(bootstrap: str, topics: h.Topics) -> int:
    return sum((await h.committed_offsets(bootstrap, topics.application_id)).values())


async def wait_progress(
    bootstrap: str,
    topics: h.Topics,
    past: int,
    proc: subprocess.Popen[bytes],
    guard_s: float = 120.0,
) -> int:
    """Until the group committed more than `past` input offsets in total; that total."""
    deadline = time.monotonic() + guard_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"trainer exited with {proc.returncode}"
        total = await committed_total(bootstrap, topics)
        if total > past:
            return total
        await asyncio.sleep(0.05)
    raise AssertionError(f"no progress past {past} committed offsets within {guard_s:.0f} s")


def chunks(records: Sequence[h.InputRecord], parts: int) -> list[Sequence[h.InputRecord]]:
    size = -(-len(records) // parts)
    return [records[i : i + size] for i in range(0, len(records), size)]
