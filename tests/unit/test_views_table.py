"""The pure parts of the live views: packing, latest-wins, tombstones, memory per key."""

from __future__ import annotations

import gc
import random
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_trainer.events import ModelVersion, RuleStatus, RuleVersion, encode
from stream_trainer.views.codecs import MODELS, RULES
from stream_trainer.views.table import Update, VersionTable, supersedes

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rule(rule_id: str = "rule.a", version: int = 1, trust: float = 0.6) -> RuleVersion:
    return RuleVersion(
        rule_id=rule_id,
        version=version,
        alpha=3.0 + version,
        beta=2.0,
        trust=trust,
        trust_low=trust / 2,
        trust_high=min(1.0, trust * 1.5),
        evidence=4.5,
        status="active",
        trained_through=T0 + timedelta(seconds=version, microseconds=7),
        published_at=T0 + timedelta(seconds=version + 1),
    )


def model(model_id: str = "var_a", version: int = 1, skill: float | None = 0.25) -> ModelVersion:
    return ModelVersion(
        model_id=model_id,
        version=version,
        order=3,
        coefficients=[0.1, 0.9, -0.05, 1e-300],
        n_observations=10 + version,
        mse=0.5,
        baseline_mse=0.75,
        skill=skill,
        trained_through=T0 + timedelta(seconds=version),
        published_at=T0 + timedelta(seconds=version, microseconds=1),
    )


finite = st.floats(allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=1.0)
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(
    version=st.integers(1, 2**62),
    floats=st.tuples(finite, finite, unit, unit, unit, st.floats(min_value=0.0)),
    status=st.sampled_from(["active", "probation", "retired"]),
    trained=times,
    published=times,
)
@settings(max_examples=200, derandomize=True)
def test_rule_packing_is_lossless(
    version: int,
    floats: tuple[float, ...],
    status: RuleStatus,
    trained: datetime,
    published: datetime,
) -> None:
    alpha, beta, trust, low, high, evidence = floats
    v = RuleVersion("rule.x", version, alpha, beta, trust, low, high, evidence, status, trained,
                    published)  # fmt: skip
    assert RULES.unpack("rule.x", RULES.pack(v)) == v


@given(
    coefficients=st.lists(finite, max_size=12),
    skill=st.none() | finite,
    n=st.integers(0, 2**62),
    trained=times,
)
@settings(max_examples=200, derandomize=True)
def test_model_packing_is_lossless(
    coefficients: list[float], skill: float | None, n: int, trained: datetime
) -> None:
    v = ModelVersion("var_x", 3, len(coefficients), coefficients, n, 0.5, 0.25, skill,
                     trained, trained)  # fmt: skip
    assert MODELS.unpack("var_x", MODELS.pack(v)) == v


def test_timestamps_with_another_offset_come_back_as_the_same_instant_in_utc() -> None:
    ts = datetime(2026, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    v = msgspec.structs.replace(rule(), trained_through=ts, published_at=ts)
    back = RULES.unpack(v.rule_id, RULES.pack(v))
    assert back.trained_through == v.trained_through
    assert back.trained_through.utcoffset() == timedelta(0)


def test_the_latest_version_wins_and_older_or_equal_ones_are_ignored() -> None:
    table = VersionTable(RULES)
    assert table.apply(b"rule.a", encode(rule(version=2))) == Update("rule.a", rule(version=2))
    assert table.apply(b"rule.a", encode(rule(version=1, trust=0.1))) is None
    assert table.apply(b"rule.a", encode(rule(version=2, trust=0.1))) is None
    assert table.get("rule.a") == rule(version=2)
    assert table.apply(b"rule.a", encode(rule(version=5))) == Update("rule.a", rule(version=5))
    assert table.version_of("rule.a") == 5
    assert table.stats.stale == 2 and table.stats.updated == 2 and table.stats.records == 4


def test_a_tombstone_removes_the_key_and_a_new_life_starts_at_version_1() -> None:
    table = VersionTable(MODELS)
    table.apply(b"var_a", encode(model(version=7)))
    table.apply(b"var_b", encode(model("var_b", version=1)))
    removed: Update[ModelVersion] = Update("var_a", None)
    assert table.apply(b"var_a", None) == removed
    assert "var_a" not in table and table.get("var_a") is None and len(table) == 1
    assert table.apply(b"var_a", None) is None  # nothing held: no change
    assert table.apply(b"var_a", encode(model(version=1))) == Update("var_a", model(version=1))
    assert table.stats.removed == 1
    assert sorted(table) == ["var_a", "var_b"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (None, encode(rule())),
        (b"\xff\xfe", encode(rule())),
        (b"rule.a", b"{not json"),
        (b"rule.a", b'{"rule_id": "rule.a"}'),
        (b"rule.b", encode(rule("rule.a"))),  # key differs from the id inside
    ],
)
def test_invalid_records_are_skipped_and_counted(key: bytes | None, value: bytes) -> None:
    table = VersionTable(RULES)
    table.apply(b"rule.a", encode(rule(version=3)))
    assert table.apply(key, value, ("t", 0, 9)) is None
    assert table.stats.invalid == 1
    assert table.get("rule.a") == rule(version=3) and len(table) == 1


def test_supersedes() -> None:
    assert supersedes(None, 1) and supersedes(1, 2)
    assert not supersedes(2, 2) and not supersedes(3, 2)


# A record stream of a few keys: a version number, or None for a tombstone.
streams = st.dictionaries(
    st.sampled_from([f"rule.{c}" for c in "abcdef"]),
    st.lists(st.none() | st.integers(1, 20), max_size=15),
)


@given(streams, st.randoms(use_true_random=False))
@settings(max_examples=300, derandomize=True)
def test_final_table_is_the_max_version_after_each_keys_last_tombstone(
    per_key: dict[str, list[int | None]], rnd: random.Random
) -> None:
    # Interleave the keys' records arbitrarily, keeping each key's own order (one partition).
    turns = [key for key, items in per_key.items() for _ in items]
    rnd.shuffle(turns)
    pending = {key: iter(items) for key, items in per_key.items()}
    table = VersionTable(RULES)
    for key in turns:
        item = next(pending[key])
        table.apply(key.encode(), None if item is None else encode(rule(key, item)))
    for key, items in per_key.items():
        after = items[max((i for i, x in enumerate(items) if x is None), default=-1) + 1 :]
        expected = max((x for x in after if x is not None), default=None)
        assert table.version_of(key) == expected


def _bytes_per_key(
    table: VersionTable[RuleVersion] | VersionTable[ModelVersion],
    records: list[tuple[bytes, bytes]],
) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key, value in records:
            table.apply(key, value)
        return (tracemalloc.get_traced_memory()[0] - before) / len(records)
    finally:
        tracemalloc.stop()


def test_a_rule_costs_at_most_400_bytes_of_view_memory() -> None:
    n = 20_000
    records = [
        (f"rule.momentum.v{i:05d}".encode(), encode(rule(f"rule.momentum.v{i:05d}", 1 + i % 90)))
        for i in range(n)
    ]
    per_key = _bytes_per_key(VersionTable(RULES), records)
    assert per_key <= 400, per_key


def test_a_model_of_order_3_costs_at_most_400_bytes_of_view_memory() -> None:
    records = [
        (f"var_{i:05d}".encode(), encode(model(f"var_{i:05d}", 1 + i % 90))) for i in range(20_000)
    ]
    per_key = _bytes_per_key(VersionTable(MODELS), records)
    assert per_key <= 400, per_key
