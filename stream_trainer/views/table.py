"""The latest version per key, from version-topic records (pure: no Kafka, no asyncio).

Rules, in one place for the live views and `stream-trainer show`:

- a record whose version is not newer than the one held (a replayed or out-of-order record)
  never replaces it;
- a tombstone (value None) removes the key, whatever version it held (forget produces
  them; a later version 1 starts the key afresh);
- a record that is not a valid version of its key (undecodable, no key, key differs from
  the id inside) is skipped, counted and logged: a compacted topic keeps such a record
  forever, so failing on it would stop every reader for good.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Generic, NamedTuple, TypeVar

import msgspec

from stream_trainer.events import ModelVersion, RuleVersion
from stream_trainer.views.codecs import Codec, packed_version

log = logging.getLogger(__name__)

T = TypeVar("T", RuleVersion, ModelVersion)
Where = tuple[str, int, int] | None

# Log the first few invalid records in full, then one in every N (all are counted).
_LOG_FIRST: Final = 10
_LOG_EVERY: Final = 1000


class Update(NamedTuple, Generic[T]):
    """One change of a view: the key's new latest version, or None when it was removed."""

    key: str
    version: T | None


def supersedes(held: int | None, incoming: int) -> bool:
    """Whether a record with version `incoming` replaces the held one (None: none held)."""
    return held is None or incoming > held


@dataclass(slots=True)
class TableStats:
    """What a table did with the records it was given."""

    records: int = 0  # every record applied, tombstones and invalid ones included
    updated: int = 0  # versions that became a key's latest
    stale: int = 0  # versions not newer than the held one: ignored
    removed: int = 0  # tombstones that removed a held key
    invalid: int = 0  # records skipped as not a valid version of their key


class VersionTable(Generic[T]):
    """Latest version per key, packed compactly (see `codecs`); unpacked on `get`."""

    def __init__(self, codec: Codec[T]) -> None:
        self.codec: Codec[T] = codec
        self.stats = TableStats()
        self._packed: dict[str, bytes] = {}

    def apply(
        self, key: bytes | None, value: bytes | None, where: Where = None
    ) -> Update[T] | None:
        """Apply one record; the resulting change, or None if the table did not change.

        `where` (topic, partition, offset) only names the record in logs.
        """
        self.stats.records += 1
        name = self._key(key, where)
        if name is None:
            return None
        if value is None:
            return self._remove(name)
        version = self._decode(name, value, where)
        if version is None:
            return None
        return self.put(name, version)

    def put(self, key: str, version: T) -> Update[T] | None:
        """Hold `version` as the latest of `key` unless the held one is as new or newer."""
        held = self._packed.get(key)
        if held is not None and not supersedes(packed_version(held), version.version):
            self.stats.stale += 1
            return None
        self._packed[key] = self.codec.pack(version)
        self.stats.updated += 1
        return Update(key, version)

    def get(self, key: str) -> T | None:
        packed = self._packed.get(key)
        return None if packed is None else self.codec.unpack(key, packed)

    def version_of(self, key: str) -> int | None:
        """The held version number of `key`, without unpacking the rest."""
        packed = self._packed.get(key)
        return None if packed is None else packed_version(packed)

    def __len__(self) -> int:
        return len(self._packed)

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __contains__(self, key: object) -> bool:
        return key in self._packed

    def _remove(self, key: str) -> Update[T] | None:
        if self._packed.pop(key, None) is None:
            return None
        self.stats.removed += 1
        return Update(key, None)

    def _key(self, key: bytes | None, where: Where) -> str | None:
        if key is None:
            self._invalid(where, "record has no key")
            return None
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._invalid(where, f"key is not UTF-8: {exc.reason}")
            return None

    def _decode(self, key: str, value: bytes, where: Where) -> T | None:
        try:
            version = self.codec.decode(value)
        except msgspec.DecodeError as exc:  # ValidationError is a subclass
            self._invalid(where, f"not a valid {self.codec.kind} version: {exc}")
            return None
        if self.codec.key_of(version) != key:
            self._invalid(where, f"key {key!r} differs from the {self.codec.kind} id inside")
            return None
        return version

    def _invalid(self, where: Where, problem: str) -> None:
        self.stats.invalid += 1
        count = self.stats.invalid
        if count <= _LOG_FIRST or count % _LOG_EVERY == 0:
            place = "{}[{}]@{}".format(*where) if where is not None else "?"
            log.warning("skipped record %s: %s (%d invalid so far)", place, problem, count)
