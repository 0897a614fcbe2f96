"""A real Prometheus scrapes a real OpsServer and sees the trainer's metric values.

Skipped where the `prometheus` binary is missing, except on CI (CI=true), whose test
command installs it: there a missing binary fails. `running_prometheus` and `query` are
reusable for scraping a real trainer.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from stream_trainer.ops import OpsServer, TrainerMetrics

pytestmark = pytest.mark.timeout(120)

SCRAPE_ATTEMPTS = 120  # x 0.5 s: a bound on the wait, not a performance threshold


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
