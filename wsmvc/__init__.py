"""wsmvc: real-time websocket controllers for aiohttp, speaking the neffos protocol."""

from .client import ClientConn, dial
from .conn import Conn, NSConn, Room
from .errors import (
    AskTimeout,
    ConnectionClosed,
    EventError,
    ProtocolError,
    Reject,
    WsmvcError,
)
from .handlers import HandlerTable, Reply
from .protocol import Message
from .server import Server

__all__ = [
    "AskTimeout",
    "ClientConn",
    "Conn",
    "ConnectionClosed",
    "EventError",
    "HandlerTable",
    "Message",
    "NSConn",
    "ProtocolError",
    "Reject",
    "Reply",
    "Room",
    "Server",
    "WsmvcError",
    "dial",
]
