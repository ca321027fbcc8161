"""The teacher client: any OpenAI-compatible chat endpoint, cached, budgeted and retried.

One ``httpx.AsyncClient`` serves OpenAI, a vLLM server or llama.cpp servers alike. A reply
reaches the caller only after it is committed to the cache, and a call is sent only after
its worst-case cost fits the budget. With several base URLs (local server slots) each
request goes to the least busy one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from persd.errors import PersdError
from persd.llm.base import Message, SamplingParams, Teacher, TeacherReply
from persd.llm.budget import Budget, resolve_price
from persd.llm.cache import LedgerRow, TeacherCache, cache_key, canonical_request
from persd.llm.teacher_config import TeacherConfig
from persd.llm.teacher_http import read_stream, transport_reason

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_DEFAULT_API_CONCURRENCY = 8


class TeacherError(PersdError):
    """The teacher endpoint failed in a way retrying did not fix."""


class TeacherUnreachable(TeacherError):
    """No connection to the endpoint (refused, reset, timed out) after every try."""


class TeacherAuthError(TeacherError):
    """The endpoint rejected the API key (HTTP 401/403)."""


class OpenAITeacher(Teacher):
    """``Teacher`` over ``POST {base_url}/chat/completions``. Use ``open_teacher`` to build one.

    ``endpoint_id`` names the endpoint in cache keys; it must not change between runs (a
    managed server's port does, so its id names the model file instead). ``managed``: the
    endpoints are persd's own llama.cpp slots: free, ``capacity`` requests at once in all
    (one per slot, or ``parallel`` per batch slot), and sent no API key.
    """

    def __init__(
        self,
        cfg: TeacherConfig,
        *,
        cache: TeacherCache,
        base_urls: Sequence[str] | None = None,
        endpoint_id: str | None = None,
        model: str | None = None,
        managed: bool = False,
        capacity: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        diagnose: Callable[[str], str | None] | None = None,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
    ) -> None:
        self._cfg = cfg
        self._model = model or cfg.model
        self._urls = [u.rstrip("/") for u in (base_urls or [cfg.base_url])]
        self._endpoint_id = endpoint_id or self._urls[0]
        self._cache = cache
        self._extra_body = dict(extra_body or {})  # server-specific fields sent with every call
        self._diagnose = diagnose
        calls, spent = cache.totals()  # a budget covers the run directory, resumed runs included
        self.budget = Budget(
            resolve_price(cfg, local=managed),
            budget_usd=cfg.budget_usd,
            max_calls=cfg.max_calls,
            spent_usd=spent,
            calls=calls,
        )
        # Local slots answer ``capacity`` requests at once (one each, or a batch server's
        # ``parallel``); more in flight would only queue inside them.
        local = capacity or len(self._urls)
        concurrency = cfg.concurrency or (local if managed else _DEFAULT_API_CONCURRENCY)
        self._sem = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._busy = dict.fromkeys(self._urls, 0)
        self._managed, self._capacity = managed, local
        self._key_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # Read once, kept only inside the client's headers: never in self, the cache or errors.
        headers = {}
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env and not managed else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._redact = key or None
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            event_hooks=dict(event_hooks or {}),
        )
        self.http_requests = 0  # every POST attempt, retries included
        self.cache_hits = 0

    def __repr__(self) -> str:
        return f"OpenAITeacher(model={self._model!r}, endpoints={self._urls!r})"

    @property
    def model_id(self) -> str:
        return self._model

    @property
    def concurrency(self) -> int:
        """Requests in flight at once: the local slots' capacity, else ``teacher.concurrency``."""
        return self._concurrency

    @property
    def lanes(self) -> int:
        """Slots a caller may pin requests to (``lane``): persd's own llama-cpp-python slots,
        each answering one request at a time; 0 for an API or a batch server.

        Why pin: such a slot keeps the last conversation in its llama.cpp context and
        evaluates only what a new prompt adds after their common prefix, so a follow-up
        (the refinement of a task the slot just solved) sent to the same slot skips the
        prompt it already holds."""
        return len(self._urls) if self._managed and self._capacity == len(self._urls) else 0

    def lane(self, index: int) -> Teacher:
        """This teacher with every call sent to slot ``index`` (see ``lanes``)."""
        if not 0 <= index < self.lanes:
            raise ValueError(f"lane {index} of {self.lanes}")
        return _Lane(self, index)

    async def chat(
        self, messages: Sequence[Message], params: SamplingParams, *, lane: int | None = None
    ) -> list[TeacherReply]:
        """``params.n`` replies; cached ones cost nothing, the rest are fetched and cached.
        ``lane``: the slot to send to (``lanes``), else the least busy one."""
        messages = tuple(messages)
        canon = [
            canonical_request(self._endpoint_id, self._model, messages, params, i)
            for i in range(params.n)
        ]
        keys = [cache_key(c) for c in canon]
        # One request in flight per key: a duplicate waits and then reads the cache.
        lock = self._key_locks.get(keys[0])
        if lock is None:
            lock = self._key_locks[keys[0]] = asyncio.Lock()
        async with lock:
            have = self._cache.get(keys)
            self.cache_hits += len(have)
            missing = [i for i in range(params.n) if keys[i] not in have]
            while missing:
                # Some servers (llama.cpp) answer n>1 with one choice: ask again for the rest,
                # seeded seed+index so the extra samples differ and reruns repeat them.
                got = await self._call(
                    messages, params, [(canon[i], keys[i]) for i in missing], missing[0], lane
                )
                for i, reply in zip(missing, got, strict=False):  # got may be short
                    have[keys[i]] = reply
                missing = missing[len(got) :]
        return [have[k] for k in keys]

    async def _call(
        self,
        messages: tuple[Message, ...],
        params: SamplingParams,
        slots: list[tuple[str, str]],
        first_index: int,
        lane: int | None = None,
    ) -> list[TeacherReply]:
        n = len(slots)
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": params.seed + first_index,
        }
        body.update(self._extra_body)
        if params.stop:
            body["stop"] = list(params.stop)
        if n > 1:
            body["n"] = n
        reservation = self.budget.reserve(messages, max_tokens=params.max_new_tokens, n=n)
        try:
            async with self._sem:
                url, data, latency = await self._post_with_retries(
                    body, lane, params.max_lines if n == 1 else None
                )
        except BaseException:
            self.budget.release(reservation)
            raise
        usage = data.get("usage") or {}
        tokens_in, tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        cost = self.budget.price.cost(tokens_in, tokens_out)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))[:n]
            texts = [(c["message"]["content"] or "", c.get("finish_reason")) for c in choices]
        except (KeyError, TypeError) as e:
            self.budget.settle(reservation, cost)
            raise TeacherError(f"teacher endpoint {url} sent a malformed reply (no {e})") from None
        if not texts:
            self.budget.settle(reservation, cost)
            raise TeacherError(f"teacher endpoint {url} sent a reply with no choices")
        k = len(texts)
        replies = [
            TeacherReply(
                text=text,
                model=data.get("model") or self._model,
                tokens_in=tokens_in,
                # Usage is per call; split the output tokens and the cost evenly over replies.
                tokens_out=tokens_out // k + (1 if j < tokens_out % k else 0),
                finish_reason="length" if finish == "length" else "stop",
                cost_usd=cost / k,
                latency_s=latency,
                cache_key=slots[j][1],
            )
            for j, (text, finish) in enumerate(texts)
        ]
        row = LedgerRow(
            time=time.time(), endpoint=self._endpoint_id, model=replies[0].model,
            tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost, latency_s=latency,
            cache_key=slots[0][1], n_replies=k,
        )  # fmt: skip
        try:
            self._cache.put([(slots[j][0], r) for j, r in enumerate(replies)], row)
        finally:
            self.budget.settle(reservation, cost)
        return replies

    def _pick(self) -> str:
        return min(self._urls, key=lambda u: self._busy[u])

    async def _post_with_retries(
        self, body: dict[str, Any], lane: int | None = None, max_lines: int | None = None
    ) -> tuple[str, dict[str, Any], float]:
        cfg = self._cfg
        for attempt in range(1, cfg.max_attempts + 1):
            url = self._pick() if lane is None else self._urls[lane]
            self._busy[url] += 1
            self.http_requests += 1
            t0 = time.monotonic()
            try:
                if max_lines:  # a streamed reply, closed once it holds max_lines lines
                    resp, data = await read_stream(self._http, url, body, max_lines)
                else:
                    resp, data = await self._http.post(f"{url}/chat/completions", json=body), None
                latency = time.monotonic() - t0
            except httpx.TransportError as e:
                failure, retry_after = transport_reason(e), None
            except ValueError as e:
                raise TeacherError(f"teacher endpoint {url} {e}") from None
            else:
                if resp.status_code == 200:
                    return url, data if data is not None else self._json(resp, url), latency
                self._raise_final(resp, url)
                failure = f"HTTP {resp.status_code}: {self._server_message(resp)}"
                retry_after = resp.headers.get("retry-after")
            finally:
                self._busy[url] -= 1
            if attempt == cfg.max_attempts:
                break
            delay = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (attempt - 1))
            delay = delay / 2 + random.uniform(0, delay / 2)  # jitter: retries do not march
            if retry_after and retry_after.replace(".", "", 1).isdigit():
                delay = min(cfg.backoff_max_s, max(delay, float(retry_after)))
            log.info("teacher %s: %s; retry %d in %.1fs", url, failure, attempt, delay)
            await asyncio.sleep(delay)
        where = url if len(self._urls) == 1 else f"{url} (1 of {len(self._urls)} slots)"
        hint = (self._diagnose(url) if self._diagnose else None) or (
            "is the server running? check teacher.base_url"
        )
        kind = TeacherError if failure.startswith("HTTP") else TeacherUnreachable
        verb = "failed" if failure.startswith("HTTP") else "unreachable"
        raise kind(
            f"teacher endpoint {where} {verb} ({failure}) after {cfg.max_attempts} tries; {hint}"
        )

    def _raise_final(self, resp: httpx.Response, url: str) -> None:
        """Raise for statuses that retrying cannot fix."""
        code = resp.status_code
        env = self._cfg.api_key_env
        if code in (401, 403):
            # The body is not quoted: providers echo part of the key in it.
            if not env:
                fix = "set teacher.api_key_env to the NAME of the variable holding your key"
            elif os.environ.get(env):
                fix = f"the key in ${env} was refused; set {env} to a valid key"
            else:
                fix = f"set the environment variable {env} to your API key"
            raise TeacherAuthError(
                f"teacher endpoint {url} rejected the request (HTTP {code}); {fix}"
            )
        if code not in _RETRY_STATUS:
            raise TeacherError(
                f"teacher endpoint {url} refused the request (HTTP {code}: "
                f"{self._server_message(resp)}); check teacher.model and the sampling settings"
            )

    def _server_message(self, resp: httpx.Response) -> str:
        try:
            err = resp.json().get("error", resp.text)
            text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        except ValueError:
            text = resp.text
        text = " ".join(text.split())[:200]
        return text.replace(self._redact, "***") if self._redact else text

    def _json(self, resp: httpx.Response, url: str) -> dict[str, Any]:
        try:
            data = resp.json()
        except ValueError:
            raise TeacherError(f"teacher endpoint {url} sent a reply that is not JSON") from None
        if not isinstance(data, dict):
            raise TeacherError(f"teacher endpoint {url} sent a reply that is not a JSON object")
        return data

    async def aclose(self) -> None:
        await self._http.aclose()


