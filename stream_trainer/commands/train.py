"""`stream-trainer train`: learn from files, write the final versions to a directory."""

from __future__ import annotations

import argparse
import signal
import sys

from stream_trainer.bridge.outputs import InterruptedAfterCommit
from stream_trainer.bridge.progress import FileProgress
from stream_trainer.bridge.train import TrainOptions, run_train, summary_line
from stream_trainer.commands._time import parse_utc_time
from stream_trainer.config import Settings

INTERRUPTED = 130


def train(settings: Settings, args: argparse.Namespace) -> int:
    options = TrainOptions(
        observations=args.observations or [],
        feedback=args.feedback or [],
        output_dir=args.output_dir,
        parquet=args.format == "parquet",
        published_at=parse_utc_time(args.published_at, "--published-at")
        if args.published_at
        else None,
    )
    progress = FileProgress(sys.stderr)
    # SIGTERM stops like Ctrl-C: outputs are all or nothing either way.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = run_train(settings, options, progress)
    except InterruptedAfterCommit:
        print(
            f"train: interrupted after writing every output to {options.output_dir}",
            file=sys.stderr,
        )
        return INTERRUPTED
    except KeyboardInterrupt:
        progress.abandon()
        print(f"train: interrupted; nothing written to {options.output_dir}", file=sys.stderr)
        return INTERRUPTED
    except BaseException:
        progress.abandon()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary_line(result, options.output_dir), file=sys.stderr)
    return 0
