"""The project's exception hierarchy: one root, with a `retriable` flag on every error.

Callers catch `StreamTrainerError`; code at a boundary (Kafka, files, config) wraps the
underlying exception with ``raise ... from exc`` so the cause stays visible.
"""

from __future__ import annotations


class StreamTrainerError(Exception):
    """Root of every error raised by stream-trainer."""

    retriable: bool = False


class ConfigError(StreamTrainerError):
    """Invalid configuration; the message names the offending setting."""


class DecodeError(StreamTrainerError):
    """An input record that is not a valid event; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StateFormatError(StreamTrainerError):
    """A changelog or snapshot record this release cannot read (corrupt, or a newer format).

    Not retriable: restoring it again gives the same answer; the operator must act.
    """


class EncodeError(StreamTrainerError):
    """An event that cannot be serialised (a field holds a value JSON cannot represent)."""


class KafkaError(StreamTrainerError):
    """A Kafka operation failed; `retriable` says whether trying again may help."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.retriable = retriable


class TaskFencedError(KafkaError):
    """Another owner took over a task (producer fenced or commit failed after rebalance).

    The task's in-memory state must be dropped; the new owner restores it from the changelog.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=True)


class BrokerUnavailableError(KafkaError):
    """Retriable broker failures lasted past `broker_timeout_s`: fatal, the process exits."""


class DeadLetterError(KafkaError):
    """The dead-letter topic cannot be written: fatal, the batch is not committed."""


class BrokerLaunchError(StreamTrainerError):
    """The local Kafka broker could not be resolved, formatted or started."""


class TopologyError(StreamTrainerError):
    """Topics are missing or not co-partitioned as the service requires."""
