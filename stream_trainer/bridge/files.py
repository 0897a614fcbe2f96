"""Input files: which ones (paths, directories, globs, in the order given) and opening them.

The format comes from the extension (``.jsonl``/``.ndjson``, ``.csv``, ``.parquet``), after
an optional compression suffix (``.gz``, ``.zst``). Opening returns a binary stream plus the
number of *file* bytes consumed so far, so progress is measured against the size on disk
even for compressed inputs.
"""

from __future__ import annotations

import glob
import gzip
import importlib
import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import BinaryIO, Final, Literal

from stream_trainer.errors import StreamTrainerError

Format = Literal["jsonl", "csv", "parquet"]
Compression = Literal["gz", "zst", ""]

FORMATS: Final[dict[str, Format]] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
}
COMPRESSIONS: Final[dict[str, Compression]] = {".gz": "gz", ".zst": "zst"}
_READ_BUFFER: Final = 1 << 20


class InputFileError(StreamTrainerError):
    """An input that cannot be found, recognised or read; the message names the file."""


class MissingExtraError(StreamTrainerError):
    """An optional dependency (the ``files`` extra) is not installed."""


@dataclass(frozen=True, slots=True)
class InputFile:
    path: Path
    format: Format
    compression: Compression

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError as exc:
            raise InputFileError(f"{self.path}: cannot be read: {exc}") from exc


def optional_module(name: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or say which extra provides it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the '{name}' package: pip install 'stream-trainer[files]'"
        ) from exc


def classify(path: Path) -> InputFile | None:
    """The format and compression of a file name, or None when it is not an input."""
    suffixes = [s.lower() for s in path.suffixes]
    compression: Compression = ""
    if suffixes and suffixes[-1] in COMPRESSIONS:
        compression = COMPRESSIONS[suffixes.pop()]
    if not suffixes or suffixes[-1] not in FORMATS:
        return None
    fmt = FORMATS[suffixes[-1]]
    if fmt == "parquet" and compression:
        return None  # Parquet compresses inside; a compressed Parquet file is not seekable
    return InputFile(path, fmt, compression)


def discover(arguments: Sequence[str]) -> list[InputFile]:
    """Every input file named by the arguments, in argument order (sorted within each)."""
    found: list[InputFile] = []
    seen: dict[Path, str] = {}
    for argument in arguments:
        for path in _expand(argument):
            key = path.resolve()
            if key in seen:
                raise InputFileError(f"{path}: named twice (by {seen[key]!r} and {argument!r})")
            seen[key] = argument
            found.append(_input(path, argument))
    return found


def _expand(argument: str) -> list[Path]:
    path = Path(argument)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and classify(p) is not None)
        if not files:
            raise InputFileError(f"{argument}: directory holds no {_supported()} files")
        return files
    if path.exists():
        return [path]  # a regular file, or a named pipe someone writes history into
    if glob.has_magic(argument):
        matches = sorted(Path(m) for m in glob.glob(argument, recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise InputFileError(f"{argument}: no file matches")
        return files
    raise InputFileError(f"{argument}: no such file or directory")


def _input(path: Path, argument: str) -> InputFile:
    classified = classify(path)
    if classified is None:
        raise InputFileError(f"{path}: unknown format (from {argument!r}); use {_supported()}")
    return classified


def _supported() -> str:
    return ", ".join(FORMATS) + " (optionally .gz or .zst, not for .parquet)"


class Opened:
    """A binary stream of a file's decompressed bytes, and how far into the file it is."""

    def __init__(self, raw: BinaryIO, stream: BinaryIO) -> None:
        self._raw = raw
        self.stream = stream

    def position(self) -> int:
        """File (compressed) bytes consumed so far."""
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0


@contextmanager
def open_input(item: InputFile) -> Iterator[Opened]:
    """Open an input for reading; its read and decompression errors name the file."""
    try:
        # Unbuffered: the BufferedReader on top is the one buffer (no copy in between).
        raw: BinaryIO = open(item.path, "rb", buffering=0)  # noqa: SIM115
    except OSError as exc:
        raise InputFileError(f"{item.path}: cannot be opened: {exc}") from exc
    try:
        inner, errors = _decompressed(item, raw)
        guarded = _Guarded(inner, item.name, errors)
        yield Opened(raw, io.BufferedReader(guarded, _READ_BUFFER))
    finally:
        raw.close()


def _decompressed(item: InputFile, raw: BinaryIO) -> tuple[BinaryIO, tuple[type[Exception], ...]]:
    # gzip.BadGzipFile is an OSError; a truncated gz raises EOFError.
    errors: tuple[type[Exception], ...] = (OSError, EOFError)
    if item.compression == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb"), errors  # type: ignore[return-value]
    if item.compression == "zst":
        zstandard = optional_module("zstandard", f"reading {item.path}")
        return _ZstdReader(raw, zstandard), (*errors, zstandard.ZstdError)  # type: ignore[return-value]
    return raw, errors


class _ZstdReader(io.RawIOBase):
    """zstd frames one after another, and an error for a truncated last frame.

    zstandard's own ``stream_reader`` ends quietly at a truncated frame; history cut short
    by a failed copy must not look complete.
    """

    def __init__(self, raw: BinaryIO, zstandard: ModuleType) -> None:
        self._raw = raw
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._frame = self._new()
        self._in_frame = False  # bytes of an unfinished frame were fed
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._out:
            compressed = self._raw.read(_READ_BUFFER)
            if not compressed:
                if self._in_frame:
                    raise EOFError("zstd: the last frame is truncated")
                return 0
            self._out = memoryview(self._feed(compressed))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _feed(self, compressed: bytes) -> bytes:
        parts = []
        while compressed:
            parts.append(self._frame.decompress(compressed))
            self._in_frame = not self._frame.eof
            if self._in_frame:
                break
            compressed = self._frame.unused_data
            self._frame = self._new()
        return b"".join(parts)


class _Guarded(io.RawIOBase):
    """A readable stream whose read errors become InputFileError naming the file.

    The wrapping happens here, at the file boundary, so an OSError raised by anything else
    (writing the outputs, say) is never mistaken for a bad input.
    """

    def __init__(self, inner: BinaryIO, name: str, errors: tuple[type[Exception], ...]) -> None:
        self._inner = inner
        self._name = name
        self._errors = errors

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            return self._inner.readinto(buffer) or 0  # type: ignore[attr-defined]
        except self._errors as exc:
            raise InputFileError(f"{self._name}: cannot be read: {exc}") from exc


def display_name(item: InputFile, width: int = 32) -> str:
    """A file name short enough for a progress line."""
    name = os.fspath(item.path)
    return name if len(name) <= width else "..." + name[-(width - 3) :]
