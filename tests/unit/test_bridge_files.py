"""Input discovery and opening for the batch bridge (issue 13): order, formats, compression."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
import zstandard

from stream_trainer.bridge import files
from stream_trainer.bridge.files import (
    InputFileError,
    MissingExtraError,
    classify,
    discover,
    open_input,
)
from stream_trainer.bridge.inputs import plan_inputs
from stream_trainer.config import load_settings


def touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jsonl", ("jsonl", "")),
        ("a.ndjson.gz", ("jsonl", "gz")),
        ("a.JSONL.ZST", ("jsonl", "zst")),
        ("a.2024.csv", ("csv", "")),
        ("a.csv.zst", ("csv", "zst")),
        ("a.parquet", ("parquet", "")),
        ("a.parquet.gz", None),
        ("a.json", None),
        ("a.gz", None),
        ("README", None),
    ],
)
def test_format_and_compression_come_from_the_extension(
    name: str, expected: tuple[str, str] | None
) -> None:
    item = classify(Path(name))
    assert (None if item is None else (item.format, item.compression)) == expected


def test_arguments_keep_their_order_and_directories_and_globs_are_sorted(tmp_path: Path) -> None:
    later = touch(tmp_path / "z-first.jsonl")
    d = tmp_path / "dir"
    b = touch(d / "b.csv")
    a = touch(d / "sub" / "a.jsonl.gz")
    touch(d / "notes.txt")  # not an input format: a directory skips it
    g2 = touch(tmp_path / "g" / "2.parquet")
    g1 = touch(tmp_path / "g" / "1.parquet")
    found = discover([str(later), str(d), str(tmp_path / "g" / "*.parquet")])
    assert [f.path for f in found] == [later, b, a, g1, g2]


@pytest.mark.parametrize(
    ("setup", "argument", "message"),
    [
        (None, "missing.jsonl", "no such file"),
        (None, "nothing-*.jsonl", "no file matches"),
        ("x.txt", "x.txt", "unknown format"),
        ("empty/.keep", "empty", "holds no"),
    ],
)
def test_bad_arguments_are_errors_naming_them(
    tmp_path: Path, setup: str | None, argument: str, message: str
) -> None:
    if setup:
        touch(tmp_path / setup)
    with pytest.raises(InputFileError, match=message) as info:
        discover([str(tmp_path / argument)])
    assert argument in str(info.value)


def test_a_file_named_twice_is_refused(tmp_path: Path) -> None:
    path = touch(tmp_path / "d" / "a.jsonl")
    with pytest.raises(InputFileError, match="named twice"):
        discover([str(tmp_path / "d"), str(path)])
    settings = load_settings(environ={})
    with pytest.raises(InputFileError, match="both as observations and as feedback"):
        plan_inputs(settings, [str(path)], [str(path)])
    with pytest.raises(InputFileError, match="no inputs"):
        plan_inputs(settings, [], [])


@pytest.mark.parametrize("compression", ["", "gz", "zst"])
def test_compressed_inputs_read_the_same_bytes(tmp_path: Path, compression: str) -> None:
    data = b"".join(b'{"n":%d}\n' % i for i in range(20_000))
    packed = {
        "": data,
        "gz": gzip.compress(data),
        # Two frames: a file concatenated from two compressed parts still reads whole.
        "zst": zstandard.ZstdCompressor().compress(data[:1000])
        + zstandard.ZstdCompressor().compress(data[1000:]),
    }[compression]
    path = touch(tmp_path / f"a.jsonl{'.' + compression if compression else ''}", packed)
    (item,) = discover([str(path)])
    with open_input(item) as opened:
        assert opened.stream.read() == data
        assert opened.position() == len(packed)


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_a_corrupt_compressed_file_is_an_error_naming_it(tmp_path: Path, compression: str) -> None:
    data = b'{"n":1}\n' * 10_000
    good = gzip.compress(data) if compression == "gz" else zstandard.compress(data)
    path = touch(tmp_path / f"a.jsonl.{compression}", good[: len(good) // 2])
    (item,) = discover([str(path)])
    with pytest.raises(InputFileError, match="cannot be read") as info, open_input(item) as opened:
        opened.stream.read()
    assert str(path) in str(info.value)


def test_a_missing_optional_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_installed(name: str) -> Any:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(files.importlib, "import_module", not_installed)
    path = touch(tmp_path / "a.jsonl.zst", b"")
    (item,) = discover([str(path)])
    with pytest.raises(MissingExtraError, match=r"stream-trainer\[files\]"), open_input(item):
        pass
    with pytest.raises(MissingExtraError, match="pyarrow"):
        files.optional_module("pyarrow", "reading x.parquet")
