"""Start-up and fatal-path errors: clear, loud, and never a silent commit."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream_trainer.config import load_settings
from stream_trainer.dev.invalid import bad_records
from stream_trainer.dev.synthetic import SyntheticPulse
from stream_trainer.errors import DeadLetterError, TopologyError
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.service import Trainer
from tests.integration import harness as h

pytestmark = pytest.mark.kafka


async def _create(bootstrap: str, *topics: NewTopic) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(list(topics))
    finally:
        await admin.close()


async def test_inputs_that_are_not_co_partitioned_fail_at_start(kafka_bootstrap: str) -> None:
    topics = h.new_topics("copart")
    await _create(
        kafka_bootstrap, NewTopic(topics.observations, 3, 1), NewTopic(topics.feedback, 2, 1)
    )
    trainer = Trainer(load_settings(environ=topics.env(kafka_bootstrap)), serve_http=False)
    with pytest.raises(TopologyError, match=r"not co-partitioned.*3 partitions.*has 2"):
        await trainer.start()
    await trainer.stop()


async def test_missing_input_topic_fails_at_start_naming_it(kafka_bootstrap: str) -> None:
    topics = h.new_topics("missing")
    await _create(kafka_bootstrap, NewTopic(topics.observations, 1, 1))
    trainer = Trainer(load_settings(environ=topics.env(kafka_bootstrap)), serve_http=False)
    with pytest.raises(TopologyError, match=topics.feedback):
        await trainer.start()
    await trainer.stop()


async def test_unwritable_dead_letter_topic_is_fatal_and_commits_nothing(
    kafka_bootstrap: str,
) -> None:
    topics = h.new_topics("dlqfail")
    await h.create_inputs(kafka_bootstrap, topics, partitions=1)
    # The broker refuses every dead letter: they are larger than the topic allows.
    await _create(
        kafka_bootstrap,
        NewTopic(topics.dead_letter, 1, 1, topic_configs={"max.message.bytes": "64"}),
    )
    pulse = SyntheticPulse(seed=41, n_variables=5, n_rules=5)
    valid = list(pulse.records(200))
    bad = [(kind, key, value) for kind, key, value, _ in bad_records(pulse, 5)]
    await h.produce(kafka_bootstrap, topics, valid + bad)

    settings = load_settings(environ=topics.env(kafka_bootstrap))
    trainer = Trainer(settings, TrainerMetrics(), until_end=True, serve_http=False)
    await trainer.start()
    try:
        with pytest.raises(DeadLetterError, match=topics.dead_letter):
            await trainer.wait()
    finally:
        with pytest.raises(DeadLetterError):  # stop() re-raises what the worker kept
            await trainer.stop()

    committed = await h.committed_offsets(kafka_bootstrap, topics.application_id)
    assert sum(committed.values()) < len(valid) + len(bad)  # the failing batch is not committed
    outputs = await h.read_outputs(kafka_bootstrap, topics)
    assert sum(m.invalid for m in outputs.metrics) == 0  # no batch with bad input committed
