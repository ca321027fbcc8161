"""What an OpenAI-compatible chat endpoint sends back, beyond one JSON reply: why a connection
failed, and a streamed reply the client closes once it holds enough lines.

Why close a reply early: asked for ten test inputs, the 1.5B teacher sometimes keeps listing
calls (``f(0)``, ``f(1)``, ... ``f(34)``) until its token cap. On the paper's tasks that was 38%
of its test-input replies and 57% of its time (docs/TASKS.md), though the build keeps only the
first ten. A streamed reply is the same tokens a whole reply begins with; closing the
connection ends the server's generation there (llama.cpp's server and hosted APIs stop a
request whose client has gone).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx


def transport_reason(e: httpx.TransportError) -> str:
    """Why a request got no reply, in the words a user can act on."""
    if isinstance(e, httpx.ConnectTimeout):
        return "connect timed out"
    if isinstance(e, httpx.TimeoutException):
        return "no reply before teacher.timeout_s"
    if isinstance(e, httpx.ConnectError):
        # httpx says "All connection attempts failed"; the OS error is down the chain.
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, ConnectionRefusedError):
                return "connection refused"
            if isinstance(cause, socket.gaierror):
                return "host name not found"
            cause = cause.__cause__ or cause.__context__
        return f"cannot connect: {e}"
    return "connection dropped mid-reply"


def first_lines(text: str, max_lines: int) -> str | None:
    """``text`` up to and including its ``max_lines``-th newline; None while it has fewer."""
    end = -1
    for _ in range(max_lines):
        end = text.find("\n", end + 1)
        if end < 0:
            return None
    return text[: end + 1]


async def read_stream(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], max_lines: int
) -> tuple[httpx.Response, dict[str, Any] | None]:
    """POST ``body`` as a streamed chat request; read its text until ``max_lines`` lines or
    the end, and close. Returns the response and the reply shaped as a non-streamed one
    (``choices[0].message.content``, ``usage``), or None when the status is not 200 or the
    server answered with one JSON reply instead of a stream (the body is read, for the
    caller). Output tokens are counted as the stream's content events (one token each from
    llama.cpp) unless the server sends usage. Raises ValueError for an event that is not
    JSON, or a stream that ends without a finish reason short of ``max_lines``."""
    pieces: list[str] = []
    events = newlines = 0
    finish, model, usage = None, None, None
    async with http.stream("POST", f"{url}/chat/completions", json=body | {"stream": True}) as resp:
        if resp.status_code != 200 or "event-stream" not in resp.headers.get("content-type", ""):
            await resp.aread()  # an error, or a server that does not stream: one JSON reply
            return resp, None
        async for line in resp.aiter_lines():
            payload = line[5:].strip() if line.startswith("data:") else ""
            if payload == "[DONE]":
                break
            if not payload:
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                raise ValueError(
                    f"sent a stream event that is not JSON: {payload[:80]!r}"
                ) from None
            model, usage = event.get("model") or model, event.get("usage") or usage
            for choice in event.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content") or ""
                pieces.append(piece)
                events, newlines = events + bool(piece), newlines + piece.count("\n")
                finish = choice.get("finish_reason") or finish
            if newlines >= max_lines:
                finish = "stop"  # enough: leaving the block closes the connection
                break
    if finish is None:  # no finish_reason and not enough lines: the server cut it short
        raise ValueError("ended a streamed reply before it finished (interrupted?)")
    text = "".join(pieces)
    cut = first_lines(text, max_lines)
    reply = {"message": {"content": text if cut is None else cut}, "finish_reason": finish}
    return resp, {
        "model": model,
        "choices": [reply],
        "usage": usage or {"prompt_tokens": 0, "completion_tokens": events},
    }
