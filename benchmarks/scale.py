"""Scale and memory on the learners directly (no Kafka): RSS, bytes per model, events/s.

    python -m benchmarks.scale --models N [--json OUT]

One fresh process per N (so RSS deltas are this N's alone): N rules and N variables are
created through `TaskState`'s learners (each rule one feedback, each variable p+1
observations so its full RLS state exists), then batches of 5,000 events (1:1, keys uniform
over the N) are timed through both learners' `learn_batch` and one `TaskState.publish`
(versions + changelog records, as a commit makes them) per batch: a task's work minus JSON
decoding and Kafka. Kafka is left out so 1M fits the time budget.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from stream_trainer.columns import FeedbackColumns, ObservationColumns
from stream_trainer.config import Settings
from stream_trainer.events import from_ts_us
from stream_trainer.state import TaskState

CHUNK = 100_000
BATCH = 5_000
T0_US = 1_767_225_600_000_000  # 2026-01-01


def _rss() -> int:
    gc.collect()
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _feedback(rules: list[str], t0_s: float, rng: np.random.Generator, tag: str) -> FeedbackColumns:
    n = len(rules)
    return FeedbackColumns(
        rule_id=rules,
        event_id=[f"{tag}-{i}" for i in range(n)],
        ts_s=(t0_s + np.arange(n) * 1e-3).astype(np.float64),
        success=rng.random(n) < 0.7,
        weight=np.ones(n),
    )


def _observations(variables: list[str], t0_us: int, rng: np.random.Generator) -> ObservationColumns:
    n = len(variables)
    return ObservationColumns(
        variable=variables, ts_us=t0_us + np.arange(n, dtype=np.int64), value=rng.normal(size=n)
    )


def _warm_up(settings: Settings, rng: np.random.Generator) -> None:
    """Learn and publish a few events on a throwaway task, as a trainer does before ready."""
    state = TaskState(settings)
    state.entry("rule").learner.learn_batch(_feedback(["warm"] * 4, 1.0e9, rng, "warm"))
    for k in range(settings.ar_order + 2):
        state.entry("model").learner.learn_batch(_observations(["warm"], T0_US + k, rng))
    state.publish(from_ts_us(T0_US))


def measure(n_models: int, batches: int, seed: int = 7) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    settings = Settings()
    state = TaskState(settings)
    trust, forecaster = state.entry("rule").learner, state.entry("model").learner
    rules = [f"rule.{i:07d}" for i in range(n_models)]
    variables = [f"var_{i:07d}" for i in range(n_models)]
    _warm_up(settings, rng)  # compiled kernels (and their compiler's memory) before the base
    base = _rss()
    for start in range(0, n_models, CHUNK):
        trust.learn_batch(_feedback(rules[start : start + CHUNK], 1.7e9, rng, f"f{start}"))
    after_rules = _rss()
    clock = T0_US
    for _ in range(settings.ar_order + 1):
        for start in range(0, n_models, CHUNK):
            chunk = variables[start : start + CHUNK]
            forecaster.learn_batch(_observations(chunk, clock, rng))
            clock += len(chunk)
    after_models = _rss()
    state.publish(from_ts_us(clock))  # the setup's own versions are not timed
    elapsed = 0.0
    for k in range(batches):
        fb_keys = [rules[i] for i in rng.integers(0, n_models, BATCH // 2).tolist()]
        obs_keys = [variables[i] for i in rng.integers(0, n_models, BATCH // 2).tolist()]
        fb = _feedback(fb_keys, 1.8e9 + k, rng, f"b{k}")
        obs = _observations(obs_keys, clock, rng)
        clock += BATCH
        started = time.perf_counter()
        trust.learn_batch(fb)
        forecaster.learn_batch(obs)
        state.publish(from_ts_us(clock))  # versions + changelog records, as a commit does
        elapsed += time.perf_counter() - started
    return {
        "models": n_models,
        "rss_mib": _rss() / 2**20,
        "bytes_per_rule": (after_rules - base) / n_models,
        "bytes_per_model": (after_models - after_rules) / n_models,
        "events_per_s": batches * BATCH / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, required=True)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = measure(args.models, args.batches)
    text = json.dumps(result)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
