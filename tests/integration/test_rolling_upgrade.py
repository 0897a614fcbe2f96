"""A rolling upgrade in one group: the previous release's state carries over exactly.

A member running the previous release (commit `PREVIOUS_RELEASE`, extracted with
``git archive``, so its changelog records are of the old format) trains the first part of
the input alone; a member of this code joins the same group and restores the tasks it gets
from those records; both train the second part; the old member leaves (SIGTERM) and the new
one restores the rest and trains the last part. The outputs must equal the reference run
on the whole input, versions 1..n per key across both handovers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stream_trainer.dev.broker.config import choose_free_ports
from tests.integration import harness as h
from tests.integration.broker_control import HealthProbe, wait_ready

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PREVIOUS_RELEASE = "d55ec28"  # the last commit before changelog format 1
REPO = Path(__file__).resolve().parents[2]
EVENTS = 24_000
PART = EVENTS // 3
GUARD_S = 240.0  # hang guard only
ASSIGNED = re.compile(rb"task (\d+) assigned: \d+ keys from (\d+) changelog records")
SHARE = re.compile(rb"partitions assigned tasks=\[([\d, ]*)\]")


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's source tree, checked to be what its CLI imports."""
    root = tmp_path_factory.mktemp(f"release-{PREVIOUS_RELEASE}")
    archive = subprocess.run(
        ["git", "archive", PREVIOUS_RELEASE], cwd=REPO, capture_output=True, check=False
    )
    assert archive.returncode == 0, f"git archive {PREVIOUS_RELEASE}: {archive.stderr.decode()}"
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    where = subprocess.run(
        [sys.executable, "-c", "import stream_trainer.cli as c; print(c.__file__)"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(root), where.stdout
    return root


async def test_rolling_upgrade_from_the_previous_release_gives_exact_models(
    kafka_bootstrap: str, previous_release: Path, tmp_path: Path
) -> None:
    topics, records = await h.seeded_stream(
        kafka_bootstrap, "upgrade", partitions=4, seed=71, models=200, events=EVENTS,
        produce_first=PART,
    )  # fmt: skip
    old_log, new_log = tmp_path / "old.log", tmp_path / "new.log"
    settings: dict[str, Any] = {"max_batch_events": 500}
    old = h.start_trainer(kafka_bootstrap, topics, old_log, release=previous_release, **settings)
    procs = [old]
    try:
        await h.wait_consumed(kafka_bootstrap, topics, timeout_s=GUARD_S, procs=procs)
        port = choose_free_ports(1)[0]
        new = h.start_trainer(kafka_bootstrap, topics, new_log, http_port=port, **settings)
        procs.append(new)
        with HealthProbe(port) as probe:
            await wait_ready(probe, new, GUARD_S)  # its share restored from old records
        await h.produce(kafka_bootstrap, topics, records[PART : 2 * PART])
        await h.wait_consumed(kafka_bootstrap, topics, timeout_s=GUARD_S, procs=procs)
        assert h.stop_trainer(procs.pop(0)) == 0, old_log.read_text()[-3000:]
        await h.produce(kafka_bootstrap, topics, records[2 * PART :])
        await h.wait_consumed(kafka_bootstrap, topics, timeout_s=GUARD_S, procs=procs)
        assert h.stop_trainer(procs.pop()) == 0, new_log.read_text()[-3000:]
    finally:
        for proc in procs:
            _kill(proc)
    _assert_took_over_everything(old_log.read_bytes(), new_log.read_bytes())
    outputs = await h.read_outputs(kafka_bootstrap, topics)
    problems = h.verify(outputs, h.expected_models(records))
    assert problems == [], h.summarize(problems)


def _assert_took_over_everything(old_log: bytes, new_log: bytes) -> None:
    """The group was mixed, then the new member restored every task from the changelog."""
    old_shares = [_tasks(m) for m in SHARE.findall(old_log)]
    new_shares = [_tasks(m) for m in SHARE.findall(new_log)]
    assert old_shares and old_shares[0] == {0, 1, 2, 3}, old_shares  # alone at first
    assert new_shares and 0 < len(new_shares[0]) < 4, new_shares  # then one group of two
    assert any(len(share) < 4 for share in old_shares[1:]), old_shares
    assert new_shares[-1] == {0, 1, 2, 3}, new_shares  # alone at the end
    restored = [(int(n), int(count)) for n, count in ASSIGNED.findall(new_log)]
    assert {n for n, _ in restored} == {0, 1, 2, 3}, restored
    assert all(count > 0 for _, count in restored), restored


def _tasks(listed: bytes) -> set[int]:
    return {int(n) for n in listed.split(b",") if n.strip()}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
