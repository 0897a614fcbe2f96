"""The detached local broker: a JSON state file, start/stop/status, and the CLI."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from stream_trainer.dev.broker.local_broker import LocalKafkaBroker
from stream_trainer.dev.broker.probe import fetch_cluster_info
from stream_trainer.errors import BrokerLaunchError, KafkaError

STATE_ENV = "STREAM_TRAINER_KAFKA_STATE"
_POLL_S = 0.1


@dataclass(frozen=True)
class BrokerState:
    """What `start` records so a later process can find and stop the broker."""

    pid: int
    host: str
    broker_port: int
    controller_port: int
    data_dir: str
    owns_data_dir: bool
    cluster_id: str

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.broker_port}"


def default_state_file() -> Path:
    override = os.environ.get(STATE_ENV)
    if override:
        return Path(override)
    return Path.home() / ".cache" / "stream-trainer" / "local-broker.json"


def read_state(state_file: Path) -> BrokerState | None:
    try:
        raw = json.loads(state_file.read_text(encoding="utf-8"))
        return BrokerState(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise BrokerLaunchError(f"unreadable broker state file {state_file}: {exc}") from exc


def write_state(state_file: Path, state: BrokerState) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_name(state_file.name + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    tmp.replace(state_file)


def process_alive(state: BrokerState) -> bool:
    """True when `state.pid` is a live process running *this* broker (not a reused pid)."""
    _reap_if_child(state.pid)
    proc = Path("/proc") / str(state.pid)
    if not proc.exists():
        return _pid_exists(state.pid) if not Path("/proc/self").exists() else False
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and state.data_dir in cmdline


def answering(state: BrokerState, timeout: float = 2.0) -> bool:
    try:
        info = fetch_cluster_info(state.host, state.broker_port, timeout)
    except KafkaError:
        return False
    return info.cluster_id == state.cluster_id


def start_detached(state_file: Path, data_dir: Path | None = None) -> BrokerState:
    """Start a broker that outlives this process (or return the one already running)."""
    with _locked(state_file):
        current = read_state(state_file)
        if current is not None and process_alive(current) and answering(current):
            return current
        if current is not None:
            _stop_and_forget(state_file, current, timeout=30.0)
        owns = data_dir is None
        directory = Path(tempfile.mkdtemp(prefix="stream-trainer-kafka-")) if owns else data_dir
        assert directory is not None
        broker = LocalKafkaBroker(data_dir=directory, die_with_parent=False)
        broker.start()
        cluster_id = broker.cluster_id or ""
        state = BrokerState(
            pid=broker.detach(),
            host=broker.spec.host,
            broker_port=broker.spec.broker_port,
            controller_port=broker.spec.controller_port,
            data_dir=str(broker.data_dir),
            owns_data_dir=owns,
            cluster_id=cluster_id,
        )
        write_state(state_file, state)
        return state


def stop_detached(state_file: Path, timeout: float = 30.0) -> BrokerState | None:
    """Stop the recorded broker; returns its state, or None when none was recorded."""
    with _locked(state_file):
        state = read_state(state_file)
        if state is not None:
            _stop_and_forget(state_file, state, timeout)
        return state


def ensure_running(state_file: Path | None = None) -> str:
    return start_detached(state_file or default_state_file()).bootstrap


def _stop_and_forget(state_file: Path, state: BrokerState, timeout: float) -> None:
    if process_alive(state):
        os.kill(state.pid, signal.SIGTERM)
        if not _wait_gone(state, timeout):
            os.kill(state.pid, signal.SIGKILL)
            _wait_gone(state, timeout)
    if state.owns_data_dir:
        shutil.rmtree(state.data_dir, ignore_errors=True)
    state_file.unlink(missing_ok=True)


def _wait_gone(state: BrokerState, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(state):
            return True
        time.sleep(_POLL_S)
    return not process_alive(state)


def _reap_if_child(pid: int) -> None:
    # A broker started by this very process (ensure_running, then stop) becomes our zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(state_file: Path) -> Iterator[None]:
    """Serialise concurrent CLI/ensure calls so only one broker gets started."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    with open(state_file.with_name(state_file.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def main(argv: Sequence[str] | None = None) -> int:
    """`start|stop|status`; exit 0 on success, 3 for `status` when not running."""
    parser = argparse.ArgumentParser(
        prog="kafka-local", description="Run a local single-node Kafka broker."
    )
    parser.add_argument("--state-file", type=Path, default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start detached (no-op if running); print bootstrap")
    start.add_argument("--data-dir", type=Path, default=None, help="kept at stop")
    sub.add_parser("stop", help="stop the recorded broker and delete its temp data")
    sub.add_parser("status", help="say whether it runs, and where")
    args = parser.parse_args(argv)
    state_file: Path = args.state_file or default_state_file()
    try:
        return _dispatch(args.command, state_file, args)
    except BrokerLaunchError as exc:
        print(f"kafka-local: {exc}", file=sys.stderr)
        return 1


def _dispatch(command: str, state_file: Path, args: argparse.Namespace) -> int:
    if command == "start":
        print(start_detached(state_file, args.data_dir).bootstrap)
        return 0
    if command == "stop":
        print("stopped" if stop_detached(state_file) is not None else "not running")
        return 0
    return _print_status(state_file)


def _print_status(state_file: Path) -> int:
    state = read_state(state_file)
    if state is None:
        print("not running")
        return 3
    if process_alive(state) and answering(state):
        print(f"running {state.bootstrap} (pid {state.pid}, data {state.data_dir})")
        return 0
    print(f"not running (stale state in {state_file})")
    return 3
