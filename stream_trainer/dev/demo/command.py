"""`stream-trainer demo`: a broker, synthetic Pulse traffic and the trainer, in one command.

What it does, in order:

1. Kafka: ``--bootstrap-servers`` (or ``STREAM_TRAINER_BOOTSTRAP_SERVERS`` / the config
   file) when given; otherwise a Kafka already answering on localhost:9092; otherwise the
   detached local broker of `scripts/kafka-local` (started, from Maven Central jars, when
   none runs; `scripts/kafka-local stop` stops it and deletes its data).
2. Fresh names per run, so a rerun on the same broker never mixes with old demo data: the
   application id becomes ``stream-trainer-demo-<run>`` unless one was configured, and the
   topics become ``demo-<run>.<name>`` (changelog included) unless *any* topic name was
   configured, in which case the configured names are used as they are. The run's names
   are printed at start so the outputs can be inspected afterwards.
3. Input topics with 6 partitions each are created if missing, and `SyntheticPulse`
   traffic (AR variables with a regime switch, rules with different success rates, one of
   which degrades mid-run, plus 0.5% invalid events) is produced in the background at
   ``--rate`` events/s while the trainer runs in this process. Progress goes to stderr.
4. Once the trainer has committed everything produced, it is stopped (drained) and the
   learned trust and forecasters, read back from the output topics ``read_committed``,
   are printed next to the ground truth on stdout.

``--produce-only`` does step 3's producing alone, to the configured topics (no renaming,
no local broker: the docker-compose demo producer feeds the compose trainer this way).
SIGINT/SIGTERM stop producing, drain the trainer and exit 130 without the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from stream_trainer.aio import cancel_and_wait
from stream_trainer.config import Settings
from stream_trainer.dev.broker.config import choose_free_ports
from stream_trainer.dev.broker.local_broker import ensure_local_broker
from stream_trainer.dev.broker.probe import fetch_cluster_info
from stream_trainer.dev.synthetic import SyntheticPulse
from stream_trainer.errors import ConfigError, KafkaError, StreamTrainerError
from stream_trainer.service import Trainer

from .progress import CatchUp, ProgressLine, show_progress
from .report import read_learned, report
from .traffic import (
    Produced,
    TrafficPlan,
    ensure_input_topics,
    produce,
    traffic,
    wait_reachable,
)

DEFAULTS = Settings()
DEFAULT_RATE = 20_000.0
LOCAL_KAFKA = ("localhost", 9092)
REACHABLE_TIMEOUT_S = 15.0
PRODUCE_ONLY_REACHABLE_TIMEOUT_S = 120.0  # compose may still be starting Kafka
INTERRUPTED = 130
TOPIC_FIELDS = (
    "topic_observations",
    "topic_feedback",
    "topic_model_versions",
    "topic_rule_versions",
    "topic_training_metrics",
    "topic_dead_letter",
)


def plan_from_args(args: argparse.Namespace) -> TrafficPlan:
    for flag in ("events", "variables", "rules"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    return TrafficPlan(
        seed=args.seed,
        events=args.events,
        variables=args.variables,
        rules=args.rules,
        rate=float(getattr(args, "rate", None) or DEFAULT_RATE),
    )


async def demo(settings: Settings, args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    with _interrupts() as interrupted:
        if args.produce_only:
            return await produce_only(settings, plan, interrupted)
        bootstrap = await choose_bootstrap(settings)
        if interrupted.is_set():  # while the local broker was starting
            return INTERRUPTED
        run_settings = demo_settings(settings, bootstrap, run_label())
        with _quiet_trainer_logs(settings):
            return await run_demo(run_settings, plan, interrupted)


def run_label() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def demo_settings(settings: Settings, bootstrap: str, label: str) -> Settings:
    """This run's settings: its broker, and fresh names unless names were configured."""
    changes: dict[str, object] = {"bootstrap_servers": bootstrap}
    if settings.application_id == DEFAULTS.application_id:
        changes["application_id"] = f"stream-trainer-demo-{label}"
    names = (*TOPIC_FIELDS, "topic_changelog")
    if all(getattr(settings, f) == getattr(DEFAULTS, f) for f in names):
        for name in TOPIC_FIELDS:
            changes[name] = f"demo-{label}.{getattr(settings, name)}"
        app = changes.get("application_id", settings.application_id)
        changes["topic_changelog"] = f"demo-{label}.{app}-state-changelog"
    if settings.http_port and not _port_free(settings.http_host, settings.http_port):
        # A trainer (or an earlier demo) already serves metrics there: take a free port.
        changes["http_port"] = choose_free_ports(1, settings.http_host)[0]
    return msgspec.structs.replace(settings, **changes)


async def choose_bootstrap(settings: Settings) -> str:
    """A configured cluster, else one answering on localhost:9092, else the local broker."""
    if settings.bootstrap_servers != DEFAULTS.bootstrap_servers:
        return settings.bootstrap_servers
    if await asyncio.to_thread(_kafka_answers, *LOCAL_KAFKA):
        return settings.bootstrap_servers
    _say("no Kafka on localhost:9092: using the local broker of scripts/kafka-local, started")
    _say("if needed (its first start downloads Kafka's jars from Maven Central) ...")
    bootstrap = await asyncio.to_thread(ensure_local_broker)
    _say(f"local Kafka broker at {bootstrap} (stop it with: scripts/kafka-local stop)")
    return bootstrap


async def produce_only(settings: Settings, plan: TrafficPlan, interrupted: asyncio.Event) -> int:
    await wait_reachable(settings, PRODUCE_ONLY_REACHABLE_TIMEOUT_S)
    await ensure_input_topics(settings)
    pulse = plan.pulse(settings)
    produced = Produced()
    _say(
        f"producing {plan.total:,} records to {settings.topic_observations} and "
        f"{settings.topic_feedback} at {settings.bootstrap_servers}"
    )
    records = traffic(pulse, plan, settings.max_event_bytes)
    producer = asyncio.create_task(produce(settings, records, plan.rate, produced))
    progress = asyncio.create_task(show_progress(ProgressLine(plan.total, produced)))
    try:
        completed = await _first_of(producer, interrupted)
    finally:
        await cancel_and_wait(producer, progress)
    _say(f"produced {produced.acked:,} records")
    return 0 if completed else INTERRUPTED


async def run_demo(settings: Settings, plan: TrafficPlan, interrupted: asyncio.Event) -> int:
    await wait_reachable(settings, REACHABLE_TIMEOUT_S)
    await ensure_input_topics(settings)
    _banner(settings, plan)
    pulse = plan.pulse(settings)
    trainer = Trainer(settings)
    started = time.monotonic()
    try:
        await trainer.start()
        completed = await _train(settings, plan, pulse, trainer, interrupted)
    finally:
        _say("stopping the trainer (it drains: in-flight batches are committed) ...")
        await trainer.stop()
    if not completed:
        _say("interrupted: no report")
        return INTERRUPTED
    _say(f"trained on {plan.total:,} records in {time.monotonic() - started:.1f} s")
    print(report(pulse, await read_learned(settings)), flush=True)
    return 0


async def _train(
    settings: Settings,
    plan: TrafficPlan,
    pulse: SyntheticPulse,
    trainer: Trainer,
    interrupted: asyncio.Event,
) -> bool:
    """Produce in the background until the trainer has committed it all (True) or a stop."""
    produced = Produced()
    catch_up = CatchUp(settings, produced)
    records = traffic(pulse, plan, settings.max_event_bytes)
    tasks: list[asyncio.Task[Any]] = []
    try:
        await catch_up.start()
        tasks += [
            asyncio.create_task(catch_up.wait(), name="demo-catch-up"),
            asyncio.create_task(
                produce(settings, records, plan.rate, produced), name="demo-produce"
            ),
            asyncio.create_task(_fail_if_stops(trainer), name="demo-trainer"),
            asyncio.create_task(
                show_progress(ProgressLine(plan.total, produced, trainer, catch_up)),
                name="demo-progress",
            ),
        ]
        return await _first_of(tasks[0], interrupted, *tasks[1:])
    finally:
        await cancel_and_wait(*tasks)
        await catch_up.close()


async def _fail_if_stops(trainer: Trainer) -> None:
    await trainer.wait()  # raises the trainer's error, if it failed
    raise StreamTrainerError("the trainer stopped before it caught up with the producer")


async def _first_of(
    main: asyncio.Task[Any], interrupted: asyncio.Event, *others: asyncio.Task[Any]
) -> bool:
    """Wait for `main` (True) or an interrupt (False); any of `others` failing raises."""
    stop = asyncio.create_task(interrupted.wait(), name="demo-interrupt")
    watched: set[asyncio.Task[Any]] = {main, stop, *others}
    try:
        while True:
            done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if main in done:
                main.result()
                return True
            if stop in done:
                return False
            for task in done:
                task.result()  # an error ends the demo; a helper that finished is dropped
    finally:
        await cancel_and_wait(stop)


@contextlib.contextmanager
def _interrupts() -> Iterator[asyncio.Event]:
    """SIGINT/SIGTERM set the event (the demo drains) instead of killing the process."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _on_signal, event, sig)
    try:
        yield event
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _on_signal(event: asyncio.Event, sig: signal.Signals) -> None:
    _say(f"received {sig.name}: stopping")
    event.set()


@contextlib.contextmanager
def _quiet_trainer_logs(settings: Settings) -> Iterator[None]:
    """At the default level the trainer's INFO lines would drown the progress line."""
    logger = logging.getLogger("stream_trainer")
    previous = logger.level
    if settings.log_level == DEFAULTS.log_level:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _banner(settings: Settings, plan: TrafficPlan) -> None:
    _say(
        f"demo: {plan.events:,} events (+{plan.bad_events:,} invalid) for {plan.variables} "
        f"variables and {plan.rules} rules, at {plan.rate:,.0f} events/s"
    )
    _say(f"  kafka {settings.bootstrap_servers}, application id {settings.application_id}")
    _say(f"  inputs {settings.topic_observations}, {settings.topic_feedback}")
    _say(
        f"  outputs {settings.topic_rule_versions}, {settings.topic_model_versions}, "
        f"{settings.topic_dead_letter}"
    )
    if settings.http_port:
        _say(f"  metrics http://localhost:{settings.http_port}/metrics")


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _kafka_answers(host: str, port: int) -> bool:
    try:
        fetch_cluster_info(host, port, timeout=1.0)
    except KafkaError:
        return False
    return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
