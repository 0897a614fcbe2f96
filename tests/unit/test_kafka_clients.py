"""`kafka.clients`: the one place client options come from, and the factories using them."""

from __future__ import annotations

from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from stream_trainer.config import Settings
from stream_trainer.kafka.clients import (
    admin_options,
    consumer_options,
    new_admin,
    new_consumer,
    new_producer,
    producer_options,
)

PLAIN = Settings(bootstrap_servers="b1:9092,b2:9092", http_port=0)


def test_consumers_read_committed_and_never_auto_commit() -> None:
    options = consumer_options(PLAIN)
    assert options == {
        "bootstrap_servers": "b1:9092,b2:9092",
        "security_protocol": "PLAINTEXT",
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
    }


def test_overrides_win_and_are_added() -> None:
    options = consumer_options(PLAIN, group_id="g", isolation_level="read_uncommitted")
    assert options["group_id"] == "g"
    assert options["isolation_level"] == "read_uncommitted"
    assert admin_options(PLAIN, client_id="me") == {
        "bootstrap_servers": "b1:9092,b2:9092",
        "security_protocol": "PLAINTEXT",
        "client_id": "me",
    }


def test_producers_are_durable_idempotent_and_batch() -> None:
    options = producer_options(PLAIN, transactional_id="app-task-0")
    assert options == {
        "bootstrap_servers": "b1:9092,b2:9092",
        "security_protocol": "PLAINTEXT",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "transactional_id": "app-task-0",
    }


def test_security_reaches_every_kind_of_client(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    settings = Settings(
        bootstrap_servers="b:9093",
        http_port=0,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="trainer",
        sasl_password_file=str(secret),
    )
    for options in (consumer_options(settings), producer_options(settings)):
        assert options["security_protocol"] == "SASL_PLAINTEXT"
        assert options["sasl_mechanism"] == "SCRAM-SHA-256"
        assert options["sasl_plain_username"] == "trainer"
        assert options["sasl_plain_password"] == "s3cret"
    assert admin_options(settings)["sasl_plain_password"] == "s3cret"


async def test_factories_build_unstarted_clients_with_those_options() -> None:
    consumer = new_consumer(PLAIN, group_id="g", client_id="c")
    producer = new_producer(PLAIN, client_id="p", linger_ms=20)
    admin = new_admin(PLAIN, client_id="a")
    try:
        assert isinstance(consumer, AIOKafkaConsumer)
        assert consumer._group_id == "g"
        assert consumer._isolation_level == "read_committed"
        assert not consumer._enable_auto_commit
        assert isinstance(producer, AIOKafkaProducer)
        assert producer.client._client_id == "p"
        assert isinstance(admin, AIOKafkaAdminClient)
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.close()
