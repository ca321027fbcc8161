"""The managed llama.cpp server: starts, answers, spreads work over slots, never outlives persd."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from persd.llm.base import Message, SamplingParams
from persd.llm.server import ManagedServers, ServerError
from persd.llm.teacher import open_teacher
from persd.llm.teacher_config import ServerConfig, TeacherConfig

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="needs llama-cpp-python[server] (pip install 'persd[llama]')",
)


@pytest.fixture(scope="module")
def server_cfg(smollm2_gguf: Path) -> ServerConfig:
    return ServerConfig(model=str(smollm2_gguf), n_ctx=512, startup_timeout_s=60)


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_server_answers_then_stops(server_cfg: ServerConfig, tmp_path: Path) -> None:
    with ManagedServers(server_cfg, log_dir=tmp_path) as servers:
        (url,) = servers.base_urls
        models = httpx.get(f"{url}/models").json()
        pids = servers.pids
    assert models["data"][0]["id"] == servers.model_name
    assert url.startswith("http://127.0.0.1:")
    assert gone_within(pids, 5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models")
    assert "persd: starting slot 0" in (tmp_path / "llama-server-0.log").read_text()


def test_a_streamed_reply_is_not_cut_short_by_another_request(
    server_cfg: ServerConfig, tmp_path: Path
) -> None:
    """llama-cpp-python's server, left to its default, ends a streaming reply early when
    another request arrives; persd's slots run with that off, so a reply read with
    ``max_lines`` is whole up to its lines however many requests queue behind it."""
    from persd.llm.teacher_http import read_stream

    body = {
        "messages": [{"role": "user", "content": "Count from 1 to 30, one number per line."}],
        "max_tokens": 120,
        "temperature": 0.0,
    }

    async def both(url: str):
        async with httpx.AsyncClient(timeout=60) as http:
            streamed = asyncio.create_task(read_stream(http, url, body, 6))
            await asyncio.sleep(0.3)  # the stream has started when the second request comes
            other = await http.post(f"{url}/chat/completions", json=body)
            return await streamed, other

    with ManagedServers(server_cfg, log_dir=tmp_path) as servers:
        (url,) = servers.base_urls
        (_, data), other = asyncio.run(both(url))
    assert other.status_code == 200
    assert data["choices"][0]["message"]["content"].count("\n") == 6


def test_broken_model_fails_with_the_log_tail(server_cfg: ServerConfig, tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ServerError) as e:
        ManagedServers(server_cfg, log_dir=tmp_path, model_path=bad).start()
    msg = str(e.value)
    assert "\n" not in msg and "broken.gguf exited (exit code" in msg
    assert str(tmp_path / "llama-server-0.log") in msg


def test_two_slots_share_concurrent_requests(server_cfg: ServerConfig, tmp_path: Path) -> None:
    """Least busy routing: the first two requests go to different slots, and no slot ever
    holds two at once. (Which slot the third and fourth take depends on which reply came
    first, so the split is not fixed.)"""
    cfg = TeacherConfig(server=server_cfg.model_copy(update={"slots": 2}))
    used: list[str] = []
    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}

    async def sent(request: httpx.Request) -> None:
        url = f"{request.url.host}:{request.url.port}"
        used.append(url)
        in_flight[url] = in_flight.get(url, 0) + 1
        most[url] = max(most.get(url, 0), in_flight[url])

    async def answered(response: httpx.Response) -> None:
        in_flight[f"{response.request.url.host}:{response.request.url.port}"] -= 1

    async def go() -> list[list]:
        hooks = {"request": [sent], "response": [answered]}
        async with open_teacher(cfg, run_dir=tmp_path, event_hooks=hooks) as teacher:
            params = SamplingParams(max_new_tokens=8)
            prompts = [(Message(role="user", content=f"Count to {i}."),) for i in range(4)]
            return await asyncio.gather(*(teacher.chat(p, params) for p in prompts))

    replies = asyncio.run(go())
    assert len(replies) == 4 and len(used) == 4
    assert used[0] != used[1] and set(most) == set(used[:2])
    assert max(most.values()) == 1


_PARENT = """
import sys, threading, time
from pathlib import Path
from persd.llm.server import ManagedServers
from persd.llm.teacher_config import ServerConfig

