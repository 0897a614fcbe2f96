"""Small asyncio helpers shared by the components that own background tasks."""

from __future__ import annotations

import asyncio
from typing import Any, Self


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel tasks we own and wait until every one has really finished.

    A task ending cancelled is the expected outcome and raises nothing; an error a task
    raised instead is raised here (the first one), so a failure on the way out is not lost.
    `asyncio.wait` never raises the tasks' own CancelledError, so a CancelledError out of it
    is always the *caller's* cancellation, and it propagates (the tasks have been told to
    stop and finish on their own).
    """
    owned = [task for task in tasks if task is not None and not task.done()]
    if not owned:
        return
    for task in owned:
        task.cancel()
    await asyncio.wait(owned)
    errors = [task.exception() for task in owned if not task.cancelled()]
    first = next((error for error in errors if error is not None), None)
    if first is not None:
        raise first


async def finish(task: asyncio.Task[None] | None) -> BaseException | None:
    """Wait (5 s at most) for a task told to stop to end by itself; return its error.

    Past the wait it is cancelled. Its error is returned rather than raised so the caller
    can finish shutting down first, and never lost.
    """
    if task is None:
        return None
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
    except TimeoutError:
        await cancel_and_wait(task)
        return None
    except asyncio.CancelledError:
        return None
    except Exception as exc:
        return exc
    return None


class StartStop:
    """``async with`` for a component with ``start()`` and ``stop()`` (aiokafka style)."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
