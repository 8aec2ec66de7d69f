"""The run store: exclusive claims with a lease, finished items never reset, corruption
detected at open without touching the file, a full disk reported (issue 9, reproduction 3)."""

import multiprocessing
import socket
import sqlite3
import time

import pytest

from llmpopcorn.runs.store import SCHEMA_VERSION, Store, StoreError, digest


def claim(store, key, **kw):
    return store.claim(key, kind="t", group="g", settings_hash="h", labels={"k": key}, **kw)


def test_claims_are_exclusive_and_finished_items_are_never_reset(tmp_path):
    path = tmp_path / "store.sqlite"
    with Store(path) as a, Store(path) as b:
        assert claim(a, "x").claimed
        assert claim(b, "x").outcome == "busy"  # a live lease held by another owner
        assert not b.finish("x", status="ok")  # not b's claim: nothing written
        assert a.status("x") == "running"
        assert a.finish("x", status="ok", result={"score": 1.5})
        assert claim(b, "x").outcome == "done"
        assert claim(a, "x").outcome == "done"
        assert not a.finish("x", status="failed", error="late")  # ok stays ok
        item = b.get("x")
        assert (item["status"], item["result"], item["error"], item["attempts"]) == (
            "ok",
            {"score": 1.5},
            None,
            1,
        )


