"""The one place that decides whether a Kafka client error is worth retrying.

Everything a broker outage, a leader election or a rebalance can cause (timeouts, lost
connections, missing leaders or coordinators, aborted or fenced transactions) is retried
under the retry budget: a task reset rebuilds its producer and state, so even errors that
aiokafka calls non-retriable for the same producer are retriable for us. What retrying can
never fix is fatal at once: missing permissions, records too large for the broker, a
protocol the broker does not speak.
"""

from __future__ import annotations

from aiokafka import errors as aio

from stream_trainer.errors import KafkaError, TaskFencedError

FATAL: tuple[type[BaseException], ...] = (
    aio.TopicAuthorizationFailedError,
    aio.GroupAuthorizationFailedError,
    aio.ClusterAuthorizationFailedError,
    aio.TransactionalIdAuthorizationFailed,
    aio.SaslAuthenticationFailed,
    aio.MessageSizeTooLargeError,
    aio.RecordListTooLargeError,
    aio.InvalidTopicError,
    aio.UnsupportedVersionError,
    aio.UnsupportedForMessageFormatError,
    aio.UnsupportedSaslMechanismError,
)


def is_retriable(exc: BaseException) -> bool:
    """True unless trying again cannot help (see the module docstring)."""
    if isinstance(exc, KafkaError):
        return exc.retriable
    return not isinstance(exc, FATAL)


def wrap(message: str, exc: BaseException) -> KafkaError:
    """Our error for a client error; use as ``raise wrap("...", exc) from exc``."""
    if isinstance(exc, aio.ProducerFenced):
        return TaskFencedError(f"{message}: producer fenced: {exc!r}")
    return KafkaError(f"{message}: {exc!r}", retriable=is_retriable(exc))
