"""stream-trainer end to end: `stream-trainer run` subprocesses, timed from outside.

Each run has a fresh application id (so a fresh consumer group and changelog) and its own
output topics. Wall time is process start to exit (interpreter start, topic preparation,
group join and drain included); the steady-state rate is the slope of the group's committed
offsets between 10% and 90% of the input, sampled from outside every 250 ms.

Ungated runs (one `run --until-end` process) read the shared pre-filled input topics.

Gated runs (`gate`: a producer holding the whole input of fresh topics in one open
transaction, see `prefill_uncommitted`) start ``replicas`` `run` processes in one group
(same application id, so the same transactional ids and changelog; one GIL per process is
how the service uses more than one core), wait until the group's tasks are all assigned,
then commit the transaction so the `read_committed` trainers see the whole input at once,
and SIGTERM every process once everything is committed. Without the gate, the first replica
to join would process most of a 300k input alone while the group rebalances (heartbeat
every session_timeout/3 = 3.3 s, then a drain of queued batches and a restore). `--until-end`
is not used there: `Trainer._reached_end` counts a partition as done only if this process
owns it, so a replica owning a strict subset of the partitions never exits by itself.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks.common import (
    PARTITIONS,
    Progress,
    Topics,
    rss_bytes,
    sample_group,
    spawn,
    wait_process,
)
from tests.integration import harness


def trainer_command(profile_to: Path | None, *, until_end: bool = True) -> list[str]:
    command = [sys.executable, "-m", "stream_trainer.cli", "run"]
    if until_end:
        command.append("--until-end")
    if profile_to is None:
        return command
    # The venv's own py-spy when the venv is not on PATH (python run as .venv/bin/python).
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    # Raw collapsed stacks, 200 Hz, idle frames excluded: summarised by benchmarks.profile.
    return [py_spy, "record", "-r", "200", "-f", "raw", "-o", str(profile_to), "--", *command]


@dataclass
class _Group:
    """The processes of one run and what is watched while they run."""

    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    progress: Progress
    total: int
    started: float
    deadline: float
    gate_s: float | None = None


async def run_trainer(
    bootstrap: str,
    inputs: Topics,
    total: int,
    log_dir: Path,
    *,
    guarantee: str,
    batch_events: int,
    replicas: int = 1,
    gate: AIOKafkaProducer | None = None,
    profile_to: Path | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    gated = gate is not None
    label = f"{guarantee}-{batch_events}-x{replicas}{'g' if gated else ''}-{uuid.uuid4().hex[:6]}"
    run = Topics(f"{inputs.prefix}-{label}")
    env = {
        **os.environ,
        **run.env(
            bootstrap,
            processing_guarantee=guarantee,
            max_batch_events=batch_events,
            # Gated runs watch the "partitions assigned" lines (INFO).
            log_level="INFO" if gated else "WARNING",
        ),
        "STREAM_TRAINER_TOPIC_OBSERVATIONS": inputs.observations,
        "STREAM_TRAINER_TOPIC_FEEDBACK": inputs.feedback,
    }
    log_paths = [log_dir / f"trainer-{label}-{i}.log" for i in range(replicas)]
    started, started_wall = time.monotonic(), time.time()
    group = _Group([], log_paths, Progress(), total, started, started + timeout_s)
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(p.open("wb")) for p in log_paths]
        command = trainer_command(profile_to, until_end=not gated)
        group.procs = [spawn(command, log, env) for log in logs]
        sampler = asyncio.create_task(
            sample_group(bootstrap, run.application_id, started, group.progress)
        )
        peak_tasks = [asyncio.create_task(_peak_rss(proc)) for proc in group.procs]
        try:
            if gate is None:
                codes = [await wait_process(p, timeout_s) for p in group.procs]
            else:
                codes = await _drive_gated(group, gate)
            peaks = [await task for task in peak_tasks]
        finally:
            for task in (sampler, *peak_tasks):
                task.cancel()
            await asyncio.gather(sampler, *peak_tasks, return_exceptions=True)
            for proc in group.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    wall = time.monotonic() - started
    if any(codes):
        raise RuntimeError(f"trainer exited {codes}; see {log_paths}")
    progress = group.progress
    consumed = progress.done_s(total)
    from_gate = None if consumed is None or group.gate_s is None else consumed - group.gate_s
    return {
        "guarantee": guarantee,
        "max_batch_events": batch_events,
        "replicas": replicas,
        "gated": gated,
        "events": total,
        "wall_s": wall,
        "events_per_s": total / wall,
        "consumed_s": consumed,
        "steady_events_per_s": progress.steady_rate(total),
        "first_commit_s": progress.first_commit_s(),
        # Gated: input released at gate_s; from_gate_s = release to everything committed.
        "gate_s": group.gate_s,
        "from_gate_s": from_gate,
        "from_gate_events_per_s": None if not from_gate else total / from_gate,
        "assignments": [_assignments(p, started_wall) for p in log_paths] if gated else None,
        "peak_rss_mib": max(peaks) / 2**20,
        "peak_rss_mib_each": [p / 2**20 for p in peaks],
        "metrics_account_for": await _accounted(bootstrap, run),
        "rate_by_decile": progress.rate_by_decile(total),
        "log": ", ".join(str(p) for p in log_paths),
    }


async def _drive_gated(group: _Group, gate: AIOKafkaProducer) -> list[int]:
    """Release the input once the group holds every task; SIGTERM all once it is committed."""
    try:
        while not await asyncio.to_thread(_all_assigned, group.logs):
            _check_running(group)
            await asyncio.sleep(0.05)
        await gate.commit_transaction()
        group.gate_s = time.monotonic() - group.started
    finally:
        await gate.stop()
    while (group.progress.samples[-1][1] if group.progress.samples else 0) < group.total:
        _check_running(group)
        await asyncio.sleep(0.05)
    for proc in group.procs:
        proc.send_signal(signal.SIGTERM)
    remaining = max(1.0, group.deadline - time.monotonic())
    return [await wait_process(proc, remaining) for proc in group.procs]


def _check_running(group: _Group) -> None:
    if time.monotonic() > group.deadline:
        raise TimeoutError(f"run not done in time; see {group.logs}")
    exited = [proc.returncode for proc in group.procs if proc.poll() is not None]
    if exited:
        raise RuntimeError(f"a trainer exited early ({exited}); see {group.logs}")


def _all_assigned(logs: list[Path]) -> bool:
    """Every process's latest rebalance line is a non-empty assignment; all tasks covered."""
    tasks: set[int] = set()
    for path in logs:
        latest = None
        for line in path.read_bytes().decode(errors="replace").splitlines():
            if "partitions assigned" in line or "partitions revoked" in line:
                latest = line
        if latest is None or "partitions assigned" not in latest:
            return False
        owned = ast.literal_eval(latest.rsplit("tasks=", 1)[-1])
        if not owned:
            return False
        tasks.update(owned)
    return tasks == set(range(PARTITIONS))


