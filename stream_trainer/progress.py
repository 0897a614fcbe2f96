"""Counters of the consume loop, read by the summary line, `--until-end` and replay."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import TopicPartition


@dataclass(slots=True)
class Progress:
    events: int = 0
    batches_queued: int = 0
    end_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    fetched: dict[TopicPartition, int] = field(default_factory=dict)  # next offset handed on
