"""Upgrades keep state: changelog records of the previous release restore exactly.

`tests/fixtures/changelog-v0.json` was captured from the code of commit d55ec28 (msgpack
state records, before changelog format 1): the records its TaskState wrote after a head of
input, the tail that followed, and the versions that release published after the tail.
Today's code restores those records, learns the same tail, and must publish the same
versions (DESIGN section 3's tolerances; versions and counts exactly).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from stream_trainer.batching import PendingBatch, decode_batch
from stream_trainer.config import Settings
from stream_trainer.errors import StateFormatError
from stream_trainer.events import ModelVersion, RuleVersion
from stream_trainer.state import TaskState

FIXTURE = Path(__file__).parents[1] / "fixtures" / "changelog-v0.json"
NOW = datetime(2026, 2, 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def _changelog(data: dict[str, Any]) -> list[tuple[bytes, bytes | None]]:
    return [(base64.b64decode(k), base64.b64decode(v)) for k, v in data["changelog"]]


def _tail_batch(data: dict[str, Any]) -> PendingBatch:
    def records(topic: str, docs: list[dict[str, Any]], name: str) -> list[Any]:
        return [
            _Record(topic, 0, 1000 + i, doc[name].encode(), json.dumps(doc).encode())
            for i, doc in enumerate(docs)
        ]

    tail = data["tail"]
    return PendingBatch(
        0,
        0,
        0.0,
        records("obs", tail["observations"], "variable"),
        records("fb", tail["feedback"], "rule_id"),
    )


def test_previous_release_changelog_restores_and_continues_exactly() -> None:
    data = _fixture()
    settings = Settings()
    state = TaskState(settings)
    assert state.restore(_changelog(data)) == len(data["changelog"])
    learned = state.learn(decode_batch(_tail_batch(data), settings.max_event_bytes))
    assert sorted(inv.reason for inv in learned.invalid) == data["tail_refused"]
    state.publish(NOW)
    rules, models = state.final_versions(NOW)
    _same_rules(sorted(rules, key=lambda v: v.rule_id), data["rule_versions"])
    _same_models(sorted(models, key=lambda v: v.model_id), data["model_versions"])


def _same_rules(got: list[RuleVersion], want: list[dict[str, Any]]) -> None:
    assert [v.rule_id for v in got] == [w["rule_id"] for w in want]
    for version, expected in zip(got, want, strict=True):
        assert version.version == expected["version"]
        assert version.status == expected["status"]
        for name in ("alpha", "beta", "trust", "trust_low", "trust_high", "evidence"):
            assert getattr(version, name) == pytest.approx(expected[name], rel=1e-9), name


def _same_models(got: list[ModelVersion], want: list[dict[str, Any]]) -> None:
    assert [v.model_id for v in got] == [w["model_id"] for w in want]
    for version, expected in zip(got, want, strict=True):
        assert version.version == expected["version"]
        assert version.n_observations == expected["n_observations"]
        assert version.coefficients == pytest.approx(expected["coefficients"], rel=1e-6)
        assert version.mse == pytest.approx(expected["mse"], rel=1e-6)


def test_records_of_a_newer_format_are_refused_clearly() -> None:
    state = TaskState(Settings())
    newer = msgspec.msgpack.encode([1, 2, 3])
    with pytest.raises(StateFormatError, match="unknown"):
        state.restore([(b"m:spx_close", b"\x07" + newer)])
    with pytest.raises(StateFormatError, match="unknown"):
        state.restore([(b"r:rule.a", b"\x07" + newer)])
