"""Restore time: a task's changelog read back and loaded into a fresh `TaskState`.

    python -m benchmarks.restore --bootstrap HOST:PORT --models 100000 [--json OUT]

The learners are fed directly (each of N rules ``--feedback`` feedback events inside the
dedupe window, so its record carries that many fresh event ids; each of N variables
``--observations`` observations, so its full RLS state exists), then every rule and model
is dumped once, exactly as `TaskState` logs them (``r:``/``m:`` keys, msgpack values), and
produced into a fresh 1-partition compacted topic: the changelog of a task after compaction,
one record per key. A fresh process (``--time``) then times, after its imports,
`read_changelog(settings, [0])` and `TaskState.restore(...)` of what it read, and, on a
second `TaskState`, the rule and model loads separately. An uncompacted changelog holds
several records per key; reading is linear in the records read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_trainer.columns import FeedbackColumns, ObservationColumns
from stream_trainer.config import Settings
from stream_trainer.state import MODEL_PREFIX, RULE_PREFIX, TaskState
from stream_trainer.synthetic import rule_name, variable_name

SEED = 20260101
T0_S = 1_767_225_600.0  # 2026-01-01
CHUNK = 100_000


def changelog(models: int, feedback: int, observations: int) -> list[tuple[bytes, bytes]]:
    """One dump record per rule and per model, after realistic learning."""
    rng = np.random.default_rng(SEED)
    state = TaskState(Settings())
    rules = [rule_name(i) for i in range(models)]
    variables = [variable_name(i) for i in range(models)]
    for k in range(feedback):
        for start in range(0, models, CHUNK):
            keys = rules[start : start + CHUNK]
            n = len(keys)
            state.trust.learn_batch(
                FeedbackColumns(
                    rule_id=keys,
                    event_id=[f"f-{SEED}-{k * models + start + i}" for i in range(n)],
                    ts_s=np.full(n, T0_S + 60.0 * k),
                    success=rng.random(n) < 0.7,
                    weight=np.ones(n),
                )
            )
    clock_us = int(T0_S * 1e6)
    for _ in range(observations):
        for start in range(0, models, CHUNK):
            keys = variables[start : start + CHUNK]
            n = len(keys)
            state.forecaster.learn_batch(
                ObservationColumns(
                    variable=keys,
                    ts_us=np.full(n, clock_us, dtype=np.int64),
                    value=100.0 + rng.normal(size=n),
                )
            )
        clock_us += 3_000_000
    records = [(RULE_PREFIX + k.encode(), v) for k, v in state.trust.dump(rules)]
    records += [(MODEL_PREFIX + k.encode(), v) for k, v in state.forecaster.dump(variables)]
    return records


async def write_topic(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
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


async def time_restore(bootstrap: str, topic: str) -> dict[str, Any]:
    """Runs in a fresh process: read the changelog, restore it, and the loads split."""
    from stream_trainer.kafka.restore import read_changelog

    settings = Settings(bootstrap_servers=bootstrap, topic_changelog=topic)
    started = time.perf_counter()
    read = await read_changelog(settings, [0])
    read_s = time.perf_counter() - started
    records = read[0]
    started = time.perf_counter()
    loaded = TaskState(settings).restore(records)
    restore_s = time.perf_counter() - started
    split = TaskState(settings)
    rules = [(k[2:].decode(), v) for k, v in records if k.startswith(RULE_PREFIX)]
    models = [(k[2:].decode(), v) for k, v in records if k.startswith(MODEL_PREFIX)]
    started = time.perf_counter()
    split.trust.load(rules)
    rules_load_s = time.perf_counter() - started
    started = time.perf_counter()
    split.forecaster.load(models)
    models_load_s = time.perf_counter() - started
    return {
        "records": len(records),
        "keys_loaded": loaded,
        "rules": len(rules),
        "models": len(models),
        "bytes": sum(len(k) + len(v) for k, v in records),
        "read_s": read_s,
        "restore_s": restore_s,
        "total_s": read_s + restore_s,
        "rules_load_s": rules_load_s,
        "models_load_s": models_load_s,
    }


async def run_restore(
    bootstrap: str, models: int, out_dir: Path, *, feedback: int = 4, observations: int = 8
) -> dict[str, Any]:
    """Build and write the changelog here, time its restore in a fresh process."""
    topic = f"bench-restore-{uuid.uuid4().hex[:8]}-state-changelog"
    started = time.perf_counter()
    records = changelog(models, feedback, observations)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    await write_topic(bootstrap, topic, records)
    write_s = time.perf_counter() - started
    out = out_dir / f"restore-{models}-timing.json"
    command = [
        sys.executable, "-m", "benchmarks.restore", "--time", "--bootstrap", bootstrap,
        "--topic", topic, "--json", str(out),
    ]  # fmt: skip
    done = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL)
    if await done.wait() != 0:
        raise RuntimeError(f"restore timing exited {done.returncode}")
    result: dict[str, Any] = json.loads(out.read_text())
    if result["rules"] != models or result["models"] != models:
        raise RuntimeError(f"restored {result['rules']} rules / {result['models']} models")
    per_100k = 100_000 / models
    return {
        **result,
        "topic": topic,
        "feedback_per_rule": feedback,
        "observations_per_model": observations,
        "build_s": build_s,
        "write_s": write_s,
        "s_per_100k_models": result["total_s"] * per_100k,
        "rules_load_s_per_100k": result["rules_load_s"] * per_100k,
        "models_load_s_per_100k": result["models_load_s"] * per_100k,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--time", action="store_true", help="(internal) the timed process")
    parser.add_argument("--topic", help="(with --time) the changelog topic to restore")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.time:
        result = asyncio.run(time_restore(args.bootstrap, args.topic))
    else:
        out_dir = args.json.parent if args.json else Path(".")
        result = asyncio.run(run_restore(args.bootstrap, args.models, out_dir))
    text = json.dumps(result)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
