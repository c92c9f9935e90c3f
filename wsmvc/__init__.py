"""wsmvc: real-time websocket controllers for aiohttp, speaking the neffos protocol.

The neffos clients (neffos.js in browsers and Node, the Go client) and wsmvc's own
(``wsmvc.js``, served by the server; :func:`dial` in Python) connect to a :class:`Server`
mounted on an aiohttp application. Application code is controllers: a class marked
``@controller(namespace=...)`` whose ``@event`` methods handle one namespace's events, a
new instance per client, its fields injected by the ``injector`` library::

    from aiohttp import web
    from wsmvc import Message, NSConn, Server, controller, event

    @controller(namespace="default")
    class Chat:
        conn: NSConn                           # this client's connection to the namespace

        @event                                 # the neffos event "OnChat"
        async def on_chat(self, msg: Message) -> None:
            self.conn.server.broadcast(msg, exclude=self.conn)   # sent during the call

        @event("ask")
        def ask(self, msg: Message) -> bytes:  # a return value answers the client's ask
            return b"pong:" + msg.body

    app = web.Application()
    Server(controllers=[Chat]).mount(app, "/echo")   # GET upgrades, HEAD answers, 405 else

And a Python client::

    async with wsmvc.dial("ws://localhost:8080/echo", {"default": {}}) as conn:
        ns = await conn.connect("default")
        reply = await ns.ask("ask", "hi", timeout=5)       # reply.body == b"pong:hi"

The names, by where they are used:

* Serving: :class:`Server` (every knob a keyword: limits, origins, heartbeat, recovery,
  an exchange), :func:`controller`, :func:`event`, :func:`catch` (exception handlers),
  :class:`Message` (``body`` is bytes, ``text`` its UTF-8), :class:`Reply`,
  :class:`NSConn`, :class:`Room`, :class:`Conn`, :class:`CloseReason`, :class:`Tapped`,
  :func:`connection_scope`, :class:`Headers`, :class:`ClientAddress`, :class:`Codec`.
* The Python client: :func:`dial` (``await`` it or ``async with`` it), :class:`ClientConn`;
  with ``reconnect=Backoff(...)`` a :class:`ReconnectingClient` and its
  :class:`ReconnectingNamespace`, :class:`ReconnectingRoom`; :class:`Recovery`.
* Errors: every one is a :class:`WsmvcError` (the tree: :mod:`wsmvc.errors`).
  :class:`EventError` is an error answer, raised by a handler or received by an asker;
  :class:`AskTimeout`, :class:`ConnectionClosed`, :class:`Reject`; a side's own misuse is
  :class:`NotConnected`, :class:`NotInHandlerTable` or :class:`NotJoined`.
* Elsewhere: :mod:`wsmvc.exchange` (Redis, NATS: ``pip install 'wsmvc[redis]'``,
  ``'wsmvc[nats]'``), :mod:`wsmvc.emitter` (send from workers), :mod:`wsmvc.testing`,
  :mod:`wsmvc.metrics` (``'wsmvc[prometheus]'``), :mod:`wsmvc.tracing`
  (``'wsmvc[opentelemetry]'``), typed bodies
  (``'wsmvc[typed-bodies]'``, ``'wsmvc[pydantic]'``).

Units: every timeout and interval is in seconds, every size in bytes. The guides:
https://github.com/wsmvc/wsmvc/tree/main/docs
"""

__version__ = "0.1.0"  # the one place it is written: setup.cfg reads it (attr:)

from .backoff import Backoff
from .bodies import BodyError
from .client import ClientConn, dial
from .closing import CloseReason
from .codecs import Codec, JsonCodec
from .conn import Conn
from .controller import ControllerError, ControllerHandle, ControllerWarning, controller, event
from .errorhandling import catch
from .errors import (
    AskTimeout,
    BadNamespace,
    BadRoom,
    ConnectionClosed,
    EventError,
    InvalidPayload,
    NotConnected,
    NotInHandlerTable,
    NotJoined,
    ProtocolError,
    Reject,
    WriteClosed,
    WsmvcError,
    known_error,
)
from .handlers import HandlerTable, Reply
from .handles import ReconnectingNamespace, ReconnectingRoom
from .injection import ClientAddress, DependencyError, Headers, connection_scope
from .nsconn import NSConn, Room
from .protocol import Message
from .reconnect import ReconnectingClient
from .recovery import Recovery
from .server import Server, with_query_headers
from .taps import Tapped
from .upgrade import offered_protocols

__all__ = [
    "AskTimeout",
    "Backoff",
    "BadNamespace",
    "BadRoom",
    "BodyError",
    "ClientAddress",
    "ClientConn",
    "CloseReason",
    "Codec",
    "Conn",
    "ConnectionClosed",
    "ControllerError",
    "ControllerHandle",
    "ControllerWarning",
    "DependencyError",
    "EventError",
    "HandlerTable",
    "Headers",
    "InvalidPayload",
    "JsonCodec",
    "Message",
    "NSConn",
    "NotConnected",
    "NotInHandlerTable",
    "NotJoined",
    "ProtocolError",
    "ReconnectingClient",
    "ReconnectingNamespace",
    "ReconnectingRoom",
    "Recovery",
    "Reject",
    "Reply",
    "Room",
    "Server",
    "Tapped",
    "WriteClosed",
    "WsmvcError",
    "__version__",
    "catch",
    "connection_scope",
    "controller",
    "dial",
    "event",
    "known_error",
    "offered_protocols",
    "with_query_headers",
]
