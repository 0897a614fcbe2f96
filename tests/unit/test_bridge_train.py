"""`stream-trainer train` (issue 13): files -> the service's learning path -> output files."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.parquet as pq
import pytest

from stream_trainer.bridge import train as bridge_train
from stream_trainer.bridge.progress import FileProgress
from stream_trainer.cli import main
from stream_trainer.errors import DecodeError
from stream_trainer.events import (
    ModelVersion,
    RuleVersion,
    decode_feedback,
    decode_observation,
    ts_s,
    ts_us,
)
from tests import bridge_files as bf
from tests.reference_learners import reference_forecaster, reference_trust

PUBLISHED_AT = "2026-06-01T00:00:00Z"
MAX_EVENT_BYTES = 2048  # the history's oversized records are just over it
TRUST_RTOL, COEF_RTOL = 1e-9, 1e-6


def train(tmp_path: Path, out: str, *args: str, env: dict[str, str] | None = None) -> Path:
    directory = tmp_path / out
    rc = main(["train", *args, "--output-dir", str(directory), "--published-at", PUBLISHED_AT])
    assert rc == 0
    return directory


def read_versions(directory: Path) -> tuple[dict[str, RuleVersion], dict[str, ModelVersion]]:
    rules = [
        msgspec.json.decode(line, type=RuleVersion)
        for line in (directory / "rule-versions.jsonl").read_bytes().splitlines()
    ]
    models = [
        msgspec.json.decode(line, type=ModelVersion)
        for line in (directory / "model-versions.jsonl").read_bytes().splitlines()
    ]
    return {r.rule_id: r for r in rules}, {m.model_id: m for m in models}


def dead_letters(directory: Path) -> list[dict[str, Any]]:
    return [
        msgspec.json.decode(x) for x in (directory / "dead-letters.jsonl").read_bytes().splitlines()
    ]


def close(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


@pytest.fixture(autouse=True)
def _small_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_TRAINER_MAX_EVENT_BYTES", str(MAX_EVENT_BYTES))
    monkeypatch.setenv("STREAM_TRAINER_MAX_BATCH_EVENTS", "700")


def reference(entries: list[bf.Entry]) -> tuple[Any, Any, dict[tuple[str, int], str]]:
    """Reference learners over the valid events; the reason of each refused (kind, index)."""
    observations, feedback = [], []
    obs_index, fb_index = [], []
    reasons: dict[tuple[str, int], str] = {}
    counts = Counter[str]()
    for entry in entries:
        index = counts[entry.kind]
        counts[entry.kind] += 1
        try:
            if entry.kind == "observation":
                o = decode_observation(entry.value, max_bytes=MAX_EVENT_BYTES)
                observations.append((o.variable, ts_us(o.ts), o.value))
                obs_index.append(index)
            else:
                f = decode_feedback(entry.value, max_bytes=MAX_EVENT_BYTES)
                feedback.append((f.rule_id, f.event_id, ts_s(f.ts), f.success, f.weight))
                fb_index.append(index)
        except DecodeError as exc:
            reasons[(entry.kind, index)] = exc.reason
    trust, forecaster = reference_trust(feedback), reference_forecaster(observations)
    reasons.update({("feedback", fb_index[i]): r for i, r in trust.rejected.items()})
    reasons.update({("observation", obs_index[i]): r for i, r in forecaster.rejected.items()})
    return trust, forecaster, reasons


def test_train_learns_the_reference_models_and_dead_letters_each_bad_line(tmp_path: Path) -> None:
    entries = bf.kafka_history(seed=31, models=60, events=6000)
    obs = bf.write_jsonl(
        tmp_path / "obs.jsonl", [e.value for e in entries if e.kind == "observation"], "gz"
    )
    fb = bf.write_jsonl(tmp_path / "fb.ndjson", [e.value for e in entries if e.kind == "feedback"])
    out = train(tmp_path, "out", "--observations", str(obs), "--feedback", str(fb))

    trust, forecaster, reasons = reference(entries)
    rules, models = read_versions(out)
    assert set(rules) == set(trust.models) and set(models) == set(forecaster.models)
    for rule_id, ref in trust.models.items():
        got = rules[rule_id]
        assert all(
            close(getattr(got, f), ref[f], TRUST_RTOL) for f in ("alpha", "beta", "evidence")
        )
        assert got.status == ref["status"]
    for variable, ref in forecaster.models.items():
        got = models[variable]
        assert got.n_observations == ref["n_observations"]
        assert all(
            close(a, b, COEF_RTOL)
            for a, b in zip(got.coefficients, ref["coefficients"], strict=True)
        )

    letters = dead_letters(out)
    kinds = {"observations": "observation", "feedback": "feedback"}
    assert {(kinds[d["input"]], d["line"] - 1): d["reason"] for d in letters} == reasons
    # The history labels each bad record with its reason: the same ones, line by line.
    values: dict[str, list[bytes]] = {"observation": [], "feedback": []}
    labels = {}
    for entry in entries:
        if entry.reason:
            labels[(entry.kind, len(values[entry.kind]))] = entry.reason
        values[entry.kind].append(entry.value)
    assert labels == reasons
    paths = {"observation": str(obs), "feedback": str(fb)}
    for d in letters:
        kind = kinds[d["input"]]
        assert d["file"] == paths[kind] and d["error"]
        assert bf.original_bytes(d) == values[kind][d["line"] - 1]  # the line as written

    summary = msgspec.json.decode((out / "summary.json").read_bytes())
    assert summary["totals"]["records"] == len(entries)
    assert summary["totals"]["invalid"] == len(letters) == len(reasons)
    assert summary["totals"]["invalid_by_reason"] == dict(sorted(Counter(reasons.values()).items()))
    assert [i["file"] for i in summary["inputs"]] == [str(obs), str(fb)]


def write_all_formats(
    tmp_path: Path, history: list[tuple[str, dict[str, Any], str | None]]
) -> dict[str, list[str]]:
    """The same history as JSON Lines (plain, split in 3 files), CSV (zst) and Parquet."""
    variants: dict[str, list[str]] = {}
    for kind in ("observation", "feedback"):
        docs = [d for k, d, _ in history if k == kind]
        base = tmp_path / kind
        base.mkdir()
        values = [bf.dumps(d) for d in docs]
        third = len(values) // 3
        split = base / "split"
        split.mkdir()
        parts = [values[:third], values[third : 2 * third], values[2 * third :]]
        for i, part in enumerate(parts):
            bf.write_jsonl(split / f"part-{i}.jsonl", part, "gz" if i == 1 else "")
        variants.setdefault("jsonl", []).append(str(bf.write_jsonl(base / "all.jsonl", values)))
        variants.setdefault("split", []).append(str(split))
        variants.setdefault("csv", []).append(
            str(bf.write_csv(base / "all.csv", kind, docs, "zst"))
        )
        variants.setdefault("parquet", []).append(
            str(bf.write_parquet(base / "all.parquet", kind, docs, 500))
        )
    return variants


def test_every_format_gives_the_same_versions_and_dead_letters(tmp_path: Path) -> None:
    history = bf.tabular_history(seed=32, models=40, events=5000)
    variants = write_all_formats(tmp_path, history)
    results = {}
    for name, (obs, fb) in variants.items():
        out = train(tmp_path, f"out-{name}", "--observations", obs, "--feedback", fb)
        offset = 1 if name == "csv" else 0  # the CSV header is line 1
        results[name] = (
            (out / "rule-versions.jsonl").read_bytes(),
            (out / "model-versions.jsonl").read_bytes(),
            [(d["input"], d["line"] - offset, d["reason"]) for d in dead_letters(out)],
        )
    jsonl = results["jsonl"]
    # Same batches (cut by count, not by format): byte-identical outputs.
    assert results["csv"] == jsonl
    assert results["parquet"] == jsonl
    expected = Counter(r for _, _, r in history if r)
    assert Counter(r for _, _, r in jsonl[2]) == expected
    # Three files cut the batches elsewhere: the same models to DESIGN's tolerances.
    assert_same_models(tmp_path / "out-split", tmp_path / "out-jsonl")
    split_letters = Counter((d["input"], d["reason"]) for d in dead_letters(tmp_path / "out-split"))
    assert split_letters == Counter((kind, reason) for kind, _, reason in jsonl[2])


def assert_same_models(a: Path, b: Path) -> None:
    rules_a, models_a = read_versions(a)
    rules_b, models_b = read_versions(b)
    assert set(rules_a) == set(rules_b) and set(models_a) == set(models_b)
    for key, rule in rules_a.items():
        other = rules_b[key]
        assert all(
            close(getattr(rule, f), getattr(other, f), TRUST_RTOL)
            for f in ("alpha", "beta", "trust", "evidence")
        )
        assert (rule.status, rule.trained_through) == (other.status, other.trained_through)
    for key, model in models_a.items():
        other = models_b[key]
        assert model.n_observations == other.n_observations
        assert model.trained_through == other.trained_through
        assert all(
            close(x, y, COEF_RTOL)
            for x, y in zip(model.coefficients, other.coefficients, strict=True)
        )


def test_parquet_format_writes_the_same_versions_as_parquet(tmp_path: Path) -> None:
    entries = bf.kafka_history(seed=33, models=20, events=1500)
    obs = bf.write_jsonl(
        tmp_path / "o.jsonl", [e.value for e in entries if e.kind == "observation"]
    )
    fb = bf.write_jsonl(tmp_path / "f.jsonl", [e.value for e in entries if e.kind == "feedback"])
    out = train(
        tmp_path, "out", "--observations", str(obs), "--feedback", str(fb), "--format", "parquet"
    )
    rules, models = read_versions(out)
    table = pq.read_table(out / "model-versions.parquet").to_pylist()
    assert [row["model_id"] for row in table] == sorted(models)
    assert all(row["coefficients"] == models[row["model_id"]].coefficients for row in table)
    assert all(row["trained_through"] == models[row["model_id"]].trained_through for row in table)
    rule_rows = pq.read_table(out / "rule-versions.parquet").to_pylist()
    assert {r["rule_id"]: r["trust"] for r in rule_rows} == {k: v.trust for k, v in rules.items()}
    # A later run without --format parquet leaves no stale Parquet behind.
    train(tmp_path, "out", "--observations", str(obs), "--feedback", str(fb))
    assert not (out / "model-versions.parquet").exists()


def test_an_interrupt_leaves_the_previous_outputs_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = bf.kafka_history(seed=34, models=20, events=3000)
    obs = bf.write_jsonl(
        tmp_path / "o.jsonl", [e.value for e in entries if e.kind == "observation"]
    )
    out = train(tmp_path, "out", "--observations", str(obs))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = 0
    learn = bridge_train.Learner.learn

    def interrupted(self: bridge_train.Learner, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return learn(self, *args)

    monkeypatch.setattr(bridge_train.Learner, "learn", interrupted)
    assert main(["train", "--observations", str(obs), "--output-dir", str(out)]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp dir either


def test_sigint_stops_the_cli_with_nothing_written(tmp_path: Path) -> None:
    """A named pipe holds `train` mid-input, so the signal lands mid-run, deterministically."""
    fifo = tmp_path / "live.jsonl"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    command = ["train", "--observations", str(fifo), "--output-dir", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_trainer.cli", *command],
        stderr=subprocess.PIPE,
        # A shell's background job inherits SIGINT ignored; the child must see Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines = [e.value + b"\n" for e in bf.kafka_history(35, 10, 2000) if e.kind == "observation"]
    try:
        with fifo.open("wb") as writer:
            writer.write(b"".join(lines[:-50]))
            writer.flush()
            deadline = time.monotonic() + 60
            while not list(out.glob(".train-*")) and time.monotonic() < deadline:
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            rc = wait_feeding(proc, writer, lines[-50:], deadline=time.monotonic() + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert rc == 130, stderr
    assert list(out.iterdir()) == []
    assert "interrupted; nothing written" in stderr


def wait_feeding(
    proc: subprocess.Popen[bytes], writer: Any, lines: list[bytes], deadline: float
) -> int | None:
    """Wait for the exit; meanwhile a line now and then returns a read blocked on the pipe.

    If the kernel hands SIGINT to another thread of the process (a library's), the main
    thread learns of it when its read returns, as it soon does on a regular file.
    """
    for line in lines:
        try:
            return proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                break
        try:
            writer.write(line)
            writer.flush()
        except BrokenPipeError:
            break
    return proc.wait(timeout=10)


def test_progress_bar_on_a_terminal_and_one_summary_line_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    screen = io.StringIO()
    bar = FileProgress(screen, enabled=True)
    bar.start(1, 2, "obs.jsonl.gz", 2_000_000)
    bar.update(1_000_000, 5000)
    bar.done()
    drawn = screen.getvalue()
    assert "[1/2] obs.jsonl.gz" in drawn and "100%" in drawn and "5,000 events" in drawn
    assert "  0% [................] 0.0/2.0 MB" in drawn  # drawn at start; updates throttled
    assert "2.0/2.0 MB" in drawn and drawn.endswith("\n")
    silent = io.StringIO()
    quiet = FileProgress(silent, enabled=False)
    quiet.start(1, 1, "x", 10)
    quiet.update(5, 1)
    quiet.done()
    assert silent.getvalue() == ""

    obs = bf.write_jsonl(
        tmp_path / "o.jsonl",
        [e.value for e in bf.kafka_history(36, 5, 300) if e.kind == "observation"],
    )
    capsys.readouterr()
    train(tmp_path, "out", "--observations", str(obs))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("train: ") and "events/s" in err[0]


def test_a_bad_input_is_an_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(["train", "--observations", str(tmp_path / "nope.jsonl"), "--output-dir", str(out)])
        == 2
    )
    assert "nope.jsonl: no such file" in capsys.readouterr().err
    bad = tmp_path / "cut.jsonl.gz"
    bad.write_bytes(bf.compressed(b'{"a":1}\n' * 5000, "gz")[:100])
    assert main(["train", "--observations", str(bad), "--output-dir", str(out)]) == 2
    assert "cut.jsonl.gz: cannot be read" in capsys.readouterr().err
    assert list(out.iterdir()) == []
