"""Locating Java and Maven, and resolving the broker's jars into a reusable cache."""

from __future__ import annotations

import importlib.resources
import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from importlib.resources.abc import Traversable
from pathlib import Path

from stream_trainer.errors import BrokerLaunchError

CACHE_ENV = "STREAM_TRAINER_KAFKA_CACHE"
RESOURCES_ENV = "STREAM_TRAINER_KAFKA_RESOURCES"
RESOURCE_FILES = ("pom.xml", "log4j2.properties")
MARKER_NAME = ".complete"
_MVN_TIMEOUT_S = 900.0
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def default_resources_dir() -> Path:
    """The dir of the broker's pom.xml and log4j2.properties: this package's ``resources/``.

    ``$STREAM_TRAINER_KAFKA_RESOURCES`` overrides it (e.g. to try another Kafka version).
    """
    override = os.environ.get(RESOURCES_ENV)
    if override:
        return Path(override)
    resources = importlib.resources.files("stream_trainer.dev.broker") / "resources"
    if isinstance(resources, Path):
        return resources
    return _unpacked(resources)


def _unpacked(resources: Traversable) -> Path:
    # Maven and log4j need real files: a zipped install gets a copy in the user's cache.
    target = Path.home() / ".cache" / "stream-trainer" / "broker-resources"
    target.mkdir(parents=True, exist_ok=True)
    for name in RESOURCE_FILES:
        data = (resources / name).read_bytes()
        path = target / name
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
    return target


def kafka_version(resources_dir: Path) -> str:
    """The `kafka.version` property of the resources' pom.xml."""
    pom = resources_dir / "pom.xml"
    try:
        root = ET.parse(pom).getroot()
    except (OSError, ET.ParseError) as exc:
        raise BrokerLaunchError(f"cannot read the broker's pom {pom}: {exc}") from exc
    node = root.find("m:properties/m:kafka.version", _POM_NS)
    if node is None or not (node.text or "").strip():
        raise BrokerLaunchError(f"{pom} has no <kafka.version> property")
    return (node.text or "").strip()


def default_cache_dir(version: str) -> Path:
    """`$STREAM_TRAINER_KAFKA_CACHE` or ``~/.cache/stream-trainer/kafka-<version>/libs``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    return Path.home() / ".cache" / "stream-trainer" / f"kafka-{version}" / "libs"


def find_java() -> Path:
    """`$JAVA_HOME/bin/java` when JAVA_HOME is set, else `java` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return candidate
        raise BrokerLaunchError(f"JAVA_HOME={java_home} has no executable bin/java")
    found = shutil.which("java")
    if found is None:
        raise BrokerLaunchError(
            "no `java` on PATH and JAVA_HOME unset: install a JDK >= 17 "
            "(e.g. `apt-get install openjdk-17-jre-headless`) to run the local Kafka broker"
        )
    return Path(found)


def find_mvn() -> Path:
    found = shutil.which("mvn")
    if found is None:
        raise BrokerLaunchError(
            "the Kafka jars are not cached and `mvn` is not on PATH to fetch them "
            "(e.g. `apt-get install maven`)"
        )
    return Path(found)


def cache_is_complete(libs: Path) -> bool:
    """True when a previous copy finished: the marker lists every jar and all exist."""
    marker = libs / MARKER_NAME
    try:
        names = marker.read_text(encoding="utf-8").split()
    except OSError:
        return False
    return bool(names) and all((libs / name).is_file() for name in names)


def resolve_jars(resources_dir: Path, libs: Path, mvn: Path | None = None) -> Path:
    """Return `libs`, filled with the broker's runtime jars (Maven is skipped when cached).

    Maven copies into a sibling temp dir that is renamed into place only when complete, so
    an interrupted or concurrent resolution never leaves a half-filled cache behind.
    """
    if cache_is_complete(libs):
        return libs
    mvn_path = mvn if mvn is not None else find_mvn()
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".libs-", dir=libs.parent))
    try:
        _copy_dependencies(mvn_path, resources_dir, staging)
        jars = sorted(p.name for p in staging.glob("*.jar"))
        if not jars:
            raise BrokerLaunchError(f"mvn copied no jars from {resources_dir / 'pom.xml'}")
        (staging / MARKER_NAME).write_text("\n".join(jars) + "\n", encoding="utf-8")
        _install(staging, libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def classpath(libs: Path) -> str:
    # A JVM wildcard entry: the jars' order does not matter for Kafka.
    return str(libs / "*")


def _copy_dependencies(mvn: Path, resources_dir: Path, out_dir: Path) -> None:
    command = [
        str(mvn),
        "-q",
        "-B",
        "-f",
        str(resources_dir / "pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={out_dir}",
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_MVN_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerLaunchError(f"running mvn failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise BrokerLaunchError(f"mvn exited {done.returncode} resolving Kafka jars:\n{tail}")


def _install(staging: Path, libs: Path) -> None:
    # A concurrent resolver may have won the race; its complete cache is as good as ours.
    if cache_is_complete(libs):
        return
    if libs.exists():
        shutil.rmtree(libs)
    try:
        staging.rename(libs)
    except OSError as exc:
        if not cache_is_complete(libs):
            raise BrokerLaunchError(f"cannot install Kafka jars into {libs}: {exc}") from exc
