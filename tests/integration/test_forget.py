"""`stream-trainer forget` on a real broker, with kill -9 around it: no trace, then a new life.

Phase 1 trains on half the stream and forgets rules and models through the CLI (one of each
an id that needs escaping). The trainer is SIGKILLed right after the first tombstone is
acked, its successor as soon as it committed the tombstones; a third finishes. Nothing of the
keys may be left: HTTP says unknown (also after another restart), the changelog's and the
version topic's latest records for them are tombstones, a view started afterwards does not
hold them. Phase 2 forgets two more pairs (one waited for, to read the metric; one followed
at once by its events), sends the rest of the stream and SIGKILLs once more: every forgotten
key then has exactly [old life 1..k] [tombstone] [new life 1..m], the new life equal to the
reference learners run on its events alone; every other key equals the reference on all of
its events, versions 1..n, every input record accounted for exactly once.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from stream_trainer.commands.show import key_partition
from stream_trainer.config import Settings
from stream_trainer.dev.synthetic import rule_name, variable_name
from stream_trainer.events import ModelVersion, RuleVersion, TrainingMetrics
from stream_trainer.views import ModelView, RuleView, VersionView
from tests.integration import harness as h
from tests.integration.ops_client import free_port, get, key_history, odd_events, one, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3
EVENTS = 24_000
ODD = "odd/id with space%20é"
# Phase 1 forgets these (rule, variable); phase 2 forgets R2/V2 (waited for) and R3/V3.
PHASE1 = (("rule", rule_name(3)), ("model", variable_name(5)), ("rule", ODD), ("model", ODD))
PHASE2_WAITED = (("rule", rule_name(8)), ("model", variable_name(9)))
PHASE2_AT_ONCE = (("rule", rule_name(11)), ("model", variable_name(12)))
FORGOTTEN = PHASE1 + PHASE2_WAITED + PHASE2_AT_ONCE
DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "rule": msgspec.json.Decoder(RuleVersion),
    "model": msgspec.json.Decoder(ModelVersion),
}


class Run:
    """The topics, the trainer subprocesses (one at a time) and its fixed HTTP port."""

    def __init__(self, bootstrap: str, topics: h.Topics, log: Path) -> None:
        self.bootstrap, self.topics, self.log = bootstrap, topics, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = h.start_trainer(
            self.bootstrap, self.topics, self.log, group_instance_id="slot-0",
            http_port=self.port, max_batch_events=200,
        )  # fmt: skip
        return self.proc

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.tail()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        assert self.proc is not None
        proc, self.proc = self.proc, None
        assert h.stop_trainer(proc) == 0, self.tail()

    async def ready(self) -> None:
        assert self.proc is not None
        await wait_ready(self.port, self.proc)

    def close(self) -> None:
        """SIGKILL a trainer left running by a failed assertion."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    async def consumed(self) -> None:
        assert self.proc is not None
        await h.wait_consumed(self.bootstrap, self.topics, timeout_s=240, procs=[self.proc])

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    @property
    def changelog(self) -> str:
        return f"{self.topics.application_id}-state-changelog"

    def version_topic(self, kind: str) -> str:
        return self.topics.rule_versions if kind == "rule" else self.topics.model_versions


