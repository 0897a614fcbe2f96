"""Integration-test harness: inputs in, trainer subprocesses, outputs read back and verified.

The verifier follows Kafka Streams' EOS tests: read every output topic ``read_committed``
from the beginning and check (1) the final model/rule values equal the reference learners
run on the full input, (2) per key, versions are exactly 1..n, (3) training metrics account
for every input record exactly once (by count and by offset coverage).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import GroupCoordinatorNotAvailableError
from aiokafka.partitioner import DefaultPartitioner

from stream_trainer.dev.synthetic import SyntheticPulse
from stream_trainer.errors import DecodeError
from stream_trainer.events import (
    ModelVersion,
    RuleVersion,
    TrainingMetrics,
    decode_feedback,
    decode_observation,
    ts_s,
    ts_us,
)
from stream_trainer.kafka.clients import read_to_end, stop_consumer, topic_partitions
from tests.reference_learners import ReferenceResult, reference_forecaster, reference_trust

TRUST_RTOL = 1e-9
COEF_RTOL = 1e-6


@dataclass(frozen=True)
class Topics:
    """One isolated set of topic names and an application id for a test."""

    prefix: str

    @property
    def observations(self) -> str:
        return f"{self.prefix}.observations"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}.feedback"

    @property
    def model_versions(self) -> str:
        return f"{self.prefix}.model-versions"

    @property
    def rule_versions(self) -> str:
        return f"{self.prefix}.rule-versions"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}.training-metrics"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def application_id(self) -> str:
        return f"{self.prefix}-app"

    def env(self, bootstrap: str, **settings: Any) -> dict[str, str]:
        env = {
            "STREAM_TRAINER_BOOTSTRAP_SERVERS": bootstrap,
            "STREAM_TRAINER_APPLICATION_ID": self.application_id,
            "STREAM_TRAINER_TOPIC_OBSERVATIONS": self.observations,
            "STREAM_TRAINER_TOPIC_FEEDBACK": self.feedback,
            "STREAM_TRAINER_TOPIC_MODEL_VERSIONS": self.model_versions,
            "STREAM_TRAINER_TOPIC_RULE_VERSIONS": self.rule_versions,
            "STREAM_TRAINER_TOPIC_TRAINING_METRICS": self.metrics,
            "STREAM_TRAINER_TOPIC_DEAD_LETTER": self.dead_letter,
            "STREAM_TRAINER_HTTP_PORT": "0",
            "STREAM_TRAINER_SUMMARY_INTERVAL_S": "2",
        }
        env.update({f"STREAM_TRAINER_{k.upper()}": str(v) for k, v in settings.items()})
        return env


def new_topics(label: str) -> Topics:
    return Topics(f"t{label}-{uuid.uuid4().hex[:8]}")


InputRecord = tuple[str, bytes | None, bytes | None]  # kind ("observation"/"feedback"), key, value


async def create_inputs(bootstrap: str, topics: Topics, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, partitions, 1) for t in (topics.observations, topics.feedback)]
        )
    finally:
        await admin.close()


async def seeded_stream(
    bootstrap: str,
    label: str,
    *,
    partitions: int,
    seed: int,
    models: int,
    events: int,
    produce_first: int | None = None,
) -> tuple[Topics, list[InputRecord]]:
    """Fresh input topics and a seeded synthetic stream (`models` variables and rules).

    Produces the first `produce_first` records (all by default); the test sends the rest.
    """
    topics = new_topics(label)
    await create_inputs(bootstrap, topics, partitions)
    pulse = SyntheticPulse(seed=seed, n_variables=models, n_rules=models)
    records: list[InputRecord] = list(pulse.records(events))
    await produce(bootstrap, topics, records[:produce_first])
    return topics, records


async def produce(bootstrap: str, topics: Topics, records: Iterable[InputRecord]) -> int:
    """Produce inputs (keyed, so each model's events stay in one partition, in order)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=2 * 1024 * 1024,
    )
    await producer.start()
    count = 0
    try:
        futures = []
        for kind, key, value in records:
            topic = topics.observations if kind == "observation" else topics.feedback
            futures.append(await producer.send(topic, value, key=key))
            count += 1
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count


