"""Metrics of one commit: the counters and histograms a successful commit moves."""

from __future__ import annotations

from collections import Counter

import numpy as np
import numpy.typing as npt
from prometheus_client import Histogram

from stream_trainer.config import Settings
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.publishing import BatchOutputs

FloatArray = npt.NDArray[np.float64]


def observe_many(histogram: Histogram, values: FloatArray) -> None:
    """``histogram.observe`` of every value, in one numpy pass.

    A commit publishes thousands of versions; one ``observe`` call each would cost more
    than building them. This adds the same counts through prometheus_client's own
    per-bucket values, which its ``observe`` increments one at a time.
    """
    if values.size == 0:
        return
    bounds = np.asarray(histogram._upper_bounds)
    # observe() puts a value in the first bucket whose bound is >= it.
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(values.sum()))


def record_commit(
    metrics: TrainerMetrics, outputs: BatchOutputs, seconds: float, settings: Settings
) -> None:
    """Count what a committed transaction (or at-least-once commit) published."""
    m = metrics
    summary = outputs.metrics
    m.batch_events.observe(summary.observations + summary.feedback + summary.invalid)
    m.batch_duration.observe(seconds)
    if settings.exactly_once:
        m.transactions.labels(result="committed").inc()
    for reason, count in Counter(inv.reason for inv in outputs.invalid).items():
        m.events_invalid.labels(reason=reason).inc(count)
    for kind, count in outputs.publication.updated.items():
        m.versions_published.labels(kind=kind).inc(count)
    for kind, count in outputs.publication.forgotten.items():
        m.keys_forgotten.labels(kind=kind).inc(count)
    samples = outputs.publication.samples
    if "trust" in samples:
        observe_many(m.rule_trust, samples["trust"])
    if "skill" in samples:
        observe_many(m.forecast_skill, samples["skill"])
    age_ms = summary.max_event_age_ms
    if age_ms > 0:
        m.event_age.observe(age_ms / 1000.0)
