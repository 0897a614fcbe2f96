"""A real Prometheus scrapes the trainer's metrics; assertions go through its HTTP API.

The first test scrapes a bare OpsServer with set values; the second a running
`Trainer` fed a synthetic stream, and also evaluates every query of the Grafana dashboard
on that Prometheus. Skipped where the `prometheus` binary is missing, except on CI
(CI=true), whose test command installs it: there a missing binary fails.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import socket
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from stream_trainer.config import load_settings
from stream_trainer.dev.invalid import bad_records
from stream_trainer.dev.synthetic import SyntheticPulse
from stream_trainer.ops import OpsServer, TrainerMetrics
from stream_trainer.service import Trainer
from tests.integration import harness as h

pytestmark = pytest.mark.timeout(120)

SCRAPE_ATTEMPTS = 120  # x 0.5 s: a bound on the wait, not a performance threshold
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "stream-trainer.json"
METRIC_NAME = re.compile(r"stream_trainer_[a-z_]+")
# Grafana's $__rate_interval, widened to cover the whole test: every rate() then sees all
# the traffic, wherever the query instant falls.
RATE_INTERVAL = "5m"
Result = list[dict[str, Any]]
Accept = Callable[[Result], bool]
MAX_EVENT_BYTES = 4096  # keeps the synthetic oversized records small
# Dashboard queries allowed to evaluate to NaN only (they must still return series): the
# value needs an observation *between* two scrapes, which this test cannot arrange.
MAY_BE_NAN = {
    "stream_trainer_state_restore_seconds_bucket": (
        "observed once, when partitions are assigned: usually before Prometheus's first "
        "scrape of the trainer, so rate() sees no increase and histogram_quantile is NaN "
        "(the test checks its _count instead)"
    ),
}


def _prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus not on PATH; the CI test command installs it (apt)")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running_prometheus(target: str, workdir: Path) -> AsyncIterator[int]:
    """Run Prometheus scraping `target` (host:port) every second; yields its HTTP port."""
    port = _free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: stream-trainer\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    with (workdir / "prometheus.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            _prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=log,
        )
    try:
        yield port
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


async def query(port: int, expr: str) -> list[dict[str, Any]]:
    """Instant query; [] while Prometheus is starting or has no such sample yet."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = await asyncio.to_thread(_get_json, url)
    except OSError:
        return []  # not listening yet
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def wait_for(port: int, expr: str, count: int, workdir: Path) -> list[dict[str, Any]]:
    for _ in range(SCRAPE_ATTEMPTS):
        result = await query(port, expr)
        if len(result) >= count:
            return result
        await asyncio.sleep(0.5)
    log = (workdir / "prometheus.log").read_text(errors="replace")[-3000:]
    pytest.fail(f"{expr}: fewer than {count} series after the wait; log tail:\n{log}")


