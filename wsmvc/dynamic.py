"""Dynamic namespaces: one controller (or handler table entry) for every namespace whose
name fits a pattern, as Socket.IO's ``io.of(/^\\/room-\\d+$/)`` does.

A pattern is written like an aiohttp route: ``"room-{id}"``, where ``{id}`` matches one
or more characters other than ``/``, ``{`` and ``}``, or ``{id:regex}`` with a regular
expression of its own (``"game-{n:\\d+}"``). The whole name must match. What the
placeholders matched are the namespace's ``params`` (``NSConn.params``: ``{"id": "7"}``
for ``room-7``), always strings.

Precedence: a namespace registered by its exact name wins over every pattern; among
patterns, the one registered first wins. A string with braces but no placeholder (``"{}"``,
``"{1}"``) is an exact name, as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["NamespacePattern", "is_pattern"]

# {name} or {name:regex}; a regex may hold one level of braces itself (\d{2}).
_PLACEHOLDER = re.compile(
    r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<regex>(?:[^{}]|\{[^{}]*\})+))?\}"
)
_DEFAULT = r"[^{}/]+"


def is_pattern(namespace: str) -> bool:
    """Whether ``namespace`` is a pattern (has a ``{name}`` placeholder), not a name."""
    return "{" in namespace and _PLACEHOLDER.search(namespace) is not None


class NamespacePattern:
    """A compiled namespace pattern (see the module docstring).

    Raises :class:`ValueError` for one that cannot work: a placeholder name used twice, a
    regular expression that does not compile, a brace outside a placeholder.
    """

    __slots__ = ("_regex", "names", "template")

    def __init__(self, template: str) -> None:
        self.template = template
        parts: list[str] = []
        names: list[str] = []
        end = 0
        for found in _PLACEHOLDER.finditer(template):
            literal = template[end : found.start()]
            if "{" in literal or "}" in literal:
                raise ValueError(
                    f"namespace pattern {template!r}: a brace outside a placeholder"
                    " ({name} or {name:regex})"
                )
            name = found.group("name")
            if name in names:
                raise ValueError(f"namespace pattern {template!r}: {{{name}}} appears twice")
            names.append(name)
            parts.append(re.escape(literal))
            parts.append(f"(?P<{name}>{found.group('regex') or _DEFAULT})")
            end = found.end()
        rest = template[end:]
        if "{" in rest or "}" in rest:
            raise ValueError(
                f"namespace pattern {template!r}: a brace outside a placeholder"
                " ({name} or {name:regex})"
            )
        parts.append(re.escape(rest))
        try:
            self._regex = re.compile("".join(parts))
        except re.error as exc:
            raise ValueError(f"namespace pattern {template!r}: {exc}") from exc
        self.names = tuple(names)

    def match(self, namespace: str) -> Mapping[str, str] | None:
        """The placeholders' values if the whole of ``namespace`` matches, else ``None``."""
        found = self._regex.fullmatch(namespace)
        if found is None:
            return None
        return {name: found.group(name) for name in self.names}

    def __repr__(self) -> str:
        return f"NamespacePattern({self.template!r})"
