"""Results that may be awaited, or not: the work was done in the call.

``server.broadcast(msg)`` sends in the caller's step and returns :data:`SENT`, so
``await server.broadcast(msg)`` (the form of older code) and a forgotten ``await`` both
deliver, and a result left unawaited is no ``coroutine ... was never awaited`` warning.
:class:`Later` is a coroutine made only when awaited: ``dial()`` and
``Emitter.broadcast()`` return one (subclasses), so that they can also be used with
``async with`` or left unawaited without a warning.

Both are :class:`collections.abc.Coroutine` objects, so ``asyncio.create_task()``,
``asyncio.gather()`` and ``asyncio.wait_for()`` take them as they took the coroutines these
methods returned before.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, NoReturn, TypeVar

__all__ = ["SENT", "Later", "Sent"]

T = TypeVar("T")


class Sent(Coroutine[Any, Any, None]):
    """Done already: awaiting it returns ``None`` at once, and never suspends.

    Stateless (:data:`SENT` is the one instance), so it may be awaited any number of
    times, from any task.
    """

    __slots__ = ()

    def send(self, value: object) -> NoReturn:
        """Finish at once (the coroutine protocol): raises :class:`StopIteration`."""
        raise StopIteration

    def throw(
        self,
        typ: type[BaseException] | BaseException,
        val: BaseException | object = None,
        tb: TracebackType | None = None,
    ) -> NoReturn:
        """Raise what is thrown in (the coroutine protocol; a cancellation, say)."""
        raise _error(typ, val)

    def close(self) -> None:
        """Nothing to close."""

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()

    def __repr__(self) -> str:
        return "<wsmvc sent>"


SENT = Sent()
"""What :meth:`wsmvc.Server.broadcast` returns: it was sent during the call."""


class Later(Coroutine[Any, Any, T], Generic[T]):
    """``make()``'s coroutine, made when this is first awaited (or sent to, by a task):
    never made, it warns of nothing.

    ``make`` is called once; awaiting again after the first await finished raises
    :class:`RuntimeError`, as a coroutine does.
    """

    __slots__ = ("_coro", "_make")

    def __init__(self, make: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self._make = make
        self._coro: Coroutine[Any, Any, T] | None = None

    def _started(self) -> Coroutine[Any, Any, T]:
        if self._coro is None:
            self._coro = self._make()
        return self._coro

    def send(self, value: Any) -> Any:
        """Drive the coroutine (the coroutine protocol)."""
        return self._started().send(value)

    def throw(
        self,
        typ: type[BaseException] | BaseException,
        val: BaseException | object = None,
        tb: TracebackType | None = None,
    ) -> Any:
        """Throw into the coroutine (the coroutine protocol)."""
        return self._started().throw(_error(typ, val))

    def close(self) -> None:
        """Close the coroutine if it was made."""
        if self._coro is not None:
            self._coro.close()

    def __await__(self) -> Generator[Any, None, T]:
        return self._started().__await__()


def _error(typ: type[BaseException] | BaseException, val: object) -> BaseException:
    """The exception of a ``throw(typ, val)`` (either form of the coroutine protocol)."""
    if isinstance(typ, BaseException):
        return typ
    if isinstance(val, BaseException):
        return val
    return typ() if val is None else typ(val)
