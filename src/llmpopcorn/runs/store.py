"""The run store: one SQLite file for every unit of work (study cells now; batch items and
web runs can use the same table later).

Design (after simonw/llm's logs database and DESIGN §4.14):

* **WAL** journal, a busy timeout, and **short transactions**: one statement (or one
  ``BEGIN IMMEDIATE`` block) per state change, so an interrupted process loses at most
  the item in flight.
* **Schema version with ordered migrations** (``PRAGMA user_version``); a store written
  by an older version is upgraded in place, a newer one is refused.
* **Idempotency keys**: an item's key is a hash of its inputs *and* of every setting that
  changes its result (:func:`digest`), so a rerun with other settings makes new items.
* **Atomic claims with a lease**: :meth:`Store.claim` is one UPSERT that succeeds only if
  the item is new, failed (when retrying) or held by an expired lease. A second process
  skips items under a live lease, and takes over a lease that expired or whose owner
  process on this host is gone. A finished (``ok``) item is never reset, and
  :meth:`Store.finish` only writes while the caller still owns the claim.
* **Corruption is detected at open** (header, ``PRAGMA quick_check``): the error names the
  file and how to recover, and the file is never written to or replaced.

Using it: an item has a ``kind`` (``study-cell`` today; a batch item or a web run later),
a ``group`` (the study, batch or session it belongs to), the hash of its settings (the
settings themselves are kept once in the ``settings`` table), ``labels`` (its inputs, JSON)
and, once finished, a ``result`` (JSON), ``run_dir``, ``error`` and ``seconds``. A worker
calls :meth:`Store.claim`, runs the item inside :meth:`Store.keep_alive`, then
:meth:`Store.finish`; new columns or tables come as a new migration appended to
:data:`MIGRATIONS`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmpopcorn.core.errors import PopcornError

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
#: seconds a claim stays valid without a renewal
DEFAULT_LEASE_S = 600.0


class StoreError(PopcornError):
    """The store cannot be opened or written (corrupt file, full disk, newer schema)."""


def digest(data: Any, length: int = 16) -> str:
    """A stable hex hash of JSON-able ``data`` (sorted keys, no whitespace)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def new_owner() -> str:
    """An owner id for claims: host, process id and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` is a process on this host that no longer exists."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine: only its lease can tell
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# -- migrations: append only, never edit one that has shipped -------------------------


def _m001_cells(conn: sqlite3.Connection) -> None:
    """The first study table (resume key: query, LLM, mode, video, seed)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS cells (query_id TEXT NOT NULL, query_kind TEXT NOT NULL,"
        " query TEXT NOT NULL, llm TEXT NOT NULL, mode TEXT NOT NULL, video TEXT NOT NULL,"
        " seed INTEGER NOT NULL, status TEXT NOT NULL, run_dir TEXT, title TEXT,"
        " log2_comments REAL, expected_comments REAL, error TEXT, seconds REAL,"
        " updated TEXT NOT NULL DEFAULT (datetime('now')),"
        " PRIMARY KEY (query_id, llm, mode, video, seed))"
    )


def _m002_items(conn: sqlite3.Connection) -> None:
    """Generic items keyed by inputs + settings hash, with claims; the v1 cells (keyed
    without their settings) are kept aside as ``legacy_cells_v1`` and never reused."""
    conn.execute(
        "CREATE TABLE items ("
        " key TEXT PRIMARY KEY,"
        " kind TEXT NOT NULL,"
        " grp TEXT NOT NULL,"
        " settings_hash TEXT NOT NULL,"
        " status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'ok', 'failed')),"
        " owner TEXT,"
        " lease_until REAL,"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " labels TEXT NOT NULL DEFAULT '{}',"
        " result TEXT,"
        " error TEXT,"
        " run_dir TEXT,"
        " seconds REAL,"
        " created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),"
        " updated TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),"
        " finished TEXT)"
    )
    conn.execute("CREATE INDEX items_kind_grp ON items (kind, grp, status)")
    conn.execute(
        "CREATE TABLE settings (hash TEXT PRIMARY KEY, settings TEXT NOT NULL,"
        " created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))"
    )
    old = conn.execute("SELECT count(*) FROM cells").fetchone()[0]
    if old:
        conn.execute("ALTER TABLE cells RENAME TO legacy_cells_v1")
    else:
        conn.execute("DROP TABLE cells")


