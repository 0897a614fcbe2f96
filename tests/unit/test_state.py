"""`state.TaskState` with both real learners: publish cadence, forget, changelog and restore.

Batches are built from plain records through `batching.decode_batch`, as the service does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from stream_trainer.config import Settings
from stream_trainer.events import ModelVersion, RuleVersion
from stream_trainer.state import Publication, TaskState
from tests.unit.core_fakes import FB, OBS, Inputs, Rec

SETTINGS = Settings()
MODELS = SETTINGS.topic_model_versions
RULES = SETTINGS.topic_rule_versions
NOW = datetime(2026, 3, 1, tzinfo=UTC)

Versions = list[tuple[str, bytes, bytes | None]]


def at(n: int) -> datetime:
    return NOW + timedelta(seconds=n)


def learn_and_publish(
    state: TaskState, inputs: Inputs, records: Sequence[Rec], n: int
) -> Publication:
    learned = state.learn(inputs.batch(records))
    assert learned.invalid == []
    return state.publish(at(n))


def model(value: bytes | None) -> ModelVersion:
    assert value is not None
    return msgspec.json.decode(value, type=ModelVersion)


def rule(value: bytes | None) -> RuleVersion:
    assert value is not None
    return msgspec.json.decode(value, type=RuleVersion)


def of(versions: Versions, topic: str, key: str) -> list[bytes | None]:
    return [v for t, k, v in versions if (t, k) == (topic, key.encode())]


def state_keys(publication: Publication) -> list[bytes]:
    """Changelog keys of the models' own records (the learners may add records of theirs)."""
    return [k for k, _ in publication.changelog if k[1:2] == b":"]


def latest(records: Iterable[tuple[bytes, bytes | None]]) -> dict[bytes, bytes]:
    """What compaction leaves of a log: the latest record per key, deleted keys gone."""
    out: dict[bytes, bytes | None] = dict(records)
    return {k: v for k, v in out.items() if v is not None}


def latest_versions(publications: Iterable[Publication]) -> Versions:
    held: dict[tuple[str, bytes], bytes | None] = {}
    for publication in publications:
        for topic, key, value in publication.versions:
            held[(topic, key)] = value
    return sorted((t, k, v) for (t, k), v in held.items() if v is not None)


# -- publishing ---------------------------------------------------------------------------


def test_a_publish_has_one_version_per_changed_key_and_versions_count_up() -> None:
    state, inputs = TaskState(SETTINGS), Inputs()
    first = [inputs.obs("a", s) for s in range(1, 6)] + [inputs.obs("b", s) for s in (1, 2)]
    first += [inputs.fb("rule.x", s, s % 2 == 0) for s in range(1, 5)]
    pub = learn_and_publish(state, inputs, first, 1)
    assert sorted((t, k) for t, k, _ in pub.versions) == [
        (MODELS, b"a"),
        (MODELS, b"b"),
        (RULES, b"rule.x"),
    ]
    assert pub.updated == {"model": 2, "rule": 1} and pub.forgotten == {}
    assert sorted(state_keys(pub)) == [b"m:a", b"m:b", b"r:rule.x"]
    assert model(of(pub.versions, MODELS, "a")[0]).version == 1
    assert model(of(pub.versions, MODELS, "a")[0]).n_observations == 5
    assert rule(of(pub.versions, RULES, "rule.x")[0]).version == 1

    second = learn_and_publish(state, inputs, [inputs.obs("a", 6)], 2)
    assert [(t, k) for t, k, _ in second.versions] == [(MODELS, b"a")]  # only what changed
    assert model(second.versions[0][2]).version == 2
    assert state_keys(second) == [b"m:a"]

    nothing = state.publish(at(3))
    assert (nothing.versions, nothing.changelog) == ([], [])
    assert nothing.updated == {"model": 0, "rule": 0}


def test_many_learns_between_publishes_publish_once_as_one_batch_would() -> None:
    inputs = Inputs()
    records = [inputs.obs(v, s) for s in range(1, 9) for v in ("a", "b")]
    records += [inputs.fb(r, s, s % 3 != 0) for s in range(1, 9) for r in ("rule.x", "rule.y")]
    cached, whole = TaskState(SETTINGS), TaskState(SETTINGS)
    for part in (records[0:5], records[5:17], records[17:30], records[30:]):
        cached.learn(inputs.batch(part))
    whole.learn(inputs.batch(records))
    published, expected = cached.publish(at(1)), whole.publish(at(1))
    assert sorted(published.versions) == sorted(expected.versions)
    assert sorted(published.changelog, key=repr) == sorted(expected.changelog, key=repr)
    assert {model(v).version for t, _, v in published.versions if t == MODELS} == {1}
    assert {rule(v).version for t, _, v in published.versions if t == RULES} == {1}


