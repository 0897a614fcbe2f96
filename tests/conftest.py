"""Session-wide Kafka for tests marked ``kafka``, and collision-free topic names.

The broker comes from, in order: ``STREAM_TRAINER_TEST_BOOTSTRAP`` (an external cluster);
testcontainers' Kafka when a Docker engine answers; else `LocalKafkaBroker` (a real broker
from Maven Central jars, Java >= 17 needed). No source available is a test *error*, never
a skip: a suite that silently ran without Kafka would prove nothing.
"""

from __future__ import annotations

import os
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Importable from a plain checkout, whether or not the package is installed.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from stream_trainer.dev.broker.local_broker import LocalKafkaBroker  # noqa: E402
from stream_trainer.errors import BrokerLaunchError  # noqa: E402

BOOTSTRAP_ENV = "STREAM_TRAINER_TEST_BOOTSTRAP"
SEED_ENV = "STREAM_TRAINER_TEST_SEED"
_TESTCONTAINERS_IMAGE = "confluentinc/cp-kafka:7.6.0"
_NAME_CHARS = re.compile(r"[^A-Za-z0-9-]+")

# One seed per session (printed in the header, settable by env) so topic names are
# reproducible for a given run yet differ between runs against a long-lived cluster.
_SESSION_SEED = int(os.environ.get(SEED_ENV) or random.SystemRandom().getrandbits(32))


@dataclass
class _KafkaSource:
    bootstrap: str
    broker: LocalKafkaBroker | None
    description: str


def pytest_report_header(config: pytest.Config) -> str:
    return f"stream-trainer: {SEED_ENV}={_SESSION_SEED}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked `kafka` get the broker even when they don't name the fixture, so the
    # broker is up (or the failure is reported) before their body runs.
    for item in items:
        if not isinstance(item, pytest.Function) or item.get_closest_marker("kafka") is None:
            continue
        if "kafka_bootstrap" not in item.fixturenames:
            item.fixturenames.append("kafka_bootstrap")


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        # Any failure here only means "no Docker": the local launcher is the fallback.
        return False


def _start_testcontainer() -> tuple[str, Any]:
    from testcontainers.kafka import KafkaContainer

    container = (
        KafkaContainer(_TESTCONTAINERS_IMAGE)
        .with_kraft()
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    container.start()
    return container.get_bootstrap_server(), container


@pytest.fixture(scope="session")
def _kafka_source() -> Iterator[_KafkaSource]:
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield _KafkaSource(external, None, f"external cluster from {BOOTSTRAP_ENV}")
        return
    if _docker_answers():
        bootstrap, container = _start_testcontainer()
        try:
            yield _KafkaSource(bootstrap, None, f"testcontainers {_TESTCONTAINERS_IMAGE}")
        finally:
            container.stop()
        return
    broker = LocalKafkaBroker()
    try:
        broker.start()
    except BrokerLaunchError as exc:
        broker.close()
        pytest.fail(
            f"no Kafka for tests: {BOOTSTRAP_ENV} unset, no Docker engine, and the local "
            f"broker failed to start:\n{exc}",
            pytrace=False,
        )
    try:
        yield _KafkaSource(broker.bootstrap, broker, f"local broker in {broker.data_dir}")
    finally:
        broker.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka_source: _KafkaSource) -> str:
    """`host:port` of a Kafka cluster shared by the whole session."""
    return _kafka_source.bootstrap


@pytest.fixture(scope="session")
def local_broker(_kafka_source: _KafkaSource) -> LocalKafkaBroker | None:
    """The restartable local broker, or None when an external/container cluster is used.

    Tests that restart or kill the broker should ``pytest.skip`` on None (and only then).
    """
    return _kafka_source.broker


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A Kafka-legal name unique to this test and session, e.g. ``test-foo-3fa9c1d2``.

    Derive several with suffixes: ``f"{unique_name}-in"``.
    """
    base = _NAME_CHARS.sub("-", request.node.name).strip("-")[:80] or "test"
    rng = random.Random(f"{_SESSION_SEED}:{request.node.nodeid}")
    return f"{base}-{rng.getrandbits(32):08x}"
