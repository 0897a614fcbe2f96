"""Restore rate: a task's changelog read back and loaded into a fresh `TaskState`.

    python -m benchmarks.restore --bootstrap HOST:PORT --rules 100000 --models 100000 \
        [--records-per-key 1] [--json OUT]

The learners of a `TaskState` are fed directly (each rule ``feedback`` feedback events
inside the dedupe window, each variable ``observations`` observations, so its full RLS
state exists), then the task publishes once: its changelog records, exactly as a commit
writes them, go into a fresh 1-partition compacted topic. With ``--records-per-key 1`` that
is a task's changelog after compaction, one record per key; with k > 1 every key learns one
more event and the task publishes again, k - 1 times (an uncompacted changelog of few hot
keys: many records per key, later ones win). A fresh process (``--time``) then times,
after its imports, `read_changelog` of the whole partition and `TaskState.restore` of what
it read (after a restore of its first 100 records into a throwaway `TaskState`, as a trainer
warms its kernels before it is ready). The figure is changelog records per second, read + restore.
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
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.common import rule_name, variable_name
from stream_trainer.columns import FeedbackColumns, ObservationColumns
from stream_trainer.config import Settings
from stream_trainer.events import from_ts_us
from stream_trainer.state import TaskState

SEED = 20260101
T0_S = 1_767_225_600.0  # 2026-01-01
CHUNK = 100_000
# A quarter of the default dedupe window between feedback rounds: every rule record carries
# the ids of its last ~4 rounds, whatever the number of rounds (records stay one size).
FEEDBACK_STEP_S = 86_400.0 / 4


class _Feeder:
    """Feeds the learners of one `TaskState` round by round (fresh ids, advancing clocks)."""

    def __init__(self, state: TaskState, rules: list[str], variables: list[str]) -> None:
        self.state, self.rules, self.variables = state, rules, variables
        self.rng = np.random.default_rng(SEED)
        self.feedback_rounds = 0
        self.clock_us = int(T0_S * 1e6)

    def feedback(self) -> None:
        k, n_rules = self.feedback_rounds, len(self.rules)
        learner = self.state.entry("rule").learner
        for start in range(0, n_rules, CHUNK):
            keys = self.rules[start : start + CHUNK]
            n = len(keys)
            learner.learn_batch(
                FeedbackColumns(
                    rule_id=keys,
                    event_id=[f"f-{SEED}-{k * n_rules + start + i}" for i in range(n)],
                    ts_s=np.full(n, T0_S + FEEDBACK_STEP_S * k),
                    success=self.rng.random(n) < 0.7,
                    weight=np.ones(n),
                )
            )
        self.feedback_rounds += 1

    def observations(self) -> None:
        learner = self.state.entry("model").learner
        for start in range(0, len(self.variables), CHUNK):
            keys = self.variables[start : start + CHUNK]
            n = len(keys)
            learner.learn_batch(
                ObservationColumns(
                    variable=keys,
                    ts_us=np.full(n, self.clock_us, dtype=np.int64),
                    value=100.0 + self.rng.normal(size=n),
                )
            )
        self.clock_us += 3_000_000

    def publish(self) -> list[tuple[bytes, bytes | None]]:
        """The changelog records of one commit: every key changed since the last one."""
        return self.state.publish(from_ts_us(self.clock_us)).changelog


def changelog(
    rules: int, models: int, feedback: int, observations: int, records_per_key: int = 1
) -> list[tuple[bytes, bytes | None]]:
    """``records_per_key`` changelog records per rule and per model, after realistic learning."""
    feeder = _Feeder(
        TaskState(Settings()),
        [rule_name(i) for i in range(rules)],
        [variable_name(i) for i in range(models)],
    )
    for _ in range(feedback):
        feeder.feedback()
    for _ in range(observations):
        feeder.observations()
    records = feeder.publish()
    for _ in range(records_per_key - 1):
        feeder.feedback()
        feeder.observations()
        records += feeder.publish()
    return records


async def write_topic(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]
) -> None:
    """A fresh 1-partition compacted topic holding ``records`` (batched, no per-record send)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=2 * 1024 * 1024
    )
    await producer.start()
    try:
        sent = []
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append(await producer.send_batch(batch, topic, partition=0))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        sent.append(await producer.send_batch(batch, topic, partition=0))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _loop_lag(lags: list[float], period_s: float = 0.01) -> None:
    """How late each 10 ms tick of the event loop fires while the restore runs."""
    while True:
        due = time.perf_counter() + period_s
        await asyncio.sleep(period_s)
        lags.append(max(0.0, time.perf_counter() - due))


