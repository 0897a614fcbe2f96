"""`retry.RetryBudget` with a fake clock: backoff, seeded jitter, the budget, the streak."""

from __future__ import annotations

import pytest

from stream_trainer.errors import BrokerUnavailableError, ConfigError, KafkaError
from stream_trainer.retry import INITIAL_BACKOFF_S, MAX_BACKOFF_S, RetryBudget


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def down(message: str = "broker down") -> KafkaError:
    return KafkaError(message, retriable=True)


def test_backoff_doubles_from_the_initial_value_with_jitter_in_its_upper_half() -> None:
    budget = RetryBudget(1e9, "task 0", clock=Clock())
    for attempt in range(1, 8):
        nominal = INITIAL_BACKOFF_S * 2 ** (attempt - 1)
        delay = budget.failed(down())
        assert nominal / 2 <= delay <= nominal
        assert budget.attempts == attempt


def test_backoff_is_capped() -> None:
    budget = RetryBudget(1e9, "task 0", clock=Clock())
    delays = [budget.failed(down()) for _ in range(30)]
    assert max(delays) <= MAX_BACKOFF_S
    assert min(delays[-10:]) >= MAX_BACKOFF_S / 2  # capped, not wrapped round or reset


def test_jitter_is_seeded_same_seed_same_schedule() -> None:
    def schedule(seed: int) -> list[float]:
        budget = RetryBudget(1e9, "consumer", seed=seed, clock=Clock())
        return [budget.failed(down()) for _ in range(10)]

    assert schedule(3) == schedule(3)
    assert schedule(3) != schedule(4)  # the seed matters: tasks do not retry in lockstep


def test_the_budget_runs_from_the_first_failure_of_the_streak() -> None:
    clock = Clock()
    budget = RetryBudget(30.0, "task 2", clock=clock)
    budget.failed(down())
    started = clock.now
    clock.now += 29.0
    assert budget.failed(down()) <= 1.0  # never sleeps past the budget
    assert budget.failing_since == started
    clock.now += 1.0
    with pytest.raises(BrokerUnavailableError, match="task 2") as raised:
        budget.failed(down("still down"))
    assert raised.value.__cause__ is budget.cause
    assert "still down" in str(raised.value)
    assert not raised.value.retriable  # fatal: the process exits


def retry_until_fatal(budget: RetryBudget, clock: Clock, delays: list[float]) -> None:
    while True:
        delay = budget.failed(down())
        assert budget.failing_since is not None
        assert delay <= budget.timeout_s - (clock.now - budget.failing_since)
        delays.append(delay)
        clock.now += delay


def test_the_delay_never_goes_past_the_budget() -> None:
    clock = Clock()
    budget = RetryBudget(5.0, "task 0", clock=clock)
    delays: list[float] = []
    with pytest.raises(BrokerUnavailableError):
        retry_until_fatal(budget, clock, delays)
    assert delays[:-1] == sorted(delays[:-1])  # growing; the last one is cut to the budget
    assert sum(delays) == pytest.approx(5.0)  # the last delay ends exactly at the budget
    assert budget.attempts >= 5  # it retried, with growing delays, until the budget ran out


def test_success_ends_the_streak_and_a_later_failure_starts_a_new_one() -> None:
    clock = Clock()
    budget = RetryBudget(30.0, "task 1", clock=clock)
    assert budget.succeeded() is None  # no streak, nothing to report
    for _ in range(5):
        clock.now += budget.failed(down())
    assert degraded(budget) and streak(budget)[0] == 5
    clock.now += 2.0
    lasted = budget.succeeded()
    assert lasted is not None and lasted > 2.0
    assert not budget.degraded
    assert streak(budget) == (0, None, None)
    clock.now += 100.0  # long past the budget of the first streak
    delay = budget.failed(down())  # a new streak: not fatal, and the backoff starts over
    assert delay <= INITIAL_BACKOFF_S
    assert budget.failing_since == clock.now


def degraded(budget: RetryBudget) -> bool:
    return budget.degraded


def streak(budget: RetryBudget) -> tuple[int, object, float | None]:
    return budget.attempts, budget.cause, budget.failing_since


@pytest.mark.parametrize(
    "error", [KafkaError("unknown topic", retriable=False), ConfigError("bad setting")]
)
def test_a_non_retriable_error_is_raised_at_once_and_starts_no_streak(
    error: KafkaError | ConfigError,
) -> None:
    budget = RetryBudget(30.0, "task 0", clock=Clock())
    with pytest.raises(type(error)) as raised:
        budget.failed(error)
    assert raised.value is error
    assert not budget.degraded and budget.attempts == 0


def test_a_non_retriable_error_during_a_streak_is_raised_as_it_is() -> None:
    budget = RetryBudget(30.0, "task 0", clock=Clock())
    budget.failed(down())
    fatal = KafkaError("authorization failed", retriable=False)
    with pytest.raises(KafkaError) as raised:
        budget.failed(fatal)
    assert raised.value is fatal