def test_learned_counts_and_refusals() -> None:
    state, inputs = TaskState(SETTINGS), Inputs()
    records = [inputs.obs("a", 2), inputs.obs("a", 1), inputs.obs("a", 2)]  # out of order, dup
    records += [inputs.fb("rule.x", 1, True), inputs.fb("rule.x", 2, True, event_id="f-rule.x-1")]
    records.append(inputs.raw(OBS, b"a", b"{not json"))
    learned = state.learn(inputs.batch(records))
    assert learned.applied == {"model": 1, "rule": 1}
    assert sorted(inv.reason for inv in learned.invalid) == [
        "duplicate",
        "duplicate_event_id",
        "malformed",
        "out_of_order",
    ]
    assert sorted(inv.record.offset for inv in learned.invalid if inv.record.topic == OBS) == [
        1,
        2,
        3,
    ]


# -- forget ---------------------------------------------------------------------------------


def test_a_forget_splits_the_key_old_life_before_it_new_life_after() -> None:
    state, inputs = TaskState(SETTINGS), Inputs()
    learn_and_publish(state, inputs, [inputs.obs("a", s) for s in range(1, 6)], 1)
    # Events 6 and 7 feed the old life; after the tombstone older times are no longer
    # out of order: they start a new life.
    records = [inputs.obs("a", 6), inputs.obs("a", 7), inputs.forget(OBS, "a")]
    records += [inputs.obs("a", s) for s in (2, 3, 4)]
    learned = state.learn(inputs.batch(records))
    assert learned.invalid == [] and learned.applied["model"] == 6  # 5 events + the forget
    pub = state.publish(at(2))

    assert of(pub.versions, MODELS, "a")[0] is None  # the tombstone first ...
    reborn = model(of(pub.versions, MODELS, "a")[1])  # ... then the new life
    assert len(of(pub.versions, MODELS, "a")) == 2
    assert (reborn.version, reborn.n_observations) == (1, 3)
    assert reborn.trained_through == inputs_time(4)
    assert [k for k, v in pub.changelog if k == b"m:a"] == [b"m:a", b"m:a"]
    assert [v is None for k, v in pub.changelog if k == b"m:a"] == [True, False]
    assert pub.forgotten == {"model": 1} and pub.updated["model"] == 1

    fresh, fresh_inputs = TaskState(SETTINGS), Inputs()
    alone = learn_and_publish(fresh, fresh_inputs, [fresh_inputs.obs("a", s) for s in (2, 3, 4)], 2)
    assert of(pub.versions, MODELS, "a")[1] == of(alone.versions, MODELS, "a")[0]


def inputs_time(second: int) -> datetime:
    from tests.sample_events import T0

    return T0 + timedelta(seconds=second)


def test_a_forgotten_rule_comes_back_new_even_for_an_event_id_it_had_seen() -> None:
    state, inputs = TaskState(SETTINGS), Inputs()
    learn_and_publish(state, inputs, [inputs.fb("rule.x", s, False) for s in range(1, 4)], 1)
    records = [inputs.forget(FB, "rule.x"), inputs.fb("rule.x", 1, True)]  # id f-rule.x-1 again
    learned = state.learn(inputs.batch(records))
    assert learned.invalid == [] and learned.applied["rule"] == 2  # the event + the forget
    pub = state.publish(at(2))
    values = of(pub.versions, RULES, "rule.x")
    assert values[0] is None and len(values) == 2
    reborn = rule(values[1])
    assert reborn.version == 1
    assert (reborn.alpha, reborn.beta) == (2.0, 1.0)  # only the event after the forget
    rule_records = [v is None for k, v in pub.changelog if k == b"r:rule.x"]
    assert rule_records == [True, False]


def test_a_key_forgotten_and_not_learned_again_publishes_only_its_tombstones() -> None:
    state, inputs = TaskState(SETTINGS), Inputs()
    records = [inputs.obs("a", 1), inputs.obs("a", 2), inputs.forget(OBS, "a"), inputs.obs("b", 1)]
    state.learn(inputs.batch(records))
    pub = state.publish(at(1))
    assert of(pub.versions, MODELS, "a") == [None]
    assert [v for k, v in pub.changelog if k == b"m:a"] == [None]
    assert state.model_counts["model"] == 1


def test_a_forget_of_another_key_does_not_split_a_model() -> None:
    state, inputs = TaskState(SETTINGS), Inputs()
    records = [inputs.obs("a", 1), inputs.obs("a", 2), inputs.forget(OBS, "b"), inputs.obs("a", 3)]
    pub = learn_and_publish(state, inputs, records, 1)
    assert model(of(pub.versions, MODELS, "a")[0]).n_observations == 3
    assert pub.forgotten == {}  # b was never known: nothing to delete


