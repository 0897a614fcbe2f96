"""Test-only TLS material and Kafka security setup for a `LocalKafkaBroker`.

`make_tls` writes a throw-away CA and a broker certificate for 127.0.0.1/localhost with
``openssl`` (PKCS12 keystore for the JVM, PEM CA for Python clients); `secure_overrides`
is the broker configuration of a SASL_SSL listener accepting PLAIN (users in the JAAS
line) and SCRAM-SHA-256 (users created with `add_scram_user`, stored in the metadata log).
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stream_trainer.dev.broker.jars import (
    classpath,
    default_cache_dir,
    default_resources_dir,
    find_java,
    kafka_version,
    resolve_jars,
)

_TOOL_TIMEOUT_S = 120


@dataclass(frozen=True)
class TlsFiles:
    ca_pem: Path
    keystore: Path  # PKCS12: the broker's key and certificate chain
    keystore_password: str


def _openssl(directory: Path, *args: str) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed:\n{done.stderr}")


def make_tls(directory: Path) -> TlsFiles:
    """A CA and a CA-signed broker certificate valid for 127.0.0.1 and localhost."""
    password = secrets.token_hex(8)
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        directory,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=stream-trainer test CA",
    )
    _openssl(
        directory,
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        "-subj",
        "/CN=localhost",
    )
    _openssl(
        directory,
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.cnf",
        "-out",
        "broker.pem",
    )
    _openssl(
        directory,
        "pkcs12",
        "-export",
        "-in",
        "broker.pem",
        "-inkey",
        "broker.key",
        "-certfile",
        "ca.pem",
        "-name",
        "broker",
        "-out",
        "broker.p12",
        "-passout",
        f"pass:{password}",
    )
    return TlsFiles(directory / "ca.pem", directory / "broker.p12", password)


def secure_overrides(listener: str, tls: TlsFiles, plain_users: dict[str, str]) -> dict[str, str]:
    """Broker settings of a SASL_SSL listener named `listener` (PLAIN + SCRAM-SHA-256)."""
    prefix = f"listener.name.{listener.lower()}"
    users = " ".join(f'user_{name}="{password}"' for name, password in plain_users.items())
    return {
        f"{prefix}.ssl.keystore.location": str(tls.keystore),
        f"{prefix}.ssl.keystore.password": tls.keystore_password,
        f"{prefix}.ssl.keystore.type": "PKCS12",
        f"{prefix}.ssl.key.password": tls.keystore_password,
        f"{prefix}.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256",
        f"{prefix}.plain.sasl.jaas.config": (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
        ),
        f"{prefix}.scram-sha-256.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
    }


def add_scram_user(plaintext_bootstrap: str, name: str, password: str) -> None:
    """Create a SCRAM-SHA-256 user, as an operator would, with Kafka's ConfigCommand."""
    resources = default_resources_dir()
    libs = resolve_jars(resources, default_cache_dir(kafka_version(resources)))
    command = [
        str(find_java()),
        "-XX:TieredStopAtLevel=1",
        "-Xmx256m",
        "-cp",
        classpath(libs),
        "kafka.admin.ConfigCommand",
        "--bootstrap-server",
        plaintext_bootstrap,
        "--alter",
        "--entity-type",
        "users",
        "--entity-name",
        name,
        "--add-config",
        f"SCRAM-SHA-256=[iterations=4096,password={password}]",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ConfigCommand failed ({done.returncode}):\n{done.stdout}{done.stderr}")
