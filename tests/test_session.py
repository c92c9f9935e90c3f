"""The sans-I/O session of a connection (:class:`wsmvc.session.Session`), driven without
sockets or asyncio (``design.md`` §6).

* Unit tests of each decision against ``neffos-protocol.md`` §4 to §6 and §11: what is sent
  for a connect, disconnect, join or leave request of the peer (duplicates, undeclared or
  unconnected namespaces, requests without a token or with isNoOp, refusals, messages that
  carry an error), the forced events of a close in the order of §11.2, pending asks failing
  the moment their namespace or the connection goes, the bound of the inbox, and the
  transitions that raise :class:`~wsmvc.states.StateError`.
* Crossings: the bugs the state machine found, fixed (each a normal test of what is
  guaranteed now), and the ones it found since, now fixed.
* A Hypothesis state machine that plays the asyncio adapter (``Conn``, ``Dispatcher``,
  ``NSConn``): requests of the peer suspended between the session's two calls while their
  hook runs (a connect or disconnect of the peer first waits for this side's connect of
  that namespace), this side's connects (waiting for one under way), joins and leaves
  (local hook, then the peer asked, the answer read, then the task resuming), its
  disconnects, asks, the inbox, and a close that may begin at any point and whose events
  are consumed one at a time while the other flows go on. After every step it checks the
  invariants: memberships, the observer's view, asks, one connect of a namespace at a
  time, that every event fires once, that a room change is ended only by the flow that
  made it, and that both ends agree once nothing is under way.
"""

# The session changes states behind mypy's back: an `assert x.state is A` followed, after a
# call, by `assert x.state is B` is not a comparison that cannot succeed.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeAlias

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from wsmvc.protocol import (
    ERR_BAD_NAMESPACE,
    ERR_BAD_ROOM,
    ON_NAMESPACE_CONNECT,
    ON_NAMESPACE_DISCONNECT,
    ON_ROOM_JOIN,
    ON_ROOM_LEAVE,
    ON_ROOM_LEFT,
    Message,
    encode_answer,
    encode_empty_reply,
)
from wsmvc.session import Session
from wsmvc.states import (
    IN_ROOM,
    WRITABLE_NS,
    ConnState,
    Frame,
    Namespace,
    NsState,
    RoomState,
    StateError,
)

DECLARED = frozenset({"a", "b", "c"})


# -- the pieces around a session ---------------------------------------------------------------


class Rec(Namespace):
    """A namespace record, numbered in the order the session made them."""

    __slots__ = ("serial",)

    def __init__(self, namespace: str, serial: int) -> None:
        super().__init__(namespace)
        self.serial = serial

    def __repr__(self) -> str:
        rooms = {room: state.value for room, state in self.room_states.items()}
        return f"<Rec#{self.serial} {self.namespace!r} {self.state.value} {rooms}>"


Event = tuple[Rec, Message]


class Waiter:
    """What waits for the answer to one ask (an asyncio future in ``Conn``)."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"<Waiter {self.token!r}>"


class RecordingMembers:
    """A :class:`~wsmvc.states.Members` observer: every call, and the view they add up to."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Rec, str]] = []
        self.namespaces: set[Rec] = set()
        self.rooms: set[tuple[Rec, str]] = set()
        self.errors: list[str] = []

    def namespace_added(self, nsconn: Rec) -> None:
        self.calls.append(("namespace_added", nsconn, ""))
        if nsconn in self.namespaces:
            self.errors.append(f"{nsconn!r} added twice")
        self.namespaces.add(nsconn)

    def namespace_removed(self, nsconn: Rec) -> None:
        self.calls.append(("namespace_removed", nsconn, ""))
        if nsconn not in self.namespaces:
            self.errors.append(f"{nsconn!r} removed but not added")
        self.namespaces.discard(nsconn)

    def room_added(self, nsconn: Rec, room: str) -> None:
        self.calls.append(("room_added", nsconn, room))
        if (nsconn, room) in self.rooms:
            self.errors.append(f"room {room!r} of {nsconn!r} added twice")
        self.rooms.add((nsconn, room))

    def room_removed(self, nsconn: Rec, room: str) -> None:
        self.calls.append(("room_removed", nsconn, room))
        if (nsconn, room) not in self.rooms:
            self.errors.append(f"room {room!r} of {nsconn!r} removed but not added")
        self.rooms.discard((nsconn, room))


class Rig:
    """A session with a recording observer and a recording ``fail_ask``."""

    def __init__(
        self,
        *,
        client: bool = False,
        max_queue: int = 64,
        max_queue_bytes: int = 1 << 20,
        on_fail: Callable[[Waiter, str], None] | None = None,
    ) -> None:
        self.client = client
        self.records: list[Rec] = []
        self.failed: list[tuple[Waiter, str]] = []
        self.members = RecordingMembers()
        self._on_fail = on_fail
        self._tokens = 100
        self.session: Session[Rec, Waiter] = Session(
            new_namespace=self._new_namespace,
            declared=DECLARED,
            fail_ask=self._fail_ask,
            members=self.members,
            client=client,
            max_queue=max_queue,
            max_queue_bytes=max_queue_bytes,
        )

    def _new_namespace(self, name: str) -> Rec:
        rec = Rec(name, len(self.records))
        self.records.append(rec)
        return rec

    def _fail_ask(self, waiter: Waiter, reason: str) -> None:
        self.failed.append((waiter, reason))
        if self._on_fail is not None:
            self._on_fail(waiter, reason)

    def peer_token(self, *, request: bool = True) -> str:
        """A fresh token of the peer: one of its requests (spec 8.1: ``$`` and digits from a
        client, digits from a server), or with ``request=False`` the other form."""
        self._tokens += 1
        dollar = self.client is not request
        return ("$" if dollar else "") + str(self._tokens)

    def own_token(self) -> str:
        """A fresh token for an ask of this side."""
        return self.peer_token(request=False)


def request(
    event: str,
    namespace: str = "a",
    room: str = "",
    *,
    token: str = "$1",
    noop: bool = False,
    binary: bool = False,
    err: str = "",
) -> Message:
    return Message(
        namespace=namespace, room=room, event=event, token=token, noop=noop, binary=binary, err=err
    )


def empty(msg: Message) -> Frame:
    return encode_empty_reply(msg.token), False


def error(msg: Message, text: str) -> Frame:
    return encode_answer(msg, err=text), msg.binary


def open_rig(*, client: bool = False, max_queue: int = 64, max_queue_bytes: int = 1 << 20) -> Rig:
    rig = Rig(client=client, max_queue=max_queue, max_queue_bytes=max_queue_bytes)
    if client:
        rig.session.acknowledged()
    else:
        assert rig.session.accept("c1") == (b"Ac1", False)
    return rig


def peer_connect(rig: Rig, name: str = "a", rooms: tuple[str, ...] = ()) -> Rec:
    """Connect ``name`` and join ``rooms`` by requests of the peer, all accepted."""
    session = rig.session
    msg = request(ON_NAMESPACE_CONNECT, name, token=rig.peer_token())
    rec = session.connect_requested(msg)
    assert isinstance(rec, Rec)
    assert session.connect_decided(rec, msg, None) == empty(msg)
    for room in rooms:
        join = request(ON_ROOM_JOIN, name, room, token=rig.peer_token())
        assert session.join_requested(join) is rec
        assert session.join_decided(rec, join, None) == (empty(join), True)
    return rec


def start_connect(session: Session[Rec, Waiter], name: str) -> Rec:
    """``connect_started(name)`` when no record of ``name`` exists: a new record."""
    rec = session.connect_started(name)
    assert rec is not None and rec.state is NsState.CONNECTING
    return rec


def forced(ns: Rec, event: str, room: str = "", *, local: bool = True) -> Event:
    return ns, Message(ns.namespace, room, event, forced=True, local=local)


# -- the handshake -----------------------------------------------------------------------------


def test_the_server_accepts_once() -> None:
    rig = Rig()
    session = rig.session
    assert session.state is ConnState.CONNECTING
    assert session.accept("id;1") == (b"Aid;1", False)  # the id verbatim, a text frame
    assert session.state is ConnState.OPEN
    with pytest.raises(StateError):
        session.accept("id;1")
    assert session.state is ConnState.OPEN


def test_a_refused_handshake_sends_h_then_closes() -> None:
    rig = Rig()
    session = rig.session
    assert session.refuse("not allowed; go away") == (b"Hnot allowed; go away", False)
    assert session.state is ConnState.CONNECTING  # refuse() only says what to send
    assert session.begin_close()  # Conn closes right after writing it
    assert session.state is ConnState.CLOSING
    assert list(session.closing_events()) == []
    session.finish()
    assert session.state is ConnState.CLOSED


def test_refuse_after_accept_raises() -> None:
    session = open_rig().session
    with pytest.raises(StateError):
        session.refuse("too late")
    assert session.state is ConnState.OPEN


def test_the_client_opens_on_the_servers_ack() -> None:
    session = Rig(client=True).session
    session.acknowledged()
    assert session.state is ConnState.OPEN
    with pytest.raises(StateError):
        session.acknowledged()


# -- tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "token", "is_request"),
    [
        (False, "$1", True),
        (False, "1", False),
        (False, "", False),
        (True, "1", True),
        (True, "$1", False),
        (True, "", False),
    ],
)
def test_requests_by_token(client: bool, token: str, is_request: bool) -> None:
    assert Rig(client=client).session.is_request(token) is is_request


# -- namespace connect (spec 5.1, 5.2) -----------------------------------------------------------


@pytest.mark.parametrize("client", [False, True])
def test_an_accepted_connect_request(client: bool) -> None:
    rig = open_rig(client=client)
    session = rig.session
    msg = request(ON_NAMESPACE_CONNECT, "a", token=rig.peer_token())
    rec = session.connect_requested(msg)
    assert isinstance(rec, Rec)
    assert rec.state is NsState.CONNECTING
    assert session.namespace("a") is None  # not connected while its hook decides
    assert not session.can_write("a", "", "chat")
    assert rig.members.calls == []
    assert session.connect_decided(rec, msg, None) == (msg.token.encode() + b";;;;;;", False)
    assert rec.state is NsState.CONNECTED
    assert session.namespace("a") is rec
    assert rig.members.calls == [("namespace_added", rec, "")]


@pytest.mark.parametrize("decided", [True, False], ids=["connected", "being-decided"])
def test_a_duplicate_connect_gets_an_empty_reply_and_no_new_record(decided: bool) -> None:
    rig = open_rig()
    session = rig.session
    first = request(ON_NAMESPACE_CONNECT, "a", token="$1")
    rec = session.connect_requested(first)
    assert isinstance(rec, Rec)
    if decided:
        session.connect_decided(rec, first, None)
    calls = list(rig.members.calls)
    again = request(ON_NAMESPACE_CONNECT, "a", token="$2")
    assert session.connect_requested(again) == (b"$2;;;;;;", False)
    assert rig.records == [rec]
    assert session.namespaces == {"a": rec}
    assert rig.members.calls == calls


def test_a_connect_to_an_undeclared_namespace() -> None:
    rig = open_rig()
    msg = request(ON_NAMESPACE_CONNECT, "nope", token="$2")
    assert rig.session.connect_requested(msg) == (
        b"$2;nope;;_OnNamespaceConnect;1;0;bad namespace",
        False,
    )
    assert rig.records == []
    assert rig.session.namespaces == {}


def test_a_refused_connect() -> None:
    rig = open_rig()
    session = rig.session
    msg = request(ON_NAMESPACE_CONNECT, "a", token="$1")
    rec = session.connect_requested(msg)
    assert isinstance(rec, Rec)
    assert session.connect_decided(rec, msg, "not now") == (
        b"$1;a;;_OnNamespaceConnect;1;0;not now",
        False,
    )
    assert rec.state is NsState.DISCONNECTED
    assert session.namespaces == {}
    assert rig.members.calls == []


