"""A one-line progress bar per input file on a terminal (bytes and events per second).

Off a terminal it draws nothing: the command prints one summary line at the end instead.
Redraws are throttled, so calling `update` once per batch costs nothing measurable.
"""

from __future__ import annotations

import shutil
import time
from typing import Final, TextIO

REDRAW_S: Final = 0.2
_BAR_WIDTH: Final = 16


def human_bytes(n: float, unit_of: float | None = None) -> str:
    """``n`` bytes in kB/MB/GB (in the unit that suits ``unit_of``, default ``n``)."""
    scale = abs(unit_of if unit_of is not None else n)
    for power, unit in ((3, "GB"), (2, "MB"), (1, "kB")):
        if scale >= 1000**power:
            return f"{n / 1000**power:.1f} {unit}"
    return f"{n:.0f} B"


def human_rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f}M"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.0f}k"
    return f"{per_s:.0f}"


class FileProgress:
    """One file at a time: ``[2/5] name  45% [#######.........] 12.1/27.0 MB  ... 310k/s``."""

    def __init__(self, stream: TextIO, enabled: bool | None = None, verb: str = "") -> None:
        self._stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self._verb = verb
        self._label = ""
        self._size = 0
        self._started = 0.0
        self._drawn = 0.0
        self._position = 0
        self._events = 0
        self._open = False

    def start(self, index: int, count: int, label: str, size: int) -> None:
        self._label = f"[{index}/{count}] {label}"
        self._size = size
        self._started = time.monotonic()
        self._drawn = 0.0
        self._position = 0
        self._events = 0
        self._open = True
        self._draw(force=True)

    def update(self, position: int, events: int) -> None:
        self._position = position
        self._events = events
        self._draw(force=False)

    def done(self) -> None:
        """The file is finished: draw it complete and move to a new line."""
        if not self._open:
            return
        self._position = max(self._position, self._size)
        self._draw(force=True)
        if self.enabled:
            self._stream.write("\n")
            self._stream.flush()
        self._open = False

    def abandon(self) -> None:
        """Stop mid-file (interrupt or error): end the line so messages start clean."""
        if self._open and self.enabled:
            self._stream.write("\n")
            self._stream.flush()
        self._open = False

    def interject(self, message: str) -> None:
        """Print a message line; the bar (if any) is redrawn below it."""
        if self._open and self.enabled:
            self._stream.write("\r\x1b[K" + message + "\n")
            self._draw(force=True)
        else:
            self._stream.write(message + "\n")
            self._stream.flush()

    def _draw(self, *, force: bool) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn < REDRAW_S:
            return
        self._drawn = now
        line = self.render(now - self._started)
        width = shutil.get_terminal_size((100, 20)).columns
        self._stream.write("\r" + line[: width - 1] + "\x1b[K")
        self._stream.flush()

    def render(self, elapsed: float) -> str:
        fraction = min(1.0, self._position / self._size) if self._size else 1.0
        filled = round(fraction * _BAR_WIDTH)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        rate = self._events / elapsed if elapsed > 0 else 0.0
        total = human_bytes(self._size)
        done = human_bytes(self._position, self._size).split()[0]
        verb = f" {self._verb}" if self._verb else ""
        return (
            f"{self._label} {fraction:4.0%} [{bar}] {done}/{total}  "
            f"{self._events:,} events{verb}  {human_rate(rate)}/s"
        )
