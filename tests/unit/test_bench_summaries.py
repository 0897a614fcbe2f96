"""The benchmarks' arithmetic: soak/CPU summaries and the targets table (no Kafka)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from benchmarks.paced import Sample, cpu_seconds, summarise
from benchmarks.report_targets import side_by_side


def test_summarise_gives_cpu_per_event_and_rss_slope_after_warmup() -> None:
    # 10 s samples; RSS +1 MB per sample after warm-up (360 MB/h), a spike during warm-up.
    samples = [Sample(0.0, 0.0, 500_000_000, 0, 0)]
    samples += [
        Sample(10.0 * k, 0.5 * k, 100_000_000 + 1_000_000 * k, 8_000 * k, 8_000 * k)
        for k in range(1, 13)
    ]
    result = summarise(samples, warmup_s=10.0)
    assert result["steady_samples"] == 12
    assert result["steady_events"] == 88_000
    assert result["cpu_us_per_event"] == pytest.approx(1e6 * 5.5 / 88_000)
    assert result["cpu_cores"] == pytest.approx(0.05)
    assert result["rss_slope_mb_per_h"] == pytest.approx(360.0)
    assert result["rss_slope_second_half_mb_per_h"] == pytest.approx(360.0)


def test_second_half_slope_separates_a_store_filling_up_from_growth() -> None:
    # RSS climbs 10 MB per sample for 10 samples, then stays flat for 10.
    samples = [
        Sample(10.0 * k, 0.1 * k, 100_000_000 + 10_000_000 * min(k, 10), 1000 * k, 1000 * k)
        for k in range(21)
    ]
    result = summarise(samples, warmup_s=0.0)
    assert result["rss_slope_mb_per_h"] > 1000.0
    assert result["rss_slope_second_half_mb_per_h"] == pytest.approx(0.0, abs=1e-6)


def test_summarise_without_enough_samples() -> None:
    assert summarise([Sample(0.0, 0.0, 1, 0, 0)], warmup_s=5.0)["cpu_us_per_event"] is None


def test_cpu_seconds_of_this_process_grows() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(3_000_000))
    assert cpu_seconds(os.getpid()) > before


def _workload(label: str, eos: float, quix: float, p99: float) -> dict[str, Any]:
    run = {"guarantee": "exactly_once", "max_batch_events": 5000, "replicas": 1}
    return {
        "workload": {"label": label},
        "ceiling": {"steady_events_per_s": 400_000.0},
        "trainer": [{**run, "gated": False, "steady_events_per_s": eos}],
        "quix": {"steady_events_per_s": quix},
        "faust": [],
        "latency": [{"kind": "fixed", "p50_ms": 50.0, "p99_ms": p99, "achieved_rate": 1e4}],
    }


def test_side_by_side_marks_each_workload_against_its_target() -> None:
    results = {
        "workloads": {
            "10k": _workload("10k+10k", 150_000.0, 20_000.0, 300.0),
            "hot": _workload("200+200", 100_000.0, 25_000.0, 200.0),
        }
    }
    rows = {line.split(" | ")[0].lstrip("| ").strip(): line for line in side_by_side(results)}
    eos = rows["stream-trainer EOS batch 5000, 1 replica, steady events/s"]
    assert "150,000 | 100,000" in eos
    assert "10k+10k: met, 200+200: missed" in eos
    assert "10k+10k: met, 200+200: missed" in rows["stream-trainer 1 replica / Quix"]
    assert "10k+10k: missed, 200+200: met" in rows["latency p99 ms at the fixed rate (10k/s)"]
    assert "x ceiling (stretch 0.5)" in rows
    assert "restore changelog records/s" not in rows  # a step not run has no row
