"""OpsServer over real loopback sockets: routes, probes, bad input and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from stream_trainer.ops import OpsServer, TrainerMetrics

Response = tuple[int, dict[str, str], bytes]


async def _raw(port: int, payload: bytes) -> Response:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("ascii").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


async def _get(port: int, path: str, *, method: str = "GET", accept: str | None = None) -> Response:
    extra = f"Accept: {accept}\r\n" if accept else ""
    request = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n"
    return await _raw(port, request.encode("ascii"))


class Flag:
    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


@pytest.fixture
def metrics() -> TrainerMetrics:
    m = TrainerMetrics()
    m.events_consumed.labels(topic="pulse.observations").inc(7)
    return m


@pytest.fixture
def flag() -> Flag:
    return Flag()


# Function-scoped loop: the project's default fixture loop is the session's, but the server
# must live on the loop the test runs on.
@pytest_asyncio.fixture(loop_scope="function")
async def server(metrics: TrainerMetrics, flag: Flag) -> AsyncIterator[OpsServer]:
    ops = OpsServer(
        metrics.registry,
        host="127.0.0.1",
        port=0,
        ready=flag,
        ready_reason=lambda: "restoring 3 partitions",
        request_timeout=0.2,
    )
    async with ops:
        yield ops


async def test_binds_an_ephemeral_port(server: OpsServer) -> None:
    assert server.port != 0
    assert server.host == "127.0.0.1"


async def test_healthz(server: OpsServer) -> None:
    status, headers, body = await _get(server.port, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["connection"] == "close"
    assert headers["content-length"] == str(len(body))


async def test_metrics_plain_text(server: OpsServer) -> None:
    status, headers, body = await _get(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    (sample,) = families["stream_trainer_events_consumed"].samples[:1]
    assert sample.labels == {"topic": "pulse.observations"}
    assert sample.value == 7


async def test_metrics_openmetrics_when_asked(server: OpsServer) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, headers, body = await _get(server.port, "/metrics", accept=accept)
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


async def test_readyz_follows_the_callable(server: OpsServer, flag: Flag) -> None:
    status, _, body = await _get(server.port, "/readyz")
    assert (status, body) == (503, b"restoring 3 partitions\n")
    flag.value = True
    status, _, body = await _get(server.port, "/readyz")
    assert (status, body) == (200, b"ready\n")


async def test_readyz_defaults_to_ready(metrics: TrainerMetrics) -> None:
    async with OpsServer(metrics.registry, host="127.0.0.1", port=0) as ops:
        status, _, _ = await _get(ops.port, "/readyz")
    assert status == 200


async def test_readyz_reports_a_failing_check(metrics: TrainerMetrics) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    async with OpsServer(metrics.registry, host="127.0.0.1", port=0, ready=broken) as ops:
        status, _, body = await _get(ops.port, "/readyz")
        assert status == 503
        assert b"RuntimeError" in body
        assert (await _get(ops.port, "/healthz"))[0] == 200


async def test_unknown_path_is_404_and_query_is_ignored(server: OpsServer) -> None:
    assert (await _get(server.port, "/nope"))[0] == 404
    assert (await _get(server.port, "/healthz?verbose=1"))[0] == 200


async def test_head_has_headers_but_no_body(server: OpsServer) -> None:
    status, headers, body = await _get(server.port, "/healthz", method="HEAD")
    assert status == 200
    assert headers["content-length"] == "3"
    assert body == b""


async def test_other_methods_are_405(server: OpsServer) -> None:
    assert (await _get(server.port, "/metrics", method="POST"))[0] == 405


@pytest.mark.parametrize(
    "payload",
    [
        b"garbage\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno-colon-here\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",
    ],
)
async def test_bad_requests_get_400_and_the_server_survives(
    server: OpsServer, payload: bytes
) -> None:
    assert (await _raw(server.port, payload))[0] == 400
    assert (await _get(server.port, "/healthz"))[0] == 200


async def test_truncated_request_gets_400(server: OpsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x")
    writer.write_eof()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert data.startswith(b"HTTP/1.1 400 ")


async def test_idle_client_times_out_with_408(server: OpsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert data.startswith(b"HTTP/1.1 408 ")


async def test_client_that_closes_at_once_does_not_break_the_server(server: OpsServer) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.close()
    await writer.wait_closed()
    assert (await _get(server.port, "/healthz"))[0] == 200


async def test_stop_cancels_in_flight_clients(metrics: TrainerMetrics) -> None:
    ops = OpsServer(metrics.registry, host="127.0.0.1", port=0, request_timeout=3600)
    await ops.start()
    port = ops.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # never finished: the handler waits
    await writer.drain()
    for _ in range(1000):  # bounded: the server registers the client within a few steps
        if ops._clients:
            break
        await asyncio.sleep(0.001)
    assert ops._clients
    await ops.stop()
    assert not ops._clients
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await ops.stop()  # idempotent


async def test_double_start_is_refused(server: OpsServer) -> None:
    with pytest.raises(RuntimeError):
        await server.start()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(payload=st.binary(max_size=300))
async def test_arbitrary_bytes_never_kill_the_server(server: OpsServer, payload: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(payload)
    writer.write_eof()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert data.startswith(b"HTTP/1.1 ")
    assert (await _get(server.port, "/healthz"))[0] == 200
