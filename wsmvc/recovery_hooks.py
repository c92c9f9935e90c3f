"""What a connection's close path and serving loop ask of its recovery (``conn.recovery``):
:class:`RecoveryHooks`, met by the server's :class:`~wsmvc.recovery.Recoverable` and the
client's :class:`~wsmvc.client_recovery.ClientRecovery` (``docs/recovery.md``).

The transitions are the same on both sides: connected -> lost (:meth:`lose`, the
websocket is gone, the connection is kept) -> connected again (:meth:`resumed` returns
``True`` in the serving task), or over (:meth:`end`: it closes for good).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["RecoveryHooks"]


class RecoveryHooks(Protocol):
    """The duck-typed hooks of ``conn.recovery`` (see the module docstring)."""

    lost: bool
    """Whether the connection is kept, waiting for a new websocket."""

    def acknowledging(self) -> None:
        """``A<id>`` goes out next (server side: the recovery frame goes first)."""

    def acknowledged(self) -> None:
        """``A<id>`` went out: data frames are counted from now on."""

    async def opened(self) -> None:
        """In the serving task, once the handshake accepted the connection, before its
        first message is read (a connection moving in from another server is taken over
        then: :mod:`wsmvc.handover`)."""

    def lose(self, why: str) -> bool:
        """The websocket is gone (``why``): whether the connection is kept instead of
        closed."""

    def end(self, why: str = "") -> None:
        """No recovery any more: a kept connection closes for good (its events run)."""

    def finished(self) -> None:
        """The connection ended (its disconnect events ran)."""

    def stale(self) -> bool:
        """Whether the serving task's read is of a websocket already replaced (consumed)."""

    def read_to_end(self) -> None:
        """The websocket that is gone was read to its end: the count of frames read is final."""

    async def resumed(self) -> bool:
        """In the serving task, once its websocket is gone: ``True`` when the connection
        goes on over a new one, ``False`` when it is over."""
