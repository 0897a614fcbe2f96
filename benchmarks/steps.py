"""One workload's measurements, in order, for benchmarks.run (which runs every workload).

Each step's result goes under its name in the workload's dict, in the shape the report
reads: ``ceiling``, ``trainer`` (list of runs), ``quix``, ``faust`` (list), ``learners``,
``latency`` (list: the fixed rate, then half the measured maximum), ``restore``, ``cpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Topics, Workload, prefill, prefill_uncommitted

STEPS = ("ceiling", "trainer", "quix", "faust", "learners", "latency", "restore", "cpu", "scale")
CPU_WARMUP_S = 10.0


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def measure_workload(
    args: argparse.Namespace, bootstrap: str, out_dir: Path, workload: Workload
) -> dict[str, Any]:
    steps = set(args.only or STEPS)
    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}")
    sample = workload.records(2000)
    w: dict[str, Any] = {
        "workload": {
            **workload.__dict__,
            "label": workload.label,
            "mean_bytes": sum(len(v or b"") for _, _, v in sample) / len(sample),
        },
        "trainer": [],
        "faust": [],
    }
    if steps & {"ceiling", "trainer", "quix", "faust"}:
        say(f"[{workload.label}] prefilling {workload.events:,} events into {topics.prefix}.*")
        w["prefill_s"] = await prefill(bootstrap, topics, workload)
    if "ceiling" in steps:
        from benchmarks.ceiling import run_ceiling

        say(f"[{workload.label}] ceiling")
        w["ceiling"] = {**await run_ceiling(bootstrap, topics, workload.events), "load": load()}
    if "trainer" in steps:
        w["trainer"] = await _trainer_runs(args, bootstrap, out_dir, workload, topics)
    if "quix" in steps:
        from benchmarks.quix_run import run_quix

        count = min(args.quix_events, workload.events)
        say(f"[{workload.label}] Quix Streams peer over {count:,} events")
        w["quix"] = {**await run_quix(bootstrap, topics, count, out_dir), "load": load()}
    if "faust" in steps:
        w["faust"] = await _faust_runs(args, bootstrap, out_dir, workload, topics)
    if "learners" in steps:
        say(f"[{workload.label}] learner micro-benchmarks ({workload.n_variables:,} models)")
        w["learners"] = learners(out_dir, workload.n_variables, args.learner_events, args.baseline)
    if "latency" in steps:
        w["latency"] = await _latency_runs(args, bootstrap, out_dir, workload, w)
    if "restore" in steps:
        w["restore"] = await _restore(args, bootstrap, out_dir, workload)
    if "cpu" in steps:
        w["cpu"] = await _cpu(args, bootstrap, out_dir, workload)
    return w


async def _trainer_runs(
    args: argparse.Namespace, bootstrap: str, out_dir: Path, workload: Workload, topics: Topics
) -> list[dict[str, Any]]:
    from benchmarks.trainer_e2e import run_trainer

    runs: list[dict[str, Any]] = []
    for guarantee, batch, replicas, gated in trainer_specs(args):
        name = f"{guarantee} batch {batch} x{replicas}{' gated' if gated else ''}"
        gate, inputs = None, topics
        if gated:
            inputs = Topics(f"{topics.prefix}g{len(runs)}")
            say(f"[{workload.label}] prefilling {inputs.prefix}.* (uncommitted)")
            gate = await prefill_uncommitted(bootstrap, inputs, workload)
        say(f"[{workload.label}] stream-trainer {name} (load {load()})")
        profile_to = (
            out_dir / f"profile-{workload.label}-{guarantee}.txt"
            if args.profile and batch == 5000 and replicas == 1 and not gated
            else None
        )
        run = await run_trainer(
            bootstrap, inputs, workload.events, out_dir, guarantee=guarantee,
            batch_events=batch, replicas=replicas, gate=gate, profile_to=profile_to,
        )  # fmt: skip
        runs.append({**run, "profiled": profile_to is not None, "load": load()})
    return runs


def trainer_specs(args: argparse.Namespace) -> list[tuple[str, int, int, bool]]:
    if args.trainer_runs:
        return list(args.trainer_runs)
    runs = [("exactly_once", 5000, 1, False)]
    if not args.quick:
        runs.append(("at_least_once", 5000, 1, False))
    # Replicas, and one replica the same way: input released once the group holds its tasks.
    runs += [("exactly_once", 5000, 2, True), ("exactly_once", 5000, 1, True)]
    if not args.quick:
        runs += [("exactly_once", b, 1, False) for b in (500, 2000, 20000)]
    return runs


async def _faust_runs(
    args: argparse.Namespace, bootstrap: str, out_dir: Path, workload: Workload, topics: Topics
) -> list[dict[str, Any]]:
    from benchmarks.faust_run import run_faust

    runs = []
    modes = [("take", args.faust_take_events), ("event", args.faust_event_events)]
    for mode, count in modes[:1] if args.quick else modes:
        say(f"[{workload.label}] Faust peer {mode} over {count:,} events")
        faust = await run_faust(bootstrap, topics, min(count, workload.events), out_dir, mode=mode)
        runs.append({**faust, "load": load()})
    return runs


def max_steady_rate(w: dict[str, Any]) -> float | None:
    """The exactly-once batch-5000 single ungated run's steady rate (the "max steady rate")."""
    rates = [
        r["steady_events_per_s"] or r["events_per_s"]
        for r in w["trainer"]
        if r["guarantee"] == "exactly_once" and r["max_batch_events"] == 5000
        and r["replicas"] == 1 and not r["gated"]
    ]  # fmt: skip
    return float(rates[0]) if rates else None


