"""`aio.cancel_and_wait`: the owner's helper to stop its background tasks."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from stream_trainer.aio import cancel_and_wait


async def _forever() -> None:
    await asyncio.Event().wait()


async def _stops_slowly(told: asyncio.Event, release: asyncio.Event) -> None:
    """A task that, once cancelled, needs `release` before it finishes (e.g. a flush)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        told.set()
        await release.wait()
        raise


async def test_cancels_and_waits_for_every_task() -> None:
    tasks = [asyncio.create_task(_forever()) for _ in range(3)]
    await asyncio.sleep(0)
    await cancel_and_wait(*tasks, None)
    assert all(task.cancelled() for task in tasks)


async def test_none_and_finished_tasks_are_ignored() -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(None, done)
    await cancel_and_wait()


async def test_an_error_raised_while_stopping_is_not_lost() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("flush failed") from None

    ok, failing = asyncio.create_task(_forever()), asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="flush failed"):
        await cancel_and_wait(failing, ok)
    assert ok.cancelled()  # the other task was still stopped and waited for


async def test_the_callers_own_cancellation_propagates() -> None:
    # The old helper awaited inside suppress(CancelledError): cancelling the *owner* while
    # it waited for a slow task was swallowed, and the owner carried on as if not cancelled.
    told, release = asyncio.Event(), asyncio.Event()
    slow = asyncio.create_task(_stops_slowly(told, release))
    await asyncio.sleep(0)
    after: list[str] = []

    async def owner() -> None:
        await cancel_and_wait(slow)
        after.append("carried on")

    owner_task = asyncio.create_task(owner())
    await told.wait()  # the owner is now waiting for the slow task to finish
    owner_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner_task
    assert owner_task.cancelled()
    assert after == []
    release.set()
    with contextlib.suppress(asyncio.CancelledError):
        await slow
    assert slow.cancelled()
