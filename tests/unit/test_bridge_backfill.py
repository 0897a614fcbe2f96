"""`stream-trainer backfill` without a broker (issue 13): validation, keys, limits, dry run."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_trainer.bridge.chunks import best_effort_key, chunks, parse_mark, prepare, resume_point
from stream_trainer.bridge.inputs import plan_inputs
from stream_trainer.bridge.records import Rows
from stream_trainer.cli import main
from stream_trainer.config import load_settings
from stream_trainer.errors import ConfigError
from tests import bridge_files as bf

OBS = b'{"event_id":"e1","variable":"spx","ts":"2026-01-01T00:00:00Z","value":1.5}'
FB = b'{"event_id":"f1","rule_id":"rule.a","ts":"2026-01-01T00:00:00Z","success":true}'


def planned_file(tmp_path: Path, kind: str, values: list[bytes]):  # type: ignore[no-untyped-def]
    path = bf.write_jsonl(tmp_path / f"{kind}.jsonl", values)
    settings = load_settings(environ={})
    arguments = ([str(path)], []) if kind == "observation" else ([], [str(path)])
    (planned,) = plan_inputs(settings, *arguments)
    return settings, planned


@pytest.mark.parametrize("send_invalid", [False, True])
def test_prepare_keys_valid_events_by_name_and_reports_the_invalid_lines(
    tmp_path: Path, send_invalid: bool
) -> None:
    settings, planned = planned_file(tmp_path, "observation", [])
    bad = OBS.replace(b"2026-01-01T00:00:00Z", b"2026-01-01T00:00:00")
    rows = Rows([OBS, b"not json", bad], [3, 5, 9])
    prepared = prepare(planned, rows, settings, send_invalid)
    assert [(line, reason) for line, reason, _ in prepared.invalid] == [
        (5, "malformed"),
        (9, "naive_timestamp"),
    ]
    sent = [(r.topic, r.key, r.value) for r in prepared.records]
    expected = [("pulse.observations", b"spx", OBS)]
    if send_invalid:
        expected += [("pulse.observations", None, b"not json"), ("pulse.observations", b"spx", bad)]
    assert sent == expected


def test_feedback_is_keyed_by_rule_id(tmp_path: Path) -> None:
    settings, planned = planned_file(tmp_path, "feedback", [])
    (record,) = prepare(planned, Rows([FB], [1]), settings, False).records
    assert (record.topic, record.key) == ("pulse.feedback", b"rule.a")


def test_best_effort_key_reads_the_name_of_an_invalid_event() -> None:
    assert best_effort_key(b'{"rule_id":"r","ts":5}') == b"r"
    assert best_effort_key(b'{"variable":7}') is None
    assert best_effort_key(b"[1]") is None
    assert best_effort_key(b"{") is None


def test_limit_stops_after_the_first_n_events(tmp_path: Path) -> None:
    values = [OBS.replace(b"e1", b"e%d" % i) for i in range(12_000)]
    _, planned = planned_file(tmp_path, "observation", values)
    got = [v for rows in chunks(planned, 7_500) for v in rows.values]
    assert got == values[:7_500]
    assert sum(len(r) for r in chunks(planned, None)) == 12_000


def test_dry_run_validates_reports_file_and_line_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: a dry run that tried to connect would fail (exit 2).
    monkeypatch.setenv("STREAM_TRAINER_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    good = bf.write_jsonl(tmp_path / "good.jsonl", [OBS] * 3)
    assert main(["backfill", "--dry-run", "--observations", str(good)]) == 0
    assert "3 events from 1 files, validated (dry run, nothing sent)" in capsys.readouterr().err

    bad = bf.write_jsonl(tmp_path / "bad.jsonl", [OBS, b"{oops", OBS, b"[]"], "gz")
    assert main(["backfill", "--dry-run", "--feedback", str(good), "--observations", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: malformed" in err and f"{bad}:4: malformed" in err
    assert f"{good}:1: schema" in err  # observations given as feedback: no rule_id
    assert "7 events from 2 files" in err and "5 invalid (not sent)" in err
    assert main(["backfill", "--dry-run", "--send-invalid", "--observations", str(bad)]) == 0


def test_bad_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = bf.write_jsonl(tmp_path / "good.jsonl", [OBS])
    assert main(["backfill", "--dry-run", "--rate", "0", "--observations", str(good)]) == 2
    assert "--rate" in capsys.readouterr().err
    assert main(["backfill", "--dry-run", "--observations", str(tmp_path / "none.csv")]) == 2


def test_resume_after_sends_only_what_follows_the_line(tmp_path: Path) -> None:
    values = [OBS.replace(b"e1", b"e%d" % i) for i in range(12_000)]
    _, planned = planned_file(tmp_path, "observation", values)
    got = [v for rows in chunks(planned, None, after_line=7_321) for v in rows.values]
    assert got == values[7_321:]
    assert [v for rows in chunks(planned, 10, after_line=11_995) for v in rows.values] == values[
        11_995:
    ]
    assert resume_point([planned], parse_mark(f"{planned.item.path}:42")) == (0, 42)
    with pytest.raises(ConfigError, match="not one of the inputs"):
        resume_point([planned], ("other.jsonl", 1))
    with pytest.raises(ConfigError, match="FILE:LINE"):
        parse_mark("no-line")
