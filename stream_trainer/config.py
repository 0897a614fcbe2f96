"""Settings from environment variables and/or a TOML or YAML file, validated once at start.

Names follow DESIGN section 6: the env form is ``STREAM_TRAINER_<NAME>``; a config file uses
the same names in lower case without the prefix. Env wins over the file. Any invalid value
fails at start with a `ConfigError` that names the setting as the user wrote it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from stream_trainer.errors import ConfigError

ENV_PREFIX = "STREAM_TRAINER_"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every setting of the service, with its default."""

    bootstrap_servers: str = "localhost:9092"
    application_id: str = "stream-trainer"
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    topic_observations: str = "pulse.observations"
    topic_feedback: str = "pulse.feedback"
    topic_model_versions: str = "pulse.model-versions"
    topic_rule_versions: str = "pulse.rule-versions"
    topic_training_metrics: str = "pulse.training-metrics"
    topic_dead_letter: str = "pulse.dead-letter"
    topic_changelog: str = ""  # empty: "<application_id>-state-changelog"
    topic_replication_factor: int = -1  # -1: min(3, number of brokers)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    group_instance_id: str = ""  # static membership (KIP-345): a restart keeps its tasks
    session_timeout_ms: int = 10_000
    max_batch_events: int = 5000
    max_batch_linger_ms: int = 50
    worker_concurrency: int = 0  # 0: number of CPUs
    queue_max_batches: int = 4
    ar_order: int = 3
    rls_forgetting: float = 0.995
    rls_initial_p: float = 1000.0
    trust_half_life_s: float = 2_592_000.0
    trust_retire_below: float = 0.35
    trust_probation_below: float = 0.5
    dedupe_window_s: float = 86_400.0
    dedupe_max_bytes: int = 64 * 2**20  # per task; the oldest ids are forgotten past it
    commit_interval_ms: int = 100  # one transaction per task per interval (Kafka Streams)
    cache_max_events: int = 50_000  # ... or sooner, once a task learned this many events
    broker_timeout_s: float = 300.0  # retriable broker failures are retried this long
    state_dir: str = ""  # optional local snapshot of task state; empty: changelog only
    snapshot_interval_s: float = 30.0  # at most one snapshot write per task per interval
    max_event_bytes: int = 65_536
    http_host: str = "0.0.0.0"
    http_port: int = 9400
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    summary_interval_s: float = 10.0
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = msgspec.field(default="", name="sasl_password")
    sasl_password_file: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    def __post_init__(self) -> None:
        _check_positive(self, "max_batch_events", "max_batch_linger_ms", "queue_max_batches")
        _check_positive(self, "ar_order", "trust_half_life_s", "max_event_bytes")
        _check_positive(self, "rls_initial_p", "dedupe_window_s", "summary_interval_s")
        _check_positive(self, "session_timeout_ms", "dedupe_max_bytes", "commit_interval_ms")
        _check_positive(self, "cache_max_events", "broker_timeout_s", "snapshot_interval_s")
        if self.worker_concurrency < 0:
            raise ConfigError(_named("worker_concurrency", "must be >= 0 (0 = number of CPUs)"))
        if not 0.0 < self.rls_forgetting <= 1.0:
            raise ConfigError(_named("rls_forgetting", "must be in (0, 1]"))
        if not 0 <= self.http_port <= 65535:
            raise ConfigError(_named("http_port", "must be a TCP port (0-65535)"))
        if not 0.0 <= self.trust_retire_below <= 1.0 or not 0.0 <= self.trust_probation_below <= 1:
            raise ConfigError(_named("trust_retire_below", "thresholds must be in [0, 1]"))
        if not self.application_id.strip():
            raise ConfigError(_named("application_id", "must not be empty"))
        if self.topic_observations == self.topic_feedback:
            raise ConfigError(_named("topic_feedback", "must differ from topic_observations"))

    @property
    def changelog_topic(self) -> str:
        return self.topic_changelog or f"{self.application_id}-state-changelog"

    @property
    def workers(self) -> int:
        return self.worker_concurrency or os.cpu_count() or 1

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    def password(self) -> str:
        """The SASL password, read from `sasl_password_file` when that is set."""
        if not self.sasl_password_file:
            return self.sasl_password
        try:
            return Path(self.sasl_password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(_named("sasl_password_file", f"cannot be read: {exc}")) from exc


SETTING_NAMES: tuple[str, ...] = Settings.__struct_fields__


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def _named(setting: str, problem: str) -> str:
    return f"setting {setting} ({env_name(setting)}) {problem}"


def _check_positive(settings: Settings, *names: str) -> None:
    for name in names:
        if getattr(settings, name) <= 0:
            raise ConfigError(_named(name, "must be > 0"))


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML (.toml) or YAML (.yaml/.yml) config file into a flat dict."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: use a .toml, .yaml or .yml extension")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of settings")
    return data


def settings_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The STREAM_TRAINER_* variables that name settings (others are left to their users)."""
    known = set(SETTING_NAMES)
    found = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in known:
            found[key[len(ENV_PREFIX) :].lower()] = value
    return found


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Merge file < env < overrides (e.g. CLI flags) and validate."""
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(read_config_file(config_file))
    merged.update(settings_from_env(os.environ if environ is None else environ))
    merged.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(merged) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    try:
        return msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc)) from exc


def _explain(exc: msgspec.ValidationError) -> str:
    message = str(exc)
    if " - at `$." in message:
        problem, _, where = message.partition(" - at `$.")
        setting = where.rstrip("`").split(".")[0].split("[")[0]
        return _named(setting, f"is invalid: {problem}")
    return f"invalid settings: {message}"