cfg = ServerConfig(model=sys.argv[1], n_ctx=512, startup_timeout_s=60,
                   parallel=int(sys.argv[4]))
how = sys.argv[3]
def start():
    servers = ManagedServers(cfg, log_dir=Path(sys.argv[2])).start()
    print(" ".join(map(str, servers.pids)), flush=True)
if how == "thread":  # no PDEATHSIG off the main thread: only the slot's watcher can help
    threading.Thread(target=start).start()
else:
    start()
if how == "exit":  # forgets to stop: the atexit hook must
    sys.exit(0)
time.sleep(120)
"""


@pytest.mark.parametrize(
    ("how", "parallel"), [("main", 1), ("thread", 1), ("exit", 1), ("thread", 2)]
)
def test_no_server_outlives_persd(
    smollm2_gguf: Path, tmp_path: Path, how: str, parallel: int
) -> None:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(_PARENT))
    parent = subprocess.Popen(
        [sys.executable, str(script), str(smollm2_gguf), str(tmp_path), how, str(parallel)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert pids and all(alive(p) for p in pids)
    if how != "exit":
        parent.kill()  # SIGKILL: no atexit, no finally, no context manager
    parent.wait(30)
    try:
        assert gone_within(pids, 5), f"server {pids} outlived persd ({how})"
    finally:
        for pid in pids:
            if alive(pid):
                subprocess.run(["kill", "-9", str(pid)], check=False)


# -- persd's batch server (teacher.server.parallel > 1) ------------------------------------


def test_batch_server_takes_all_requests_at_once_and_answers_as_one_stream_would(
    server_cfg: ServerConfig, smollm2_gguf: Path, tmp_path: Path
) -> None:
    from persd.llm.student_llama import LlamaStudent

    cfg = TeacherConfig(server=server_cfg.model_copy(update={"parallel": 4}))
    events: list[tuple[str, str]] = []

    async def sent(request: httpx.Request) -> None:
        events.append(("sent", f"{request.url.host}:{request.url.port}"))

    async def answered(response: httpx.Response) -> None:
        events.append(("answered", ""))

    prompts = [(Message(role="user", content=f"Count to {i}."),) for i in range(4)]
    params = SamplingParams(max_new_tokens=12)

    async def go() -> list[list]:
        hooks = {"request": [sent], "response": [answered]}
        async with open_teacher(cfg, run_dir=tmp_path, event_hooks=hooks) as teacher:
            return await asyncio.gather(*(teacher.chat(p, params) for p in prompts))

    replies = asyncio.run(go())
    # One slot, four requests in flight together: all four sent before the first answer.
    assert [e for e, _ in events[:4]] == ["sent"] * 4 and len({u for _, u in events[:4]}) == 1
    assert "persd batch server" in (tmp_path / "logs" / "llama-server-0.log").read_text()
    alone = LlamaStudent(smollm2_gguf, n_ctx=512, parallel=1, threads=1)
    try:
        expected = [g[0] for g in alone.generate(prompts, params)]
    finally:
        alone.close()
    assert [r[0].text for r in replies] == [g.text for g in expected]
    assert [r[0].tokens_out for r in replies] == [g.tokens_out for g in expected]
    assert [r[0].tokens_in for r in replies] == [g.tokens_in for g in expected]


def test_batch_server_samples_n_seeded_and_refuses_bad_requests(
    server_cfg: ServerConfig, tmp_path: Path
) -> None:
    cfg = server_cfg.model_copy(update={"parallel": 2, "n_ctx": 256})
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "Name a fruit."}],
        "temperature": 1.0,
        "top_p": 0.95,
        "max_tokens": 10,
        "seed": 7,
        "n": 3,
    }
    with ManagedServers(cfg, log_dir=tmp_path) as servers:
        (url,) = servers.base_urls
        assert servers.capacity == 2
        first = httpx.post(f"{url}/chat/completions", json=body, timeout=120).json()
        again = httpx.post(f"{url}/chat/completions", json=body, timeout=120).json()
        other = httpx.post(f"{url}/chat/completions", json={**body, "seed": 8}, timeout=120)
        long = {**body, "messages": [{"role": "user", "content": "word " * 400}]}
        too_long = httpx.post(f"{url}/chat/completions", json=long, timeout=60)
        broken = httpx.post(f"{url}/chat/completions", content=b"{not json", timeout=60)
        empty = httpx.post(f"{url}/chat/completions", json={"messages": []}, timeout=60)
    texts = [c["message"]["content"] for c in first["choices"]]
    assert len(texts) == 3 and [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert texts == [c["message"]["content"] for c in again["choices"]]  # seeds reproduce
    assert len(set(texts + [c["message"]["content"] for c in other.json()["choices"]])) > 1
    assert first["usage"]["completion_tokens"] <= 30 and first["usage"]["prompt_tokens"] > 0
    assert too_long.status_code == 400 and "does not fit the context" in too_long.text
    assert broken.status_code == 400 and empty.status_code == 400
    assert "non-empty list" in empty.json()["error"]["message"]


def test_the_server_samples_only_what_the_request_says(
    server_cfg: ServerConfig, smollm2_gguf: Path, tmp_path: Path
) -> None:
    """llama-cpp-python's server applies a repeat penalty of 1.1 (and top-k 40, min-p 0.05)
    unless told otherwise; persd tells it, so the managed teacher's greedy reply is the
    model's greedy reply (here: the same text as the in-process decoder's), while the legacy
    setting, which keeps the old cache keys, reproduces the penalised reply."""
    from persd.llm.student_llama import LlamaStudent

    prompts = [
        (Message(role="user", content="Write a Python class for a stack with push and pop."),)
    ]
    params = SamplingParams(max_new_tokens=64)

    def ask(legacy: bool) -> tuple[str, str]:
        cfg = TeacherConfig(server=server_cfg.model_copy(update={"legacy_sampling": legacy}))

        async def go() -> tuple[str, str]:
            async with open_teacher(cfg, run_dir=tmp_path / str(legacy)) as teacher:
                (reply,) = await teacher.chat(prompts[0], params)
                return reply.text, teacher._endpoint_id

        return asyncio.run(go())

    (plain, plain_id), (legacy, legacy_id) = ask(False), ask(True)
    alone = LlamaStudent(smollm2_gguf, n_ctx=512, parallel=1, threads=1)
    try:
        greedy = alone.generate(prompts, params)[0][0].text
    finally:
        alone.close()
    assert plain == greedy
    assert legacy != greedy  # the penalty changed the greedy reply
    assert plain_id == legacy_id + ":plain"  # and the two are cached apart


def test_lookup_starts_the_batch_server_even_for_one_sequence(
    server_cfg: ServerConfig, tmp_path: Path
) -> None:
    cfg = server_cfg.model_copy(update={"lookup": 4, "n_ctx": 512})
    assert cfg.batched and not server_cfg.batched
    body = {"model": "x", "messages": [{"role": "user", "content": "Repeat: a b c d e f g"}],
            "temperature": 0.0, "max_tokens": 16}  # fmt: skip
    with ManagedServers(cfg, log_dir=tmp_path) as servers:
        (url,) = servers.base_urls
        reply = httpx.post(f"{url}/chat/completions", json=body, timeout=120).json()
    assert reply["choices"][0]["message"]["content"]
    assert "lookup 4" in (tmp_path / "llama-server-0.log").read_text()
    for conflict in ({"legacy_sampling": True}, {"chat_format": "chatml"}):
        with pytest.raises(ValueError, match="lookup: 0"):
            ServerConfig(model=cfg.model, lookup=4, **conflict)