def test_errors_answer_in_the_frame_type_of_the_request_and_empty_replies_are_text() -> None:
    rig = open_rig()
    session = rig.session
    undeclared = request(ON_NAMESPACE_CONNECT, "nope", token="$1", binary=True)
    assert session.connect_requested(undeclared) == (
        b"$1;nope;;_OnNamespaceConnect;1;0;bad namespace",
        True,
    )
    msg = request(ON_NAMESPACE_CONNECT, "a", token="$2", binary=True)
    rec = session.connect_requested(msg)
    assert isinstance(rec, Rec)
    assert session.connect_decided(rec, msg, None) == (b"$2;;;;;;", False)


@pytest.mark.parametrize("client", [False, True])
@pytest.mark.parametrize(
    "event", [ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT, ON_ROOM_JOIN, ON_ROOM_LEAVE]
)
@pytest.mark.parametrize("form", ["no-token", "noop"])
def test_system_requests_without_token_or_with_noop_are_ignored(
    client: bool, event: str, form: str
) -> None:
    rig = open_rig(client=client)
    session = rig.session
    a = peer_connect(rig, "a", rooms=("joined",))
    room = "" if event in (ON_NAMESPACE_CONNECT, ON_NAMESPACE_DISCONNECT) else "r"
    if event == ON_ROOM_LEAVE:
        room = "joined"
    name = "b" if event == ON_NAMESPACE_CONNECT else "a"
    token = "" if form == "no-token" else rig.peer_token()
    msg = request(event, name, room, token=token, noop=form == "noop")
    calls = list(rig.members.calls)
    handler = {
        ON_NAMESPACE_CONNECT: session.connect_requested,
        ON_NAMESPACE_DISCONNECT: session.disconnect_requested,
        ON_ROOM_JOIN: session.join_requested,
        ON_ROOM_LEAVE: session.leave_requested,
    }[event]
    assert handler(msg) is None
    assert session.namespaces == {"a": a}
    assert a.state is NsState.CONNECTED
    assert a.room_states == {"joined": RoomState.JOINED}
    assert rig.members.calls == calls


# -- namespace disconnect (spec 5.3, 5.4) --------------------------------------------------------


def test_a_disconnect_of_an_unconnected_namespace_gets_an_empty_reply() -> None:
    rig = open_rig()
    msg = request(ON_NAMESPACE_DISCONNECT, "a", token="$1")
    assert rig.session.disconnect_requested(msg) == (b"$1;;;;;;", False)
    assert rig.records == []


def test_an_accepted_disconnect_leaves_the_rooms_then_removes() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r1",))
    waiter = Waiter("7")
    session.ask_started("7", "a", waiter)
    msg = request(ON_NAMESPACE_DISCONNECT, "a", token="$9")
    assert session.disconnect_requested(msg) is a
    assert a.state is NsState.DISCONNECTING
    assert session.namespace("a") is a  # still written to while its hook decides (4.1)
    assert session.can_write("a", "r1", "chat")
    # but no longer counted as a member of the namespace, however it ends
    assert rig.members.calls[-1] == ("namespace_removed", a, "")
    assert rig.members.rooms == {(a, "r1")}
    # no refusal: the rooms are left, forced and not local (spec 5.3 step 4)
    assert list(session.forced_leaves(a, local=False)) == [
        forced(a, ON_ROOM_LEAVE, "r1", local=False),
        forced(a, ON_ROOM_LEFT, "r1", local=False),
    ]
    assert rig.failed == []
    session.remove(a)
    assert a.state is NsState.DISCONNECTED
    assert session.namespaces == {}
    assert rig.failed == [(waiter, "namespace disconnected")]
    assert session.asks == {}
    assert session.empty_reply(msg) == (b"$9;;;;;;", False)
    assert rig.members.calls[-2:] == [("namespace_removed", a, ""), ("room_removed", a, "r1")]
    assert rig.members.namespaces == set() and rig.members.rooms == set()


def test_a_refused_disconnect_stays_connected() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r1",))
    msg = request(ON_NAMESPACE_DISCONNECT, "a", token="$9")
    calls = list(rig.members.calls)
    assert session.disconnect_requested(msg) is a
    assert session.disconnect_refused(a, msg, "stay") == (
        b"$9;a;;_OnNamespaceDisconnect;1;0;stay",
        False,
    )
    assert a.state is NsState.CONNECTED
    assert a.room_states == {"r1": RoomState.JOINED}
    # uncounted while its hook decided, counted again: the rooms stayed
    assert rig.members.calls == [*calls, ("namespace_removed", a, ""), ("namespace_added", a, "")]
    assert rig.members.namespaces == {a} and rig.members.rooms == {(a, "r1")}
    # a second request is decided again
    assert session.disconnect_requested(request(ON_NAMESPACE_DISCONNECT, "a", token="$10")) is a


def test_a_disconnect_hook_that_ran_before_the_close_does_not_run_again() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r1",))
    msg = request(ON_NAMESPACE_DISCONNECT, "a", token="$9")
    assert session.disconnect_requested(msg) is a  # its _OnNamespaceDisconnect runs
    assert session.begin_close()
    assert session.disconnect_refused(a, msg, "stay") is None  # nothing sent once closing
    assert a.state is NsState.DISCONNECTING
    assert list(session.closing_events()) == [
        forced(a, ON_ROOM_LEAVE, "r1"),
        forced(a, ON_ROOM_LEFT, "r1"),
    ]
    assert session.namespaces == {}
    session.finish()
    assert rig.members.namespaces == set()
    assert rig.members.rooms == set()


# -- rooms (spec 6) ------------------------------------------------------------------------------


@pytest.mark.parametrize("event", [ON_ROOM_JOIN, ON_ROOM_LEAVE])
@pytest.mark.parametrize(
    ("client", "token", "answered"),
    [(False, "$1", True), (False, "1", False), (True, "1", True), (True, "$1", False)],
    ids=["server-request", "server-reply-token", "client-request", "client-reply-token"],
)
def test_room_requests_in_an_unconnected_namespace(
    event: str, client: bool, token: str, answered: bool
) -> None:
    rig = open_rig(client=client)
    session = rig.session
    msg = request(event, "a", "r", token=token)
    handler = session.join_requested if event == ON_ROOM_JOIN else session.leave_requested
    expected = (f"{token};a;r;{event};1;0;bad namespace".encode(), False)
    assert handler(msg) == (expected if answered else None)
    assert rig.records == []


def test_room_requests_in_a_namespace_being_connected_get_bad_namespace() -> None:
    rig = open_rig()
    session = rig.session
    connect = request(ON_NAMESPACE_CONNECT, "a", token="$1")
    rec = session.connect_requested(connect)
    assert isinstance(rec, Rec)
    join = request(ON_ROOM_JOIN, "a", "r", token="$2")
    assert session.join_requested(join) == (b"$2;a;r;_OnRoomJoin;1;0;bad namespace", False)
    assert rec.room_states == {}


def test_an_accepted_join_request() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a")
    msg = request(ON_ROOM_JOIN, "a", "r", token="$5")
    assert session.join_requested(msg) is a
    assert a.room_state("r") is RoomState.JOINING
    assert not a.in_room("r")
    assert session.join_decided(a, msg, None) == ((b"$5;;;;;;", False), True)
    assert a.room_state("r") is RoomState.JOINED
    assert rig.members.calls[-1] == ("room_added", a, "r")
    # joined already: an empty reply, no hook
    again = request(ON_ROOM_JOIN, "a", "r", token="$6")
    assert session.join_requested(again) == (b"$6;;;;;;", False)


def test_a_refused_join_request() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a")
    msg = request(ON_ROOM_JOIN, "a", "r", token="$5")
    assert session.join_requested(msg) is a
    assert session.join_decided(a, msg, "full") == ((b"$5;a;r;_OnRoomJoin;1;0;full", False), False)
    assert a.room_state("r") is RoomState.LEFT
    assert ("room_added", a, "r") not in rig.members.calls


def test_room_requests_crossing_a_change_under_way_get_bad_room() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("left-here",))
    assert session.join_started(a, "joined-here")  # this side joins: JOINING
    assert session.leave_started(a, "left-here")  # this side leaves: LEAVING
    join = request(ON_ROOM_JOIN, "a", "joined-here", token="$5")
    assert session.join_requested(join) == (b"$5;a;joined-here;_OnRoomJoin;1;0;bad room", False)
    leave = request(ON_ROOM_LEAVE, "a", "left-here", token="$6")
    assert session.leave_requested(leave) == (b"$6;a;left-here;_OnRoomLeave;1;0;bad room", False)
    join_leaving = request(ON_ROOM_JOIN, "a", "left-here", token="$7")
    assert session.join_requested(join_leaving) == (
        b"$7;a;left-here;_OnRoomJoin;1;0;bad room",
        False,
    )
    assert a.room_states == {"left-here": RoomState.LEAVING, "joined-here": RoomState.JOINING}


def test_a_leave_request_of_a_room_not_joined_gets_an_empty_reply() -> None:
    rig = open_rig()
    a = peer_connect(rig, "a")
    msg = request(ON_ROOM_LEAVE, "a", "r", token="$5")
    assert rig.session.leave_requested(msg) == (b"$5;;;;;;", False)
    assert a.room_states == {}


def test_an_accepted_leave_request() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r",))
    msg = request(ON_ROOM_LEAVE, "a", "r", token="$5")
    assert session.leave_requested(msg) is a
    assert a.room_state("r") is RoomState.LEAVING
    assert a.in_room("r")  # still joined while its _OnRoomLeave runs
    assert session.leave_decided(a, msg, None) == ((b"$5;;;;;;", False), True)
    assert a.room_state("r") is RoomState.LEFT
    assert rig.members.calls[-1] == ("room_removed", a, "r")


def test_a_refused_leave_request_stays_joined() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r",))
    msg = request(ON_ROOM_LEAVE, "a", "r", token="$5")
    assert session.leave_requested(msg) is a
    calls = list(rig.members.calls)
    assert session.leave_decided(a, msg, "stay") == (
        (b"$5;a;r;_OnRoomLeave;1;0;stay", False),
        False,
    )
    assert a.room_state("r") is RoomState.JOINED
    assert rig.members.calls == calls


# -- this side's joins, leaves and connects ------------------------------------------------------


def test_local_join_and_leave() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a")
    assert session.join_started(a, "r")
    assert not session.join_started(a, "r")  # under way already
    assert session.join_finished(a, "r", True)
    assert a.room_state("r") is RoomState.JOINED
    assert not session.join_started(a, "r")  # joined
    assert session.leave_started(a, "r")
    assert not session.leave_started(a, "r")
    assert not session.leave_finished(a, "r", False)  # the local _OnRoomLeave refused
    assert a.room_state("r") is RoomState.JOINED
    assert session.leave_started(a, "r")
    assert session.leave_finished(a, "r", True)
    assert a.room_state("r") is RoomState.LEFT
    assert not session.leave_started(a, "r")
    assert rig.members.calls[1:] == [("room_added", a, "r"), ("room_removed", a, "r")]


def test_a_local_join_finishing_after_the_close_began_is_not_joined() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a")
    assert session.join_started(a, "r")
    session.begin_close()
    assert not session.join_finished(a, "r", True)
    assert a.room_state("r") is RoomState.LEFT
    assert not session.join_started(a, "other")


def test_local_connect() -> None:
    rig = open_rig()
    session = rig.session
    b = start_connect(session, "b")
    assert session.connect_started("b") is None  # under way: Conn.connect waits for it
    assert session.connect_finished(b, True)
    assert b.state is NsState.CONNECTED
    assert not session.connect_finished(b, True)
    assert session.connect_started("b") is None  # connected (Conn.connect returns it)
    assert rig.members.calls == [("namespace_added", b, "")]
    c = start_connect(session, "c")
    assert not session.connect_finished(c, False)
    assert c.state is NsState.DISCONNECTED
    assert session.namespaces == {"b": b}
    assert rig.records == [b, c]
    again = start_connect(session, "c")  # removed: a new record
    assert again is not c and session.namespaces == {"b": b, "c": again}