class _Lane(Teacher):
    """An ``OpenAITeacher`` whose calls all go to one of its slots (``OpenAITeacher.lane``)."""

    def __init__(self, teacher: OpenAITeacher, index: int) -> None:
        self._teacher, self._index = teacher, index

    @property
    def model_id(self) -> str:
        return self._teacher.model_id

    async def chat(self, messages: Sequence[Message], params: SamplingParams) -> list[TeacherReply]:
        return await self._teacher.chat(messages, params, lane=self._index)

    async def aclose(self) -> None:  # the teacher is closed by whoever opened it
        return None

    concurrency = 1  # one slot answers one request at a time
    lanes = 0  # already pinned

    def lane(self, index: int) -> Teacher:
        raise ValueError("a lane has no lanes of its own")


@asynccontextmanager
async def open_teacher(
    cfg: TeacherConfig,
    *,
    run_dir: Path,
    event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
) -> AsyncIterator[OpenAITeacher]:
    """The configured teacher, its cache in ``run_dir``; starts and stops a managed server."""
    async with AsyncExitStack() as stack:
        cache = TeacherCache(Path(run_dir) / cfg.cache_file)
        stack.callback(cache.close)
        if cfg.server is None:
            teacher = OpenAITeacher(cfg, cache=cache, event_hooks=event_hooks)
        else:
            from persd.llm.server import ManagedServers

            # Started here, on the caller's thread: see ManagedServers on parent-death signals.
            servers = stack.enter_context(
                ManagedServers(cfg.server, log_dir=Path(run_dir) / "logs")
            )
            teacher = OpenAITeacher(
                cfg,
                cache=cache,
                base_urls=servers.base_urls,
                endpoint_id=servers.endpoint_id,
                model=servers.model_name,
                managed=True,
                capacity=servers.capacity,
                extra_body=servers.extra_body,
                diagnose=servers.diagnose,
                event_hooks=event_hooks,
            )
        stack.push_async_callback(teacher.aclose)
        yield teacher
