"""Settings: defaults, file < env < flags, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_trainer.config import SETTING_NAMES, Settings, env_name, load_settings
from stream_trainer.errors import ConfigError


def test_defaults_match_design_section_6() -> None:
    s = load_settings(environ={})
    assert s.bootstrap_servers == "localhost:9092"
    assert s.application_id == "stream-trainer"
    assert s.processing_guarantee == "exactly_once"
    assert (s.topic_observations, s.topic_feedback) == ("pulse.observations", "pulse.feedback")
    assert s.topic_model_versions == "pulse.model-versions"
    assert s.topic_rule_versions == "pulse.rule-versions"
    assert s.topic_training_metrics == "pulse.training-metrics"
    assert s.topic_dead_letter == "pulse.dead-letter"
    assert s.auto_offset_reset == "earliest"
    assert (s.max_batch_events, s.max_batch_linger_ms) == (5000, 50)
    assert (s.ar_order, s.rls_forgetting, s.trust_half_life_s) == (3, 0.995, 2_592_000.0)
    assert s.http_port == 9400
    assert s.workers >= 1
    assert s.changelog_topic == "stream-trainer-state-changelog"


def test_env_wins_over_toml_file(tmp_path: Path) -> None:
    cfg = tmp_path / "trainer.toml"
    cfg.write_text('max_batch_events = 100\napplication_id = "from-file"\n')
    s = load_settings(cfg, environ={"STREAM_TRAINER_MAX_BATCH_EVENTS": "7"})
    assert s.max_batch_events == 7
    assert s.application_id == "from-file"


def test_yaml_file_and_flag_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "trainer.yaml"
    cfg.write_text("ar_order: 2\nprocessing_guarantee: at_least_once\n")
    s = load_settings(cfg, environ={}, ar_order=5)
    assert s.ar_order == 5
    assert s.processing_guarantee == "at_least_once"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STREAM_TRAINER_MAX_BATCH_EVENTS": "lots"}, "STREAM_TRAINER_MAX_BATCH_EVENTS"),
        ({"STREAM_TRAINER_MAX_BATCH_EVENTS": "0"}, "STREAM_TRAINER_MAX_BATCH_EVENTS"),
        ({"STREAM_TRAINER_PROCESSING_GUARANTEE": "maybe"}, "STREAM_TRAINER_PROCESSING_GUARANTEE"),
        ({"STREAM_TRAINER_RLS_FORGETTING": "1.5"}, "STREAM_TRAINER_RLS_FORGETTING"),
        ({"STREAM_TRAINER_HTTP_PORT": "70000"}, "STREAM_TRAINER_HTTP_PORT"),
    ],
)
def test_invalid_values_fail_naming_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=env)


def test_unknown_setting_in_file_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "trainer.toml"
    cfg.write_text("max_batch_event = 5\n")
    with pytest.raises(ConfigError, match="max_batch_event"):
        load_settings(cfg, environ={})


def test_unsupported_extension_and_bad_syntax(tmp_path: Path) -> None:
    bad_ext = tmp_path / "trainer.ini"
    bad_ext.write_text("x=1")
    with pytest.raises(ConfigError, match="extension"):
        load_settings(bad_ext, environ={})
    bad_toml = tmp_path / "trainer.toml"
    bad_toml.write_text("max_batch_events = = 3")
    with pytest.raises(ConfigError, match="not valid"):
        load_settings(bad_toml, environ={})


def test_password_is_read_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    s = load_settings(environ={"STREAM_TRAINER_SASL_PASSWORD": "inline"})
    assert s.password() == "inline"
    s2 = load_settings(environ={"STREAM_TRAINER_SASL_PASSWORD_FILE": str(secret)})
    assert s2.password() == "s3cret"


def test_every_setting_has_an_env_name() -> None:
    assert "max_batch_events" in SETTING_NAMES
    assert env_name("http_port") == "STREAM_TRAINER_HTTP_PORT"
    assert set(SETTING_NAMES) == set(Settings.__struct_fields__)


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = {name for name in SETTING_NAMES if f"`{name.upper()}" in readme}
    # SSL files share one row; everything else has its own.
    assert set(SETTING_NAMES) - documented <= {"ssl_certfile", "ssl_keyfile"}
    assert "SSL_CAFILE`, `SSL_CERTFILE`, `SSL_KEYFILE" in readme
