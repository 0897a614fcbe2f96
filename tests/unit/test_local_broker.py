"""Pure logic of the local Kafka launcher: ids, ports, config, jar cache, probe, state."""

from __future__ import annotations

import base64
import os
import random
import re
import socket
import stat
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_trainer.dev.broker import daemon, jars
from stream_trainer.dev.broker.config import (
    BASE_SETTINGS,
    BrokerSpec,
    Listener,
    choose_free_ports,
    new_cluster_id,
    parse_properties,
    render_properties,
    render_server_properties,
    server_settings,
)
from stream_trainer.dev.broker.jars import (
    MARKER_NAME,
    RESOURCE_FILES,
    cache_is_complete,
    default_cache_dir,
    default_resources_dir,
    find_java,
    kafka_version,
    resolve_jars,
)
from stream_trainer.dev.broker.local_broker import LocalKafkaBroker, _with_parent_death_signal
from stream_trainer.dev.broker.probe import (
    decode_metadata_response,
    encode_metadata_request,
    fetch_cluster_info,
)
from stream_trainer.errors import BrokerLaunchError, ConfigError, KafkaError

CLUSTER_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{21}$")
ports = st.integers(min_value=1, max_value=65535)


def _spec(broker: int = 9092, controller: int = 9093, **kwargs: object) -> BrokerSpec:
    return BrokerSpec("127.0.0.1", broker, controller, Path("/data/logs"), **kwargs)  # type: ignore[arg-type]


# -- cluster id, ports ---------------------------------------------------------------------


@given(seed=st.integers(min_value=0, max_value=2**64))
@settings(max_examples=50)
def test_cluster_id_is_22_char_base64url_of_16_bytes(seed: int) -> None:
    cluster_id = new_cluster_id(random.Random(seed))
    assert CLUSTER_ID_RE.match(cluster_id)
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert new_cluster_id(random.Random(seed)) == cluster_id


class _ScriptedBits(random.Random):
    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self._values = values

    def getrandbits(self, k: int) -> int:
        return self._values.pop(0)


def test_cluster_id_starting_with_dash_or_zero_is_redrawn() -> None:
    dash_first = 62 << 122  # the top 6 bits index '-' in the base64url alphabet
    good = 1 << 100
    ids = new_cluster_id(_ScriptedBits([dash_first, 0, good]))
    assert ids == base64.urlsafe_b64encode(good.to_bytes(16, "big")).rstrip(b"=").decode()


def test_free_ports_are_distinct_and_bindable() -> None:
    chosen = choose_free_ports(3)
    assert len(set(chosen)) == 3
    for port in chosen:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_free_ports_rejects_nonpositive_count() -> None:
    with pytest.raises(ConfigError):
        choose_free_ports(0)


# -- server.properties ---------------------------------------------------------------------


@given(pair=st.lists(ports, min_size=2, max_size=2, unique=True))
@settings(max_examples=50)
def test_rendered_config_round_trips_and_wires_both_ports(pair: list[int]) -> None:
    spec = _spec(pair[0], pair[1])
    parsed = parse_properties(render_server_properties(spec))
    assert parsed == server_settings(spec)
    assert (
        parsed["listeners"] == f"PLAINTEXT://127.0.0.1:{pair[0]},CONTROLLER://127.0.0.1:{pair[1]}"
    )
    assert parsed["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{pair[0]}"
    assert parsed["controller.quorum.voters"] == f"1@127.0.0.1:{pair[1]}"
    assert parsed["process.roles"] == "broker,controller"
    assert parsed["log.dirs"] == "/data/logs"


def test_single_node_settings_allow_transactions() -> None:
    settings_ = server_settings(_spec())
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert settings_[key] == "1"
    assert settings_["auto.create.topics.enable"] == "false"
    assert settings_["group.initial.rebalance.delay.ms"] == "0"
    assert BASE_SETTINGS.items() <= settings_.items()


def test_overrides_win_over_defaults() -> None:
    settings_ = server_settings(_spec(overrides={"num.partitions": "3", "x.y": "z"}))
    assert settings_["num.partitions"] == "3"
    assert settings_["x.y"] == "z"


def test_extra_listener_is_listed_advertised_and_mapped() -> None:
    spec = _spec(extra_listeners=(Listener("SASL_SSL", 9094, "SASL_SSL"),))
    settings_ = server_settings(spec)
    assert settings_["listeners"].endswith(",SASL_SSL://127.0.0.1:9094")
    assert settings_["advertised.listeners"].endswith(",SASL_SSL://127.0.0.1:9094")
    assert "SASL_SSL:SASL_SSL" in settings_["listener.security.protocol.map"].split(",")


@pytest.mark.parametrize(
    "spec",
    [
        _spec(9092, 9092),
        _spec(0, 9093),
        _spec(9092, 70000),
        _spec(extra_listeners=(Listener("SASL_SSL", 9093, "SASL_SSL"),)),
        _spec(extra_listeners=(Listener("CONTROLLER", 9094),)),
        _spec(extra_listeners=(Listener("lower", 9094),)),
        _spec(extra_listeners=(Listener("EXTRA", 9094, "KERBEROS"),)),
        _spec(extra_listeners=(Listener("A", 9094), Listener("A", 9095))),
        _spec(node_id=-1),
    ],
)
def test_invalid_specs_are_rejected(spec: BrokerSpec) -> None:
    with pytest.raises(ConfigError):
        server_settings(spec)


@given(
    value=st.text(
        alphabet=st.characters(
            min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=["Cs"]
        )
    )
)
@settings(max_examples=100)
def test_property_values_round_trip_through_escaping(value: str) -> None:
    text = render_properties({"some.key": value})
    assert text.isascii()
    assert parse_properties(text) == {"some.key": value}


@pytest.mark.parametrize(
    ("key", "value"), [("bad key", "v"), ("a=b", "v"), ("k", "a\nb=c"), ("k", "\ud800")]
)
def test_injection_through_keys_or_values_is_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError):
        render_properties({key: value})