def _values(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {series["metric"][label]: float(series["value"][1]) for series in result}


async def test_prometheus_scrapes_the_ops_server(tmp_path: Path) -> None:
    _prometheus_binary()
    metrics = TrainerMetrics()
    metrics.events_consumed.labels(topic="pulse.observations").inc(42)
    metrics.events_consumed.labels(topic="pulse.feedback").inc(7)
    metrics.events_invalid.labels(reason="schema").inc(3)
    for trust in (0.1, 0.6, 0.9):
        metrics.rule_trust.observe(trust)
    metrics.ready.set(1)

    async with (
        OpsServer(metrics.registry, host="127.0.0.1", port=0) as server,
        running_prometheus(f"127.0.0.1:{server.port}", tmp_path) as prom,
    ):
        consumed = await wait_for(prom, "stream_trainer_events_consumed_total", 2, tmp_path)
        assert _values(consumed, "topic") == {"pulse.observations": 42, "pulse.feedback": 7}
        assert {s["metric"]["job"] for s in consumed} == {"stream-trainer"}

        invalid = await query(prom, "stream_trainer_events_invalid_total")
        assert _values(invalid, "reason") == {"schema": 3}
        (ready,) = await query(prom, "stream_trainer_ready")
        assert float(ready["value"][1]) == 1
        (count,) = await query(prom, "stream_trainer_rule_trust_count")
        assert float(count["value"][1]) == 3
        below_half = await query(prom, 'stream_trainer_rule_trust_bucket{le="0.5"}')
        assert [float(s["value"][1]) for s in below_half] == [1]
        (up,) = await query(prom, 'up{job="stream-trainer"}')
        assert float(up["value"][1]) == 1


# -- a running trainer ------------------------------------------------------------------


def _dashboard_exprs() -> dict[str, str]:
    """Every dashboard query (as Grafana would send it) -> the panel title, for messages."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {
        target["expr"].replace("$__rate_interval", RATE_INTERVAL): panel["title"]
        for panel in panels
        if panel["type"] != "row"
        for target in panel["targets"]
    }


def _stream(pulse: SyntheticPulse, valid: int, bad: int) -> list[h.InputRecord]:
    """Valid records with the bad ones spread evenly through them."""
    records: list[h.InputRecord] = list(pulse.records(valid))
    every = valid // bad
    for i, (kind, key, value, _reason) in enumerate(
        bad_records(pulse, bad, max_event_bytes=MAX_EVENT_BYTES)
    ):
        records.insert(i * (every + 1), (kind, key, value))
    return records


async def eventually(port: int, expr: str, accept: Accept, workdir: Path, what: str) -> Result:
    """Poll an instant query until `accept(result)`; fail with the last result and log."""
    result: Result = []
    for _ in range(SCRAPE_ATTEMPTS):
        result = await query(port, expr)
        if accept(result):
            return result
        await asyncio.sleep(0.5)
    log = (workdir / "prometheus.log").read_text(errors="replace")[-2000:]
    pytest.fail(f"{what}: {expr} never held; last result {result}\nprometheus log:\n{log}")


def _scalar(result: Result) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


def _finite(result: Result) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


@pytest.mark.kafka
async def test_prometheus_scrapes_a_running_trainer(kafka_bootstrap: str, tmp_path: Path) -> None:
    _prometheus_binary()
    pulse = SyntheticPulse(seed=61, n_variables=10, n_rules=20)
    stream = _stream(pulse, valid=3000, bad=60)
    expected_invalid = h.expected_models(stream, max_event_bytes=MAX_EVENT_BYTES).invalid
    assert expected_invalid >= 60
    topics = h.new_topics("prom")
    await h.create_inputs(kafka_bootstrap, topics, partitions=2)
    settings = load_settings(
        environ=topics.env(kafka_bootstrap),
        http_host="127.0.0.1",
        summary_interval_s=1,  # the lag and model gauges are refreshed by the summary loop
        max_batch_events=500,
        max_event_bytes=MAX_EVENT_BYTES,
    )
    trainer = Trainer(settings, TrainerMetrics())
    await trainer.start()
    try:
        assert trainer.http_port
        target = f'job="stream-trainer", instance="127.0.0.1:{trainer.http_port}"'
        async with running_prometheus(f"127.0.0.1:{trainer.http_port}", tmp_path) as prom:
            # Traffic only once Prometheus scrapes the trainer: rates see it arrive.
            await eventually(prom, f"up{{{target}}}", lambda r: _scalar(r) == 1, tmp_path, "up")
            produced = await h.produce(kafka_bootstrap, topics, stream)
            await _assert_trainer_series(
                prom,
                target,
                produced,
                expected_invalid,
                {topics.observations, topics.feedback},
                tmp_path,
            )
            await _assert_dashboard_queries_answer(prom, tmp_path)
    finally:
        await trainer.stop()


async def _assert_trainer_series(
    prom: int, target: str, produced: int, invalid: int, topics: set[str], workdir: Path
) -> None:
    def equals(value: float) -> Accept:
        return lambda result: _scalar(result) == value

    def positive(result: Result) -> bool:
        return (_scalar(result) or 0) > 0

    checks: list[tuple[str, Accept]] = [
        (f"sum(stream_trainer_events_consumed_total{{{target}}})", equals(produced)),
        (f"sum(stream_trainer_events_invalid_total{{{target}}})", equals(invalid)),
        (f'stream_trainer_versions_published_total{{{target}, kind="rule"}}', positive),
        (f'stream_trainer_versions_published_total{{{target}, kind="model"}}', positive),
        (f"stream_trainer_state_restore_seconds_count{{{target}}}", positive),
        (f"stream_trainer_ready{{{target}}}", equals(1)),
        (f"up{{{target}}}", equals(1)),
    ]
    for expr, accept in checks:
        await eventually(prom, expr, accept, workdir, "trainer series")
    consumed = await query(prom, f"stream_trainer_events_consumed_total{{{target}}}")
    assert {series["metric"]["topic"] for series in consumed} == topics


async def _assert_dashboard_queries_answer(prom: int, workdir: Path) -> None:
    """Every metric the dashboard names has series; every panel query has a real value."""
    exprs = _dashboard_exprs()
    names = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert set(MAY_BE_NAN) <= names, "stale allowlist entry"
    for name in sorted(names):
        await eventually(prom, name, bool, workdir, "dashboard metric")
    for expr, title in exprs.items():
        may_be_nan = any(name in expr for name in MAY_BE_NAN)
        accept = bool if may_be_nan else _finite
        await eventually(prom, expr, accept, workdir, f"panel {title!r}")
