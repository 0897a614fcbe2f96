"""Runs the Quix Streams peer (benchmarks.quix_peer) as a subprocess and times it from outside.

Besides the peer's own timings, it reads the run's version topics back ``read_committed``
and counts the versions: one per applied event must be there, or the row is not a result.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import Topics, spawn, wait_process
from tests.integration import harness


async def run_quix(
    bootstrap: str,
    inputs: Topics,
    max_events: int,
    log_dir: Path,
    *,
    commit_interval_s: float | None = None,
    timeout_s: float = 900.0,
) -> dict[str, Any]:
    run = Topics(f"{inputs.prefix}-quix-{uuid.uuid4().hex[:6]}")
    out = log_dir / f"{run.prefix}.json"
    log_path = log_dir / f"{run.prefix}.log"
    state_dir = log_dir / f"{run.prefix}-state"
    command = [
        sys.executable, "-m", "benchmarks.quix_peer", "--bootstrap", bootstrap,
        "--inputs", inputs.prefix, "--app-id", run.prefix, "--max-events", str(max_events),
        "--state-dir", str(state_dir), "--out", str(out),
    ]  # fmt: skip
    if commit_interval_s is not None:
        command += ["--commit-interval-s", str(commit_interval_s)]
    started, started_wall = time.monotonic(), time.time()
    try:
        with log_path.open("wb") as log:
            proc = spawn(command, log)
            try:
                code = await wait_process(proc, timeout_s)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)  # RocksDB files of a finished run
    if code != 0 or not out.exists():
        raise RuntimeError(f"Quix peer exited {code} without a result; see {log_path}")
    result = json.loads(out.read_text())
    versions = sum(
        [len(await harness.read_all(bootstrap, t)) for t in (run.model_versions, run.rule_versions)]
    )
    wall = result["finished_wall"] - started_wall
    return {
        "events": result["events"],
        "wall_s": wall,
        "events_per_s": result["events"] / wall,
        "steady_events_per_s": result["steady_events_per_s"],
        "first_to_last_s": result["first_to_last_s"],
        "first_to_committed_s": result["first_to_committed_s"],
        "exit_s": time.monotonic() - started,
        "commit_interval_s": result["commit_interval_s"],
        "refused": result["refused"],
        "versions_committed": versions,
        "log": str(log_path),
    }
