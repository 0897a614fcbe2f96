"""A subscriber's stream of a view's updates, bounded so a slow reader cannot grow memory."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

from stream_trainer.errors import StreamTrainerError
from stream_trainer.events import ModelVersion, RuleVersion
from stream_trainer.views.table import Update

T = TypeVar("T", RuleVersion, ModelVersion)


class ViewError(StreamTrainerError):
    """A view cannot go on, or was used outside its ``async with``."""


class UpdatesOverflowError(ViewError):
    """A subscriber fell more than `max_pending` updates behind and was dropped.

    Nothing is lost silently: the updates before the gap were delivered. Subscribe again
    and re-read what you need with `view.get`.
    """

    retriable = True


class UpdateStream(Generic[T]):
    """Updates of a view after it is ready, in the order the view applied them.

    Subscribed when created (so nothing between `view.updates()` and the first ``await``
    is missed); ends when the view stops; raises the view's error if it failed, and
    `UpdatesOverflowError` after more than `max_pending` undelivered updates.
    """

    def __init__(
        self,
        max_pending: int,
        failure: Callable[[], BaseException | None],
        unsubscribe: Callable[[UpdateStream[T]], None],
    ) -> None:
        self._items: deque[Update[T]] = deque()
        self._max_pending = max_pending
        self._failure = failure
        self._unsubscribe: Callable[[UpdateStream[T]], None] = unsubscribe
        self._wakeup = asyncio.Event()
        self._ended = False
        self._overflowed = False

    def push(self, update: Update[T]) -> bool:
        """Queue one update; False (and dropped) once the subscriber is too far behind."""
        if len(self._items) >= self._max_pending:
            self._overflowed = True
            self._wakeup.set()
            return False
        self._items.append(update)
        self._wakeup.set()
        return True

    def end(self) -> None:
        """No more updates (the view stopped or failed); queued ones are still delivered."""
        self._ended = True
        self._wakeup.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Update[T]:
        while not self._items:
            error = self._failure()
            if error is not None:
                raise error
            if self._overflowed:
                raise UpdatesOverflowError(
                    f"more than {self._max_pending} updates undelivered: subscriber dropped"
                )
            if self._ended:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    async def aclose(self) -> None:
        """Unsubscribe now (also on leaving ``async with``)."""
        self._ended = True
        self._items.clear()
        self._unsubscribe(self)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
