"""Summarise py-spy raw (collapsed) stacks: top functions by self and by inclusive time.

python -m benchmarks.profile PROFILE.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

# py-spy frames look like "function (path/to/file.py:123)"; the line number is dropped so
# samples of one function add up.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "stream_trainer/", "lib/python3.11/"):
        if marker in path:
            path = (
                path.split(marker, 1)[1]
                if marker != "stream_trainer/"
                else ("stream_trainer/" + path.split(marker, 1)[1])
            )
            break
    return f"{match['func']} ({path})"


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(f) for f in stack.split(";")]
        total += count
        self_time[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return {
        "samples": total,
        "self": [(n, 100.0 * c / total) for n, c in self_time.most_common(top)],
        "inclusive": [(n, 100.0 * c / total) for n, c in inclusive.most_common(top)],
    }


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"py-spy samples: {summary['samples']}", ""]
    for kind in ("inclusive", "self"):
        lines += [f"| {kind} % | function |", "|---:|---|"]
        lines += [f"| {pct:.1f} | `{name}` |" for name, pct in summary[kind]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(markdown(summarise(args.profile, args.top)))


if __name__ == "__main__":
    main()
