"""The trainer's operational HTTP endpoints: /metrics, /healthz, /readyz and /v1 queries.

A deliberately tiny HTTP/1.1 server on `asyncio.start_server`: one request per connection
(`Connection: close`), GET and HEAD only, bounded request size and read time. It needs no
dependency beyond prometheus_client and shares the service's event loop, so /healthz
answering at all proves the loop is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from stream_trainer.aio import StartStop
from stream_trainer.ops.queries import Queries

log = logging.getLogger(__name__)

_MAX_HEADERS = 100
_MAX_LINE = 8192
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


class BadRequestError(Exception):
    """A request that cannot be parsed; answered with 400 and never propagated."""


class _Request:
    __slots__ = ("headers", "method", "path", "query")

    def __init__(self, method: str, target: str, headers: dict[str, str]) -> None:
        self.method = method
        self.path, _, self.query = target.partition("?")
        self.headers = headers


class _Response:
    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, body: bytes, content_type: str = _TEXT) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type


class OpsServer(StartStop):
    """Serves Prometheus metrics and health probes; owns its listening socket and clients.

    `ready` defaults to always-ready; the service passes a callable that is True once its
    partitions are assigned and restored. `ready_reason` explains a 503 in the body.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        host: str = "0.0.0.0",
        port: int = 9400,
        ready: Callable[[], bool] | None = None,
        ready_reason: Callable[[], str] | None = None,
        queries: Queries | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        self._queries = queries
        self._registry = registry
        self._host = host
        self._requested_port = port
        self._ready = ready
        self._ready_reason = ready_reason
        self._timeout = request_timeout
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port once started (resolves port 0), else the requested one."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("OpsServer already started")
        self._server = await asyncio.start_server(
            self._on_client, self._host, self._requested_port, limit=_MAX_LINE
        )
        log.info("ops HTTP server listening on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        """Stop listening, cancel in-flight clients and wait for all of them to finish."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio creates this task; registering it lets stop() cancel and await it.
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await self._serve_one(reader, writer)
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = False
        try:
            request = await asyncio.wait_for(_read_request(reader), self._timeout)
            head = request.method == "HEAD"
            response = await self._route(request)
        except TimeoutError:
            response = _Response(408, b"request timeout\n")
        except BadRequestError as exc:
            log.debug("bad ops HTTP request: %s", exc)
            response = _Response(400, f"bad request: {exc}\n".encode())
        except ConnectionError as exc:
            log.debug("ops HTTP client went away: %s", exc)
            return
        try:
            writer.write(_encode(response, head=head))
            await writer.drain()
        except ConnectionError as exc:
            log.debug("ops HTTP client went away before the response: %s", exc)

    async def _route(self, request: _Request) -> _Response:
        if request.method not in ("GET", "HEAD"):
            return _Response(405, b"method not allowed\n")
        if self._queries is not None and request.path.startswith("/v1/"):
            answer = await self._queries.answer(request.path, request.query)
            if answer is not None:
                return _Response(answer.status, answer.body, _JSON)
        if request.path == "/metrics":
            return self._metrics(request.headers.get("accept", ""))
        if request.path == "/healthz":
            return _Response(200, b"ok\n")
        if request.path == "/readyz":
            return self._readiness()
        return _Response(404, b"not found\n")

    def _metrics(self, accept: str) -> _Response:
        try:
            encoder, content_type = choose_encoder(accept)
            # A few kB with no per-entity labels: cheap enough to render on the loop.
            return _Response(200, encoder(self._registry), content_type)
        except Exception:
            log.exception("rendering /metrics failed")
            return _Response(500, b"metrics unavailable\n")

    def _readiness(self) -> _Response:
        if self._ready is None:
            return _Response(200, b"ready\n")
        try:
            if self._ready():
                return _Response(200, b"ready\n")
            reason = self._ready_reason() if self._ready_reason is not None else "not ready"
        except Exception as exc:
            log.exception("readiness check failed")
            reason = f"readiness check failed: {type(exc).__name__}"
        return _Response(503, f"{reason}\n".encode())


async def _read_request(reader: asyncio.StreamReader) -> _Request:
    method, path = _parse_request_line(await _read_line(reader))
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = await _read_line(reader)
        if not line:
            return _Request(method, path, headers)
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequestError("malformed header line")
        headers[name.strip().lower()] = value.strip()
    raise BadRequestError("too many headers")


async def _read_line(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        raise BadRequestError("connection closed mid-request") from exc
    except asyncio.LimitOverrunError as exc:
        raise BadRequestError("line too long") from exc
    try:
        return raw.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise BadRequestError("non-ASCII request head") from exc


def _parse_request_line(line: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise BadRequestError("malformed request line")
    method, target, _version = parts
    return method.upper(), target


def _encode(response: _Response, *, head: bool) -> bytes:
    reason = _REASONS.get(response.status, "Unknown")
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        "",
        "",
    ]
    payload = "\r\n".join(lines).encode("ascii")
    return payload if head else payload + response.body
