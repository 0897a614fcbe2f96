"""The changelog side of the dedupe store: remembered ids in bounded, time-bucketed records.

Entries are grouped by event-time bucket ``floor(ts / bucket_s)``; a bucket's entries live in
records ``#d:<bucket>:<seq>``, each a format byte then at most `FULL` packed entries
(key u64, rule u64, ts f64, little-endian): at most 48,001 bytes whatever the traffic.

Each flush appends the entries changed since the last one to their buckets: full chunks
become sealed records, a remainder becomes a *small* record. Small records of a bucket
are merged (rewritten as one, the other tombstoned) while the older one is at most twice
the newer, so a bucket has at most ~log2(FULL) small records and an entry is rewritten
O(log FULL) times, even at one entry per flush. A bucket is rewritten whole when more than
half of what its records hold is stale (pruned, moved to a newer bucket or forgotten), and
tombstoned whole when evicted. So the records read at restore stay proportional to the ids
held, not to the uptime.

An entry may have stale copies (an older ts, in an older bucket or an older record of its
bucket); restore keeps the newest ts per key, which is the live value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stream_trainer.errors import StateFormatError

FORMAT = 1  # first byte of a dedupe record
FULL = 2000  # entries per record: 1 + 2000 * 24 = 48,001 bytes < 64 KiB
ENTRY = np.dtype([("key", "<u8"), ("rule", "<u8"), ("ts", "<f8")])
PREFIX = b"#d:"

Entries = npt.NDArray[np.void]  # structured, dtype ENTRY
# Current entries (in their current bucket only) of some keys: the store's view for merges.
Resolver = Callable[[npt.NDArray[np.uint64], int], Entries]
Records = list[tuple[bytes, bytes | None]]


@dataclass
class _Bucket:
    sizes: dict[int, int] = field(default_factory=dict)  # live seq -> entries it holds
    small: list[tuple[int, npt.NDArray[np.uint64]]] = field(default_factory=list)  # (seq, keys)
    next_seq: int = 0

    @property
    def written(self) -> int:
        return sum(self.sizes.values())


class DedupeLog:
    """Which records hold which buckets, and the records a flush must write."""

    def __init__(self) -> None:
        self.buckets: dict[int, _Bucket] = {}
        self.rewrite: set[int] = set()  # buckets to rewrite whole at the next flush
        self._persisted: set[tuple[int, int]] = set()  # (bucket, seq) with a value in the log
        self._out: dict[tuple[int, int], bytes | None] = {}

    @property
    def small_keys(self) -> int:
        """Keys held in memory for small records (for the byte gauge, 8 bytes each)."""
        return sum(keys.shape[0] for b in self.buckets.values() for _, keys in b.small)

    # -- one flush ------------------------------------------------------------------------

    def flush(
        self,
        appended: Entries,
        buckets: npt.NDArray[np.int64],
        rewritten: dict[int, Entries],
        resolve: Resolver,
    ) -> Records:
        """Records for the ``appended`` (changed) entries in their ``buckets``, and for the
        ``rewritten`` buckets' whole contents; tombstones for what they replace."""
        for b, entries in rewritten.items():
            self._drop_bucket(b)
            self._append(b, entries, resolve)
        order = np.argsort(buckets, kind="stable")
        uniq, starts = np.unique(buckets[order], return_index=True)
        ends = np.append(starts[1:], order.shape[0])[: starts.shape[0]]
        for b, lo, hi in zip(uniq.tolist(), starts.tolist(), ends.tolist(), strict=True):
            if b not in rewritten:
                self._append(b, appended[order[lo:hi]], resolve)
        self.rewrite.clear()
        return self._take()

    def evict_through(self, last: int) -> None:
        """Tombstone every bucket up to ``last`` (its entries were evicted from memory)."""
        for b in [b for b in self.buckets if b <= last]:
            self._drop_bucket(b)
            del self.buckets[b]

    def reconcile(self, live: dict[int, int]) -> None:
        """After a prune: rewrite the buckets whose records are mostly stale."""
        for b, bucket in self.buckets.items():
            if 2 * live.get(b, 0) < bucket.written:
                self.rewrite.add(b)

    def _append(self, b: int, entries: Entries, resolve: Resolver) -> None:
        bucket = self.buckets.setdefault(b, _Bucket())
        full = entries.shape[0] - entries.shape[0] % FULL
        for lo in range(0, full, FULL):
            self._write(b, bucket, entries[lo : lo + FULL])
        if full < entries.shape[0]:
            rest = entries[full:]
            bucket.small.append((self._write(b, bucket, rest), rest["key"].copy()))
        # Merge the two newest small records while they are within a factor of two.
        while len(bucket.small) >= 2 and bucket.small[-2][1].shape[0] <= 2 * len(
            bucket.small[-1][1]
        ):
            (s1, k1), (s2, k2) = bucket.small.pop(), bucket.small.pop()
            self._drop(b, bucket, s1)
            self._drop(b, bucket, s2)
            merged = resolve(np.unique(np.concatenate([k2, k1])), b)
            self._append(b, merged, resolve)
        if not bucket.sizes:
            self.buckets.pop(b, None)

    def _write(self, b: int, bucket: _Bucket, entries: Entries) -> int:
        seq = bucket.next_seq
        bucket.next_seq += 1
        bucket.sizes[seq] = entries.shape[0]
        self._out[(b, seq)] = bytes([FORMAT]) + entries.tobytes()
        return seq

    def _drop(self, b: int, bucket: _Bucket, seq: int) -> None:
        del bucket.sizes[seq]
        if (b, seq) in self._persisted:
            self._out[(b, seq)] = None
        else:  # written earlier in this flush: never reached the log
            self._out.pop((b, seq), None)

    def _drop_bucket(self, b: int) -> None:
        bucket = self.buckets.get(b)
        if bucket is None:
            return
        for seq in list(bucket.sizes):
            self._drop(b, bucket, seq)
        bucket.small.clear()

    def _take(self) -> Records:
        out = self._out
        self._out = {}
        records: Records = []
        for (b, seq), value in out.items():
            if value is None:
                self._persisted.discard((b, seq))
            else:
                self._persisted.add((b, seq))
            records.append((b"%s%d:%d" % (PREFIX, b, seq), value))
        return records

    # -- restore --------------------------------------------------------------------------

    def load(self, suffix: bytes, value: bytes) -> Entries:
        """Note one restored record; returns its entries."""
        b, seq = _parse(suffix)
        if not value or value[0] != FORMAT or (len(value) - 1) % ENTRY.itemsize:
            head = value[0] if value else None
            raise StateFormatError(
                f"dedupe record {suffix!r}: format byte {head!r}, {len(value)} bytes; this "
                f"release reads format {FORMAT} (written by a newer release?)"
            )
        entries = np.frombuffer(value, dtype=ENTRY, offset=1)
        bucket = self.buckets.setdefault(b, _Bucket())
        bucket.sizes[seq] = entries.shape[0]
        self._persisted.add((b, seq))
        bucket.next_seq = max(bucket.next_seq, seq + 1)
        bucket.small = [item for item in bucket.small if item[0] != seq]
        if entries.shape[0] < FULL:
            bucket.small.append((seq, entries["key"].copy()))
            bucket.small.sort(key=lambda item: item[0])
        return entries


def _parse(suffix: bytes) -> tuple[int, int]:
    try:
        head, bucket, seq = suffix.split(b":")
        if head + b":" != PREFIX:
            raise ValueError(head)
        return int(bucket), int(seq)
    except ValueError as exc:
        raise StateFormatError(
            f"trust learner record {suffix!r}: unknown key (written by a newer release?)"
        ) from exc
