"""The demo's final report: what the trainer published, read back, against the truth.

The learned values come from the output topics, read ``read_committed`` like any Pulse
consumer would, so the report proves the whole path (produce, train, publish, commit).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from aiokafka.errors import KafkaError as AioKafkaError

from stream_trainer.config import Settings
from stream_trainer.dev.synthetic import SyntheticPulse
from stream_trainer.errors import KafkaError
from stream_trainer.events import ModelVersion, RuleVersion
from stream_trainer.kafka.clients import (
    new_consumer,
    read_to_end,
    stop_consumer,
    topic_partitions,
)

SAMPLE_RULES = 8
SAMPLE_VARIABLES = 6

V = TypeVar("V", RuleVersion, ModelVersion)


@dataclass(frozen=True, slots=True)
class Learned:
    """The newest published version of every rule and model."""

    rules: dict[str, RuleVersion]
    models: dict[str, ModelVersion]


async def read_learned(settings: Settings) -> Learned:
    rules = await read_latest(settings, settings.topic_rule_versions, RuleVersion)
    models = await read_latest(settings, settings.topic_model_versions, ModelVersion)
    return Learned({r.rule_id: r for r in rules}, {m.model_id: m for m in models})


async def read_latest(settings: Settings, topic: str, kind: type[V]) -> list[V]:
    """The last committed version per key of a versions topic, up to its current end."""
    decoder = msgspec.json.Decoder(kind)
    consumer = new_consumer(settings, max_partition_fetch_bytes=4 * 1024 * 1024)
    latest: dict[bytes | None, V] = {}
    try:
        await consumer.start()
        partitions = await topic_partitions(consumer, topic)
        if not partitions:
            raise KafkaError(f"output topic {topic} does not exist")
        async for _, records in read_to_end(consumer, partitions):
            latest.update((r.key, decoder.decode(r.value)) for r in records)
    except AioKafkaError as exc:
        raise KafkaError(f"cannot read {topic}: {exc!r}", retriable=exc.retriable) from exc
    finally:
        await stop_consumer(consumer)
    return list(latest.values())


def report(pulse: SyntheticPulse, learned: Learned) -> str:
    """Both tables and the summary lines the demo prints at the end."""
    parts = [
        rules_table(pulse, learned.rules),
        "",
        variables_table(pulse, learned.models),
        "",
        *summary(pulse, learned),
    ]
    return "\n".join(parts)


def sample_rules(pulse: SyntheticPulse) -> list[str]:
    steady = [r for r in pulse.rules if r not in pulse.degrading_rules]
    return [*pulse.degrading_rules, *steady][:SAMPLE_RULES]


def rules_table(pulse: SyntheticPulse, rules: dict[str, RuleVersion]) -> str:
    lines = [
        "RULES (trust = Beta posterior mean with a half-life; * = degraded mid-run)",
        f"{'rule':<26} {'true rate':>14} {'trust':>7} {'95% interval':>16} "
        f"{'status':<10} {'evidence':>8}  truth inside",
    ]
    for rule in sample_rules(pulse):
        before = pulse.true_rate(rule)
        now = pulse.true_rate(rule, degraded=True)
        truth = f"{before:.2f} -> {now:.2f}" if rule in pulse.degrading_rules else f"{now:.2f}"
        name = rule + (" *" if rule in pulse.degrading_rules else "")
        got = rules.get(rule)
        if got is None:
            lines.append(f"{name:<26} {truth:>14}  (not published)")
            continue
        inside = "yes" if got.trust_low <= now <= got.trust_high else "no"
        interval = f"[{got.trust_low:.3f}, {got.trust_high:.3f}]"
        lines.append(
            f"{name:<26} {truth:>14} {got.trust:>7.3f} {interval:>16} "
            f"{got.status:<10} {got.evidence:>8.1f}  {inside}"
        )
    return "\n".join(lines)


def variables_table(pulse: SyntheticPulse, models: dict[str, ModelVersion]) -> str:
    lines = [
        "VARIABLES (AR lag coefficients; the regime switched mid-run: 'now' is the new one)",
        f"{'variable':<10} {'p':>2}  {'true lags (now)':<24} {'learned lags':<24} "
        f"{'mean true/learned':>18} {'skill':>6} {'obs':>6}",
    ]
    for variable in pulse.variables[:SAMPLE_VARIABLES]:
        true = pulse.true_coefficients(variable, after_switch=True)
        got = models.get(variable)
        if got is None:
            lines.append(f"{variable:<10} {len(true) - 1:>2}  (not published)")
            continue
        learned = _lags(got, len(true) - 1)
        means = f"{pulse.true_mean(variable):.1f} / {_mean(got.coefficients):.1f}"
        skill = "-" if got.skill is None else f"{got.skill:.2f}"
        lines.append(
            f"{variable:<10} {len(true) - 1:>2}  {_fmt(true[1:]):<24} {_fmt(learned):<24} "
            f"{means:>18} {skill:>6} {got.n_observations:>6}"
        )
    return "\n".join(lines)


def summary(pulse: SyntheticPulse, learned: Learned) -> list[str]:
    """One line per claim the demo makes, over every rule and variable (not the sample)."""
    steady = [r for r in pulse.rules if r not in pulse.degrading_rules and r in learned.rules]
    covered = sum(
        learned.rules[r].trust_low <= pulse.true_rate(r) <= learned.rules[r].trust_high
        for r in steady
    )
    lines = [
        f"rules: {covered}/{len(steady)} steady rules have their true rate inside the "
        f"learned 95% interval"
    ]
    for rule in pulse.degrading_rules:
        got = learned.rules.get(rule)
        state = "not published" if got is None else f"trust {got.trust:.3f}, {got.status}"
        lines.append(
            f"degraded rule: {rule} true {pulse.true_rate(rule):.2f} -> "
            f"{pulse.true_rate(rule, degraded=True):.2f}, learned {state}"
        )
    skills = [m.skill for m in learned.models.values() if m.skill is not None]
    median = f"{statistics.median(skills):.2f}" if skills else "-"
    nearer = sum(_nearer_new_regime(pulse, v, learned.models[v]) for v in learned.models)
    lines.append(
        f"variables: median skill {median}; learned lags nearer the new regime than the old "
        f"for {nearer}/{len(learned.models)}"
    )
    return lines


def _nearer_new_regime(pulse: SyntheticPulse, variable: str, got: ModelVersion) -> bool:
    if variable not in pulse.variables:
        return False
    old = pulse.true_coefficients(variable)[1:]
    new = pulse.true_coefficients(variable, after_switch=True)[1:]
    learned = _lags(got, len(new))
    return _distance(learned, new) < _distance(learned, old)


def _lags(model: ModelVersion, order: int) -> list[float]:
    # The trainer's order may exceed the process's: the extra lags should be near zero.
    return list(model.coefficients[1 : order + 1])


def _mean(coefficients: Sequence[float]) -> float:
    """The stationary mean c / (1 - sum a_i) implied by AR coefficients."""
    denominator = 1.0 - sum(coefficients[1:])
    return coefficients[0] / denominator if abs(denominator) > 1e-9 else float("nan")


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{v:+.2f}" for v in values)
