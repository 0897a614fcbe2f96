"""The side-by-side table: every figure of issue 10 for each workload, against its target."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TARGETS = {
    "events_per_s": 120_000,
    "ratio_to_ceiling": 0.35,
    "ratio_to_ceiling_stretch": 0.5,
    "ratio_to_quix": 5.0,
    "replica_scaling": 1.6,
    "kernel_ns": 100.0,
    "restore_records_per_s": 300_000,
    "p50_ms": 100.0,
    "p99_ms": 250.0,
    "cpu_us_per_event": 20.0,
    "cpu_cores": 0.15,
}

Getter = Callable[[dict[str, Any]], float | None]


def n(x: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def pick(
    w: dict[str, Any], guarantee: str, batch: int, replicas: int = 1, gated: bool = False
) -> Any:
    return next(
        (
            r
            for r in w.get("trainer") or []
            if r["guarantee"] == guarantee
            and r["max_batch_events"] == batch
            and r.get("replicas", 1) == replicas
            and r.get("gated", False) == gated
        ),
        None,
    )


@dataclass(frozen=True)
class Row:
    label: str
    get: Getter
    fmt: str = ",.0f"
    target: float | None = None
    at_most: bool = False  # the target is an upper bound

    def cell(self, w: dict[str, Any]) -> tuple[str, bool | None]:
        value = self.get(w)
        if value is None or self.target is None:
            return n(value, self.fmt), None
        met = value <= self.target if self.at_most else value >= self.target
        return n(value, self.fmt), met

    def target_text(self) -> str:
        if self.target is None:
            return ""
        return ("<= " if self.at_most else ">= ") + format(self.target, ",g")


def _steady(run: Any) -> float | None:
    return run["steady_events_per_s"] if run else None


def _eos(w: dict[str, Any]) -> float | None:
    return _steady(pick(w, "exactly_once", 5000))


def _ceiling(w: dict[str, Any]) -> float | None:
    return (w.get("ceiling") or {}).get("steady_events_per_s")


def _quix(w: dict[str, Any]) -> float | None:
    return (w.get("quix") or {}).get("steady_events_per_s")


def _faust(mode: str) -> Getter:
    def get(w: dict[str, Any]) -> float | None:
        run = next((r for r in w.get("faust") or [] if r["mode"].startswith(mode)), None)
        return _steady(run)

    return get


def _replicas(w: dict[str, Any]) -> float | None:
    two, one = pick(w, "exactly_once", 5000, 2, True), pick(w, "exactly_once", 5000, 1, True)
    return ratio(_steady(two), _steady(one))


def _learner(kind: str, field: str, code: str = "this") -> Getter:
    def get(w: dict[str, Any]) -> float | None:
        result = (w.get("learners") or {}).get(code) or {}
        rows = [r for r in result.get("timings") or [] if r["learner"] == kind]
        row = next((r for r in rows if r["batch"] == 5000), None)
        return None if row is None else float(row[field])

    return get


def _latency(kind: str, field: str) -> Getter:
    def get(w: dict[str, Any]) -> float | None:
        run = next((r for r in w.get("latency") or [] if r["kind"] == kind), None)
        return None if run is None else run[field]

    return get


def _field(step: str, field: str) -> Getter:
    return lambda w: (w.get(step) or {}).get(field)


ROWS = (
    Row("ceiling steady events/s (consume + decode)", _ceiling),
    Row("stream-trainer EOS batch 5000, 1 replica, steady events/s", _eos,
        target=TARGETS["events_per_s"]),
    Row("  x ceiling (stretch 0.5)", lambda w: ratio(_eos(w), _ceiling(w)), ".3f",
        TARGETS["ratio_to_ceiling"]),
    Row("stream-trainer EOS batch 5000, 2 replicas (gated), steady events/s",
        lambda w: _steady(pick(w, "exactly_once", 5000, 2, True))),
    Row("  2 replicas / 1 replica (both gated)", _replicas, ".2f", TARGETS["replica_scaling"]),
    Row("Quix Streams peer (per event, EOS) steady events/s", _quix),
    Row("  stream-trainer 1 replica / Quix", lambda w: ratio(_eos(w), _quix(w)), ".1f",
        TARGETS["ratio_to_quix"]),
    Row("Faust peer take(5000) steady events/s", _faust("take")),
    Row("Faust peer per event steady events/s", _faust("event")),
    Row("trust learn_batch ns/event (batch 5000)", _learner("trust", "learn_batch_ns"),
        target=TARGETS["kernel_ns"], at_most=True),
    Row("forecaster learn_batch ns/event (batch 5000)",
        _learner("forecaster", "learn_batch_ns"), target=TARGETS["kernel_ns"], at_most=True),
    Row("  trust, baseline code (numpy path) ns/event",
        _learner("trust", "learn_batch_ns", "baseline")),
    Row("  forecaster, baseline code (numpy path) ns/event",
        _learner("forecaster", "learn_batch_ns", "baseline")),
    Row("  trust per-event Python loop ns/event", _learner("trust", "per_event_ns")),
    Row("  forecaster per-event Python loop ns/event", _learner("forecaster", "per_event_ns")),
    Row("restore changelog records/s", _field("restore", "records_per_s"),
        target=TARGETS["restore_records_per_s"]),
    Row("latency p50 ms at the fixed rate (10k/s)", _latency("fixed", "p50_ms"),
        target=TARGETS["p50_ms"], at_most=True),
    Row("latency p99 ms at the fixed rate (10k/s)", _latency("fixed", "p99_ms"),
        target=TARGETS["p99_ms"], at_most=True),
    Row("  achieved rate events/s", _latency("fixed", "achieved_rate")),
    Row("latency p50 ms at half the max steady rate", _latency("half max steady", "p50_ms"),
        target=TARGETS["p50_ms"], at_most=True),
    Row("latency p99 ms at half the max steady rate", _latency("half max steady", "p99_ms"),
        target=TARGETS["p99_ms"], at_most=True),
    Row("  achieved rate events/s", _latency("half max steady", "achieved_rate")),
    Row("CPU µs per event at the CPU-step rate (8k/s)", _field("cpu", "cpu_us_per_event"),
        ".1f", TARGETS["cpu_us_per_event"], at_most=True),
    Row("  cores", _field("cpu", "cpu_cores"), ".3f", TARGETS["cpu_cores"], at_most=True),
)  # fmt: skip


def side_by_side(results: dict[str, Any]) -> list[str]:
    workloads = list(results["workloads"].values())
    if not workloads:
        return []
    labels = [w["workload"]["label"] for w in workloads]
    out = [
        "## Both workloads against the targets (issue 10)",
        "",
        "| figure | " + " | ".join(labels) + " | target | met |",
        "|---|" + "---:|" * len(labels) + "---|---|",
    ]
    for row in ROWS:
        cells = [row.cell(w) for w in workloads]
        if all(text == "n/a" for text, _ in cells):
            continue  # a step not run: no row
        met = [
            f"{label}: {'met' if ok else 'missed'}"
            for label, (_, ok) in zip(labels, cells, strict=True)
            if ok is not None
        ]
        out.append(
            f"| {row.label} | "
            + " | ".join(text for text, _ in cells)
            + f" | {row.target_text()} | {', '.join(met)} |"
        )
    return [*out, ""]