async def time_restore(bootstrap: str, topic: str) -> dict[str, Any]:
    """Runs in a fresh process: read the whole changelog partition, restore it."""
    from stream_trainer.kafka.restore import read_changelog

    settings = Settings(bootstrap_servers=bootstrap, topic_changelog=topic)
    probe = asyncio.create_task(_loop_lag(lags := []))
    started = time.perf_counter()
    records = (await read_changelog(settings, {0: None}))[0].records
    read_s = time.perf_counter() - started
    # A trainer warms its learner kernels before it is ready; so does this process.
    TaskState(settings).restore(records[:100])
    state = TaskState(settings)
    started = time.perf_counter()
    # As the trainer does: decode and load in a worker thread, the loop goes on.
    loaded = await asyncio.to_thread(state.restore, records)
    restore_s = time.perf_counter() - started
    probe.cancel()
    return {
        "loop_lag_max_ms": 1000 * max(lags, default=0.0),
        "loop_lag_p99_ms": 1000 * sorted(lags)[int(0.99 * (len(lags) - 1))] if lags else 0.0,
        "records": len(records),
        "keys_loaded": loaded,
        "rules": state.model_counts["rule"],
        "models": state.model_counts["model"],
        "bytes": sum(len(k) + len(v or b"") for k, v in records),
        "read_s": read_s,
        "restore_s": restore_s,
        "total_s": read_s + restore_s,
        "records_per_s": len(records) / (read_s + restore_s),
    }


async def run_restore(
    bootstrap: str,
    rules: int,
    models: int,
    out_dir: Path,
    *,
    records_per_key: int = 1,
    feedback: int = 4,
    observations: int = 8,
) -> dict[str, Any]:
    """Build and write the changelog here, time its restore in a fresh process."""
    topic = f"bench-restore-{uuid.uuid4().hex[:8]}-state-changelog"
    started = time.perf_counter()
    records = changelog(rules, models, feedback, observations, records_per_key)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    await write_topic(bootstrap, topic, records)
    write_s = time.perf_counter() - started
    out = out_dir / f"restore-{rules}-{models}-{records_per_key}-timing.json"
    command = [
        sys.executable, "-m", "benchmarks.restore", "--time", "--bootstrap", bootstrap,
        "--topic", topic, "--json", str(out),
    ]  # fmt: skip
    done = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL)
    if await done.wait() != 0:
        raise RuntimeError(f"restore timing exited {done.returncode}")
    result: dict[str, Any] = json.loads(out.read_text())
    if (result["rules"], result["models"]) != (rules, models):
        raise RuntimeError(f"restored {result['rules']} rules / {result['models']} models")
    return {
        **result,
        "topic": topic,
        "records_per_key": records_per_key,
        "feedback_per_rule": feedback,
        "observations_per_model": observations,
        "build_s": build_s,
        "write_s": write_s,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--rules", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--records-per-key", type=int, default=1)
    parser.add_argument("--time", action="store_true", help="(internal) the timed process")
    parser.add_argument("--topic", help="(with --time) the changelog topic to restore")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.time:
        result = asyncio.run(time_restore(args.bootstrap, args.topic))
    else:
        out_dir = args.json.parent if args.json else Path(tempfile.gettempdir())
        result = asyncio.run(
            run_restore(
                args.bootstrap, args.rules, args.models, out_dir,
                records_per_key=args.records_per_key,
            )
        )  # fmt: skip
    text = json.dumps(result)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
