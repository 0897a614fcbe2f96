"""`stream-trainer train` on JSON Lines: events/s and peak RSS against input size (issue 13).

    python -m benchmarks.train_files [--events 1000000] [--variables 10000] [--rules 10000]
        [--workdir DIR] [--split] [--json OUT]

Writes the seeded synthetic history (1:1 observations:feedback over 10k variables and 10k
rules) as two JSON Lines files at two sizes (``--events`` / 4 and ``--events``; the smaller
is a prefix of the larger), runs ``stream-trainer train`` on each in a fresh process and
prints:

- events/s as `train` reports it in summary.json (reading, validation, learning, writing
  the outputs; not the interpreter start and imports), and the wall time of the process;
- the process's peak RSS (``wait4``). Equal figures at both sizes show that memory does not
  grow with the input (it grows with the number of keys, which is the same). Each size runs
  twice: with the default settings, whose 1-day dedupe window keeps every feedback id of
  this (under an hour of event time) history, and with a 1 s window, which leaves what
  the bridge itself holds.

``--split`` also runs the larger input in-process with a timer around each stage of the
batch path: reading (file -> `FileRecord`s), `decode_batch` (validation, columns) and
`TaskState.learn` (the learners).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stream_trainer.batching import KafkaRecord, PendingBatch, decode_batch  # noqa: E402
from stream_trainer.bridge.inputs import file_rows, plan_inputs  # noqa: E402
from stream_trainer.bridge.records import OBSERVATION, batches, to_records  # noqa: E402
from stream_trainer.bridge.train import collector_tuned  # noqa: E402
from stream_trainer.config import load_settings  # noqa: E402
from stream_trainer.dev.synthetic import SyntheticPulse  # noqa: E402
from stream_trainer.state import TaskState  # noqa: E402

SEED = 20260101


def write_history(directory: Path, events: int, variables: int, rules: int) -> dict[str, Path]:
    """observations.jsonl + feedback.jsonl of the first `events` records (cached by name)."""
    stem = f"{events}-{variables}-{rules}"
    paths = {k: directory / f"{k}-{stem}.jsonl" for k in ("observations", "feedback")}
    if all(p.exists() for p in paths.values()):
        return paths
    pulse = SyntheticPulse(SEED, variables, rules)
    with paths["observations"].open("wb") as obs, paths["feedback"].open("wb") as fb:
        for kind, _, value in pulse.records(events):
            (obs if kind == OBSERVATION else fb).write(value + b"\n")
    return paths


def run_train(paths: dict[str, Path], out: Path, dedupe_window_s: float | None) -> dict[str, Any]:
    """One `train` process: its summary, wall time, CPU time and peak RSS."""
    env = dict(os.environ)
    if dedupe_window_s is not None:
        env["STREAM_TRAINER_DEDUPE_WINDOW_S"] = str(dedupe_window_s)
    command = [sys.executable, "-m", "stream_trainer.cli", "train"]
    command += ["--observations", str(paths["observations"]), "--feedback", str(paths["feedback"])]
    command += ["--output-dir", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"train failed:\n{stderr}")
    summary = json.loads((out / "summary.json").read_text())
    size = sum(p.stat().st_size for p in paths.values())
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "dedupe_window_s": summary["settings"]["dedupe_window_s"],
        "events": summary["totals"]["records"],
        "input_mb": round(size / 1e6, 1),
        "events_per_s": summary["events_per_s"],
        "train_s": summary["duration_s"],
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),  # the whole process: imports and start-up included
        "events_per_cpu_s": round(summary["totals"]["records"] / cpu),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is KiB on Linux
    }


def split(paths: dict[str, Path]) -> dict[str, float]:
    """CPU seconds per stage of the batch path, in-process (as `train` runs it)."""
    with collector_tuned():
        return _split(paths)


def _split(paths: dict[str, Path]) -> dict[str, float]:
    settings = load_settings(environ={})
    state = TaskState(settings)
    times = {"read": 0.0, "decode_batch": 0.0, "learn": 0.0}
    size = settings.max_batch_events
    planned = plan_inputs(settings, [str(paths["observations"])], [str(paths["feedback"])])
    for index, item in enumerate(planned):
        offset = 0
        chunks = batches(file_rows(item, size), size)
        while True:
            t0 = time.thread_time()
            rows = next(chunks, None)
            if rows is None:
                break
            records = cast(list[KafkaRecord], to_records(rows, item.topic, index, offset))
            offset += len(records)
            t1 = time.thread_time()
            obs = records if item.kind == OBSERVATION else []
            pending = PendingBatch(0, 0, 0.0, obs, [] if obs else records)
            batch = decode_batch(pending, settings.max_event_bytes, check_keys=False)
            t2 = time.thread_time()
            state.learn(batch)
            t3 = time.thread_time()
            times["read"] += t1 - t0
            times["decode_batch"] += t2 - t1
            times["learn"] += t3 - t2
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--variables", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--workdir", type=Path, help="keep the input files here (reused)")
    parser.add_argument("--split", action="store_true", help="time the stages in-process too")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="train-files-"))
    workdir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"runs": []}
    print("| dedupe window s | events | MB | events/s | train s | wall s | CPU s | events/CPU-s "
          "| peak RSS MB |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    # The default 1-day dedupe window holds every feedback id of this history (it spans
    # under an hour of event time), so RSS grows with the feedback count up to the window;
    # a 1 s window shows what the bridge itself holds.
    for window in (None, 1.0):
        for events in (args.events // 4, args.events):
            paths = write_history(workdir, events, args.variables, args.rules)
            run = run_train(paths, workdir / f"out-{events}", window)
            figures["runs"].append(run)
            print(
                f"| {run['dedupe_window_s']:,.0f} | {run['events']:,} | {run['input_mb']} | "
                f"{run['events_per_s']:,} | {run['train_s']} | {run['wall_s']} | {run['cpu_s']} | "
                f"{run['events_per_cpu_s']:,} | {run['peak_rss_mb']} |"
            )
    if args.split:
        times = split(write_history(workdir, args.events, args.variables, args.rules))
        total = sum(times.values())
        figures["split_s"] = times
        rate = args.events / total
        print(f"\nin-process CPU split of {args.events:,} events ({rate:,.0f} events/CPU-s):")
        for stage, seconds in times.items():
            print(f"  {stage:<13} {seconds:7.2f} s  {seconds / total:6.1%}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
