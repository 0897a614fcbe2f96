"""A fake of aiokafka's group consumer, as the trainer uses it (no broker).

It behaves like aiokafka where the trainer depends on it: the rebalance listener runs when
`getmany` is called (revoke of the previous assignment, then assign); a listener's
exception is logged and swallowed; a new assignment starts at the committed offsets with
nothing paused; pause/resume/seek/position of a partition not assigned raise
`IllegalStateError`. With `concurrent_assign` the assignment listener runs in a task of its
own (aiokafka's coordinator) while getmany goes on handing out records, as aiokafka does; a
revoke blocks fetching, as there. A `None` in a partition's log is a transaction marker: it
takes an offset but is never handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from tests.unit.core_fakes import Rec

log = logging.getLogger(__name__)


class Broker(Protocol):
    """The in-memory broker the consumer reads (`trainer_fakes.World`)."""

    partitions: int
    logs: dict[TopicPartition, list[Rec | None]]
    committed: dict[TopicPartition, int]
    events: list[str]

    def end(self, tp: TopicPartition) -> int: ...


Hook = Callable[["FakeConsumer"], Awaitable[None]]


class FakeClient:
    """The consumer's cluster client, as `kafka.watch.BrokerWatch` probes it."""

    def __init__(self) -> None:
        self.probes = 0
        self.error: BaseException | None = None  # raised by every probe while set

    def get_random_node(self) -> int:
        return 0

    async def send(self, node: int, request: object) -> None:
        self.probes += 1
        if self.error is not None:
            raise self.error


class FakeConsumer:
    """The group consumer (see the module docstring)."""

    def __init__(self, world: Broker, *, concurrent_assign: bool = False) -> None:
        self.world = world
        self.listener: ConsumerRebalanceListener | None = None
        self.topics: list[str] = []
        self._assignment: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._position: dict[TopicPartition, int] = {}
        self.next_assignment: set[TopicPartition] | None = None
        self._deferred: set[TopicPartition] | None = None
        self.hand_out_early = False  # the first assignment's records precede its listener
        # As aiokafka really does: the assignment listener runs in the coordinator's task,
        # while getmany goes on handing out records (a revoke blocks fetching, as there).
        self.concurrent_assign = concurrent_assign
        self._coordinator: asyncio.Task[None] | None = None
        self.started = False
        self.stops = 0
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []
        self.listener_errors: list[BaseException] = []
        self.getmany_calls = 0
        self.getmany_errors: list[BaseException] = []
        self.before_getmany: Hook | None = None
        self.errors: dict[str, BaseException] = {}  # method name -> raised by it
        self.wakeup = asyncio.Event()
        self._client = FakeClient()

    def _raise_for(self, method: str) -> None:
        if method in self.errors:
            raise self.errors[method]

    def _require(self, tp: TopicPartition) -> None:
        if tp not in self._assignment:
            raise IllegalStateError(f"Partition {tp} is not assigned")

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._raise_for("start")
        self.started = True

    async def stop(self) -> None:
        self.stops += 1
        if self._coordinator is not None:
            await self._coordinator  # aiokafka's close waits for the coordination task
        self.world.events.append("consumer stopped")
        self._raise_for("stop")

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None:
        self.topics, self.listener = list(topics), listener
        partitions = range(self.world.partitions)
        self.next_assignment = {TopicPartition(t, n) for t in topics for n in partitions}

    def rebalance(self, assignment: set[TopicPartition]) -> None:
        """The group rebalances: the next getmany revokes everything, then assigns these."""
        self.next_assignment = set(assignment)
        self.wakeup.set()

    # -- fetching -------------------------------------------------------------------------

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Rec]]:
        self.getmany_calls += 1
        await asyncio.sleep(0)  # a real fetch always yields to the loop
        if self.before_getmany is not None:
            await self.before_getmany(self)
        if self.getmany_errors:
            raise self.getmany_errors.pop(0)
        if self._deferred is not None:
            assigned, self._deferred = self._deferred, None
            await self._call_listener("on_partitions_assigned", assigned)
        await self._maybe_rebalance()
        fetched = self._take(max_records)
        if not fetched:
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), timeout_ms / 1000)
        return fetched

    async def _maybe_rebalance(self) -> None:
        if self.next_assignment is None:
            return
        if self._coordinator is not None:
            await self._coordinator  # one rebalance at a time, as in the coordinator
        new = self.next_assignment
        self.next_assignment = None
        await self._call_listener("on_partitions_revoked", set(self._assignment))
        first = not self._position
        self._assignment, self._paused = set(new), set()
        self._position = {tp: self.world.committed.get(tp, 0) for tp in new}
        if first and self.hand_out_early:
            self._deferred = set(new)
            return
        if self.concurrent_assign:
            listener = self._call_listener("on_partitions_assigned", set(new))
            self._coordinator = asyncio.create_task(listener, name="fake-coordinator")
            return
        await self._call_listener("on_partitions_assigned", set(new))

    async def _call_listener(self, name: str, partitions: set[TopicPartition]) -> None:
        assert self.listener is not None
        try:
            await getattr(self.listener, name)(partitions)
        except Exception as exc:
            # As aiokafka does: logged, not raised.
            log.exception("listener %s failed", name)
            self.listener_errors.append(exc)

    def _take(self, max_records: int | None) -> dict[TopicPartition, list[Rec]]:
        room = max_records or 1_000_000
        out: dict[TopicPartition, list[Rec]] = {}
        for tp in sorted(self._assignment - self._paused):
            log_ = self.world.logs[tp]
            while room and self._position[tp] < len(log_):
                record = log_[self._position[tp]]
                self._position[tp] += 1
                if record is not None:
                    out.setdefault(tp, []).append(record)
                    room -= 1
        return out

    # -- assignment, pause and positions --------------------------------------------------

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def pause(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._require(tp)
            self._paused.add(tp)

    def resume(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._require(tp)
            self._paused.discard(tp)
        self.wakeup.set()

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._require(tp)
        self.seeks.append((tp, offset))
        self._position[tp] = offset
        self.wakeup.set()

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.seek(tp, 0)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.seek(tp, self.world.end(tp))

    async def position(self, tp: TopicPartition) -> int:
        self._require(tp)
        return self._position[tp]

    def highwater(self, tp: TopicPartition) -> int:
        self._raise_for("highwater")
        return self.world.end(tp)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        self._raise_for("end_offsets")
        return {tp: self.world.end(tp) for tp in partitions}

    # -- offsets --------------------------------------------------------------------------

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.world.committed.get(tp)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))
        self.world.committed.update(offsets)
        self.world.events.append("offsets committed")
