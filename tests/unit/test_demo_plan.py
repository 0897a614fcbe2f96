"""The demo's pure parts: its per-run names and the traffic it produces."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_trainer.config import Settings
from stream_trainer.dev.demo.command import demo_settings, plan_from_args
from stream_trainer.dev.demo.traffic import SPAN_HALF_LIVES, TrafficPlan, traffic
from stream_trainer.dev.synthetic import OBSERVATION
from stream_trainer.errors import ConfigError
from stream_trainer.events import decode_feedback, decode_observation

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_default_names_get_a_fresh_prefix_and_application_id() -> None:
    cfg = demo_settings(Settings(http_port=0), "b:9092", "RUN")
    assert cfg.bootstrap_servers == "b:9092"
    assert cfg.application_id == "stream-trainer-demo-RUN"
    assert cfg.topic_observations == "demo-RUN.pulse.observations"
    assert cfg.topic_dead_letter == "demo-RUN.pulse.dead-letter"
    assert cfg.changelog_topic == "demo-RUN.stream-trainer-demo-RUN-state-changelog"


def test_configured_names_are_kept() -> None:
    given_cfg = Settings(http_port=0, application_id="mine", topic_feedback="fb")
    cfg = demo_settings(given_cfg, "b:9092", "RUN")
    assert cfg.application_id == "mine"
    assert (cfg.topic_observations, cfg.topic_feedback) == ("pulse.observations", "fb")
    assert cfg.changelog_topic == "mine-state-changelog"


def test_a_busy_http_port_is_replaced_by_a_free_one() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = demo_settings(Settings(http_host="127.0.0.1", http_port=port), "b:1", "RUN")
    assert cfg.http_port not in (0, port)


@settings(max_examples=15, deadline=None)
@given(
    events=st.integers(1, 3000),
    seed=st.integers(0, 2**16),
    bad_fraction=st.sampled_from([0.0, 0.005, 0.05]),
)
def test_traffic_is_the_valid_stream_plus_the_planned_invalid_records(
    events: int, seed: int, bad_fraction: float
) -> None:
    plan = TrafficPlan(seed, events, 4, 3, 0.0, bad_fraction)
    pulse = plan.pulse(Settings(), NOW)
    records = list(traffic(pulse, plan, 1024))
    assert len(records) == plan.total
    valid = []
    for kind, _, value in records:
        decode = decode_observation if kind == OBSERVATION else decode_feedback
        try:
            decode(value, max_bytes=1024)
        except Exception:
            continue
        valid.append(value)
    # The valid records are exactly the synthetic stream, in order, with nothing lost.
    assert valid == [value for _, _, value in pulse.records(events, 0.5)]


def test_the_stream_spans_the_planned_half_lives_up_to_now() -> None:
    half_life = 1000.0
    plan = TrafficPlan(3, 4000, 10, 5, 0.0)
    pulse = plan.pulse(Settings(trust_half_life_s=half_life), NOW)
    stamps = [
        decode_observation(v).ts
        for k, _, v in traffic(pulse, plan, 1024)
        if k == OBSERVATION and v.startswith(b'{"event_id":"o-')
    ]
    span = (max(stamps) - pulse.start).total_seconds()
    assert span == pytest.approx(SPAN_HALF_LIVES * half_life, rel=0.01)
    assert max(stamps) <= NOW
    assert Counter(pulse.degrading_rules) == Counter([pulse.rules[0]])


@pytest.mark.parametrize("flag", ["events", "variables", "rules"])
def test_plan_flags_below_one_are_config_errors(flag: str) -> None:
    values = {"events": 10, "variables": 2, "rules": 2, "seed": 1, flag: 0}
    with pytest.raises(ConfigError, match=f"--{flag}"):
        plan_from_args(argparse.Namespace(**values))


def test_rate_defaults_when_the_cli_has_no_rate_flag() -> None:
    plan = plan_from_args(argparse.Namespace(events=10, variables=2, rules=2, seed=1))
    assert plan.rate == 20_000.0
    assert (
        plan_from_args(argparse.Namespace(events=10, variables=2, rules=2, seed=1, rate=5)).rate
        == 5
    )
