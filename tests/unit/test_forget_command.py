"""`stream-trainer forget`: arguments, key checks, confirmation, what it prints, exit codes.

The tombstone itself is tested on a real broker (tests/integration/test_forget.py); here
`send_tombstone` is replaced by a recorder, except for the unreachable-broker case.
"""

from __future__ import annotations

import io
from typing import Any

import pytest

from stream_trainer.cli import build_parser, main
from stream_trainer.commands import forget as forget_module
from stream_trainer.commands.forget import Target, target_of, validate_key
from stream_trainer.config import Settings
from stream_trainer.errors import ConfigError, KafkaError

Sent = list[tuple[Target, bool]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Calls of send_tombstone (target, dry_run); each 'writes' at partition 3, offset 41."""
    calls: Sent = []

    async def fake(settings: Settings, target: Target, *, dry_run: bool) -> tuple[int, int]:
        calls.append((target, dry_run))
        return 3, -1 if dry_run else 41

    monkeypatch.setattr(forget_module, "send_tombstone", fake)
    monkeypatch.setenv("STREAM_TRAINER_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    return calls


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _stdin(monkeypatch: pytest.MonkeyPatch, *, tty: bool, answer: str | None = "") -> None:
    """stdin a terminal or not; `answer` None: end of input (Ctrl-D) at the question."""
    text = "" if answer is None else answer + "\n"
    monkeypatch.setattr("sys.stdin", _Terminal(text) if tty else io.StringIO())


def test_help_explains_the_tombstone_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["forget", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for phrase in ("tombstone", "--yes", "--dry-run", "version 1", "0 written, 1 not confirmed"):
        assert phrase in out
    assert "forget" in build_parser().format_help()


@pytest.mark.parametrize(
    "argv", [["forget"], ["forget", "rule"], ["forget", "rules", "a"], ["forget", "rule", "a", "b"]]
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert "usage: stream-trainer" in capsys.readouterr().err


def test_an_id_that_looks_like_an_option_goes_after_a_double_dash() -> None:
    args = build_parser().parse_args(["forget", "--yes", "rule", "--", "-odd id/é%"])
    assert (args.kind, args.key, args.yes, args.dry_run) == ("rule", "-odd id/é%", True, False)


@pytest.mark.parametrize(
    ("key", "message"),
    [("", "must not be empty"), ("x" * 201, "at most 200"), ("bad\udcff", "not valid UTF-8")],
)
def test_keys_the_trainer_would_refuse_are_errors(key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_key("rule", key)


def test_a_key_of_200_characters_of_any_script_is_fine() -> None:
    key = "é/ %" * 50
    assert validate_key("model", key) == key


def test_rules_go_to_feedback_and_models_to_observations() -> None:
    settings = Settings(application_id="app", topic_feedback="fb", topic_observations="obs")
    rule = target_of(settings, "rule", "rule.a")
    assert (rule.input_topic, rule.version_topic) == ("fb", settings.topic_rule_versions)
    assert (rule.changelog_topic, rule.changelog_key) == ("app-state-changelog", "r:rule.a")
    model = target_of(settings, "model", "spx")
    assert (model.input_topic, model.version_topic) == ("obs", settings.topic_model_versions)
    assert model.changelog_key == "m:spx" and model.raw_key == b"spx"


def test_without_a_terminal_it_refuses_unless_yes(
    sent: Sent, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, tty=False)
    assert main(["forget", "rule", "rule.a"]) == 1
    assert sent == []
    assert "pass --yes" in capsys.readouterr().err
    assert main(["forget", "rule", "rule.a", "--yes"]) == 0
    assert [(t.key, t.input_topic, dry) for t, dry in sent] == [("rule.a", "pulse.feedback", False)]


@pytest.mark.parametrize(("answer", "code", "writes"), [("y", 0, 1), (" YES ", 0, 1), ("n", 1, 0),
                                                        ("", 1, 0), (None, 1, 0)])  # fmt: skip
def test_on_a_terminal_it_asks_first(
    answer: str | None, code: int, writes: int, sent: Sent, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _stdin(monkeypatch, tty=True, answer=answer)
    assert main(["forget", "model", "spx_close"]) == code
    assert len(sent) == writes
    out = capsys.readouterr().out
    assert "Forget model 'spx_close'?" in out and "cannot be undone" in out


def test_it_prints_what_it_wrote_and_what_happens_next(
    sent: Sent, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["forget", "rule", "rule.a", "--yes", "--application-id", "app"]) == 0
    out = capsys.readouterr().out
    assert "tombstone written to pulse.feedback partition 3, offset 41" in out
    assert "app-state-changelog (key r:rule.a)" in out
    assert "pulse.rule-versions (key rule.a)" in out and "version 1" in out


def test_dry_run_needs_no_confirmation_and_writes_nothing(
    sent: Sent, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, tty=False)
    assert main(["forget", "model", "spx", "--dry-run"]) == 0
    assert [dry for _, dry in sent] == [True]
    assert "would write a tombstone for model 'spx' to pulse.observations partition 3" in (
        capsys.readouterr().out
    )


def test_an_invalid_key_exits_2_before_asking(
    sent: Sent, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stdin(monkeypatch, tty=True, answer="y")
    assert main(["forget", "rule", "x" * 201]) == 2
    assert sent == [] and "at most 200" in capsys.readouterr().err


def test_a_kafka_failure_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def failing(*args: Any, **kwargs: Any) -> tuple[int, int]:
        raise KafkaError("cannot write the tombstone to pulse.feedback: boom", retriable=True)

    monkeypatch.setattr(forget_module, "send_tombstone", failing)
    assert main(["forget", "rule", "rule.a", "--yes"]) == 2
    err = capsys.readouterr().err
    assert "stream-trainer: error: cannot write the tombstone" in err and "Traceback" not in err


def test_an_unreachable_broker_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 1 refuses at once: the real producer path, without a broker.
    assert main(["forget", "rule", "rule.a", "--yes", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "cannot write the tombstone to pulse.feedback" in capsys.readouterr().err
