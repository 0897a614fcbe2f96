"""Runs the Faust peer (benchmarks.faust_peer) as a subprocess and times it from outside."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import Topics, spawn, wait_process


async def run_faust(
    bootstrap: str,
    inputs: Topics,
    max_events: int,
    log_dir: Path,
    *,
    mode: str,
    take: int = 5000,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    run_prefix = f"{inputs.prefix}-faust-{mode}-{uuid.uuid4().hex[:6]}"
    out = log_dir / f"{run_prefix}.json"
    log_path = log_dir / f"{run_prefix}.log"
    command = [
        sys.executable, "-m", "benchmarks.faust_peer",
        "--bootstrap", bootstrap, "--inputs", inputs.prefix, "--app-id", run_prefix,
        "--mode", mode, "--max-events", str(max_events), "--take", str(take),
        "--out", str(out),
    ]  # fmt: skip
    started = time.monotonic()
    started_wall = time.time()
    with log_path.open("wb") as log:
        proc = spawn(command, log)
        try:
            await wait_process(proc, timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    exited = time.monotonic() - started
    if not out.exists():
        raise RuntimeError(f"Faust peer ({mode}) wrote no result; see {log_path}")
    result = json.loads(out.read_text())
    wall = result["finished_wall"] - started_wall
    return {
        "mode": mode if mode == "event" else f"take({take})",
        "events": result["events"],
        "wall_s": wall,
        "events_per_s": result["events"] / wall,
        "steady_events_per_s": result["steady_events_per_s"],
        "exit_s": exited,
        "mean_records_per_call": result["mean_records_per_call"],
        "log": str(log_path),
    }
