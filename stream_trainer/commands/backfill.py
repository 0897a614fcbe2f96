"""`stream-trainer backfill`: publish files into the input topics.

Exit status: 0 every line sent (or validated, with ``--dry-run``), 1 invalid lines were
found and not sent, 2 an error, 130 interrupted (what was sent is flushed first).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from stream_trainer.bridge.backfill import BackfillOptions, run_backfill, summary_line
from stream_trainer.bridge.chunks import parse_mark
from stream_trainer.bridge.progress import FileProgress
from stream_trainer.config import Settings
from stream_trainer.errors import ConfigError

INVALID_FOUND = 1
INTERRUPTED = 130


async def backfill(settings: Settings, args: argparse.Namespace) -> int:
    options = BackfillOptions(
        observations=args.observations or [],
        feedback=args.feedback or [],
        rate=args.rate,
        dry_run=args.dry_run,
        send_invalid=args.send_invalid,
        limit=args.limit,
        report_limit=args.report_limit,
        resume_after=parse_mark(args.resume_after) if args.resume_after else None,
    )
    _check(options)
    progress = FileProgress(sys.stderr, verb="dry run" if options.dry_run else "sent")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        result = await run_backfill(settings, options, progress, progress.interject, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print(summary_line(result, options), file=sys.stderr)
    if result.interrupted:
        return INTERRUPTED
    return INVALID_FOUND if result.invalid and not options.send_invalid else 0


def _check(options: BackfillOptions) -> None:
    if options.rate is not None and not options.rate > 0:
        raise ConfigError("--rate must be > 0 events/s")
    if options.limit is not None and options.limit < 0:
        raise ConfigError("--limit must be >= 0")
    if options.report_limit < 0:
        raise ConfigError("--report-limit must be >= 0")
