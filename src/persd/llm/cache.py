"""The teacher's memory: every reply in SQLite, keyed by what was asked, plus the cost ledger.

A reply is committed before the caller sees it, so a crash, a kill or a budget stop loses
nothing already paid for, and a rerun asks only for what is missing. WAL journaling lets a
reader (a report, a second shell) look while a run writes; one lock serialises the writes of
all the client's concurrent tasks on one connection.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from persd.errors import PersdError
from persd.llm.base import Message, SamplingParams, TeacherReply

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,       -- sha256 of the canonical request + sample index
    created REAL NOT NULL,      -- unix time
    request TEXT NOT NULL,      -- the canonical JSON that was hashed (no credentials)
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL,     -- this reply's share of its call
    latency_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,         -- unix time the reply arrived
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_s REAL NOT NULL,
    cache_key TEXT NOT NULL,    -- the first reply this call produced
    n_replies INTEGER NOT NULL
);
"""


class CacheError(PersdError):
    """The cache file cannot be opened or written."""


def canonical_request(
    endpoint: str, model: str, messages: Sequence[Message], params: SamplingParams, index: int
) -> str:
    """The JSON that identifies one reply: same text, same key, across runs and machines."""
    body = {
        "endpoint": endpoint,
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "stop": list(params.stop),
        "seed": params.seed,
        "n": params.n,
        "index": index,
    }
    if params.max_lines is not None:  # absent otherwise: every earlier key stays valid
        body["max_lines"] = params.max_lines
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def cache_key(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class LedgerRow:
    time: float
    endpoint: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    latency_s: float
    cache_key: str
    n_replies: int


class TeacherCache:
    """Replies and ledger in one SQLite file. Safe for many asyncio tasks (or threads)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: the lock below, not the thread, guards the connection.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed reply survives a power cut too, not only a killed process;
            # one fsync per teacher call is nothing next to the call itself.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            raise CacheError(f"teacher cache {self.path}: cannot open ({e})") from None

    def get(self, keys: Sequence[str]) -> dict[str, TeacherReply]:
        """The cached replies among ``keys`` (marked ``cached=True``)."""
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        with self._lock:
            rows = self._db.execute(
                "SELECT key, model, text, finish_reason, tokens_in, tokens_out, cost_usd, "
                f"latency_s FROM replies WHERE key IN ({marks})",
                list(keys),
            ).fetchall()
        return {
            r[0]: TeacherReply(
                cache_key=r[0], model=r[1], text=r[2], finish_reason=r[3], tokens_in=r[4],
                tokens_out=r[5], cost_usd=r[6], latency_s=r[7], cached=True,
            )
            for r in rows
        }  # fmt: skip

    def put(self, replies: Sequence[tuple[str, TeacherReply]], call: LedgerRow) -> None:
        """Store one call's replies (``(canonical request, reply)``) and its ledger row at once."""
        now = time.time()
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO replies VALUES (?,?,?,?,?,?,?,?,?,?)",
                        [
                            (r.cache_key, now, canonical, r.model, r.text, r.finish_reason,
                             r.tokens_in, r.tokens_out, r.cost_usd, r.latency_s)
                            for canonical, r in replies
                        ],
                    )  # fmt: skip
                    self._db.execute(
                        "INSERT INTO ledger (time, endpoint, model, tokens_in, tokens_out, "
                        "cost_usd, latency_s, cache_key, n_replies) VALUES (?,?,?,?,?,?,?,?,?)",
                        (call.time, call.endpoint, call.model, call.tokens_in, call.tokens_out,
                         call.cost_usd, call.latency_s, call.cache_key, call.n_replies),
                    )  # fmt: skip
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as e:
            raise CacheError(f"teacher cache {self.path}: cannot write ({e})") from None

    def totals(self) -> tuple[int, float]:
        """(paid calls, dollars) recorded in the ledger so far."""
        with self._lock:
            calls, usd = self._db.execute("SELECT COUNT(*), TOTAL(cost_usd) FROM ledger").fetchone()
        return int(calls), float(usd)

    def ledger(self) -> list[LedgerRow]:
        """Every paid call, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT time, endpoint, model, tokens_in, tokens_out, cost_usd, latency_s, "
                "cache_key, n_replies FROM ledger ORDER BY id"
            ).fetchall()
        return [LedgerRow(*r) for r in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
