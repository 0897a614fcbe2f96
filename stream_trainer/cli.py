"""Command line: run, demo, replay, dead-letters, show, forget, train, backfill, schemas.

Every command reads the same settings (``--config FILE`` < ``STREAM_TRAINER_*`` env <
flags). Errors of the project are printed as one line and exit 2; nothing prints a
traceback unless ``--log-level DEBUG``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from stream_trainer import __version__
from stream_trainer.config import Settings, load_settings
from stream_trainer.errors import StreamTrainerError
from stream_trainer.logs import configure_logging

log = logging.getLogger("stream_trainer")

DEFAULT_SCHEMA_DIR = Path("schemas")
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-trainer",
        description="Continuous training of Pulse rules (Bayesian trust) and variables "
        "(online AR forecasters) from Kafka event streams.",
        epilog="Settings come from --config FILE (TOML/YAML), then STREAM_TRAINER_* "
        "environment variables, then flags. See README.md for every setting.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_replay(sub)
    _add_dead_letters(sub)
    _add_train(sub)
    _add_backfill(sub)
    _add_show(sub)
    _add_forget(sub)
    _add_demo(sub)
    _add_schemas(sub)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML or YAML settings file (env wins over it)")
    p.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (host:port,...)")
    p.add_argument("--application-id", help="consumer group and transactional-id prefix")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--log-format", choices=["text", "json"], help="log line format")


def _add_run(sub: Subcommands) -> None:
    p = sub.add_parser("run", help="run the trainer until SIGTERM/SIGINT (drains, exits 0)")
    _common(p)
    p.add_argument(
        "--until-end",
        action="store_true",
        help="exit once the input end offsets captured at start are committed",
    )


def _add_replay(sub: Subcommands) -> None:
    p = sub.add_parser(
        "replay", help="rebuild models from history into separate output topics, then exit"
    )
    _common(p)
    p.add_argument("--from", dest="start", default="earliest", help="earliest or an RFC 3339 ts")
    p.add_argument(
        "--output-prefix", default="replay.", help="prefix for the output topics (default replay.)"
    )


def _add_dead_letters(sub: Subcommands) -> None:
    p = sub.add_parser("dead-letters", help="list dead letters, or re-publish them with --replay")
    _common(p)
    p.add_argument("--reason", action="append", help="only this reason (repeatable)")
    p.add_argument("--since", help="only dead letters written at or after this RFC 3339 ts")
    p.add_argument("--limit", type=int, default=50, help="at most N (default 50)")
    p.add_argument("--replay", action="store_true", help="re-publish them to their source topic")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")


SHOW_EXAMPLES = """examples:
  stream-trainer show rule rule.momentum.spx            the latest version, as a table
  stream-trainer show model spx_close --format json     the wire JSON, one line
  stream-trainer show rule rule.momentum.spx --history  every retained version, oldest first

Reads only the key's partition of the version topic (read_committed), so it is fast on
big topics. Exit status: 0 found, 1 unknown or forgotten key, 2 error."""


def _add_show(sub: Subcommands) -> None:
    p = sub.add_parser(
        "show",
        help="print the latest published version of one rule or model",
        description="Print what the trainer last published for one rule or one variable.",
        epilog=SHOW_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument("kind", choices=["rule", "model"], help="rule (by rule_id) or model")
    p.add_argument("key", metavar="ID", help="the rule_id, or the model's variable")
    p.add_argument(
        "--history", action="store_true", help="every retained version of the key, oldest first"
    )
    p.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="table (default, readable) or json (the wire JSON, one line per version)",
    )
    p.add_argument(
        "--topic", help="version topic to read (default: topic_rule_versions / _model_versions)"
    )


FORGET_EXAMPLES = """examples:
  stream-trainer forget rule rule.momentum.spx            asks first (needs a terminal)
  stream-trainer forget model spx_close --yes             no question (scripts)
  stream-trainer forget rule rule.momentum.spx --dry-run  where it would write; sends nothing
  stream-trainer forget rule -- -odd-id                   an id that starts with "-"

