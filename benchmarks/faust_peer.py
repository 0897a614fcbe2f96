"""The Faust peer: a faust-streaming worker running the same learners through the adapter.

    python -m benchmarks.faust_peer --bootstrap HOST:PORT --inputs PREFIX --app-id ID \
        --mode event|take --max-events N --out result.json

The agent reads both input topics (raw bytes) and hands them to
`stream_trainer.integrations.faust.FaustLearnerHost`, which learns and publishes the same
versions, metrics and changelog records as stream-trainer. ``event`` calls it once per event
(``stream.events()``), ``take`` once per ``stream.take_events(--take, within=linger)``
micro-batch. After ``--max-events`` events it flushes the producer, writes the timings and
stops the worker. Faust's guarantee is at-least-once (acks after processing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import faust
from faust.worker import Worker

from benchmarks.common import Topics
from stream_trainer.config import Settings
from stream_trainer.integrations.faust import FaustLearnerHost
from stream_trainer.kafka.admin import prepare_topics


def settings_for(bootstrap: str, inputs: Topics, run: Topics) -> Settings:
    return Settings(
        bootstrap_servers=bootstrap,
        application_id=run.application_id,
        topic_observations=inputs.observations,
        topic_feedback=inputs.feedback,
        topic_model_versions=run.model_versions,
        topic_rule_versions=run.rule_versions,
        topic_training_metrics=run.metrics,
        topic_dead_letter=run.dead_letter,
    )


def build_app(args: argparse.Namespace, settings: Settings) -> faust.App:
    app = faust.App(
        settings.application_id,
        broker=f"kafka://{settings.bootstrap_servers}",
        store="memory://",
        web_enabled=False,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        # Room for a whole take batch, so Faust's buffer is not what limits it.
        stream_buffer_maxsize=max(4096, 2 * args.take),
    )
    inputs = app.topic(
        settings.topic_observations,
        settings.topic_feedback,
        key_serializer="raw",
        value_serializer="raw",
    )
    host = FaustLearnerHost(settings, instance_id=settings.application_id)
    clock = _Clock(args.max_events, Path(args.out))

    async def handle(messages: list[Any]) -> None:
        await host.publish(host.process(messages), app.producer.send)
        if clock.count(len(messages)):
            await app.producer.flush()
            clock.finish()
            os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful shutdown

    @app.agent(inputs)
    async def train(stream: Any) -> None:
        if args.mode == "event":
            async for event in stream.events():
                await handle([event.message])
        else:
            async for events in stream.take_events(args.take, within=args.linger_s):
                await handle([e.message for e in events])

    return app


class _Clock:
    """Counts processed events; times first event to the ``target``-th."""

    def __init__(self, target: int, out: Path) -> None:
        self.target = target
        self.out = out
        self.events = 0
        self.calls = 0
        self.first: float | None = None
        self.done = False

    def count(self, n: int) -> bool:
        if self.first is None:
            self.first = time.monotonic()
        self.events += n
        self.calls += 1
        return not self.done and self.events >= self.target

    def finish(self) -> None:
        self.done = True
        assert self.first is not None
        seconds = time.monotonic() - self.first
        self.out.write_text(
            json.dumps(
                {
                    "events": self.events,
                    "mean_records_per_call": self.events / self.calls,
                    "first_to_last_s": seconds,
                    "steady_events_per_s": self.events / seconds,
                    "finished_wall": time.time(),
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--inputs", required=True, help="prefix of the input Topics")
    parser.add_argument("--app-id", required=True, help="prefix of this run's Topics")
    parser.add_argument("--mode", choices=("event", "take"), required=True)
    parser.add_argument("--max-events", type=int, required=True)
    parser.add_argument("--take", type=int, default=5000)
    parser.add_argument("--linger-s", type=float, default=0.05)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    settings = settings_for(args.bootstrap, Topics(args.inputs), Topics(args.app_id))
    asyncio.run(prepare_topics(settings))  # outputs and changelog, as stream-trainer makes them
    app = build_app(args, settings)
    Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
