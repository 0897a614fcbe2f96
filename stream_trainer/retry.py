"""The retry budget for retriable broker failures (Kafka Streams' ``task.timeout.ms``).

The `retriable` flag on our errors is the one thing that decides: a retriable failure is
retried with capped exponential backoff and jitter until `broker_timeout_s` has passed
since the first failure of the streak; the first success ends the streak. A non-retriable
error, or a retriable one past the budget, is fatal: `BrokerUnavailableError` names the cause.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from stream_trainer.errors import BrokerUnavailableError, StreamTrainerError
from stream_trainer.ops.metrics import TrainerMetrics

log = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 10.0


class RetryBudget:
    """One streak of failures of one component (a task, the consumer).

    With `metrics`, a streak is one WARNING line when it starts and one INFO line when it
    ends (not a line per retry), retries are counted by cause and the time spent waiting
    is added to ``stream_trainer_broker_unavailable_seconds``.
    """

    def __init__(
        self,
        timeout_s: float,
        name: str,
        *,
        metrics: TrainerMetrics | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.name = name
        self._metrics = metrics
        self._clock = clock
        self._jitter = random.Random(seed)  # seeded: same failures, same schedule
        self.failing_since: float | None = None
        self.attempts = 0
        self.cause: StreamTrainerError | None = None

    @property
    def degraded(self) -> bool:
        return self.failing_since is not None

    def failed(self, error: StreamTrainerError) -> float:
        """Record a failure; the seconds to wait before trying again, or raise if fatal."""
        if not error.retriable:
            raise error
        now = self._clock()
        if self._metrics is not None:
            cause = error.__cause__ or error
            self._metrics.broker_retries.labels(cause=type(cause).__name__).inc()
        if self.failing_since is None:
            self.failing_since = now
            if self._metrics is not None:
                log.warning("%s: broker unavailable, retrying: %s", self.name, error)
        self.attempts += 1
        self.cause = error
        elapsed = now - self.failing_since
        if elapsed >= self.timeout_s:
            raise BrokerUnavailableError(
                f"{self.name}: broker unavailable for {elapsed:.0f} s "
                f"(broker_timeout_s={self.timeout_s:g}): {error}"
            ) from error
        backoff = min(MAX_BACKOFF_S, INITIAL_BACKOFF_S * 2 ** (self.attempts - 1))
        delay = float(backoff * (0.5 + 0.5 * self._jitter.random()))
        return min(delay, max(0.0, self.timeout_s - elapsed))

    def succeeded(self) -> float | None:
        """End the streak; returns how long it lasted (None if there was none)."""
        if self.failing_since is None:
            return None
        lasted = self._clock() - self.failing_since
        if self._metrics is not None:
            self._metrics.broker_unavailable.inc(lasted)
            log.info("%s: broker available again after %.1f s", self.name, lasted)
        self.failing_since = None
        self.attempts = 0
        self.cause = None
        return lasted
