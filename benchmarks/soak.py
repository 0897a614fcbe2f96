"""Soak: steady traffic into a running `stream-trainer run`, its RSS and CPU over time; restart.

    python -m benchmarks.soak --minutes 60 --rate 8000 --variables 2000 --rules 2000
    python -m benchmarks.soak --minutes 2 --rate 2000 --sample-s 5      # a smoke run

Fresh input topics (6 partitions) and a fresh application id. The trainer runs as a
subprocess (`python -m stream_trainer.cli run`, exactly-once, default settings, with
``STREAM_TRAINER_STATE_DIR`` pointing at a scratch directory so a restart can use its local
snapshot where the trainer supports it). Once `/readyz` answers 200, the driver produces the
seeded mix at ``--rate`` events/s for ``--minutes`` with event time running at wall-clock
speed (``--event-time-speed``), and samples the trainer's own CPU seconds and RSS (from
/proc) and the group's committed offsets every ``--sample-s``. After ``--warmup-s`` (default
a fifth of the run, at most 5 minutes) it reports CPU microseconds per committed event, cores
used, and the RSS slope in MB per hour (least squares over the samples).

Then the restart benchmark: the trainer is stopped (SIGTERM, drained), and a new one on the
same application id is timed from spawn until `/readyz` returns 200, without the state
directory (full changelog restore) and with it (snapshot + changelog tail), ``--restarts``
times each. A trainer that does not know ``STREAM_TRAINER_STATE_DIR`` ignores it, and both
variants then measure the no-snapshot case (`state_dir_supported` says which).

Results: ``benchmarks/results/soak-<timestamp>.{json,md}``; the trainers' logs in
``$TMPDIR/stream-trainer-soak-<timestamp>/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Topics, Workload, local_broker, machine, spawn, wait_process
from benchmarks.paced import ProcessSampler, Sent, endless, produce_paced, summarise
from benchmarks.soak_report import markdown
from stream_trainer.config import SETTING_NAMES
from tests.integration import harness

RESULTS = ROOT / "benchmarks" / "results"
STATE_DIR_ENV = "STREAM_TRAINER_STATE_DIR"
READY_TIMEOUT_S = 600.0
CATCH_UP_TIMEOUT_S = 120.0


@dataclass
class Trainer:
    """One `stream-trainer run` subprocess and its ops port."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    spawned: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_trainer(
    bootstrap: str, topics: Topics, log: Path, state_dir: Path | None, **settings: Any
) -> Trainer:
    port = _free_port()
    env = {**os.environ, **topics.env(bootstrap, http_host="127.0.0.1", http_port=port)}
    env.update({f"STREAM_TRAINER_{k.upper()}": str(v) for k, v in settings.items()})
    env.pop(STATE_DIR_ENV, None)
    if state_dir is not None:
        env[STATE_DIR_ENV] = str(state_dir)
    with log.open("ab") as out:
        proc = spawn([sys.executable, "-m", "stream_trainer.cli", "run"], out, env)
    return Trainer(proc, port, log, time.monotonic())


async def _status(port: int, path: str) -> int | None:
    """HTTP status of GET path on the ops port; None while nothing answers."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5.0)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def wait_ready(trainer: Trainer, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Seconds from spawn until `/readyz` returns 200."""
    while await _status(trainer.port, "/readyz") != 200:
        if trainer.proc.poll() is not None:
            raise RuntimeError(f"trainer exited {trainer.proc.returncode}; see {trainer.log}")
        if time.monotonic() - trainer.spawned > timeout_s:
            raise TimeoutError(f"trainer not ready after {timeout_s:.0f} s; see {trainer.log}")
        await asyncio.sleep(0.02)
    return time.monotonic() - trainer.spawned


async def stop_trainer(trainer: Trainer, timeout_s: float = 120.0) -> tuple[int, float]:
    """SIGTERM (drain); exit code and seconds to exit."""
    started = time.monotonic()
    trainer.proc.send_signal(signal.SIGTERM)
    code = await wait_process(trainer.proc, timeout_s)
    return code, time.monotonic() - started


async def steady_run(
    bootstrap: str,
    workload: Workload,
    rate: float,
    seconds: float,
    log_dir: Path,
    *,
    warmup_s: float,
    sample_s: float,
    state_dir: Path | None = None,
    speed: float = 1.0,
) -> tuple[dict[str, Any], Topics, Trainer]:
    """A trainer on fresh topics under ``rate`` events/s for ``seconds``; left running."""
    topics = Topics(f"soak-{uuid.uuid4().hex[:8]}")
    await harness.create_inputs(bootstrap, topics, workload.partitions)
    trainer = start_trainer(
        bootstrap, topics, log_dir / f"trainer-{topics.prefix}.log", state_dir,
        summary_interval_s=60,
    )  # fmt: skip
    try:
        ready_s = await wait_ready(trainer)
        sent = Sent()
        sampler = ProcessSampler(bootstrap, topics.application_id, trainer.proc.pid, sent, sample_s)
        samples = asyncio.create_task(sampler.run())
        try:
            producing = asyncio.create_task(
                produce_paced(
                    bootstrap, topics, endless(workload, rate, speed), rate, seconds, sent
                )
            )
            await _watch(producing, trainer)
            caught_up_s = await _catch_up(bootstrap, topics, trainer, sent.sent)
        finally:
            samples.cancel()
            await asyncio.gather(samples, return_exceptions=True)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            trainer.proc.kill()
        raise
    result = {
        "rate": rate, "seconds": seconds, "warmup_s": warmup_s, "sample_s": sample_s,
        "variables": workload.n_variables, "rules": workload.n_rules,
        "event_time_speed": speed, "start_to_ready_s": ready_s, "sent": sent.sent,
        "achieved_rate": sent.rate(), "caught_up_s": caught_up_s,
        **summarise(sampler.samples, warmup_s),
        "samples": [dataclasses.asdict(s) for s in sampler.samples],
        "log": str(trainer.log),
    }  # fmt: skip
    return result, topics, trainer


