"""stream-trainer end to end: `stream-trainer run --until-end` as a subprocess, timed from outside.

Each run has a fresh application id (so a fresh consumer group and changelog) and its own
output topics, and reads the shared pre-filled input topics from the beginning. Wall time is
process start to exit (interpreter start, topic preparation, group join and drain included);
the steady-state rate is the slope of the group's committed offsets between 10% and 90% of
the input, sampled from outside every 250 ms.

With ``replicas`` > 1, that many `stream-trainer run` processes join one group (same
application id, so the same transactional ids and changelog); with one GIL per process this
is how the service uses more than one core. They are started together and, once every
input record is committed, stopped with SIGTERM (see `_drive_replicas`); wall time is start
to the last exit, ``consumed_s`` start to the sample that saw everything committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import Progress, Topics, rss_bytes, sample_group, spawn, wait_process
from tests.integration import harness


def trainer_command(profile_to: Path | None, *, until_end: bool = True) -> list[str]:
    command = [sys.executable, "-m", "stream_trainer.cli", "run"]
    if until_end:
        command.append("--until-end")
    if profile_to is None:
        return command
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("--profile needs py-spy (pip install py-spy)")
    # Raw collapsed stacks, 200 Hz, idle frames excluded: summarised by benchmarks.profile.
    return [py_spy, "record", "-r", "200", "-f", "raw", "-o", str(profile_to), "--", *command]


async def run_trainer(
    bootstrap: str,
    inputs: Topics,
    total: int,
    log_dir: Path,
    *,
    guarantee: str,
    batch_events: int,
    replicas: int = 1,
    profile_to: Path | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    label = f"{guarantee}-{batch_events}-x{replicas}-{uuid.uuid4().hex[:6]}"
    run = Topics(f"{inputs.prefix}-{label}")
    env = {
        **os.environ,
        **run.env(
            bootstrap,
            processing_guarantee=guarantee,
            max_batch_events=batch_events,
            # Replicas are stopped by SIGTERM once their lines say they started (INFO).
            log_level="WARNING" if replicas == 1 else "INFO",
        ),
        "STREAM_TRAINER_TOPIC_OBSERVATIONS": inputs.observations,
        "STREAM_TRAINER_TOPIC_FEEDBACK": inputs.feedback,
    }
    log_paths = [log_dir / f"trainer-{label}-{i}.log" for i in range(replicas)]
    progress = Progress()
    started, started_wall = time.monotonic(), time.time()
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(p.open("wb")) for p in log_paths]
        if replicas == 1:
            procs = [spawn(trainer_command(profile_to, until_end=True), logs[0], env)]
        else:
            procs = [spawn(trainer_command(None, until_end=False), log, env) for log in logs]
        sampler = asyncio.create_task(
            sample_group(bootstrap, run.application_id, started, progress)
        )
        peak_tasks = [asyncio.create_task(_peak_rss(proc)) for proc in procs]
        try:
            if replicas == 1:
                codes = [await wait_process(procs[0], timeout_s)]
            else:
                codes = await _drive_replicas(procs, log_paths, progress, total, timeout_s)
            peaks = [await task for task in peak_tasks]
        finally:
            for task in (sampler, *peak_tasks):
                task.cancel()
            await asyncio.gather(sampler, *peak_tasks, return_exceptions=True)
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    wall = time.monotonic() - started
    if any(codes):
        raise RuntimeError(f"trainer exited {codes}; see {log_paths}")
    accounted = await _accounted(bootstrap, run)
    consumed = progress.done_s(total)
    assigned = [_assignments(p, started_wall) for p in log_paths] if replicas > 1 else None
    all_active = _all_active_s(assigned) if assigned else None
    return {
        "guarantee": guarantee,
        "max_batch_events": batch_events,
        "replicas": replicas,
        "events": total,
        "wall_s": wall,
        "events_per_s": total / wall,
        "consumed_s": consumed,
        "steady_events_per_s": progress.steady_rate(total),
        "first_commit_s": progress.first_commit_s(),
        "peak_rss_mib": max(peaks) / 2**20,
        "peak_rss_mib_each": [p / 2**20 for p in peaks],
        # Replicas: each one's non-empty assignments (s after start, tasks); the rate while
        # every replica held tasks, from the first sample after the last one got its share.
        "assignments": assigned,
        "all_active_from_s": all_active,
        "all_active_events_per_s": (
            None if all_active is None else progress.rate_between(all_active, 0.9 * total)
        ),
        "metrics_account_for": accounted,
        "log": ", ".join(str(p) for p in log_paths),
    }


async def _drive_replicas(
    procs: list[subprocess.Popen[bytes]],
    log_paths: list[Path],
    progress: Progress,
    total: int,
    timeout_s: float,
) -> list[int]:
    """Replicas run without --until-end: SIGTERM them once the group committed everything.

    `Trainer._reached_end` counts a partition as done only if this process owns it, so a
    replica that owns a strict subset of the partitions never exits by itself.
    """
    deadline = time.monotonic() + timeout_s
    for proc, path in zip(procs, log_paths, strict=True):
        await _wait_logged(proc, path, b"trainer started", deadline)
    while (progress.samples[-1][1] if progress.samples else 0) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"replicas did not commit {total} records in {timeout_s}s")
        exited = [proc.returncode for proc in procs if proc.poll() is not None]
        if exited:
            raise RuntimeError(f"a replica exited early ({exited}); see {log_paths}")
        await asyncio.sleep(0.05)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    return [await wait_process(proc, max(1.0, deadline - time.monotonic())) for proc in procs]


async def _wait_logged(
    proc: subprocess.Popen[bytes], path: Path, line: bytes, deadline: float
) -> None:
    while line not in await asyncio.to_thread(path.read_bytes):
        if proc.poll() is not None:
            raise RuntimeError(f"replica exited {proc.returncode} before {line!r}; see {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {line!r} in {path}")
        await asyncio.sleep(0.05)


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


def _all_active_s(assigned: list[list[tuple[float, str]]]) -> float | None:
    """When the last replica got its first tasks (None if one never did)."""
    if not all(assigned):
        return None
    return max(each[0][0] for each in assigned)


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
