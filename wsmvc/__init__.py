"""wsmvc: real-time websocket controllers for aiohttp, speaking the neffos protocol."""

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
