"""The whole benchmark in one command, against one Kafka broker, for both workloads.

    python -m benchmarks.run [--bootstrap HOST:PORT] [--events 300000] [--quick] [--profile]
    python -m benchmarks.run --quick --events 20000 ...      # a smoke run (see docs)
    python -m benchmarks.run --events 1000000 --only ceiling trainer \\
        --trainer-runs exactly_once:5000          # issue 3: sustained rate on 1M events

Without ``--bootstrap`` it uses the shared detached local broker (started if none answers,
and left running). For each workload (``--workloads``: ``10k`` = 10,000 variables + 10,000
rules, ``hot`` = 200 + 200) it pre-fills fresh input topics with the seeded mix, then
measures in order (benchmarks/steps.py): the ceiling (plain consumer + decode),
stream-trainer end to end (exactly-once and at-least-once at batch 5,000, exactly-once with
2 replicas in one group and 1 replica the same gated way, and a batch-size sweep unless
``--quick``), the per-event Quix Streams peer, the Faust peer (per event and micro-batched),
the learner micro-benchmarks on that many keys (and on ``--baseline``'s code), latency at
``--latency-fixed-rate`` and at half the measured maximum, the restore rate of a changelog
of that many keys, and the trainer's own CPU per event at ``--cpu-rate``. Then scale/memory
on the learners directly. ``--only STEP ...`` runs a subset. Results go to
``benchmarks/results/<timestamp>.{json,md,png}``, both workloads side by side with the
targets of issue 10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, WORKLOADS, Workload, local_broker, machine
from benchmarks.report import markdown, plot
from benchmarks.steps import STEPS, load, measure_workload, say, scale

RESULTS = ROOT / "benchmarks" / "results"
# --quick: no batch-size sweep, no at-least-once run, the Faust peer micro-batched only, and
# these shorter steps; with --events 20000 both workloads take about 2 minutes.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "latency_s": (20.0, 5.0),
    "cpu_s": (60.0, 10.0),
    "restore_records": (200_000, 20_000),
    "learner_events": (20_000, 5_000),
    "scale": ([1_000, 100_000, 1_000_000], []),
}


async def measure(args: argparse.Namespace, bootstrap: str, out_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "machine": machine(),
        "code_start": _code_version(),
        "bootstrap": bootstrap,
        "load_start": load(),
        "workloads": {},
    }
    for name in args.workloads:
        variables, rules = WORKLOADS[name]
        workload = Workload(events=args.events, n_variables=variables, n_rules=rules)
        results["workloads"][name] = await measure_workload(args, bootstrap, out_dir, workload)
    steps = set(args.only or STEPS)
    results["scale"] = [scale(n, out_dir) for n in args.scale] if "scale" in steps else []
    results["load_end"] = load()
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


def _run_spec(spec: str) -> tuple[str, int, int, bool]:
    """GUARANTEE:BATCH[:REPLICAS[:gated]]; more than one replica is always gated."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 4 or parts[0] not in ("exactly_once", "at_least_once"):
        raise argparse.ArgumentTypeError(f"bad --trainer-runs entry {spec!r}")
    replicas = int(parts[2]) if len(parts) > 2 else 1
    if len(parts) == 4 and parts[3] != "gated":
        raise argparse.ArgumentTypeError(f"bad --trainer-runs entry {spec!r}")
    return parts[0], int(parts[1]), replicas, replicas > 1 or len(parts) == 4


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--bootstrap", help="Kafka to use (default: the shared local broker)")
    add("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    add("--events", type=int, default=300_000, help="input events per workload")
    add("--quix-events", type=int, default=100_000)
    add("--faust-take-events", type=int, default=20_000)
    add("--faust-event-events", type=int, default=3_000)
    add("--latency-s", type=float, help="seconds per latency run (default 20, --quick 5)")
    add("--latency-fixed-rate", type=float, default=10_000.0, help="events/s (issue 10: 10k)")
    add("--latency-rate", type=float, help="the second latency rate (default: half EOS 5000)")
    add("--cpu-rate", type=float, default=8_000.0, help="events/s of the CPU step")
    add("--cpu-s", type=float, help="seconds of the CPU step (default 60, --quick 10)")
    add("--restore-records", type=int, help="changelog records (default 200k, --quick 20k)")
    add("--baseline", type=Path, help="another checkout whose learners to measure too")
    add("--learner-events", type=int, help="events per learner micro-benchmark")
    add("--scale", type=int, nargs="*", help="rules+models (default 1k 100k 1M; --quick none)")
    add("--quick", action="store_true", help="a smoke run: see QUICK")
    add("--profile", action="store_true", help="py-spy the batch-5000 runs")
    add("--only", nargs="+", choices=STEPS, help="run only these steps")
    add("--results", type=Path, default=RESULTS, help="where the summary goes")
    add(
        "--trainer-runs", nargs="+", type=_run_spec, metavar="GUARANTEE:BATCH[:REPLICAS[:gated]]",
        help="trainer runs instead of the default set, e.g. exactly_once:5000",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.bootstrap is None:
        args.bootstrap = local_broker()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # Logs, raw profiles and per-step JSON are scratch: only the summary goes in results/.
    out_dir = Path(tempfile.gettempdir()) / f"stream-trainer-bench-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    say(f"logs in {out_dir}")
    results = asyncio.run(measure(args, args.bootstrap, out_dir))
    (args.results / f"{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    text = markdown(results)
    if args.profile:
        from benchmarks.profile import markdown as profile_md
        from benchmarks.profile import summarise

        for p in sorted(out_dir.glob("profile-*.txt")):
            text += f"\n## Profile {p.stem}\n\n" + profile_md(summarise(p, 25))
    (args.results / f"{stamp}.md").write_text(text)
    plot(results, args.results / f"{stamp}.png")
    print(text)
    print(f"results: {args.results / stamp}.{{json,md,png}}; logs in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
