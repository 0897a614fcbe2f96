"""Topic administration: create what the service writes, check what it reads."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.errors import TopicAlreadyExistsError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError, TopologyError
from stream_trainer.kafka.clients import client_options, new_admin
from stream_trainer.kafka.errors import is_retriable

log = logging.getLogger(__name__)

COMPACTED = {"cleanup.policy": "compact"}
# Restore reads the changelog; compaction must keep it near one record per key. The
# active segment is never compacted, so segments roll by size (64 MiB) and age (10 min);
# a low dirty ratio cleans often (the changelog is small next to the inputs); tombstones
# stay a day so a restore that started before them still sees them.
CHANGELOG = {
    **COMPACTED,
    "segment.bytes": str(64 * 2**20),
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": str(24 * 3600 * 1000),
}
# New topics reach every broker's metadata a moment after creation (e.g. a topic-init job).
INPUT_TOPIC_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Topology:
    """Partition count shared by both input topics (the number of tasks)."""

    partitions: int


async def prepare_topics(settings: Settings) -> Topology:
    """Check the inputs are co-partitioned, then create missing output/changelog topics."""
    admin = new_admin(settings, client_id="stream-trainer-admin")
    try:
        await _start_admin(admin, settings)
        counts = await _wait_for_inputs(admin, settings)
        partitions = _input_partitions(settings, counts)
        existed = settings.changelog_topic in counts
        await _create_missing(admin, settings, counts, partitions)
        _check_changelog(settings, counts, partitions)
        if existed:
            await _update_changelog_configs(admin, settings.changelog_topic)
        return Topology(partitions)
    except AioKafkaError as exc:
        raise KafkaError(f"topic setup failed: {exc!r}", retriable=exc.retriable) from exc
    finally:
        await admin.close()


async def _start_admin(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    try:
        await admin.start()
    except AioKafkaError as exc:
        # aiokafka says only "Unable to bootstrap": ask one broker why, so that a broker
        # not up yet is waited for but wrong credentials or TLS files fail at once.
        cause = await _connection_error(settings) or exc
        raise KafkaError(
            f"cannot connect to Kafka at {settings.bootstrap_servers} "
            f"(security_protocol={settings.security_protocol}"
            + (f", sasl_mechanism={settings.sasl_mechanism}" if settings.sasl_username else "")
            + f"): {cause!r}; check the address, credentials and TLS files",
            retriable=is_retriable(cause) and not isinstance(cause, ssl.SSLError),
        ) from exc


async def _connection_error(settings: Settings) -> BaseException | None:
    """What connecting to the first bootstrap server raises (None if it connects)."""
    host, _, port = settings.bootstrap_servers.split(",")[0].strip().rpartition(":")
    options = client_options(settings)
    try:
        conn = await create_conn(
            host.strip("[]"),
            int(port),
            request_timeout_ms=5000,
            ssl_context=options.get("ssl_context"),
            security_protocol=settings.security_protocol,
            sasl_mechanism=options.get("sasl_mechanism"),
            sasl_plain_username=options.get("sasl_plain_username"),
            sasl_plain_password=options.get("sasl_plain_password"),
        )
    except (AioKafkaError, OSError, TimeoutError, ValueError) as exc:
        return exc
    conn.close()
    return None


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


def replication_factor(admin: AIOKafkaAdminClient, settings: Settings) -> int:
    """The configured replication factor of new topics; <= 0 means min(3, brokers).

    Like Kafka Streams' replication.factor=-1, but aiokafka cannot send -1: as many
    replicas as the cluster allows, up to the usual 3.
    """
    if settings.topic_replication_factor > 0:
        return settings.topic_replication_factor
    return min(3, len(admin._client.cluster.brokers()) or 1)


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
        settings.changelog_topic: CHANGELOG,
    }
    replication = replication_factor(admin, settings)
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


async def _update_changelog_configs(admin: AIOKafkaAdminClient, topic: str) -> None:
    """Give a changelog created by an earlier release today's compaction settings."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=CHANGELOG)
    try:
        responses = await admin.alter_configs([resource])
    except AioKafkaError as exc:
        # Lacking the ACL is no reason to stop: restores are only slower.
        log.warning("cannot update the configs of changelog %s: %r", topic, exc)
        return
    for response in responses:
        for error_code, error_message, *_ in response.resources:
            if error_code:
                log.warning(
                    "cannot update the configs of changelog %s: error %d %s",
                    topic,
                    error_code,
                    error_message,
                )


def _check_changelog(settings: Settings, counts: dict[str, int], partitions: int) -> None:
    if counts[settings.changelog_topic] != partitions:
        raise TopologyError(
            f"changelog topic {settings.changelog_topic} has {counts[settings.changelog_topic]} "
            f"partitions but the inputs have {partitions}; they must be co-partitioned"
        )
