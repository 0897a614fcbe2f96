"""`snapshot.SnapshotStore`: round trip, atomic replace, untrusted files ignored with a warning."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec
import pytest

from stream_trainer.snapshot import FORMAT, SnapshotStore

RECORDS = {b"r:rule.a": b"\x01rule-a", b"m:spx": b"\x01model-spx", b"r#d:7:0": b"\x01ids"}


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(str(tmp_path / "state"), "app")


def test_round_trip_keeps_offset_and_records(store: SnapshotStore) -> None:
    store.save(3, 1234, RECORDS)
    loaded = store.load(3)
    assert loaded is not None
    assert loaded.changelog_offset == 1234
    assert dict(loaded.records) == RECORDS
    assert [k for k, _ in loaded.records] == list(RECORDS)  # order kept: latest wins on load
    assert store.path(3) == store.directory / "task-3.snapshot"
    assert store.directory.parent.name == "state" and store.directory.name == "app"


def test_no_snapshot_is_none(store: SnapshotStore) -> None:
    assert store.load(0) is None


def test_save_replaces_and_leaves_no_temporary_file(store: SnapshotStore) -> None:
    store.save(0, 10, RECORDS)
    store.save(0, 20, {b"m:spx": b"\x01newer"})
    loaded = store.load(0)
    assert loaded is not None and loaded.changelog_offset == 20
    assert loaded.records == [(b"m:spx", b"\x01newer")]
    assert sorted(p.name for p in store.directory.iterdir()) == ["task-0.snapshot"]


def test_snapshots_of_tasks_are_separate(store: SnapshotStore) -> None:
    store.save(0, 1, {b"m:a": b"\x01a"})
    store.save(1, 2, {b"m:b": b"\x01b"})
    zero, one = store.load(0), store.load(1)
    assert zero is not None and one is not None
    assert (zero.changelog_offset, zero.records) == (1, [(b"m:a", b"\x01a")])
    assert (one.changelog_offset, one.records) == (2, [(b"m:b", b"\x01b")])


def _failing_fsync(fd: int) -> None:
    raise OSError(28, "No space left on device")


def test_a_write_that_fails_midway_keeps_the_old_snapshot(
    store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(0, 10, RECORDS)
    monkeypatch.setattr(os, "fsync", _failing_fsync)
    assert store.save(0, 99, {b"m:spx": b"\x01half-written"}) is False  # logged, not raised
    monkeypatch.undo()
    loaded = store.load(0)
    assert loaded is not None
    assert (loaded.changelog_offset, dict(loaded.records)) == (10, RECORDS)


def test_a_write_that_fails_midway_leaves_no_temporary_file(
    store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk must not also be left holding a half-written copy of the whole state.
    store.save(0, 10, RECORDS)
    monkeypatch.setattr(os, "fsync", _failing_fsync)
    assert store.save(0, 99, RECORDS) is False
    assert sorted(p.name for p in store.directory.iterdir()) == ["task-0.snapshot"]


def _write(store: SnapshotStore, task: int, raw: bytes) -> None:
    store.directory.mkdir(parents=True, exist_ok=True)
    store.path(task).write_bytes(raw)


def _file(fmt: int, app: str, task: int) -> bytes:
    return msgspec.msgpack.encode([fmt, app, task, 5, [(b"m:spx", b"\x01x")]])


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x00garbage\xff", "corrupt"),
        (b"", "corrupt"),
        (_file(FORMAT, "app", 0)[:-4], "corrupt"),  # truncated
        (msgspec.msgpack.encode([FORMAT, "app", 0, "five", []]), "corrupt"),  # wrong types
        (_file(FORMAT + 1, "app", 0), "another format or owner"),
        (_file(FORMAT, "other-app", 0), "another format or owner"),
        (_file(FORMAT, "app", 1), "another format or owner"),  # task 1's file under task 0
    ],
)
def test_an_untrusted_file_is_ignored_with_a_warning(
    store: SnapshotStore, raw: bytes, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    _write(store, 0, raw)
    with caplog.at_level(logging.WARNING, logger="stream_trainer.snapshot"):
        assert store.load(0) is None
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert why in caplog.text and "task 0" in caplog.text


def test_the_well_formed_file_of_the_fixture_is_trusted(store: SnapshotStore) -> None:
    # The parametrised files above differ from a good one only in what makes them bad.
    _write(store, 0, _file(FORMAT, "app", 0))
    loaded = store.load(0)
    assert loaded is not None and loaded.changelog_offset == 5


def test_an_unreadable_file_is_ignored_with_a_warning(
    store: SnapshotStore, caplog: pytest.LogCaptureFixture
) -> None:
    store.path(0).mkdir(parents=True)  # reading a directory fails with an OSError
    with caplog.at_level(logging.WARNING, logger="stream_trainer.snapshot"):
        assert store.load(0) is None
    assert "unreadable" in caplog.text


def test_the_file_is_fsynced_before_it_replaces_the_old_one(
    store: SnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, Path.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(self: Path, target: str | os.PathLike[str]) -> Path:
        events.append("replace")
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    store.save(0, 1, RECORDS)
    assert events == ["fsync", "replace"]