def test_a_local_connect_while_a_disconnect_of_the_namespace_is_decided_gets_none() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a")
    msg = request(ON_NAMESPACE_DISCONNECT, "a", token="$9")
    assert session.disconnect_requested(msg) is a  # its _OnNamespaceDisconnect runs
    # Conn.connect("a") waits for the disconnect under way (Dispatcher.deciding)...
    assert session.connect_started("a") is None
    assert session.namespace("a") is a and rig.records == [a]
    assert session.disconnect_refused(a, msg, "stay") == error(msg, "stay")
    # ...then looks again: connected
    assert session.namespaces == {"a": a} and a.state is NsState.CONNECTED


def test_local_connect_needs_an_open_connection() -> None:
    session = Rig().session
    with pytest.raises(StateError):
        session.connect_started("a")
    session.begin_close()
    with pytest.raises(StateError):
        session.connect_started("a")


def test_a_local_disconnect_removes_at_once_and_returns_the_events_of_5_4() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r1", "r2", "r3"))
    assert session.leave_started(a, "r2")  # its _OnRoomLeave fired already
    assert session.join_started(a, "r4")  # being joined: ends without events
    assert session.disconnected(a, local=True) == [
        forced(a, ON_ROOM_LEAVE, "r1"),
        forced(a, ON_ROOM_LEFT, "r1"),
        forced(a, ON_ROOM_LEFT, "r2"),
        forced(a, ON_ROOM_LEAVE, "r3"),
        forced(a, ON_ROOM_LEFT, "r3"),
        (a, Message("a", event=ON_NAMESPACE_DISCONNECT, local=True)),  # not forced
    ]
    assert a.state is NsState.DISCONNECTED
    assert a.room_states == {}
    assert session.namespaces == {}
    assert rig.members.namespaces == set()
    assert rig.members.rooms == set()
    # whoever comes second gets nothing to fire
    assert session.disconnected(a, local=True) == []
    assert not session.leave_finished(a, "r2", True)
    assert not session.join_finished(a, "r4", True)


# -- answers (spec 4.1, 7.2, 7.3) ----------------------------------------------------------------


def test_answers_follow_the_write_rules() -> None:
    rig = open_rig()
    session = rig.session
    peer_connect(rig, "a", rooms=("r",))
    assert session.answer(request("chat", "a", token="$1"), b"ok") == b"$1;a;;chat;0;0;ok"
    assert session.answer(request("chat", "a", token="$1"), err="no") == b"$1;a;;chat;1;0;no"
    assert session.answer(request("chat", "a", "r", token="$1"), b"ok") == b"$1;a;r;chat;0;0;ok"
    # a request of a room not joined, or of a namespace not connected: the peer is told
    assert session.answer(request("chat", "a", "x", token="$1"), b"ok") == (
        b"$1;a;x;chat;1;0;bad room"
    )
    assert session.answer(request("chat", "b", token="$1"), b"ok") == (
        b"$1;b;;chat;1;0;bad namespace"
    )
    # anything else that the write rules refuse is not sent
    assert session.answer(request("chat", "a", "x", token="1"), b"ok") is None
    assert session.answer(request("chat", "b", token=""), b"ok") is None
    session.begin_close()
    assert session.answer(request("chat", "a", token="$1"), b"ok") is None


def test_a_message_carrying_an_error_is_never_answered() -> None:
    rig = open_rig()
    session = rig.session
    peer_connect(rig, "a")
    assert session.answer(request("chat", "a", token="$1", err="boom"), b"ok") is None
    assert session.answer(request("chat", "a", token="$1", err="boom"), err="x") is None
    assert session.answer(request("chat", "b", token="$1", err="boom"), b"ok") is None
    undeclared = request(ON_NAMESPACE_CONNECT, "nope", token="$1", err="boom")
    assert session.connect_requested(undeclared) is None
    join = request(ON_ROOM_JOIN, "b", "r", token="$1", err="boom")
    assert session.join_requested(join) is None


# -- the close (spec 11.2) -----------------------------------------------------------------------


def assert_close_order(events: list[Event], rooms: dict[Rec, set[str]]) -> None:
    """``events`` are the forced local events of spec 11.2 for ``rooms`` (by namespace): per
    namespace, each room's _OnRoomLeave then its _OnRoomLeft, then the namespace's
    _OnNamespaceDisconnect, one namespace after another."""
    seen: list[Rec] = []
    groups: list[list[Message]] = []
    for ns, msg in events:
        assert msg.forced and msg.local and msg.namespace == ns.namespace and not msg.token
        if not seen or seen[-1] is not ns:
            assert ns not in seen, f"events of {ns!r} are not together"
            seen.append(ns)
            groups.append([])
        groups[-1].append(msg)
    assert set(seen) == set(rooms)
    for ns, group in zip(seen, groups, strict=True):
        *leaves, last = group
        assert (last.event, last.room) == (ON_NAMESPACE_DISCONNECT, "")
        pairs = [(leaves[i], leaves[i + 1]) for i in range(0, len(leaves), 2)]
        assert len(leaves) == 2 * len(pairs)
        for leave, left in pairs:
            assert (leave.event, left.event, left.room) == (ON_ROOM_LEAVE, ON_ROOM_LEFT, leave.room)
        assert sorted(leave.room for leave, _ in pairs) == sorted(rooms[ns])


def test_the_close_fires_the_forced_events_in_the_order_of_11_2() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r1", "r2"))
    b = peer_connect(rig, "b", rooms=("r3",))
    c = peer_connect(rig, "c")
    assert session.begin_close()
    events = []
    for ns, msg in session.closing_events():
        # while _OnRoomLeave runs the room is still joined; from _OnRoomLeft on it is not
        assert ns.in_room(msg.room) is (msg.event == ON_ROOM_LEAVE)
        if msg.event == ON_NAMESPACE_DISCONNECT:
            assert ns.state is NsState.DISCONNECTED
            assert ns.namespace not in session.namespaces
        events.append((ns, msg))
    assert_close_order(events, {a: {"r1", "r2"}, b: {"r3"}, c: set()})
    assert session.namespaces == {}
    assert rig.members.namespaces == set()
    assert rig.members.rooms == set()
    session.finish()
    assert session.state is ConnState.CLOSED
    assert session.begin_close() is False


def test_a_connect_being_decided_when_the_close_begins_ends_without_events() -> None:
    rig = open_rig()
    session = rig.session
    msg = request(ON_NAMESPACE_CONNECT, "a", token="$1")
    rec = session.connect_requested(msg)
    assert isinstance(rec, Rec)
    mine = start_connect(session, "b")  # and one of this side, waiting for the peer
    session.begin_close()
    assert list(session.closing_events()) == []
    assert session.namespaces == {}
    assert session.connect_decided(rec, msg, None) is None
    assert not session.connect_finished(mine, True)
    assert rec.state is NsState.DISCONNECTED
    assert mine.state is NsState.DISCONNECTED
    assert rig.members.calls == []
    session.finish()


def test_the_close_ends_joins_under_way_silently_and_finishes_leaves_under_way() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("peer-leaves", "i-leave", "stays"))
    join = request(ON_ROOM_JOIN, "a", "peer-joins", token="$5")
    assert session.join_requested(join) is a
    assert session.join_started(a, "i-join")
    leave = request(ON_ROOM_LEAVE, "a", "peer-leaves", token="$6")
    assert session.leave_requested(leave) is a  # its _OnRoomLeave fires
    assert session.leave_started(a, "i-leave")  # its _OnRoomLeave fires
    session.begin_close()
    assert not session.leave_finished(a, "i-leave", False)  # refused: no way back now
    assert a.room_state("i-leave") is RoomState.LEAVING
    events = list(session.closing_events())
    assert sorted((msg.event, msg.room) for _, msg in events) == [
        (ON_NAMESPACE_DISCONNECT, ""),
        (ON_ROOM_LEAVE, "stays"),
        (ON_ROOM_LEFT, "i-leave"),
        (ON_ROOM_LEFT, "peer-leaves"),
        (ON_ROOM_LEFT, "stays"),
    ]
    assert events[-1] == forced(a, ON_NAMESPACE_DISCONNECT)
    # the flows finishing afterwards change nothing and fire nothing
    assert session.join_decided(a, join, None) == (None, False)
    assert session.leave_decided(a, leave, None) == (None, False)
    assert not session.join_finished(a, "i-join", True)
    assert not session.leave_finished(a, "i-leave", True)
    assert a.room_states == {}
    session.finish()


def test_finish_needs_the_closing_events_to_have_run() -> None:
    rig = open_rig()
    session = rig.session
    peer_connect(rig, "a")
    session.begin_close()
    with pytest.raises(StateError):
        session.finish()
    assert session.state is ConnState.CLOSING
    list(session.closing_events())
    session.finish()
    assert session.state is ConnState.CLOSED
    with pytest.raises(StateError):
        session.finish()


def test_closing_events_only_while_closing() -> None:
    rig = open_rig()
    peer_connect(rig, "a")
    with pytest.raises(StateError):
        next(rig.session.closing_events())
    assert rig.session.namespace("a") is not None


def test_forced_leaves_only_of_a_namespace_being_disconnected() -> None:
    rig = open_rig()
    a = peer_connect(rig, "a", rooms=("r",))
    with pytest.raises(StateError):
        next(rig.session.forced_leaves(a, local=True))
    assert a.room_states == {"r": RoomState.JOINED}
    # once removed, nothing: whoever removed it left its rooms
    assert len(rig.session.disconnected(a, local=True)) == 3
    assert list(rig.session.forced_leaves(a, local=True)) == []
    rig.session.remove(a)
    assert a.state is NsState.DISCONNECTED


# -- asks (spec 8.6) -----------------------------------------------------------------------------


def test_asks_fail_the_moment_their_namespace_is_removed() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r",))
    peer_connect(rig, "b")
    on_a, on_b = Waiter("1"), Waiter("2")
    session.ask_started("1", "a", on_a)
    session.ask_started("2", "b", on_b)
    assert session.leave_requested(request(ON_ROOM_LEAVE, "a", "r", token="$5")) is a
    assert rig.failed == []  # still connected while its rooms are being left
    assert len(session.disconnected(a, local=True)) == 2
    assert rig.failed == [(on_a, "namespace disconnected")]
    assert set(session.asks) == {"2"}
    assert session.take_reply("1") is None
    assert session.begin_close()
    assert rig.failed == [(on_a, "namespace disconnected"), (on_b, "connection closed")]
    assert session.asks == {}


def test_all_asks_fail_when_the_close_begins() -> None:
    rig = open_rig()
    session = rig.session
    peer_connect(rig, "a")
    b = start_connect(session, "b")
    waiters = [Waiter("1"), Waiter("2"), Waiter("3")]
    session.ask_started("1", "a", waiters[0])
    session.ask_started("2", "a", waiters[1])
    session.ask_started("3", "b", waiters[2])  # the ask of a connect under way
    assert b.state is NsState.CONNECTING
    session.begin_close()
    assert sorted(rig.failed, key=lambda failure: failure[0].token) == [
        (waiter, "connection closed") for waiter in waiters
    ]
    assert session.asks == {}
    session.begin_close()
    list(session.closing_events())
    assert len(rig.failed) == 3


def test_answered_or_ended_asks_do_not_fail() -> None:
    rig = open_rig()
    session = rig.session
    peer_connect(rig, "a")
    answered, ended, waiting = Waiter("1"), Waiter("2"), Waiter("3")
    session.ask_started("1", "a", answered)
    session.ask_started("2", "a", ended)
    session.ask_started("3", "a", waiting)
    assert session.take_reply("1") is answered
    assert session.take_reply("1") is None
    session.ask_ended("2")
    session.ask_ended("2")
    assert session.take_reply("2") is None
    session.begin_close()
    assert rig.failed == [(waiting, "connection closed")]


