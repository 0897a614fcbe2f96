"""Live views on a real broker: catch-up, updates, tombstones, aborted transactions,
a broker restart, and a view following a real trainer to the reference models."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from stream_trainer.config import Settings
from stream_trainer.dev.broker.local_broker import LocalKafkaBroker
from stream_trainer.events import ModelVersion, RuleVersion
from stream_trainer.views import ModelView, RuleView, Update, VersionView
from tests.integration import harness as h
from tests.integration.version_topics import VersionWriter, Write, model, rule, version_topic

pytestmark = pytest.mark.kafka

KEYS = [f"rule.momentum.v{i:05d}" for i in range(120)]


def rule_view(bootstrap: str, topic: str, **kwargs: Any) -> RuleView:
    return RuleView(Settings(bootstrap_servers=bootstrap, topic_rule_versions=topic), **kwargs)


def state(view: VersionView[Any]) -> dict[str, Any]:
    return {key: view.get(key) for key in view}


async def collect(updates: Any, count: int, timeout_s: float = 30) -> list[Update[Any]]:
    got: list[Update[Any]] = []
    async with asyncio.timeout(timeout_s):
        async for update in updates:
            got.append(update)
            if len(got) == count:
                return got
    raise AssertionError(f"updates ended after {len(got)} of {count}")


async def eventually(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.1)


async def test_views_early_and_late_end_equal_to_the_latest_committed_per_key(
    kafka_bootstrap: str,
) -> None:
    topic = await version_topic(kafka_bootstrap, "view-latest")
    rounds: list[list[Write]] = [[(k, rule(k, v), None) for k in KEYS] for v in (1, 2, 3)]
    rounds.append([(k, rule(k, 2, trust=0.01), None) for k in KEYS[:30]])  # stale replays
    rounds.append([(k, None, None) for k in KEYS[30:40]])  # forgotten
    expected = {k: rule(k, 3) for k in KEYS[:30] + KEYS[40:]}
    async with rule_view(kafka_bootstrap, topic) as early:
        await early.ready()
        assert len(early) == 0
        async with VersionWriter(kafka_bootstrap) as writer:
            for writes in rounds:
                await writer.commit(topic, writes)
            aborted = await writer.abort(topic, [(k, rule(k, 99, 0.99), None) for k in KEYS])
        async with rule_view(kafka_bootstrap, topic) as late:
            await late.ready()
            assert state(late) == expected
            assert late.stats.stale == 30 and late.stats.removed == 10
            assert late.stats.records == sum(map(len, rounds))  # nothing of the aborted one
        await eventually(lambda: state(early) == expected, 30, "early view caught up")
    everything = await h.read_all(kafka_bootstrap, topic, isolation="read_uncommitted")
    assert len(everything) == sum(map(len, rounds)) + aborted  # the aborted records exist


async def test_updates_arrive_in_version_order_and_a_tombstone_removes_the_key(
    kafka_bootstrap: str,
) -> None:
    topic = await version_topic(kafka_bootstrap, "view-updates")
    keys = KEYS[:40]
    async with VersionWriter(kafka_bootstrap) as writer:
        await writer.commit(topic, [(k, rule(k, 1), None) for k in keys])
        callbacks: list[Update[RuleVersion]] = []
        async with rule_view(kafka_bootstrap, topic, on_update=callbacks.append) as view:
            updates = view.updates()
            await view.ready()
            for v in range(2, 6):
                await writer.commit(topic, [(k, rule(k, v), None) for k in keys])
                await writer.abort(topic, [(k, rule(k, 50 + v), None) for k in keys])
            await writer.commit(topic, [(keys[0], None, None)])
            got = await collect(updates, 4 * len(keys) + 1)
            per_key: dict[str, list[int | None]] = defaultdict(list)
            for key, version in got:
                per_key[key].append(version.version if version is not None else None)
            assert per_key[keys[0]] == [2, 3, 4, 5, None]
            assert all(per_key[k] == [2, 3, 4, 5] for k in keys[1:])
            assert keys[0] not in view and view.get(keys[0]) is None and len(view) == 39
            assert callbacks == got


async def test_model_view_reads_model_versions(kafka_bootstrap: str) -> None:
    topic = await version_topic(kafka_bootstrap, "view-models", partitions=3)
    writes: list[Write] = [(f"var_{i:03d}", model(f"var_{i:03d}", v), None)
                           for v in (1, 2) for i in range(50)]  # fmt: skip
    async with VersionWriter(kafka_bootstrap) as writer:
        await writer.commit(topic, writes)
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_model_versions=topic)
    async with ModelView(settings) as view:
        await view.ready()
        assert state(view) == {f"var_{i:03d}": model(f"var_{i:03d}", 2) for i in range(50)}
        assert len(view.partitions) == 3


async def test_a_view_rides_out_a_broker_restart(
    kafka_bootstrap: str, local_broker: LocalKafkaBroker | None
) -> None:
    if local_broker is None:
        pytest.skip("needs the restartable local broker")
    topic = await version_topic(kafka_bootstrap, "view-restart")
    async with VersionWriter(kafka_bootstrap) as writer:
        await writer.commit(topic, [(k, rule(k, 1), None) for k in KEYS])
    async with rule_view(kafka_bootstrap, topic) as view:
        await view.ready()
        await asyncio.to_thread(local_broker.restart)
        async with VersionWriter(kafka_bootstrap) as writer:
            await writer.commit(topic, [(k, rule(k, 2), None) for k in KEYS])
        await eventually(
            lambda: all(view.version_of(k) == 2 for k in KEYS), 120, "view after restart"
        )
        assert state(view) == {k: rule(k, 2) for k in KEYS}


async def test_a_view_follows_a_running_trainer_to_the_reference_models(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics, records = await h.seeded_stream(
        kafka_bootstrap, "view-trainer", partitions=3, seed=41, models=150, events=30_000,
        produce_first=10_000,
    )  # fmt: skip
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        topic_rule_versions=topics.rule_versions,
        topic_model_versions=topics.model_versions,
    )
    # Started before the trainer created its output topics: they appear as new partitions.
    async with (
        RuleView(settings, metadata_refresh_s=1) as rules,
        ModelView(settings, metadata_refresh_s=1) as models,
    ):
        await rules.ready()
        await models.ready()
        proc = h.start_trainer(kafka_bootstrap, topics, tmp_path / "trainer.log")
        try:
            await h.produce(kafka_bootstrap, topics, records[10_000:])
            await h.wait_consumed(kafka_bootstrap, topics, timeout_s=180, procs=[proc])
        finally:
            assert h.stop_trainer(proc) == 0, (tmp_path / "trainer.log").read_text()[-3000:]
        outputs = await h.read_outputs(kafka_bootstrap, topics)
        final_rules = {k: v[-1] for k, v in outputs.rules.items()}
        final_models = {k: v[-1] for k, v in outputs.models.items()}
        await eventually(
            lambda: state(rules) == final_rules and state(models) == final_models,
            60,
            "views equal to the committed outputs",
        )
        rule_state: dict[str, RuleVersion] = state(rules)
        model_state: dict[str, ModelVersion] = state(models)
    expected = h.expected_models(records)
    assert h.verify(outputs, expected) == []
    assert set(rule_state) == set(expected.trust.models)
    assert set(model_state) == set(expected.forecaster.models)
    problems = [p for k, ref in expected.trust.models.items()
                for p in h._compare_rule(rule_state[k], ref)]  # fmt: skip
    problems += [p for k, ref in expected.forecaster.models.items()
                 for p in h._compare_model(model_state[k], ref)]  # fmt: skip
    assert problems == []
