"""Stable 64-bit hashes of strings (rule ids, event ids): the same value in every process.

Python's ``hash`` of a str is randomised per process (``PYTHONHASHSEED``), so it cannot name
anything that outlives the process. The dedupe store keys remembered event ids by these
hashes and writes them to the changelog: **the functions below are part of the changelog
format** (their test pins known values); changing one means a new dedupe format byte.

Definition, over the UTF-8 bytes of a string, read as little-endian 8-byte words (the last
one zero-padded): ``h = SEED``; per word ``w``: ``h = rotl(h ^ (rotl(w * K1, 31) * K2),
27) * 5 + 0x52DCE729`` (MurmurHash3 x64's body); the hash is ``splitmix64_finaliser(h ^
length * K2)``. A batch is hashed with one ``join``, one ``encode`` and one compiled pass
that also finds where each string ends (the NUL separators): no Python call per string
for ASCII strings without NUL, one ``str.encode`` per string otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import numpy.typing as npt

from stream_trainer.learners._intrinsics import load_u64, trailing_zeros

U64Array = npt.NDArray[np.uint64]
ByteArray = npt.NDArray[np.uint8]
Int = int | np.int64  # kernels keep indices int64 (numba turns int64 + uint64 into float)

_SEED = np.uint64(0x9E3779B97F4A7C15)
_K1 = np.uint64(0x87C37B91114253D5)
_K2 = np.uint64(0x4CF5AD432745937F)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ADD = np.uint64(0x52DCE729)
_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)


@numba.njit(cache=True, nogil=True, inline="always")
def rotl(x: np.uint64, r: int) -> np.uint64:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@numba.njit(cache=True, nogil=True, inline="always")
def finalise(z: np.uint64) -> np.uint64:
    """splitmix64's finaliser: a bijection of 64-bit words with full avalanche."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True, inline="always")
def pair_key(rule_hash: np.uint64, id_hash: np.uint64) -> np.uint64:
    """The dedupe key of (rule, event id); for one rule, distinct id hashes give distinct keys
    (multiplying by an odd constant, xor and the finaliser are all bijections)."""
    return finalise(rule_hash ^ (id_hash * _K1))


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(h: np.uint64, word: np.uint64) -> np.uint64:
    return rotl(h ^ (rotl(word * _K1, 31) * _K2), 27) * np.uint64(5) + _ADD


@numba.njit(cache=True, nogil=True, inline="always")
def _low_bytes(word: np.uint64, n: Int) -> np.uint64:
    """The ``n`` (< 8) low bytes of ``word``, the others zeroed."""
    return word & ((np.uint64(1) << np.uint64(8 * n)) - np.uint64(1))


@numba.njit(cache=True, nogil=True, inline="always")
def _word(buf: ByteArray, p: Int, end: Int) -> np.uint64:
    """Bytes ``p..min(p + 8, end)`` as a little-endian word, without reading past ``buf``."""
    if p + 8 <= buf.shape[0]:
        word = load_u64(buf, p)
        return word if end - p >= 8 else _low_bytes(word, end - p)
    word = np.uint64(0)
    for q in range(p, end):
        word |= np.uint64(buf[q]) << np.uint64(8 * (q - p))
    return word


@numba.njit(cache=True, nogil=True)
def _hash_terminated(buf: ByteArray, n: int) -> U64Array:
    """Hashes of ``n`` NUL-terminated strings packed in ``buf``; empty if ``buf`` does not
    hold exactly that (a string contained a NUL)."""
    out = np.empty(n, dtype=np.uint64)
    p, size = np.int64(0), buf.shape[0]
    for i in range(n):
        start, h = p, _SEED
        while True:
            if p >= size:
                return np.empty(0, dtype=np.uint64)
            word = _word(buf, p, size)
            zeros = (word - _ONES) & ~word & _HIGHS  # lowest set bit: the first NUL byte
            if p + 8 > size:  # the zero padding past the end is not a terminator
                zeros &= (np.uint64(1) << np.uint64(8 * (size - p))) - np.uint64(1)
            if zeros == 0:
                h = _mix(h, word)
                p += 8
                continue
            k = np.int64(trailing_zeros(zeros) >> np.uint64(3))
            if k > 0:
                h = _mix(h, _low_bytes(word, k))
            p += k
            break
        out[i] = finalise(h ^ (np.uint64(p - start) * _K2))
        p += 1
    return out if p == size else np.empty(0, dtype=np.uint64)


@numba.njit(cache=True, nogil=True)
def _hash_spans(buf: ByteArray, ends: npt.NDArray[np.int64]) -> U64Array:
    """Hashes of the consecutive strings ``buf[ends[i-1]:ends[i]]``."""
    out = np.empty(ends.shape[0], dtype=np.uint64)
    start = 0
    for i in range(ends.shape[0]):
        end, h = ends[i], _SEED
        for p in range(start, end, 8):
            h = _mix(h, _word(buf, p, end))
        out[i] = finalise(h ^ (np.uint64(end - start) * _K2))
        start = end
    return out


@numba.njit(cache=True, nogil=True)
def pair_keys(rule_hashes: U64Array, id_hashes: U64Array) -> U64Array:
    """``pair_key`` element-wise."""
    out = np.empty(id_hashes.shape[0], dtype=np.uint64)
    for i in range(id_hashes.shape[0]):
        out[i] = pair_key(rule_hashes[i], id_hashes[i])
    return out


@numba.njit(cache=True, nogil=True)
def salted(name_hashes: U64Array, salts: npt.NDArray[np.float64]) -> U64Array:
    """Each hash mixed with the bits of a float (a rule incarnation's first event time)."""
    out = np.empty(name_hashes.shape[0], dtype=np.uint64)
    bits = salts.view(np.uint64)
    for i in range(name_hashes.shape[0]):
        out[i] = finalise(name_hashes[i] ^ finalise(bits[i] * _K2))
    return out


def hash_strings(strings: Sequence[str]) -> U64Array:
    """The stable hash of each string's UTF-8 bytes."""
    n = len(strings)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    joined = "\x00".join(strings)
    if joined.isascii():  # O(1) on CPython: a flag of the str object
        buf = np.frombuffer(joined.encode("ascii") + b"\x00", dtype=np.uint8)
        out: U64Array = _hash_terminated(buf, n)
        if out.shape[0] == n:
            return out
    return hash_strings_slow(strings)


def hash_strings_slow(strings: Sequence[str]) -> U64Array:
    """``hash_strings`` with one encode per string (any text; also the fast path's oracle)."""
    encoded = [s.encode("utf-8") for s in strings]
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    ends = np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), dtype=np.int64)
    out: U64Array = _hash_spans(buf, ends)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel of this module."""
    names = hash_strings(["a", "bc"])
    hash_strings_slow(["\u00e9"])
    pair_keys(names, names)
    salted(names, np.zeros(2, dtype=np.float64))
