"""Same answer as the stream (issue 13): one history through `train` and through `run`.

The history (valid traffic, re-sent duplicates, out-of-order observations and every kind of
invalid record) is written to files for `stream-trainer train` and produced, keyed as the
service expects, for `stream-trainer run --until-end`. The final version of every key must
match to DESIGN section 3's tolerances, `n_observations` and the dead letters exactly
(version numbers may differ: the stream publishes once per commit, `train` once at the end).
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from stream_trainer.events import ModelVersion, RuleVersion
from tests import bridge_files as bf
from tests.integration import harness as h

pytestmark = pytest.mark.kafka

MAX_EVENT_BYTES = 2048  # the history's oversized records are just over it
SETTINGS = {"max_event_bytes": MAX_EVENT_BYTES, "max_batch_events": 1000}


def run_train(tmp_path: Path, entries: list[bf.Entry]) -> Path:
    obs = [e.value for e in entries if e.kind == "observation"]
    fb = [e.value for e in entries if e.kind == "feedback"]
    obs_path = bf.write_jsonl(tmp_path / "observations.jsonl", obs, "zst")
    half = len(fb) // 2  # feedback in two files, read in the order given
    fb_paths = [
        bf.write_jsonl(tmp_path / "feedback-1.jsonl", fb[:half], "gz"),
        bf.write_jsonl(tmp_path / "feedback-2.jsonl", fb[half:]),
    ]
    out = tmp_path / "train-out"
    env = {**os.environ, **{f"STREAM_TRAINER_{k.upper()}": str(v) for k, v in SETTINGS.items()}}
    args = ["--observations", str(obs_path), "--feedback", *map(str, fb_paths)]
    done = subprocess.run(
        h.cli("train", *args, "--output-dir", str(out)), env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return out


def file_versions(out: Path) -> tuple[dict[str, RuleVersion], dict[str, ModelVersion]]:
    rule_lines = (out / "rule-versions.jsonl").read_bytes().splitlines()
    model_lines = (out / "model-versions.jsonl").read_bytes().splitlines()
    rules = [msgspec.json.decode(line, type=RuleVersion) for line in rule_lines]
    models = [msgspec.json.decode(line, type=ModelVersion) for line in model_lines]
    return {r.rule_id: r for r in rules}, {m.model_id: m for m in models}


def file_dead_letters(out: Path) -> Counter[tuple[str, str, bytes]]:
    letters = map(msgspec.json.decode, (out / "dead-letters.jsonl").read_bytes().splitlines())
    kind = {"observations": "observation", "feedback": "feedback"}
    return Counter((kind[d["input"]], d["reason"], bf.original_bytes(d)) for d in letters)


def stream_dead_letters(outputs: h.Outputs, topics: h.Topics) -> Counter[tuple[str, str, bytes]]:
    kind = {topics.observations: "observation", topics.feedback: "feedback"}
    found: Counter[tuple[str, str, bytes]] = Counter()
    for record in outputs.dead_letters:
        headers = dict(record.headers)
        found[
            (kind[headers["source.topic"].decode()], headers["reason"].decode(), record.value)
        ] += 1
    return found


def differences(
    stream: h.Outputs, rules: dict[str, RuleVersion], models: dict[str, ModelVersion]
) -> list[str]:
    problems = []
    if set(stream.rules) != set(rules) or set(stream.models) != set(models):
        problems.append("different keys")
    for rule_id, versions in stream.rules.items():
        got, want = versions[-1], rules[rule_id]
        for f in ("alpha", "beta", "trust", "trust_low", "trust_high", "evidence"):
            if not h._close(getattr(got, f), getattr(want, f), h.TRUST_RTOL):
                problems.append(f"rule {rule_id}: {f} {getattr(got, f)} != {getattr(want, f)}")
        if (got.status, got.trained_through) != (want.status, want.trained_through):
            problems.append(f"rule {rule_id}: status/trained_through differ")
    for variable, versions in stream.models.items():
        got_m, want_m = versions[-1], models[variable]
        if got_m.n_observations != want_m.n_observations:
            problems.append(f"model {variable}: n_observations differ")
        if got_m.trained_through != want_m.trained_through:
            problems.append(f"model {variable}: trained_through differs")
        for i, (a, b) in enumerate(zip(got_m.coefficients, want_m.coefficients, strict=True)):
            if not h._close(a, b, h.COEF_RTOL):
                problems.append(f"model {variable}: coefficient {i} {a} != {b}")
    return problems


async def test_train_from_files_gives_the_streams_final_versions_and_dead_letters(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    entries = bf.kafka_history(seed=41, models=150, events=20_000)
    out = run_train(tmp_path, entries)

    topics = h.new_topics("bridge")
    await h.create_inputs(kafka_bootstrap, topics, partitions=3)
    await h.produce(kafka_bootstrap, topics, [(e.kind, e.key, e.value) for e in entries])
    log = tmp_path / "trainer.log"
    proc = h.start_trainer(kafka_bootstrap, topics, log, "--until-end", **SETTINGS)
    try:
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, log.read_text()[-3000:]
    stream = await h.read_outputs(kafka_bootstrap, topics)

    rules, models = file_versions(out)
    assert len(rules) == 150 and len(models) == 150
    problems = differences(stream, rules, models)
    assert problems == [], h.summarize(problems)
    train_letters = file_dead_letters(out)
    assert stream_dead_letters(stream, topics) == train_letters
    expected_reasons = Counter(e.reason for e in entries if e.reason)
    assert Counter(reason for _, reason, _ in train_letters.elements()) == expected_reasons
