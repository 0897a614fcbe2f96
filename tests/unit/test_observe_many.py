"""observe_many adds to a histogram exactly what observe() per value adds."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from stream_trainer.ops.recorder import observe_many

BUCKETS = (-1.0, -0.5, 0.0, 0.1, 0.5, 1.0)


def _samples(h: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in h.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@given(st.lists(st.floats(-3, 3, allow_nan=False), max_size=50))
def test_bulk_equals_one_by_one(values: list[float]) -> None:
    one = Histogram("one", "h", buckets=BUCKETS, registry=CollectorRegistry())
    bulk = Histogram("one", "h", buckets=BUCKETS, registry=CollectorRegistry())
    for v in values:
        one.observe(v)
    observe_many(bulk, np.array(values, dtype=np.float64))
    got, want = _samples(bulk), _samples(one)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert np.isclose(got[key], value), key
