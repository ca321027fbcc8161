"""The teacher client against a real llama.cpp server on 127.0.0.1 serving SmolLM2.

What a user would notice: a rerun makes no calls, a dead server is one clear line and loses
nothing, the budget stops before it is crossed, the API key is nowhere but the request.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from persd.llm.base import Message, SamplingParams
from persd.llm.budget import Budget, BudgetExceeded, Price, UnknownPrice, resolve_price
from persd.llm.cache import TeacherCache
from persd.llm.teacher import (
    OpenAITeacher,
    TeacherAuthError,
    TeacherUnreachable,
    open_teacher,
)
from persd.llm.teacher_config import ServerConfig, TeacherConfig


def need_llama_server() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama-cpp-python[server] (pip install 'persd[llama]')")


PARAMS = SamplingParams(max_new_tokens=16, temperature=0.0)
# Quick retries: a test of a dead endpoint should take a second, not a minute.
FAST = {"max_attempts": 2, "backoff_s": 0.05, "backoff_max_s": 0.1, "timeout_s": 30.0}


def ask(text: str) -> tuple[Message, ...]:
    return (Message(role="user", content=text),)


PROMPTS = [ask(f"Write the number {i} in words.") for i in range(3)]


class Counter:
    """Counts requests as the client sends them (an httpx event hook on the real client)."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.authorized = 0

    async def __call__(self, request: httpx.Request) -> None:
        self.urls.append(str(request.url))
        self.authorized += "authorization" in request.headers

    @property
    def hooks(self) -> dict:
        return {"request": [self]}


@pytest.fixture(scope="module")
def server_cfg(smollm2_gguf: Path) -> ServerConfig:
    need_llama_server()
    return ServerConfig(model=str(smollm2_gguf), n_ctx=512, startup_timeout_s=60)


def run(coro):
    return asyncio.run(coro)


async def ask_all(teacher: OpenAITeacher, prompts, params=PARAMS):
    return [await teacher.chat(p, params) for p in prompts]


# --- against the managed server ------------------------------------------------------------


def test_rerun_makes_no_http_calls(
    server_cfg: ServerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-local-servers")
    cfg = TeacherConfig(server=server_cfg, **FAST)
    first, second = Counter(), Counter()

    async def go(counter: Counter):
        async with open_teacher(cfg, run_dir=tmp_path, event_hooks=counter.hooks) as teacher:
            return await asyncio.gather(*(teacher.chat(p, PARAMS) for p in PROMPTS))

    replies1, replies2 = run(go(first)), run(go(second))
    assert len(first.urls) == 3 and second.urls == []
    assert first.authorized == 0  # persd's own server is never sent the user's API key
    assert [r[0].text for r in replies1] == [r[0].text for r in replies2]
    assert not any(r[0].cached for r in replies1) and all(r[0].cached for r in replies2)
    assert all(r[0].text and r[0].tokens_out > 0 for r in replies1)
    ledger = TeacherCache(tmp_path / cfg.cache_file).ledger()
    assert len(ledger) == 3 and {row.cost_usd for row in ledger} == {0.0}


def test_n_samples_from_a_server_that_answers_one(server_cfg: ServerConfig, tmp_path: Path) -> None:
    """llama.cpp returns one choice for n=3: the client asks again, with other seeds."""
    cfg = TeacherConfig(server=server_cfg, **FAST)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=16, seed=7)
    counter = Counter()

    async def go():
        async with open_teacher(cfg, run_dir=tmp_path, event_hooks=counter.hooks) as teacher:
            return await teacher.chat(PROMPTS[0], params), await teacher.chat(PROMPTS[0], params)

    fresh, again = run(go())
    assert len(fresh) == 3 and len({r.cache_key for r in fresh}) == 3
    assert len(counter.urls) == 3  # one per sample, none for the repeat
    assert [r.text for r in again] == [r.text for r in fresh]


