"""The demo's live view: how far the trainer is behind the producer, and a progress line."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.config import Settings
from stream_trainer.errors import KafkaError
from stream_trainer.kafka.clients import new_admin
from stream_trainer.service import Trainer

from .traffic import Produced

PROGRESS_INTERVAL_S = 2.0
POLL_INTERVAL_S = 0.5


class CatchUp:
    """Compares the group's committed offsets with the producer's acknowledged ends."""

    def __init__(self, settings: Settings, produced: Produced) -> None:
        self._group = settings.application_id
        self._produced = produced
        self._admin = new_admin(settings, client_id="stream-trainer-demo-progress")
        self.behind: int | None = None  # records produced but not yet committed

    async def start(self) -> None:
        try:
            await self._admin.start()
        except AioKafkaError as exc:
            raise KafkaError(f"cannot watch the demo's progress: {exc!r}") from exc

    async def close(self) -> None:
        await self._admin.close()

    async def wait(self) -> None:
        """Return once everything produced is committed by the trainer."""
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            self.behind = await self._behind()
            if self._produced.done and self.behind == 0:
                return

    async def _behind(self) -> int | None:
        try:
            offsets = await self._admin.list_consumer_group_offsets(self._group)
        except AioKafkaError as exc:
            if exc.retriable:
                return self.behind  # e.g. the group's coordinator is still being elected
            raise KafkaError(f"cannot read the demo's committed offsets: {exc!r}") from exc
        committed: dict[tuple[str, int], int] = {
            (tp.topic, tp.partition): int(meta.offset) for tp, meta in offsets.items()
        }
        produced = self._produced
        unacked = produced.sent - produced.acked
        return unacked + sum(
            max(0, end - committed.get(key, 0)) for key, end in produced.ends.items()
        )


@dataclass
class ProgressLine:
    """Renders one line of progress; the trainer parts are left out in --produce-only."""

    total: int
    produced: Produced
    trainer: Trainer | None = None
    catch_up: CatchUp | None = None
    _started: float = field(default_factory=time.monotonic)
    _last: tuple[float, int] = (0.0, 0)

    def render(self) -> str:
        now = time.monotonic()
        parts = [f"{now - self._started:5.0f}s", f"produced {self.produced.acked:,}/{self.total:,}"]
        if self.trainer is not None:
            parts += self._trainer_parts(self.trainer, now)
        return " | ".join(parts)

    def _trainer_parts(self, trainer: Trainer, now: float) -> list[str]:
        events = trainer.progress.events
        last_time, last_events = self._last
        rate = (events - last_events) / (now - last_time) if last_time else 0.0
        self._last = (now, events)
        behind = self.catch_up.behind if self.catch_up is not None else None
        registry = trainer.metrics.registry
        rules = registry.get_sample_value(
            "stream_trainer_versions_published_total", {"kind": "rule"}
        )
        models = registry.get_sample_value(
            "stream_trainer_versions_published_total", {"kind": "model"}
        )
        return [
            f"trained {events:,} ({rate:,.0f} ev/s)",
            f"behind {'?' if behind is None else f'{behind:,}'}",
            f"versions {int(models or 0):,} models {int(rules or 0):,} rules",
            f"dead letters {dead_letters(trainer):,}",
        ]


def dead_letters(trainer: Trainer) -> int:
    total = 0.0
    for family in trainer.metrics.registry.collect():
        if family.name == "stream_trainer_events_invalid":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


async def show_progress(line: ProgressLine, interval_s: float = PROGRESS_INTERVAL_S) -> None:
    """Print the line every `interval_s` until cancelled (in place on a terminal), and
    once more when cancelled, so the last state shown is the final one."""
    tty = sys.stderr.isatty()
    try:
        while True:
            await asyncio.sleep(interval_s)
            _print(line.render(), tty, end="")
    finally:
        _print(line.render(), tty, end="\n")


def _print(text: str, tty: bool, end: str) -> None:
    if tty:
        print(f"\r\x1b[2K{text}", end=end, file=sys.stderr, flush=True)
    else:
        print(text, file=sys.stderr, flush=True)
