"""The trusted parent's end of one sample's private socket."""

from __future__ import annotations

import socket
import struct
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
        # One kernel timeout for the whole exchange on a blocking socket: each read is one
        # recv (Python's own socket timeout polls before every recv, twice the syscalls, and
        # changing it per read costs more). The deadline is checked between reads.
        set_timeout(sock, max(deadline - time.monotonic(), 0.001))
        self._reader = codec.FrameReader(self._read, MAX_FRAME)

    def send(self, message: dict[str, Any]) -> None:
        self.send_frame(codec.dumps(message))

    def send_frame(self, frames: bytes) -> None:
        """Send frames already made by ``codec.dumps``."""
        try:
            self.sock.sendall(frames)
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
        except (TimeoutError, BlockingIOError):  # SO_RCVTIMEO expired: EAGAIN
            raise ChannelClosed("no reply before the deadline") from None
        except OSError as e:
            raise ChannelClosed(str(e)) from None

    def close(self) -> None:
        self.sock.close()


def set_timeout(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking with a kernel send/receive timeout (EAGAIN when it expires)."""
    if sock.gettimeout() is not None:  # only under socket.setdefaulttimeout()
        sock.settimeout(None)
    tv = struct.pack("ll", int(seconds), int(seconds % 1 * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