def _assignments(path: Path, started_wall: float) -> list[tuple[float, str]]:
    """(seconds after start, tasks) of each non-empty "partitions assigned" line."""
    out = []
    for line in path.read_bytes().decode(errors="replace").splitlines():
        if "partitions assigned" not in line or "tasks=[]" in line:
            continue
        # The text log format starts with asctime, local time: "2026-11-29 03:37:57,711".
        at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append((at - started_wall, line.rsplit("tasks=", 1)[-1]))
    return out


async def _peak_rss(proc: subprocess.Popen[bytes]) -> int:
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, rss_bytes(_python_pid(proc)))
        except OSError:
            break  # exited between poll() and the read
        await asyncio.sleep(0.2)
    return peak


def _python_pid(proc: subprocess.Popen[bytes]) -> int:
    """The trainer's pid (under py-spy, its only child)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    if children.exists():
        pids = children.read_text().split()
        if pids:
            return int(pids[0])
    return proc.pid


async def _accounted(bootstrap: str, run: Topics) -> int:
    """Input records the committed training metrics account for (must equal the input)."""
    outputs = await harness.read_all(bootstrap, run.metrics)
    import msgspec

    from stream_trainer.events import TrainingMetrics

    decoder = msgspec.json.Decoder(TrainingMetrics)
    return sum(
        m.observations + m.feedback + m.invalid for m in (decoder.decode(r.value) for r in outputs)
    )
