"""How long a reconnecting client waits before each attempt: :class:`Backoff`.

Pure: no I/O, no asyncio. ``dial(url, namespaces, reconnect=Backoff(...))`` paces its
attempts with it (:mod:`wsmvc.reconnect`).
"""

from __future__ import annotations

import math
import random

import attrs

__all__ = ["Backoff"]


def _finite(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Backoff.{attribute.name} is a number of seconds, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"Backoff.{attribute.name} must be finite, not {value!r}")


def _attempts(instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Backoff.attempts is a whole number or None, not {value!r}")
    if value < 1:
        raise ValueError(f"Backoff.attempts must be at least 1 (None: no limit), not {value}")


_gt0 = attrs.validators.gt(0.0)


@attrs.frozen(kw_only=True)
class Backoff:
    """How a :class:`~wsmvc.ReconnectingClient` paces its attempts (all times in seconds).

    Before attempt ``n`` (0 for the first after a loss) it waits
    ``d = min(maximum, initial * factor ** n)`` shortened by a random part of up to
    ``jitter * d``: a delay between ``(1 - jitter) * d`` and ``d``. The jitter only
    shortens, so ``maximum`` bounds every wait, and the clients of a restarted server
    spread out even once they all reached ``maximum`` (a symmetric jitter clipped at
    ``maximum`` would put half of them at exactly ``maximum``, together).
    ``jitter=1`` is "full jitter" (anywhere in ``[0, d]``), ``jitter=0`` none.

    ``attempts``: how many dials after one loss before giving up (``None``: no limit).
    The count starts again once a connection is restored. Fields are checked: a
    non-number raises :class:`TypeError`; ``initial`` and ``maximum`` not above 0,
    ``maximum < initial``, ``factor < 1``, ``jitter`` outside ``[0, 1]`` or
    ``attempts < 1`` raise :class:`ValueError`.

    python-socketio's ``reconnection_delay``/``_max``/``randomization_factor`` are
    ``initial``/``maximum``/``jitter`` here (its factor is 2).
    """

    initial: float = attrs.field(default=0.5, validator=[_finite, _gt0])
    """The wait before the first attempt after a loss (before jitter)."""
    maximum: float = attrs.field(default=30.0, validator=[_finite, _gt0])
    """The longest wait between two attempts."""
    factor: float = attrs.field(default=2.0, validator=[_finite, attrs.validators.ge(1.0)])
    """Each failed attempt multiplies the wait by this."""
    jitter: float = attrs.field(
        default=0.5, validator=[_finite, attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    """The part of each wait that is random, ``0`` to ``1``."""
    attempts: int | None = attrs.field(default=None, validator=_attempts)
    """Dials after one loss before giving up; ``None``: keep trying."""

    def __attrs_post_init__(self) -> None:
        if self.maximum < self.initial:
            raise ValueError(f"Backoff.maximum ({self.maximum}) is below initial ({self.initial})")

    def bounds(self, attempt: int) -> tuple[float, float]:
        """The shortest and longest wait before attempt ``attempt`` (0-based), seconds.
        Raises :class:`ValueError` for a negative ``attempt``."""
        if attempt < 0:
            raise ValueError(f"attempt numbers start at 0, not {attempt}")
        try:
            longest = min(self.maximum, self.initial * self.factor**attempt)
        except OverflowError:  # factor ** attempt past a float's range: long since maximum
            longest = self.maximum
        return longest * (1 - self.jitter), longest

    def delay(self, attempt: int, rand: float | None = None) -> float:
        """The wait before attempt ``attempt`` (0-based), seconds, within :meth:`bounds`;
        ``rand`` in ``[0, 1]`` picks where (default: :func:`random.random`). Raises
        :class:`ValueError` for a negative ``attempt`` or ``rand`` outside ``[0, 1]``."""
        r = random.random() if rand is None else rand
        if not 0 <= r <= 1:
            raise ValueError(f"rand must be within [0, 1], not {rand}")
        longest = self.bounds(attempt)[1]
        return longest * (1 - self.jitter * r)
