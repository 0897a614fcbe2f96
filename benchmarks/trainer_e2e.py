"""stream-trainer end to end: `stream-trainer run --until-end` as a subprocess, timed from outside.

Each run has a fresh application id (so a fresh consumer group and changelog) and its own
output topics, and reads the shared pre-filled input topics from the beginning. Wall time is
process start to exit (interpreter start, topic preparation, group join and drain included);
the steady-state rate is the slope of the group's committed offsets between 10% and 90% of
the input, sampled from outside every 250 ms.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import Progress, Topics, rss_bytes, sample_group, spawn, wait_process
from tests.integration import harness


def trainer_command(profile_to: Path | None) -> list[str]:
    command = [sys.executable, "-m", "stream_trainer.cli", "run", "--until-end"]
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
    profile_to: Path | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    label = f"{guarantee}-{batch_events}-{uuid.uuid4().hex[:6]}"
    run = Topics(f"{inputs.prefix}-{label}")
    env = {
        **os.environ,
        **run.env(
            bootstrap,
            processing_guarantee=guarantee,
            max_batch_events=batch_events,
            log_level="WARNING",
        ),
        "STREAM_TRAINER_TOPIC_OBSERVATIONS": inputs.observations,
        "STREAM_TRAINER_TOPIC_FEEDBACK": inputs.feedback,
    }
    log_path = log_dir / f"trainer-{label}.log"
    progress = Progress()
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = spawn(trainer_command(profile_to), log, env)
        sampler = asyncio.create_task(
            sample_group(bootstrap, run.application_id, started, progress)
        )
        peak_task = asyncio.create_task(_peak_rss(proc))
        try:
            code = await wait_process(proc, timeout_s)
            peak_rss = await peak_task
        finally:
            for task in (sampler, peak_task):
                task.cancel()
            await asyncio.gather(sampler, peak_task, return_exceptions=True)
    wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"trainer exited {code}; see {log_path}")
    accounted = await _accounted(bootstrap, run)
    first_commit = progress.first_commit_s()
    return {
        "guarantee": guarantee,
        "max_batch_events": batch_events,
        "events": total,
        "wall_s": wall,
        "events_per_s": total / wall,
        "steady_events_per_s": progress.steady_rate(total),
        "first_commit_s": first_commit,
        "peak_rss_mib": peak_rss / 2**20,
        "metrics_account_for": accounted,
        "log": str(log_path),
    }


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