def test_asks_need_an_open_connection_and_a_fresh_token() -> None:
    rig = Rig()
    session = rig.session
    with pytest.raises(StateError):
        session.ask_started("1", "a", Waiter("1"))
    session.accept("c1")
    peer_connect(rig, "a")
    session.ask_started("1", "a", Waiter("1"))
    with pytest.raises(StateError):
        session.ask_started("1", "a", Waiter("1"))
    session.begin_close()
    with pytest.raises(StateError):
        session.ask_started("2", "a", Waiter("2"))
    assert session.asks == {}


# -- the inbox -----------------------------------------------------------------------------------


def test_the_inbox_is_bounded_in_messages() -> None:
    session = Rig(max_queue=2).session  # queued during the handshake
    first, second, third = (Message("a", event="chat", body=bytes([i])) for i in range(3))
    assert session.queue(first, 1)
    assert session.queue(second, 1)
    assert not session.inbox_full
    assert not session.queue(third, 1)
    assert session.inbox_full
    assert session.next_queued() is first
    assert not session.inbox_full
    assert session.next_queued() is second
    assert session.next_queued() is third
    assert session.next_queued() is None


def test_the_inbox_is_bounded_in_bytes() -> None:
    session = Rig(max_queue_bytes=10).session
    assert session.queue(Message("a", event="one"), 6)
    assert session.queue(Message("a", event="two"), 4)  # 10: at the bound
    assert not session.queue(Message("a", event="three"), 1)  # 11: past it
    taken = session.next_queued()
    assert taken is not None and taken.event == "one"
    assert not session.inbox_full


def test_the_close_drops_the_inbox() -> None:
    session = open_rig().session
    session.queue(Message("a", event="chat"), 4)
    session.begin_close()
    assert session.next_queued() is None
    assert not session.inbox_full


# -- crossings (bugs the state machine found, fixed) ---------------------------------------------


@pytest.mark.parametrize("refusal", [None, "not now"])
def test_a_local_connect_while_the_peer_connects_the_same_namespace_waits(
    refusal: str | None,
) -> None:
    rig = open_rig()
    session = rig.session
    msg = request(ON_NAMESPACE_CONNECT, "a", token="$1")
    peer = session.connect_requested(msg)
    assert isinstance(peer, Rec)
    # While the peer's _OnNamespaceConnect hook awaits, another task calls Conn.connect("a"):
    # not connected yet, and declared. The session makes no second record of "a": Conn
    # waits for the connect under way (Dispatcher.under_way), then looks again.
    assert session.namespace("a") is None
    assert session.connect_started("a") is None
    assert rig.records == [peer]
    assert session.namespaces == {"a": peer} and peer.state is NsState.CONNECTING
    got = session.connect_decided(peer, msg, refusal)
    if refusal is None:
        assert got == empty(msg)
        assert session.namespace("a") is peer  # what the waiting connect returns
    else:
        assert got == error(msg, refusal)
        assert session.namespaces == {}
        mine = start_connect(session, "a")  # the waiting connect makes its own
        assert mine is not peer and session.namespaces == {"a": mine}


def test_the_close_skips_a_namespace_removed_while_its_events_run() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a")
    b = start_connect(session, "b")  # Conn.connect("b") in another task...
    session.ask_started("100", "b", Waiter("100"))  # ...waits for the peer's answer
    session.begin_close()  # fails that ask
    events = session.closing_events()
    assert next(events) == forced(a, ON_NAMESPACE_DISCONNECT)
    # While a's _OnNamespaceDisconnect handler awaits, connect("b") resumes (its ask
    # failed) and ends its connect, which removes b.
    session.ask_ended("100")
    assert not session.connect_finished(b, False)
    assert b.state is NsState.DISCONNECTED
    assert list(events) == []
    session.finish()
    assert session.state is ConnState.CLOSED
    assert rig.members.calls == [("namespace_added", a, ""), ("namespace_removed", a, "")]


@pytest.mark.parametrize("refusal", [None, "stay"])
def test_a_disconnect_the_peer_agreed_to_is_not_undone_by_the_peers_own(
    refusal: str | None,
) -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r1",))
    waiter = Waiter("7")
    session.ask_started("7", "a", waiter)
    theirs = request(ON_NAMESPACE_DISCONNECT, "a", token="$9")
    assert session.disconnect_requested(theirs) is a  # the client's disconnect: its hook runs
    # Meanwhile ns.disconnect() of this side gets the client's empty reply: the client has
    # removed "a" (spec 5.4). So is it here, at once, with its rooms' events; its
    # _OnNamespaceDisconnect is the one the client's request fired.
    assert session.disconnected(a, local=True) == [
        forced(a, ON_ROOM_LEAVE, "r1"),
        forced(a, ON_ROOM_LEFT, "r1"),
    ]
    assert a.state is NsState.DISCONNECTED and a.room_states == {}
    assert session.namespaces == {}
    assert rig.failed == [(waiter, "namespace disconnected")]
    assert rig.members.namespaces == set() and rig.members.rooms == set()
    calls = list(rig.members.calls)
    if refusal is not None:  # the hook refuses the client's request: moot, it is gone
        assert session.disconnect_refused(a, theirs, refusal) == empty(theirs)
    else:  # Dispatcher._reply_disconnect goes on: nothing left to leave
        assert list(session.forced_leaves(a, local=False)) == []
        session.remove(a)
        assert session.empty_reply(theirs) == empty(theirs)
    assert a.state is NsState.DISCONNECTED
    assert session.namespace("a") is None
    assert rig.members.calls == calls
    assert session.disconnected(a, local=True) == []


def test_a_local_disconnect_agreed_while_the_peers_forced_leaves_run() -> None:
    rig = open_rig(client=True)
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r1", "r2"))
    theirs = request(ON_NAMESPACE_DISCONNECT, "a", token=rig.peer_token())
    assert session.disconnect_requested(theirs) is a  # the server's: it cannot be refused
    leaves = session.forced_leaves(a, local=False)
    assert next(leaves) == forced(a, ON_ROOM_LEAVE, "r1", local=False)  # its hook awaits...
    # ...while this side's own disconnect of "a" is agreed to: what is left, once each
    assert session.disconnected(a, local=True) == [
        forced(a, ON_ROOM_LEFT, "r1"),
        forced(a, ON_ROOM_LEAVE, "r2"),
        forced(a, ON_ROOM_LEFT, "r2"),
    ]
    assert list(leaves) == []
    session.remove(a)
    assert session.empty_reply(theirs) == empty(theirs)
    assert a.state is NsState.DISCONNECTED
    assert rig.members.namespaces == set() and rig.members.rooms == set()


@pytest.mark.parametrize("refusal", [None, "stay"])
def test_a_local_leave_while_the_peers_leave_is_decided_changes_nothing(
    refusal: str | None,
) -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r",))
    theirs = request(ON_ROOM_LEAVE, "a", "r", token="$9")
    assert session.leave_requested(theirs) is a  # the client's leave: its hook runs
    calls = list(rig.members.calls)
    # Meanwhile NSConn.leave_room("r") of this side: refused before its hook runs or
    # anything is sent (EventError "bad room"), so no leave of this side crosses the
    # client's.
    assert not session.leave_started(a, "r")
    assert a.room_state("r") is RoomState.LEAVING
    assert session.asks == {} and rig.members.calls == calls
    reply, left = session.leave_decided(a, theirs, refusal)
    if refusal is None:  # the client leaves on the empty reply; left here too
        assert (reply, left) == (empty(theirs), True)
        assert a.room_state("r") is RoomState.LEFT
        assert rig.members.calls == [*calls, ("room_removed", a, "r")]
    else:  # the client stays on the error; joined here too
        assert (reply, left) == (error(theirs, refusal), False)
        assert a.room_state("r") is RoomState.JOINED
        assert rig.members.calls == calls
        assert session.leave_started(a, "r")  # and this side may leave now


@pytest.mark.parametrize("agreed", [True, False])
@pytest.mark.parametrize("asked", [False, True], ids=["hook", "asked"])
def test_a_peer_leave_while_a_local_leave_is_under_way_gets_bad_room(
    asked: bool, agreed: bool
) -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r",))
    assert session.leave_started(a, "r")  # the local _OnRoomLeave runs first...
    if asked:  # ...then the peer is asked
        session.ask_started("7", "a", Waiter("7"))
    theirs = request(ON_ROOM_LEAVE, "a", "r", token="$9")
    assert session.leave_requested(theirs) == error(theirs, ERR_BAD_ROOM)  # stays joined there
    assert a.room_state("r") is RoomState.LEAVING
    if asked:
        assert session.take_reply("7") is not None
    # the peer's answer (or, before asking, the local hook) settles it for both ends
    assert session.leave_finished(a, "r", agreed) is agreed
    assert a.room_state("r") is (RoomState.LEFT if agreed else RoomState.JOINED)


@pytest.mark.parametrize("refusal", [None, "no"])
def test_a_decision_after_the_namespace_went_changes_nothing(refusal: str | None) -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a", rooms=("r1",))
    join = request(ON_ROOM_JOIN, "a", "r2", token="$5")
    assert session.join_requested(join) is a  # its _OnRoomJoin runs...
    assert len(session.disconnected(a, local=True)) == 3  # ...while "a" goes
    assert a.room_states == {}
    assert session.join_decided(a, join, refusal) == (error(join, ERR_BAD_NAMESPACE), False)
    b = peer_connect(rig, "b", rooms=("r1",))
    leave = request(ON_ROOM_LEAVE, "b", "r1", token="$6")
    assert session.leave_requested(leave) is b  # its _OnRoomLeave runs...
    # ...while "b" goes: the forced leave fires only its _OnRoomLeft
    assert session.disconnected(b, local=True) == [
        forced(b, ON_ROOM_LEFT, "r1"),
        (b, Message("b", event=ON_NAMESPACE_DISCONNECT, local=True)),
    ]
    expected = empty(leave) if refusal is None else error(leave, ERR_BAD_NAMESPACE)
    assert session.leave_decided(b, leave, refusal) == (expected, False)  # fired already
    assert a.room_states == {} and b.room_states == {}
    assert rig.members.rooms == set()


@pytest.mark.parametrize("event", [ON_ROOM_JOIN, ON_ROOM_LEAVE])
@pytest.mark.parametrize("form", ["no-token", "noop"])
def test_a_room_request_without_token_or_with_noop_in_an_unconnected_namespace_is_ignored(
    event: str, form: str
) -> None:
    session = open_rig().session
    msg = request(event, "a", "r", token="" if form == "no-token" else "$1", noop=form == "noop")
    handler = session.join_requested if event == ON_ROOM_JOIN else session.leave_requested
    assert handler(msg) is None  # spec 2.5: not answered


def test_the_declared_namespaces_are_any_container() -> None:
    class Declared:
        def __contains__(self, name: object) -> bool:
            return name == "only"

    records: list[Rec] = []

    def new_namespace(name: str) -> Rec:
        records.append(Rec(name, len(records)))
        return records[-1]

    session: Session[Rec, Waiter] = Session(
        new_namespace=new_namespace, declared=Declared(), fail_ask=lambda waiter, reason: None
    )
    session.accept("c1")
    assert session.declares("only") and not session.declares("a")
    assert session.connect_requested(request(ON_NAMESPACE_CONNECT, "a", token="$1")) == error(
        request(ON_NAMESPACE_CONNECT, "a", token="$1"), ERR_BAD_NAMESPACE
    )
    assert isinstance(session.connect_requested(request(ON_NAMESPACE_CONNECT, "only")), Rec)
    assert [rec.namespace for rec in records] == ["only"]


# -- what the state machine found, fixed ---------------------------------------------------------


def test_a_join_agreed_while_the_peers_disconnect_is_decided_stays_joined() -> None:
    rig = open_rig()
    session = rig.session
    a = peer_connect(rig, "a")
    assert session.join_started(a, "r")  # NSConn.join_room("r"): its _OnRoomJoin agreed...
    session.ask_started("7", "a", Waiter("7"))  # ...and the client is asked
    theirs = request(ON_NAMESPACE_DISCONNECT, "a", token="$9")
    assert session.disconnect_requested(theirs) is a  # the client's disconnect: its hook awaits
    assert session.take_reply("7") is not None  # the client's answer is read: it joined "r"
    joined = session.join_finished(a, "r", True)  # answered()
    assert session.disconnect_refused(a, theirs, "stay") == error(theirs, "stay")
    # "a" stays connected on both sides, and "r" is joined on the client: so must it be here
    assert a.state is NsState.CONNECTED
    assert (joined, a.room_state("r")) == (True, RoomState.JOINED)


