"""What the other processes of tests/test_store_sqlite.py run.

The functions are run by worker processes started with multiprocessing's "spawn" context,
which imports this module afresh in each: they meet at a barrier so that they really do
run at the same time. Run as a script, it plays a scenario that needs a process of its own
(a fork, an unprivileged user) and prints what it saw as JSON.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import traceback

from alloconv_gate.store import Attempt, StoreError
from alloconv_gate.store.sqlite_store import SqliteStore

NOBODY = 65534
_start = None


def attempt(id: str, time: float) -> Attempt:
    return Attempt(id, time, "default:/premium", "fra1", "203.0.113.7", "AB12****", "a" * 64)


def init(barrier) -> None:
    """Pool initializer: keep the barrier the workers meet at."""
    global _start
    _start = barrier


def _opened(path: str) -> SqliteStore:
    _start.wait()
    return SqliteStore(path)


def submit(path: str, count: int) -> None:
    """Record then complete ``count`` attempts, as a worker process of the gate would.

    The store is opened after the barrier: every worker opens a file that may not exist yet.
    """
    store = _opened(path)
    try:
        for n in range(count):
            id = f"{os.getpid()}-{n}"
            store.record(attempt(id, 1000.0 + n))
            store.complete(id, "ok", 0.1, "OK")
    finally:
        store.close()


def hits(path: str, count: int) -> list[int]:
    store = _opened(path)
    try:
        return [store.hit("default:/premium|203.0.113.7", 60, 120.0) for _ in range(count)]
    finally:
        store.close()


def devices(path: str, tries: int) -> int:
    store = _opened(path)
    try:
        return sum(store.add_device("default:/premium", "a" * 64, 3) for _ in range(tries))
    finally:
        store.close()


def grants(path: str, count: int) -> list[str]:
    store = _opened(path)
    try:
        return [f"g{n}" for n in range(count) if store.use_grant(f"g{n}", 1000.0)]
    finally:
        store.close()


# Scenarios run as a script


def fork(path: str, how: str) -> dict:
    """The parent uses the store, forks, the child uses it, then the parent again.

    ``how`` is "python" (os.fork: Python's fork hooks run, as under gunicorn) or "c" (the C
    library's fork called directly, as a server written in C may do: no hook runs).
    """
    store = SqliteStore(path)
    store.record(attempt("parent-before", 100.0))
    open_at_fork = store._connection()
    pid = os.fork() if how == "python" else ctypes.PyDLL(None).fork()
    if pid == 0:
        status = 1
        try:
            store.record(attempt("child", 200.0))
            store.complete("child", "ok", 0.1, "OK")
            # SQLite forbids using a connection in a child: it must have opened its own.
            status = 3 if store._connection() is open_at_fork else 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    store.record(attempt("parent-after", 300.0))
    found = store.journal()
    store.close()
    return {"child": os.waitstatus_to_exitcode(status), "journal": [a.id for a in found]}


def _failure(job) -> str | None:
    try:
        job()
    except StoreError as exc:
        return str(exc)
    return None


def read_only(folder: str, what: str) -> dict:
    """As an unprivileged user: open a store, then make the file (and perhaps its folder)
    read-only, as a deployment mistake would."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    path = os.path.join(folder, "gate.sqlite3")
    store = SqliteStore(path)
    store.record(attempt("before", 100.0))
    store.close()
    os.chmod(path, 0o400)
    if what == "folder":
        os.chmod(folder, 0o500)
    seen = {
        "ping": _failure(store.ping),
        "hit": _failure(lambda: store.hit("k", 60, 120.0)),
        "journal": _failure(store.journal),
        "open": _failure(lambda: SqliteStore(path).close()),
    }
    store.close()
    os.chmod(folder, 0o700)
    os.chmod(path, 0o600)
    seen["open after fixing the file"] = _failure(lambda: SqliteStore(path).close())
    return seen


if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    print(json.dumps({"fork": fork, "read-only": read_only}[scenario](*args)))
