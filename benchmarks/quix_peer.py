"""The per-event Quix Streams peer: the same learning, one event at a time, exactly-once.

    python -m benchmarks.quix_peer --bootstrap HOST:PORT --inputs PREFIX --app-id PREFIX \
        --max-events N --state-dir DIR --out result.json [--commit-interval-s 5.0]

What a Quix Streams user would write for this job: one `StreamingDataFrame` per input topic
(raw bytes in, msgspec-decoded with the trainer's decoders), a stateful ``apply`` that keeps
each key's state in Quix's RocksDB store (changelogged by Quix), learns the event with the
plain per-event learners of `benchmarks.per_event` (DESIGN section 3) and returns that key's
new version, encoded exactly like the trainer's `ModelVersion` / `RuleVersion`, which goes
to the version topic under the same key: one version out per applied event.
``processing_guarantee="exactly-once"`` (Quix's Kafka transactions, read_committed input);
the commit interval is Quix's default unless ``--commit-interval-s`` says otherwise.
Rule trust keeps its dedupe memory as one store key per event id (``i:<event_id>``, the
newest ts it was applied at), so no stored value grows with a rule's traffic.

The app counts the events it consumed (refused ones included) and calls ``app.stop()`` on
the ``--max-events``-th: Quix then commits its last checkpoint and `run()` returns. It writes
the in-process timings: first event to the N-th, the 10%..90% rate, and first event to the
final commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from quixstreams import Application, State

from benchmarks import per_event
from benchmarks.common import PARTITIONS, Topics, create_topics
from stream_trainer.errors import DecodeError
from stream_trainer.events import decode_feedback, decode_observation, encode, ts_s, ts_us, utc_now

IDLE_STOP_S = 60.0  # a safety stop if the input holds fewer than --max-events events


class _Clock:
    """Counts consumed events; stops the app at ``target``; the 10% / 90% / last times."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.events = 0
        self.marks: dict[str, float] = {}
        self.app: Application | None = None

    def tick(self) -> None:
        self.events += 1
        now = time.monotonic()
        if self.events == 1:
            self.marks["first"] = now
        if self.events == max(1, self.target // 10):
            self.marks["p10"] = now
        if self.events == max(1, self.target * 9 // 10):
            self.marks["p90"] = now
        if self.events == self.target:
            self.marks["last"] = now
            assert self.app is not None
            self.app.stop()  # Quix commits its checkpoint, then run() returns

    def result(self, committed: float) -> dict[str, Any]:
        first, last = self.marks["first"], self.marks.get("last", committed)
        steady_events = self.target * 9 // 10 - max(1, self.target // 10)
        steady_s = self.marks.get("p90", last) - self.marks.get("p10", first)
        return {
            "events": self.events,
            "first_to_last_s": last - first,
            "first_to_committed_s": committed - first,
            "steady_events_per_s": steady_events / steady_s if steady_s > 0 else None,
            "events_per_s_first_to_last": self.events / (last - first) if last > first else None,
            "finished_wall": time.time(),
        }


class _Learners:
    """The two stateful functions; state is scoped to the message key by Quix."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.trust = per_event.TrustParams()
        self.rls = per_event.RlsParams()
        self.refused = 0

    def observation(self, value: bytes, state: State[str, Any]) -> bytes | None:
        self.clock.tick()
        try:
            event = decode_observation(value)
        except DecodeError:
            self.refused += 1
            return None
        model, at = state.get("m"), ts_us(event.ts)
        if per_event.rejection(model, at, event.value) is not None:
            self.refused += 1
            return None
        model = per_event.rls_step(model, at, event.value, self.rls)
        state.set("m", model)
        return encode(per_event.model_version(event.variable, model, utc_now(), self.rls))

    def feedback(self, value: bytes, state: State[str, Any]) -> bytes | None:
        self.clock.tick()
        try:
            event = decode_feedback(value)
        except DecodeError:
            self.refused += 1
            return None
        rule, seen_key = state.get("t"), "i:" + event.event_id
        seen, at = state.get(seen_key), ts_s(event.ts)
        if per_event.is_duplicate(rule, seen, self.trust):
            self.refused += 1
            return None
        state.set(seen_key, at if seen is None else max(seen, at))
        rule = per_event.trust_step(rule, at, event.success, event.weight, self.trust)
        state.set("t", rule)
        return encode(per_event.rule_version(event.rule_id, rule, utc_now(), self.trust))


def build_app(args: argparse.Namespace, clock: _Clock) -> tuple[Application, _Learners]:
    inputs, run = Topics(args.inputs), Topics(args.app_id)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=run.application_id,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=args.commit_interval_s,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    clock.app = app
    learners = _Learners(clock)
    raw = {"key_deserializer": "bytes", "value_deserializer": "bytes"}
    out = {"key_serializer": "bytes", "value_serializer": "bytes"}
    for source, sink, learn in (
        (inputs.observations, run.model_versions, learners.observation),
        (inputs.feedback, run.rule_versions, learners.feedback),
    ):
        sdf = app.dataframe(app.topic(source, **raw))  # type: ignore[arg-type]
        sdf = sdf.apply(learn, stateful=True).filter(lambda version: version is not None)
        sdf.to_topic(app.topic(sink, **out))  # type: ignore[arg-type]
    return app, learners


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--inputs", required=True, help="prefix of the input Topics")
    parser.add_argument("--app-id", required=True, help="prefix of this run's Topics")
    parser.add_argument("--max-events", type=int, required=True)
    parser.add_argument("--state-dir", required=True, help="Quix's RocksDB state directory")
    parser.add_argument("--commit-interval-s", type=float, default=5.0, help="Quix's default")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    run = Topics(args.app_id)
    asyncio.run(create_topics(args.bootstrap, [run.model_versions, run.rule_versions], PARTITIONS))
    clock = _Clock(args.max_events)
    app, learners = build_app(args, clock)
    app.run(timeout=IDLE_STOP_S, collect=False)
    if "first" not in clock.marks:
        raise SystemExit("the Quix peer consumed no events")
    result = clock.result(time.monotonic())
    result.update(refused=learners.refused, commit_interval_s=args.commit_interval_s)
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
