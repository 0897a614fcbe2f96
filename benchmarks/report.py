"""Results -> markdown tables and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGETS = {
    "ratio_to_ceiling": 0.7,
    "events_per_s": 100_000,
    "speedup_over_faust": 20,
    "p99_ms": 250,
    "bytes_per_rule": 1024,
    "bytes_per_model": 2048,
}


def _n(x: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    w = results["workload"]
    out = [
        f"# Benchmark run {results['started']}",
        "",
        f"Command: `{results.get('command', 'python -m benchmarks.run')}`; code "
        f"{results.get('code_start', '?')} at start, {results.get('code_end', '?')} at end.",
        "",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['mem_total_gib']} GiB; "
        f"Python {m['python']}, numpy {m['numpy']}, msgspec {m['msgspec']}, "
        f"aiokafka {m['aiokafka']}, faust-streaming {m['faust_streaming']}; "
        f"OPENBLAS_CORETYPE={m['openblas_coretype']}.",
        f"Load average (1/5/15 min) at start / end: {results['load_start']} / "
        f"{results['load_end']}; each row below gives the load right after it "
        "(other processes share the 2 cores with the broker and the runs).",
        "",
        f"Workload: {w['events']:,} events, 1:1 observations:feedback, "
        f"{w['n_variables']:,} variables, {w['n_rules']:,} rules, {w['partitions']} "
        f"partitions, ~{w['mean_bytes']:.0f}-byte JSON"
        + (f"; prefill took {results['prefill_s']:.0f} s." if "prefill_s" in results else "."),
        "",
    ]
    out += _throughput(results)
    out += _latency(results.get("latency"))
    out += _restore(results.get("restore"))
    out += _scale(results.get("scale") or [])
    if "learners_table" in results:
        out += ["## Learner micro-benchmarks (benchmarks/learners.py)", ""]
        out.append(results["learners_table"])
    return "\n".join(out) + "\n"


def trainer_name(r: dict[str, Any]) -> str:
    name = f"stream-trainer {r['guarantee']}, batch {r['max_batch_events']}"
    if r.get("replicas", 1) > 1:
        name += f", {r['replicas']} replicas"
    if r.get("gated"):
        name += ", gated start"
    return name + (" (py-spy attached)" if r.get("profiled") else "")


def _throughput(results: dict[str, Any]) -> list[str]:
    if "ceiling" not in results and not results.get("trainer"):
        return []
    ceiling = results.get("ceiling", {}).get("steady_events_per_s")
    take = next((r for r in results.get("faust", []) if r["mode"].startswith("take")), None)
    faust = take["steady_events_per_s"] if take else None
    out = [
        "## Throughput",
        "",
        "| run | events | wall s | events/s (wall) | steady events/s | x ceiling (steady)"
        " | x Faust take (steady) | load 1/5/15 after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows = [("ceiling: aiokafka getmany + msgspec decode", results["ceiling"])] if ceiling else []
    rows += [(trainer_name(r), r) for r in results["trainer"]]
    rows += [
        (f"Faust peer, {r['mode']} ({r['mean_records_per_call']:.1f} records/call)", r)
        for r in results.get("faust", [])
    ]
    for name, r in rows:
        steady = r.get("steady_events_per_s")
        out.append(
            f"| {name} | {r['events']:,} | {r['wall_s']:.1f} | {_n(r['events_per_s'])}"
            f" | {_n(steady)} | {_n(_ratio(steady, ceiling), '.3f')}"
            f" | {_n(_ratio(steady, faust), '.1f')} | {r.get('load', 'n/a')} |"
        )
    return [*out, "", *_ratios(results), ""]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def _pick(
    results: dict[str, Any], guarantee: str, batch: int, replicas: int = 1, gated: bool = False
) -> Any:
    return next(
        (
            r
            for r in results["trainer"]
            if r["guarantee"] == guarantee
            and r["max_batch_events"] == batch
            and r.get("replicas", 1) == replicas
            and r.get("gated", False) == gated
        ),
        None,
    )


def _ratios(results: dict[str, Any]) -> list[str]:
    lines = []
    eos, alo = _pick(results, "exactly_once", 5000), _pick(results, "at_least_once", 5000)
    two = _pick(results, "exactly_once", 5000, 2, gated=True)
    one = _pick(results, "exactly_once", 5000, 1, gated=True)
    for label, a, b in (
        ("exactly-once / at-least-once (batch 5,000)", eos, alo),
        ("2 replicas / 1 replica (exactly-once, batch 5,000, both gated)", two, one),
        ("2 replicas gated / 1 replica ungated (exactly-once, batch 5,000)", two, eos),
    ):
        if a and b:
            steady = _ratio(a["steady_events_per_s"], b["steady_events_per_s"])
            wall = _ratio(a["events_per_s"], b["events_per_s"])
            line = f"- {label}: steady {_n(steady, '.2f')}, wall {_n(wall, '.2f')}"
            if a.get("from_gate_events_per_s") and b.get("from_gate_events_per_s"):
                gate = _ratio(a["from_gate_events_per_s"], b["from_gate_events_per_s"])
                line += f", release to all committed {_n(gate, '.2f')}"
            lines.append(line)
    for r in results.get("faust", []):
        if eos and r["steady_events_per_s"]:
            lines.append(
                f"- stream-trainer exactly-once batch 5,000 vs Faust {r['mode']} (steady): "
                f"{_n(_ratio(eos['steady_events_per_s'], r['steady_events_per_s']), '.1f')}x"
            )
    for r in results["trainer"]:
        if r.get("gated"):
            lines.append(
                f"- {trainer_name(r)}: input released {_n(r['gate_s'], '.1f')} s after start "
                f"(once the group held every task); release to everything committed "
                f"{_n(r['from_gate_s'], '.1f')} s = {_n(r['from_gate_events_per_s'])} events/s; "
                "assignments: "
                + "; ".join(
                    f"process {i}: " + ", ".join(f"{t:.1f} s {tasks}" for t, tasks in each)
                    for i, each in enumerate(r.get("assignments") or [])
                )
            )
        lines.append(
            f"- {trainer_name(r)}: first commit {_n(r['first_commit_s'], '.1f')} s, everything "
            f"committed {_n(r.get('consumed_s'), '.1f')} s, exit {r['wall_s']:.1f} s after "
            f"start; peak RSS {r['peak_rss_mib']:.0f} MiB; metrics account for "
            f"{r['metrics_account_for']:,} of {r['events']:,} records"
        )
        if r.get("rate_by_decile") and r["events"] >= 1_000_000:
            lines.append(
                "  - committed events/s per tenth of the input: "
                + ", ".join(_n(x) for x in r["rate_by_decile"])
            )
    return lines


def _latency(lat: dict[str, Any] | None) -> list[str]:
    if not lat:
        return []
    return [
        "## Latency",
        "",
        f"Produce rate {lat['target_rate']:,.0f} events/s requested, "
        f"{lat['achieved_rate']:,.0f} achieved; {lat['feedback_events']:,} feedback events "
        f"({lat['unmatched']} never seen); load after: {lat.get('load', 'n/a')}.",
        "",
        "| p50 ms | p99 ms | max ms |",
        "|---:|---:|---:|",
        f"| {_n(lat['p50_ms'])} | {_n(lat['p99_ms'])} | {_n(lat['max_ms'])} |",
        "",
    ]


def _restore(r: dict[str, Any] | None) -> list[str]:
    if not r:
        return []
    return [
        "## Restore (benchmarks/restore.py, fresh process, 1-partition compacted changelog)",
        "",
        f"{r['rules']:,} rules + {r['models']:,} models, one record per key "
        f"({r['records']:,} records, {r['bytes'] / 2**20:.1f} MiB; rules with "
        f"{r['feedback_per_rule']} fresh event ids, AR models after "
        f"{r['observations_per_model']} observations); load after: {r['load']}.",
        "",
        "| read_changelog s | TaskState.restore s | total s | s per 100k rules + 100k models"
        " | rules load s / 100k | models load s / 100k |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {r['read_s']:.2f} | {r['restore_s']:.2f} | {r['total_s']:.2f}"
        f" | {r['s_per_100k_models']:.2f} | {r['rules_load_s_per_100k']:.2f}"
        f" | {r['models_load_s_per_100k']:.2f} |",
        "",
    ]


def _scale(scale: list[dict[str, Any]]) -> list[str]:
    if not scale:
        return []
    out = [
        "## Scale and memory (learners directly, no Kafka)",
        "",
        "| rules + models | RSS MiB | bytes/rule | bytes/model | events/s (learn+versions+dump) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for s in scale:
        out.append(
            f"| {s['models']:,} + {s['models']:,} | {s['rss_mib']:,.0f}"
            f" | {s['bytes_per_rule']:,.0f} | {s['bytes_per_model']:,.0f}"
            f" | {s['events_per_s']:,.0f} |"
        )
    return [*out, ""]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for guarantee in ("exactly_once", "at_least_once"):
        runs = sorted(
            (
                r
                for r in results["trainer"]
                if r["guarantee"] == guarantee and r.get("replicas", 1) == 1 and not r.get("gated")
            ),
            key=lambda r: r["max_batch_events"],
        )
        if runs:
            left.plot(
                [r["max_batch_events"] for r in runs],
                [r["steady_events_per_s"] or 0 for r in runs],
                marker="o",
                label=f"stream-trainer {guarantee}",
            )
    for r in results["trainer"]:
        if r.get("replicas", 1) > 1:
            left.scatter(
                [r["max_batch_events"]],
                [r["steady_events_per_s"] or 0],
                marker="*",
                s=90,
                c="tab:red",
                label=f"{r['replicas']} replicas, {r['guarantee']}",
            )
    if "ceiling" in results:
        ceiling = results["ceiling"]["steady_events_per_s"]
        left.axhline(ceiling, ls="--", c="grey", label="ceiling")
    for i, r in enumerate(results.get("faust", [])):
        left.axhline(r["steady_events_per_s"], ls=":", c=f"C{i + 2}", label=f"Faust {r['mode']}")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("max_batch_events")
    left.set_ylabel("steady events/s")
    left.set_title("Throughput vs batch size")
    left.legend(fontsize=7)
    lat = results.get("latency")
    if lat and lat["p50_ms"] is not None:
        names = ["p50", "p99", "max"]
        values = [lat["p50_ms"], lat["p99_ms"], lat["max_ms"]]
        right.bar(names, values, color=["tab:green", "tab:orange", "tab:red"])
        right.axhline(TARGETS["p99_ms"], ls="--", c="grey", label="p99 target 250 ms")
        right.set_ylabel("ms")
        right.set_title(f"Feedback -> committed RuleVersion at {lat['achieved_rate']:,.0f} ev/s")
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