async def forget_cli(run: Run, kind: str, key: str) -> None:
    """`stream-trainer forget KIND KEY --yes` as a subprocess; it must say what it wrote."""
    proc = await asyncio.create_subprocess_exec(
        *h.cli("forget", kind, key, "--yes"), env=h.cli_env(run.bootstrap, run.topics),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert f"forget {kind} {key!r}: tombstone written to " in out.decode(), out.decode()


def lives(kind: str, history: Sequence[bytes | None]) -> list[list[int]]:
    """The version numbers of each life of a key (a tombstone ends a life)."""
    out: list[list[int]] = [[]]
    for value in history:
        if value is None:
            out.append([])
        else:
            out[-1].append(DECODERS[kind].decode(value).version)
    return out


async def histories(run: Run) -> dict[str, dict[bytes, list[bytes | None]]]:
    return {kind: await key_history(run.bootstrap, run.version_topic(kind)) for kind in DECODERS}


async def assert_unknown_over_http(run: Run, keys: Sequence[tuple[str, str]]) -> None:
    for kind, key in keys:
        status, body = await get(run.port, one(f"{kind}s", key))
        answer = json.loads(body)
        assert status == 404 and answer["error"].startswith(f"unknown {kind} "), (key, answer)
        assert answer["partition"] == key_partition(key.encode(), PARTITIONS)


async def assert_gone(run: Run, keys: Sequence[tuple[str, str]]) -> None:
    """No trace of the keys: HTTP, changelog and version topic end in tombstones, views."""
    await assert_unknown_over_http(run, keys)
    changelog = await key_history(run.bootstrap, run.changelog)
    versions = await histories(run)
    for kind, key in keys:
        state = changelog[f"{kind[0]}:{key}".encode()]
        assert state[:1] != [None] and state[-1] is None, (key, len(state))
        old_life, *rest = lives(kind, versions[kind][key.encode()])
        assert old_life == list(range(1, len(old_life) + 1)) and old_life, (key, old_life)
        assert rest == [[]], (key, rest)  # one tombstone, last
    settings = Settings(
        bootstrap_servers=run.bootstrap,
        topic_rule_versions=run.topics.rule_versions,
        topic_model_versions=run.topics.model_versions,
    )
    async with RuleView(settings) as rules, ModelView(settings) as models:
        await rules.ready()
        await models.ready()
        held: dict[str, VersionView[Any]] = {"rule": rules, "model": models}
        for kind, key in keys:
            assert key not in held[kind] and held[kind].get(key) is None
        assert len(rules) == sum(v[-1] is not None for v in versions["rule"].values())
        assert len(models) == sum(v[-1] is not None for v in versions["model"].values())


async def forgotten_counts(run: Run, want: dict[str, float]) -> dict[str, float]:
    """`stream_trainer_keys_forgotten_total` by kind, once it reads `want` (or after 30 s:
    the commit is visible a moment before the trainer counts it)."""
    deadline = time.monotonic() + 30
    while True:
        status, body = await get(run.port, "/metrics")
        assert status == 200
        counts = {}
        for line in body.decode().splitlines():
            if line.startswith("stream_trainer_keys_forgotten_total{"):
                labels, value = line.rsplit(" ", 1)
                counts[labels.split('kind="')[1].split('"')[0]] = float(value)
        if counts == want or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.5)


