"""Micro-benchmark of the learners: ``learn_batch`` against a plain per-event Python loop.

    python benchmarks/learners.py [--json OUT] [--models 10000] [--events 20000]
    BENCH_CODE_ROOT=/tmp/base python benchmarks/learners.py ...   # another checkout's learners

For each learner and batch size (1, 100, 5,000) it times ``learn_batch`` over a seeded
stream spread over ``--models`` rules/variables (state warmed up first, so the numbers are
steady state), and the same stream through a plain per-event Python loop (the sequential
definition, as in tests/reference_learners.py). It also measures retained bytes per model
with tracemalloc (key strings, dicts, numpy arrays with their growth slack). Results print
as a markdown table; ``--json`` also writes them to a file.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

# BENCH_CODE_ROOT: measure another checkout's learners (e.g. the numpy path of an older
# commit, exported with `git archive`) with this same script; default: this checkout.
sys.path.insert(0, os.environ.get("BENCH_CODE_ROOT") or str(Path(__file__).resolve().parents[1]))

from stream_trainer.columns import FeedbackColumns, ObservationColumns
from stream_trainer.learners import Forecaster, TrustLearner
from tests.reference_learners import _Model, _rls_step

BatchT = TypeVar("BatchT")
BATCH_SIZES = (1, 100, 5_000)
T0_US = 1_700_000_000_000_000


def feedback(rng: np.random.Generator, n: int, n_models: int, t0: float) -> FeedbackColumns:
    return FeedbackColumns(
        rule_id=[f"rule.{i}" for i in rng.integers(0, n_models, n).tolist()],
        event_id=[f"fb-{t0:.0f}-{i}" for i in range(n)],
        ts_s=t0 + np.sort(rng.uniform(0, 3600.0, n)),
        success=rng.random(n) < 0.6,
        weight=np.ones(n),
    )


def observations(rng: np.random.Generator, n: int, n_models: int, t0: int) -> ObservationColumns:
    return ObservationColumns(
        variable=[f"var.{i}" for i in rng.integers(0, n_models, n).tolist()],
        ts_us=t0 + np.arange(n, dtype=np.int64),
        value=rng.normal(size=n),
    )


def per_event_trust(state: dict[str, list[Any]], cols: FeedbackColumns, half_life: float) -> None:
    """The sequential definition, one Python step per event (online form)."""
    for rule, eid, t, ok, w in zip(
        cols.rule_id,
        cols.event_id,
        cols.ts_s.tolist(),
        cols.success.tolist(),
        cols.weight.tolist(),
        strict=True,
    ):
        s = state.setdefault(rule, [-math.inf, 0.0, 0.0, {}])
        if eid in s[3] and s[3][eid] >= s[0] - 86_400.0:
            continue
        s[3][eid] = t
        if t > s[0]:
            decay = 0.0 if s[0] == -math.inf else 2.0 ** (-(t - s[0]) / half_life)
            s[1] *= decay
            s[2] *= decay
            s[0] = t
        s[1 if ok else 2] += w * 2.0 ** (-(s[0] - t) / half_life)


def per_event_forecaster(state: dict[str, _Model], cols: ObservationColumns) -> None:
    for var, ts, y in zip(cols.variable, cols.ts_us.tolist(), cols.value.tolist(), strict=True):
        model = state.setdefault(var, _Model(3, 1000.0))
        if model.last is not None and ts <= model.last[0]:
            continue
        _rls_step(model, y, 0.995)
        model.last = (ts, y)


def _time(fn: Callable[[BatchT], object], batches: list[BatchT]) -> int:
    """Total ns spent in ``fn`` over ``batches`` (batch construction not timed)."""
    total = 0
    for batch in batches:
        start = time.perf_counter_ns()
        fn(batch)
        total += time.perf_counter_ns() - start
    return total


def bench_trust(n_models: int, n_events: int, batch: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    learner, reference = TrustLearner(), {}  # type: ignore[var-annotated]
    warm = feedback(rng, 2 * n_models, n_models, 1e9)
    learner.learn_batch(warm)
    per_event_trust(reference, warm, 2_592_000.0)
    n_batches = max(1, n_events // batch)
    batches = [feedback(rng, batch, n_models, 1e9 + 3600.0 * (k + 1)) for k in range(n_batches)]
    vec = _time(learner.learn_batch, batches)
    ref = _time(lambda b: per_event_trust(reference, b, 2_592_000.0), batches)
    return {
        "learn_batch_ns": vec / (n_batches * batch),
        "per_event_ns": ref / (n_batches * batch),
        "batch_ms": vec / n_batches / 1e6,
    }


def bench_forecaster(n_models: int, n_events: int, batch: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    learner, reference = Forecaster(), {}  # type: ignore[var-annotated]
    warm = observations(rng, 5 * n_models, n_models, T0_US)
    learner.learn_batch(warm)
    per_event_forecaster(reference, warm)
    n_batches = max(1, n_events // batch)
    t0 = T0_US + 10 * n_models
    batches = [observations(rng, batch, n_models, t0 + k * batch) for k in range(n_batches)]
    vec = _time(learner.learn_batch, batches)
    ref = _time(lambda b: per_event_forecaster(reference, b), batches)
    return {
        "learn_batch_ns": vec / (n_batches * batch),
        "per_event_ns": ref / (n_batches * batch),
        "batch_ms": vec / n_batches / 1e6,
    }


def bytes_per_model(kind: str, n_models: int, seed: int) -> float:
    """Retained bytes per model after every model saw one (trust) or 5 (forecaster) events."""
    rng = np.random.default_rng(seed)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    learner: TrustLearner | Forecaster
    if kind == "trust":
        learner = TrustLearner()
        names = [f"rule.{i}" for i in range(n_models)]
        learner.learn_batch(
            FeedbackColumns(
                names,
                [f"fb-{i}" for i in range(n_models)],
                np.full(n_models, 1e9),
                np.ones(n_models, dtype=np.bool_),
                np.ones(n_models),
            )
        )
    else:
        learner = Forecaster()
        names = [f"var.{i}" for i in range(n_models)] * 5
        learner.learn_batch(
            ObservationColumns(
                names,
                np.repeat(np.arange(5, dtype=np.int64), n_models),
                rng.normal(size=5 * n_models),
            )
        )
    del names
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(learner) == n_models
    return used / n_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for name, bench in (("trust", bench_trust), ("forecaster", bench_forecaster)):
        for batch in BATCH_SIZES:
            n_events = min(args.events, 5_000) if batch == 1 else args.events
            rows.append({"learner": name, "batch": batch, **bench(args.models, n_events, batch, 1)})
    memory = {kind: bytes_per_model(kind, args.models, 2) for kind in ("trust", "forecaster")}
    print(f"models: {args.models}\n")
    print(
        "| learner | batch | learn_batch ns/event | per-event loop ns/event | speed-up | ms/batch |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['learner']} | {r['batch']} | {r['learn_batch_ns']:,.0f}"
            f" | {r['per_event_ns']:,.0f} | {r['per_event_ns'] / r['learn_batch_ns']:.1f}x"
            f" | {r['batch_ms']:.3f} |"
        )
    print("\n| learner | bytes per model (tracemalloc) |\n|---|---:|")
    for kind, size in memory.items():
        print(f"| {kind} | {size:,.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"timings": rows, "bytes_per_model": memory}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
