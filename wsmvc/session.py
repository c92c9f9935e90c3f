"""The neffos session of one connection, without I/O (``design.md`` §6).

A :class:`Session` is the whole protocol state of one websocket connection, on the server
or on the client side: the connection's state, its namespaces and their rooms, the asks
waiting for an answer, and the messages received but not handled yet. It takes what
arrived and what the application asked for, and says what to send and which events to
fire. It never reads, writes, awaits or sleeps: :class:`~wsmvc.conn.Conn` is the asyncio
adapter around it, and ``tests/test_session.py`` drives it without sockets.

Every state and every transition allowed between states is written down once, in
:mod:`wsmvc.states`. A transition they do not allow raises
:class:`~wsmvc.states.StateError`: a bug in wsmvc, never something a peer can cause. A
decision that no longer applies because something else happened first (a join decided
after the connection began closing) is not an error: the method says so by what it
returns, and changes nothing.

Who fires an event is decided by who makes the transition: the flow that moves a room
from ``JOINED`` to ``LEAVING`` fires its ``_OnRoomLeave``, the flow that removes it fires
``_OnRoomLeft``, and a transition happens once, so every event fires once.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Container, Iterator
from typing import Generic, TypeVar

from .limits import NO_LIMITS
from .protocol import (
    ACK_OK,
    ACK_REFUSED,
    ERR_BAD_NAMESPACE,
    ERR_BAD_ROOM,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    Message,
    encode_answer,
    encode_empty_reply,
)
from .states import (
    CONN_TRANSITIONS,
    EXEMPT_NS,
    EXEMPT_ROOM,
    IN_ROOM,
    NAMESPACE_TRANSITIONS,
    ROOM_TRANSITIONS,
    WRITABLE_NS,
    ConnState,
    Frame,
    Members,
    Namespace,
    NsState,
    RoomState,
    StateError,
)

__all__ = ["Session"]


NS = TypeVar("NS", bound=Namespace)
W = TypeVar("W")  # what waits for the answer to an ask (an asyncio future in Conn)


class Session(Generic[NS, W]):
    """The protocol state of one connection (see the module docstring).

    ``client``: the client side (tokens of the peer's requests do not start with ``$``);
    ``new_namespace(name)`` builds a namespace record; ``declared`` holds the namespaces
    this side serves; ``members`` is told of membership changes; ``fail_ask(waiter,
    reason)`` is called for every ask that can no longer be answered. ``max_queue`` and
    ``max_queue_bytes`` bound the messages received but not handled yet (count, and bytes
    of their frames). ``limits`` bounds what the peer's requests make it keep
    (:class:`Limits`; a server sets the ones of its keywords).
    """

    __slots__ = (
        "_declared",
        "_fail_ask",
        "_members",
        "_new_namespace",
        "asks",
        "client",
        "inbox",
        "inbox_bytes",
        "limits",
        "max_queue",
        "max_queue_bytes",
        "namespaces",
        "state",
    )

    def __init__(
        self,
        *,
        new_namespace: Callable[[str], NS],
        declared: Container[str],
        fail_ask: Callable[[W, str], None],
        members: Members[NS] | None = None,
        client: bool = False,
        max_queue: int = 64,
        max_queue_bytes: int = 1 << 20,
    ) -> None:
        self.client = client
        self.state = ConnState.CONNECTING
        self.namespaces: dict[str, NS] = {}
        self.asks: dict[str, tuple[str, W]] = {}  # token -> (namespace, waiter)
        # Made on first use: most connections never queue anything.
        self.inbox: collections.deque[tuple[Message, int]] | None = None
        self.inbox_bytes = 0
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.limits = NO_LIMITS
        self._new_namespace = new_namespace
        self._declared = declared
        self._fail_ask = fail_ask
        self._members = members

    # -- transitions: the only places that change a state ------------------------------

    def _set_state(self, new: ConnState) -> None:
        if new not in CONN_TRANSITIONS[self.state]:
            raise StateError(f"connection: {self.state.value} -> {new.value}")
        self.state = new

    def _set_ns(self, ns: NS, new: NsState) -> None:
        old = ns.state
        if new not in NAMESPACE_TRANSITIONS[old]:
            raise StateError(f"namespace {ns.namespace!r}: {old.value} -> {new.value}")
        ns.state = new
        if old is NsState.DISCONNECTED:
            if ns.namespace in self.namespaces:
                raise StateError(f"namespace {ns.namespace!r} is in the session twice")
            self.namespaces[ns.namespace] = ns
        elif new is NsState.DISCONNECTED:
            del self.namespaces[ns.namespace]
            if ns.room_states:
                raise StateError(f"namespace {ns.namespace!r} removed with rooms {ns.room_states}")
            self._fail_asks(lambda namespace: namespace == ns.namespace, "namespace disconnected")
        # A member is a namespace connected with no disconnect under way: so during its
        # _OnNamespaceDisconnect a connection is no longer counted, however it leaves.
        if self._members is not None:
            if new is NsState.CONNECTED:
                self._members.namespace_added(ns)
            elif old is NsState.CONNECTED:
                self._members.namespace_removed(ns)

    def _set_room(self, ns: NS, room: str, new: RoomState) -> None:
        old = ns.room_state(room)
        if new not in ROOM_TRANSITIONS[old]:
            raise StateError(f"room {room!r} of {ns.namespace!r}: {old.value} -> {new.value}")
        if new is RoomState.JOINING and ns.state not in WRITABLE_NS:
            raise StateError(
                f"room {room!r} joined in namespace {ns.namespace!r} ({ns.state.value})"
            )
        if new is RoomState.LEFT:
            del ns.room_states[room]
        else:
            ns.room_states[room] = new
        if self._members is not None:
            if new is RoomState.JOINED and old is RoomState.JOINING:
                self._members.room_added(ns, room)
            elif new is RoomState.LEFT and old is RoomState.LEAVING:
                self._members.room_removed(ns, room)

    def _fail_asks(self, matches: Callable[[str], bool], reason: str) -> None:
        if not self.asks:
            return
        for token, (namespace, waiter) in list(self.asks.items()):
            if matches(namespace):
                del self.asks[token]
                self._fail_ask(waiter, reason)

    # -- the connection ----------------------------------------------------------------

    def declares(self, namespace: str) -> bool:
        """Whether this side serves ``namespace`` (a connect to it can succeed)."""
        return namespace in self._declared

    @property
    def open(self) -> bool:
        return self.state is ConnState.OPEN

    def accept(self, conn_id: str) -> Frame:
        """The handshake succeeded (server): ``CONNECTING`` -> ``OPEN``; the ``A<id>`` frame."""
        self._set_state(ConnState.OPEN)
        # An id taken from a header may hold lone surrogates (aiohttp decodes header bytes
        # that are not UTF-8 that way): the frame stays text the client can read.
        return (ACK_OK + conn_id).encode(errors="replace"), False

    def acknowledged(self) -> None:
        """The server's ``A<id>`` arrived (client), or a native-only connection opened:
        ``CONNECTING`` -> ``OPEN``."""
        self._set_state(ConnState.OPEN)

    def refuse(self, reason: str) -> Frame:
        """The handshake is refused (server): the ``H`` frame to send before the close."""
        if self.state is not ConnState.CONNECTING:
            raise StateError(f"refused in state {self.state.value}")
        return (ACK_REFUSED + reason).encode(errors="replace"), False

    def begin_close(self) -> bool:
        """``CONNECTING``/``OPEN`` -> ``CLOSING``: nothing more is sent or handled, and every
        pending ask fails. ``False`` when the connection was closing already."""
        if self.state is ConnState.CLOSING or self.state is ConnState.CLOSED:
            return False
        self._set_state(ConnState.CLOSING)
        self.inbox = None
        self.inbox_bytes = 0
        self._fail_asks(lambda namespace: True, "connection closed")
        return True

    def closing_events(self) -> Iterator[tuple[NS, Message]]:
        """The forced events of a close (spec 11.2), in order, removing as it goes: per
        namespace, each room's ``_OnRoomLeave`` and ``_OnRoomLeft``, then the namespace's
        ``_OnNamespaceDisconnect``. A connect still being decided ends without events."""
        if self.state is not ConnState.CLOSING:
            raise StateError(f"closing events in state {self.state.value}")
        for ns in list(self.namespaces.values()):
            if self.namespaces.get(ns.namespace) is not ns:
                continue  # removed while earlier events ran (a connect that ended)
            if ns.state is NsState.CONNECTING:
                self._abandon_rooms(ns)
                self._set_ns(ns, NsState.DISCONNECTED)
                continue
            owner = ns.state is NsState.CONNECTED
            if owner:
                self._set_ns(ns, NsState.DISCONNECTING)
            yield from self.forced_leaves(ns, local=True)
            self.remove(ns)
            if owner:
                yield (
                    ns,
                    Message(ns.namespace, event=ON_NAMESPACE_DISCONNECT, forced=True, local=True),
                )

    def finish(self) -> None:
        """``CLOSING`` -> ``CLOSED``, once the closing events ran."""
        if self.namespaces:
            raise StateError(f"closed with namespaces {list(self.namespaces)}")
        self._set_state(ConnState.CLOSED)

    # -- what arrived and waits to be handled ------------------------------------------

    def queue(self, msg: Message, size: int) -> bool:
        """Keep ``msg`` (its frame was ``size`` bytes) until its turn; ``False`` once the
        queue holds more than ``max_queue`` messages or ``max_queue_bytes`` bytes."""
        if self.inbox is None:
            self.inbox = collections.deque()
        self.inbox.append((msg, size))
        self.inbox_bytes += size
        return not self.inbox_full

    @property
    def inbox_full(self) -> bool:
        inbox = self.inbox
        return inbox is not None and (
            len(inbox) > self.max_queue or self.inbox_bytes > self.max_queue_bytes
        )

    def next_queued(self) -> Message | None:
        if not self.inbox:
            return None
        msg, size = self.inbox.popleft()
        self.inbox_bytes -= size
        return msg

    def queued(self) -> list[Message]:
        """The messages waiting for their turn, oldest first."""
        return [msg for msg, _ in self.inbox or ()]

    # -- asks --------------------------------------------------------------------------

    def ask_started(self, token: str, namespace: str, waiter: W) -> None:
        """An ask of ``namespace`` went out with ``token``; ``waiter`` waits for the answer."""
        if self.state is not ConnState.OPEN:
            raise StateError(f"ask in state {self.state.value}")
        if token in self.asks:
            raise StateError(f"token {token!r} is already waiting")
        self.asks[token] = (namespace, waiter)

    def take_reply(self, token: str) -> W | None:
        """The waiter of the ask that ``token`` answers, removed; ``None`` if none waits."""
        ask = self.asks.pop(token, None)
        return ask[1] if ask is not None else None

    def ask_ended(self, token: str) -> None:
        """The ask of ``token`` ended on the asker's side (answered, timed out, cancelled)."""
        self.asks.pop(token, None)

    def is_request(self, token: str) -> bool:
        """Whether a received token asks this side for an answer (spec 8.1): the peer's
        requests start with ``$`` on a server and do not on a client."""
        return bool(token) and (token[0] != "$") is self.client

    # -- writing (spec 4.1) ------------------------------------------------------------

    def namespace(self, name: str) -> NS | None:
        """The namespace ``name`` if it is connected (or its disconnect is being decided)."""
        ns = self.namespaces.get(name)
        return ns if ns is not None and ns.state in WRITABLE_NS else None

    def connected(self, ns: NS) -> bool:
        """Whether ``ns`` is connected, with no disconnect of it under way."""
        return ns.state is NsState.CONNECTED

    def can_write(self, namespace: str, room: str, event: str) -> bool:
        if self.state is not ConnState.OPEN:
            return False
        if event in EXEMPT_NS:
            return True
        ns = self.namespaces.get(namespace)
        if ns is None or ns.state not in WRITABLE_NS:
            return False
        return not room or event in EXEMPT_ROOM or ns.room_states.get(room) in IN_ROOM

    def answer(self, msg: Message, body: bytes = b"", err: str = "") -> bytes | None:
        """The frame that answers ``msg`` with ``body`` or the error ``err`` (spec 7.2).

        ``None`` when nothing may be sent: the connection is not open, or ``msg`` carries an
        error itself (answering it could bounce forever, spec 7.3). A peer's request whose
        namespace or room the write rules refuse is answered with ``bad namespace`` or
        ``bad room`` instead, so the peer's ask ends at once rather than at its timeout.
        """
        if msg.err or self.state is not ConnState.OPEN:
            return None
        # The common case of the write rules, without the call: no room, and a namespace
        # that is connected (measured: a tenth of the server's work per answer).
        ns = self.namespaces.get(msg.namespace)
        if not msg.room and ns is not None and ns.state in WRITABLE_NS:
            return encode_answer(msg, body, err)
        if self.can_write(msg.namespace, msg.room, msg.event):
            return encode_answer(msg, body, err)
        if not self.is_request(msg.token):
            return None
        if self.namespace(msg.namespace) is None:
            return encode_answer(msg, err=ERR_BAD_NAMESPACE)
        return encode_answer(msg, err=ERR_BAD_ROOM)

    def empty_reply(self, msg: Message) -> Frame | None:
        """The bare acknowledgement of the system request ``msg`` (spec 2.6, always text)."""
        return (encode_empty_reply(msg.token), False) if self.state is ConnState.OPEN else None

    def _error(self, msg: Message, text: str) -> Frame | None:
        data = self.answer(msg, err=text)
        return (data, msg.binary) if data is not None else None

    # -- namespaces ------------------------------------------------------------------------

    def connect_requested(self, msg: Message) -> NS | Frame | None:
        """The peer asks to connect ``msg.namespace`` (spec 5.1, 5.2 on a client).

        ``None``: ignore it (no token, isNoOp); a :data:`Frame`: send it and stop (an
        empty reply when connected already, ``bad namespace``, a name, a count or a
        payload past ``limits``); a namespace (now ``CONNECTING``): run its ``_OnNamespaceConnect``,
        then :meth:`connect_decided`.
        """
        if not msg.token or msg.noop:
            return None
        if msg.namespace in self.namespaces:
            return self.empty_reply(msg)  # duplicate: connected, or being connected
        if msg.namespace not in self._declared:
            return self._error(msg, ERR_BAD_NAMESPACE)
        refusal = self.limits.connect_refusal(len(self.namespaces), msg.namespace, msg.body)
        if refusal is not None:
            return self._error(msg, refusal)
        ns = self._new_namespace(msg.namespace)
        self._set_ns(ns, NsState.CONNECTING)
        return ns

    def connect_decided(self, ns: NS, msg: Message, refusal: str | None) -> Frame | None:
        """The hook decided the peer's connect: the answer to send (the namespace is
        ``CONNECTED`` afterwards if it was accepted and the connection is still open)."""
        self.connect_finished(ns, refusal is None)
        if refusal is not None:
            return self._error(msg, refusal)
        return self.empty_reply(msg) if ns.state is NsState.CONNECTED else None

    def connect_started(self, name: str) -> NS | None:
        """This side connects ``name``: a new record in ``CONNECTING``; ``None`` while a
        record of that name exists (a connect or a disconnect of it is being decided: wait
        for it, then look again)."""
        if self.state is not ConnState.OPEN:
            raise StateError(f"connect in state {self.state.value}")
        if name in self.namespaces:
            return None
        ns = self._new_namespace(name)
        self._set_ns(ns, NsState.CONNECTING)
        return ns

    def connect_finished(self, ns: NS, ok: bool) -> bool:
        """End a connect: ``CONNECTED`` if ``ok`` and still possible, else removed.
        Whether the namespace is connected now."""
        if ns.state is not NsState.CONNECTING:
            return False  # removed meanwhile (the connection closed)
        if ok and self.state is ConnState.OPEN:
            self._set_ns(ns, NsState.CONNECTED)
            return True
        self._abandon_rooms(ns)
        self._set_ns(ns, NsState.DISCONNECTED)
        return False

    def disconnect_requested(self, msg: Message) -> NS | Frame | None:
        """The peer asks to disconnect ``msg.namespace`` (spec 5.3, 5.4 on a client).

        ``None``: ignore; a :data:`Frame`: send it and stop (not connected); a namespace, now
        ``DISCONNECTING``: fire its ``_OnNamespaceDisconnect`` (a server's hook may refuse:
        :meth:`disconnect_refused`), then :meth:`forced_leaves` and :meth:`remove`.
        """
        if not msg.token or msg.noop:
            return None
        ns = self.namespaces.get(msg.namespace)
        if ns is None or ns.state is not NsState.CONNECTED:
            return self.empty_reply(msg)
        self._set_ns(ns, NsState.DISCONNECTING)
        return ns

    def disconnect_refused(self, ns: NS, msg: Message, refusal: str) -> Frame | None:
        """The hook refused the peer's disconnect: back to ``CONNECTED``, the error to send.
        Once the connection is closing the namespace stays ``DISCONNECTING``: its
        disconnect event ran and must not run again. If it was removed meanwhile (the peer
        agreed to this side's own disconnect of it) the refusal is moot: it is gone, and
        the peer is told so with an empty reply."""
        if ns.state is NsState.DISCONNECTED:
            return self.empty_reply(msg)
        if ns.state is not NsState.DISCONNECTING or self.state is not ConnState.OPEN:
            return None
        self._set_ns(ns, NsState.CONNECTED)
        return self._error(msg, refusal)

    def disconnect_started(self, ns: NS) -> bool:
        """This side removes ``ns`` (the peer acknowledged its disconnect): ``CONNECTED`` ->
        ``DISCONNECTING``; fire :meth:`forced_leaves`, :meth:`remove`, then its
        ``_OnNamespaceDisconnect``. ``False`` if it is not connected any more."""
        if ns.state is not NsState.CONNECTED or self.namespaces.get(ns.namespace) is not ns:
            return False
        self._set_ns(ns, NsState.DISCONNECTING)
        return True

    def disconnected(self, ns: NS, *, local: bool) -> list[tuple[NS, Message]]:
        """The peer acknowledged this side's disconnect of ``ns`` (spec 5.4): it is removed
        now (writes to it stop, its asks fail) and the events to fire are returned, in
        order: its rooms' forced leaves, then its ``_OnNamespaceDisconnect``. Empty when it
        was not connected any more (whoever removed it fired them). If the peer's own
        disconnect of it is being decided (its ``_OnNamespaceDisconnect`` runs), it is
        removed all the same (the peer is gone from it) with its rooms' events only."""
        if self.namespaces.get(ns.namespace) is not ns or self.state is not ConnState.OPEN:
            return []
        if ns.state is NsState.DISCONNECTING:
            events = [*self.forced_leaves(ns, local=local)]
            self.remove(ns)
            return events
        if not self.disconnect_started(ns):
            return []
        events = [*self.forced_leaves(ns, local=local)]
        self.remove(ns)
        events.append((ns, Message(ns.namespace, event=ON_NAMESPACE_DISCONNECT, local=local)))
        return events

    def forced_leaves(self, ns: NS, *, local: bool) -> Iterator[tuple[NS, Message]]:
        """Leave every room of ``ns`` (which is ``DISCONNECTING``): for each joined room its
        ``_OnRoomLeave`` then its ``_OnRoomLeft``, forced; a join being decided ends
        without events; a room whose leave is already firing gets only its ``_OnRoomLeft``.
        Nothing if it was removed meanwhile (whoever removed it left its rooms)."""
        if ns.state is NsState.DISCONNECTED:
            return
        if ns.state is not NsState.DISCONNECTING:
            raise StateError(f"forced leaves of {ns.namespace!r} ({ns.state.value})")
        for room in list(ns.room_states):
            state = ns.room_state(room)
            if state is RoomState.JOINING:
                self._set_room(ns, room, RoomState.LEFT)
                continue
            if state is RoomState.JOINED:
                self._set_room(ns, room, RoomState.LEAVING)
                yield ns, Message(ns.namespace, room, ON_ROOM_LEAVE, forced=True, local=local)
            if ns.room_state(room) is RoomState.LEAVING:
                self._set_room(ns, room, RoomState.LEFT)
                yield ns, Message(ns.namespace, room, ON_ROOM_LEFT, forced=True, local=local)

    def remove(self, ns: NS) -> None:
        """``DISCONNECTING`` -> removed, after :meth:`forced_leaves`; asks on it fail."""
        if ns.state is NsState.DISCONNECTED:
            return  # the close removed it meanwhile
        self._abandon_rooms(ns)
        self._set_ns(ns, NsState.DISCONNECTED)

    def _abandon_rooms(self, ns: NS) -> None:
        # Joins still being decided end without events. A joined room here is a bug.
        for room in list(ns.room_states):
            self._set_room(ns, room, RoomState.LEFT)

    # -- rooms -----------------------------------------------------------------------------

    def join_requested(self, msg: Message) -> NS | Frame | None:
        """The peer asks to join ``msg.room`` (spec 6.1, 6.2 on a client).

        ``None``: ignore it (no token, isNoOp); a :data:`Frame`: send it and stop (an empty
        reply when joined already; ``bad namespace`` when the namespace is not connected,
        which Go leaves unanswered; ``bad room`` while this side joins or leaves that room
        itself, so both sides end in the state this side's own change reaches; a room past
        ``limits``, with the reason); a
        namespace whose room is now ``JOINING``: run its ``_OnRoomJoin``, then
        :meth:`join_decided`.
        """
        return self._room_requested(msg, RoomState.JOINED, RoomState.LEFT, RoomState.JOINING)

    def _room_requested(
        self, msg: Message, done: RoomState, start: RoomState, changing: RoomState
    ) -> NS | Frame | None:
        if not msg.token or msg.noop:
            return None
        ns = self.namespace(msg.namespace)
        if ns is None:
            return self._error(msg, ERR_BAD_NAMESPACE)
        state = ns.room_state(msg.room)
        if state is done:
            return self.empty_reply(msg)
        if state is not start:
            return self._error(msg, ERR_BAD_ROOM)
        if changing is RoomState.JOINING:
            refusal = self.limits.join_refusal(len(ns.room_states), msg.room)
            if refusal is not None:
                return self._error(msg, refusal)
        self._set_room(ns, msg.room, changing)
        return ns

    def join_decided(self, ns: NS, msg: Message, refusal: str | None) -> tuple[Frame | None, bool]:
        """The hook decided the peer's join: the answer to send (once ``_OnRoomJoined`` ran)
        and whether the room was joined by this decision (then fire ``_OnRoomJoined``)."""
        joined = self.join_finished(ns, msg.room, refusal is None)
        if refusal is not None:
            return self._error(msg, refusal), False
        if joined:
            return self.empty_reply(msg), True
        return self._error(msg, ERR_BAD_NAMESPACE), False  # the namespace went meanwhile

    def join_started(self, ns: NS, room: str) -> bool:
        """This side joins ``room`` of the connected ``ns``: ``LEFT`` -> ``JOINING`` (its
        ``_OnRoomJoin`` runs, then the peer is asked). ``False`` if the room is not
        ``LEFT``."""
        if self.state is not ConnState.OPEN or ns.state is not NsState.CONNECTED:
            return False
        if self.namespaces.get(ns.namespace) is not ns or ns.room_state(room) is not RoomState.LEFT:
            return False
        self._set_room(ns, room, RoomState.JOINING)
        return True

    def join_finished(self, ns: NS, room: str, ok: bool) -> bool:
        """End a join: ``JOINED`` if ``ok`` and still possible, else ``LEFT``. Whether the
        room is joined now (by this join)."""
        if ns.room_state(room) is not RoomState.JOINING:
            return False  # abandoned meanwhile (namespace or connection gone)
        # A disconnect of the namespace being decided may yet be refused; if not, its
        # forced leaves take the room with its events.
        if ok and self.state is ConnState.OPEN and ns.state in WRITABLE_NS:
            self._set_room(ns, room, RoomState.JOINED)
            return True
        self._set_room(ns, room, RoomState.LEFT)
        return False

    def leave_requested(self, msg: Message) -> NS | Frame | None:
        """The peer asks to leave ``msg.room`` (spec 6.3, 6.4 on a client).

        ``None``: ignore it (no token, isNoOp); a :data:`Frame`: send it and stop (an empty
        reply when not joined; ``bad namespace`` when the namespace is not connected;
        ``bad room`` while this side joins or leaves that room itself); a namespace whose
        room is now ``LEAVING``: run its ``_OnRoomLeave``, then :meth:`leave_decided`.
        """
        return self._room_requested(msg, RoomState.LEFT, RoomState.JOINED, RoomState.LEAVING)

    def leave_decided(self, ns: NS, msg: Message, refusal: str | None) -> tuple[Frame | None, bool]:
        """The hook decided the peer's leave: the answer to send (once ``_OnRoomLeft`` ran)
        and whether the room was left by this decision (then fire ``_OnRoomLeft``; not if a
        forced leave took it meanwhile and fired it)."""
        left = self.leave_finished(ns, msg.room, refusal is None)
        if refusal is not None:
            return self._error(msg, refusal), False
        return self.empty_reply(msg), left

    def leave_started(self, ns: NS, room: str) -> bool:
        """This side leaves ``room``: ``JOINED`` -> ``LEAVING`` (its ``_OnRoomLeave`` runs,
        then the peer is asked). ``False`` if it is not ``JOINED``."""
        if ns.room_state(room) is not RoomState.JOINED or self.namespace(ns.namespace) is not ns:
            return False
        self._set_room(ns, room, RoomState.LEAVING)
        return True

    def leave_finished(self, ns: NS, room: str, ok: bool) -> bool:
        """End a leave: ``LEFT`` if ``ok``, else back to ``JOINED``. Whether the room was
        left by this leave (``False`` if a forced leave took it meanwhile)."""
        if ns.room_state(room) is not RoomState.LEAVING:
            return False
        if ok:
            self._set_room(ns, room, RoomState.LEFT)
            return True
        if self.state is ConnState.OPEN:
            self._set_room(ns, room, RoomState.JOINED)
        # else: closing; the close's forced leave fires its _OnRoomLeft
        return False