async def wait_tombstones(run: Run, keys: Sequence[tuple[str, str]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        versions = await histories(run)
        if all(None in versions[kind].get(key.encode(), []) for kind, key in keys):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"no tombstone for {keys} within {timeout_s}s")


def gapless(versions: list[int]) -> bool:
    return bool(versions) and versions == list(range(1, len(versions) + 1))


def compare(kind: str, got: bytes, ref: dict[str, Any]) -> list[str]:
    version = DECODERS[kind].decode(got)
    return h._compare_rule(version, ref) if kind == "rule" else h._compare_model(version, ref)


def references(records: Sequence[h.InputRecord]) -> dict[str, dict[str, Any]]:
    expected = h.expected_models(records)
    return {"rule": expected.trust.models, "model": expected.forecaster.models}


async def test_forget_with_kill_9_leaves_no_trace_and_a_later_event_starts_a_new_life(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics, stream = await h.seeded_stream(
        kafka_bootstrap, "forget", partitions=PARTITIONS, seed=41, models=120, events=EVENTS,
        produce_first=0,
    )  # fmt: skip
    first = stream[: EVENTS // 2] + odd_events([ODD], 30)
    second = stream[EVENTS // 2 :] + odd_events([ODD], 30, start=datetime(2026, 6, 1, tzinfo=UTC))
    run = Run(kafka_bootstrap, topics, tmp_path / "trainer.log")
    rng = random.Random(41)

    try:
        await phase_1(run, first)
        await phase_2(run, second, rng)
        await check_final(run, first, second)
        run.stop()
    finally:
        run.close()


async def phase_1(run: Run, first: Sequence[h.InputRecord]) -> None:
    """Train, forget around two kill -9, finish: no trace of the keys, also after a restart."""
    await h.produce(run.bootstrap, run.topics, first)
    run.start()
    await run.consumed()
    await forget_cli(run, *PHASE1[0])
    run.kill()  # right after the first tombstone is acked
    for kind, key in PHASE1[1:]:
        await forget_cli(run, kind, key)
    run.start()
    await wait_tombstones(run, PHASE1, timeout_s=120)
    run.kill()  # at once after it committed them: the next restore reads them last
    run.start()
    await run.consumed()
    await run.ready()
    await assert_gone(run, PHASE1)
    run.stop()
    run.start()  # a restore after the forget must not bring the keys back
    await run.ready()
    await assert_unknown_over_http(run, PHASE1)


async def phase_2(run: Run, second: Sequence[h.InputRecord], rng: random.Random) -> None:
    """Forget more (the metric counts them), send the rest of the stream, one more kill -9."""
    for kind, key in PHASE2_WAITED:
        await forget_cli(run, kind, key)
    await wait_tombstones(run, PHASE2_WAITED, timeout_s=60)
    assert await forgotten_counts(run, {"rule": 1.0, "model": 1.0}) == {"rule": 1.0, "model": 1.0}
    for kind, key in PHASE2_AT_ONCE:
        await forget_cli(run, kind, key)  # its events follow at once
    producing = asyncio.create_task(h.produce(run.bootstrap, run.topics, second))
    try:
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        run.kill()
    finally:
        await producing
    run.start()
    await run.consumed()
    await run.ready()


async def check_final(
    run: Run, first: Sequence[h.InputRecord], second: Sequence[h.InputRecord]
) -> None:
    versions = await histories(run)
    changelog = await key_history(run.bootstrap, run.changelog)
    everything, old, new = references([*first, *second]), references(first), references(second)
    problems: list[str] = []
    forgotten = {(kind, key.encode()) for kind, key in FORGOTTEN}
    for kind, key in FORGOTTEN:
        history = versions[kind][key.encode()]
        key_lives = lives(kind, history)
        if len(key_lives) != 2 or not all(gapless(life) for life in key_lives):
            problems.append(f"{kind} {key}: lives {key_lives}, not [1..k] tombstone [1..m]")
            continue
        cut = history.index(None)
        problems += compare(kind, history[cut - 1] or b"", old[kind][key])
        problems += compare(kind, history[-1] or b"", new[kind][key])
        if changelog[f"{kind[0]}:{key}".encode()][-1] is None:
            problems.append(f"{kind} {key}: the changelog ends in a tombstone")
        status, body = await get(run.port, one(f"{kind}s", key))
        if (status, body) != (200, history[-1]):
            problems.append(f"{kind} {key}: HTTP {status} {body[:80]!r}")
    for kind, per_key in versions.items():
        for raw, history in per_key.items():
            if (kind, raw) in forgotten:
                continue
            got = lives(kind, history)
            if len(got) != 1 or not gapless(got[0]):
                problems.append(f"{kind} {raw!r}: versions {got}")
            problems += compare(kind, history[-1] or b"", everything[kind][raw.decode()])
    assert {len(v) for v in versions.values()} == {len(everything["rule"])}
    problems += await accounting_problems(run, len(first) + len(second) + len(FORGOTTEN))
    assert problems == [], h.summarize(problems)


async def accounting_problems(run: Run, records: int) -> list[str]:
    """Every input record (tombstones included) counted once, nothing dead-lettered."""
    decoder = msgspec.json.Decoder(TrainingMetrics)
    metrics = [decoder.decode(r.value) for r in await h.read_all(run.bootstrap, run.topics.metrics)]
    ids = [m.batch_id for m in metrics]
    counted = sum(m.observations + m.feedback + m.invalid for m in metrics)
    dead = await h.read_all(run.bootstrap, run.topics.dead_letter)
    problems = []
    if len(ids) != len(set(ids)):
        problems.append(f"{len(ids) - len(set(ids))} batches reported twice")
    if counted != records:
        problems.append(f"metrics count {counted} records, not {records}")
    if dead:
        problems.append(f"{len(dead)} dead letters")
    return problems


async def test_forget_cli_writes_one_tombstone_in_the_keys_partition(
    kafka_bootstrap: str,
) -> None:
    topics = h.new_topics("forget-cli")
    await h.create_inputs(kafka_bootstrap, topics, 6)
    env = h.cli_env(kafka_bootstrap, topics)
    key = "rule/é %20 x"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            h.cli("forget", *args), env=env, stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip

    refused = await asyncio.to_thread(cli, "rule", key)
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    dry = await asyncio.to_thread(cli, "rule", key, "--dry-run")
    home = key_partition(key.encode(), 6)
    assert dry.returncode == 0 and f"{topics.feedback} partition {home}" in dry.stdout
    assert await h.read_all(kafka_bootstrap, topics.feedback) == []
    done = await asyncio.to_thread(cli, "rule", key, "--yes")
    assert done.returncode == 0, done.stderr
    assert f"tombstone written to {topics.feedback} partition {home}, offset 0" in done.stdout
    (record,) = await h.read_all(kafka_bootstrap, topics.feedback)
    assert (record.key, record.value, record.partition) == (key.encode(), None, home)
    assert await h.read_all(kafka_bootstrap, topics.observations) == []
    model = await asyncio.to_thread(cli, "model", "spx_close", "--yes")
    assert model.returncode == 0 and topics.observations in model.stdout
    missing = await asyncio.to_thread(
        subprocess.run, h.cli("forget", "rule", key, "--yes"),
        env={**env, "STREAM_TRAINER_TOPIC_FEEDBACK": "no.such.topic"}, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2 and "topic no.such.topic does not exist" in missing.stderr
