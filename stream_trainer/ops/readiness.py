"""Readiness: /readyz is 200 only when this member can do its work, else 503 with why."""

from __future__ import annotations

from dataclasses import dataclass

from stream_trainer.retry import RetryBudget
from stream_trainer.tasks import TaskManager


@dataclass(slots=True)
class Readiness:
    """Kernels compiled, partitions assigned and restored, and no task waiting on the broker.

    `/healthz` stays 200 while the broker is away (the process is alive and retrying);
    only an exhausted retry budget ends the process.
    """

    tasks: TaskManager
    consumer: RetryBudget
    broker: RetryBudget | None = None
    warm: bool = False
    assigned: bool = False

    @property
    def ready(self) -> bool:
        return not self.reasons()

    def reasons(self) -> list[str]:
        if not self.warm:
            return ["compiling the learner kernels"]
        if self.tasks.restoring:
            return ["restoring state from the changelog"]
        degraded = list(self.tasks.degraded)
        if self.broker is not None and self.broker.degraded:
            degraded.append(f"waiting on the broker: {self.broker.cause}")
        if self.consumer.degraded:
            degraded.append(f"consumer waiting on the broker: {self.consumer.cause}")
        if degraded:
            return degraded
        return [] if self.assigned else ["waiting for partition assignment"]

    def reason(self) -> str:
        return "; ".join(self.reasons()) or "ready"