# -- the state machine ---------------------------------------------------------------------------


@dataclass(eq=False)
class Join:
    """One join of one room, and the events attributed to it."""

    joined: int = 0  # its _OnRoomJoined
    leave: int = 0
    left: int = 0


@dataclass(eq=False)
class PeerFlow:
    """A request of the peer between the session's two calls (the dispatcher awaits its
    hook), or a disconnect of the peer leaving its rooms (``kind == "leaves"``)."""

    kind: str  # "connect", "disconnect" (a server's hook), "join", "leave", "leaves"
    rec: Rec
    msg: Message
    leaves: Iterator[Event] | None = None


@dataclass(eq=False)
class ConnectFlow:
    """``Conn._connect`` of this side, a connect under way (``Dispatcher.deciding``) until
    it returns: its local hook runs (``token`` empty), then the peer is asked."""

    rec: Rec
    token: str = ""


@dataclass(eq=False)
class RoomFlow:
    """``NSConn.join_room``/``leave_room`` from ``*_started`` until it returns: its local
    hook runs (``token`` empty), then the peer is asked; ``answered`` once the answer was
    read (``agreed``: what it said); the room stays changing until the task resumes and
    calls ``*_finished`` with it."""

    kind: str  # "join" or "leave"
    rec: Rec
    room: str
    token: str = ""
    answered: bool = False
    agreed: bool = False
    changed: bool = False  # what *_finished said when the task resumed


@dataclass(eq=False)
class DisconnectFlow:
    """``Conn.disconnect_namespace``, waiting for the peer's answer."""

    rec: Rec


AskFlow: TypeAlias = "ConnectFlow | RoomFlow | DisconnectFlow"
Owner: TypeAlias = "PeerFlow | RoomFlow | Iterator[Event]"  # forced leaves: their iterator

NAMES = st.sampled_from(["a", "a", "b", "c", "x"])  # "x" is not declared
ROOMS = st.sampled_from(["r1", "r2"])
FORMS = st.sampled_from(["request"] * 5 + ["no-token", "noop", "reply"])
BUSY = frozenset({RoomState.JOINING, RoomState.LEAVING})
MAX_QUEUE = 3
MAX_QUEUE_BYTES = 40
OPENED = st.sampled_from([True, True, True, False])
JOINED = st.lists(
    st.sampled_from([[], ["r1"], ["r2"], ["r1", "r2"], ["r2", "r1"]]), min_size=1, max_size=2
)


