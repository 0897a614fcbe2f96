"""Logging: aiokafka's coordinator-election noise becomes one INFO line; errors still show."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
    NotCoordinatorForGroupError,
)

from stream_trainer.logs import WAITING_MESSAGE, CoordinatorWaitFilter, configure_logging


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def lines(self) -> list[tuple[str, str]]:
        return [(r.levelname, r.getMessage()) for r in self.records]


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
def collected(clock: _Clock) -> Iterator[_Collect]:
    handler = _Collect()
    handler.addFilter(CoordinatorWaitFilter(logging.INFO, quiet_s=60.0, clock=clock))
    logger = logging.getLogger("aiokafka.consumer.group_coordinator")
    previous = (logger.handlers[:], logger.propagate, logger.level)
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        logger.handlers[:], logger.propagate = previous[0], previous[1]
        logger.setLevel(previous[2])


def _aiokafka(name: str = "aiokafka.consumer.group_coordinator") -> logging.Logger:
    return logging.getLogger(name)


def test_start_up_coordinator_errors_become_one_info_line(
    collected: _Collect, clock: _Clock
) -> None:
    log = _aiokafka()
    for _ in range(4):  # what a fresh broker's election prints
        log.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
        clock.now += 0.5
    log.error("Error sending %s -- marking coordinator dead", NotCoordinatorForGroupError())
    assert collected.lines == [("INFO", WAITING_MESSAGE)]


def test_real_errors_still_show_as_errors(collected: _Collect) -> None:
    log = _aiokafka()
    log.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    log.error('Unable connect to "%s:%s": %s', "b", 9092, KafkaConnectionError())
    log.error("Heartbeat failed: %r", RuntimeError("boom"))
    assert collected.lines == [
        ("INFO", WAITING_MESSAGE),
        ("ERROR", 'Unable connect to "b:9092": KafkaConnectionError'),
        ("ERROR", "Heartbeat failed: RuntimeError('boom')"),
    ]


def test_a_later_wait_is_announced_again(collected: _Collect, clock: _Clock) -> None:
    log = _aiokafka()
    log.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    clock.now += 61.0  # e.g. the broker restarted an hour later
    log.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    assert collected.lines == [("INFO", WAITING_MESSAGE)] * 2


def test_our_own_records_are_never_rewritten(collected: _Collect) -> None:
    handler_filter = collected.filters[0]
    assert isinstance(handler_filter, CoordinatorWaitFilter)
    ours = logging.LogRecord(
        "stream_trainer.service",
        logging.ERROR,
        __file__,
        1,
        "commit failed: %s",
        (GroupCoordinatorNotAvailableError(),),
        None,
    )
    assert handler_filter.filter(ours)
    assert ours.levelno == logging.ERROR


def test_configure_logging_installs_the_filter_and_honours_the_level() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, _aiokafka("aiokafka").level)
    try:
        configure_logging("WARNING")
        (handler,) = root.handlers
        assert any(isinstance(f, CoordinatorWaitFilter) for f in handler.filters)
        record = _aiokafka().makeRecord(
            "aiokafka.producer.sender",
            logging.ERROR,
            __file__,
            1,
            "FindCoordinator Request failed: %s",
            (GroupCoordinatorNotAvailableError(),),
            None,
        )
        assert not handler.filter(record)  # rewritten to INFO, below the WARNING asked for
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        _aiokafka("aiokafka").setLevel(saved[2])
