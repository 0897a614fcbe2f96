"""The package's shape: the runtime never imports the tooling, and modules stay short.

Rule for `stream_trainer.dev` (the local broker, synthetic traffic, the demo): no module
outside it imports it at module level (``if TYPE_CHECKING:`` blocks included: the runtime
should not even know the tooling's types). The one exception is `stream_trainer/cli.py`,
which may import it *inside a function* (the ``demo`` command's handler), so that the
service's start-up never loads it. Any other runtime module importing it, even lazily, fails.

Modules are at most `MAX_LINES` lines; `OVER_LONG` lists the known exceptions, and an entry
that is no longer over the limit fails too, so the list can only shrink.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "stream_trainer"
TOOLING = "stream_trainer.dev"
LAZY_TOOLING_ALLOWED = {"stream_trainer.cli"}
MAX_LINES = 400
# Lead-owned modules over the limit, to be split (path relative to stream_trainer/).
OVER_LONG: set[str] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _runtime_modules() -> list[Path]:
    tooling = PACKAGE / "dev"
    return [p for p in _modules() if tooling not in p.parents]


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute names an import statement loads (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        anchor = package if is_package else package[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _imports(path: Path) -> Iterator[tuple[str, bool, int]]:
    """(imported name, inside a function?, line) for every import in a module."""
    source = path.read_text(encoding="utf-8")
    return _imports_in(source, _module_name(path), path.name == "__init__.py")


def _imports_in(source: str, module: str, is_package: bool) -> Iterator[tuple[str, bool, int]]:
    tree = ast.parse(source)

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in _imported(child, module, is_package):
                    yield name, in_function, child.lineno
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            yield from walk(child, nested)

    yield from walk(tree, False)


def _is_tooling(name: str) -> bool:
    return name == TOOLING or name.startswith(TOOLING + ".")


def test_the_scan_sees_the_package_and_resolves_relative_imports() -> None:
    # Guards the guard: a scan that found nothing would pass for any layout.
    names = {_module_name(p) for p in _modules()}
    assert {"stream_trainer.cli", "stream_trainer.service", "stream_trainer.dev"} <= names
    demo = PACKAGE / "dev" / "demo" / "command.py"
    assert "stream_trainer.dev.demo.progress" in {name for name, _, _ in _imports(demo)}
    assert any(_is_tooling(name) and lazy for name, lazy, _ in _imports(PACKAGE / "cli.py"))


def test_the_scan_tells_module_level_from_lazy_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ..dev import synthetic\n"
        "class C:\n"
        "    import stream_trainer.dev.broker\n"
        "    def method(self):\n"
        "        from .demo import command\n"
    )
    found = [(n, lazy) for n, lazy, _ in _imports_in(source, "stream_trainer.dev.x", False)]
    assert ("stream_trainer.dev.synthetic", False) in found  # relative, under TYPE_CHECKING
    assert ("stream_trainer.dev.broker", False) in found  # a class body runs at import
    assert ("stream_trainer.dev.demo.command", True) in found


@pytest.mark.parametrize("path", _runtime_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_runtime_never_imports_the_tooling(path: Path) -> None:
    module = _module_name(path)
    for name, in_function, line in _imports(path):
        if not _is_tooling(name):
            continue
        where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        assert in_function, f"{where} at module level"
        assert module in LAZY_TOOLING_ALLOWED, f"{where}; only the CLI may, lazily"


def test_importing_the_cli_and_the_service_loads_no_tooling() -> None:
    # The dynamic twin of the static scan: catches an import however it is spelled.
    code = (
        "import sys, stream_trainer.cli, stream_trainer.service, stream_trainer.client\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith({TOOLING!r}))\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_are_short(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    name = path.relative_to(PACKAGE).as_posix()
    if name in OVER_LONG:
        assert lines > MAX_LINES, f"{name} has {lines} lines now: remove it from OVER_LONG"
        pytest.skip(f"{name}: {lines} lines, a known exception (OVER_LONG)")
    assert lines <= MAX_LINES, f"{name} has {lines} lines (max {MAX_LINES}): split it"


def test_over_long_entries_exist() -> None:
    missing = sorted(name for name in OVER_LONG if not (PACKAGE / name).is_file())
    assert not missing, f"OVER_LONG names modules that do not exist: {missing}"
