"""Every Prometheus metric the trainer exports, held on one registry per instance.

A fresh `CollectorRegistry` per `TrainerMetrics` keeps tests and several in-process trainers
from colliding on the global default registry. Labels are bounded enums only (topic,
partition, reason, kind, result, status): per-rule or per-variable labels would have
unbounded cardinality.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from stream_trainer import __version__

PREFIX = "stream_trainer_"

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


class TrainerMetrics:
    """A plain holder of the trainer's metrics; the service updates them directly."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "stream_trainer_events_consumed", "Input records consumed.", ["topic"], registry=r
        )
        self.events_invalid = Counter(
            "stream_trainer_events_invalid",
            "Input records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.batch_events = Histogram(
            "stream_trainer_batch_events",
            "Events per training batch.",
            buckets=BATCH_EVENTS_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "stream_trainer_batch_duration_seconds",
            "Time to train and commit one batch.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.event_age = Histogram(
            "stream_trainer_event_age_seconds",
            "Publish time minus event timestamp.",
            buckets=EVENT_AGE_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "stream_trainer_consumer_lag",
            "Records between the committed position and the high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.versions_published = Counter(
            "stream_trainer_versions_published",
            "Model and rule versions published, by kind (model|rule).",
            ["kind"],
            registry=r,
        )
        self.models = Gauge(
            "stream_trainer_models", "Models held in state, by kind.", ["kind"], registry=r
        )
        self.worker_queue_depth = Gauge(
            "stream_trainer_worker_queue_depth", "Batches waiting for a worker.", registry=r
        )
        self.partitions_paused = Gauge(
            "stream_trainer_partitions_paused",
            "Partitions paused for backpressure.",
            registry=r,
        )
        self.rebalances = Counter(
            "stream_trainer_rebalances", "Consumer group rebalances seen.", registry=r
        )
        self.transactions = Counter(
            "stream_trainer_transactions",
            "Kafka transactions, by result (committed|aborted|fenced).",
            ["result"],
            registry=r,
        )
        self.state_restore = Histogram(
            "stream_trainer_state_restore_seconds",
            "Time to restore a partition's state from the changelog.",
            buckets=RESTORE_BUCKETS,
            registry=r,
        )
        self.rule_trust = Histogram(
            "stream_trainer_rule_trust",
            "Trust of each published rule version.",
            buckets=TRUST_BUCKETS,
            registry=r,
        )
        self.forecast_skill = Histogram(
            "stream_trainer_forecast_skill",
            "Skill of each published model version (1 - mse/baseline_mse).",
            buckets=SKILL_BUCKETS,
            registry=r,
        )
        self.rules_by_status = Gauge(
            "stream_trainer_rules", "Rules held in state, by status.", ["status"], registry=r
        )
        self.ready = Gauge(
            "stream_trainer_ready", "1 when assigned partitions are restored.", registry=r
        )
        self.commit_failures = Counter(
            "stream_trainer_commit_failures",
            "Offset or transaction commits that failed.",
            registry=r,
        )
        self.info = Info("stream_trainer_build", "Build information.", registry=r)
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
