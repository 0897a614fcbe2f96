"""A real single-node Kafka (KRaft, broker+controller) run from Maven Central jars.

For tests and the demo on machines without Docker::

    with LocalKafkaBroker() as broker:
        use(broker.bootstrap)       # "127.0.0.1:<port>"
        broker.restart()            # same data dir, same ports: committed data survives

`scripts/kafka-local start|stop|status` (or ``python -m stream_trainer.dev.broker``) runs
one detached; `ensure_local_broker()` returns its address, starting it if needed.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from stream_trainer.dev.broker.config import (
    BrokerSpec,
    Listener,
    choose_free_ports,
    new_cluster_id,
    parse_properties,
    render_server_properties,
)
from stream_trainer.dev.broker.jars import (
    classpath,
    default_cache_dir,
    default_resources_dir,
    find_java,
    kafka_version,
    resolve_jars,
)
from stream_trainer.dev.broker.probe import fetch_cluster_info
from stream_trainer.errors import BrokerLaunchError, KafkaError

__all__ = ["BrokerLaunchError", "Listener", "LocalKafkaBroker", "ensure_local_broker"]

_FORMAT_TIMEOUT_S = 120.0
_PROBE_INTERVAL_S = 0.1
_LOG_TAIL_CHARS = 4000


@dataclass
class _Resources:
    """What the safety-net finalizer must release; shared with the broker object."""

    process: subprocess.Popen[bytes] | None = None
    owned_dir: Path | None = None


def _release(resources: _Resources) -> None:
    """Finalizer and atexit hook: a broker must never outlive its owner."""
    if resources.process is not None:
        _terminate(resources.process, timeout=10.0)
        resources.process = None
    if resources.owned_dir is not None:
        shutil.rmtree(resources.owned_dir, ignore_errors=True)
        resources.owned_dir = None


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LocalKafkaBroker:
    """One Kafka broker process on loopback; restartable on the same data and ports."""

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        ports: tuple[int, int] | None = None,
        extra_listeners: Sequence[Listener] = (),
        overrides: Mapping[str, str] | None = None,
        heap: str = "512m",
        startup_timeout: float = 120.0,
        resources_dir: Path | None = None,
        cache_dir: Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        """`ports` is (broker, controller), chosen free now when omitted; `data_dir`
        defaults to a temp dir that `close()` deletes (a given one is kept).
        `die_with_parent=False` lets the broker outlive this process (the CLI's detach)."""
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, _release, self._resources)
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="stream-trainer-kafka-"))
            self._resources.owned_dir = data_dir
        self.data_dir = data_dir.resolve()
        broker_port, controller_port = ports if ports is not None else choose_free_ports(2, host)
        self.spec = BrokerSpec(
            host=host,
            broker_port=broker_port,
            controller_port=controller_port,
            log_dir=self.data_dir / "logs",
            extra_listeners=tuple(extra_listeners),
            overrides=dict(overrides or {}),
        )
        self._heap = heap
        self._startup_timeout = startup_timeout
        self._resources_dir = resources_dir or default_resources_dir()
        self._cache_dir = cache_dir
        self._die_with_parent = die_with_parent
        self._closed = False

    # -- public state ------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """`host:port` of the PLAINTEXT listener, stable across restarts."""
        return self.spec.bootstrap

    @property
    def pid(self) -> int | None:
        process = self._resources.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def is_running(self) -> bool:
        return self.pid is not None

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def cluster_id(self) -> str | None:
        """The id the data dir was formatted with, or None before the first start."""
        meta = self.spec.log_dir / "meta.properties"
        if not meta.is_file():
            return None
        return parse_properties(meta.read_text(encoding="latin-1")).get("cluster.id")

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> str:
        """Start (formatting the data dir on first use), wait until it serves; bootstrap."""
        if self._closed:
            raise BrokerLaunchError("this LocalKafkaBroker was closed")
        if self.is_running:
            return self.bootstrap
        java = find_java()
        libs = self._resolve_libs()
        self.spec.log_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(render_server_properties(self.spec), encoding="ascii")
        cluster_id = self.cluster_id or self._format(java, libs)
        self._resources.process = self._spawn(java, libs)
        try:
            self._wait_ready(cluster_id)
        except BaseException:
            self.kill()
            raise
        return self.bootstrap

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM, SIGKILL after `timeout` s); the data dir is kept."""
        process = self._resources.process
        if process is not None:
            _terminate(process, timeout)
            self._resources.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would; the next `start()` recovers the logs."""
        process = self._resources.process
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            self._resources.process = None

    def restart(self, timeout: float = 30.0) -> str:
        self.stop(timeout)
        return self.start()

    def close(self) -> None:
        """Stop and delete the data dir if this object created it. Idempotent."""
        self._closed = True
        self._finalizer()

    def detach(self) -> int:
        """Leave the running broker alone from now on (no finalizer); returns its pid."""
        pid = self.pid
        if pid is None:
            raise BrokerLaunchError("detach() needs a running broker")
        self._resources.process = None
        self._resources.owned_dir = None
        self._finalizer.detach()
        self._closed = True
        return pid

    def __enter__(self) -> LocalKafkaBroker:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _resolve_libs(self) -> Path:
        libs = self._cache_dir or default_cache_dir(kafka_version(self._resources_dir))
        return resolve_jars(self._resources_dir, libs)

    def _jvm_command(self, java: Path, libs: Path, main_class: str) -> list[str]:
        return [
            str(java),
            f"-Xmx{self._heap}",
            # C1 only and serial GC start the JVM markedly faster on a small, busy machine;
            # a test broker never runs long enough to profit from C2.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.data_dir}",
            f"-Dlog4j2.configurationFile={self._resources_dir / 'log4j2.properties'}",
            "-cp",
            classpath(libs),
            main_class,
        ]

    def _format(self, java: Path, libs: Path) -> str:
        cluster_id = new_cluster_id()
        command = self._jvm_command(java, libs, "kafka.tools.StorageTool")
        command += ["format", "-t", cluster_id, "-c", str(self.properties_file)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=_FORMAT_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerLaunchError(f"formatting {self.spec.log_dir} failed: {exc}") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-_LOG_TAIL_CHARS:]
            raise BrokerLaunchError(f"kafka-storage format exited {done.returncode}:\n{output}")
        return cluster_id

    def _spawn(self, java: Path, libs: Path) -> subprocess.Popen[bytes]:
        command = [*self._jvm_command(java, libs, "kafka.Kafka"), str(self.properties_file)]
        command = _with_parent_death_signal(command) if self._die_with_parent else command
        console = (self.data_dir / "console.log").open("ab")
        try:
            # A new session: a terminal's Ctrl-C reaches the owner, which stops the broker
            # in order, instead of killing the JVM mid-write.
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        except OSError as exc:
            raise BrokerLaunchError(f"cannot start {java}: {exc}") from exc
        finally:
            console.close()

    def _wait_ready(self, cluster_id: str) -> None:
        deadline = time.monotonic() + self._startup_timeout
        process = self._resources.process
        assert process is not None
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerLaunchError(
                    f"Kafka exited with status {process.returncode} during startup"
                    f"\n{self._log_tail()}"
                )
            try:
                info = fetch_cluster_info(self.spec.host, self.spec.broker_port, timeout=2.0)
            except KafkaError as exc:
                last_error = str(exc)
            else:
                if info.cluster_id == cluster_id and self.spec.node_id in info.broker_ids:
                    return
                last_error = f"not ready or not ours: {info}"
            time.sleep(_PROBE_INTERVAL_S)
        raise BrokerLaunchError(
            f"Kafka did not serve {self.bootstrap} within {self._startup_timeout:.0f} s "
            f"({last_error})\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        parts = []
        for path in (self.data_dir / "console.log", self.log_file):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            parts.append(f"--- tail of {path} ---\n{text[-_LOG_TAIL_CHARS:]}")
        return "\n".join(parts) or "(no log written)"


def _with_parent_death_signal(command: list[str]) -> list[str]:
    """Prefix `setpriv --pdeathsig KILL` so the JVM dies with its parent even on SIGKILL.

    Linux delivers the signal when the *thread* that forked exits, so this is only safe
    from the main thread; elsewhere the finalizer/atexit net alone applies.
    """
    setpriv = shutil.which("setpriv")
    on_main = threading.current_thread() is threading.main_thread()
    if setpriv is None or not sys.platform.startswith("linux") or not on_main:
        return command
    return [setpriv, "--pdeathsig", "KILL", "--", *command]


def ensure_local_broker(state_file: Path | None = None) -> str:
    """Bootstrap address of the detached local broker, starting one if none answers."""
    from stream_trainer.dev.broker.daemon import ensure_running

    return ensure_running(state_file)
