"""The trainer and the client publishers against a SASL_SSL listener.

A dedicated local broker (not the session one) gets a SASL_SSL listener with a throw-away
CA: PLAIN users from the JAAS line, a SCRAM-SHA-256 user created with Kafka's own
ConfigCommand. With the right credentials every client the trainer builds (admin, consumer,
transactional producers) works end to end; with a wrong password, start fails with our
`KafkaError` instead of hanging; and the password shows up in no log line and no metric.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from stream_trainer.client import FeedbackPublisher, ObservationPublisher
from stream_trainer.config import Settings
from stream_trainer.dev.broker.config import choose_free_ports
from stream_trainer.dev.broker.local_broker import Listener, LocalKafkaBroker
from stream_trainer.dev.demo.report import read_latest
from stream_trainer.dev.demo.traffic import ensure_input_topics
from stream_trainer.dev.synthetic import OBSERVATION, SyntheticPulse
from stream_trainer.errors import KafkaError, StreamTrainerError
from stream_trainer.events import Feedback, ModelVersion, Observation, RuleVersion
from stream_trainer.kafka.clients import client_options
from stream_trainer.service import Trainer
from tests.tls import TlsFiles, add_scram_user, make_tls, secure_overrides

pytestmark = pytest.mark.kafka

LISTENER = "SECURE"
SCRAM_USER, SCRAM_PASSWORD = "alice", "alice-Scram-s3cret"
PLAIN_USER, PLAIN_PASSWORD = "bob", "bob-Plain-s3cret"
WRONG_PASSWORD = "not-the-Password-9"
SECRETS = (SCRAM_PASSWORD, PLAIN_PASSWORD, WRONG_PASSWORD)
GUARD_S = 90.0  # hang guard only: a failure must come from the client, not this timeout


@dataclass(frozen=True)
class SecureCluster:
    bootstrap: str  # the SASL_SSL listener
    tls: TlsFiles


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    tls = make_tls(tmp_path_factory.mktemp("tls"))
    (port,) = choose_free_ports(1)
    overrides = secure_overrides(LISTENER, tls, {PLAIN_USER: PLAIN_PASSWORD})
    broker = LocalKafkaBroker(
        extra_listeners=[Listener(LISTENER, port, "SASL_SSL")], overrides=overrides
    )
    try:
        broker.start()
        add_scram_user(broker.bootstrap, SCRAM_USER, SCRAM_PASSWORD)
        yield SecureCluster(f"127.0.0.1:{port}", tls)
    finally:
        broker.close()


def _settings(cluster: SecureCluster, name: str, **security: Any) -> Settings:
    return Settings(
        bootstrap_servers=cluster.bootstrap,
        application_id=f"{name}-app",
        topic_observations=f"{name}.observations",
        topic_feedback=f"{name}.feedback",
        topic_model_versions=f"{name}.model-versions",
        topic_rule_versions=f"{name}.rule-versions",
        topic_training_metrics=f"{name}.training-metrics",
        topic_dead_letter=f"{name}.dead-letter",
        http_host="127.0.0.1",
        http_port=choose_free_ports(1)[0],
        security_protocol="SASL_SSL",
        ssl_cafile=str(cluster.tls.ca_pem),
        **security,
    )


def _credentials(mechanism: str, tmp_path: Path, password: str | None = None) -> dict[str, str]:
    if mechanism == "SCRAM-SHA-256":
        return {
            "sasl_mechanism": mechanism,
            "sasl_username": SCRAM_USER,
            "sasl_password": password or SCRAM_PASSWORD,
        }
    # PLAIN goes through the password-file route, as a Kubernetes secret mount would.
    secret = tmp_path / "kafka-password"
    secret.write_text((password or PLAIN_PASSWORD) + "\n", encoding="utf-8")
    return {
        "sasl_mechanism": mechanism,
        "sasl_username": PLAIN_USER,
        "sasl_password_file": str(secret),
    }


async def _publish(settings: Settings, pulse: SyntheticPulse, n: int) -> tuple[int, set[str]]:
    """Send a small stream with the client publishers; returns (observations, rule ids)."""
    security = {k: v for k, v in client_options(settings).items() if k != "bootstrap_servers"}
    observations: list[Observation] = []
    feedback: list[Feedback] = []
    for kind, _, value in pulse.records(n):
        if kind == OBSERVATION:
            observations.append(msgspec.json.decode(value, type=Observation))
        else:
            feedback.append(msgspec.json.decode(value, type=Feedback))
    obs_pub = ObservationPublisher(
        settings.bootstrap_servers, topic=settings.topic_observations, security=security
    )
    fb_pub = FeedbackPublisher(
        settings.bootstrap_servers, topic=settings.topic_feedback, security=security
    )
    async with obs_pub, fb_pub:
        await obs_pub.publish_many(observations)
        await fb_pub.publish_many(feedback)
    return len(observations), {f.rule_id for f in feedback}


def _log_like_the_service(caplog: pytest.LogCaptureFixture) -> None:
    """Everything of ours at DEBUG; aiokafka at WARNING, as `configure_logging` caps it.

    The cap matters: at DEBUG aiokafka logs every request, and a PLAIN SaslAuthenticate
    request carries the password in clear (SCRAM only sends a proof).
    """
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="aiokafka")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode("utf-8"))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
async def test_trainer_trains_over_sasl_ssl(
    secure_cluster: SecureCluster,
    unique_name: str,
    mechanism: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _log_like_the_service(caplog)
    settings = _settings(secure_cluster, unique_name, **_credentials(mechanism, tmp_path))
    await ensure_input_topics(settings, partitions=2)
    pulse = SyntheticPulse(seed=5, n_variables=4, n_rules=3)
    n_observations, rule_ids = await _publish(settings, pulse, 400)

    trainer = Trainer(settings, until_end=True)
    try:
        await asyncio.wait_for(trainer.start(), GUARD_S)
        await asyncio.wait_for(trainer.wait(), GUARD_S)
        metrics = await asyncio.to_thread(_scrape, settings.http_port)
    finally:
        await trainer.stop()

    rules = await read_latest(settings, settings.topic_rule_versions, RuleVersion)
    models = await read_latest(settings, settings.topic_model_versions, ModelVersion)
    assert {r.rule_id for r in rules} == rule_ids
    assert sum(m.n_observations for m in models) == n_observations
    assert "stream_trainer_events_consumed_total" in metrics
    for secret in SECRETS:
        assert secret not in metrics
        assert secret not in caplog.text


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
async def test_wrong_password_fails_at_start_with_kafka_error(
    secure_cluster: SecureCluster,
    unique_name: str,
    mechanism: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _log_like_the_service(caplog)
    credentials = _credentials(mechanism, tmp_path, password=WRONG_PASSWORD)
    settings = _settings(secure_cluster, unique_name, **credentials)
    trainer = Trainer(settings, serve_http=False)
    try:
        with pytest.raises(KafkaError) as failure:
            await asyncio.wait_for(trainer.start(), GUARD_S)
    finally:
        await trainer.stop()
    assert isinstance(failure.value, StreamTrainerError)
    assert WRONG_PASSWORD not in str(failure.value)
    assert WRONG_PASSWORD not in caplog.text
    assert "SaslAuthenticationFailed" in caplog.text  # the cause is in the log, named


async def test_publisher_with_wrong_password_fails_at_start(
    secure_cluster: SecureCluster, unique_name: str, tmp_path: Path
) -> None:
    settings = _settings(
        secure_cluster, unique_name, **_credentials("SCRAM-SHA-256", tmp_path, WRONG_PASSWORD)
    )
    security = {k: v for k, v in client_options(settings).items() if k != "bootstrap_servers"}
    publisher = FeedbackPublisher(settings.bootstrap_servers, security=security)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(publisher.start(), GUARD_S)