def test_failed_items_are_retried_only_when_asked(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        claim(s, "x")
        s.finish("x", status="failed", error="boom")
        assert claim(s, "x", retry_failed=False).outcome == "failed"
        assert claim(s, "x").claimed and s.get("x")["attempts"] == 2


def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_clobber_it(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as a, Store(path) as b:
        assert claim(a, "x", lease_s=0.05).claimed
        assert claim(b, "x").outcome == "busy"
        time.sleep(0.1)
        assert claim(b, "x").claimed
        assert not a.renew("x") and not a.finish("x", status="ok")
        assert b.finish("x", status="ok")


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    proc = multiprocessing.get_context("fork").Process(target=time.sleep, args=(0,))
    proc.start()
    proc.join()  # a pid that no longer exists
    path = tmp_path / "s.sqlite"
    with Store(path, owner=f"{socket.gethostname()}:{proc.pid}:dead") as dead:
        assert claim(dead, "x", lease_s=3600).claimed
    with Store(path) as alive:
        assert claim(alive, "x").claimed
    with Store(path, owner=f"elsewhere:{proc.pid}:x") as remote:
        assert claim(remote, "y", lease_s=3600).claimed
    with Store(path) as alive:
        assert claim(alive, "y").outcome == "busy"  # another host: only its lease counts


def _worker(path, keys, queue):
    done = []
    with Store(path) as store:
        for key in keys:
            if claim(store, key).claimed:
                store.finish(key, status="ok", result={"by": store.owner})
                done.append(key)
    queue.put(done)


def test_two_processes_never_do_the_same_item(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    keys = [f"k{i}" for i in range(150)]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(path, keys, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(results[0] + results[1]) == sorted(keys)  # each exactly once
    with Store(path) as store:
        items = store.items()
    assert len(items) == 150 and {i["attempts"] for i in items} == {1}


def test_a_corrupt_store_is_refused_by_name_and_left_untouched(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"\x00junk" * 100)
    with pytest.raises(StoreError) as info:
        Store(garbage)
    assert str(garbage) in info.value.message and "mv " in info.value.hint
    assert garbage.read_bytes() == b"\x00junk" * 100
    assert not (tmp_path / "garbage.sqlite-wal").exists()

    good = tmp_path / "good.sqlite"
    with Store(good) as s:
        for i in range(300):
            claim(s, f"key-{i}-" + "x" * 200)
    with sqlite3.connect(good) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.sqlite"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="corrupt"):
        Store(truncated)
    assert truncated.read_bytes() == data[: len(data) // 2]


def test_a_full_disk_is_a_store_error_and_earlier_work_stays(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        claim(s, "first")
        s.finish("first", status="ok")
        pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
        s._conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own 'disk full'
        with pytest.raises(StoreError, match="full") as info:
            for i in range(500):
                claim(s, f"k{i}")
                s.finish(f"k{i}", status="ok", result={"pad": "x" * 2000})
        assert "rerun" in info.value.hint
    with Store(path) as s:
        assert s.status("first") == "ok"


def test_migrates_a_version_1_store_and_refuses_a_newer_one(tmp_path):
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as conn:
        conn.execute(
            "CREATE TABLE cells (query_id TEXT NOT NULL, query_kind TEXT NOT NULL,"
            " query TEXT NOT NULL, llm TEXT NOT NULL, mode TEXT NOT NULL, video TEXT NOT NULL,"
            " seed INTEGER NOT NULL, status TEXT NOT NULL, run_dir TEXT, title TEXT,"
            " log2_comments REAL, expected_comments REAL, error TEXT, seconds REAL,"
            " updated TEXT NOT NULL DEFAULT (datetime('now')),"
            " PRIMARY KEY (query_id, llm, mode, video, seed))"
        )
        conn.execute(
            "INSERT INTO cells (query_id, query_kind, query, llm, mode, video, seed, status)"
            " VALUES ('q', 'abstract', 'a', 'offline', 'basic', 'draft', 42, 'ok')"
        )
        conn.execute("PRAGMA user_version=1")
    with Store(old) as s:
        assert s.schema_version == SCHEMA_VERSION == 3
        assert s.feedback() == []  # migration 3 added the feedback table
        assert s.legacy_count() == 1 and s.items() == []
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="schema version"):
        Store(newer)


def test_settings_are_stored_by_hash():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})


class StoreClock:
    """The store's ``time`` module, with a wall clock that moves only when told to."""

    def __init__(self):
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def __getattr__(self, name):  # monotonic, sleep: the real ones
        return getattr(time, name)


def test_keep_alive_renews_the_lease_while_an_item_runs(tmp_path, monkeypatch):
    """The clock jumps past the lease; the renewal that follows keeps the claim. (The
    real clock and a sleep of twice the lease failed on a busy machine, where the
    renewal thread did not run in time.)"""
    from llmpopcorn.runs import store as store_module

    clock = StoreClock()
    monkeypatch.setattr(store_module, "time", clock)
    path = tmp_path / "s.sqlite"
    with Store(path) as a, Store(path) as b:
        assert claim(a, "x", lease_s=0.3).claimed
        with a.keep_alive("x", lease_s=0.3):
            clock.now += 10  # far past the lease it was claimed with
            deadline = time.monotonic() + 60
            while a.get("x")["lease_until"] <= clock.now:  # until a renewal lands
                assert time.monotonic() < deadline, "the lease was never renewed"
                time.sleep(0.02)
            assert claim(b, "x").outcome == "busy"  # only the renewal keeps it
        clock.now += 10  # renewals stopped with the block: the lease runs out
        assert claim(b, "x").claimed
        assert not a.finish("x", status="ok")


def test_release_gives_an_item_back_at_once_and_only_by_its_owner(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as a, Store(path) as b:
        assert claim(a, "x", lease_s=3600).claimed
        assert not b.release("x", "not mine")
        assert a.release("x", "paused: quota")
        item = a.get("x")
        assert (item["status"], item["owner"], item["error"]) == ("pending", None, "paused: quota")
        assert claim(b, "x").claimed and b.get("x")["attempts"] == 2
        assert b.finish("x", status="ok")
        assert not b.release("x") and b.status("x") == "ok"  # finished stays finished


def test_a_store_busy_in_another_process_is_waited_for_then_named_busy_not_corrupt(tmp_path):
    import sqlite3
    import threading
    import time as _time

    from llmpopcorn.runs.store import Store, StoreError

    path = tmp_path / "store.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN EXCLUSIVE")
    threading.Thread(target=lambda: (_time.sleep(0.4), other.execute("COMMIT"))).start()
    store = Store(path, timeout=10)  # waits for the lock instead of failing at once
    assert store.schema_version >= 1
    store.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreError) as info:
        Store(path, timeout=0.2)
    assert "locked by another process" in info.value.message
    assert "move it aside" not in (info.value.hint or "")
    holder.execute("ROLLBACK")
