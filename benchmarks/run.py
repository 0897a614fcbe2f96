"""The whole benchmark in one command, against one Kafka broker.

    python -m benchmarks.run [--bootstrap HOST:PORT] [--events 300000] [--quick] [--profile]
    python -m benchmarks.run --events 1000000 --only ceiling trainer \\
        --trainer-runs exactly_once:5000          # issue 3: sustained rate on 1M events

Without ``--bootstrap`` it uses the shared detached local broker (`ensure_local_broker()`,
started if none answers, and left running). It pre-fills fresh input topics with the seeded
mix, then measures in order: the ceiling (plain consumer + decode), stream-trainer end to
end (exactly-once and at-least-once at batch 5,000, exactly-once with 2 replicas in one
group, and a batch-size sweep), the Faust peer (per event and
micro-batched, through `stream_trainer.integrations.faust`), the learner micro-benchmarks
(benchmarks/learners.py), latency at half the measured maximum rate, restore time of a
100k rules + 100k models changelog (benchmarks/restore.py), and scale/memory with 1k, 100k
and 1M rules+models on the learners directly. ``--only STEP ...`` runs a subset. Results go to
``benchmarks/results/<timestamp>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Topics, Workload, machine, prefill, prefill_uncommitted
from benchmarks.report import markdown, plot

RESULTS = ROOT / "benchmarks" / "results"


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


STEPS = ("ceiling", "trainer", "faust", "learners", "latency", "restore", "scale")


async def measure(args: argparse.Namespace, bootstrap: str, out_dir: Path) -> dict[str, Any]:
    from benchmarks.ceiling import run_ceiling
    from benchmarks.faust_run import run_faust
    from benchmarks.latency import run_latency
    from benchmarks.trainer_e2e import run_trainer

    steps = set(args.only or STEPS)
    workload = Workload(events=args.events)
    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}")
    sample = workload.records(2000)
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "machine": machine(),
        "code_start": _code_version(),
        "bootstrap": bootstrap,
        "load_start": _load(),
        "workload": {
            **workload.__dict__,
            "mean_bytes": sum(len(v or b"") for _, _, v in sample) / len(sample),
        },
    }
    if steps & {"ceiling", "trainer", "faust"}:
        _say(f"prefilling {workload.events:,} events into {topics.prefix}.*")
        results["prefill_s"] = await prefill(bootstrap, topics, workload)
    if "ceiling" in steps:
        _say("ceiling")
        ceiling = await run_ceiling(bootstrap, topics, workload.events)
        results["ceiling"] = {**ceiling, "load": _load()}
    results["trainer"] = []
    for guarantee, batch, replicas, gated in _trainer_runs(args) if "trainer" in steps else []:
        name = f"{guarantee} batch {batch} x{replicas}{' gated' if gated else ''}"
        gate, inputs = None, topics
        if gated:
            inputs = Topics(f"{topics.prefix}g{len(results['trainer'])}")
            _say(f"prefilling {workload.events:,} events into {inputs.prefix}.* (uncommitted)")
            gate = await prefill_uncommitted(bootstrap, inputs, workload)
        _say(f"stream-trainer {name} (load {_load()})")
        profile_to = (
            out_dir / f"profile-{guarantee}.txt"
            if args.profile and batch == 5000 and replicas == 1 and not gated
            else None
        )
        run = await run_trainer(
            bootstrap, inputs, workload.events, out_dir, guarantee=guarantee,
            batch_events=batch, replicas=replicas, gate=gate, profile_to=profile_to,
        )  # fmt: skip
        run["profiled"] = profile_to is not None
        run["load"] = _load()
        results["trainer"].append(run)
    results["faust"] = []
    for mode, count in (("take", args.faust_take_events), ("event", args.faust_event_events)):
        if "faust" not in steps:
            break
        _say(f"Faust peer {mode} over {count:,} events")
        faust = await run_faust(bootstrap, topics, min(count, workload.events), out_dir, mode=mode)
        results["faust"].append({**faust, "load": _load()})
    if "learners" in steps:
        _say("learner micro-benchmarks")
        results["learners_table"], results["learners"] = _learners(out_dir)
    if "latency" in steps:
        # The latency trainer runs with the default settings: half of *their* maximum.
        rate = args.latency_rate or _eos_5000_rate(results) / 2
        _say(f"latency at {rate:,.0f} events/s")
        latency = await run_latency(bootstrap, rate, args.latency_s, out_dir, workload)
        results["latency"] = {**latency, "load": _load()}
    if "restore" in steps:
        from benchmarks.restore import run_restore

        _say(f"restore: {args.restore_models:,} rules + {args.restore_models:,} models")
        results["restore"] = await run_restore(bootstrap, args.restore_models, out_dir)
    results["scale"] = [_scale(n, out_dir) for n in args.scale] if "scale" in steps else []
    results["load_end"] = _load()
    # Each trainer subprocess imports the code on disk when it starts: a change mid-run shows.
    results["code_end"] = _code_version()
    return results


def _code_version() -> str:
    """HEAD commit, plus "+dirty" if stream_trainer/ differs from it (read-only git calls)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        diff = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "stream_trainer"], cwd=ROOT, check=False
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if diff.returncode else "")


