"""``--until-end``: has everything up to the input end offsets captured at start committed?"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_trainer.progress import Progress
from stream_trainer.tasks import TaskManager


class EndOfInput:
    """True once every input partition's committed offset reached its captured end."""

    def __init__(
        self,
        progress: Progress,
        tasks: TaskManager,
        consumer: Callable[[], AIOKafkaConsumer],
        settled: Callable[[int], bool],
        open_records: Callable[[], int],
    ) -> None:
        self._progress = progress
        self._tasks = tasks
        self._consumer = consumer
        self._settled = settled
        self._open_records = open_records

    async def reached(self) -> bool:
        ends = self._progress.end_offsets
        committed: dict[TopicPartition, int] = {}
        for owned in self._tasks.tasks.values():
            committed.update(owned.committed)
        for tp, end in ends.items():
            done = committed.get(tp, 0)
            if done >= end:
                continue
            if not await self._only_markers_left(tp, end, done):
                return False
        return True

    async def _only_markers_left(self, tp: TopicPartition, end: int, done: int) -> bool:
        """Past the last record there may be only transaction markers: then everything
        handed on must be committed and the position at the end."""
        task = tp.partition
        if not self._settled(task) or done < self._progress.fetched.get(tp, 0):
            return False
        position = await self._consumer().position(tp)
        return position >= end and not self._open_records()
