"""Kafka's default partitioner (murmur2, as the Java client), vectorised over many keys.

aiokafka's murmur2 is pure Python (~10 µs a key); a batch publishes about one keyed version
record per input event, so hashing them one by one would cost more than learning. This
computes the same 32-bit murmur2 for every key at once, looping over 4-byte blocks
(~key length / 4 steps) rather than over keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_SEED = 0x9747B28C
_M = np.uint64(0x5BD1E995)
_MASK = np.uint64(0xFFFFFFFF)


def murmur2(keys: Sequence[bytes]) -> npt.NDArray[np.uint64]:
    """Kafka's murmur2 of each key (unsigned 32-bit values in uint64)."""
    lengths = np.fromiter((len(k) for k in keys), dtype=np.int64, count=len(keys))
    data = _padded(keys, lengths)
    h = (np.uint64(_SEED) ^ lengths.astype(np.uint64)) & _MASK
    blocks = lengths // 4
    for i in range(int(blocks.max(initial=0))):
        word = data[:, 4 * i : 4 * i + 4].astype(np.uint64)
        k = word[:, 0] | word[:, 1] << 8 | word[:, 2] << 16 | word[:, 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> np.uint64(24)
        k = (k * _M) & _MASK
        mixed = (((h * _M) & _MASK) ^ k) & _MASK
        h = np.where(blocks > i, mixed, h)
    h = _tail(h, data, lengths)
    h ^= h >> np.uint64(13)
    h = (h * _M) & _MASK
    h ^= h >> np.uint64(15)
    return h


def default_partitions(keys: Sequence[bytes], num_partitions: int) -> npt.NDArray[np.int64]:
    """The partition the Java client's (and aiokafka's) default partitioner picks per key."""
    return ((murmur2(keys) & np.uint64(0x7FFFFFFF)) % np.uint64(num_partitions)).astype(np.int64)


def _padded(keys: Sequence[bytes], lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    width = int(lengths.max(initial=0)) + 4
    data = np.zeros((len(keys), width), dtype=np.uint8)
    flat = np.frombuffer(b"".join(keys), dtype=np.uint8)
    rows = np.repeat(np.arange(len(keys)), lengths)
    starts = np.cumsum(lengths) - lengths
    cols = np.arange(flat.size) - np.repeat(starts, lengths)
    data[rows, cols] = flat
    return data


def _tail(
    h: npt.NDArray[np.uint64], data: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint64]:
    """Mix in the last length % 4 bytes, as murmur2's switch fall-through does."""
    extra = lengths % 4
    base = lengths - extra
    rows = np.arange(len(lengths))

    def byte(offset: int) -> npt.NDArray[np.uint64]:
        column = np.minimum(base + offset, data.shape[1] - 1)
        return np.asarray(data[rows, column], dtype=np.uint64)

    h = np.where(extra >= 3, h ^ (byte(2) << np.uint64(16)), h)
    h = np.where(extra >= 2, h ^ (byte(1) << np.uint64(8)), h)
    mixed: npt.NDArray[np.uint64] = np.where(extra >= 1, ((h ^ byte(0)) * _M) & _MASK, h)
    return mixed
