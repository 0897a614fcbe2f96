"""The committed JSON Schemas in schemas/ are exactly what the Structs generate."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from stream_trainer import events as ev
from stream_trainer import schemas as sch

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
EXPECTED_FILES = {
    "observation.schema.json",
    "feedback.schema.json",
    "model_version.schema.json",
    "rule_version.schema.json",
    "training_metrics.schema.json",
}


def test_committed_schemas_match_the_code() -> None:
    stale = sch.stale_schemas(SCHEMAS)
    assert stale == [], f"re-run `stream-trainer schemas export` (stale: {stale})"
    assert {p.name for p in SCHEMAS.glob("*.schema.json")} == EXPECTED_FILES


def test_a_changed_struct_is_detected() -> None:
    class Observation(msgspec.Struct, frozen=True):
        """A new value of a variable at a time (topic pulse.observations, key = variable)."""

        event_id: str
        variable: ev.Name
        ts: ev.Timestamp
        value: float
        source: str | None = None
        unit: str | None = None  # the change: a new optional field

    changed: list[type[msgspec.Struct]] = [Observation, *ev.EVENT_TYPES[1:]]
    assert sch.stale_schemas(SCHEMAS, changed) == ["observation.schema.json"]


def test_export_writes_stable_files(tmp_path: Path) -> None:
    written = sch.export_schemas(tmp_path / "out")
    assert {p.name for p in written} == EXPECTED_FILES
    first = {p.name: p.read_bytes() for p in written}
    sch.export_schemas(tmp_path / "out")
    assert {p.name: p.read_bytes() for p in written} == first
    assert sch.stale_schemas(tmp_path / "out") == []
    for text in first.values():
        assert text.endswith(b"}\n")
        assert json.loads(text)["$schema"].endswith("2020-12/schema")


def test_missing_edited_and_extra_files_are_stale(tmp_path: Path) -> None:
    sch.export_schemas(tmp_path)
    (tmp_path / "feedback.schema.json").unlink()
    edited = tmp_path / "rule_version.schema.json"
    edited.write_text(edited.read_text().replace('"trust"', '"trust_score"'))
    (tmp_path / "old_event.schema.json").write_text("{}\n")
    assert sch.stale_schemas(tmp_path) == [
        "old_event.schema.json",
        "feedback.schema.json",
        "rule_version.schema.json",
    ]


def test_schemas_state_the_contract_rules() -> None:
    schemas = sch.json_schemas()
    feedback = schemas["feedback"]["$defs"]["Feedback"]
    assert feedback["required"] == ["event_id", "rule_id", "ts", "success"]
    assert feedback["properties"]["weight"]["exclusiveMinimum"] == 0
    assert feedback["properties"]["rule_id"]["maxLength"] == ev.MAX_NAME_LENGTH
    observation = schemas["observation"]["$defs"]["Observation"]
    assert observation["properties"]["ts"]["format"] == "date-time"
    rule = schemas["rule_version"]["$defs"]["RuleVersion"]
    assert rule["properties"]["status"]["enum"] == ["active", "probation", "retired"]