Writes one tombstone (key = the id, null value) to the key's partition of the input topic
(feedback for a rule, observations for a model) and waits for the broker's ack. The trainer
task owning that partition applies it in order: it deletes the key's state and writes
tombstones to the changelog and the version topic in one transaction; later events for the
key start a new life at version 1. Exit status: 0 written, 1 not confirmed, 2 error."""


def _add_forget(sub: Subcommands) -> None:
    p = sub.add_parser(
        "forget",
        help="drop one rule or model everywhere (state, changelog, versions)",
        description="Ask the trainer to forget one rule or one variable's model.",
        epilog=FORGET_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument("kind", choices=["rule", "model"], help="rule (by rule_id) or model")
    p.add_argument("key", metavar="ID", help="the rule_id, or the model's variable")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--dry-run", action="store_true", help="print the topic and partition; write nothing"
    )


def _inputs(p: argparse.ArgumentParser) -> None:
    for flag, kind in (("--observations", "Observation"), ("--feedback", "Feedback")):
        p.add_argument(
            flag,
            nargs="+",
            action="extend",
            metavar="PATH",
            help=f"{kind} files, directories or globs, read in the order given (.jsonl/"
            ".ndjson, .csv with a header, .parquet; .gz/.zst compressed)",
        )


def _add_train(sub: Subcommands) -> None:
    p = sub.add_parser(
        "train", help="learn from files (no Kafka) and write the final versions to a directory"
    )
    p.add_argument("--config", type=Path, help="TOML or YAML settings file (env wins over it)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    _inputs(p)
    p.add_argument("--output-dir", type=Path, required=True, metavar="DIR", help="output dir")
    p.add_argument(
        "--format",
        choices=["jsonl", "parquet"],
        default="jsonl",
        help="parquet: also write the version files as Parquet (JSON Lines always)",
    )
    p.add_argument("--published-at", help="RFC 3339 published_at of the versions (default now)")


def _add_backfill(sub: Subcommands) -> None:
    p = sub.add_parser("backfill", help="publish files into the input topics (keyed, validated)")
    _common(p)
    _inputs(p)
    p.add_argument("--rate", type=float, help="at most this many events/s (default unlimited)")
    p.add_argument("--dry-run", action="store_true", help="validate and count; send nothing")
    p.add_argument(
        "--send-invalid",
        action="store_true",
        help="send invalid lines too (the trainer dead-letters them); default: report only",
    )
    p.add_argument("--limit", type=int, help="stop after the first N events of the inputs")
    p.add_argument(
        "--resume-after",
        metavar="FILE:LINE",
        help="send only what follows FILE:LINE (as an interrupted backfill prints)",
    )
    p.add_argument(
        "--report-limit", type=int, default=20, help="print at most N invalid lines (default 20)"
    )


def _add_demo(sub: Subcommands) -> None:
    p = sub.add_parser("demo", help="local broker + synthetic Pulse traffic + the trainer")
    _common(p)
    p.add_argument("--events", type=int, default=200_000, help="synthetic events (default 200k)")
    p.add_argument("--variables", type=int, default=50, help="synthetic variables (default 50)")
    p.add_argument("--rules", type=int, default=200, help="synthetic rules (default 200)")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic traffic")
    p.add_argument(
        "--rate", type=float, default=20_000, help="events/s to produce (0 = as fast as possible)"
    )
    p.add_argument("--produce-only", action="store_true", help="only produce traffic and exit")


def _add_schemas(sub: Subcommands) -> None:
    p = sub.add_parser("schemas", help="JSON Schemas of the wire contracts")
    action = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = action.add_parser("export", help="write one JSON Schema file per event type")
    export.add_argument("directory", nargs="?", type=Path, default=DEFAULT_SCHEMA_DIR)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return load_settings(
        getattr(args, "config", None),
        bootstrap_servers=getattr(args, "bootstrap_servers", None),
        application_id=getattr(args, "application_id", None),
        log_level=getattr(args, "log_level", None),
        log_format=getattr(args, "log_format", None),
    )


def main(argv: Sequence[str] | None = None) -> int:
    # Until the service installs its own handlers, nothing is in flight: stopping now is a
    # clean stop (an orchestrator may send SIGTERM while we are still importing).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except StreamTrainerError as exc:
        log.debug("failed", exc_info=True)
        print(f"stream-trainer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "schemas":
        from stream_trainer.schemas import export_schemas

        for path in export_schemas(args.directory):
            print(path)
        return 0
    settings = settings_from_args(args)
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "run":
        from stream_trainer.commands.run import run_service

        return asyncio.run(run_service(settings, until_end=args.until_end))
    if args.command == "replay":
        from stream_trainer.commands.replay import replay

        return asyncio.run(replay(settings, args.start, args.output_prefix))
    if args.command == "dead-letters":
        from stream_trainer.commands.dead_letters import dead_letters

        return asyncio.run(dead_letters(settings, args))
    if args.command == "show":
        from stream_trainer.commands.show import show

        return asyncio.run(show(settings, args))
    if args.command == "forget":
        from stream_trainer.commands.forget import forget

        return forget(settings, args)  # asks before it runs its own event loop
    if args.command == "train":
        from stream_trainer.commands.train import train

        return train(settings, args)
    if args.command == "backfill":
        from stream_trainer.commands.backfill import backfill

        return asyncio.run(backfill(settings, args))
    if args.command == "demo":
        from stream_trainer.dev.demo.command import demo

        return asyncio.run(demo(settings, args))
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
