"""`stream-trainer show`: partition choice, latest-version rules, and what it prints."""

from __future__ import annotations

import json

import pytest
from aiokafka.partitioner import DefaultPartitioner

from stream_trainer.cli import build_parser
from stream_trainer.commands.show import (
    Entry,
    KeyHistory,
    key_partition,
    missing_message,
    render,
    wire_json,
)
from stream_trainer.events import encode
from tests.unit.test_views_table import model, rule


@pytest.mark.parametrize("partitions", [1, 6, 7, 64])
def test_the_key_partition_is_kafkas_default_partitioner(partitions: int) -> None:
    keys = [f"rule.momentum.v{i:05d}".encode() for i in range(300)] + [b"", "été".encode()]
    every = list(range(partitions))
    java_default = DefaultPartitioner()
    assert [key_partition(k, partitions) for k in keys] == [
        java_default(k, every, every) for k in keys
    ]


def history(*entries: Entry) -> KeyHistory:
    return KeyHistory("rule", "rule.a", "pulse.rule-versions", 3, 6, list(entries))


def version_entry(offset: int, version: int) -> Entry:
    v = rule("rule.a", version)
    return Entry(offset, encode(v), v)


def test_latest_follows_the_views_rules() -> None:
    stale = history(version_entry(0, 2), version_entry(1, 1))
    assert stale.latest == version_entry(0, 2)
    forgotten = history(version_entry(0, 2), Entry(1, None, None))
    assert forgotten.latest is None and forgotten.forgotten_at == Entry(1, None, None)
    reborn = history(version_entry(0, 5), Entry(1, None, None), version_entry(2, 1))
    assert reborn.latest == version_entry(2, 1) and reborn.forgotten_at is None


def test_missing_messages_say_unknown_or_forgotten() -> None:
    unknown = missing_message(history())
    assert unknown is not None and "no rule 'rule.a'" in unknown and "partition 3 of 6" in unknown
    gone = missing_message(history(version_entry(0, 1), Entry(7, None, None)))
    assert gone is not None and "forgotten" in gone and "offset 7" in gone
    invalid = missing_message(history(Entry(0, b"{}", None, "invalid: ...")))
    assert invalid is not None and "only invalid records" in invalid
    assert missing_message(history(version_entry(0, 1))) is None


def test_json_is_the_exact_wire_json_on_one_line() -> None:
    h = history(version_entry(0, 1), version_entry(1, 2))
    out = render(h, all_versions=False, fmt="json")
    assert out == encode(rule("rule.a", 2)).decode() and "\n" not in out
    assert wire_json(b'{\n "a": 1\n}') == '{"a":1}'
    lines = render(history(version_entry(0, 1), Entry(1, None, None)), all_versions=True,
                   fmt="json").splitlines()  # fmt: skip
    assert json.loads(lines[0])["version"] == 1 and lines[1] == "null"


def test_table_lists_every_field_of_the_latest_version() -> None:
    out = render(history(version_entry(4, 3)), all_versions=False, fmt="table")
    assert out.splitlines()[0] == "rule rule.a  (pulse.rule-versions partition 3 of 6, offset 4)"
    for field in ("version", "trust_low", "status", "trained_through"):
        assert field in out
    assert "2026-01-01T00:00:03.000007Z" in out


def test_history_table_has_one_row_per_record_oldest_first() -> None:
    first, second = model("var_a", 1), model("var_a", 2, skill=None)
    entries = [
        Entry(0, encode(first), first),
        Entry(5, None, None),
        Entry(6, encode(second), second),
    ]
    h = KeyHistory("model", "var_a", "pulse.model-versions", 0, 1, entries)
    lines = render(h, all_versions=True, fmt="table").splitlines()
    assert lines[1].split()[:4] == ["OFFSET", "VERSION", "N_OBSERVATIONS", "MSE"]
    assert lines[2].split()[:2] == ["0", "1"]
    assert lines[3].split() == ["5", "(forgotten:", "tombstone)"]
    assert lines[4].split()[:2] == ["6", "2"] and " - " in lines[4]  # skill None


def test_show_parses_kind_id_and_options() -> None:
    args = build_parser().parse_args(
        ["show", "model", "spx_close", "--history", "--format", "json"]
    )
    assert (args.kind, args.key, args.history, args.format) == ("model", "spx_close", True, "json")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["show", "thing", "x"])


def test_show_help_explains_usage_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["show", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for text in ("--history", "--format {table,json}", "examples:", "1 unknown or forgotten"):
        assert text in out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "show" in capsys.readouterr().out
