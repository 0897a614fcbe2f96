"""JSON Schemas of the wire contracts, generated from the msgspec Structs in `events`.

`stream-trainer schemas export DIR` writes them; a test fails when a Struct changes and the
files in ``schemas/`` were not re-exported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from stream_trainer.events import EVENT_TYPES

_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_GENERATED_BY: Final = (
    "Generated from stream_trainer.events by `stream-trainer schemas export`; do not edit."
)


def snake_name(event_type: type[msgspec.Struct]) -> str:
    """``ModelVersion`` -> ``model_version``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event_type.__name__).lower()


def json_schemas(
    types: Sequence[type[msgspec.Struct]] = EVENT_TYPES,
) -> dict[str, dict[str, Any]]:
    """JSON Schema (2020-12) of each event type, by snake-case name."""
    schemas: dict[str, dict[str, Any]] = {}
    for event_type in types:
        schema = msgspec.json.schema(event_type)
        schemas[snake_name(event_type)] = {
            "$schema": _SCHEMA_DIALECT,
            "$comment": _GENERATED_BY,
            **schema,
        }
    return schemas


def render_schemas(types: Sequence[type[msgspec.Struct]] = EVENT_TYPES) -> dict[str, str]:
    """File name -> exact file text, stable across runs (sorted keys, indent 2)."""
    return {
        f"{name}.schema.json": json.dumps(schema, sort_keys=True, indent=2) + "\n"
        for name, schema in json_schemas(types).items()
    }


def export_schemas(directory: Path) -> list[Path]:
    """Write one ``<snake_name>.schema.json`` per event type into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for file_name, text in render_schemas().items():
        path = directory / file_name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(
    directory: Path, types: Sequence[type[msgspec.Struct]] = EVENT_TYPES
) -> list[str]:
    """Schema files in ``directory`` that are missing, differ from the code, or are extra."""
    expected = render_schemas(types)
    present = {path.name for path in directory.glob("*.schema.json")}
    stale = sorted(present - expected.keys())
    for file_name, text in sorted(expected.items()):
        path = directory / file_name
        if file_name not in present or path.read_text(encoding="utf-8") != text:
            stale.append(file_name)
    return stale
