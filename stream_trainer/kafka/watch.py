"""Watching the broker: aiokafka waits out an unreachable broker silently, so we probe it.

While no broker answers, aiokafka's consumer returns empty fetches and its producer
re-sends produce and transaction requests forever: no error reaches the trainer, so on its
own the trainer would neither say it is degraded nor ever give up. `BrokerWatch` sends a
Metadata request every second on the group consumer's connection; a probe that fails or
gets no answer within 3 s is a retriable failure of the broker's `RetryBudget`, which
makes `/readyz` 503 with the cause, logs one WARNING when the streak starts and one INFO
when it ends, and raises `BrokerUnavailableError` once `broker_timeout_s` has passed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.protocol.metadata import MetadataRequest

from stream_trainer.errors import KafkaError
from stream_trainer.retry import RetryBudget

PROBE_EVERY_S = 1.0
PROBE_TIMEOUT_S = 3.0


class BrokerWatch:
    """Probes the cluster through an aiokafka client until cancelled."""

    def __init__(self, client: Any, budget: RetryBudget) -> None:
        self._client = client
        self.budget = budget

    async def run(self) -> None:
        """Probe forever; raises `BrokerUnavailableError` when the budget runs out."""
        while True:
            try:
                await self._probe()
            except (AioKafkaError, TimeoutError, KafkaError) as exc:
                error = KafkaError(f"no answer from the broker: {exc!r}", retriable=True)
                error.__cause__ = exc
                await asyncio.sleep(max(self.budget.failed(error), PROBE_EVERY_S))
                continue
            self.budget.succeeded()
            await asyncio.sleep(PROBE_EVERY_S)

    async def _probe(self) -> None:
        node = self._client.get_random_node()
        if node is None:
            raise KafkaError("no broker known", retriable=True)
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await self._client.send(node, MetadataRequest([]))