class SessionMachine(RuleBasedStateMachine):
    """The adapter around one session, every flow interleaved with every other.

    What the machine keeps: the peer's request being decided, or waiting (one at a time:
    the serving task handles one message at a time, and runs the close's events only
    after it), this side's connects (and the ``Conn.connect`` calls waiting for a change
    under way), joins, leaves and disconnects in other tasks (any number), the close's
    events being consumed, the asks, the inbox. To check the events: what each flow
    fired, per join of a room its ``_OnRoomJoined``, ``_OnRoomLeave`` and
    ``_OnRoomLeft``, per connected namespace its ``_OnNamespaceDisconnect``; an event is
    counted when the flow that made the transition fires it (for a decision of the peer's
    join or leave, when the session says it changed the room). To check that both ends
    agree: which flow owns each room being joined or left, and the peer's last word on
    each namespace and room (what this side answered it, or it answered this side).

    Where the adapter still has a bug, the machine holds back the step that would show
    it, and says which test reproduces it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.start(client=False, opened=False, joined=[])

    def start(self, *, client: bool, opened: bool, joined: list[list[str]]) -> None:
        """A new connection: a server or a client side; mostly open already, with
        namespaces ("a", then "b") connected and rooms joined by the peer's requests."""
        self.client = client
        self.rig = Rig(
            client=client, max_queue=MAX_QUEUE, max_queue_bytes=MAX_QUEUE_BYTES, on_fail=self.failed
        )
        self.peer: PeerFlow | None = None
        # A connect or disconnect request of the peer that the serving task read, waiting
        # for this side's connect of its namespace to end (Dispatcher._system).
        self.peer_waiting: tuple[Message, ConnectFlow] | None = None
        self.connects: list[ConnectFlow] = []
        self.waiting: list[str] = []  # Conn.connect calls waiting for a connect under way
        self.room_flows: list[RoomFlow] = []
        self.ask_flows: dict[str, AskFlow] = {}
        self.owners: dict[tuple[Rec, str], Owner] = {}
        self.closing: Iterator[Event] | None = None
        self.closing_done = False
        self.pending: dict[str, tuple[str, Waiter]] = {}
        self.tokens: list[str] = []
        self.answered: set[Waiter] = set()
        self.failures: set[Waiter] = set()
        self.inbox: collections.deque[tuple[Message, int]] = collections.deque()
        self.disconnect_events: dict[Rec, int] = {}  # records that reached CONNECTED
        self.joins: dict[tuple[Rec, str], list[Join]] = {}
        # The peer's last word: True/False, or None when an ask ended without an answer.
        self.peer_namespaces: dict[str, bool | None] = {}
        self.peer_rooms: dict[tuple[Rec, str], bool | None] = {}
        if not opened:
            return
        self.open_connection()
        for name, rooms in zip("ab", joined, strict=False):
            rec = peer_connect(self.rig, name, tuple(rooms))
            self.connected(rec)
            self.peer_namespaces[name] = True
            for room in rooms:
                self.joined(rec, room)
                self.peer_rooms[rec, room] = True

    @initialize(client=st.booleans(), opened=OPENED, joined=JOINED)
    def setup(self, client: bool, opened: bool, joined: list[list[str]]) -> None:
        self.start(client=client, opened=opened, joined=joined)

    @precondition(lambda self: self.s.state is ConnState.CLOSED)
    @rule(client=st.booleans(), opened=OPENED, joined=JOINED)
    def next_connection(self, client: bool, opened: bool, joined: list[list[str]]) -> None:
        """Once closed, the rest of the run tests another connection."""
        self.start(client=client, opened=opened, joined=joined)

    @property
    def s(self) -> Session[Rec, Waiter]:
        return self.rig.session

    @property
    def is_open(self) -> bool:
        return self.s.state is ConnState.OPEN

    def closing_active(self) -> bool:
        return self.closing is not None and not self.closing_done

    # -- what the flows fire -------------------------------------------------------------------

    def connected(self, rec: Rec) -> None:
        assert rec not in self.disconnect_events, f"{rec!r} connected twice"
        self.disconnect_events[rec] = 0

    def namespace_disconnect(self, rec: Rec, delta: int) -> None:
        assert rec in self.disconnect_events, f"_OnNamespaceDisconnect of {rec!r}, never connected"
        self.disconnect_events[rec] += delta
        count = self.disconnect_events[rec]
        assert 0 <= count <= 1, f"{count} _OnNamespaceDisconnect for {rec!r}"

    def joined(self, rec: Rec, room: str) -> None:
        """A new join (the room is ``JOINED``)."""
        self.joins.setdefault((rec, room), []).append(Join())

    def room_joined(self, rec: Rec, room: str) -> None:
        """Its ``_OnRoomJoined`` fires: once, and never after its ``_OnRoomLeave``."""
        join = self.joins[rec, room][-1]
        assert join.leave == 0, f"_OnRoomJoined of {room!r} after its _OnRoomLeave"
        assert join.joined == 0, f"a second _OnRoomJoined for one join of {room!r}"
        join.joined = 1

    def room_leave(self, rec: Rec, room: str, delta: int) -> None:
        joins = self.joins.get((rec, room))
        assert joins, f"_OnRoomLeave of {room!r} of {rec!r}, never joined"
        join = joins[-1]
        join.leave += delta
        assert 0 <= join.leave <= 1, f"{join.leave} _OnRoomLeave for one join of {room!r}"
        assert join.left == 0, f"_OnRoomLeave of {room!r} after its _OnRoomLeft"

    def room_left(self, rec: Rec, room: str) -> None:
        joins = self.joins.get((rec, room))
        assert joins, f"_OnRoomLeft of {room!r} of {rec!r}, never joined"
        join = joins[-1]
        assert join.leave == 1, f"_OnRoomLeft of {room!r} without its _OnRoomLeave"
        assert join.left == 0, f"a second _OnRoomLeft for one join of {room!r}"
        join.left = 1

    def next_event(self, events: Iterator[Event], rec: Rec | None, *, local: bool) -> bool:
        """Fire the next event of ``forced_leaves(rec)``, or of the close if ``rec`` is
        ``None``; ``False`` once there is none."""
        try:
            ns, msg = next(events)
        except StopIteration:
            return False
        assert rec is None or ns is rec
        assert msg.forced and msg.local is local and not msg.token
        assert msg.namespace == ns.namespace
        if msg.event == ON_ROOM_LEAVE:
            assert ns.state is NsState.DISCONNECTING
            assert ns.room_state(msg.room) is RoomState.LEAVING
            self.room_leave(ns, msg.room, +1)
            self.claim(events, ns, msg.room)  # until its _OnRoomLeft
        elif msg.event == ON_ROOM_LEFT:
            assert ns.state is NsState.DISCONNECTING
            assert ns.room_state(msg.room) is RoomState.LEFT
            self.room_left(ns, msg.room)
        else:
            assert rec is None and msg.event == ON_NAMESPACE_DISCONNECT and not msg.room
            assert ns.state is NsState.DISCONNECTED and not ns.room_states
            self.namespace_disconnect(ns, +1)
        return True

    def failed(self, waiter: Waiter, reason: str) -> None:
        """The session's ``fail_ask``."""
        assert waiter not in self.failures, f"{waiter!r} failed twice"
        assert waiter not in self.answered, f"{waiter!r} failed after its answer"
        ask = self.pending.pop(waiter.token, None)
        assert ask is not None and ask[1] is waiter, f"{waiter!r} failed but not waiting"
        if reason == "connection closed":
            assert self.s.state is ConnState.CLOSING
        else:
            assert reason == "namespace disconnected"
            assert ask[0] not in self.s.namespaces
        self.failures.add(waiter)

    # -- who owns a room change, and what the peer was told ------------------------------------

    def claim(self, owner: Owner, rec: Rec, room: str) -> None:
        assert rec.room_state(room) in BUSY
        self.owners[rec, room] = owner

    def owns(self, owner: Owner, rec: Rec, room: str) -> bool:
        return rec.room_state(room) in BUSY and self.owners.get((rec, room)) is owner

    def settled(self, owner: Owner, rec: Rec, room: str, before: RoomState, owned: bool) -> None:
        """After ``owner`` ended its change of ``room``: a change it does not own (a forced
        leave took it, and another flow may have started since) is left alone."""
        after = rec.room_state(room)
        if not owned:
            assert after is before, (
                f"{owner!r} ended a change of {room!r} it does not own: {before.value}"
                f" -> {after.value}, owned by {self.owners.get((rec, room))!r}"
            )
        elif after not in BUSY:
            del self.owners[rec, room]

    def live(self, owner: Owner) -> bool:
        if owner is self.peer or owner is self.closing:
            return True
        if self.peer is not None and owner is self.peer.leaves:
            return True
        return any(flow is owner for flow in self.room_flows)

    def namespace_busy(self, name: str) -> bool:
        """Whether a connect or disconnect of ``name`` is under way (the two ends may
        disagree until it ends)."""
        rec = self.s.namespaces.get(name)
        if rec is not None and rec.state is not NsState.CONNECTED:
            return True
        if self.peer is not None and self.peer.rec.namespace == name:
            return True
        if self.peer_waiting is not None and self.peer_waiting[0].namespace == name:
            return True
        if any(flow.rec.namespace == name for flow in self.connects):
            return True
        return any(
            isinstance(flow, DisconnectFlow) and flow.rec.namespace == name
            for flow in self.ask_flows.values()
        )

    def room_busy(self, rec: Rec, room: str) -> bool:
        if rec.state is not NsState.CONNECTED or rec.room_state(room) in BUSY:
            return True
        peer = self.peer
        if peer is not None and peer.rec is rec and peer.msg.room == room:
            return True
        return any(flow.rec is rec and flow.room == room for flow in self.room_flows)

    def told_namespace(self, name: str, frame: Frame | None, connected: bool | None) -> None:
        """``frame`` was sent, which tells the peer whether ``name`` is connected."""
        if frame is not None:
            self.peer_namespaces[name] = connected

    def told_room(self, rec: Rec, room: str, frame: Frame | None, joined: bool | None) -> None:
        if frame is not None:
            self.peer_rooms[rec, room] = joined

    # -- the connection ------------------------------------------------------------------------

    @precondition(lambda self: self.s.state is ConnState.CONNECTING)
    @rule(refuse=st.sampled_from([False, False, True]))
    def handshake(self, refuse: bool) -> None:
        """The handshake ends: accepted, or (a server's on_connect) refused."""
        if refuse and not self.client:
            assert self.s.refuse("no") == (b"Hno", False)  # the H frame, then Conn closes
            assert self.s.state is ConnState.CONNECTING
            self.close_now()
        else:
            self.open_connection()

    def open_connection(self) -> None:
        if self.client:
            self.s.acknowledged()
        else:
            assert self.s.accept("c1") == (b"Ac1", False)
        assert self.s.state is ConnState.OPEN

    def close_now(self) -> None:
        before = self.s.state
        started = self.s.begin_close()
        assert started is (before in (ConnState.CONNECTING, ConnState.OPEN))
        assert self.s.state is (
            ConnState.CLOSED if before is ConnState.CLOSED else ConnState.CLOSING
        )
        self.inbox.clear()

    @precondition(
        lambda self: (
            self.s.state is ConnState.CLOSING
            and ((self.peer is None and self.peer_waiting is None) or self.closing)
        )
    )
    @rule()
    def closing_step(self) -> None:
        """The serving task runs the close's events, one at a time, once the request it
        handled returned (or was abandoned: see peer_step); then the session is
        finished."""
        if self.closing is None:
            self.closing = self.s.closing_events()
        if self.closing_done:
            self.s.finish()
            assert self.s.state is ConnState.CLOSED
        elif not self.next_event(self.closing, None, local=True):
            self.closing_done = True
            assert self.s.namespaces == {}

    # -- the inbox -----------------------------------------------------------------------------

    def can_queue(self) -> bool:
        return self.s.state in (ConnState.CONNECTING, ConnState.OPEN) and not self.s.inbox_full

    def can_take(self) -> bool:
        return self.s.state is not ConnState.CONNECTING and bool(self.inbox)

    def can_close(self) -> bool:
        return self.s.state in (ConnState.CONNECTING, ConnState.OPEN)

    @precondition(
        lambda self: (
            self.can_close()
            or self.can_take()
            or self.can_queue()
            or self.can_ask()
            or bool(self.plain_asks())
        )
    )
    @rule(
        data=st.data(),
        what=st.sampled_from(["close", "queue", "queue", "take", "take", "ask", "ask", "end"]),
        size=st.integers(0, 25),
    )
    def traffic(self, data: st.DataObject, what: str, size: int) -> None:
        """What else happens on the connection (or the first of these that can):
        ``close``: the close begins (Conn.close, the peer, an error...); ``queue``: a
        message is kept for its turn (not past the bound: reading stops there); ``take``:
        the serving task takes the next one (from the handshake on, until the close drops
        them all); ``ask``: an ask (``NSConn.ask``) starts; ``end``: one times out or is
        cancelled."""
        can = {
            "close": self.can_close(),
            "queue": self.can_queue(),
            "take": self.can_take(),
            "ask": self.can_ask(),
            "end": bool(self.plain_asks()),
        }
        if not can[what]:
            what = next(other for other, able in can.items() if able)
        if what == "close":
            self.close_now()
        elif what == "queue":
            self.queue(size)
        elif what == "take":
            assert self.s.next_queued() is self.inbox.popleft()[0]
            if not self.inbox:
                assert self.s.next_queued() is None
        elif what == "ask":
            writable = [name for name, rec in self.s.namespaces.items() if rec.state in WRITABLE_NS]
            self.ask(data.draw(st.sampled_from(sorted(writable))))
        else:
            token = data.draw(st.sampled_from(sorted(self.plain_asks())))
            del self.pending[token]
            self.s.ask_ended(token)
            flow = self.ask_flows.pop(token, None)
            if isinstance(flow, DisconnectFlow):  # the peer may have agreed or not
                self.peer_namespaces[flow.rec.namespace] = None

    def queue(self, size: int) -> None:
        msg = Message("a", event="chat", body=b"x" * size)
        self.inbox.append((msg, size))
        fits = len(self.inbox) <= MAX_QUEUE and sum(n for _, n in self.inbox) <= MAX_QUEUE_BYTES
        assert self.s.queue(msg, size) is fits
        if not fits and self.s.state is ConnState.CONNECTING:
            self.close_now()  # too much before the handshake: Conn closes (1008)

    # -- asks ----------------------------------------------------------------------------------

    def ask(self, name: str, event: str = "chat", room: str = "") -> str:
        """``Conn.ask``: the write rules allow it (else it raises before asking)."""
        assert self.s.can_write(name, room, event)
        token = self.rig.own_token()
        waiter = Waiter(token)
        self.s.ask_started(token, name, waiter)
        self.pending[token] = (name, waiter)
        self.tokens.append(token)
        return token

    def plain_asks(self) -> list[str]:
        """The asks that time out on their own (those of connects, joins and leaves end as
        their flow resumes)."""
        flows = self.ask_flows
        return [t for t in self.pending if not isinstance(flows.get(t), ConnectFlow | RoomFlow)]

    def can_ask(self) -> bool:
        return self.is_open and any(self.s.namespace(name) for name in self.s.namespaces)

    @precondition(lambda self: self.is_open and bool(self.tokens))
    @rule(data=st.data(), err=st.booleans())
    def answer_ask(self, data: st.DataObject, err: bool) -> None:
        """The peer's answer is read (``Conn.read_frame``): the waiter gets it, and the
        ``on_reply`` of a connect, join, leave or disconnect runs at once."""
        waiting = sorted(self.pending)
        if waiting and data.draw(st.sampled_from([True, True, True, False])):
            token = data.draw(st.sampled_from(waiting))
        else:  # a late answer, or one with a token nobody waits for
            token = data.draw(st.sampled_from(self.tokens))
        self.read_answer(token, err)

    def read_answer(self, token: str, err: bool) -> None:
        flow = self.ask_flows.get(token)
        ask = self.pending.pop(token, None)
        waiter = self.s.take_reply(token)
        assert waiter is (ask[1] if ask is not None else None)
        if waiter is None:
            return
        assert waiter not in self.failures
        self.answered.add(waiter)
        frame: Frame = (b"the answer", False)
        if isinstance(flow, ConnectFlow):  # Conn._connect's answered()
            del self.ask_flows[token]
            rec = flow.rec
            before = rec.state
            now = self.s.connect_finished(rec, not err)
            assert now is (before is NsState.CONNECTING and not err and self.is_open)
            if now:
                self.connected(rec)
            elif before is NsState.CONNECTING:
                assert rec.state is NsState.DISCONNECTED
            self.told_namespace(rec.namespace, frame, not err)
        elif isinstance(flow, RoomFlow):  # NSConn._change_room: decided when its task resumes
            del self.ask_flows[token]
            flow.answered = True
            flow.agreed = not err
            self.told_room(flow.rec, flow.room, frame, (flow.kind == "join") is not err)
        elif isinstance(flow, DisconnectFlow):  # Conn.disconnect_namespace's agreed()
            del self.ask_flows[token]
            if not err:
                self.local_disconnected(flow.rec)
            self.told_namespace(flow.rec.namespace, frame, err)

    # -- requests of the peer --------------------------------------------------------------------

    @precondition(lambda self: self.serving_free())
    @rule(
        kind=st.sampled_from(["connect", "disconnect"]),
        name=NAMES,
        form=FORMS,
        binary=st.booleans(),
    )
    def peer_namespace_request(self, kind: str, name: str, form: str, binary: bool) -> None:
        self.peer_request(kind, name, "", form, binary)

    @precondition(lambda self: self.serving_free())
    @rule(
        kind=st.sampled_from(["join", "leave"]),
        name=NAMES,
        room=ROOMS,
        form=FORMS,
        binary=st.booleans(),
    )
    def peer_room_request(self, kind: str, name: str, room: str, form: str, binary: bool) -> None:
        self.peer_request(kind, name, room, form, binary)

    def serving_free(self) -> bool:
        return self.is_open and self.peer is None and self.peer_waiting is None

    def peer_request(self, kind: str, name: str, room: str, form: str, binary: bool) -> None:
        """The serving task reads a request of the peer (or what looks like one). One to
        connect or disconnect a namespace waits while this side changes it."""
        requested = form in ("request", "noop")
        token = "" if form == "no-token" else self.rig.peer_token(request=requested)
        event = {
            "connect": ON_NAMESPACE_CONNECT,
            "disconnect": ON_NAMESPACE_DISCONNECT,
            "join": ON_ROOM_JOIN,
            "leave": ON_ROOM_LEAVE,
        }[kind]
        if kind in ("connect", "disconnect"):
            room = ""
        msg = request(event, name, room, token=token, noop=form == "noop", binary=binary)
        under_way = [flow for flow in self.connects if flow.rec.namespace == name]
        if kind in ("connect", "disconnect") and under_way:
            self.peer_waiting = (msg, under_way[0])  # one at a time (Dispatcher.deciding)
            return
        self.peer_handles(kind, msg)

    @precondition(
        lambda self: (
            self.peer_waiting is not None
            and not any(flow is self.peer_waiting[1] for flow in self.connects)
        )
    )
    @rule()
    def peer_wakes(self) -> None:
        """The connect the peer's request waited for returned: the request is handled now
        (even if the close began meanwhile)."""
        assert self.peer_waiting is not None
        msg, _ = self.peer_waiting
        under_way = [flow for flow in self.connects if flow.rec.namespace == msg.namespace]
        if under_way:  # another connect started meanwhile: Dispatcher._system waits again
            self.peer_waiting = (msg, under_way[0])
            return
        self.peer_waiting = None
        self.peer_handles("connect" if msg.event == ON_NAMESPACE_CONNECT else "disconnect", msg)

    def peer_handles(self, kind: str, msg: Message) -> None:
        name, room = msg.namespace, msg.room
        requested = self.s.is_request(msg.token)
        ignored = not msg.token or msg.noop
        records = len(self.rig.records)

        def sent(frame: Frame) -> Frame | None:
            return frame if self.is_open else None

        if kind == "connect":
            present = self.s.namespaces.get(name)
            got = self.s.connect_requested(msg)
            if ignored:
                assert got is None
            elif present is not None:
                assert present.state is not NsState.CONNECTING, "a connect crossed another"
                assert got == sent(empty(msg))
                self.told_namespace(name, got, True)
            elif name not in DECLARED:
                assert got == sent(error(msg, ERR_BAD_NAMESPACE))
                self.told_namespace(name, got, False)
            else:
                assert isinstance(got, Rec) and got.state is NsState.CONNECTING
                assert self.s.namespaces[name] is got
                self.peer = PeerFlow("connect", got, msg)
                return
        elif kind == "disconnect":
            rec = self.s.namespaces.get(name)
            connected = rec is not None and rec.state is NsState.CONNECTED
            got = self.s.disconnect_requested(msg)
            if ignored:
                assert got is None
            elif rec is None or not connected:
                assert got == sent(empty(msg))
                self.told_namespace(name, got, False)
            else:
                assert got is rec and rec.state is NsState.DISCONNECTING
                self.namespace_disconnect(rec, +1)
                if self.client:  # a server's disconnect cannot be refused: leave at once
                    self.peer = PeerFlow("leaves", rec, msg, self.s.forced_leaves(rec, local=False))
                    self.advance_peer()
                else:
                    self.peer = PeerFlow("disconnect", rec, msg)
        else:
            rec = self.s.namespace(name)
            state = rec.room_state(room) if rec is not None else None
            join = kind == "join"
            got = (self.s.join_requested if join else self.s.leave_requested)(msg)
            if ignored:
                assert got is None
            elif rec is None:
                assert got == (error(msg, ERR_BAD_NAMESPACE) if requested else None)
            elif state is (RoomState.JOINED if join else RoomState.LEFT):
                assert got == empty(msg)
                self.told_room(rec, room, got, join)
            elif state is not (RoomState.LEFT if join else RoomState.JOINED):
                # being joined or left by this side; a leave answer follows rule 4.1
                answered = join or requested or state is RoomState.LEAVING
                assert got == (error(msg, ERR_BAD_ROOM) if answered else None)
                # the peer's request failed: it stays as it was (this side's change decides)
            else:
                assert got is rec
                assert rec.room_state(room) is (RoomState.JOINING if join else RoomState.LEAVING)
                if not join:
                    self.room_leave(rec, room, +1)  # its _OnRoomLeave hook runs
                self.peer = PeerFlow(kind, rec, msg)
                self.claim(self.peer, rec, room)
        assert len(self.rig.records) == records  # only a connect to decide makes a record

    @precondition(lambda self: self.peer is not None)
    @rule(refuse=st.booleans(), cancel=st.sampled_from([False] * 7 + [True]))
    def peer_step(self, refuse: bool, cancel: bool) -> None:
        """The peer's request goes on: its hook decides (``refuse``), or the forced leaves
        of its disconnect fire the next event; or (``cancel``) the serving task is
        cancelled inside the hook: the request is abandoned, the connection closes."""
        flow = self.peer
        assert flow is not None
        if cancel:
            self.peer = None
            self.close_now()
            return
        if flow.kind == "leaves":
            self.advance_peer()
            return
        rec, msg = flow.rec, flow.msg
        refusal = "nope" if refuse else None
        was_open = self.is_open
        if flow.kind == "connect":
            before = rec.state
            got = self.s.connect_decided(rec, msg, refusal)
            now = before is NsState.CONNECTING and refusal is None and was_open
            assert (rec.state is NsState.CONNECTED) is now
            if now:
                self.connected(rec)
                assert got == empty(msg)
            else:
                assert rec.state is NsState.DISCONNECTED
                assert got == (error(msg, refusal) if refusal and was_open else None)
            self.told_namespace(rec.namespace, got, now)
        elif flow.kind == "disconnect":
            if refusal is None:  # leave the rooms, then remove and answer
                flow.kind = "leaves"
                flow.leaves = self.s.forced_leaves(rec, local=False)
                self.advance_peer()
                return
            before = rec.state
            got = self.s.disconnect_refused(rec, msg, refusal)
            if before is NsState.DISCONNECTED:  # this side's disconnect was agreed to
                assert rec.state is NsState.DISCONNECTED
                assert got == (empty(msg) if was_open else None)
                self.told_namespace(rec.namespace, got, False)
            elif was_open:
                assert before is NsState.DISCONNECTING and rec.state is NsState.CONNECTED
                assert got == error(msg, refusal)
                self.namespace_disconnect(rec, -1)  # refused: it stays connected
                self.told_namespace(rec.namespace, got, True)
            else:
                assert rec.state is before is NsState.DISCONNECTING
                assert got is None
        elif flow.kind == "join":
            room = msg.room
            room_before, ns_before = rec.room_state(room), rec.state
            owned = self.owns(flow, rec, room)
            got, joined = self.s.join_decided(rec, msg, refusal)
            assert joined is (
                owned and refusal is None and was_open and ns_before is NsState.CONNECTED
            )
            self.settled(flow, rec, room, room_before, owned)
            if joined:
                assert rec.room_state(room) is RoomState.JOINED
                self.joined(rec, room)
                self.room_joined(rec, room)  # the dispatcher fires it, then answers
                assert got == empty(msg)
            else:
                assert rec.room_state(room) is RoomState.LEFT
                if not was_open:
                    assert got is None
                elif self.s.is_request(msg.token):  # the refusal, unless the namespace went
                    gone = rec.state is NsState.DISCONNECTED
                    assert gone or refusal is not None
                    assert got == error(msg, refusal if refusal and not gone else ERR_BAD_NAMESPACE)
            self.told_room(rec, room, got, joined)
        else:
            room = msg.room
            room_before = rec.room_state(room)
            owned = self.owns(flow, rec, room)
            got, left = self.s.leave_decided(rec, msg, refusal)
            assert left is (owned and refusal is None)
            self.settled(flow, rec, room, room_before, owned)
            after = rec.room_state(room)
            if left:
                assert after is RoomState.LEFT
                self.room_left(rec, room)  # the dispatcher fires _OnRoomLeft
            elif owned and was_open:
                assert after is RoomState.JOINED
                self.room_leave(rec, room, -1)  # refused: it stays joined
            elif owned:
                assert after is RoomState.LEAVING  # the close's forced leave ends it
            else:
                assert after is RoomState.LEFT  # a forced leave took it, with its events
            if not was_open:
                assert got is None
            elif refusal is None:
                assert got == empty(msg)
            elif self.s.is_request(msg.token):
                gone = rec.state is NsState.DISCONNECTED
                assert got == error(msg, ERR_BAD_NAMESPACE if gone else refusal)
            self.told_room(rec, room, got, refusal is not None)
        self.peer = None

    def advance_peer(self) -> None:
        flow = self.peer
        assert flow is not None and flow.leaves is not None
        if self.next_event(flow.leaves, flow.rec, local=False):
            return
        # no await between the last forced leave and the removal
        self.s.remove(flow.rec)
        assert flow.rec.state is NsState.DISCONNECTED and not flow.rec.room_states
        got = self.s.empty_reply(flow.msg)
        assert got == (empty(flow.msg) if self.is_open else None)
        self.told_namespace(flow.rec.namespace, got, False)
        self.peer = None  # (a client fires the namespace's _OnNamespaceDisconnect now)

    # -- this side's connects ------------------------------------------------------------------

    def under_way(self, name: str) -> bool:
        """``Dispatcher.under_way(name)``: the peer's connect or disconnect of it is
        decided, or a ``Conn._connect`` of it has not returned."""
        peer = self.peer
        if peer is not None and peer.kind not in ("join", "leave") and peer.rec.namespace == name:
            return True
        return any(flow.rec.namespace == name for flow in self.connects)

    def connect_call(self, name: str) -> None:
        """One look of ``Conn.connect(name)``: the namespace if connected (and no
        disconnect of it under way); ``bad namespace`` if not declared; a wait if a change
        of it is under way; else ``Conn._connect``."""
        rec = self.s.namespaces.get(name)
        if rec is not None and rec.state is NsState.CONNECTED:
            return
        if not self.s.declares(name):
            assert name not in DECLARED
            return
        if self.under_way(name):
            if self.is_open and name in self.s.namespaces:
                records = len(self.rig.records)
                assert self.s.connect_started(name) is None  # it would wait too
                assert len(self.rig.records) == records
            self.waiting.append(name)
            return
        if not self.is_open:
            return  # ConnectionClosed
        # Conn._connect raises StateError if the session refuses: nothing is under way
        assert name not in self.s.namespaces, f"{name!r} has a record but no connect under way"
        rec = self.s.connect_started(name)
        assert rec is not None and rec.state is NsState.CONNECTING
        assert self.s.namespaces[name] is rec
        self.connects.append(ConnectFlow(rec))

    @precondition(lambda self: self.is_open or self.s.state is ConnState.CLOSING)
    @rule(
        data=st.data(),
        kind=st.sampled_from(["connect", "join", "join", "leave", "leave", "disconnect"]),
        name=NAMES,
        room=ROOMS,
    )
    def local_start(self, data: st.DataObject, kind: str, name: str, room: str) -> None:
        """This side starts a change in another task: ``Conn.connect(name)``, or (at any
        time, with any record the application holds) ``NSConn.join_room``,
        ``NSConn.leave_room``, ``Conn.disconnect_namespace``."""
        if kind == "connect":
            if self.is_open:  # else Conn.connect raises ConnectionClosed
                self.connect_call(name)
        elif self.rig.records:
            rec = self.pick_record(data)
            {"join": self.local_join, "leave": self.local_leave}.get(kind, self.local_disconnect)(
                rec, room
            )

    def woken(self) -> list[str]:
        return [n for n in self.waiting if not self.under_way(n)]

    @precondition(lambda self: bool(self.woken()))
    @rule(data=st.data())
    def local_connect_wakes(self, data: st.DataObject) -> None:
        """A ``Conn.connect`` waiting for the change under way looks again."""
        name = data.draw(st.sampled_from(self.woken()))
        self.waiting.remove(name)
        self.connect_call(name)

    @precondition(lambda self: bool(self.connects))
    @rule(
        data=st.data(),
        hook=st.sampled_from(["ask", "ask", "refuse", "no-ask"]),
        answer=st.sampled_from([True, False, None]),
    )
    def local_connect_step(self, data: st.DataObject, hook: str, answer: bool | None) -> None:
        """The local _OnNamespaceConnect ran: it refused, or the peer is asked (or, for the
        namespace of a native-only connection, which has no peer to ask, it is connected);
        or the peer's answer is read (``answer``); or ``Conn._connect`` resumes after its
        ask ended (answered, failed, timed out)."""
        flow = data.draw(st.sampled_from(self.connects))
        rec = flow.rec
        if flow.token in self.pending and answer is not None:
            self.read_answer(flow.token, not answer)
            return
        if not flow.token:
            going_on = hook != "refuse" and rec.state is NsState.CONNECTING and self.is_open
            if going_on and hook == "ask":
                flow.token = self.ask(rec.namespace, ON_NAMESPACE_CONNECT)
                self.ask_flows[flow.token] = flow
                return
            if going_on:  # opening.open_native
                assert self.s.connect_finished(rec, True)
                assert rec.state is NsState.CONNECTED
                self.connected(rec)
                self.peer_namespaces[rec.namespace] = True
                self.connects.remove(flow)
                return
        elif flow.token in self.pending:  # no answer yet: it times out
            del self.pending[flow.token]
            del self.ask_flows[flow.token]
            self.s.ask_ended(flow.token)
            self.peer_namespaces[rec.namespace] = None
        else:
            self.ask_flows.pop(flow.token, None)  # failed (or answered)
            self.s.ask_ended(flow.token)
        before = rec.state
        assert self.s.connect_finished(rec, False) is False
        assert rec.state is (NsState.DISCONNECTED if before is NsState.CONNECTING else before)
        self.connects.remove(flow)

    # -- this side's joins and leaves ----------------------------------------------------------

    def pick_record(self, data: st.DataObject) -> Rec:
        """A record the application holds: mostly one of the session, sometimes any."""
        live = list(self.s.namespaces.values())
        stale = data.draw(st.sampled_from([False, False, False, True]))
        return data.draw(st.sampled_from(self.rig.records if stale or not live else live))

    def local_join(self, rec: Rec, room: str) -> None:
        """``NSConn.join_room``: ``join_started``, then its local _OnRoomJoin runs."""
        expected = (
            self.is_open
            and rec.state is NsState.CONNECTED
            and self.s.namespaces.get(rec.namespace) is rec
            and rec.room_state(room) is RoomState.LEFT
        )
        assert self.s.join_started(rec, room) is expected
        if expected:
            assert rec.room_state(room) is RoomState.JOINING
            flow = RoomFlow("join", rec, room)
            self.room_flows.append(flow)
            self.claim(flow, rec, room)

    def local_leave(self, rec: Rec, room: str) -> None:
        """``NSConn.leave_room``: ``leave_started``, then its local _OnRoomLeave runs."""
        expected = (
            rec.room_state(room) is RoomState.JOINED and self.s.namespace(rec.namespace) is rec
        )
        assert self.s.leave_started(rec, room) is expected
        if expected:
            assert rec.room_state(room) is RoomState.LEAVING
            self.room_leave(rec, room, +1)  # the local _OnRoomLeave runs
            flow = RoomFlow("leave", rec, room)
            self.room_flows.append(flow)
            self.claim(flow, rec, room)

    @precondition(lambda self: bool(self.room_flows))
    @rule(
        data=st.data(),
        refuse=st.sampled_from([False, False, True]),
        answer=st.sampled_from([True, False, None]),
    )
    def local_room_step(self, data: st.DataObject, refuse: bool, answer: bool | None) -> None:
        """A local join or leave goes on: its local hook returned (refusing: ``*_finished``
        with ``False``, nothing sent; else the peer is asked, unless the room was taken
        meanwhile or the connection closes); or the peer's answer is read (``answer``); or
        its task resumes after the ask ended (answered, failed, timed out: ``finally:
        *_finished(False)``)."""
        flow = data.draw(st.sampled_from(self.room_flows))
        rec, room = flow.rec, flow.room
        if flow.token in self.pending and answer is not None:
            self.read_answer(flow.token, not answer)
            return
        changing = RoomState.JOINING if flow.kind == "join" else RoomState.LEAVING
        if not flow.token:
            if not refuse and rec.room_state(room) is not changing:
                self.room_flows.remove(flow)  # taken meanwhile (by the close, a forced leave)
                return
            if not refuse and self.is_open:
                event = ON_ROOM_JOIN if flow.kind == "join" else ON_ROOM_LEAVE
                flow.token = self.ask(rec.namespace, event, room)
                self.ask_flows[flow.token] = flow
                return
            # refused, or Conn.ask raised ConnectionClosed
        elif flow.token in self.pending:  # no answer yet: it times out
            del self.pending[flow.token]
            del self.ask_flows[flow.token]
            self.s.ask_ended(flow.token)
            self.peer_rooms[rec, room] = None
        else:
            self.ask_flows.pop(flow.token, None)  # failed (or answered)
            self.s.ask_ended(flow.token)
        flow.changed = self.finish_room(flow, flow.agreed)  # the finally: finished(agreed)
        self.room_flows.remove(flow)
        joined = rec.room_state(room) is RoomState.JOINED and self.is_open
        if flow.kind == "join" and flow.changed and joined:
            self.room_joined(rec, room)  # NSConn.join_room, if the room is still joined

    def finish_room(self, flow: RoomFlow, ok: bool) -> bool:
        """``join_finished``/``leave_finished`` of ``flow``, and what it fires."""
        rec, room = flow.rec, flow.room
        before, ns_before, was_open = rec.room_state(room), rec.state, self.is_open
        owned = self.owns(flow, rec, room)
        if flow.kind == "join":
            now = self.s.join_finished(rec, room, ok)
            writable = ns_before in (NsState.CONNECTED, NsState.DISCONNECTING)
            assert now is (owned and ok and was_open and writable)
            self.settled(flow, rec, room, before, owned)
            if now:
                assert rec.room_state(room) is RoomState.JOINED
                self.joined(rec, room)  # the local _OnRoomJoined runs
            elif owned:
                assert rec.room_state(room) is RoomState.LEFT
        else:
            now = self.s.leave_finished(rec, room, ok)
            assert now is (owned and ok)
            self.settled(flow, rec, room, before, owned)
            after = rec.room_state(room)
            if now:
                assert after is RoomState.LEFT
                self.room_left(rec, room)  # the local _OnRoomLeft runs
            elif owned and was_open:
                assert after is RoomState.JOINED
                self.room_leave(rec, room, -1)  # refused: it stays joined
            elif owned:
                assert after is RoomState.LEAVING  # the close's forced leave ends it
        return now

    # -- this side's disconnects ---------------------------------------------------------------

    def local_disconnect(self, rec: Rec, room: str) -> None:
        """``Conn.disconnect_namespace``: the peer is asked if ``rec`` is the connected
        namespace (else ``bad namespace``). A late agreement for any other record changes
        nothing."""
        if self.is_open and self.s.namespace(rec.namespace) is rec:
            token = self.ask(rec.namespace, ON_NAMESPACE_DISCONNECT)
            self.ask_flows[token] = DisconnectFlow(rec)
        else:
            assert self.s.disconnected(rec, local=True) == []

    def disconnect_asks(self) -> list[str]:
        return sorted(t for t, flow in self.ask_flows.items() if isinstance(flow, DisconnectFlow))

    @precondition(lambda self: bool(self.disconnect_asks()))
    @rule(data=st.data(), agreed=st.booleans())
    def local_disconnect_answered(self, data: st.DataObject, agreed: bool) -> None:
        """The peer's answer to a disconnect of this side is read."""
        self.read_answer(data.draw(st.sampled_from(self.disconnect_asks())), not agreed)

    def local_disconnected(self, rec: Rec) -> None:
        """The peer agreed to this side's disconnect of ``rec``: removed at once, and the
        events returned fire later, in the serving task."""
        state = rec.state
        assert state in WRITABLE_NS and self.s.namespaces.get(rec.namespace) is rec
        rooms = dict(rec.room_states)
        events = self.s.disconnected(rec, local=True)
        assert rec.state is NsState.DISCONNECTED and rec.namespace not in self.s.namespaces
        expected: list[Event] = []
        for room, room_state in rooms.items():
            if room_state is RoomState.JOINED:
                expected.append(forced(rec, ON_ROOM_LEAVE, room))
            if room_state in IN_ROOM:
                expected.append(forced(rec, ON_ROOM_LEFT, room))
        if state is NsState.CONNECTED:
            expected.append(
                (rec, Message(rec.namespace, event=ON_NAMESPACE_DISCONNECT, local=True))
            )
        # else the peer's disconnect of it is under way: that flow fires it
        assert events == expected
        for _, msg in events:
            if msg.event == ON_ROOM_LEAVE:
                self.room_leave(rec, msg.room, +1)
            elif msg.event == ON_ROOM_LEFT:
                self.room_left(rec, msg.room)
            else:
                self.namespace_disconnect(rec, +1)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def memberships(self) -> None:
        """(a) rooms only in namespaces of the session, joined only in connected ones."""
        live = set(self.s.namespaces.values())
        for name, rec in self.s.namespaces.items():
            assert rec.namespace == name and rec.state is not NsState.DISCONNECTED
        for rec in self.rig.records:
            if rec not in live:
                assert rec.state is NsState.DISCONNECTED
                assert not rec.room_states, f"rooms of {rec!r}, not in the session"
            for room, state in rec.room_states.items():
                assert state is not RoomState.LEFT
                if state in IN_ROOM:
                    assert rec.state in WRITABLE_NS, f"{room!r} {state.value} in {rec!r}"

    @invariant()
    def closed(self) -> None:
        """(b) nothing pending once closing; nothing left once closed."""
        if self.s.state in (ConnState.CLOSING, ConnState.CLOSED):
            assert self.s.asks == {}
            assert not self.inbox
        if self.s.state is ConnState.CLOSED:
            assert self.s.namespaces == {}

    @invariant()
    def asks(self) -> None:
        """(c) every pending ask is of a namespace of the session; (e) every waiter was
        failed at most once and never answered too (checked as it fails); and no ask
        vanished without an answer, a failure or its end."""
        assert self.s.asks == self.pending
        for name, _ in self.s.asks.values():
            assert name in self.s.namespaces
        assert not self.answered & self.failures

    @invariant()
    def observer(self) -> None:
        """(d) the observer's view is the session's joined rooms, and its namespaces
        connected with no disconnect under way."""
        members = self.rig.members
        assert members.errors == []
        live = self.s.namespaces.values()
        assert members.namespaces == {rec for rec in live if rec.state is NsState.CONNECTED}
        assert members.rooms == {
            (rec, room) for rec in live for room in rec.room_states if rec.in_room(room)
        }

    @invariant()
    def one_connect_at_a_time(self) -> None:
        """(f) at most one record of a name; a connect of a name only while no other is
        under way, and each record being connected has its flow."""
        names = [flow.rec.namespace for flow in self.connects]
        assert len(names) == len(set(names)), f"connects under way at once: {names}"
        for flow in self.connects:
            if flow.rec.state is NsState.CONNECTING:
                assert self.s.namespaces[flow.rec.namespace] is flow.rec
        connecting = [rec for rec in self.s.namespaces.values() if rec.state is NsState.CONNECTING]
        for rec in connecting:
            mine = [flow for flow in self.connects if flow.rec is rec]
            peer = self.peer is not None and self.peer.rec is rec
            assert len(mine) + peer == 1 or not self.is_open, f"{rec!r} connected by {mine}"

    @invariant()
    def events(self) -> None:
        """(g) each join gets one _OnRoomLeave and one _OnRoomLeft at most, both once it is
        left; each connected namespace one _OnNamespaceDisconnect at most, one once it is
        removed. Once CLOSED everything is removed: exactly one of each."""
        for rec in self.rig.records:
            if rec.state in WRITABLE_NS:
                assert rec in self.disconnect_events, f"{rec!r} connected unnoticed"
            for room, state in rec.room_states.items():
                if state in IN_ROOM:
                    assert (rec, room) in self.joins, f"{room!r} of {rec!r} joined unnoticed"
        for rec, count in self.disconnect_events.items():
            if rec.state is NsState.CONNECTED:
                assert count == 0
            elif rec.state is NsState.DISCONNECTED:
                assert count == 1, f"{count} _OnNamespaceDisconnect for the removed {rec!r}"
        for (rec, room), joins in self.joins.items():
            *earlier, last = joins
            for join in earlier:
                assert (join.leave, join.left) == (1, 1)
            state = rec.room_state(room)
            if state is RoomState.JOINED:
                assert (last.leave, last.left) == (0, 0)
            elif state is RoomState.LEAVING:
                assert (last.leave, last.left) == (1, 0)
            else:
                assert (last.leave, last.left) == (1, 1), f"{room!r} of {rec!r} left silently"

    @invariant()
    def owners_live(self) -> None:
        """(h) a room being joined or left is owned by one flow, alive while the connection
        is open (only its owner ends the change, checked as flows end)."""
        for rec in self.rig.records:
            for room, state in rec.room_states.items():
                if state in BUSY:
                    owner = self.owners.get((rec, room))
                    assert owner is not None, f"{room!r} of {rec!r} {state.value}, no owner"
                    assert self.live(owner) or not self.is_open, f"{owner!r} ended, {state}"

    @invariant()
    def agreement(self) -> None:
        """(i) both ends agree: once nothing is under way on a namespace or a room of it,
        it is connected or joined here as the peer was last told or answered."""
        if not self.is_open:
            return
        for name, connected in self.peer_namespaces.items():
            if connected is None or self.namespace_busy(name):
                continue
            here = self.s.namespace(name) is not None
            assert here is connected, f"{name!r}: connected here {here}, for the peer {connected}"
        for (rec, room), joined in self.peer_rooms.items():
            if joined is None or self.room_busy(rec, room):
                continue
            here = rec.in_room(room)
            assert here is joined, f"{room!r} of {rec!r}: joined here {here}, for the peer {joined}"

    @invariant()
    def queued(self) -> None:
        """The inbox holds what was queued and not taken, and is full past its bound."""
        assert self.s.inbox_full is (
            len(self.inbox) > MAX_QUEUE or sum(n for _, n in self.inbox) > MAX_QUEUE_BYTES
        )
        assert self.s.queued() == [msg for msg, _ in self.inbox]
        assert self.s.inbox_bytes == sum(size for _, size in self.inbox)


SessionMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=100, deadline=None
)
TestSessionMachine = SessionMachine.TestCase
