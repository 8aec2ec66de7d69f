"""A durable SQLite store of benchmark cells, so a long study can stop and resume.

One row per cell: (query_id, llm, mode, video, seed). A cell is written when it
starts (status ``running``) and again when it ends (``ok`` or ``failed``), each in
its own transaction, so an interrupted study loses at most the cell in flight.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    query_id TEXT NOT NULL,
    query_kind TEXT NOT NULL,
    query TEXT NOT NULL,
    llm TEXT NOT NULL,
    mode TEXT NOT NULL,
    video TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    run_dir TEXT,
    title TEXT,
    log2_comments REAL,
    expected_comments REAL,
    error TEXT,
    seconds REAL,
    updated TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (query_id, llm, mode, video, seed)
);
"""


@dataclass(frozen=True)
class CellKey:
    query_id: str
    llm: str
    mode: str
    video: str
    seed: int


class Store:
    """The study's cells in ``path`` (created with its schema when missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        with self._tx() as conn:
            conn.executescript(_SCHEMA)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._conn:  # commits, or rolls back on error
            yield self._conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def status(self, key: CellKey) -> str | None:
        row = self._conn.execute(
            "SELECT status FROM cells WHERE query_id=? AND llm=? AND mode=? AND video=? AND seed=?",
            (key.query_id, key.llm, key.mode, key.video, key.seed),
        ).fetchone()
        return row["status"] if row else None

    def start(self, key: CellKey, query_kind: str, query: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO cells (query_id, query_kind, query, llm, mode, video, seed, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'running')"
                " ON CONFLICT DO UPDATE SET status='running', error=NULL, updated=datetime('now')",
                (key.query_id, query_kind, query, key.llm, key.mode, key.video, key.seed),
            )

    def finish(
        self,
        key: CellKey,
        *,
        status: str,
        run_dir: str | None = None,
        title: str | None = None,
        log2_comments: float | None = None,
        expected_comments: float | None = None,
        error: str | None = None,
        seconds: float | None = None,
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE cells SET status=?, run_dir=?, title=?, log2_comments=?,"
                " expected_comments=?, error=?, seconds=?, updated=datetime('now')"
                " WHERE query_id=? AND llm=? AND mode=? AND video=? AND seed=?",
                (
                    status,
                    run_dir,
                    title,
                    log2_comments,
                    expected_comments,
                    error,
                    seconds,
                    key.query_id,
                    key.llm,
                    key.mode,
                    key.video,
                    key.seed,
                ),
            )

    def rows(self, status: str | None = None) -> list[dict]:
        sql = "SELECT * FROM cells"
        params: tuple = ()
        if status:
            sql += " WHERE status=?"
            params = (status,)
        sql += " ORDER BY query_id, llm, mode, video, seed"
        return [dict(r) for r in self._conn.execute(sql, params)]
