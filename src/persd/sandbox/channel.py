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
        # One timeout for the whole exchange (changing it per recv costs syscalls); the
        # deadline is checked between reads.
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        self._reader = codec.FrameReader(self._read, MAX_FRAME)

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.sendall(codec.dumps(message))
        except OSError as e:  # EPIPE / ECONNRESET: the sample is gone
            raise ChannelClosed(str(e)) from None

    def recv(self) -> dict[str, Any]:
        try:
            payload = self._reader.next()
        except EOFError:
            raise ChannelClosed("end of stream") from None
        except codec.FrameTooLarge as e:
            raise ProtocolViolation(str(e)) from None
        try:
            return codec.parse_frame(payload)
        except ValueError as e:
            raise ProtocolViolation(str(e)) from None

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.recv()

    def _read(self, n: int) -> bytes:
        if time.monotonic() > self.deadline:
            raise ChannelClosed("no reply before the deadline")
        try:
            return self.sock.recv(n)
        except TimeoutError:
            raise ChannelClosed("no reply before the deadline") from None
        except OSError as e:
            raise ChannelClosed(str(e)) from None

    def close(self) -> None:
        self.sock.close()
