"""Pure logic for the local broker: port choice, cluster ids, server.properties rendering.

Nothing here starts a process, so all of it is unit-tested without Java.
"""

from __future__ import annotations

import base64
import random
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stream_trainer.errors import ConfigError

# Settings that make a one-node cluster usable by transactional producers and consumer
# groups: every internal topic must fit on one broker, and small partition counts keep
# startup and the first coordinator lookup fast.
BASE_SETTINGS: Mapping[str, str] = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "5",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "5",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "auto.create.topics.enable": "false",
    # The default 128 MiB dedupe buffer would take a quarter of the 512 MiB heap.
    "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    "num.recovery.threads.per.data.dir": "1",
    "num.network.threads": "2",
    # Restarts are part of the tests: a single voter can elect itself at once, and after a
    # SIGKILL the new incarnation must not wait out the dead one's 9 s default session.
    "controller.quorum.election.timeout.ms": "200",
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "3000",
}

_KEY_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_LISTENER_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PROTOCOLS = frozenset({"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"})
_RESERVED_NAMES = frozenset({"PLAINTEXT", "CONTROLLER"})


@dataclass(frozen=True)
class Listener:
    """An additional client listener, e.g. ``Listener("SASL_SSL", 19094, "SASL_SSL")``.

    Its security settings (JAAS, keystores) go in `BrokerSpec.overrides` under
    ``listener.name.<name lower-case>.*``.
    """

    name: str
    port: int
    protocol: str = "PLAINTEXT"


@dataclass(frozen=True)
class BrokerSpec:
    """Everything that determines a single-node combined broker+controller's config."""

    host: str
    broker_port: int
    controller_port: int
    log_dir: Path
    node_id: int = 1
    extra_listeners: tuple[Listener, ...] = ()
    overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.broker_port}"


def new_cluster_id(rng: random.Random | None = None) -> str:
    """A Kafka cluster id: 16 random bytes as unpadded base64url (22 characters).

    Ids starting with '-' are redrawn, as Kafka's own Uuid.randomUuid does, because the
    storage tool's argument parser would read them as an option.
    """
    source = rng if rng is not None else random.SystemRandom()
    while True:
        raw = source.getrandbits(128).to_bytes(16, "big")
        text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        if raw != bytes(16) and not text.startswith("-"):
            return text


def choose_free_ports(count: int, host: str = "127.0.0.1") -> tuple[int, ...]:
    """Ask the kernel for `count` distinct free ports on `host`.

    All sockets stay bound until every port is known, so the ports are distinct; they are
    released before returning, so another process could take one in between (rare on
    loopback, and the broker's start then fails loudly rather than misbehaving).
    """
    if count < 1:
        raise ConfigError(f"port count must be >= 1, got {count}")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return tuple(int(sock.getsockname()[1]) for sock in sockets)
    except OSError as exc:
        raise ConfigError(f"cannot bind a free port on {host}: {exc}") from exc
    finally:
        for sock in sockets:
            sock.close()


def server_settings(spec: BrokerSpec) -> dict[str, str]:
    """The full broker configuration for `spec`, overrides applied last."""
    _validate_spec(spec)
    listeners = [
        f"PLAINTEXT://{spec.host}:{spec.broker_port}",
        f"CONTROLLER://{spec.host}:{spec.controller_port}",
    ]
    advertised = [f"PLAINTEXT://{spec.host}:{spec.broker_port}"]
    protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    for extra in spec.extra_listeners:
        listeners.append(f"{extra.name}://{spec.host}:{extra.port}")
        advertised.append(f"{extra.name}://{spec.host}:{extra.port}")
        protocol_map.append(f"{extra.name}:{extra.protocol}")
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(spec.node_id),
        # A static voter set: the storage tool then needs no --standalone/--initial-controllers.
        "controller.quorum.voters": f"{spec.node_id}@{spec.host}:{spec.controller_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(protocol_map),
        "log.dirs": str(spec.log_dir),
        **BASE_SETTINGS,
    }
    settings.update(spec.overrides)
    return settings


def render_properties(settings: Mapping[str, str]) -> str:
    """Java .properties text; keys are checked, values escaped for `Properties.load`."""
    lines = ["# Generated by stream_trainer.dev.broker.local_broker; edits are overwritten."]
    for key, value in settings.items():
        if not _KEY_RE.match(key):
            raise ConfigError(f"invalid broker setting name {key!r}")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise ConfigError(f"broker setting {key} has a control character in its value")
        if not _encodable(value):
            raise ConfigError(f"broker setting {key} has a lone surrogate in its value")
        lines.append(f"{key}={_escape_value(value)}")
    return "\n".join(lines) + "\n"


def parse_properties(text: str) -> dict[str, str]:
    """Inverse of `render_properties` for the subset it writes (used by tests and status)."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        result[key] = _unescape_value(value)
    return result


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escape_value(value: str) -> str:
    # Properties.load reads ISO-8859-1, treats backslash as an escape and strips leading
    # blanks: so backslash, non-ASCII and a leading space are written as escapes.
    out: list[str] = []
    for index, ch in enumerate(value):
        if ch == "\\":
            out.append("\\\\")
        elif ch == " " and index == 0:
            out.append("\\ ")
        elif ord(ch) > 0x7E:
            utf16 = ch.encode("utf-16-be")
            units = [int.from_bytes(utf16[i : i + 2], "big") for i in range(0, len(utf16), 2)]
            out.extend(f"\\u{unit:04x}" for unit in units)
        else:
            out.append(ch)
    return "".join(out)


def _unescape_value(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        escaped = match.group(1)
        if len(escaped) == 5:
            return chr(int(escaped[1:], 16))
        return escaped

    units = re.sub(r"\\(u[0-9a-fA-F]{4}|.)", replace, text)
    # Astral characters were written as surrogate pairs; join them back.
    return units.encode("utf-16-be", "surrogatepass").decode("utf-16-be")


def render_server_properties(spec: BrokerSpec) -> str:
    return render_properties(server_settings(spec))


def _validate_spec(spec: BrokerSpec) -> None:
    ports = [spec.broker_port, spec.controller_port, *(x.port for x in spec.extra_listeners)]
    for port in ports:
        if not 1 <= port <= 65535:
            raise ConfigError(f"port {port} is out of range 1..65535")
    if len(set(ports)) != len(ports):
        raise ConfigError(f"listener ports must be distinct, got {ports}")
    names = [x.name for x in spec.extra_listeners]
    for extra in spec.extra_listeners:
        if not _LISTENER_NAME_RE.match(extra.name) or extra.name in _RESERVED_NAMES:
            raise ConfigError(f"invalid or reserved listener name {extra.name!r}")
        if extra.protocol not in _PROTOCOLS:
            raise ConfigError(f"unknown security protocol {extra.protocol!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"listener names must be distinct, got {names}")
    if spec.node_id < 0:
        raise ConfigError(f"node id must be >= 0, got {spec.node_id}")