async def read_all(bootstrap: str, topic: str, *, isolation: str = "read_committed") -> list[Any]:
    """Every record of a topic from the beginning to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        out: list[Any] = []
        async for _, records in read_to_end(consumer, await topic_partitions(consumer, topic)):
            out.extend(records)
        return out
    finally:
        await stop_consumer(consumer)


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    except GroupCoordinatorNotAvailableError:
        return {}  # the group does not exist yet
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        for _ in range(50):
            tps = [
                TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
            ]
            if {tp.topic for tp in tps} == set(topics):
                return dict(await consumer.end_offsets(tps))
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise AssertionError(f"topics {topics} not found")
    finally:
        await stop_consumer(consumer)


async def wait_consumed(
    bootstrap: str,
    topics: Topics,
    *,
    timeout_s: float,
    procs: Sequence[subprocess.Popen[bytes]] = (),
) -> None:
    """Wait until the group's committed offsets reach the input end offsets."""
    ends = await end_offsets(bootstrap, [topics.observations, topics.feedback])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"trainer exited early with {proc.returncode}")
        committed = await committed_offsets(bootstrap, topics.application_id)
        if all(committed.get(tp, 0) >= end for tp, end in ends.items() if end > 0):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"inputs not consumed within {timeout_s}s: {committed} vs {ends}")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream_trainer.cli", *args]


def cli_env(bootstrap: str, topics: Topics, **settings: Any) -> dict[str, str]:
    return {**os.environ, **topics.env(bootstrap, **settings)}


