"""`stream-trainer demo` end to end, as a user runs it: a subprocess through the CLI.

The demo's own report is the evidence: it reads the published versions back
``read_committed`` and compares them with the synthetic ground truth, so these checks fail
if any link of produce -> train -> publish -> commit -> read is broken.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_trainer.dev.demo.traffic import TrafficPlan
from tests.integration.harness import end_offsets

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 20_000
RULES = 20
VARIABLES = 5  # 2,000 observations each: past the forecaster's cold start
DEMO_TIMEOUT_S = 240  # a hang guard only; the run takes seconds


def _demo(bootstrap: str, *flags: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream_trainer.cli",
            "demo",
            "--bootstrap-servers",
            bootstrap,
            *flags,
        ],
        cwd=ROOT,
        env={**os.environ, "STREAM_TRAINER_HTTP_PORT": "0", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(bootstrap: str, *flags: str, **env: str) -> tuple[int, str, str]:
    proc = _demo(bootstrap, *flags, **env)
    try:
        out, err = proc.communicate(timeout=DEMO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"demo hung; stderr:\n{err[-3000:]}")
    return proc.returncode, out, err


def _line(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, f"no line matching {pattern!r} in:\n{text}"
    return found


@pytest.fixture(scope="module")
def demo_run(kafka_bootstrap: str) -> tuple[int, str, str]:
    flags = ["--events", str(EVENTS), "--rules", str(RULES), "--variables", str(VARIABLES)]
    return _run(kafka_bootstrap, *flags, "--seed", "11")


def test_demo_exits_0_with_both_tables(demo_run: tuple[int, str, str]) -> None:
    code, out, err = demo_run
    assert code == 0, err[-3000:]
    assert "RULES" in out
    assert "VARIABLES" in out
    total = TrafficPlan(11, EVENTS, VARIABLES, RULES, 0.0).total
    assert f"produced {total:,}/{total:,}" in err  # the live progress line reached the end


def test_steady_rules_learn_their_true_rate(demo_run: tuple[int, str, str]) -> None:
    _, out, _ = demo_run
    covered = _line(r"^rules: (\d+)/(\d+) steady rules have their true rate inside", out)
    inside, steady = int(covered[1]), int(covered[2])
    assert steady == RULES - 1  # every rule published, one of them the degraded one
    assert inside >= 0.8 * steady
    # The table's rows say the same for the sampled rules (true rate within the interval).
    rows = re.findall(r"^rule\.\S+\s+(0\.\d\d)\s+(0\.\d+)\s+\[(0\.\d+), (0\.\d+)\]", out, re.M)
    assert len(rows) == 7
    assert sum(float(lo) <= float(t) <= float(hi) for t, _, lo, hi in rows) >= 5


def test_degraded_rule_loses_trust(demo_run: tuple[int, str, str]) -> None:
    _, out, _ = demo_run
    line = _line(
        r"^degraded rule: \S+ true (\d\.\d+) -> (\d\.\d+), learned trust (\d\.\d+), (\w+)", out
    )
    before, after, trust, status = float(line[1]), float(line[2]), float(line[3]), line[4]
    assert trust < (before + after) / 2  # recent failures weigh more than the good past
    assert status in ("probation", "retired")


def test_forecasters_beat_persistence_and_follow_the_regime_switch(
    demo_run: tuple[int, str, str],
) -> None:
    _, out, _ = demo_run
    line = _line(r"^variables: median skill (-?\d+\.\d+); .* for (\d+)/(\d+)$", out)
    assert float(line[1]) > 0.0
    assert int(line[3]) == VARIABLES
    assert int(line[2]) == VARIABLES


def test_produce_only_writes_the_configured_topics_and_exits(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topics = {
        "STREAM_TRAINER_TOPIC_OBSERVATIONS": f"{unique_name}.observations",
        "STREAM_TRAINER_TOPIC_FEEDBACK": f"{unique_name}.feedback",
    }
    code, _, err = _run(kafka_bootstrap, "--produce-only", "--events", "3000", **topics)
    assert code == 0, err[-3000:]
    ends = asyncio.run(end_offsets(kafka_bootstrap, list(topics.values())))
    assert len(ends) == 12  # 6 partitions per input topic
    assert sum(ends.values()) == TrafficPlan(7, 3000, 1, 1, 0.0).total


def test_sigterm_drains_and_exits_without_report(kafka_bootstrap: str) -> None:
    # Paced at 20k events/s, 200k events take >= 10 s to produce: the signal, sent at the
    # first progress line (2 s in), always lands while the demo is still producing.
    proc = _demo(kafka_bootstrap, "--events", "200000", "--variables", "20", "--rules", "20")
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait until the trainer is running
        seen.append(line)
        if line.lstrip()[:1].isdigit() and "produced" in line:
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGTERM)
    out, rest = proc.communicate(timeout=DEMO_TIMEOUT_S)
    err = "".join(seen) + rest
    assert proc.returncode == 130, err[-3000:]
    assert "stopping the trainer" in err
    assert "RULES" not in out
