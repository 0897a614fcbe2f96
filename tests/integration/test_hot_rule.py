"""One hot rule through the real service: 200k feedback at 10 per second of event time.

Before the dedupe memory got a bounded store of its own, this rule's changelog record held
every recent event id and passed Kafka's 1 MiB limit after ~64k events: the transaction
failed, the process exited, and a restart failed at the same place. Now every changelog
record stays small whatever the traffic, and the final trust equals the reference.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration import harness as h

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 200_000
RULE = "rule.hot"
MAX_RECORD = 64 * 1024


def _hot_feedback() -> list[h.InputRecord]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    records: list[h.InputRecord] = []
    for i in range(EVENTS):
        ts = (start + timedelta(milliseconds=100 * i)).isoformat()
        event_id = f"f-{i % 150_000}" if i % 97 else f"f-{i - 1}"  # some redeliveries
        doc = {"event_id": event_id, "rule_id": RULE, "ts": ts, "success": i % 3 != 0}
        records.append(("feedback", RULE.encode(), json.dumps(doc).encode()))
    return records


async def test_a_hot_rule_keeps_small_records_and_equals_the_reference(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = h.new_topics("hot")
    await h.create_inputs(kafka_bootstrap, topics, partitions=1)
    records = _hot_feedback()
    await h.produce(kafka_bootstrap, topics, records)
    log = tmp_path / "trainer.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *h.cli("run", "--until-end"),
            env=h.cli_env(kafka_bootstrap, topics, http_port=0),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        code = await asyncio.wait_for(proc.wait(), timeout=300)
    assert code == 0, log.read_text()[-3000:]

    outputs = await h.read_outputs(kafka_bootstrap, topics)
    expected = h.expected_models(records)  # the sequential reference learners
    assert expected.trust.rejected, "the input should hold redeliveries"
    assert h.verify(outputs, expected) == []
    changelog = await h.read_all(kafka_bootstrap, f"{topics.application_id}-state-changelog")
    sizes = [len(r.value) for r in changelog if r.value is not None]
    assert sizes and max(sizes) < MAX_RECORD
    assert len(changelog) < EVENTS  # one record per commit, not per event