def _m003_feedback(conn: sqlite3.Connection) -> None:
    """What posted videos really got (``popcorn feedback``), one row per run, with the
    judge's prediction copied from the run's record so a calibration needs no folder."""
    conn.execute(
        "CREATE TABLE feedback ("
        " run_id TEXT PRIMARY KEY,"
        " comments INTEGER NOT NULL CHECK (comments >= 0),"
        " likes INTEGER CHECK (likes >= 0),"
        " views INTEGER CHECK (views >= 0),"
        " posted TEXT,"
        " predictor TEXT,"
        " predicted_log2 REAL,"
        " interval_low REAL,"
        " interval_high REAL,"
        " category TEXT,"
        " title TEXT,"
        " query TEXT,"
        " run_dir TEXT,"
        " created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),"
        " updated TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))"
    )
    conn.execute("CREATE INDEX feedback_predictor ON feedback (predictor)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _m001_cells,
    _m002_items,
    _m003_feedback,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`Store.claim`: ``claimed`` (the caller now owns the item),
    ``done`` (finished before), ``busy`` (another live process holds it) or ``failed``
    (failed before and not retried)."""

    outcome: str
    key: str

    @property
    def claimed(self) -> bool:
        return self.outcome == "claimed"


_NOW_ISO = "strftime('%Y-%m-%dT%H:%M:%SZ', 'now')"


class Store:
    """The store in ``path``, created with its schema when missing."""

    def __init__(
        self,
        path: str | Path,
        *,
        owner: str | None = None,
        timeout: float = 30.0,
        sync_every_commit: bool = True,
    ):
        """``sync_every_commit=False``: WAL with ``synchronous=NORMAL`` (no fsync per
        commit: a killed process loses nothing, a power cut may lose the last commits,
        which a resume redoes); for drivers that commit hundreds of items a second."""
        self.path = Path(path)
        self.owner = owner or new_owner()
        self._timeout = timeout
        _check_file(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise _corrupt(self.path, str(exc)) from None
            raise StoreError(  # busy, not corrupt: never tell the user to move it aside
                f"{self.path} stayed locked by another process for {timeout:.0f} s",
                "wait for the other popcorn process to finish (or stop it) and rerun; "
                "nothing was changed",
            ) from None
        except sqlite3.DatabaseError as exc:
            raise _corrupt(self.path, str(exc)) from None
        if check != "ok":
            self._conn.close()
            raise _corrupt(self.path, check)
        self._open_wal(sync_every_commit)
        self._migrate()

    def _open_wal(self, sync_every_commit: bool) -> None:
        """Switch to WAL. SQLite answers "database is locked" at once, without waiting
        for the busy timeout, when another process is creating or switching the same
        file (two studies started together): retry with backoff until the timeout."""
        deadline = time.monotonic() + self._timeout
        delay = 0.01
        while True:
            try:
                with self._write("open"):
                    self._conn.execute("PRAGMA journal_mode=WAL")
                    if not sync_every_commit:
                        self._conn.execute("PRAGMA synchronous=NORMAL")
                return
            except StoreError as exc:
                if "locked" not in exc.message or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(2 * delay, 0.5)

    # -- plumbing ------------------------------------------------------------------

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One short write; a full disk or a locked/corrupt file becomes a StoreError."""
        try:
            yield self._conn
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "full" in text:
                raise StoreError(
                    f"the disk holding {self.path} is full ({what}: {text})",
                    "free some space and rerun the same command: finished items are kept, "
                    "and the item in flight is taken over when its lease ends",
                ) from None
            if "locked" in text or "busy" in text:  # busy, not damaged
                raise StoreError(
                    f"{self.path} stayed locked by another process ({what}: {text})",
                    "wait for the other popcorn process to finish (or stop it) and rerun; "
                    "nothing was changed",
                ) from None
            raise StoreError(f"cannot write {self.path} ({what}: {text})", _RECOVER) from None
        except sqlite3.DatabaseError as exc:
            raise _corrupt(self.path, str(exc)) from None

    @contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: takes the write lock before reading."""
        with self._write(what) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx("migrate") as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}; this llmpopcorn knows up to "
                    f"{SCHEMA_VERSION}",
                    "upgrade llmpopcorn, or use another output folder",
                )
            for number in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[number - 1](conn)
                conn.execute(f"PRAGMA user_version={number}")

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- settings ------------------------------------------------------------------

    def put_settings(self, settings: dict[str, Any]) -> str:
        """Remember a settings dict under its hash (idempotent); return the hash."""
        key = digest(settings)
        with self._write("save settings") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO settings (hash, settings) VALUES (?, ?)",
                (key, json.dumps(settings, sort_keys=True, default=str)),
            )
        return key

    def get_settings(self, key: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT settings FROM settings WHERE hash=?", (key,)).fetchone()
        return json.loads(row["settings"]) if row else None

    # -- claims --------------------------------------------------------------------

    def claim(
        self,
        key: str,
        *,
        kind: str,
        group: str,
        settings_hash: str,
        labels: dict[str, Any] | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        retry_failed: bool = True,
    ) -> Claim:
        """Claim ``key`` for this store's owner, atomically (see the module docstring)."""
        now = time.time()
        retry = "" if retry_failed else " AND items.status != 'failed'"
        with self._write("claim") as conn:
            cur = conn.execute(
                "INSERT INTO items (key, kind, grp, settings_hash, status, owner, lease_until,"
                " attempts, labels) VALUES (?, ?, ?, ?, 'running', ?, ?, 1, ?)"
                " ON CONFLICT (key) DO UPDATE SET status='running', owner=excluded.owner,"
                " lease_until=excluded.lease_until, attempts=items.attempts + 1, error=NULL,"
                f" updated={_NOW_ISO}"
                " WHERE items.status IN ('pending', 'failed', 'running')"
                " AND NOT (items.status = 'running' AND items.lease_until > ?)" + retry,
                (
                    key,
                    kind,
                    group,
                    settings_hash,
                    self.owner,
                    now + lease_s,
                    json.dumps(labels or {}, sort_keys=True, default=str),
                    now,
                ),
            )
            if cur.rowcount == 1:
                return Claim("claimed", key)
        row = self._conn.execute("SELECT status, owner FROM items WHERE key=?", (key,)).fetchone()
        if row["status"] == "ok":
            return Claim("done", key)
        if row["status"] == "failed":
            return Claim("failed", key)
        if row["status"] == "running" and _owner_is_dead(row["owner"]):
            # its process on this host is gone (kill -9, a crash): no need to wait out the
            # lease; compare-and-swap on the old owner so only one taker wins
            with self._write("take over") as conn:
                cur = conn.execute(
                    "UPDATE items SET owner=?, lease_until=?, attempts=attempts + 1,"
                    f" updated={_NOW_ISO} WHERE key=? AND status='running' AND owner IS ?",
                    (self.owner, now + lease_s, key, row["owner"]),
                )
            if cur.rowcount == 1:
                return Claim("claimed", key)
        return Claim("busy", key)

    def renew(self, key: str, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend this owner's lease on a running item; False if it is no longer ours."""
        with self._write("renew lease") as conn:
            cur = conn.execute(
                "UPDATE items SET lease_until=? WHERE key=? AND owner=? AND status='running'",
                (time.time() + lease_s, key, self.owner),
            )
        return cur.rowcount == 1

    def release(self, key: str, note: str | None = None) -> bool:
        """Give a running item of this owner back (status ``pending``, no owner): it was
        not finished and is neither done nor failed (an interrupt, a paused batch). The
        next claim takes it at once. ``note`` says why (kept in ``error``)."""
        with self._write("release") as conn:
            cur = conn.execute(
                "UPDATE items SET status='pending', owner=NULL, lease_until=NULL, error=?,"
                f" updated={_NOW_ISO} WHERE key=? AND owner=? AND status='running'",
                (note, key, self.owner),
            )
        return cur.rowcount == 1

    def update_labels(self, key: str, changes: dict[str, Any]) -> bool:
        """Merge ``changes`` into the labels of this owner's running item (e.g. when a
        queued web job starts); False (nothing written) when it is not running under this
        owner, so it doubles as a check that the claim is still ours."""
        with self._tx("update labels") as conn:
            row = conn.execute(
                "SELECT labels FROM items WHERE key=? AND owner=? AND status='running'",
                (key, self.owner),
            ).fetchone()
            if row is None:
                return False
            labels = {**json.loads(row["labels"] or "{}"), **changes}
            conn.execute(
                f"UPDATE items SET labels=?, updated={_NOW_ISO} WHERE key=?",
                (json.dumps(labels, sort_keys=True, default=str), key),
            )
        return True

    @contextmanager
    def keep_alive(self, key: str, lease_s: float = DEFAULT_LEASE_S) -> Iterator[None]:
        """Renew this owner's lease on ``key`` every ``lease_s / 3`` seconds from a
        background thread (with its own connection) while the block runs, so a long item
        (a GPU render) keeps its claim and a crashed process's claim still expires."""
        stop = threading.Event()

        def beat() -> None:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            try:
                while not stop.wait(lease_s / 3):
                    conn.execute(
                        "UPDATE items SET lease_until=? WHERE key=? AND owner=?"
                        " AND status='running'",
                        (time.time() + lease_s, key, self.owner),
                    )
            except sqlite3.Error as exc:  # the main thread will meet the same problem
                log.warning("lease renewal of %s stopped: %s", key, exc)
            finally:
                conn.close()

        thread = threading.Thread(target=beat, name=f"lease-{key[:12]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def finish(
        self,
        key: str,
        *,
        status: str,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        run_dir: str | None = None,
        seconds: float | None = None,
    ) -> bool:
        """End this owner's claim with ``ok`` or ``failed``. Returns False (and writes
        nothing) when the item is not running under this owner: a finished item is never
        overwritten, and a process whose lease was taken over cannot clobber the taker."""
        if status not in ("ok", "failed"):
            raise ValueError(f"finish status must be ok or failed, got {status!r}")
        with self._write("finish") as conn:
            cur = conn.execute(
                "UPDATE items SET status=?, result=?, error=?, run_dir=?, seconds=?,"
                f" lease_until=NULL, updated={_NOW_ISO}, finished={_NOW_ISO}"
                " WHERE key=? AND owner=? AND status='running'",
                (
                    status,
                    None if result is None else json.dumps(result, default=str),
                    error,
                    run_dir,
                    seconds,
                    key,
                    self.owner,
                ),
            )
        return cur.rowcount == 1

    # -- reading -------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM items WHERE key=?", (key,)).fetchone()
        return _decode(row) if row else None

    def status(self, key: str) -> str | None:
        row = self._conn.execute("SELECT status FROM items WHERE key=?", (key,)).fetchone()
        return row["status"] if row else None

    def items(
        self,
        *,
        kind: str | None = None,
        group: str | None = None,
        status: str | None = None,
        keys: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Items (labels and result decoded), oldest first."""
        sql, params = "SELECT * FROM items WHERE 1=1", []
        for column, value in (("kind", kind), ("grp", group), ("status", status)):
            if value is not None:
                sql += f" AND {column}=?"
                params.append(value)
        rows = [_decode(r) for r in self._conn.execute(sql + " ORDER BY rowid", params)]
        if keys is not None:
            wanted = set(keys)
            rows = [r for r in rows if r["key"] in wanted]
        return rows

    def groups(self, kind: str | None = None) -> dict[str, int]:
        """Item count per group."""
        sql = "SELECT grp, count(*) AS n FROM items"
        params: tuple = ()
        if kind:
            sql += " WHERE kind=?"
            params = (kind,)
        return {r["grp"]: r["n"] for r in self._conn.execute(sql + " GROUP BY grp", params)}

    # -- feedback (popcorn feedback) ---------------------------------------------------

    FEEDBACK_FIELDS = (
        "run_id", "comments", "likes", "views", "posted", "predictor", "predicted_log2",
        "interval_low", "interval_high", "category", "title", "query", "run_dir",
    )  # fmt: skip

    def put_feedback(self, row: dict[str, Any]) -> bool:
        """Record (or update: a later count replaces an earlier one) a run's outcome;
        True when the run had no feedback before."""
        values = [row.get(f) for f in self.FEEDBACK_FIELDS]
        columns = ", ".join(self.FEEDBACK_FIELDS)
        updates = ", ".join(f"{f}=excluded.{f}" for f in self.FEEDBACK_FIELDS[1:])
        with self._tx("save feedback") as conn:
            known = conn.execute(
                "SELECT 1 FROM feedback WHERE run_id=?", (row["run_id"],)
            ).fetchone()
            conn.execute(
                f"INSERT INTO feedback ({columns}) VALUES ({', '.join('?' * len(values))})"
                f" ON CONFLICT (run_id) DO UPDATE SET {updates}, updated={_NOW_ISO}",
                values,
            )
        return known is None

    def feedback(self, predictor: str | None = None) -> list[dict[str, Any]]:
        """Recorded outcomes, oldest first (of one predictor's runs when named)."""
        sql, params = "SELECT * FROM feedback", ()
        if predictor is not None:
            sql, params = sql + " WHERE predictor=?", (predictor,)
        return [dict(r) for r in self._conn.execute(sql + " ORDER BY created, rowid", params)]

    def legacy_count(self) -> int:
        """Cells from a version-1 store (no settings identity; never reused)."""
        found = self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='legacy_cells_v1'"
        ).fetchone()
        if not found:
            return 0
        return self._conn.execute("SELECT count(*) FROM legacy_cells_v1").fetchone()[0]


_RECOVER = (
    "another process may hold it, or the file is damaged: move it aside (e.g. "
    "`mv store.sqlite store.sqlite.bad`) and rerun to start a fresh store; the run folders "
    "are not touched"
)


def _corrupt(path: Path, detail: str) -> StoreError:
    return StoreError(
        f"the run store {path} is corrupt or not a SQLite database ({detail}); it was not modified",
        f"move it aside (`mv {path} {path}.bad`) and rerun: a fresh store is created and the "
        "work is recomputed (run folders are kept); or restore it from a backup",
    )


def _check_file(path: Path) -> None:
    """Refuse a file that is not SQLite before SQLite touches it (nothing is written)."""
    if path.is_dir():
        raise StoreError(f"the run store {path} is a directory", "pass a file path for the store")
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as fh:
        header = fh.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise _corrupt(path, "bad header")


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["labels"] = json.loads(out.get("labels") or "{}")
    out["result"] = json.loads(out["result"]) if out.get("result") else {}
    return out
