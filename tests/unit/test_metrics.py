"""TrainerMetrics: names, isolation, buckets and that observations reach the exposition."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_trainer.ops.metrics import (
    EVENT_AGE_BUCKETS,
    SKILL_BUCKETS,
    TRUST_BUCKETS,
    TrainerMetrics,
)

EXPECTED_FAMILIES = {
    "stream_trainer_events_consumed_total",
    "stream_trainer_events_invalid_total",
    "stream_trainer_batch_events_bucket",
    "stream_trainer_batch_duration_seconds_bucket",
    "stream_trainer_event_age_seconds_bucket",
    "stream_trainer_consumer_lag",
    "stream_trainer_versions_published_total",
    "stream_trainer_models",
    "stream_trainer_worker_queue_depth",
    "stream_trainer_partitions_paused",
    "stream_trainer_rebalances_total",
    "stream_trainer_transactions_total",
    "stream_trainer_state_restore_seconds_bucket",
    "stream_trainer_rule_trust_bucket",
    "stream_trainer_forecast_skill_bucket",
    "stream_trainer_rules",
    "stream_trainer_ready",
    "stream_trainer_build_info",
    "stream_trainer_commit_failures_total",
}


def _samples(metrics: TrainerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metric_names_cover_the_contract() -> None:
    names = TrainerMetrics().metric_names()
    assert names >= EXPECTED_FAMILIES
    assert all(n.startswith("stream_trainer_") for n in names)
    for hist in ("batch_events", "event_age_seconds", "rule_trust"):
        for suffix in ("_bucket", "_sum", "_count"):
            assert f"stream_trainer_{hist}{suffix}" in names
    # Skill has negative buckets, so Prometheus conventions forbid a `_sum` for it.
    assert "stream_trainer_forecast_skill_count" in names
    assert "stream_trainer_forecast_skill_sum" not in names


def test_metric_names_match_a_scrape_once_every_child_exists() -> None:
    m = TrainerMetrics()
    m.events_consumed.labels(topic="t").inc()
    m.events_invalid.labels(reason="r").inc()
    m.consumer_lag.labels(topic="t", partition="0").set(1)
    m.versions_published.labels(kind="model").inc()
    m.models.labels(kind="model").set(1)
    m.transactions.labels(result="committed").inc()
    m.rules_by_status.labels(status="active").set(1)
    m.broker_retries.labels(cause="KafkaConnectionError").inc()
    m.keys_forgotten.labels(kind="rule").inc()
    scraped = {name for name, _ in _samples(m)}
    assert scraped == m.metric_names()


def test_no_unbounded_labels() -> None:
    allowed = {"topic", "partition", "reason", "kind", "result", "status", "le", "version"}
    allowed.add("cause")  # an error class name: a small fixed set
    m = TrainerMetrics()
    for family in m.registry.collect():
        for sample in family.samples:
            assert set(sample.labels) <= allowed, sample


def test_instances_do_not_collide() -> None:
    a, b = TrainerMetrics(), TrainerMetrics()
    a.events_consumed.labels(topic="pulse.feedback").inc(3)
    key = ("stream_trainer_events_consumed_total", frozenset({("topic", "pulse.feedback")}))
    assert _samples(a)[key] == 3
    assert key not in _samples(b)


def test_uses_the_registry_it_is_given() -> None:
    registry = CollectorRegistry()
    m = TrainerMetrics(registry)
    m.ready.set(1)
    assert registry.get_sample_value("stream_trainer_ready") == 1


def test_build_info_carries_the_version() -> None:
    from stream_trainer import __version__

    m = TrainerMetrics()
    value = m.registry.get_sample_value("stream_trainer_build_info", {"version": __version__})
    assert value == 1


def test_bucket_layouts() -> None:
    assert TRUST_BUCKETS[0] == 0.05
    assert TRUST_BUCKETS[-1] == 1.0
    assert len(TRUST_BUCKETS) == 20
    assert SKILL_BUCKETS[0] == -1.0
    assert SKILL_BUCKETS[-1] == 1.0
    assert EVENT_AGE_BUCKETS[0] == 0.001
    assert EVENT_AGE_BUCKETS[-1] >= 7 * 86400
    for buckets in (TRUST_BUCKETS, SKILL_BUCKETS, EVENT_AGE_BUCKETS):
        assert list(buckets) == sorted(set(buckets))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=30))
def test_trust_histogram_counts_every_observation(trusts: list[float]) -> None:
    m = TrainerMetrics()
    for t in trusts:
        m.rule_trust.observe(t)
    reg = m.registry
    assert reg.get_sample_value("stream_trainer_rule_trust_count") == len(trusts)
    # Every trust is <= 1.0, so the le="1.0" bucket already holds them all.
    assert reg.get_sample_value("stream_trainer_rule_trust_bucket", {"le": "1.0"}) == len(trusts)
    at_half = reg.get_sample_value("stream_trainer_rule_trust_bucket", {"le": "0.5"})
    assert at_half == sum(1 for t in trusts if t <= 0.5)


def test_help_and_type_lines_follow_conventions() -> None:
    text = generate_latest(TrainerMetrics().registry).decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    counters = [name for name, kind in types.items() if kind == "counter"]
    assert counters
    assert all(name.endswith("_total") for name in counters)
    assert types["stream_trainer_batch_duration_seconds"] == "histogram"
