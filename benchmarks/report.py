"""Results -> markdown tables and a PNG plot (both workloads; the targets in report_targets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report_targets import TARGETS, n, pick, ratio, side_by_side


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        f"# Benchmark run {results['started']}",
        "",
        f"Command: `{results.get('command', 'python -m benchmarks.run')}`; code "
        f"{results.get('code_start', '?')} at start, {results.get('code_end', '?')} at end.",
        "",
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['mem_total_gib']} GiB; "
        f"Python {m['python']}, numpy {m['numpy']}, msgspec {m['msgspec']}, "
        f"aiokafka {m['aiokafka']}, faust-streaming {m['faust_streaming']}, "
        f"quixstreams {m.get('quixstreams')}; OPENBLAS_CORETYPE={m['openblas_coretype']}.",
        f"Load average (1/5/15 min) at start / end: {results['load_start']} / "
        f"{results['load_end']}; each row below gives the load right after it "
        "(other processes share the 2 cores with the broker and the runs).",
        "",
        *side_by_side(results),
    ]
    for w in results["workloads"].values():
        out += _workload(w)
    out += _scale(results.get("scale") or [])
    return "\n".join(out) + "\n"


def _workload(w: dict[str, Any]) -> list[str]:
    d = w["workload"]
    out = [
        f"## Workload {d['label']}",
        "",
        f"{d['events']:,} events, 1:1 observations:feedback, {d['n_variables']:,} variables, "
        f"{d['n_rules']:,} rules, {d['partitions']} partitions, ~{d['mean_bytes']:.0f}-byte JSON"
        + (f"; prefill took {w['prefill_s']:.0f} s." if "prefill_s" in w else "."),
        "",
    ]
    out += _throughput(w)
    out += _latency(w.get("latency") or [])
    out += _restore(w.get("restore"))
    out += _cpu(w.get("cpu"))
    for which, learners in (w.get("learners") or {}).items():
        if isinstance(learners, dict):
            out += [f"### Learner micro-benchmarks ({which} code)", ""]
            out.append(learners.get("table") or f"failed: {learners.get('error')}")
    return out


def trainer_name(r: dict[str, Any]) -> str:
    name = f"stream-trainer {r['guarantee']}, batch {r['max_batch_events']}"
    if r.get("replicas", 1) > 1:
        name += f", {r['replicas']} replicas"
    if r.get("gated"):
        name += ", gated start"
    return name + (" (py-spy attached)" if r.get("profiled") else "")


def _throughput(w: dict[str, Any]) -> list[str]:
    if "ceiling" not in w and not w["trainer"] and "quix" not in w and not w["faust"]:
        return []
    ceiling = (w.get("ceiling") or {}).get("steady_events_per_s")
    quix = (w.get("quix") or {}).get("steady_events_per_s")
    out = [
        "### Throughput",
        "",
        "| run | events | wall s | events/s (wall) | steady events/s | x ceiling (steady)"
        " | x Quix (steady) | load 1/5/15 after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows = [("ceiling: aiokafka getmany + msgspec decode", w["ceiling"])] if ceiling else []
    rows += [(trainer_name(r), r) for r in w["trainer"]]
    if w.get("quix"):
        q = w["quix"]
        rows.append(
            (f"Quix Streams peer, per event, exactly-once, commit {q['commit_interval_s']:g} s", q)
        )
    rows += [
        (f"Faust peer, {r['mode']} ({r['mean_records_per_call']:.1f} records/call)", r)
        for r in w["faust"]
    ]
    for name, r in rows:
        steady = r.get("steady_events_per_s")
        out.append(
            f"| {name} | {r['events']:,} | {r['wall_s']:.1f} | {n(r['events_per_s'])}"
            f" | {n(steady)} | {n(ratio(steady, ceiling), '.3f')}"
            f" | {n(ratio(steady, quix), '.1f')} | {r.get('load', 'n/a')} |"
        )
    return [*out, "", *_notes(w), ""]


def _notes(w: dict[str, Any]) -> list[str]:
    lines = []
    eos, alo = pick(w, "exactly_once", 5000), pick(w, "at_least_once", 5000)
    two, one = pick(w, "exactly_once", 5000, 2, True), pick(w, "exactly_once", 5000, 1, True)
    for label, a, b in (
        ("exactly-once / at-least-once (batch 5,000)", eos, alo),
        ("2 replicas / 1 replica (exactly-once, batch 5,000, both gated)", two, one),
    ):
        if a and b:
            steady = ratio(a["steady_events_per_s"], b["steady_events_per_s"])
            wall = ratio(a["events_per_s"], b["events_per_s"])
            line = f"- {label}: steady {n(steady, '.2f')}, wall {n(wall, '.2f')}"
            if a.get("from_gate_events_per_s") and b.get("from_gate_events_per_s"):
                gate = ratio(a["from_gate_events_per_s"], b["from_gate_events_per_s"])
                line += f", release to all committed {n(gate, '.2f')}"
            lines.append(line)
    if w.get("quix"):
        q = w["quix"]
        lines.append(
            f"- Quix peer: {q['versions_committed']:,} versions committed for {q['events']:,} "
            f"events ({q['refused']} refused); first event to the last "
            f"{q['first_to_last_s']:.1f} s, to its final commit {q['first_to_committed_s']:.1f} s"
        )
    for r in w["trainer"]:
        lines.append(
            f"- {trainer_name(r)}: first commit {n(r['first_commit_s'], '.1f')} s, everything "
            f"committed {n(r.get('consumed_s'), '.1f')} s, exit {r['wall_s']:.1f} s after "
            f"start; peak RSS {r['peak_rss_mib']:.0f} MiB; metrics account for "
            f"{r['metrics_account_for']:,} of {r['events']:,} records"
            + (f"; input released at {n(r['gate_s'], '.1f')} s" if r.get("gated") else "")
        )
    return lines


def _latency(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    out = [
        "### Latency (feedback produced -> RuleVersion visible read_committed)",
        "",
        "| rate | requested | achieved | feedback events | unseen | p50 ms | p99 ms | max ms"
        " | load after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for lat in runs:
        out.append(
            f"| {lat['kind']} | {lat['target_rate']:,.0f} | {lat['achieved_rate']:,.0f}"
            f" | {lat['feedback_events']:,} | {lat['unmatched']} | {n(lat['p50_ms'])}"
            f" | {n(lat['p99_ms'])} | {n(lat['max_ms'])} | {lat.get('load', 'n/a')} |"
        )
    return [*out, ""]


def _restore(r: dict[str, Any] | None) -> list[str]:
    if not r:
        return []
    nan = float("nan")
    return [
        "### Restore (benchmarks/restore.py, fresh process, 1-partition changelog)",
        "",
        f"{r['rules']:,} rules + {r['models']:,} models, {r['records_per_key']} record(s) per key "
        f"({r['records']:,} records, {r['bytes'] / 2**20:.1f} MiB); load after: {r['load']}.",
        "",
        "| read_changelog s | TaskState.restore s | total s | records/s | loop lag max / p99 ms |",
        "|---:|---:|---:|---:|---:|",
        f"| {r['read_s']:.2f} | {r['restore_s']:.2f} | {r['total_s']:.2f}"
        f" | {r['records_per_s']:,.0f}"
        f" | {r.get('loop_lag_max_ms', nan):.0f} / {r.get('loop_lag_p99_ms', nan):.0f} |",
        "",
    ]


def _cpu(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    return [
        "### CPU at a fixed rate (the trainer process's own utime + stime)",
        "",
        f"{c['rate']:,.0f} events/s requested for {c['seconds']:.0f} s "
        f"({n(c['achieved_rate'])} achieved); measured over {n(c.get('steady_s'), '.0f')} s after "
        f"a {c['warmup_s']:.0f} s warm-up: {n(c.get('steady_events'))} events committed, "
        f"{n(c.get('cpu_s'), '.2f')} CPU s = **{n(c.get('cpu_us_per_event'), '.1f')} µs per "
        f"event**, {n(c.get('cpu_cores'), '.3f')} cores; RSS {n(c.get('rss_mb_first'), '.0f')}"
        f" -> {n(c.get('rss_mb_last'), '.0f')} MB; load after: {c.get('load', 'n/a')}.",
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
    """Steady events/s per system and latency per rate, both workloads side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    workloads = list(results["workloads"].values())
    systems = ("ceiling", "ST x1", "ST x2", "Quix", "Faust take")
    width = 0.8 / max(1, len(workloads))
    for i, w in enumerate(workloads):
        values = [_system_rate(w, s) or 0 for s in systems]
        xs = [k + i * width for k in range(len(systems))]
        left.bar(xs, values, width, label=w["workload"]["label"])
    left.set_xticks([k + width * (len(workloads) - 1) / 2 for k in range(len(systems))])
    left.set_xticklabels(systems)
    left.set_yscale("log")
    left.axhline(TARGETS["events_per_s"], ls="--", c="grey", label="target 120k")
    left.set_ylabel("steady events/s")
    left.set_title("Throughput")
    left.legend(fontsize=7)
    labels, p50, p99 = [], [], []
    for w in workloads:
        for lat in w.get("latency") or []:
            labels.append(f"{w['workload']['label']}\n{lat['achieved_rate']:,.0f}/s")
            p50.append(lat["p50_ms"] or 0)
            p99.append(lat["p99_ms"] or 0)
    if labels:
        xs = list(range(len(labels)))
        right.bar([x - 0.2 for x in xs], p50, 0.4, label="p50", color="tab:green")
        right.bar([x + 0.2 for x in xs], p99, 0.4, label="p99", color="tab:orange")
        right.set_xticks(xs)
        right.set_xticklabels(labels, fontsize=7)
        right.axhline(TARGETS["p99_ms"], ls="--", c="grey", label="p99 target 250 ms")
        right.axhline(TARGETS["p50_ms"], ls=":", c="grey", label="p50 target 100 ms")
        right.set_ylabel("ms")
        right.set_title("Feedback -> committed RuleVersion")
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _system_rate(w: dict[str, Any], system: str) -> float | None:
    if system == "ceiling":
        return (w.get("ceiling") or {}).get("steady_events_per_s")
    if system == "Quix":
        return (w.get("quix") or {}).get("steady_events_per_s")
    if system == "Faust take":
        take = next((r for r in w["faust"] if r["mode"].startswith("take")), None)
        return take["steady_events_per_s"] if take else None
    run = (
        pick(w, "exactly_once", 5000, 2, True)
        if system == "ST x2"
        else pick(w, "exactly_once", 5000)
    )
    return run["steady_events_per_s"] if run else None