async def _watch(producing: asyncio.Task[None], trainer: Trainer) -> None:
    """Wait for the producer; fail fast if the trainer dies meanwhile."""
    try:
        while not producing.done():
            if trainer.proc.poll() is not None:
                raise RuntimeError(f"trainer exited {trainer.proc.returncode}; see {trainer.log}")
            await asyncio.sleep(0.5)
    finally:
        if not producing.done():
            producing.cancel()
        await asyncio.gather(producing, return_exceptions=True)
    producing.result()


async def _catch_up(bootstrap: str, topics: Topics, trainer: Trainer, sent: int) -> float | None:
    """Seconds after the producer stopped until everything sent was committed (None: never)."""
    started = time.monotonic()
    while time.monotonic() - started < CATCH_UP_TIMEOUT_S:
        committed = await harness.committed_offsets(bootstrap, topics.application_id)
        if sum(committed.values()) >= sent:
            return time.monotonic() - started
        if trainer.proc.poll() is not None:
            raise RuntimeError(f"trainer exited {trainer.proc.returncode}; see {trainer.log}")
        await asyncio.sleep(0.2)
    return None


async def restart_times(
    bootstrap: str, topics: Topics, log_dir: Path, state_dir: Path, repeats: int
) -> list[dict[str, Any]]:
    """Spawn-to-ready of a restarted trainer, without and with the state directory."""
    runs = []
    for k in range(repeats):
        for snapshot in (False, True):
            log = log_dir / f"restart-{k}-{'snapshot' if snapshot else 'no-snapshot'}.log"
            trainer = start_trainer(bootstrap, topics, log, state_dir if snapshot else None)
            try:
                ready_s = await wait_ready(trainer)
            finally:
                code, stop_s = await stop_trainer(trainer)
            runs.append(
                {"state_dir": snapshot, "ready_s": ready_s, "exit": code, "stop_s": stop_s,
                 "log": str(log)}
            )  # fmt: skip
    return runs


async def changelog_records(bootstrap: str, topics: Topics) -> dict[str, Any]:
    """The changelog's summed end offsets: records ever written to it (compaction aside)."""
    topic = f"{topics.application_id}-state-changelog"
    ends = await harness.end_offsets(bootstrap, [topic])
    return {"topic": topic, "end_offsets": sum(ends.values())}


async def soak(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    workload = Workload(events=0, n_variables=args.variables, n_rules=args.rules)
    state_dir = log_dir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    warmup_s = args.warmup_s if args.warmup_s is not None else min(300.0, args.minutes * 12.0)
    result, topics, trainer = await steady_run(
        args.bootstrap, workload, args.rate, args.minutes * 60.0, log_dir,
        warmup_s=warmup_s, sample_s=args.sample_s, state_dir=state_dir,
        speed=args.event_time_speed,
    )  # fmt: skip
    code, stop_s = await stop_trainer(trainer)
    result.update(soak_exit=code, soak_stop_s=stop_s)
    result["changelog"] = await changelog_records(args.bootstrap, topics)
    result["state_dir_supported"] = "state_dir" in SETTING_NAMES
    if args.restarts > 0:
        result["restarts"] = await restart_times(
            args.bootstrap, topics, log_dir, state_dir, args.restarts
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="Kafka to use (default: the shared local broker)")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=8000.0, help="events/s")
    parser.add_argument("--variables", type=int, default=2000)
    parser.add_argument("--rules", type=int, default=2000)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, help="default: a fifth of the run, <= 300")
    parser.add_argument("--event-time-speed", type=float, default=1.0)
    parser.add_argument("--restarts", type=int, default=1, help="restarts per variant (0: none)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the summary goes")
    args = parser.parse_args(argv)
    if args.bootstrap is None:
        args.bootstrap = local_broker()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = Path(tempfile.gettempdir()) / f"stream-trainer-soak-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = asyncio.run(soak(args, log_dir))
    result.update(
        started=started, command=" ".join(["python -m benchmarks.soak", *sys.argv[1:]]),
        machine=machine(), load_end=" ".join(f"{x:.1f}" for x in os.getloadavg()),
    )  # fmt: skip
    shutil.rmtree(log_dir / "state", ignore_errors=True)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"soak-{stamp}.json").write_text(json.dumps(result, indent=2, default=str))
    text = markdown(result)
    (args.results / f"soak-{stamp}.md").write_text(text)
    print(text)
    print(f"results: {args.results}/soak-{stamp}.{{json,md}}; logs in {log_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
