"""`stream-trainer show` on a real broker: one partition read, latest/history/json, exit 1."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition

from stream_trainer.cli import build_parser
from stream_trainer.commands.show import key_partition, show
from stream_trainer.config import Settings
from stream_trainer.events import encode
from stream_trainer.kafka.clients import read_to_end
from tests.integration import harness as h
from tests.integration.version_topics import VersionWriter, Write, model, rule, version_topic

pytestmark = pytest.mark.kafka

KEY = "rule.momentum.spx"
PARTITIONS = 6


@pytest.fixture(scope="module")
async def topic(kafka_bootstrap: str) -> str:
    """KEY at versions 1..3 (+ an aborted 9), decoys of KEY in every other partition
    (version 50: they would win if read), neighbours in KEY's partition, a forgotten key."""
    name = await version_topic(kafka_bootstrap, "show", PARTITIONS)
    home = key_partition(KEY.encode(), PARTITIONS)
    decoys: list[Write] = [(KEY, rule(KEY, 50), p) for p in range(PARTITIONS) if p != home]
    neighbours = [
        f"rule.n{i}" for i in range(200) if key_partition(f"rule.n{i}".encode(), 6) == home
    ]
    async with VersionWriter(kafka_bootstrap) as writer:
        await writer.commit(name, decoys)
        for v in (1, 2, 3):
            await writer.commit(
                name, [(KEY, rule(KEY, v), None), *((n, rule(n, v), None) for n in neighbours)]
            )
        await writer.abort(name, [(KEY, rule(KEY, 9), None)])
        await writer.commit(
            name, [("rule.gone", rule("rule.gone", 1), None), ("rule.gone", None, None)]
        )
    return name


async def run_show(
    bootstrap: str, topic: str, *argv: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    args = build_parser().parse_args(["show", *argv])
    rc = await show(Settings(bootstrap_servers=bootstrap, topic_rule_versions=topic), args)
    out, err = capsys.readouterr()
    return rc, out, err


async def test_show_reads_only_the_keys_partition(
    kafka_bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    assigned: list[list[TopicPartition]] = []

    def spy(consumer: Any, partitions: Sequence[TopicPartition]) -> AsyncIterator[Any]:
        assigned.append(list(partitions))
        return read_to_end(consumer, partitions)

    monkeypatch.setattr("stream_trainer.commands.show.read_to_end", spy)
    rc, out, err = await run_show(kafka_bootstrap, topic, "rule", KEY, capsys=capsys)
    assert rc == 0, err
    home = key_partition(KEY.encode(), PARTITIONS)
    assert assigned == [[TopicPartition(topic, home)]]
    lines = out.splitlines()
    assert lines[0].startswith(f"rule {KEY}  ({topic} partition {home} of 6, offset ")
    assert "  version          3" in lines  # not the decoys' 50, not the aborted 9
    assert "  trust            0.35" in lines


async def test_show_json_is_the_wire_json_on_one_line(
    kafka_bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = await run_show(
        kafka_bootstrap, topic, "rule", KEY, "--format", "json", capsys=capsys
    )
    assert rc == 0 and out == encode(rule(KEY, 3)).decode() + "\n"


async def test_show_history_prints_every_retained_version_oldest_first(
    kafka_bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = await run_show(
        kafka_bootstrap, topic, "rule", KEY, "--history", "--format", "json", capsys=capsys
    )
    assert rc == 0
    assert [json.loads(line)["version"] for line in out.splitlines()] == [1, 2, 3]
    rc, out, _ = await run_show(kafka_bootstrap, topic, "rule", KEY, "--history", capsys=capsys)
    rows = out.splitlines()[2:]
    assert rc == 0 and [row.split()[1] for row in rows] == ["1", "2", "3"]


async def test_show_unknown_and_forgotten_keys_exit_1(
    kafka_bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = await run_show(kafka_bootstrap, topic, "rule", "rule.nobody", capsys=capsys)
    assert (rc, out) == (1, "") and "no rule 'rule.nobody'" in err
    rc, out, err = await run_show(kafka_bootstrap, topic, "rule", "rule.gone", capsys=capsys)
    assert (rc, out) == (1, "") and "'rule.gone' was forgotten" in err
    rc, out, err = await run_show(
        kafka_bootstrap, topic, "rule", "rule.gone", "--history", capsys=capsys
    )
    assert rc == 1 and "(forgotten: tombstone)" in out


async def test_show_model_through_the_real_cli(kafka_bootstrap: str) -> None:
    topic = await version_topic(kafka_bootstrap, "show-model", 6)
    async with VersionWriter(kafka_bootstrap) as writer:
        await writer.commit(topic, [("spx_close", model("spx_close", v), None) for v in (1, 2)])
    env = {**os.environ, "STREAM_TRAINER_TOPIC_MODEL_VERSIONS": topic}
    base = h.cli("show", "--bootstrap-servers", kafka_bootstrap, "model")
    found = await asyncio.to_thread(
        subprocess.run, [*base, "spx_close"], env=env, capture_output=True, text=True, timeout=60
    )
    assert found.returncode == 0, found.stderr
    assert "  coefficients     [0.5, 0.898, 0.01]" in found.stdout.splitlines()
    missing = await asyncio.to_thread(
        subprocess.run, [*base, "nope"], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1 and "stream-trainer: no model 'nope'" in missing.stderr