def test_a_reply_closed_at_max_lines_is_the_whole_replys_first_lines(
    server_cfg: ServerConfig, tmp_path: Path
) -> None:
    """``max_lines``: the reply is streamed and closed once it holds that many lines. Greedy,
    the lines are the ones the whole reply starts with, fewer tokens are generated, and the
    cut reply is cached under its own key."""
    cfg = TeacherConfig(server=server_cfg, **FAST)
    prompt = ask("Count from 1 to 30, one number per line.")
    whole_params = SamplingParams(max_new_tokens=120, temperature=0.0)
    cut_params = whole_params.model_copy(update={"max_lines": 3})

    async def go():
        async with open_teacher(cfg, run_dir=tmp_path) as teacher:
            whole = (await teacher.chat(prompt, whole_params))[0]
            cut = (await teacher.chat(prompt, cut_params))[0]
            return whole, cut, (await teacher.chat(prompt, cut_params))[0]

    whole, cut, again = run(go())
    assert whole.text.count("\n") > 3, whole.text  # the model does list past three lines
    assert cut.text.count("\n") == 3 and cut.text.endswith("\n")
    assert whole.text.startswith(cut.text)
    assert 0 < cut.tokens_out < whole.tokens_out
    assert again.cached and again.text == cut.text and cut.cache_key != whole.cache_key


def test_budget_stops_before_it_is_crossed(server_cfg: ServerConfig, tmp_path: Path) -> None:
    # A fake price for the local model, so the cap binds: $1000 per 1M tokens each way.
    price = {"price_per_mtok_in": 1000.0, "price_per_mtok_out": 1000.0}
    many = [ask(f"Say {i}.") for i in range(6)]  # same length: same worst case each
    probe = Budget(Price(1000.0, 1000.0), budget_usd=None, max_calls=None)
    worst = probe.reserve(many[0], max_tokens=PARAMS.max_new_tokens, n=1).usd
    cfg = TeacherConfig(server=server_cfg, budget_usd=2.5 * worst, concurrency=4, **price, **FAST)
    counter = Counter()

    async def go():
        async with open_teacher(cfg, run_dir=tmp_path, event_hooks=counter.hooks) as teacher:
            return await asyncio.gather(
                *(teacher.chat(p, PARAMS) for p in many), return_exceptions=True
            )

    results = run(go())
    stopped = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(stopped) == 4 and len(counter.urls) == 2
    assert "teacher budget reached" in str(stopped[0]) and "budget_usd" in str(stopped[0])
    cache = TeacherCache(tmp_path / cfg.cache_file)
    calls, spent = cache.totals()
    assert calls == 2 and 0 < spent <= cfg.budget_usd and len(cache) == 2


def test_killed_server_is_one_line_and_loses_nothing(
    server_cfg: ServerConfig, tmp_path: Path
) -> None:
    from persd.llm.server import ManagedServers

    cfg = TeacherConfig(server=server_cfg, **FAST)

    async def go(servers: ManagedServers, prompts, counter: Counter):
        teacher = OpenAITeacher(
            cfg,
            cache=TeacherCache(tmp_path / "teacher.sqlite"),
            base_urls=servers.base_urls,
            endpoint_id=servers.endpoint_id,
            managed=True,
            diagnose=servers.diagnose,
            event_hooks=counter.hooks,
        )
        try:
            return await ask_all(teacher, prompts)
        finally:
            await teacher.aclose()

    with ManagedServers(server_cfg, log_dir=tmp_path) as servers:
        run(go(servers, PROMPTS[:2], Counter()))
        os.kill(servers.pids[0], signal.SIGKILL)
        servers._slots[0].proc.wait()
        with pytest.raises(TeacherUnreachable) as e:
            run(go(servers, PROMPTS, Counter()))
    msg = str(e.value)
    assert "\n" not in msg
    assert f"teacher endpoint {servers_url(msg)} unreachable (connection refused)" in msg
    assert "after 2 tries" in msg and "killed by SIGKILL" in msg
    assert len(TeacherCache(tmp_path / "teacher.sqlite")) == 2

    counter = Counter()
    with ManagedServers(server_cfg, log_dir=tmp_path) as servers:
        replies = run(go(servers, PROMPTS, counter))
    assert len(counter.urls) == 1  # only the prompt that never got an answer
    assert [r[0].cached for r in replies] == [True, True, False]


def servers_url(msg: str) -> str:
    return msg.split("teacher endpoint ", 1)[1].split(" ", 1)[0]


# --- the API key ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A llama.cpp server that demands ``Authorization: Bearer <key>``."""
    need_llama_server()
    port, log = free_port(), tmp_path_factory.mktemp("keyed") / "server.log"
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf)]
    args += ["--port", str(port), "--n_threads", "1", "--n_ctx", "512"]
    args += ["--api_key", "sk-test-SECRET-4242"]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc, headers={"Authorization": "Bearer sk-test-SECRET-4242"})
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/models", headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"test server at {url} did not start")