def test_a_forget_applies_to_its_own_input_only() -> None:
    state, inputs = TaskState(SETTINGS), Inputs()
    learn_and_publish(state, inputs, [inputs.obs("x", 1), inputs.fb("x", 1, True)], 1)
    state.learn(inputs.batch([inputs.forget(FB, "x")]))
    pub = state.publish(at(2))
    assert pub.versions == [(RULES, b"x", None)]
    assert state.model_counts == {"rule": 0, "model": 1}


# -- changelog and restore ----------------------------------------------------------------------


def history(inputs: Inputs) -> list[list[Rec]]:
    """Batches touching both learners, with forgets, re-learning and redeliveries."""
    first = [inputs.obs(v, s) for s in range(1, 7) for v in ("a", "b", "c")]
    first += [inputs.fb(r, s, s % 2 == 0) for s in range(1, 7) for r in ("rule.x", "rule.y")]
    second = [inputs.obs("a", 7), inputs.forget(OBS, "b"), inputs.obs("b", 1)]
    second += [inputs.fb("rule.x", 7, True), inputs.forget(FB, "rule.y")]
    third = [inputs.forget(OBS, "c"), inputs.obs("a", 8), inputs.fb("rule.x", 8, False)]
    third.append(inputs.fb("rule.x", 5, False, event_id="f-rule.x-5"))  # a redelivery
    return [first, second, third]


def test_restoring_the_published_changelog_equals_never_restarting() -> None:
    inputs = Inputs()
    batches = history(inputs)
    live = TaskState(SETTINGS)
    publications = []
    for n, records in enumerate(batches):
        live.learn(inputs.batch(records))
        publications.append(live.publish(at(n)))
    log = [record for p in publications for record in p.changelog]
    assert any(v is None for _, v in log)  # the history holds tombstones

    for restored_from in (log, list(latest(log).items())):  # the log, and what compaction keeps
        restored = TaskState(SETTINGS)
        restored.restore(restored_from)
        assert restored.model_counts == live.model_counts == {"rule": 1, "model": 2}
        assert sorted(restored.current_versions()) == latest_versions(publications)
        assert sorted(live.current_versions()) == latest_versions(publications)

    restored = TaskState(SETTINGS)
    restored.restore(log)
    tail = [inputs.obs("a", 9), inputs.obs("b", 2), inputs.obs("c", 1)]
    tail += [inputs.fb("rule.x", 8, True, event_id="f-rule.x-8"), inputs.fb("rule.y", 1, True)]
    batch = inputs.batch(tail)
    went_on, came_back = live.learn(batch), restored.learn(batch)
    assert [i.reason for i in came_back.invalid] == [i.reason for i in went_on.invalid]
    assert [i.reason for i in came_back.invalid] == ["duplicate_event_id"]  # the memory too
    live_pub, restored_pub = live.publish(at(9)), restored.publish(at(9))
    assert restored_pub.versions == live_pub.versions
    assert restored_pub.changelog == live_pub.changelog


def test_a_restored_key_keeps_counting_versions_from_the_last_published() -> None:
    inputs = Inputs()
    live = TaskState(SETTINGS)
    log = []
    for n in range(3):
        log += learn_and_publish(live, inputs, [inputs.obs("a", n + 1)], n).changelog
    restored = TaskState(SETTINGS)
    assert restored.restore(log) == 1
    pub = learn_and_publish(restored, inputs, [inputs.obs("a", 4)], 4)
    assert model(pub.versions[0][2]).version == 4  # gapless across the restart


def test_the_snapshot_records_are_the_latest_changelog_record_per_key() -> None:
    inputs = Inputs()
    live = TaskState(SETTINGS, keep_records=True)
    log = []
    for n, records in enumerate(history(inputs)):
        live.learn(inputs.batch(records))
        log += live.publish(at(n)).changelog
    assert live.records == latest(log)
    restored = TaskState(SETTINGS, keep_records=True)
    restored.restore(log)
    assert restored.records == latest(log)


@pytest.mark.parametrize("topic", [OBS, FB])
def test_a_tombstone_whose_key_is_not_a_name_is_refused(topic: str) -> None:
    state, inputs = TaskState(SETTINGS), Inputs()
    learned = state.learn(inputs.batch([inputs.raw(topic, b"\xff\xfe", None)]))
    assert [inv.reason for inv in learned.invalid] == ["malformed"]
    assert learned.batch.forgets == []
