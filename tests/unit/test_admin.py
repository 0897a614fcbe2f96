"""`kafka.admin.prepare_topics` against a fake admin client: checks, creation, errors."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError, UnknownError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError, TopologyError
from stream_trainer.kafka import admin as admin_module
from stream_trainer.kafka.admin import (
    CHANGELOG,
    COMPACTED,
    Topology,
    prepare_topics,
    replication_factor,
)

SETTINGS = Settings(bootstrap_servers="b:9092", http_port=0, application_id="app")
OUTPUTS = (
    SETTINGS.topic_model_versions,
    SETTINGS.topic_rule_versions,
    SETTINGS.topic_training_metrics,
    SETTINGS.topic_dead_letter,
    SETTINGS.changelog_topic,
)


class _Cluster:
    def __init__(self, brokers: int) -> None:
        self._brokers = set(range(brokers))

    def brokers(self) -> set[int]:
        return self._brokers


class _Client:
    def __init__(self, brokers: int) -> None:
        self.cluster = _Cluster(brokers)


class FakeAdmin:
    """The part of `AIOKafkaAdminClient` that `prepare_topics` uses, over a dict of topics."""

    def __init__(self, topics: dict[str, int], brokers: int = 1) -> None:
        self.topics = dict(topics)
        self._client = _Client(brokers)
        self.created: list[NewTopic] = []
        self.started = self.closed = False
        self.fail_start: Exception | None = None
        self.fail_create: Exception | None = None
        self.options: dict[str, Any] = {}  # what new_admin() was called with
        self.altered: list[Any] = []

    async def start(self) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def describe_topics(self) -> list[dict[str, Any]]:
        described = [
            {"topic": name, "partitions": list(range(n)), "error_code": 0}
            for name, n in self.topics.items()
        ]
        return [*described, {"topic": "broken", "partitions": [], "error_code": 3}]

    async def alter_configs(self, resources: list[Any]) -> list[Any]:
        self.altered.extend(resources)
        return []

    async def create_topics(self, new: list[NewTopic]) -> None:
        if self.fail_create is not None:
            raise self.fail_create
        self.created.extend(new)
        self.topics.update({t.name: t.num_partitions for t in new})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    admin = FakeAdmin({SETTINGS.topic_observations: 6, SETTINGS.topic_feedback: 6}, brokers=5)

    def new_admin(settings: Settings, **overrides: Any) -> FakeAdmin:
        admin.options.update(overrides, settings=settings)
        return admin

    monkeypatch.setattr(admin_module, "new_admin", new_admin)
    monkeypatch.setattr(admin_module, "INPUT_TOPIC_WAIT_S", 0.0)
    return admin


async def test_creates_every_missing_output_co_partitioned(fake: FakeAdmin) -> None:
    assert await prepare_topics(SETTINGS) == Topology(6)
    created = {t.name: t for t in fake.created}
    assert set(created) == set(OUTPUTS)
    assert {t.num_partitions for t in fake.created} == {6}
    assert {t.replication_factor for t in fake.created} == {3}  # min(3, 5 brokers)
    compacted = {n for n, t in created.items() if t.topic_configs == COMPACTED}
    assert compacted == {SETTINGS.topic_model_versions, SETTINGS.topic_rule_versions}
    assert created[SETTINGS.changelog_topic].topic_configs == CHANGELOG
    assert fake.altered == []  # a new changelog has today's configs already
    assert fake.started and fake.closed
    assert fake.options == {"settings": SETTINGS, "client_id": "stream-trainer-admin"}


async def test_existing_topics_are_left_alone(fake: FakeAdmin) -> None:
    fake.topics.update({name: 6 for name in OUTPUTS})
    assert await prepare_topics(SETTINGS) == Topology(6)
    assert fake.created == []
    assert [r.name for r in fake.altered] == [SETTINGS.changelog_topic]


async def test_topics_created_concurrently_are_fine(fake: FakeAdmin) -> None:
    fake.fail_create = TopicAlreadyExistsError()
    fake.topics[SETTINGS.changelog_topic] = 6  # the other replica's
    assert await prepare_topics(SETTINGS) == Topology(6)


async def test_missing_inputs_are_a_topology_error(fake: FakeAdmin) -> None:
    del fake.topics[SETTINGS.topic_feedback]
    with pytest.raises(TopologyError, match=SETTINGS.topic_feedback):
        await prepare_topics(SETTINGS)
    assert fake.created == [] and fake.closed


async def test_inputs_must_be_co_partitioned(fake: FakeAdmin) -> None:
    fake.topics[SETTINGS.topic_feedback] = 4
    with pytest.raises(TopologyError, match="not co-partitioned"):
        await prepare_topics(SETTINGS)


async def test_a_changelog_with_another_partition_count_is_refused(fake: FakeAdmin) -> None:
    fake.topics[SETTINGS.changelog_topic] = 3
    with pytest.raises(TopologyError, match="changelog"):
        await prepare_topics(SETTINGS)


async def test_an_unreachable_cluster_is_a_retriable_kafka_error(fake: FakeAdmin) -> None:
    fake.fail_start = KafkaConnectionError("refused")
    with pytest.raises(KafkaError, match="cannot connect to Kafka at b:9092") as info:
        await prepare_topics(SETTINGS)
    assert info.value.retriable
    assert isinstance(info.value.__cause__, KafkaConnectionError)
    assert fake.closed


async def test_other_broker_errors_are_wrapped(fake: FakeAdmin) -> None:
    fake.fail_create = UnknownError()
    with pytest.raises(KafkaError, match="topic setup failed") as info:
        await prepare_topics(SETTINGS)
    assert isinstance(info.value.__cause__, UnknownError)


@pytest.mark.parametrize(
    ("configured", "brokers", "expected"),
    [(-1, 1, 1), (-1, 2, 2), (-1, 7, 3), (0, 4, 3), (2, 7, 2)],
)
def test_replication_factor(configured: int, brokers: int, expected: int) -> None:
    settings = Settings(http_port=0, topic_replication_factor=configured)
    admin: Any = FakeAdmin({}, brokers=brokers)
    assert replication_factor(admin, settings) == expected
