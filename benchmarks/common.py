"""Shared pieces of the benchmark: the machine, the input, group progress sampling."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One import point for the synthetic traffic, so the harness also runs against commits from
# before it moved to stream_trainer/dev/ (the same benchmark on old and new code).
try:
    from stream_trainer.dev import synthetic
except ImportError:
    from stream_trainer import synthetic  # type: ignore[attr-defined,no-redef]
from tests.integration import harness  # noqa: E402
from tests.integration.harness import Topics  # noqa: E402

SyntheticPulse = synthetic.SyntheticPulse
FEEDBACK = synthetic.FEEDBACK
rule_name = synthetic.rule_name
variable_name = synthetic.variable_name

__all__ = [
    "FEEDBACK",
    "ROOT",
    "SEED",
    "Progress",
    "SyntheticPulse",
    "Topics",
    "Workload",
    "local_broker",
    "machine",
    "prefill",
    "rule_name",
    "spawn",
    "variable_name",
]

SEED = 20260101
PARTITIONS = 6


@dataclass(frozen=True)
class Workload:
    """The seeded input: 1:1 observations:feedback over n_variables variables and n_rules rules."""

    events: int
    n_variables: int = 10_000
    n_rules: int = 10_000
    partitions: int = PARTITIONS
    seed: int = SEED

    def records(self, n: int | None = None) -> list[harness.InputRecord]:
        pulse = SyntheticPulse(self.seed, self.n_variables, self.n_rules)
        return list(pulse.records(self.events if n is None else n))

    @property
    def label(self) -> str:
        """Short name of the key space, e.g. "10k+10k" or "200+200"."""
        return f"{_count(self.n_variables)}+{_count(self.n_rules)}"


# The two key spaces of issue 10: many keys (per-key Python and output records dominate)
# and few hot keys (many events per key per batch).
WORKLOADS = {"10k": (10_000, 10_000), "hot": (200, 200)}


def _count(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def local_broker() -> str:
    """The shared detached local broker's address, started if none answers."""
    try:
        from stream_trainer.dev.broker.local_broker import ensure_local_broker
    except ImportError:  # before the move to stream_trainer/dev/
        from stream_trainer.kafka.local_broker import (  # type: ignore[import-not-found,no-redef]
            ensure_local_broker,
        )
    return ensure_local_broker()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import aiokafka
    import msgspec

    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "msgspec": msgspec.__version__,
        "aiokafka": aiokafka.__version__,
        "platform": platform.platform(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "mem_total_gib": _mem_total_gib(),
    }
    for name, module in (("faust_streaming", "faust"), ("quixstreams", "quixstreams")):
        try:
            info[name] = importlib.import_module(module).__version__
        except ImportError:
            info[name] = None
    return info


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in names])
    finally:
        await admin.close()


async def prefill(bootstrap: str, topics: Topics, workload: Workload) -> float:
    """Create the input topics and produce the workload; returns seconds taken."""
    started = time.monotonic()
    await harness.create_inputs(bootstrap, topics, workload.partitions)
    await harness.produce(bootstrap, topics, workload.records())
    return time.monotonic() - started


async def prefill_uncommitted(
    bootstrap: str, topics: Topics, workload: Workload
) -> AIOKafkaProducer:
    """Create the input topics and produce the workload inside one open transaction.

    `read_committed` consumers (the trainer's) see none of it until the caller commits the
    returned producer's transaction (then stops it): a gate that releases the whole input
    at once, e.g. once every replica of a group holds its tasks.
    """
    await harness.create_inputs(bootstrap, topics, workload.partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"{topics.prefix}-prefill",
        transaction_timeout_ms=600_000,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        futures = []
        for kind, key, value in workload.records():
            topic = topics.observations if kind == "observation" else topics.feedback
            futures.append(await producer.send(topic, value, key=key))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    except BaseException:
        await producer.stop()
        raise
    return producer


@dataclass
class Progress:
    """(seconds since start, records committed by the group) samples."""

    samples: list[tuple[float, int]] = field(default_factory=list)

    def steady_rate(self, total: int, low: float = 0.1, high: float = 0.9) -> float | None:
        """Events/s between the first sample past ``low`` and the first past ``high`` of total."""
        start = next(((t, n) for t, n in self.samples if n >= low * total), None)
        end = next(((t, n) for t, n in self.samples if n >= high * total), None)
        if start is None or end is None or end[0] <= start[0]:
            return None
        return (end[1] - start[1]) / (end[0] - start[0])

    def rate_by_decile(self, total: int) -> list[float | None]:
        """Committed-offset slope over each tenth of the input (is the rate sustained?)."""
        return [self.steady_rate(total, k / 10, (k + 1) / 10) for k in range(10)]

    def done_s(self, total: int) -> float | None:
        """Seconds from start to the first sample with every record committed."""
        return next((t for t, n in self.samples if n >= total), None)

    def first_commit_s(self) -> float | None:
        return next((t for t, n in self.samples if n > 0), None)


async def sample_group(
    bootstrap: str, group: str, started: float, progress: Progress, interval_s: float = 0.25
) -> None:
    """Record the group's committed total until cancelled."""
    while True:
        committed = await harness.committed_offsets(bootstrap, group)
        progress.samples.append((time.monotonic() - started, sum(committed.values())))
        await asyncio.sleep(interval_s)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def spawn(
    command: list[str], log: IO[bytes], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a subprocess (fork + exec returns at once; it is waited on with wait_process)."""
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_process(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Wait for a subprocess without blocking the loop; kill it past the timeout."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"process {proc.pid} still running after {timeout_s}s")
        await asyncio.sleep(0.05)
    return proc.returncode


@contextlib.contextmanager
def broker_or_local(bootstrap: str | None) -> Iterator[str]:
    """`bootstrap` when given, else a fresh local broker for the length of the block."""
    if bootstrap:
        yield bootstrap
        return
    from stream_trainer.dev.broker.local_broker import LocalKafkaBroker

    with LocalKafkaBroker() as local:
        yield local.bootstrap


def emit(result: dict[str, Any], json_path: Path | None) -> None:
    """Print a standalone benchmark's result as one JSON line (and write it to a file)."""
    text = json.dumps(result)
    if json_path:
        json_path.write_text(text)
    print(text)