# -- java, mvn, jar cache ------------------------------------------------------------------


def _fake_mvn(tmp_path: Path, *, fail: bool = False) -> tuple[Path, Path]:
    """An executable standing in for mvn: counts calls, writes two jars (or fails)."""
    calls = tmp_path / "mvn-calls"
    script = tmp_path / "mvn"
    body = (
        "echo 'resolution failed: boom' >&2; exit 7"
        if fail
        else 'for a in "$@"; do case $a in -DoutputDirectory=*) out=${a#*=};; esac; done\n'
        'touch "$out/a.jar" "$out/b.jar"'
    )
    script.write_text(f'#!/bin/sh\necho x >> "{calls}"\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, calls


def test_jars_are_fetched_once_then_served_from_cache(tmp_path: Path) -> None:
    mvn, calls = _fake_mvn(tmp_path)
    libs = tmp_path / "cache" / "libs"
    assert resolve_jars(default_resources_dir(), libs, mvn) == libs
    assert resolve_jars(default_resources_dir(), libs, mvn) == libs
    assert calls.read_text().count("x") == 1
    assert (libs / MARKER_NAME).read_text().split() == ["a.jar", "b.jar"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["libs"]


def test_cache_missing_a_listed_jar_is_incomplete(tmp_path: Path) -> None:
    mvn, calls = _fake_mvn(tmp_path)
    libs = tmp_path / "libs"
    resolve_jars(default_resources_dir(), libs, mvn)
    (libs / "a.jar").unlink()
    assert not cache_is_complete(libs)
    resolve_jars(default_resources_dir(), libs, mvn)
    assert calls.read_text().count("x") == 2
    assert cache_is_complete(libs)


def test_failed_mvn_raises_with_its_output_and_leaves_no_cache(tmp_path: Path) -> None:
    mvn, _ = _fake_mvn(tmp_path, fail=True)
    libs = tmp_path / "cache" / "libs"
    with pytest.raises(BrokerLaunchError, match=r"(?s)exited 7.*boom"):
        resolve_jars(default_resources_dir(), libs, mvn)
    assert list((tmp_path / "cache").iterdir()) == []


def test_cache_dir_default_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAM_TRAINER_KAFKA_CACHE", raising=False)
    assert default_cache_dir("9.9").parts[-3:] == ("stream-trainer", "kafka-9.9", "libs")
    monkeypatch.setenv("STREAM_TRAINER_KAFKA_CACHE", "/elsewhere")
    assert default_cache_dir("9.9") == Path("/elsewhere")


def test_kafka_version_comes_from_the_pom() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", kafka_version(default_resources_dir()))


def test_pom_and_log4j_config_ship_as_package_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(jars.RESOURCES_ENV, raising=False)
    resources = default_resources_dir()
    assert resources == Path(jars.__file__).parent / "resources"  # inside the package
    assert all((resources / name).is_file() for name in RESOURCE_FILES)
    monkeypatch.setenv(jars.RESOURCES_ENV, "/elsewhere")
    assert default_resources_dir() == Path("/elsewhere")


def test_zipped_package_data_is_unpacked_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in RESOURCE_FILES:
            zipped.writestr(f"resources/{name}", f"contents of {name}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    unpacked = jars._unpacked(zipfile.Path(archive, "resources/"))
    assert unpacked.is_relative_to(tmp_path / "home" / ".cache")
    assert [(unpacked / n).read_text() for n in RESOURCE_FILES] == [
        f"contents of {n}" for n in RESOURCE_FILES
    ]
    assert jars._unpacked(zipfile.Path(archive, "resources/")) == unpacked  # idempotent


def test_java_is_taken_from_java_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    assert find_java() == java


def test_missing_java_is_a_clear_launch_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(BrokerLaunchError, match="JAVA_HOME"):
        find_java()
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerLaunchError, match="no `java` on PATH"):
        find_java()


def test_start_without_java_fails_and_close_removes_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    broker = LocalKafkaBroker(ports=(1, 2))
    with pytest.raises(BrokerLaunchError):
        broker.start()
    assert broker.data_dir.is_dir()
    broker.close()
    assert not broker.data_dir.exists()
    with pytest.raises(BrokerLaunchError, match="closed"):
        broker.start()


def test_given_data_dir_is_kept_by_close(tmp_path: Path) -> None:
    broker = LocalKafkaBroker(data_dir=tmp_path, ports=(1, 2))
    assert broker.bootstrap == "127.0.0.1:1"
    assert broker.cluster_id is None
    broker.close()
    assert tmp_path.is_dir()


def test_parent_death_signal_only_from_the_main_thread() -> None:
    command = ["java", "x"]
    wrapped = _with_parent_death_signal(command)
    assert wrapped[-2:] == command
    assert wrapped == command or wrapped[1:4] == ["--pdeathsig", "KILL", "--"]
    result: list[list[str]] = []
    worker = threading.Thread(target=lambda: result.append(_with_parent_death_signal(command)))
    worker.start()
    worker.join()
    assert result == [command]


# -- probe ---------------------------------------------------------------------------------


def _kafka_string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _metadata_response(broker_ids: list[int], cluster_id: str | None, correlation: int) -> bytes:
    brokers = b"".join(
        struct.pack(">i", node) + _kafka_string("h") + struct.pack(">i", 1) + _kafka_string(None)
        for node in broker_ids
    )
    head = struct.pack(">iii", correlation, 0, len(broker_ids))
    return head + brokers + _kafka_string(cluster_id) + struct.pack(">ii", 1, 0)


@given(
    broker_ids=st.lists(st.integers(min_value=0, max_value=2**31 - 1), max_size=5),
    cluster_id=st.none() | st.text(max_size=30),
)
@settings(max_examples=50)
def test_metadata_response_decodes(broker_ids: list[int], cluster_id: str | None) -> None:
    correlation = struct.unpack_from(">i", encode_metadata_request(), 8)[0]
    info = decode_metadata_response(_metadata_response(broker_ids, cluster_id, correlation))
    assert info.broker_ids == tuple(broker_ids)
    assert info.cluster_id == cluster_id
    assert info.controller_id == 1


def test_metadata_request_is_v4_with_correct_size_prefix() -> None:
    request = encode_metadata_request()
    size, api_key, version = struct.unpack_from(">ihh", request)
    assert (size, api_key, version) == (len(request) - 4, 3, 4)


def test_wrong_correlation_id_is_rejected() -> None:
    with pytest.raises(KafkaError, match="correlation"):
        decode_metadata_response(_metadata_response([1], "c", 999))


def test_probe_of_closed_port_is_retriable_error() -> None:
    (port,) = choose_free_ports(1)
    with pytest.raises(KafkaError) as info:
        fetch_cluster_info("127.0.0.1", port, timeout=1.0)
    assert info.value.retriable


# -- detached-broker state -----------------------------------------------------------------


def _state(pid: int, data_dir: str) -> daemon.BrokerState:
    return daemon.BrokerState(pid, "127.0.0.1", 1, 2, data_dir, False, "cid")


def test_state_file_round_trips_and_garbage_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    assert daemon.read_state(path) is None
    state = _state(123, "/d")
    daemon.write_state(path, state)
    assert daemon.read_state(path) == state
    path.write_text("{not json")
    with pytest.raises(BrokerLaunchError, match="unreadable"):
        daemon.read_state(path)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="identity check reads /proc")
def test_process_alive_checks_identity_and_sees_death(tmp_path: Path) -> None:
    marker = str(tmp_path / "data-dir-marker")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        assert daemon.process_alive(_state(child.pid, marker))
        assert not daemon.process_alive(_state(child.pid, str(tmp_path / "other")))
        assert not daemon.process_alive(_state(os.getpid(), marker))
    finally:
        child.kill()
        child.wait()
    assert not daemon.process_alive(_state(child.pid, marker))


def test_status_without_state_says_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert daemon.main(["--state-file", str(tmp_path / "s.json"), "status"]) == 3
    assert capsys.readouterr().out.strip() == "not running"
    assert daemon.main(["--state-file", str(tmp_path / "s.json"), "stop"]) == 0
    assert capsys.readouterr().out.strip() == "not running"
