"""A managed teacher slot that decodes many requests at once: persd's own llama.cpp server.

llama-cpp-python's server answers one request at a time, so its parallel slots are separate
processes whose sequences never share a pass over the weights. This server holds one model
and one ``BatchDecoder`` context of ``--parallel`` streams: every request in flight is a
sequence of the same batch, and a request that arrives mid-decode joins at the next step
(continuous batching, as the student's evaluation decodes).

It speaks the part of the OpenAI API the teacher client uses: ``GET /v1/models`` and
``POST /v1/chat/completions`` (messages, temperature, top_p, max_tokens, seed, stop, n),
answering with ``choices`` and ``usage``. Prompts are rendered by ``persd.llm.render`` from
the GGUF's own chat template, as the student's prompts are. ``n`` samples of one request use
seeds ``seed .. seed+n-1``, and a sample's tokens do not depend on what else is in the batch,
so the same request gives the same reply however busy the server is.

Started by ``ManagedServers`` (``teacher.server.parallel`` > 1 or ``lookup`` > 0) as
``python -m persd.llm.batch_server``; it exits when persd does (``server.watch_parent``).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from persd.errors import PersdError
from persd.llm.base import Generation, Message, SamplingParams
from persd.llm.batch import Request, Ticket


class BadRequest(ValueError):
    """A request this server cannot answer (HTTP 400), with the reason for the client."""


def sampling(body: dict[str, Any]) -> SamplingParams:
    """The sampling settings of an OpenAI chat request (the fields the teacher client sends)."""
    stop = body.get("stop")
    try:
        return SamplingParams(
            n=int(body.get("n") or 1),
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            max_new_tokens=int(body.get("max_tokens") or 512),
            seed=int(body.get("seed") or 0),
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        )
    except (TypeError, ValueError) as e:
        raise BadRequest(f"bad sampling field: {e}") from None


def messages(body: dict[str, Any]) -> list[Message]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise BadRequest("'messages' must be a non-empty list")
    try:
        return [Message(role=m["role"], content=m["content"] or "") for m in raw]
    except (KeyError, TypeError, ValueError) as e:
        raise BadRequest(f"bad message: {e}") from None


class Engine:
    """The model, its renderer and the decoding thread; ``complete`` is thread-safe."""

    def __init__(
        self, model_path: str, *, parallel: int, ctx_per_seq: int, threads: int, lookup: int = 0
    ) -> None:
        from persd.llm.student_llama import LlamaStudent

        # Clients' prompts arrive one by one, unknown in advance: no shared prefix to decode
        # once, so no stream is kept for one.
        self.student = LlamaStudent(
            model_path,
            n_ctx=ctx_per_seq,
            parallel=parallel,
            threads=threads,
            lookup=lookup,
            share_prefix=False,
        )
        self._inbox: queue.Queue[Ticket | None] = queue.Queue()
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._decode, name="decode", daemon=True)
        self._thread.start()

    def _decode(self) -> None:
        try:
            self.student.decoder.serve(self._inbox)
        except BaseException as e:  # answered to every waiting request; later ones see it too
            self.failure = e

    def complete(self, msgs: list[Message], params: SamplingParams) -> list[Generation]:
        """``params.n`` generations of one conversation (sample k seeded ``seed + k``)."""
        if self.failure is not None:
            raise PersdError(f"the decoder stopped: {self.failure}")
        ids = tuple(self.student.renderer.ids(tuple(msgs)))
        futures = []
        for k in range(params.n):
            request = Request(ids, params, params.seed + k)
            try:
                self.student.decoder.check(request)
            except PersdError as e:
                raise BadRequest(str(e)) from None
            future: Future[Generation] = Future()
            futures.append(future)
            self._inbox.put(Ticket(request, _settle(future)))
        return [f.result() for f in futures]

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join()
        self.student.close()


def _settle(future: Future[Generation]) -> Any:
    def reply(result: Generation | BaseException) -> None:
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    return reply


def reply_body(alias: str, gens: list[Generation]) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object; usage counts the prompt once (as OpenAI does)."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": alias,
        "choices": [
            {
                "index": k,
                "message": {"role": "assistant", "content": g.text},
                "finish_reason": g.finish_reason,
            }
            for k, g in enumerate(gens)
        ],
        "usage": {
            "prompt_tokens": gens[0].tokens_in,
            "completion_tokens": sum(g.tokens_out for g in gens),
            "total_tokens": gens[0].tokens_in + sum(g.tokens_out for g in gens),
        },
    }


def make_handler(engine: Engine, alias: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connections

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "code": status}})

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": alias, "object": "model"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, f"no route {self.path}")
                return
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise BadRequest("the body must be a JSON object")
                gens = engine.complete(messages(body), sampling(body))
            except (BadRequest, json.JSONDecodeError) as e:
                self._error(400, str(e))
                return
            except Exception as e:  # the decoder failed: the client retries, then reports
                self._error(500, f"{type(e).__name__}: {e}")
                return
            self._send(200, reply_body(alias, gens))

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per request would flood the slot's log

    return Handler


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="persd.llm.batch_server", description=__doc__)
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--model_alias", required=True, help="the model name replies carry")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--parallel", type=int, default=8, help="sequences decoded at once")
    ap.add_argument("--n_ctx", type=int, default=4096, help="context of each sequence")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lookup", type=int, default=0, help="prompt-lookup draft tokens (0: off)")
    args = ap.parse_args(argv)

    from persd.llm.server import watch_parent

    watch_parent()
    engine = Engine(args.model, parallel=args.parallel, ctx_per_seq=args.n_ctx,
                    threads=args.threads, lookup=args.lookup)  # fmt: skip
    httpd = ThreadingHTTPServer((args.host, args.port), make_handler(engine, args.model_alias))
    httpd.daemon_threads = True
    # The slot's log (stdout): what this server is, for whoever reads the run's logs/.
    sys.stdout.write(
        f"persd batch server: {args.model_alias}, {args.parallel} sequences x {args.n_ctx} "
        f"tokens, {args.threads} threads, lookup {args.lookup}, "
        f"http://{args.host}:{args.port}/v1\n"
    )
    sys.stdout.flush()
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
        engine.close()


if __name__ == "__main__":
    main()
