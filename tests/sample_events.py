"""Small valid events for tests, one per index, with fields to override."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stream_trainer.events import Feedback, Observation

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def feedback(i: int, *, rule: str | None = None, **changes: Any) -> Feedback:
    """Feedback `f-<i>` for one of three rules (or `rule`), one second after the previous."""
    fields: dict[str, Any] = {
        "event_id": f"f-{i}",
        "rule_id": f"rule.r{i % 3}" if rule is None else rule,
        "ts": T0 + timedelta(seconds=i),
        "success": i % 2 == 0,
    }
    fields.update(changes)
    return Feedback(**fields)


def observation(i: int, **changes: Any) -> Observation:
    """Observation `o-<i>` of one of four variables, one second after the previous."""
    fields: dict[str, Any] = {
        "event_id": f"o-{i}",
        "variable": f"var{i % 4}",
        "ts": T0 + timedelta(seconds=i),
        "value": float(i),
    }
    fields.update(changes)
    return Observation(**fields)
