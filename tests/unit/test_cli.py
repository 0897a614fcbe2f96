"""CLI: help, schema export, config errors, early SIGTERM (no broker needed)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from stream_trainer.cli import build_parser, main
from stream_trainer.schemas import stale_schemas

SUBCOMMANDS = ("run", "replay", "dead-letters", "demo", "schemas")


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in SUBCOMMANDS)


def test_schemas_export_writes_the_committed_files(tmp_path: Path) -> None:
    assert main(["schemas", "export", str(tmp_path)]) == 0
    assert stale_schemas(tmp_path) == []
    assert len(list(tmp_path.glob("*.schema.json"))) == 5


def test_invalid_setting_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAM_TRAINER_MAX_BATCH_EVENTS", "many")
    assert main(["run"]) == 2
    assert "STREAM_TRAINER_MAX_BATCH_EVENTS" in capsys.readouterr().err


def test_sigterm_before_the_service_started_is_a_clean_exit(tmp_path: Path) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        main(["schemas", "export", str(tmp_path)])
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        with pytest.raises(SystemExit) as exit_info:
            handler(signal.SIGTERM, None)
        assert exit_info.value.code == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
