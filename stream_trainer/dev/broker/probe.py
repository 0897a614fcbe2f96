"""A dependency-free, synchronous readiness probe speaking the Kafka wire protocol.

The launcher must know the broker serves clients before returning, from code that may run
inside or outside an event loop; one Metadata request over a blocking socket does that.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from stream_trainer.errors import KafkaError

_METADATA_KEY = 3
# Metadata v4 is the oldest version Kafka 4.x still serves (KIP-896) and the last
# non-flexible one, so it needs no tagged-field encoding.
_METADATA_VERSION = 4
_CORRELATION_ID = 0x5354  # arbitrary, checked on the way back
_MAX_RESPONSE = 1 << 20


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str | None
    controller_id: int
    broker_ids: tuple[int, ...]


def encode_metadata_request(client_id: str = "stream-trainer-probe") -> bytes:
    """A size-prefixed Metadata v4 request asking for no topics, only the brokers."""
    client = client_id.encode("utf-8")
    header = struct.pack(">hhih", _METADATA_KEY, _METADATA_VERSION, _CORRELATION_ID, len(client))
    body = struct.pack(">i?", 0, False)  # empty topic list, no auto-creation
    payload = header + client + body
    return struct.pack(">i", len(payload)) + payload


def decode_metadata_response(payload: bytes) -> ClusterInfo:
    """Parse a Metadata v4 response (without its size prefix) up to the controller id."""
    reader = _Reader(payload)
    if reader.int32() != _CORRELATION_ID:
        raise KafkaError("probe: Metadata response has the wrong correlation id")
    reader.int32()  # throttle_time_ms
    broker_ids = []
    for _ in range(reader.int32()):
        broker_ids.append(reader.int32())
        reader.string()  # host
        reader.int32()  # port
        reader.string()  # rack
    cluster_id = reader.string()
    return ClusterInfo(cluster_id, reader.int32(), tuple(broker_ids))


def fetch_cluster_info(host: str, port: int, timeout: float) -> ClusterInfo:
    """One Metadata round trip; raises KafkaError(retriable=True) on any failure."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(encode_metadata_request())
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            if not 0 < size <= _MAX_RESPONSE:
                raise KafkaError(f"probe: implausible response size {size}", retriable=True)
            return decode_metadata_response(_recv_exactly(sock, size))
    except (OSError, struct.error) as exc:
        raise KafkaError(f"probe of {host}:{port} failed: {exc}", retriable=True) from exc


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks.extend(chunk)
    return bytes(chunks)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self._data, self._pos)
        self._pos += struct.calcsize(fmt)
        return int(value)

    def int32(self) -> int:
        return self._take(">i")

    def string(self) -> str | None:
        length = self._take(">h")
        if length < 0:
            return None
        end = self._pos + length
        if end > len(self._data):
            raise struct.error("string runs past the end of the response")
        text = self._data[self._pos : end].decode("utf-8")
        self._pos = end
        return text
