"""wsmvc: real-time websocket controllers for aiohttp, speaking the neffos protocol."""

from .client import ClientConn, dial
from .closing import CloseReason
from .conn import Conn
from .controller import ControllerError, ControllerHandle, ControllerWarning, controller, event
from .errors import (
    AskTimeout,
    ConnectionClosed,
    EventError,
    ProtocolError,
    Reject,
    WsmvcError,
)
from .handlers import HandlerTable, Reply
from .injection import ClientAddress, DependencyError, Headers, connection_scope
from .nsconn import NSConn, Room
from .protocol import Message
from .server import Server, with_query_headers
from .upgrade import offered_protocols

__all__ = [
    "AskTimeout",
    "ClientAddress",
    "ClientConn",
    "CloseReason",
    "Conn",
    "ConnectionClosed",
    "ControllerError",
    "ControllerHandle",
    "ControllerWarning",
    "DependencyError",
    "EventError",
    "HandlerTable",
    "Headers",
    "Message",
    "NSConn",
    "ProtocolError",
    "Reject",
    "Reply",
    "Room",
    "Server",
    "WsmvcError",
    "connection_scope",
    "controller",
    "dial",
    "event",
    "offered_protocols",
    "with_query_headers",
]
