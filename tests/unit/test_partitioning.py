"""The vectorised murmur2 partitioner equals aiokafka's (the Java client's) key by key."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference_murmur2
from hypothesis import given
from hypothesis import strategies as st

from stream_trainer.kafka.partitioning import default_partitions, murmur2

KEYS = st.lists(st.binary(min_size=0, max_size=64), min_size=1, max_size=50)


@given(KEYS)
def test_murmur2_matches_aiokafka(keys: list[bytes]) -> None:
    assert murmur2(keys).tolist() == [reference_murmur2(k) for k in keys]


@given(KEYS, st.integers(min_value=1, max_value=64))
def test_partitions_match_the_default_partitioner(keys: list[bytes], n: int) -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(n))
    expected = [partitioner(k, partitions, partitions) for k in keys]
    assert default_partitions(keys, n).tolist() == expected


# Kafka's UtilsTest.testMurmur2 vectors (Java ints, here as unsigned 32-bit values).
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_java_client_vectors() -> None:
    keys = list(JAVA_VECTORS)
    assert murmur2(keys).tolist() == [v & 0xFFFFFFFF for v in JAVA_VECTORS.values()]
