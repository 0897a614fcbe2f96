"""The trainer's lifecycle: start, the consume loop, rebalances, drain on stop.

`Trainer` owns every background piece (consumer, worker pool, task manager, HTTP server)
and is the one place that starts and stops them, in order. Its consume loop moves records
from `getmany` into the micro-batcher and closed batches into the pool; when a task's queue
is full, the task's partitions are paused until there is room (backpressure).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.aio import cancel_and_wait
from stream_trainer.batching import KafkaRecord, Kind, MicroBatcher, PendingBatch
from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError, TaskFencedError
from stream_trainer.kafka.admin import Topology, prepare_topics
from stream_trainer.kafka.clients import client_options
from stream_trainer.ops.http import OpsServer
from stream_trainer.ops.metrics import TrainerMetrics
from stream_trainer.ops.summary import Summary
from stream_trainer.pool import WorkerPool
from stream_trainer.progress import Progress
from stream_trainer.tasks import TaskManager

log = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._trainer._on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self._trainer._on_assigned({tp.partition for tp in assigned})


class Trainer:
    """The streaming trainer. Use ``async with Trainer(settings):`` or start()/stop()."""

    def __init__(
        self,
        settings: Settings,
        metrics: TrainerMetrics | None = None,
        *,
        until_end: bool = False,
        serve_http: bool = True,
        start_from: datetime | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or TrainerMetrics()
        self.instance_id = f"{settings.application_id}-{socket.gethostname()}-{os.getpid()}"
        self._until_end = until_end
        self._serve_http = serve_http
        self._start_from = start_from
        self._consumer: AIOKafkaConsumer | None = None
        self._batcher = MicroBatcher(settings.max_batch_events, settings.max_batch_linger_ms)
        self._tasks = TaskManager(
            settings,
            self.metrics,
            self.instance_id,
            commit_offsets=self._commit_offsets,
            seek_committed=self._seek_committed,
            still_assigned=lambda task: bool(self._owned(task)),
        )
        self._pool = WorkerPool(
            self._tasks.process, settings.queue_max_batches, settings.max_batch_events
        )
        self._blocked: dict[int, deque[PendingBatch]] = defaultdict(deque)
        self._paused: set[int] = set()
        self._assigned = False
        self._stopping = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._summary_task: asyncio.Task[None] | None = None
        self._http: OpsServer | None = None
        self._topology: Topology | None = None
        self.progress = Progress()

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Trainer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

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
                ready_reason=self._not_ready_reason,
            )
            await self._http.start()
        self._topology = await prepare_topics(self.settings)
        await self._tasks.start()
        self._consumer = self._new_consumer()
        try:
            await self._consumer.start()
        except AioKafkaError as exc:
            raise KafkaError(f"cannot start consumer: {exc!r}", retriable=True) from exc
        self._consumer.subscribe(
            [self.settings.topic_observations, self.settings.topic_feedback],
            listener=_Rebalance(self),
        )
        if self._until_end:
            self.progress.end_offsets = await self._input_end_offsets()
        self._loop_task = asyncio.create_task(self._consume_loop(), name="consume-loop")
        summary = Summary(
            self.metrics,
            self._tasks,
            self.progress,
            self._consumer,
            self.settings.summary_interval_s,
        )
        self._summary_task = asyncio.create_task(summary.run(), name="summary")
        log.info("trainer started", extra={"instance": self.instance_id})

    async def wait(self) -> None:
        """Until stop() is requested, the loop ends (until_end), or a component fails."""
        assert self._loop_task is not None
        stop_requested = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait(
                [self._loop_task, stop_requested], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop_requested.cancel()
        if self._loop_task.done():
            self._loop_task.result()  # surfaces the loop's error, if any
        self._pool.check()

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        """Drain: finish queued batches, commit, leave the group, close everything."""
        self._stopping.set()
        await cancel_and_wait(self._summary_task)
        loop_error = await _finish(self._loop_task)
        self._blocked.clear()
        for task in self._pool.tasks:
            await self._pool.drain(task)
        if self._consumer is not None:
            await self._consumer.stop()  # leaves the group: revokes (and drops) our tasks
        await self._pool.close()
        await self._tasks.stop()
        if self._http is not None:
            await self._http.stop()
        log.info("trainer stopped", extra={"events": self.progress.events})
        self._pool.check()
        if loop_error is not None:
            raise loop_error

    @property
    def ready(self) -> bool:
        return self._assigned and not self._tasks.restoring

    @property
    def http_port(self) -> int | None:
        """The bound ops HTTP port once started (resolves port 0); None without HTTP."""
        return None if self._http is None else self._http.port

    def _not_ready_reason(self) -> str:
        if self._tasks.restoring:
            return "restoring state from the changelog"
        return "waiting for partition assignment"

    # -- consume loop ---------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        linger_s = self.settings.max_batch_linger_ms / 1000
        while not self._stopping.is_set():
            self._pool.check()
            wait_s = self._batcher.seconds_until_due(time.monotonic())
            timeout_ms = int(1000 * (linger_s if wait_s is None else wait_s))
            try:
                # At most one batch per call: a task whose queue is full then holds at most a
                # batch or two before it is paused, whatever the fetch sizes.
                fetched = await consumer.getmany(
                    timeout_ms=max(timeout_ms, 1), max_records=self.settings.max_batch_events
                )
            except AioKafkaError as exc:
                if not exc.retriable:
                    raise KafkaError(f"consumer failed: {exc!r}") from exc
                log.warning("consumer error, retrying: %r", exc)
                await asyncio.sleep(0.5)
                continue
            now = time.monotonic()
            for tp, records in fetched.items():
                self._add_records(tp, records, now)
            self._enqueue(self._batcher.due(now))
            self._apply_backpressure()
            self.metrics.worker_queue_depth.set(self._pool.depth)
            if self._until_end and await self._reached_end():
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
        self._enqueue(self._batcher.add(tp.partition, task.generation, kind, records, now))

    def _rewind(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        if tp in self._consumer.assignment():
            self._consumer.seek(tp, offset)

    def _enqueue(self, batches: list[PendingBatch]) -> None:
        for batch in batches:
            blocked = self._blocked[batch.task]
            if blocked or not self._pool.offer(batch):
                blocked.append(batch)
            else:
                self.progress.batches_queued += 1

    def _apply_backpressure(self) -> None:
        """Pause tasks whose queue is full; resume them once their blocked batches fit."""
        consumer = self._consumer
        assert consumer is not None
        for task, blocked in list(self._blocked.items()):
            while blocked and self._pool.offer(blocked[0]):
                blocked.popleft()
                self.progress.batches_queued += 1
            if not blocked:
                del self._blocked[task]
        for task in set(self._blocked) - self._paused:
            consumer.pause(*self._owned(task))
            self._paused.add(task)
            log.debug("task %d paused: worker queue full", task)
        for task in self._paused - set(self._blocked):
            consumer.resume(*self._owned(task))
            self._paused.discard(task)
            log.debug("task %d resumed", task)
        self.metrics.partitions_paused.set(2 * len(self._paused))

    def _owned(self, task: int) -> list[TopicPartition]:
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        return [tp for tp in self._tasks.input_partitions(task) if tp in assigned]

    @property
    def paused_tasks(self) -> set[int]:
        return set(self._paused)

    # -- rebalance ------------------------------------------------------------------------

    async def _on_revoked(self, tasks: set[int]) -> None:
        self.metrics.rebalances.inc()
        self._assigned = False
        for task in tasks:
            self._batcher.discard(task)
            self._blocked.pop(task, None)
            self._paused.discard(task)
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
            await self._tasks.assign(sorted(tasks))
            if self._start_from is not None:
                await self._seek_uncommitted_to_time(tasks, self._start_from)
        finally:
            self._consumer.resume(*new)
        for task in tasks:
            self._pool.add_task(task)
        self._assigned = True
        log.info("partitions assigned", extra={"tasks": sorted(tasks)})

    # -- offsets --------------------------------------------------------------------------

    async def _commit_offsets(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            raise TaskFencedError(f"offset commit failed (rebalanced): {exc!r}") from exc
        except AioKafkaError as exc:
            raise KafkaError(f"offset commit failed: {exc!r}", retriable=True) from exc

    async def _seek_committed(self, partitions: list[TopicPartition]) -> None:
        """Rewind a reset task's partitions to their committed offsets (or the reset policy)."""
        consumer = self._consumer
        assert consumer is not None
        assigned = consumer.assignment()
        for tp in partitions:
            if tp not in assigned:
                continue
            self._batcher.discard(tp.partition)
            self._blocked.pop(tp.partition, None)
            committed = await consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)
            elif self.settings.auto_offset_reset == "earliest":
                await consumer.seek_to_beginning(tp)
            else:
                await consumer.seek_to_end(tp)
            self.progress.fetched.pop(tp, None)  # nothing after the committed offset is ours
            task = self._tasks.tasks.get(tp.partition)
            if task is not None and committed is not None:
                task.committed[tp] = committed

    async def _seek_uncommitted_to_time(self, tasks: set[int], start: datetime) -> None:
        """Replay from a time: partitions without a committed offset start at `start`."""
        consumer = self._consumer
        assert consumer is not None
        fresh = []
        for task in tasks:
            for tp in self._owned(task):
                if await consumer.committed(tp) is None:
                    fresh.append(tp)
        if not fresh:
            return
        start_ms = int(start.timestamp() * 1000)
        found = await consumer.offsets_for_times({tp: start_ms for tp in fresh})
        for tp in fresh:
            hit = found.get(tp)
            if hit is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, hit.offset)

    async def _input_end_offsets(self) -> dict[TopicPartition, int]:
        assert self._consumer is not None and self._topology is not None
        topics = (self.settings.topic_observations, self.settings.topic_feedback)
        partitions = [
            TopicPartition(t, p) for t in topics for p in range(self._topology.partitions)
        ]
        return dict(await self._consumer.end_offsets(partitions))

    async def _reached_end(self) -> bool:
        """True once every input partition's committed offset reached its captured end."""
        ends = self.progress.end_offsets
        committed: dict[TopicPartition, int] = {}
        for owned in self._tasks.tasks.values():
            committed.update(owned.committed)
        for tp, end in ends.items():
            done = committed.get(tp, 0)
            if done >= end:
                continue
            # Past the last record there may be only transaction markers: then everything
            # handed on must be committed and the position at the end.
            if not self._settled(tp.partition) or done < self.progress.fetched.get(tp, 0):
                return False
            assert self._consumer is not None
            position = await self._consumer.position(tp)
            if position < end or self._batcher.open_records:
                return False
        return True

    def _settled(self, task: int) -> bool:
        """Owned, with nothing queued, in flight or blocked."""
        owned = task in self._tasks.tasks
        return owned and self._pool.idle(task) and not self._blocked.get(task)

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            **client_options(s),
            group_id=s.application_id,
            client_id=self.instance_id,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            isolation_level="read_committed",
            # Range assigns partition n of both input topics to the same member: the task.
            partition_assignment_strategy=(RangePartitionAssignor,),
            group_instance_id=s.group_instance_id or None,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(100, s.session_timeout_ms // 3),
            max_partition_fetch_bytes=2 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )


def _version() -> str:
    from stream_trainer import __version__

    return __version__


async def _finish(task: asyncio.Task[None] | None) -> BaseException | None:
    """Wait for the loop to notice the stop request; return its error rather than lose it."""
    if task is None:
        return None
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
    except TimeoutError:
        await cancel_and_wait(task)
        return None
    except asyncio.CancelledError:
        return None
    except Exception as exc:
        return exc
    return None
