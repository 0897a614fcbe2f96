"""The trainer's lifecycle: start, the consume loop, rebalances, drain on stop.

`Trainer` owns every background piece (consumer, worker pool, task manager, HTTP server)
and is the one place that starts and stops them, in order. Its consume loop moves records
from `getmany` into the micro-batcher and closed batches into the pool; when a task's queue
is full, the task's partitions are paused until there is room (backpressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.aio import StartStop, cancel_and_wait, finish
from stream_trainer.backpressure import Backpressure
from stream_trainer.batching import KafkaRecord, Kind, MicroBatcher
from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.kafka import group
from stream_trainer.kafka.admin import Topology, prepare_topics
from stream_trainer.kafka.errors import wrap
from stream_trainer.kafka.watch import BrokerWatch
from stream_trainer.learners import warm_up
from stream_trainer.ops.http import OpsServer
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.ops.queries import Queries, VersionSource
from stream_trainer.ops.readiness import Readiness
from stream_trainer.ops.summary import Summary
from stream_trainer.pool import Processor, WorkerPool
from stream_trainer.progress import Progress
from stream_trainer.retry import RetryBudget
from stream_trainer.tasks import TaskManager
from stream_trainer.until_end import EndOfInput

log = logging.getLogger(__name__)

LEAVE_GROUP_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class Collaborators:
    """The parts a Trainer builds that a test (or an embedding) may replace."""

    consumer: Callable[[Settings, str], AIOKafkaConsumer] = group.group_consumer
    processor: Callable[[TaskManager], Processor] = lambda tasks: tasks


class Trainer(StartStop):
    """The streaming trainer. Use ``async with Trainer(settings):`` or start()/stop()."""

    def __init__(
        self,
        settings: Settings,
        metrics: TrainerMetrics | None = None,
        *,
        until_end: bool = False,
        serve_http: bool = True,
        start_from: datetime | None = None,
        parts: Collaborators | None = None,
    ) -> None:
        self._parts = parts or Collaborators()
        self.settings = settings
        self.metrics = metrics or TrainerMetrics()
        self.instance_id = f"{settings.application_id}-{socket.gethostname()}-{os.getpid()}"
        self._until_end = until_end
        self._serve_http = serve_http
        self._start_from = start_from
        self._consumer: AIOKafkaConsumer | None = None
        self._batcher = MicroBatcher(settings.max_batch_events, settings.max_batch_linger_ms)
        self._tasks = TaskManager(settings, self.metrics, self.instance_id, _ConsumerHandle(self))
        self._pool = WorkerPool(
            self._parts.processor(self._tasks),
            settings.queue_max_batches,
            settings.max_batch_events,
        )
        self.progress = Progress()
        self._backpressure = Backpressure(
            self._pool, self._require_consumer, self._owned, self.progress
        )
        self._broker_budget = RetryBudget(settings.broker_timeout_s, "broker", metrics=self.metrics)
        self._watch_task: asyncio.Task[None] | None = None
        self._consumer_budget = RetryBudget(
            settings.broker_timeout_s, "consumer", metrics=self.metrics
        )
        self._readiness = Readiness(self._tasks, self._consumer_budget, self._broker_budget)
        self._rebalance = group.RebalanceRelay(self._on_revoked, self._on_assigned)
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._summary_task: asyncio.Task[None] | None = None
        self._http: OpsServer | None = None
        self._topology: Topology | None = None
        self._end = EndOfInput(
            self.progress,
            self._tasks,
            self._require_consumer,
            self._settled,
            lambda: self._batcher.open_records,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.metrics.info.info({"version": _version(), "instance": self.instance_id})
        # Read at each scrape: a gauge set from the consume loop would be stale during a
        # restore, which runs inside getmany (the rebalance listener).
        self.metrics.ready.set_function(lambda: float(self.ready))
        if self._serve_http:
            self._http = OpsServer(
                self.metrics.registry,
                host=self.settings.http_host,
                port=self.settings.http_port,
                ready=lambda: self.ready,
                ready_reason=self._readiness.reason,
                queries=Queries(self._version_source()),
            )
            await self._http.start()
        try:
            await self._start_clients()
        except BaseException:
            await self.stop()
            raise
        log.info("trainer started", extra={"instance": self.instance_id})

    async def _start_clients(self) -> None:
        # Compile the learner kernels (or load numba's cache) before the first batch.
        await asyncio.to_thread(warm_up)
        self._readiness.warm = True
        self._topology = await self._first_contact()
        await self._tasks.start()
        self._consumer = self._parts.consumer(self.settings, self.instance_id)
        try:
            await self._consumer.start()
        except AioKafkaError as exc:
            raise wrap("cannot start consumer", exc) from exc
        self._consumer.subscribe(
            [self.settings.topic_observations, self.settings.topic_feedback],
            listener=self._rebalance,
        )
        if self._until_end:
            assert self._topology is not None
            self.progress.end_offsets = await group.end_offsets(
                self._consumer, self.settings, self._topology.partitions
            )
        watch = BrokerWatch(self._consumer._client, self._broker_budget)
        self._watch_task = asyncio.create_task(watch.run(), name="broker-watch")
        self._loop_task = asyncio.create_task(self._consume_loop(), name="consume-loop")
        summary = Summary(
            self.metrics,
            self._tasks,
            self.progress,
            self._consumer,
            self.settings.summary_interval_s,
        )
        self._summary_task = asyncio.create_task(summary.run(), name="summary")

    async def _first_contact(self) -> Topology:
        """Check and create the topics; a broker not up yet is waited for (the budget)."""
        while True:
            try:
                topology = await prepare_topics(self.settings)
            except KafkaError as exc:
                await asyncio.sleep(self._broker_budget.failed(exc))
                continue
            self._broker_budget.succeeded()
            return topology

    async def wait(self) -> None:
        """Until stop() is requested, the loop ends (until_end), or a component fails."""
        assert self._loop_task is not None and self._summary_task is not None
        assert self._watch_task is not None
        watched = (self._loop_task, self._summary_task, self._watch_task)
        stop_requested = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([*watched, stop_requested], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(stop_requested)
        for task in watched:
            if task.done():
                task.result()  # surfaces the task's error, if any
        self._pool.check()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        """Drain: finish queued batches, commit, leave the group, close everything.

        With the broker unreachable a drain would wait for it forever: then nothing is
        committed, the producers are abandoned (their open transactions are aborted by
        the broker or fenced by the tasks' next owners) and the work is redone later.
        """
        self._stopping.set()
        await cancel_and_wait(self._watch_task)
        if self._broker_budget.degraded:
            await self._stop_without_broker()
            return
        loop_error: BaseException | None = None
        try:
            await cancel_and_wait(self._summary_task)
            loop_error = await finish(self._loop_task)
            self._backpressure.clear()
            for task in self._pool.tasks:
                await self._pool.drain(task)
            if self._consumer is not None:
                await self._consumer.stop()  # leaves the group: revokes (and drops) our tasks
        finally:
            await self._pool.close()
            await self._tasks.stop()
            if self._http is not None:
                await self._http.stop()
        log.info("trainer stopped", extra={"events": self.progress.events})
        self._pool.check()
        if loop_error is not None:
            raise loop_error

    async def _stop_without_broker(self) -> None:
        try:
            await cancel_and_wait(self._summary_task, self._loop_task)
            await self._pool.abort()
            await self._tasks.stop(abandon_producers=True)
            if self._consumer is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LEAVE_GROUP_TIMEOUT_S):
                        await self._consumer.stop()
        finally:
            if self._http is not None:
                await self._http.stop()
        log.warning(
            "trainer stopped without draining: the broker is unreachable; uncommitted "
            "work is read again from the committed offsets at the next start"
        )

    @property
    def ready(self) -> bool:
        return self._readiness.ready

    def _version_source(self) -> VersionSource:
        return VersionSource.of_tasks(
            self.settings, self._tasks, lambda: self._topology.partitions if self._topology else 0
        )

    @property
    def http_port(self) -> int | None:
        """The bound ops HTTP port once started (resolves port 0); None without HTTP."""
        return None if self._http is None else self._http.port

    # -- consume loop ---------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        linger_s = self.settings.max_batch_linger_ms / 1000
        while not self._stopping.is_set():
            self._pool.check()
            if self._rebalance.error is not None:
                raise self._rebalance.error
            wait_s = self._batcher.seconds_until_due(time.monotonic())
            timeout_ms = int(1000 * (linger_s if wait_s is None else wait_s))
            try:
                # At most one batch per call: a task whose queue is full then holds at most a
                # batch or two before it is paused, whatever the fetch sizes.
                fetched = await consumer.getmany(
                    timeout_ms=max(timeout_ms, 1), max_records=self.settings.max_batch_events
                )
            except AioKafkaError as exc:
                error = wrap("consumer failed", exc)
                error.__cause__ = exc
                await asyncio.sleep(self._consumer_budget.failed(error))
                continue
            self._consumer_budget.succeeded()
            now = time.monotonic()
            for tp, records in fetched.items():
                self._add_records(tp, records, now)
            self._backpressure.enqueue(self._batcher.due(now))
            self.metrics.partitions_paused.set(self._backpressure.apply())
            self.metrics.worker_queue_depth.set(self._pool.depth)
            self.metrics.degraded.set(len(self._tasks.degraded))
            if self._until_end and await self._end.reached():
                log.info("reached the end offsets captured at start")
                return

    def _add_records(self, tp: TopicPartition, records: list[KafkaRecord], now: float) -> None:
        task = self._tasks.tasks.get(tp.partition)
        if task is None or task.resetting:
            # aiokafka hands out records of a partition as soon as it is assigned, before
            # our listener has restored its task; rewind so they are read again, not lost.
            self._rewind(tp, records[0].offset)
            return
        kind: Kind = "observation" if tp.topic == self.settings.topic_observations else "feedback"
        self.metrics.events_consumed.labels(topic=tp.topic).inc(len(records))
        self.progress.events += len(records)
        self.progress.fetched[tp] = records[-1].offset + 1
        self._backpressure.enqueue(
            self._batcher.add(tp.partition, task.generation, kind, records, now)
        )

    def _rewind(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        if tp in self._consumer.assignment():
            self._consumer.seek(tp, offset)

    def _require_consumer(self) -> AIOKafkaConsumer:
        assert self._consumer is not None
        return self._consumer

    def _owned(self, task: int) -> list[TopicPartition]:
        return group.owned(self._require_consumer(), self.settings, task)

    @property
    def paused_tasks(self) -> set[int]:
        return self._backpressure.paused_tasks

    @property
    def held_batches(self) -> int:
        """Closed batches not yet learned: queued, in flight, or held back."""
        return self._pool.depth + self._backpressure.held

    # -- rebalance ------------------------------------------------------------------------

    async def _on_revoked(self, tasks: set[int]) -> None:
        self.metrics.rebalances.inc()
        self._readiness.assigned = False
        for task in tasks:
            self._batcher.discard(task)
            self._backpressure.forget(task)
            await self._pool.remove_task(task, finish_queued=True)
            await self._tasks.drop(task)
        log.info("partitions revoked", extra={"tasks": sorted(tasks)})

    async def _on_assigned(self, tasks: set[int]) -> None:
        assert self._consumer is not None
        if self._stopping.is_set():
            return  # leaving: the records of these partitions are never handed out
        new = [tp for task in tasks for tp in self._owned(task)]
        self._consumer.pause(*new)  # nothing is fetched for a task before its state is back
        for tp in new:
            self.progress.fetched.pop(tp, None)  # fetched under an earlier ownership
        try:
            await self._tasks.assign_with_retry(sorted(tasks))
            if self._start_from is not None:
                await group.seek_uncommitted_to_time(self._consumer, new, self._start_from)
        finally:
            self._consumer.resume(*new)
        for task in tasks:
            self._pool.add_task(task)
        self._readiness.assigned = True
        log.info("partitions assigned", extra={"tasks": sorted(tasks)})

    # -- offsets --------------------------------------------------------------------------

    async def _seek_committed(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Rewind a reset task: what is batched or held for it is read again, not used."""
        for task in {tp.partition for tp in partitions}:
            self._batcher.discard(task)
            self._backpressure.forget(task)
        for tp in partitions:
            self.progress.fetched.pop(tp, None)  # nothing after the committed offset is ours
        return await group.seek_committed(
            self._require_consumer(), partitions, self.settings.auto_offset_reset
        )

    def _settled(self, task: int) -> bool:
        """Owned, with nothing queued, in flight or blocked."""
        owned = task in self._tasks.tasks
        return owned and self._pool.idle(task) and not self._backpressure.holds(task)


class _ConsumerHandle:
    """The group consumer as the tasks see it (`tasks.ConsumerPort`)."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    async def commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        await group.commit_offsets(self._trainer._require_consumer(), offsets)

    async def seek_committed(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return await self._trainer._seek_committed(partitions)

    def owns(self, task: int) -> bool:
        return bool(self._trainer._owned(task))


def _version() -> str:
    from stream_trainer import __version__

    return __version__
