"""Persistent content-addressed response cache (SQLite).

One table, ``responses(key TEXT PRIMARY KEY, response TEXT, created_at REAL)``. The key is
:func:`depsim.client.request_key` (a sha256 hex string); the value is the OpenAI
``chat.completion`` response body as JSON, the same object that a Batch API output line
carries in ``response.body``, so batch results can be imported with :meth:`put_many` as is.

Only successful calls are stored (the engine never passes failures here). The first value
stored under a key wins: a stored response never changes under a rerun.

WAL mode plus a busy timeout make it safe to open the same file from several processes and
threads; every :meth:`ResponseCache.put_many` is one transaction, so a process killed
mid-write leaves either all of a batch's rows or none of them.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

#: keys per ``IN (...)`` query; below SQLite's historic 999-parameter limit
CHUNK = 900


class ResponseCache:
    """A SQLite-backed map from request key to response body (dict)."""

    def __init__(self, path: str | Path, *, timeout_s: float = 60.0):
        """Open (creating if needed) the cache at ``path``. ``timeout_s``: seconds to wait
        for another process's write lock before failing."""
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: complete() may run the event loop in a worker thread
        # (Jupyter); the lock below serialises use of the one connection.
        self._conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                     check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives process kills
            self._conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, "
                               "response TEXT NOT NULL, created_at REAL NOT NULL) WITHOUT ROWID")

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        """Return ``{key: response body}`` for the keys that are stored (missing keys are
        absent from the result). One query per chunk of 900 keys."""
        uniq = list(dict.fromkeys(keys))
        out: dict[str, dict] = {}
        with self._lock:
            for i in range(0, len(uniq), CHUNK):
                chunk = uniq[i:i + CHUNK]
                q = f"SELECT key, response FROM responses WHERE key IN ({','.join('?' * len(chunk))})"
                for k, v in self._conn.execute(q, chunk):
                    out[k] = json.loads(v)
        return out

    def get(self, key: str) -> dict | None:
        """Return the stored response body for ``key``, or None."""
        return self.get_many([key]).get(key)

    def put_many(self, rows: Iterable[tuple[str, dict]]) -> int:
        """Store ``(key, response body)`` rows in one transaction (all or nothing). Keys
        already stored keep their first value. Returns the number of rows given."""
        now = time.time()
        data = [(k, json.dumps(v, ensure_ascii=False, separators=(",", ":")), now) for k, v in rows]
        if not data:
            return 0
        with self._lock:
            # BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock
            # on a read->write upgrade; the busy timeout makes the second one wait.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO responses (key, response, created_at) VALUES (?, ?, ?)", data)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return len(data)

    def __len__(self) -> int:
        """Number of stored responses."""
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResponseCache({self.path!r})"