def _eos_5000_rate(results: dict[str, Any]) -> float:
    rates = [
        r["steady_events_per_s"] or r["events_per_s"]
        for r in results["trainer"]
        if r["guarantee"] == "exactly_once" and r["max_batch_events"] == 5000
        and r["replicas"] == 1 and not r["gated"]
    ]  # fmt: skip
    if not rates:
        raise SystemExit("latency needs the exactly-once batch-5000 run or --latency-rate")
    return float(rates[0])


def _trainer_runs(args: argparse.Namespace) -> list[tuple[str, int, int, bool]]:
    if args.trainer_runs:
        return list(args.trainer_runs)
    runs = [("exactly_once", 5000, 1, False), ("at_least_once", 5000, 1, False)]
    # Replicas, and one replica the same way: input released once the group holds its tasks.
    runs += [("exactly_once", 5000, 2, True), ("exactly_once", 5000, 1, True)]
    if not args.quick:
        runs += [("exactly_once", b, 1, False) for b in (500, 2000, 20000)]
    return runs


def _run_spec(spec: str) -> tuple[str, int, int, bool]:
    """GUARANTEE:BATCH[:REPLICAS[:gated]]; more than one replica is always gated."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 4 or parts[0] not in ("exactly_once", "at_least_once"):
        raise argparse.ArgumentTypeError(f"bad --trainer-runs entry {spec!r}")
    replicas = int(parts[2]) if len(parts) > 2 else 1
    if len(parts) == 4 and parts[3] != "gated":
        raise argparse.ArgumentTypeError(f"bad --trainer-runs entry {spec!r}")
    return parts[0], int(parts[1]), replicas, replicas > 1 or len(parts) == 4


def _learners(out_dir: Path) -> tuple[str, Any]:
    script = ROOT / "benchmarks" / "learners.py"
    if not script.exists():
        return "benchmarks/learners.py not found", None
    json_path = out_dir / "learners.json"
    done = subprocess.run(
        [sys.executable, str(script), "--json", str(json_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        failure = f"benchmarks/learners.py failed ({done.returncode}):"
        return f"{failure}\n\n```\n{done.stderr[-2000:]}\n```", None
    return done.stdout, json.loads(json_path.read_text()) if json_path.exists() else None


def _scale(n: int, out_dir: Path) -> dict[str, Any]:
    _say(f"scale: {n:,} rules + {n:,} models")
    path = out_dir / f"scale-{n}.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--models", str(n), "--json", str(path)],
        cwd=ROOT, check=True, timeout=900, capture_output=True,
    )  # fmt: skip
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="Kafka to use (default: the shared local broker)")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--faust-take-events", type=int, default=20_000)
    parser.add_argument("--faust-event-events", type=int, default=3_000)
    parser.add_argument("--latency-s", type=float, default=20.0)
    parser.add_argument("--scale", type=int, nargs="*", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="skip the batch-size sweep")
    parser.add_argument("--profile", action="store_true", help="py-spy the batch-5000 runs")
    parser.add_argument("--only", nargs="+", choices=STEPS, help="run only these steps")
    parser.add_argument(
        "--trainer-runs",
        nargs="+",
        type=_run_spec,
        metavar="GUARANTEE:BATCH[:REPLICAS[:gated]]",
        help="trainer runs instead of the default set, e.g. exactly_once:5000",
    )
    parser.add_argument("--restore-models", type=int, default=100_000)
    parser.add_argument(
        "--latency-rate", type=float, help="events/s for the latency step (default: half EOS 5000)"
    )
    args = parser.parse_args(argv)
    if args.bootstrap is None:
        from stream_trainer.kafka.local_broker import ensure_local_broker

        args.bootstrap = ensure_local_broker()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # Logs, raw profiles and per-step JSON are scratch: only the summary goes in results/.
    out_dir = Path(tempfile.gettempdir()) / f"stream-trainer-bench-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(measure(args, args.bootstrap, out_dir))
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    text = markdown(results)
    if args.profile:
        from benchmarks.profile import markdown as profile_md
        from benchmarks.profile import summarise

        for p in sorted(out_dir.glob("profile-*.txt")):
            text += f"\n## Profile {p.stem}\n\n" + profile_md(summarise(p, 25))
    (RESULTS / f"{stamp}.md").write_text(text)
    plot(results, RESULTS / f"{stamp}.png")
    print(text)
    print(f"results: {RESULTS / stamp}.{{json,md,png}}; logs in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
