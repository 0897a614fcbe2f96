"""Live views: the latest version per key of a compacted version topic, kept in memory.

A view reads every partition ``read_committed`` from the beginning, with manual assignment
and no consumer group (each service instance holds the whole table, like a Kafka Streams
GlobalKTable). It is ready once every partition reached the end offset taken at start;
after that, each change is an `Update`, for `updates()` subscribers and `on_update`.

The background fetch task belongs to the view (started on enter, cancelled and awaited on
exit). Transient Kafka errors (a broker restart, a leader change) are logged and retried
forever; any other error ends the task and is raised by the next call on the view, as
aiokafka does with its fetcher's errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Final, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.errors import KafkaTimeoutError

from stream_trainer.aio import StartStop, cancel_and_wait
from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.events import ModelVersion, RuleVersion
from stream_trainer.kafka import clients
from stream_trainer.kafka.clients import stop_consumer
from stream_trainer.views.codecs import MODELS, RULES, Codec
from stream_trainer.views.reader import Reader
from stream_trainer.views.table import TableStats, Update, VersionTable
from stream_trainer.views.updates import UpdateStream, ViewError

log = logging.getLogger(__name__)

T = TypeVar("T", RuleVersion, ModelVersion)
OnUpdate = Callable[[Update[T]], None]

RETRY_MIN_S: Final = 0.2
RETRY_MAX_S: Final = 5.0
DEFAULT_MAX_PENDING: Final = 100_000


def transient(exc: AioKafkaError) -> bool:
    """Worth retrying: aiokafka's retriable errors, and its timeouts (a broker that is
    restarting times requests out; aiokafka does not mark those retriable)."""
    return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)


class VersionView(StartStop, Generic[T]):
    """Base of `RuleView` / `ModelView`; see the module docstring."""

    codec: ClassVar[Codec[Any]]
    kind: ClassVar[str]

    def __init__(
        self,
        settings: Settings | str | None = None,
        *,
        topic: str | None = None,
        on_update: OnUpdate[T] | None = None,
        metadata_refresh_s: float = 30.0,
        max_pending_updates: int = DEFAULT_MAX_PENDING,
        consumer_options: Mapping[str, Any] | None = None,
        consumer_factory: Callable[..., AIOKafkaConsumer] = AIOKafkaConsumer,
    ) -> None:
        if isinstance(settings, str):
            settings = Settings(bootstrap_servers=settings)
        self.settings = settings or Settings()
        self.topic = topic or self._default_topic(self.settings)
        self._on_update: OnUpdate[T] | None = on_update
        self._max_pending = max_pending_updates
        self._consumer_kwargs = clients.consumer_options(
            self.settings,
            client_id=f"stream-trainer-{self.kind}-view",
            group_id=None,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            # Manual assignment never rebalances: this is how new partitions are noticed.
            metadata_max_age_ms=max(1, int(metadata_refresh_s * 1000)),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **(consumer_options or {}),
        )
        self._consumer_factory = consumer_factory
        self._table: VersionTable[T] = VersionTable(self.codec)
        self._subscribers: list[UpdateStream[T]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()  # set when ready, failed or stopped
        self._is_ready = False
        self._error: BaseException | None = None

    @staticmethod
    def _default_topic(settings: Settings) -> str:
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect and start following the topic (`async with` calls this)."""
        if self._task is not None:
            raise ViewError(f"{self.kind} view already started")
        consumer = self._consumer_factory(**self._consumer_kwargs)
        try:
            await consumer.start()
        except AioKafkaError as exc:
            await stop_consumer(consumer)
            raise KafkaError(
                f"{self.kind} view cannot connect to {self.settings.bootstrap_servers}: {exc!r}",
                retriable=transient(exc),
            ) from exc
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer), name=f"{self.kind}-view")

    async def stop(self) -> None:
        """Cancel and await the fetch task, close the consumer, end every update stream."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await stop_consumer(consumer)
        self._settled.set()
        for stream in self._subscribers:
            stream.end()
        self._subscribers.clear()

    # ------------------------------------------------------------------ reading

    async def ready(self) -> None:
        """Wait until caught up with the end offsets taken at start (raises if it failed)."""
        if self._task is None and not self._settled.is_set():
            raise ViewError(f"{self.kind} view not started: use `async with` or start()")
        await self._settled.wait()
        self._raise_if_failed()
        if not self._is_ready:
            raise ViewError(f"{self.kind} view stopped before it was ready")

    @property
    def is_ready(self) -> bool:
        return self._is_ready

    def get(self, key: str) -> T | None:
        """The latest version of `key`, or None if unknown (or removed by a tombstone)."""
        self._raise_if_failed()
        return self._table.get(key)

    def version_of(self, key: str) -> int | None:
        """The latest version number of `key` (cheaper than `get`)."""
        self._raise_if_failed()
        return self._table.version_of(key)

    def __len__(self) -> int:
        self._raise_if_failed()
        return len(self._table)

    def __iter__(self) -> Iterator[str]:
        self._raise_if_failed()
        return iter(self._table)

    def __contains__(self, key: object) -> bool:
        self._raise_if_failed()
        return key in self._table

    def updates(self, max_pending: int | None = None) -> UpdateStream[T]:
        """Changes after ready, in version order per key: ``async for key, version in ...``.

        `version` is None when a tombstone removed the key. Subscribed at once; use
        ``async with view.updates() as updates:`` to unsubscribe deterministically.
        """
        self._raise_if_failed()
        stream: UpdateStream[T] = UpdateStream(
            max_pending or self._max_pending, lambda: self._error, self._unsubscribe
        )
        if self._task is None:
            stream.end()
        else:
            self._subscribers.append(stream)
        return stream

    @property
    def stats(self) -> TableStats:
        """Counts of records applied, updated, stale, removed and invalid."""
        return self._table.stats

    @property
    def partitions(self) -> list[TopicPartition]:
        """The partitions followed now (grows when the topic gains partitions)."""
        consumer = self._consumer
        return sorted(consumer.assignment()) if consumer is not None else []

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _unsubscribe(self, stream: UpdateStream[T]) -> None:
        if stream in self._subscribers:
            self._subscribers.remove(stream)

    # ------------------------------------------------------------------ fetch task

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await self._follow(consumer)
        except Exception as exc:
            # Kept and raised by the next call on the view (the task has no other reader).
            log.error("%s view of %s stopped: %r", self.kind, self.topic, exc)
            self._error = exc
            self._settled.set()
            for stream in self._subscribers:
                stream.end()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        reader = Reader(consumer, self.topic)
        started = time.monotonic()
        backoff = RETRY_MIN_S
        while True:
            try:
                await self._step(reader, started)
                backoff = RETRY_MIN_S
            except AioKafkaError as exc:
                if not transient(exc):
                    raise KafkaError(
                        f"{self.kind} view of {self.topic} failed: {exc!r}", retriable=False
                    ) from exc
                log.warning("%s view of %s: %r; retrying", self.kind, self.topic, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)

    async def _step(self, reader: Reader, started: float) -> None:
        if reader.pending is None:
            await reader.start_reading()
        for tp, records in (await reader.poll()).items():
            self._apply(tp, records)
        if not self._is_ready and await reader.caught_up():
            self._become_ready(time.monotonic() - started)
        await reader.follow_new_partitions()

    def _apply(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        apply = self._table.apply
        notify = self._is_ready and (self._on_update is not None or bool(self._subscribers))
        for record in records:
            update = apply(record.key, record.value, (tp.topic, tp.partition, record.offset))
            if update is not None and notify:
                self._publish(update)

    def _publish(self, update: Update[T]) -> None:
        if self._on_update is not None:
            # A raising callback ends the view: its error is the user's to see, not ours
            # to swallow.
            self._on_update(update)
        dropped = [s for s in self._subscribers if not s.push(update)]
        for stream in dropped:
            self._subscribers.remove(stream)

    def _become_ready(self, elapsed_s: float) -> None:
        self._is_ready = True
        self._settled.set()
        log.info(
            "%s view of %s ready: %d keys from %d records in %.2f s",
            self.kind,
            self.topic,
            len(self._table),
            self._table.stats.records,
            elapsed_s,
        )


class RuleView(VersionView[RuleVersion]):
    """Latest `RuleVersion` per rule_id, from ``settings.topic_rule_versions``."""

    codec = RULES
    kind = "rule"

    @staticmethod
    def _default_topic(settings: Settings) -> str:
        return settings.topic_rule_versions


class ModelView(VersionView[ModelVersion]):
    """Latest `ModelVersion` per variable, from ``settings.topic_model_versions``."""

    codec = MODELS
    kind = "model"

    @staticmethod
    def _default_topic(settings: Settings) -> str:
        return settings.topic_model_versions
