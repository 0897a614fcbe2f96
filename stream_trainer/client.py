"""Publishers that Pulse services use to send observations and feedback to the trainer.

Each event is validated exactly as the trainer will decode it (encode, then the project's
own decoder), so an invalid event raises `DecodeError` (or `EncodeError` when it cannot be
serialised at all) here instead of landing in the trainer's dead-letter topic. Sends are
not awaited one by one: the producer batches them (``linger_ms``) and delivery failures
surface, aiokafka style, on the next `publish` or on `flush` / close.

    async with FeedbackPublisher("kafka:9092") as publisher:
        await publisher.publish(Feedback(event_id="f-1", rule_id="rule.momentum.spx",
                                         ts=datetime.now(UTC), success=True))
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.aio import StartStop
from stream_trainer.errors import EncodeError, KafkaError
from stream_trainer.events import (
    DEFAULT_MAX_EVENT_BYTES,
    Feedback,
    Observation,
    decode_feedback,
    decode_observation,
    encode,
)
from stream_trainer.kafka.clients import PRODUCER_DEFAULTS

E = TypeVar("E", Observation, Feedback)


class Producer(Protocol):
    """The part of `AIOKafkaProducer` the publishers use (tests substitute a fake)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def flush(self) -> None: ...
    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[Any]: ...


class _Publisher(StartStop, Generic[E]):
    """Validate, key and send events of one type to one topic; see the module docstring."""

    default_topic: str
    # Set by each subclass (as staticmethods): the event type's decoder and its key.
    _decode: Callable[..., E]
    _key_of: Callable[[E], str]

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str | None = None,
        linger_ms: int = 5,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        client_id: str | None = None,
        producer: Producer | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic or self.default_topic
        self._max_bytes = max_event_bytes
        # The service's producer settings (acks=all, idempotence, batch sizes), with ours.
        self._producer_kwargs: dict[str, Any] = {
            **PRODUCER_DEFAULTS,
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id or "stream-trainer-client",
            "linger_ms": linger_ms,
            # e.g. stream_trainer.kafka.clients.client_options(settings) minus bootstrap, or
            # security_protocol / sasl_* / ssl_context as aiokafka names them.
            **(security or {}),
        }
        self._injected = producer
        self._producer: Producer | None = None
        self._pending: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        if self._producer is not None:
            raise RuntimeError("publisher already started")
        # Built here, not in __init__: aiokafka binds its producer to the running loop.
        producer = self._injected or AIOKafkaProducer(**self._producer_kwargs)
        try:
            await producer.start()
        except AioKafkaError as exc:
            await producer.stop()
            raise KafkaError(f"cannot start producer: {exc!r}", retriable=True) from exc
        self._producer = producer

    async def stop(self) -> None:
        """Flush what was published, then close the producer even if the flush failed."""
        if self._producer is None:
            return
        try:
            await self.flush()
        finally:
            producer, self._producer = self._producer, None
            await producer.stop()

    @property
    def pending(self) -> int:
        """Sends not yet known to be delivered."""
        return sum(1 for fut in self._pending if not fut.done())

    async def publish(self, event: E) -> None:
        """Validate and send one event; raises `DecodeError` or `EncodeError` (nothing
        sent) if invalid.

        Raises `KafkaError` for an earlier send that failed to deliver.
        """
        await self._send_all([self._validated(event)])

    async def publish_many(self, events: Iterable[E]) -> int:
        """Validate every event first, so one invalid event means none is sent."""
        records = [self._validated(event) for event in events]
        await self._send_all(records)
        return len(records)

    async def flush(self) -> None:
        """Wait until every send so far is delivered; raise `KafkaError` if any failed."""
        if self._producer is not None:
            try:
                await self._producer.flush()
            except AioKafkaError as exc:
                raise KafkaError(f"flush failed: {exc!r}", retriable=exc.retriable) from exc
        if self._pending:
            await asyncio.wait(self._pending)
        self._raise_failures()

    def _validated(self, event: E) -> tuple[bytes, bytes]:
        try:
            raw = encode(event)
        except (msgspec.EncodeError, TypeError, ValueError) as exc:
            raise EncodeError(f"cannot encode {type(event).__name__}: {exc}") from exc
        checked = self._decode(raw, max_bytes=self._max_bytes)
        return self._key_of(checked).encode("utf-8"), raw

    async def _send_all(self, records: list[tuple[bytes, bytes]]) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("publisher is not started")
        self._raise_failures()
        for key, value in records:
            try:
                future = await producer.send(self.topic, value=value, key=key)
            except AioKafkaError as exc:
                raise KafkaError(f"send failed: {exc!r}", retriable=exc.retriable) from exc
            self._pending.append(future)

    def _raise_failures(self) -> None:
        """Drop delivered sends; raise for the first failed one (each failure reported once)."""
        still_pending: list[asyncio.Future[Any]] = []
        failures: list[BaseException] = []
        for future in self._pending:
            if not future.done():
                still_pending.append(future)
            elif future.cancelled():
                failures.append(asyncio.CancelledError("send was cancelled"))
            elif (error := future.exception()) is not None:
                failures.append(error)
        self._pending = still_pending
        if failures:
            first = failures[0]
            retriable = bool(getattr(first, "retriable", False))
            message = f"{len(failures)} earlier send(s) to {self.topic} failed: {first!r}"
            raise KafkaError(message, retriable=retriable) from first


def _variable(event: Observation) -> str:
    return event.variable


def _rule_id(event: Feedback) -> str:
    return event.rule_id


class ObservationPublisher(_Publisher[Observation]):
    """Publishes `Observation`s keyed by variable (default topic ``pulse.observations``)."""

    default_topic = "pulse.observations"
    _decode = staticmethod(decode_observation)
    _key_of = staticmethod(_variable)


class FeedbackPublisher(_Publisher[Feedback]):
    """Publishes `Feedback` keyed by rule_id (default topic ``pulse.feedback``)."""

    default_topic = "pulse.feedback"
    _decode = staticmethod(decode_feedback)
    _key_of = staticmethod(_rule_id)
