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
    out = [
        f"# Benchmark run {results['started']}",
        "",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['mem_total_gib']} GiB; "
        f"Python {m['python']}, numpy {m['numpy']}, msgspec {m['msgspec']}, "
        f"aiokafka {m['aiokafka']}, faust-streaming {m['faust_streaming']}; "
        f"OPENBLAS_CORETYPE={m['openblas_coretype']}.",
        f"Load average at start / end: {results['load_start']} / {results['load_end']} "
        "(other processes on the machine share its 2 cores with the broker and the runs).",
        "",
        f"Workload: {results['workload']['events']:,} events, 1:1 observations:feedback, "
        f"{results['workload']['n_variables']:,} variables, {results['workload']['n_rules']:,} "
        f"rules, {results['workload']['partitions']} partitions, "
        f"~{results['workload']['mean_bytes']:.0f}-byte JSON; prefill took "
        f"{results['prefill_s']:.0f} s.",
        "",
        "## Throughput",
        "",
        "| run | events | wall s | events/s (wall) | steady events/s | x ceiling (steady) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ceiling = results["ceiling"]["steady_events_per_s"]
    rows = [("ceiling: aiokafka getmany + msgspec decode", results["ceiling"])]
    rows += [
        (f"stream-trainer {r['guarantee']}, batch {r['max_batch_events']}", r)
        for r in results["trainer"]
    ]
    rows += [
        (f"Faust peer, {r['mode']} ({r['mean_records_per_call']:.1f} records/call)", r)
        for r in results["faust"]
    ]
    for name, r in rows:
        steady = r.get("steady_events_per_s")
        ratio = None if steady is None else steady / ceiling
        out.append(
            f"| {name} | {r['events']:,} | {r['wall_s']:.1f} | {_n(r['events_per_s'])}"
            f" | {_n(steady)} | {_n(ratio, '.3f')} |"
        )
    out += ["", *_speedups(results), "", "## Latency", ""]
    lat = results.get("latency")
    if lat:
        out += [
            f"Produce rate {lat['target_rate']:,.0f} events/s requested, "
            f"{lat['achieved_rate']:,.0f} achieved; {lat['feedback_events']:,} feedback events "
            f"({lat['unmatched']} never seen).",
            "",
            "| p50 ms | p99 ms | max ms |",
            "|---:|---:|---:|",
            f"| {_n(lat['p50_ms'])} | {_n(lat['p99_ms'])} | {_n(lat['max_ms'])} |",
        ]
    out += ["", "## Scale and memory (learners directly, no Kafka)", ""]
    out += [
        "| rules + models | RSS MiB | bytes/rule | bytes/model | events/s (learn+versions+dump) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for s in results["scale"]:
        out.append(
            f"| {s['models']:,} + {s['models']:,} | {s['rss_mib']:,.0f}"
            f" | {s['bytes_per_rule']:,.0f} | {s['bytes_per_model']:,.0f}"
            f" | {s['events_per_s']:,.0f} |"
        )
    out += ["", "## Learner micro-benchmarks (benchmarks/learners.py)", ""]
    out.append(results.get("learners_table", "not run"))
    return "\n".join(out) + "\n"


def _speedups(results: dict[str, Any]) -> list[str]:
    eos = [r for r in results["trainer"] if r["guarantee"] == "exactly_once"]
    best_st = max((r["steady_events_per_s"] or 0 for r in results["trainer"]), default=0)
    lines = []
    for r in results["faust"]:
        if r["steady_events_per_s"]:
            lines.append(
                f"- stream-trainer (best steady, {best_st:,.0f}/s) vs Faust {r['mode']}: "
                f"{best_st / r['steady_events_per_s']:.1f}x"
            )
    if eos:
        lines.append(
            f"- first commit after start (exactly-once, batch {eos[0]['max_batch_events']}): "
            f"{_n(eos[0]['first_commit_s'], '.1f')} s"
        )
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for guarantee in ("exactly_once", "at_least_once"):
        runs = sorted(
            (r for r in results["trainer"] if r["guarantee"] == guarantee),
            key=lambda r: r["max_batch_events"],
        )
        if runs:
            left.plot(
                [r["max_batch_events"] for r in runs],
                [r["steady_events_per_s"] or 0 for r in runs],
                marker="o",
                label=f"stream-trainer {guarantee}",
            )
    left.axhline(results["ceiling"]["steady_events_per_s"], ls="--", c="grey", label="ceiling")
    for i, r in enumerate(results["faust"]):
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
