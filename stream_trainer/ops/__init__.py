"""Operations: Prometheus metrics and the HTTP endpoints that expose them and the probes."""

from stream_trainer.ops.http import OpsServer
from stream_trainer.ops.metrics import TrainerMetrics

__all__ = ["OpsServer", "TrainerMetrics"]