async def _latency_runs(
    args: argparse.Namespace, bootstrap: str, out_dir: Path, workload: Workload, w: dict[str, Any]
) -> list[dict[str, Any]]:
    from benchmarks.latency import run_latency

    measured = max_steady_rate(w)
    half = args.latency_rate or (measured / 2 if measured else None)
    planned = [(args.latency_fixed_rate, "fixed")]
    planned.append((half, "half max steady") if half else (None, "half max steady"))
    runs = []
    for rate, kind in planned:
        if not rate:
            say(f"[{workload.label}] latency at half the max: no trainer run, --latency-rate")
            continue
        say(f"[{workload.label}] latency at {rate:,.0f} events/s ({kind})")
        result = await run_latency(bootstrap, rate, args.latency_s, out_dir, workload)
        runs.append({**result, "kind": kind, "load": load()})
    return runs


async def _restore(
    args: argparse.Namespace, bootstrap: str, out_dir: Path, workload: Workload
) -> dict[str, Any]:
    from benchmarks.restore import run_restore

    keys = workload.n_rules + workload.n_variables
    per_key = max(1, round(args.restore_records / keys))
    say(f"[{workload.label}] restore: {keys:,} keys x {per_key:,} records")
    return await run_restore(
        bootstrap, workload.n_rules, workload.n_variables, out_dir, records_per_key=per_key
    )


async def _cpu(
    args: argparse.Namespace, bootstrap: str, out_dir: Path, workload: Workload
) -> dict[str, Any]:
    """A running trainer under a fixed produce rate: its own CPU seconds per event."""
    from benchmarks.soak import steady_run, stop_trainer

    seconds = args.cpu_s
    warmup = min(CPU_WARMUP_S, seconds / 4)
    say(f"[{workload.label}] CPU at {args.cpu_rate:,.0f} events/s for {seconds:.0f} s")
    result, _, trainer = await steady_run(
        bootstrap, workload, args.cpu_rate, seconds, out_dir, warmup_s=warmup, sample_s=1.0
    )
    code, _ = await stop_trainer(trainer)
    if code != 0:
        raise RuntimeError(f"CPU-step trainer exited {code}; see {result['log']}")
    del result["samples"]  # 1 s samples: the summary is what the report needs
    return {**result, "load": load()}


def learners(out_dir: Path, models: int, events: int, baseline: Path | None) -> dict[str, Any]:
    """benchmarks/learners.py on this code and, with a baseline checkout, on that one."""
    out: dict[str, Any] = {"this": _learners_on(out_dir, models, events, None)}
    if baseline is not None:
        out["baseline"] = {**_learners_on(out_dir, models, events, baseline), "root": str(baseline)}
    return out


def _learners_on(out_dir: Path, models: int, events: int, root: Path | None) -> dict[str, Any]:
    json_path = out_dir / f"learners-{models}-{'baseline' if root else 'this'}.json"
    env = {**os.environ, **({"BENCH_CODE_ROOT": str(root)} if root else {})}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "learners.py"), "--json", str(json_path),
         "--models", str(models), "--events", str(events)],
        cwd=root or ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return {"error": f"learners.py exited {done.returncode}", "stderr": done.stderr[-2000:]}
    return {"table": done.stdout, **json.loads(json_path.read_text())}


def scale(n: int, out_dir: Path) -> dict[str, Any]:
    say(f"scale: {n:,} rules + {n:,} models")
    path = out_dir / f"scale-{n}.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--models", str(n), "--json", str(path)],
        cwd=ROOT, check=True, timeout=900, capture_output=True,
    )  # fmt: skip
    return json.loads(path.read_text())  # type: ignore[no-any-return]
