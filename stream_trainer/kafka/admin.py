"""Topic administration: create what the service writes, check what it reads."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.errors import TopicAlreadyExistsError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError, TopologyError
from stream_trainer.kafka.clients import client_options

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}
# New topics reach every broker's metadata a moment after creation (e.g. a topic-init job).
INPUT_TOPIC_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Topology:
    """Partition count shared by both input topics (the number of tasks)."""

    partitions: int


async def prepare_topics(settings: Settings) -> Topology:
    """Check the inputs are co-partitioned, then create missing output/changelog topics."""
    admin = AIOKafkaAdminClient(**client_options(settings), client_id="stream-trainer-admin")
    try:
        await _start_admin(admin, settings)
        counts = await _wait_for_inputs(admin, settings)
        partitions = _input_partitions(settings, counts)
        await _create_missing(admin, settings, counts, partitions)
        _check_changelog(settings, counts, partitions)
        return Topology(partitions)
    except AioKafkaError as exc:
        raise KafkaError(f"topic setup failed: {exc!r}", retriable=exc.retriable) from exc
    finally:
        await admin.close()


async def _start_admin(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    try:
        await admin.start()
    except AioKafkaError as exc:
        raise KafkaError(
            f"cannot connect to Kafka at {settings.bootstrap_servers} "
            f"(security_protocol={settings.security_protocol}"
            + (f", sasl_mechanism={settings.sasl_mechanism}" if settings.sasl_username else "")
            + f"): {exc!r}; check the address, credentials and TLS files",
            retriable=exc.retriable,
        ) from exc


async def _wait_for_inputs(admin: AIOKafkaAdminClient, settings: Settings) -> dict[str, int]:
    """Partition counts, waiting briefly for input topics created just before we started."""
    inputs = {settings.topic_observations, settings.topic_feedback}
    deadline = asyncio.get_running_loop().time() + INPUT_TOPIC_WAIT_S
    while True:
        counts = await partition_counts(admin)
        if inputs <= counts.keys() or asyncio.get_running_loop().time() > deadline:
            return counts
        await asyncio.sleep(0.25)


async def partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """Partition count of every topic in the cluster."""
    described = await admin.describe_topics()
    return {t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0}


def _input_partitions(settings: Settings, counts: dict[str, int]) -> int:
    inputs = (settings.topic_observations, settings.topic_feedback)
    missing = [t for t in inputs if t not in counts]
    if missing:
        raise TopologyError(
            f"input topic(s) {', '.join(missing)} do not exist; create them with the same "
            "partition count (e.g. kafka-topics.sh --create --partitions 6 ...)"
        )
    obs, fb = (counts[t] for t in inputs)
    if obs != fb:
        raise TopologyError(
            f"input topics are not co-partitioned: {inputs[0]} has {obs} partitions, "
            f"{inputs[1]} has {fb}; both must have the same count"
        )
    return obs


async def _create_missing(
    admin: AIOKafkaAdminClient, settings: Settings, counts: dict[str, int], partitions: int
) -> None:
    wanted = {
        settings.topic_model_versions: COMPACTED,
        settings.topic_rule_versions: COMPACTED,
        settings.topic_training_metrics: {},
        settings.topic_dead_letter: {},
        settings.changelog_topic: COMPACTED,
    }
    replication = settings.topic_replication_factor
    if replication <= 0:
        # Like Kafka Streams' replication.factor=-1, but aiokafka cannot send -1: use as
        # many replicas as the cluster allows, up to the usual 3.
        replication = min(3, len(admin._client.cluster.brokers()) or 1)
    new = [
        NewTopic(name, partitions, replication, topic_configs=configs)
        for name, configs in wanted.items()
        if name not in counts
    ]
    if not new:
        return
    try:
        await admin.create_topics(new)
    except TopicAlreadyExistsError:
        log.info("topics created concurrently by another replica")
    for topic in new:
        counts[topic.name] = partitions
    log.info("created topics %s", ", ".join(t.name for t in new))


def _check_changelog(settings: Settings, counts: dict[str, int], partitions: int) -> None:
    if counts[settings.changelog_topic] != partitions:
        raise TopologyError(
            f"changelog topic {settings.changelog_topic} has {counts[settings.changelog_topic]} "
            f"partitions but the inputs have {partitions}; they must be co-partitioned"
        )
