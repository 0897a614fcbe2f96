"""Every Prometheus metric the trainer exports, held on one registry per instance.

A fresh `CollectorRegistry` per `TrainerMetrics` keeps tests and several in-process trainers
from colliding on the global default registry. Labels are bounded enums only (topic,
partition, reason, kind, result, status): per-rule or per-variable labels would have
unbounded cardinality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from stream_trainer import __version__

BATCH_EVENTS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Replaying retained history publishes events that are days old: the buckets reach a year.
EVENT_AGE_BUCKETS = (
    0.001,
    0.01,
    0.1,
    1,
    10,
    60,
    300,
    1800,
    3600,
    21600,
    86400,
    604800,
    2592000,
    31536000,
)
RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TRUST_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
# Skill below -1 (much worse than persistence) lands in the lowest bucket, le="-1.0".
SKILL_BUCKETS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))

# prometheus_client names families without `_total` / `_info`; these are the sample suffixes.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


@dataclass(frozen=True, slots=True)
class _Spec:
    attr: str
    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None


# Every metric, in one table: attribute, type, exported name (prometheus_client adds
# `_total` to counters), help text, labels, buckets.
_METRICS = (
    _Spec("events_consumed", Counter, "events_consumed", "Input records consumed.", ("topic",)),
    _Spec(
        "events_invalid",
        Counter,
        "events_invalid",
        "Input records sent to the dead-letter topic, by reason.",
        ("reason",),
    ),
    _Spec(
        "batch_events",
        Histogram,
        "batch_events",
        "Input records per commit.",
        buckets=BATCH_EVENTS_BUCKETS,
    ),
    _Spec(
        "batch_duration",
        Histogram,
        "batch_duration_seconds",
        "Time to publish and commit one checkpoint.",
        buckets=DURATION_BUCKETS,
    ),
    _Spec(
        "event_age",
        Histogram,
        "event_age_seconds",
        "Publish time minus the oldest event timestamp of a commit.",
        buckets=EVENT_AGE_BUCKETS,
    ),
    _Spec(
        "consumer_lag",
        Gauge,
        "consumer_lag",
        "Records between the committed position and the high watermark.",
        ("topic", "partition"),
    ),
    _Spec(
        "versions_published",
        Counter,
        "versions_published",
        "Model and rule versions published, by kind (model|rule).",
        ("kind",),
    ),
    _Spec("models", Gauge, "models", "Models held in state, by kind.", ("kind",)),
    _Spec("worker_queue_depth", Gauge, "worker_queue_depth", "Batches waiting for a worker."),
    _Spec("partitions_paused", Gauge, "partitions_paused", "Partitions paused for backpressure."),
    _Spec("rebalances", Counter, "rebalances", "Consumer group rebalances seen."),
    _Spec(
        "transactions",
        Counter,
        "transactions",
        "Kafka transactions, by result (committed|aborted|fenced).",
        ("result",),
    ),
    _Spec(
        "state_restore",
        Histogram,
        "state_restore_seconds",
        "Time to restore assigned partitions' state.",
        buckets=RESTORE_BUCKETS,
    ),
    _Spec(
        "rule_trust",
        Histogram,
        "rule_trust",
        "Trust of each published rule version.",
        buckets=TRUST_BUCKETS,
    ),
    _Spec(
        "forecast_skill",
        Histogram,
        "forecast_skill",
        "Skill of each published model version (1 - mse/baseline_mse).",
        buckets=SKILL_BUCKETS,
    ),
    _Spec("rules_by_status", Gauge, "rules", "Rules held in state, by status.", ("status",)),
    _Spec("ready", Gauge, "ready", "1 when assigned partitions are restored."),
    _Spec(
        "commit_failures", Counter, "commit_failures", "Offset or transaction commits that failed."
    ),
    _Spec(
        "broker_retries",
        Counter,
        "broker_retries",
        "Retries of retriable broker failures, by cause (error type).",
        ("cause",),
    ),
    _Spec(
        "broker_unavailable",
        Counter,
        "broker_unavailable_seconds",
        "Time tasks spent waiting for the broker (counted when it comes back).",
    ),
    _Spec("degraded", Gauge, "degraded", "Tasks currently waiting on the broker."),
    _Spec("dedupe_ids", Gauge, "dedupe_ids", "Feedback event ids remembered for dedupe."),
    _Spec("dedupe_bytes", Gauge, "dedupe_bytes", "Memory of the event-id dedupe stores."),
    _Spec(
        "dedupe_evicted",
        Gauge,
        "dedupe_evicted",
        "Event ids forgotten at the dedupe memory bound since the tasks were assigned.",
    ),
    _Spec(
        "keys_forgotten",
        Counter,
        "keys_forgotten",
        "Keys dropped by a forget request, by kind.",
        ("kind",),
    ),
)


class TrainerMetrics:
    """A plain holder of the trainer's metrics; the service updates them directly."""

    events_consumed: Counter
    events_invalid: Counter
    batch_events: Histogram
    batch_duration: Histogram
    event_age: Histogram
    consumer_lag: Gauge
    versions_published: Counter
    models: Gauge
    worker_queue_depth: Gauge
    partitions_paused: Gauge
    rebalances: Counter
    transactions: Counter
    state_restore: Histogram
    rule_trust: Histogram
    forecast_skill: Histogram
    rules_by_status: Gauge
    ready: Gauge
    commit_failures: Counter
    broker_retries: Counter
    broker_unavailable: Counter
    degraded: Gauge
    dedupe_ids: Gauge
    dedupe_bytes: Gauge
    dedupe_evicted: Gauge
    keys_forgotten: Counter

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        for spec in _METRICS:
            extra: dict[str, Any] = {} if spec.buckets is None else {"buckets": spec.buckets}
            metric = spec.kind(
                "stream_trainer_" + spec.name,
                spec.help,
                list(spec.labels),
                registry=self.registry,
                **extra,
            )
            setattr(self, spec.attr, metric)
        self.info = Info("stream_trainer_build", "Build information.", registry=self.registry)
        self.info.info({"version": __version__})

    def metric_names(self) -> set[str]:
        """Every sample name this registry can export, whether or not it has samples yet.

        A family with samples reports their names (a histogram with negative buckets, such as
        skill, has no `_sum`); a labelled family with no child yet has no samples, so its
        names come from its type.
        """
        names: set[str] = set()
        for family in self.registry.collect():
            if family.samples:
                names.update(sample.name for sample in family.samples)
            else:
                names.update(family.name + sfx for sfx in _SUFFIXES.get(family.type, ("",)))
        return names