def start_trainer(
    bootstrap: str,
    topics: Topics,
    log_path: Path,
    *args: str,
    release: Path | None = None,
    **settings: Any,
) -> subprocess.Popen[bytes]:
    """The trainer as a real subprocess through its CLI (`python -m stream_trainer.cli`).

    `release`: run the code of another release extracted there (`git archive`) instead.
    """
    env = cli_env(bootstrap, topics, **settings)
    if release is not None:
        # `-m` puts the working directory first on sys.path: it must be the release too.
        env["PYTHONPATH"] = str(release)
    log = log_path.open("ab")
    proc = subprocess.Popen(
        cli("run", *args),
        env=env,
        cwd=release,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _LOGS[proc.pid] = (log_path, log.tell())
    return proc


_LOGS: dict[int, tuple[Path, int]] = {}  # trainer pid -> (its log, where its lines start)


def wait_started(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Until the trainer logged that it started (a SIGTERM before that is not a drain)."""
    log_path, offset = _LOGS[proc.pid]
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        with log_path.open("rb") as log:
            log.seek(offset)
            lines = log.read().splitlines()
        # Trainers may share a log: the line names this one by its instance id (pid last).
        if any(b"trainer started" in line and line.endswith(b"-%d" % proc.pid) for line in lines):
            return
        time.sleep(0.05)


def stop_trainer(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> int:
    """SIGTERM once the trainer is up; its exit code (0 = drained cleanly)."""
    wait_started(proc)
    proc.terminate()
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


# -- expectations ----------------------------------------------------------------------


@dataclass
class Expected:
    trust: ReferenceResult
    forecaster: ReferenceResult
    invalid: int
    total: int


def expected_models(
    records: Sequence[InputRecord], max_event_bytes: int = 65_536, **params: Any
) -> Expected:
    """Reference results for the valid inputs, in per-model input order."""
    feedback: list[tuple[str, str, float, bool, float]] = []
    observations: list[tuple[str, int, float]] = []
    invalid = 0
    for kind, key, value in records:
        try:
            if kind == "observation":
                o = decode_observation(value, max_bytes=max_event_bytes)
                if key != o.variable.encode():
                    invalid += 1
                    continue
                observations.append((o.variable, ts_us(o.ts), o.value))
            else:
                f = decode_feedback(value, max_bytes=max_event_bytes)
                if key != f.rule_id.encode():
                    invalid += 1
                    continue
                feedback.append((f.rule_id, f.event_id, ts_s(f.ts), f.success, f.weight))
        except DecodeError:
            invalid += 1
    trust = reference_trust(feedback, **params.get("trust", {}))
    forecaster = reference_forecaster(observations, **params.get("forecaster", {}))
    invalid += len(trust.rejected) + len(forecaster.rejected)
    return Expected(trust, forecaster, invalid, len(records))


@dataclass
class Outputs:
    rules: dict[str, list[RuleVersion]] = field(default_factory=lambda: defaultdict(list))
    models: dict[str, list[ModelVersion]] = field(default_factory=lambda: defaultdict(list))
    metrics: list[TrainingMetrics] = field(default_factory=list)
    dead_letters: list[Any] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)  # keys not in their default partition


async def read_outputs(
    bootstrap: str, topics: Topics, isolation: str = "read_committed", prefix: str = ""
) -> Outputs:
    """The trainer's outputs; `prefix` reads a replay's prefixed topics instead."""
    out = Outputs()
    rule_dec = msgspec.json.Decoder(RuleVersion)
    model_dec = msgspec.json.Decoder(ModelVersion)
    metrics_dec = msgspec.json.Decoder(TrainingMetrics)
    rule_records = await read_all(bootstrap, prefix + topics.rule_versions, isolation=isolation)
    for rec in rule_records:
        rv = rule_dec.decode(rec.value)
        out.rules[rv.rule_id].append(rv)
    model_records = await read_all(bootstrap, prefix + topics.model_versions, isolation=isolation)
    for rec in model_records:
        mv = model_dec.decode(rec.value)
        out.models[mv.model_id].append(mv)
    out.misplaced = _misplaced(
        rule_records, await partition_count(bootstrap, prefix + topics.rule_versions)
    ) + _misplaced(model_records, await partition_count(bootstrap, prefix + topics.model_versions))
    out.metrics = [
        metrics_dec.decode(r.value)
        for r in await read_all(bootstrap, prefix + topics.metrics, isolation=isolation)
    ]
    out.dead_letters = await read_all(bootstrap, prefix + topics.dead_letter, isolation=isolation)
    return out


async def partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return len(described["partitions"])
    finally:
        await admin.close()


def _misplaced(records: Sequence[Any], count: int) -> list[str]:
    """Keys of version records not in the partition Kafka's default partitioner gives them."""
    partitions = list(range(count))
    partitioner = DefaultPartitioner()
    return [
        r.key.decode() for r in records if r.partition != partitioner(r.key, partitions, partitions)
    ]


def verify(out: Outputs, expected: Expected) -> list[str]:
    """Every discrepancy between the outputs and the reference (empty list = exact)."""
    problems: list[str] = [f"version of {key} in the wrong partition" for key in out.misplaced]
    problems += _verify_versions("rule", out.rules)
    problems += _verify_versions("model", out.models)
    if set(out.rules) != set(expected.trust.models):
        problems.append(
            f"rules published {len(out.rules)} != expected {len(expected.trust.models)}"
        )
    if set(out.models) != set(expected.forecaster.models):
        problems.append(
            f"models published {len(out.models)} != expected {len(expected.forecaster.models)}"
        )
    for rule_id, ref in expected.trust.models.items():
        if rule_id in out.rules:
            problems += _compare_rule(out.rules[rule_id][-1], ref)
    for var, ref in expected.forecaster.models.items():
        if var in out.models:
            problems += _compare_model(out.models[var][-1], ref)
    problems += _verify_metrics(out, expected)
    return problems


def _verify_versions(kind: str, versions: dict[str, list[Any]]) -> list[str]:
    problems = []
    for key, items in versions.items():
        got = [v.version for v in items]
        if got != list(range(1, len(got) + 1)):
            problems.append(f"{kind} {key}: versions {got[:10]}... are not 1..n")
    return problems


def _close(a: float | None, b: float | None, rtol: float) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


def _compare_rule(got: RuleVersion, ref: dict[str, Any]) -> list[str]:
    bad = [
        f
        for f in ("alpha", "beta", "trust", "evidence")
        if not _close(getattr(got, f), ref[f], TRUST_RTOL)
    ]
    if got.status != ref["status"]:
        bad.append("status")
    return [f"rule {got.rule_id}: {f} {getattr(got, f)} != {ref[f]}" for f in bad]


def _compare_model(got: ModelVersion, ref: dict[str, Any]) -> list[str]:
    problems = []
    if got.n_observations != ref["n_observations"]:
        problems.append(
            f"model {got.model_id}: n_observations {got.n_observations} != {ref['n_observations']}"
        )
    for i, (a, b) in enumerate(zip(got.coefficients, ref["coefficients"], strict=True)):
        if not _close(a, b, COEF_RTOL):
            problems.append(f"model {got.model_id}: coefficient {i} {a} != {b}")
    return problems


def _verify_metrics(out: Outputs, expected: Expected) -> list[str]:
    problems = []
    ids = [m.batch_id for m in out.metrics]
    if len(ids) != len(set(ids)):
        problems.append(f"{len(ids) - len(set(ids))} batches reported twice")
    counted = sum(m.observations + m.feedback + m.invalid for m in out.metrics)
    if counted != expected.total:
        problems.append(f"metrics account for {counted} input records, not {expected.total}")
    invalid = sum(m.invalid for m in out.metrics)
    if invalid != expected.invalid:
        problems.append(f"metrics count {invalid} invalid records, expected {expected.invalid}")
    if len(out.dead_letters) != expected.invalid:
        problems.append(f"{len(out.dead_letters)} dead letters, expected {expected.invalid}")
    return problems


def summarize(problems: list[str], examples: int = 5) -> str:
    """Problems grouped by kind, with a few examples of each (for assertion messages)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for problem in problems:
        kind = (
            problem.split(":", 1)[-1].split()[0]
            if problem.startswith(("rule ", "model "))
            else problem[:40]
        )
        groups[kind].append(problem)
    return "\n".join(
        f"{len(items)} x {kind}: " + " | ".join(items[:examples]) for kind, items in groups.items()
    )
