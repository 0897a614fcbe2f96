"""`train`'s output directory: written under temporary names, renamed into place at the end.

Everything goes to a hidden work directory inside the output directory (same file system,
so the final renames are atomic). Until `commit` the output directory holds nothing new;
an interrupted or failed run removes its work directory. During the renames SIGINT is held
back (a few microseconds), so a Ctrl-C leaves either the previous outputs or all new ones.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import msgspec

from stream_trainer.bridge.files import optional_module
from stream_trainer.errors import StreamTrainerError
from stream_trainer.events import ModelVersion, RuleVersion, encode

RULE_VERSIONS: Final = "rule-versions"
MODEL_VERSIONS: Final = "model-versions"
DEAD_LETTERS: Final = "dead-letters.jsonl"
SUMMARY: Final = "summary.json"
OUTPUT_NAMES: Final = (
    f"{RULE_VERSIONS}.jsonl",
    f"{MODEL_VERSIONS}.jsonl",
    DEAD_LETTERS,
    SUMMARY,
    f"{RULE_VERSIONS}.parquet",
    f"{MODEL_VERSIONS}.parquet",
)
_ENCODER: Final = msgspec.json.Encoder()


class OutputError(StreamTrainerError):
    """The output directory cannot be written."""


class InterruptedAfterCommit(KeyboardInterrupt):
    """A Ctrl-C held back during the final renames: every output was written."""


def dead_letter_entry(
    file: str, line: int, kind: str, reason: str, detail: str, original: bytes
) -> dict[str, Any]:
    """One dead-letters.jsonl object: where, why, and the line or row as it was."""
    entry: dict[str, Any] = {"file": file, "line": line, "input": kind, "reason": reason}
    entry["error"] = detail
    try:
        entry["original"] = original.decode("utf-8")
    except UnicodeDecodeError:
        entry["original_base64"] = base64.b64encode(original).decode("ascii")
    return entry


class OutputDir:
    """The outputs of one run (a context manager: leaving it uncommitted discards them)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._work: Path | None = None
        self._dead_letters: IO[bytes] | None = None
        self._written: list[str] = []

    def __enter__(self) -> OutputDir:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._work = Path(tempfile.mkdtemp(prefix=".train-", suffix=".tmp", dir=self.directory))
            self._dead_letters = (self._work / DEAD_LETTERS).open("wb")
        except OSError as exc:
            self._discard()
            raise OutputError(f"{self.directory}: cannot write outputs: {exc}") from exc
        self._written.append(DEAD_LETTERS)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._discard()

    @property
    def work(self) -> Path:
        assert self._work is not None, "OutputDir used outside its with-block"
        return self._work

    def dead_letters(self, entries: Sequence[dict[str, Any]]) -> None:
        assert self._dead_letters is not None
        if entries:
            with self._writing(DEAD_LETTERS):
                self._dead_letters.write(b"\n".join(map(_ENCODER.encode, entries)) + b"\n")

    def versions(
        self, rules: Sequence[RuleVersion], models: Sequence[ModelVersion], parquet: bool
    ) -> None:
        """The final versions as JSON Lines (wire JSON), and as Parquet when asked."""
        self._jsonl(f"{RULE_VERSIONS}.jsonl", rules)
        self._jsonl(f"{MODEL_VERSIONS}.jsonl", models)
        if parquet:
            self._parquet(f"{RULE_VERSIONS}.parquet", RuleVersion, rules)
            self._parquet(f"{MODEL_VERSIONS}.parquet", ModelVersion, models)

    def summary(self, summary: dict[str, Any]) -> None:
        text = msgspec.json.format(_ENCODER.encode(summary), indent=2) + b"\n"
        self._write(SUMMARY, text)

    def commit(self) -> list[Path]:
        """Move every output into the directory; stale outputs of an earlier run go."""
        assert self._dead_letters is not None
        with self._writing(DEAD_LETTERS):
            self._dead_letters.close()
        try:
            with _sigint_held(), self._writing(str(self.directory)):
                for name in self._written:
                    os.replace(self.work / name, self.directory / name)
                for name in set(OUTPUT_NAMES) - set(self._written):
                    with contextlib.suppress(FileNotFoundError):
                        (self.directory / name).unlink()
        except KeyboardInterrupt as exc:
            # Delivered as the mask lifts, so after the last rename: the outputs are whole.
            raise InterruptedAfterCommit() from exc
        return [self.directory / name for name in self._written]

    def _jsonl(self, name: str, versions: Sequence[msgspec.Struct]) -> None:
        self._write(name, b"".join(encode(v) + b"\n" for v in versions))

    def _parquet(self, name: str, struct: type[msgspec.Struct], rows: Sequence[Any]) -> None:
        pa = optional_module("pyarrow", "--format parquet")
        pq = optional_module("pyarrow.parquet", "--format parquet")
        schema = arrow_schema(pa, struct)
        columns = {f: [getattr(row, f) for row in rows] for f in struct.__struct_fields__}
        with self._writing(name):
            pq.write_table(pa.table(columns, schema=schema), self.work / name)
        self._written.append(name)

    def _write(self, name: str, data: bytes) -> None:
        with self._writing(name):
            (self.work / name).write_bytes(data)
        self._written.append(name)

    @contextlib.contextmanager
    def _writing(self, name: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise OutputError(f"{self.directory}: cannot write {name}: {exc}") from exc

    def _discard(self) -> None:
        if self._dead_letters is not None:
            self._dead_letters.close()
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None


def arrow_schema(pa: Any, struct: type[msgspec.Struct]) -> Any:
    """A Parquet schema for a version Struct (field order and names as on the wire)."""
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    return pa.schema(
        [pa.field(f.encode_name, _arrow_type(pa, f.type), nullable=True) for f in info.fields]
    )


def _arrow_type(pa: Any, t: msgspec.inspect.Type) -> Any:
    inspect = msgspec.inspect
    if isinstance(t, inspect.Metadata):
        return _arrow_type(pa, t.type)
    if isinstance(t, inspect.UnionType):
        (inner,) = [u for u in t.types if not isinstance(u, inspect.NoneType)]
        return _arrow_type(pa, inner)
    if isinstance(t, inspect.IntType):
        return pa.int64()
    if isinstance(t, inspect.FloatType):
        return pa.float64()
    if isinstance(t, inspect.DateTimeType):
        return pa.timestamp("us", tz="UTC")
    if isinstance(t, inspect.ListType):
        return pa.list_(_arrow_type(pa, t.item_type))
    if isinstance(t, inspect.StrType | inspect.LiteralType):
        return pa.string()
    raise TypeError(f"no Parquet type for {t}")


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold a Ctrl-C (or SIGTERM) back while the outputs are renamed, then raise it.

    A recording handler rather than a signal mask: with other threads alive (pyarrow's
    pool) the kernel may deliver SIGINT to any of them, but Python runs the handler in the
    main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)  # `train` stops on SIGTERM as on Ctrl-C
    previous = [signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held]
    try:
        yield
    finally:
        for sig, handler in zip(held, previous, strict=True):
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt
