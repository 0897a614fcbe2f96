"""The soak's result -> markdown (benchmarks/soak.py)."""

from __future__ import annotations

from typing import Any

ROWS_IN_SERIES = 13  # the markdown shows about this many evenly spaced samples


def _n(x: float | None, fmt: str = ",.1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def markdown(r: dict[str, Any]) -> str:
    out = [
        f"# Soak {r.get('started', '')}",
        "",
        f"Command: `{r.get('command', 'python -m benchmarks.soak')}`; load at end "
        f"{r.get('load_end', 'n/a')}.",
        "",
        f"{r['variables']:,} variables + {r['rules']:,} rules, {r['rate']:,.0f} events/s "
        f"requested for {r['seconds'] / 60:.1f} min ({_n(r['achieved_rate'], ',.0f')} achieved, "
        f"{r['sent']:,} events), event time at {r['event_time_speed']:g}x wall clock; "
        f"samples every {r['sample_s']:g} s, warm-up {r['warmup_s']:.0f} s; trainer ready "
        f"{r['start_to_ready_s']:.1f} s after spawn; everything committed "
        f"{_n(r['caught_up_s'])} s after the producer stopped.",
        "",
        "| steady events/s | CPU µs/event | cores | RSS MB first / last / max (after warm-up)"
        " | RSS slope MB/h | second half MB/h |",
        "|---:|---:|---:|---|---:|---:|",
        f"| {_n(r.get('steady_events_per_s'), ',.0f')} | {_n(r.get('cpu_us_per_event'))}"
        f" | {_n(r.get('cpu_cores'), '.3f')} | {_n(r.get('rss_mb_first'))} /"
        f" {_n(r.get('rss_mb_last'))} / {_n(r.get('rss_mb_max'))}"
        f" | {_n(r.get('rss_slope_mb_per_h'), '+.2f')}"
        f" | {_n(r.get('rss_slope_second_half_mb_per_h'), '+.2f')} |",
        "",
        *_series(r.get("samples") or []),
        *restarts(r),
    ]
    return "\n".join(out) + "\n"


def _series(samples: list[dict[str, Any]]) -> list[str]:
    if len(samples) < 2:
        return []
    step = max(1, len(samples) // (ROWS_IN_SERIES - 1))
    picked = samples[::step]
    if picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    out = [
        "| t s | RSS MB | cores since previous row | events/s since previous row"
        " | lag (sent - committed) |",
        "|---:|---:|---:|---:|---:|",
    ]
    previous = None
    for s in picked:
        cores = rate = None
        if previous is not None and s["t_s"] > previous["t_s"]:
            dt = s["t_s"] - previous["t_s"]
            cores = (s["cpu_s"] - previous["cpu_s"]) / dt
            rate = (s["committed"] - previous["committed"]) / dt
        out.append(
            f"| {s['t_s']:.0f} | {s['rss_bytes'] / 1e6:.1f} | {_n(cores, '.3f')}"
            f" | {_n(rate, ',.0f')} | {s['sent'] - s['committed']:,} |"
        )
        previous = s
    return [*out, ""]


def restarts(r: dict[str, Any]) -> list[str]:
    if not r.get("restarts"):
        return []
    supported = r.get("state_dir_supported")
    changelog = r.get("changelog") or {}
    out = [
        "## Restart (spawn to `/readyz` 200, same application id, after the soak)",
        "",
        f"Changelog `{changelog.get('topic', '?')}`: {changelog.get('end_offsets', 0):,} records "
        f"written (summed end offsets). Soak trainer drained in {_n(r.get('soak_stop_s'))} s "
        f"(exit {r.get('soak_exit')}). `STREAM_TRAINER_STATE_DIR` "
        + ("is a setting of this trainer." if supported else "is NOT a setting of this "
           "trainer yet: both rows measure the no-snapshot restore."),
        "",
        "| STREAM_TRAINER_STATE_DIR | ready s | drain s | exit |",
        "|---|---:|---:|---:|",
    ]  # fmt: skip
    for run in r["restarts"]:
        out.append(
            f"| {'set' if run['state_dir'] else 'unset'} | {run['ready_s']:.2f}"
            f" | {run['stop_s']:.2f} | {run['exit']} |"
        )
    return [*out, ""]
