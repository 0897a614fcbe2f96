"""`stream-trainer replay`: retrodiction, rebuilding models from history.

Replay runs the same trainer under a fresh application id (so its own consumer group,
changelog and transactional ids) and writes to prefixed output topics, leaving the live
service alone. Learning is batch-invariant, so replaying the same input gives exactly the
live models. It exits once the input end offsets captured at start are committed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime

import msgspec

from stream_trainer.aio import cancel_and_wait
from stream_trainer.commands._time import parse_utc_time
from stream_trainer.config import Settings
from stream_trainer.errors import ConfigError
from stream_trainer.service import Trainer

PROGRESS_INTERVAL_S = 2.0


def replay_settings(settings: Settings, prefix: str, stamp: str) -> Settings:
    """The replay's own application id and prefixed output topics."""
    if not prefix:
        raise ConfigError("--output-prefix must not be empty: replay never writes live topics")
    return msgspec.structs.replace(
        settings,
        application_id=f"{settings.application_id}-replay-{stamp}",
        topic_model_versions=prefix + settings.topic_model_versions,
        topic_rule_versions=prefix + settings.topic_rule_versions,
        topic_training_metrics=prefix + settings.topic_training_metrics,
        topic_dead_letter=prefix + settings.topic_dead_letter,
        topic_changelog="",
        auto_offset_reset="earliest",
    )


def parse_start(start: str) -> datetime | None:
    return None if start == "earliest" else parse_utc_time(start, "--from (or 'earliest')")


async def replay(settings: Settings, start: str, prefix: str) -> int:
    start_from = parse_start(start)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    replay_cfg = replay_settings(settings, prefix, stamp)
    trainer = Trainer(replay_cfg, until_end=True, serve_http=False, start_from=start_from)
    print(f"replay into {prefix}* as {replay_cfg.application_id}", file=sys.stderr)
    await trainer.start()
    progress = asyncio.create_task(_show_progress(trainer))
    try:
        await trainer.wait()
    finally:
        await cancel_and_wait(progress)
        await trainer.stop()
    print(f"replay done: {trainer.progress.events} events", file=sys.stderr)
    return 0


async def _show_progress(trainer: Trainer) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL_S)
        total = sum(trainer.progress.end_offsets.values())
        done = trainer.progress.events
        rate = done / max(time.monotonic() - started, 1e-9)
        eta = (total - done) / rate if rate > 0 and total > done else 0.0
        print(
            f"replay: {done:,}/{total:,} events, {rate:,.0f} events/s, ETA {eta:,.0f}s",
            file=sys.stderr,
        )
