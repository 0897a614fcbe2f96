"""Optional local snapshot of a task's state (Kafka Streams' state directory + checkpoint).

With `state_dir` set, a task keeps the latest changelog record of every key it owns and,
at most every `snapshot_interval_s`, writes them after a successful commit to
``<state_dir>/<application_id>/task-<n>.snapshot`` with the changelog offset they are
complete up to. On assignment the restore then reads only the changelog from that offset.
A snapshot is written to a temporary name, fsynced and renamed, so it is whole or absent;
one that is corrupt, of another format, or outside the changelog's offsets is ignored
(the changelog is always the source of truth), and re-reading records it already holds is
harmless because the latest record of a key wins.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)

FORMAT = 1


class _File(msgspec.Struct, array_like=True):
    format: int
    application_id: str
    task: int
    changelog_offset: int
    records: list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Snapshot:
    changelog_offset: int
    records: list[tuple[bytes, bytes]]


class SnapshotStore:
    """Snapshots of the tasks of one application in one directory."""

    def __init__(self, state_dir: str, application_id: str) -> None:
        self.directory = Path(state_dir) / application_id
        self.application_id = application_id

    def path(self, task: int) -> Path:
        return self.directory / f"task-{task}.snapshot"

    def load(self, task: int) -> Snapshot | None:
        """The task's snapshot, or None when there is none or it cannot be trusted."""
        path = self.path(task)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning(
                "task %d: snapshot %s unreadable, restoring from the changelog: %s", task, path, exc
            )
            return None
        try:
            data = msgspec.msgpack.decode(raw, type=_File)
        except msgspec.DecodeError as exc:
            log.warning("task %d: snapshot %s corrupt, ignored: %s", task, path, exc)
            return None
        if (data.format, data.application_id, data.task) != (FORMAT, self.application_id, task):
            log.warning("task %d: snapshot %s is of another format or owner, ignored", task, path)
            return None
        return Snapshot(data.changelog_offset, data.records)

    def save(self, task: int, changelog_offset: int, records: dict[bytes, bytes]) -> bool:
        """Write atomically: a temporary file, fsync, rename over the old snapshot.

        A failure (disk full, permissions) is logged and leaves the previous snapshot:
        the snapshot is an optimisation, the changelog stays the truth.
        """
        data = _File(FORMAT, self.application_id, task, changelog_offset, list(records.items()))
        path = self.path(task)
        temporary = path.with_suffix(".tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as out:
                out.write(msgspec.msgpack.encode(data))
                out.flush()
                os.fsync(out.fileno())
            temporary.replace(path)
        except OSError as exc:
            log.warning("task %d: snapshot %s not written: %s", task, path, exc)
            temporary.unlink(missing_ok=True)
            return False
        return True