def test_api_key_is_sent_but_never_kept(
    keyed_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-test-SECRET-4242"
    monkeypatch.setenv("PERSD_TEST_KEY", secret)
    cfg = TeacherConfig(
        base_url=keyed_server, model="smollm2", api_key_env="PERSD_TEST_KEY", **FAST
    )
    caplog.set_level(logging.DEBUG)

    async def go(prompt: tuple[Message, ...] = PROMPTS[0]):
        async with open_teacher(cfg, run_dir=tmp_path) as teacher:
            return repr(teacher), await teacher.chat(prompt, PARAMS)

    shown, replies = run(go())
    assert replies[0].text
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in stored and secret not in shown and secret not in caplog.text
    dump = "\n".join(sqlite3.connect(tmp_path / "teacher.sqlite").iterdump())
    assert secret not in dump and "PERSD_TEST_KEY" not in dump

    monkeypatch.setenv("PERSD_TEST_KEY", "sk-wrong-key-777")
    assert run(go())[1] == [r.model_copy(update={"cached": True}) for r in replies]  # no call
    with pytest.raises(TeacherAuthError) as wrong:
        run(go(PROMPTS[1]))
    assert "PERSD_TEST_KEY" in str(wrong.value) and "sk-wrong" not in str(wrong.value)
    monkeypatch.delenv("PERSD_TEST_KEY")
    with pytest.raises(TeacherAuthError, match="set the environment variable PERSD_TEST_KEY"):
        run(go(PROMPTS[1]))


# --- without a server -----------------------------------------------------------------------


def test_unreachable_endpoint_is_one_clear_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    cfg = TeacherConfig(base_url=url, model="local", api_key_env=None, **FAST)

    async def go():
        async with open_teacher(cfg, run_dir=tmp_path) as teacher:
            await teacher.chat(PROMPTS[0], PARAMS)

    with pytest.raises(TeacherUnreachable) as e:
        run(go())
    assert str(e.value) == (
        f"teacher endpoint {url} unreachable (connection refused) after 2 tries; "
        "is the server running? check teacher.base_url"
    )
    assert TeacherCache(tmp_path / "teacher.sqlite").totals() == (0, 0.0)


def test_budget_reservations_count_calls_in_flight() -> None:
    budget = Budget(Price(1.0, 1.0), budget_usd=None, max_calls=2)
    first = budget.reserve(PROMPTS[0], max_tokens=10, n=1)
    budget.reserve(PROMPTS[0], max_tokens=10, n=1)
    with pytest.raises(BudgetExceeded, match="max_calls=2"):
        budget.reserve(PROMPTS[0], max_tokens=10, n=1)
    budget.release(first)  # a failed call frees its place
    budget.reserve(PROMPTS[0], max_tokens=10, n=1)


def test_worst_case_reservation_bounds_the_real_cost() -> None:
    price = Price(per_mtok_in=2.0, per_mtok_out=8.0)
    budget = Budget(price, budget_usd=1.0, max_calls=None)
    held = budget.reserve(PROMPTS[0], max_tokens=100, n=2)
    n_bytes = len(PROMPTS[0][0].content.encode())
    assert held.usd >= price.cost(n_bytes, 200)
    budget.settle(held, 0.25)
    assert budget.spent_usd == 0.25 and budget.calls == 1
    assert price.estimate(1000, 1500, 500) == pytest.approx(1000 * (1500 * 2 + 500 * 8) / 1e6)


def test_prices_from_table_override_and_unknown(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_price(TeacherConfig(model="gpt-4o-mini-2024-07-18")) == Price(0.15, 0.60)
    assert resolve_price(TeacherConfig(model="gpt-4o")) == Price(2.50, 10.00)
    over = TeacherConfig(model="x", price_per_mtok_in=1, price_per_mtok_out=2)
    assert resolve_price(over) == Price(1.0, 2.0)
    assert resolve_price(TeacherConfig(model="gpt-4o"), local=True) == Price(0.0, 0.0)
    with caplog.at_level(logging.WARNING):
        assert resolve_price(TeacherConfig(model="mystery-7b")) == Price(0.0, 0.0)
    assert "mystery-7b" in caplog.text
    with pytest.raises(UnknownPrice, match="price_per_mtok_in"):
        resolve_price(TeacherConfig(model="mystery-7b", budget_usd=5))
