"""The whole benchmark in one command, against one Kafka broker.

    python -m benchmarks.run [--bootstrap HOST:PORT] [--events 300000] [--quick] [--profile]

Without ``--bootstrap`` it uses the shared detached local broker (`ensure_local_broker()`,
started if none answers, and left running). It pre-fills fresh input topics with the seeded
mix, then measures in order: the ceiling (plain consumer + decode), stream-trainer end to
end (exactly-once and at-least-once, and a batch-size sweep), the Faust peer (per event and
micro-batched, through `stream_trainer.integrations.faust`), the learner micro-benchmarks
(benchmarks/learners.py), latency at half the measured maximum rate, and scale/memory with
1k, 100k and 1M rules+models on the learners directly. Results go to
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

from benchmarks.common import ROOT, Topics, Workload, machine, prefill
from benchmarks.report import markdown, plot

RESULTS = ROOT / "benchmarks" / "results"


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def measure(args: argparse.Namespace, bootstrap: str, out_dir: Path) -> dict[str, Any]:
    from benchmarks.ceiling import run_ceiling
    from benchmarks.faust_run import run_faust
    from benchmarks.latency import run_latency
    from benchmarks.trainer_e2e import run_trainer

    workload = Workload(events=args.events)
    topics = Topics(f"bench-{uuid.uuid4().hex[:8]}")
    sample = workload.records(2000)
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "bootstrap": bootstrap,
        "load_start": _load(),
        "workload": {
            **workload.__dict__,
            "mean_bytes": sum(len(v or b"") for _, _, v in sample) / len(sample),
        },
    }
    _say(f"prefilling {workload.events:,} events into {topics.prefix}.*")
    results["prefill_s"] = await prefill(bootstrap, topics, workload)
    _say("ceiling")
    results["ceiling"] = await run_ceiling(bootstrap, topics, workload.events)
    results["trainer"] = []
    for guarantee, batch in _trainer_runs(args):
        _say(f"stream-trainer {guarantee} batch {batch}")
        profile_to = (
            out_dir / f"profile-{guarantee}.txt" if args.profile and batch == 5000 else None
        )
        run = await run_trainer(
            bootstrap, topics, workload.events, out_dir, guarantee=guarantee,
            batch_events=batch, profile_to=profile_to,
        )  # fmt: skip
        run["load"] = _load()
        results["trainer"].append(run)
    results["faust"] = []
    for mode, count in (("take", args.faust_take_events), ("event", args.faust_event_events)):
        _say(f"Faust peer {mode} over {count:,} events")
        results["faust"].append(
            await run_faust(bootstrap, topics, min(count, workload.events), out_dir, mode=mode)
        )
    _say("learner micro-benchmarks")
    results["learners_table"], results["learners"] = _learners(out_dir)
    # The latency trainer runs with the default settings: half of *their* measured maximum.
    best = next(
        r["steady_events_per_s"] or 0
        for r in results["trainer"]
        if r["guarantee"] == "exactly_once" and r["max_batch_events"] == 5000
    )
    _say(f"latency at {best / 2:,.0f} events/s")
    results["latency"] = await run_latency(bootstrap, best / 2, args.latency_s, out_dir, workload)
    results["scale"] = [_scale(n, out_dir) for n in args.scale]
    results["load_end"] = _load()
    return results


def _trainer_runs(args: argparse.Namespace) -> list[tuple[str, int]]:
    runs = [("exactly_once", 5000), ("at_least_once", 5000)]
    if not args.quick:
        runs += [("exactly_once", b) for b in (500, 2000, 20000)]
    return runs


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
