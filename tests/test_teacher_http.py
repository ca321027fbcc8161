"""Reading a streamed reply (``llm.teacher_http.read_stream``) from scripted endpoints: a
server that answers with one JSON reply instead, and a stream that stops short. The real
llama.cpp server's stream is tested in test_teacher.py and test_llama_server.py."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from persd.llm.teacher_http import first_lines, read_stream

BODY = {"messages": [{"role": "user", "content": "list"}], "max_tokens": 50}


def _read(handler, max_lines: int = 3):
    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await read_stream(http, "http://t/v1", BODY, max_lines)

    return asyncio.run(go())


def _events(pieces: list[str], finish: str | None) -> bytes:
    chunks = [{"choices": [{"delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    if finish:
        chunks.append({"choices": [{"delta": {}, "finish_reason": finish}]})
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def test_a_stream_is_cut_after_its_lines_and_counts_its_tokens() -> None:
    pieces = ["```python\n", "f(1)", "\n", "f(2)\nf(3)\n", "f(4)\n", "```"]

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        body = _events(pieces, "length")
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    _, data = _read(handler)
    assert data["choices"][0]["message"]["content"] == "```python\nf(1)\nf(2)\n"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == 4  # the events read before the cut


def test_a_server_that_does_not_stream_gets_its_json_read_by_the_caller() -> None:
    reply = {"choices": [{"message": {"content": "f(1)\n"}, "finish_reason": "stop"}]}
    resp, data = _read(lambda request: httpx.Response(200, json=reply))
    assert data is None and resp.json() == reply


def test_a_stream_that_stops_short_without_a_finish_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = _events(["f(1)\n"], None)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with pytest.raises(ValueError, match="before it finished"):
        _read(handler)


def test_first_lines() -> None:
    assert first_lines("a\nb\nc", 2) == "a\nb\n" and first_lines("a\nb", 2) is None
