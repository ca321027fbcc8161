"""The trusted parent's end of one sample's private socket."""

from __future__ import annotations

import socket
import time
from typing import Any

from persd.sandbox._child import codec

MAX_FRAME = 16 << 20  # a larger reply is a protocol violation (parsing costs ~10x its size)


class ChannelClosed(Exception):
    """The sample process went away (exit, crash, kill) before answering."""


class ProtocolViolation(Exception):
    """The sample sent something that is not a well-formed reply."""


class Channel:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline  # monotonic; the worker kills the sample before this

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.sendall(codec.dumps(message))
        except OSError as e:  # EPIPE / ECONNRESET: the sample is gone
            raise ChannelClosed(str(e)) from None

    def recv(self) -> dict[str, Any]:
        size = codec.header_length(self._exact(codec.HEADER_SIZE))
        if size > MAX_FRAME:
            raise ProtocolViolation(f"reply of {size} bytes")
        try:
            return codec.parse_frame(self._exact(size))
        except ValueError as e:
            raise ProtocolViolation(str(e)) from None

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.recv()

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelClosed("no reply before the deadline")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except TimeoutError:
                raise ChannelClosed("no reply before the deadline") from None
            except OSError as e:
                raise ChannelClosed(str(e)) from None
            if not chunk:
                raise ChannelClosed("end of stream")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        self.sock.close()
