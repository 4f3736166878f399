"""The sqlite store: the default, for any number of worker processes on one host.

One database file holds the journal, redemptions, rate-limit counters and used support
grants. It is shared safely by every worker process and thread that opens it:

- WAL mode, so that readers never wait for a writer;
- every read-then-write (a device, a hit, a grant, a redemption) runs in one short
  ``BEGIN IMMEDIATE`` transaction, so that two processes cannot both take the last place;
- a busy timeout (5 s by default) for the moments two writers meet; past it the method
  raises :class:`StoreError` instead of hanging;
- one connection per thread and per process: a process forked after the store was
  opened (``gunicorn --preload``, uWSGI without ``lazy-apps``) opens its own and never
  touches the connections it inherited.

Only the standard library's :mod:`sqlite3` is used. Every :class:`sqlite3.Error` becomes
a :class:`StoreError` naming the file; no message ever holds a code (records hold none).

.. warning:: Keep the file on a local disk. SQLite's locks are not reliable on network
   file systems (NFS, SMB), and WAL mode does not work there at all: for several hosts,
   use the redis store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator

from .base import (
    Attempt,
    Claim,
    Redemption,
    SetState,
    Store,
    StoreError,
    set_detail,
    set_redemptions,
)

SCHEMA_VERSION = 2
# What a file of an older version needs to reach this one (its tables are created as
# they are below, so only what CREATE TABLE IF NOT EXISTS cannot add is here).
_MIGRATIONS = {
    1: (
        "ALTER TABLE redemptions ADD COLUMN prefixes TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE redemptions ADD COLUMN shares_devices_with TEXT NOT NULL DEFAULT ''",
    ),
}

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS attempts (
        id TEXT PRIMARY KEY,
        time REAL NOT NULL,
        gate TEXT NOT NULL,
        palier TEXT NOT NULL,
        client TEXT NOT NULL,
        code_masked TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        outcome TEXT NOT NULL,
        latency REAL,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS attempts_by_time ON attempts (time)",
    # the journal of one code (on one gate or all)
    "CREATE INDEX IF NOT EXISTS attempts_by_code ON attempts (code_hash, gate, outcome)",
    "CREATE INDEX IF NOT EXISTS attempts_by_outcome ON attempts (outcome, time)",
    """CREATE TABLE IF NOT EXISTS redemptions (
        gate TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        granted_at REAL NOT NULL,
        ends_at REAL NOT NULL,
        devices INTEGER NOT NULL,
        prefixes TEXT NOT NULL DEFAULT '[]',
        shares_devices_with TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (gate, code_hash)
    ) WITHOUT ROWID""",
    # codes = N: the set each code that passed counts in, and the sets that are complete
    """CREATE TABLE IF NOT EXISTS claims (
        gate TEXT NOT NULL,
        code_hash TEXT NOT NULL,
        set_id TEXT NOT NULL,
        prefixes TEXT NOT NULL,
        passed_at REAL NOT NULL,
        completed INTEGER NOT NULL,
        PRIMARY KEY (gate, code_hash)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS claims_by_set ON claims (gate, set_id)",
    """CREATE TABLE IF NOT EXISTS complete_sets (
        gate TEXT NOT NULL,
        set_id TEXT NOT NULL,
        PRIMARY KEY (gate, set_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS counters (
        key TEXT NOT NULL,
        seconds INTEGER NOT NULL,
        start INTEGER NOT NULL,
        ends REAL NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (key, seconds, start)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS counters_by_end ON counters (ends)",
    """CREATE TABLE IF NOT EXISTS grants (
        id TEXT PRIMARY KEY,
        used_at REAL NOT NULL
    ) WITHOUT ROWID""",
    # One row that ping rewrites: a write that a read-only file refuses.
    """CREATE TABLE IF NOT EXISTS liveness (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        writes INTEGER NOT NULL
    )""",
)

_ATTEMPT_COLUMNS = (
    "id, time, gate, palier, client, code_masked, code_hash, outcome, latency, detail"
)
_PING = (
    "INSERT INTO liveness (id, writes) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET writes = writes + 1"
)

#: Connections a forked child inherited from its parent: kept, never used and never
#: closed, since closing one in the child could disturb the parent's locks and WAL.
_INHERITED: list[sqlite3.Connection] = []

#: Every open SqliteStore, so that a fork can be prepared for.
_STORES: weakref.WeakSet[SqliteStore] = weakref.WeakSet()


class _Connection:
    """One thread's connection, in the process that opened it.

    Closed when its thread ends (the thread's ``threading.local`` lets go of it) or when
    the store is closed.
    """

    __slots__ = ("__weakref__", "closed", "conn", "pid")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.pid = os.getpid()
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
        else:
            _INHERITED.append(self.conn)

    def __del__(self):
        self.close()


class SqliteStore(Store):
    """The store in the SQLite database file ``path``, created with its tables on first
    open.

    :param path: the database file; its folder must exist and be writable by the worker
        processes (WAL mode keeps ``-wal`` and ``-shm`` files beside it).
    :param busy_timeout: seconds a write waits for another process's transaction before
        it fails with :class:`StoreError`.

    Raises :class:`StoreError`, naming ``path`` and the reason, when the file cannot be
    created, read or written.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0):
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        problem = _unusable(self.path)
        if problem:
            raise StoreError(f"cannot open the sqlite store {self.path}: {problem}")
        try:
            # A connection of its own, closed at once: nothing stays open in a process
            # that opens the store at import time and then forks its workers.
            conn = self._connect()
            try:
                self._create_schema(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the sqlite store {self.path}: {exc}{_permission_hint(self.path)}"
            ) from exc
        _STORES.add(self)

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # The journal

    def record(self, attempt: Attempt) -> None:
        with self._write("record an attempt") as conn:
            self._insert(conn, attempt)

    def _insert(self, conn: sqlite3.Connection, attempt: Attempt) -> None:
        cursor = conn.execute(
            f"INSERT OR IGNORE INTO attempts ({_ATTEMPT_COLUMNS}) "  # noqa: S608 - constant
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                attempt.id,
                attempt.time,
                attempt.gate,
                attempt.palier,
                attempt.client,
                attempt.code_masked,
                attempt.code_hash,
                attempt.outcome,
                attempt.latency,
                attempt.detail,
            ),
        )
        if cursor.rowcount != 1:
            raise StoreError(
                f"sqlite store {self.path}: attempt {attempt.id} is already in the journal"
            )

    def complete(self, attempt_id: str, outcome: str, latency: float | None, detail: str) -> None:
        with self._write("complete an attempt") as conn:
            if not _complete(conn, attempt_id, outcome, latency, detail):
                raise StoreError(
                    f"sqlite store {self.path}: no attempt {attempt_id} in the journal"
                )

    def record_counted(self, attempt, key, window, limit=None):
        with self._write("count and record an attempt") as conn:
            count = _hit(conn, key, window, attempt.time)
            if limit is None or count <= limit:
                self._insert(conn, attempt)  # raises, and so rolls the count back
        return count

    def settle(self, attempt, redemptions=()):
        with self._write("settle an attempt") as conn:
            self._settle(conn, attempt, redemptions)

    def _settle(self, conn: sqlite3.Connection, attempt: Attempt, redemptions) -> None:
        for r in redemptions:
            _redeem(
                conn,
                r.gate,
                r.code_hash,
                r.granted_at,
                r.ends_at,
                r.prefixes,
                r.shares_devices_with,
            )
        if not _complete(conn, attempt.id, attempt.outcome, attempt.latency, attempt.detail):
            self._insert(conn, attempt)

    def journal(
        self,
        *,
        since: float | None = None,
        outcome: str | None = None,
        code_hash: str | None = None,
        gate: str | None = None,
        limit: int = 1000,
    ) -> list[Attempt]:
        filters = [
            ("time >= ?", since),
            ("outcome = ?", outcome),
            ("code_hash = ?", code_hash),
            ("gate = ?", gate),
        ]
        where = [(clause, value) for clause, value in filters if value is not None]
        sql = f"SELECT {_ATTEMPT_COLUMNS} FROM attempts"  # noqa: S608 - constant
        if where:
            sql += " WHERE " + " AND ".join(clause for clause, _ in where)
        sql += " ORDER BY time DESC, rowid DESC LIMIT ?"
        with self._read("read the journal") as conn:
            rows = conn.execute(sql, [value for _, value in where] + [max(limit, 0)]).fetchall()
        return [Attempt(*row) for row in rows]

    # Redemptions

    def redemption(self, gate: str, code_hash: str) -> Redemption | None:
        with self._read("read a redemption") as conn:
            row = conn.execute(
                "SELECT gate, code_hash, granted_at, ends_at, devices, prefixes, "
                "shares_devices_with FROM redemptions WHERE gate = ? AND code_hash = ?",
                (gate, code_hash),
            ).fetchone()
        if row is None:
            return None
        return Redemption(*row[:5], tuple(json.loads(row[5])), row[6])

    def redeem(self, gate, code_hash, granted_at, ends_at, prefixes=(), shares_devices_with=""):
        with self._write("record a redemption") as conn:
            _redeem(conn, gate, code_hash, granted_at, ends_at, prefixes, shares_devices_with)

    def add_device(self, gate: str, code_hash: str, max_devices: int) -> bool:
        with self._write("count a device") as conn:
            cursor = conn.execute(
                "UPDATE redemptions SET devices = devices + 1 "
                "WHERE gate = ? AND code_hash = ? AND devices < ?",
                (gate, code_hash, max_devices),
            )
            return cursor.rowcount == 1

    # Sets of codes

    def claim(self, gate: str, code_hash: str) -> Claim | None:
        with self._read("read a claim") as conn:
            row = conn.execute(
                "SELECT code_hash, set_id, prefixes, passed_at, completed FROM claims "
                "WHERE gate = ? AND code_hash = ?",
                (gate, code_hash),
            ).fetchone()
        if row is None:
            return None
        hashed, set_id, prefixes, passed_at, completed = row
        return Claim(hashed, set_id, tuple(json.loads(prefixes)), passed_at, bool(completed))

    def set_codes(self, gate: str, set_id: str, *, since: float) -> tuple[str, ...]:
        with self._read("read a set") as conn:
            return _open_codes(conn, gate, set_id, since)

    def add_to_set(self, gate, code_hash, set_id, prefixes, passed_at, *, needed, since):
        with self._write("add a code to a set") as conn:
            return _add_to_set(conn, gate, code_hash, set_id, prefixes, passed_at, needed, since)

    def add_to_set_and_settle(
        self, gate, code_hash, set_id, prefixes, passed_at, *, needed, since, attempt, ends_at
    ):
        with self._write("add a code to a set and settle its attempt") as conn:
            state = _add_to_set(conn, gate, code_hash, set_id, prefixes, passed_at, needed, since)
            if state.status in ("open", "complete"):
                complete = state.status == "complete"
                detail = set_detail(attempt.detail, set_id, len(state.codes), needed, complete)
                redemptions = (
                    set_redemptions(gate, state.codes, attempt.time, ends_at, prefixes)
                    if complete
                    else ()
                )
                self._settle(conn, dataclasses.replace(attempt, detail=detail), redemptions)
            return state

    # Rate limits

    def hit(self, key: str, window: int, now: float) -> int:
        with self._write("count a hit") as conn:
            return _hit(conn, key, window, now)

    def count(self, key: str, window: int, now: float) -> int:
        with self._read("read a count") as conn:
            row = conn.execute(
                "SELECT count FROM counters WHERE key = ? AND seconds = ? AND start = ?",
                (key, window, int(now // window * window)),
            ).fetchone()
        return 0 if row is None else row[0]

    # Support grants

    def use_grant(self, grant_id: str, now: float) -> bool:
        with self._write("use a support grant") as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO grants (id, used_at) VALUES (?, ?)", (grant_id, now)
            )
            return cursor.rowcount == 1

    # Life

    def ping(self) -> None:
        """Write to the file, so that a read-only file or folder shows here."""
        with self._write("write (ping)") as conn:
            conn.execute(_PING)

    def close(self) -> None:
        """Close every thread's connection; a later call opens new ones."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        self._local.__dict__.pop("connection", None)

    # Connections and transactions

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; each method says BEGIN itself.
        # check_same_thread=False only so that close() may close other threads' connections.
        return sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        mode = self._wal_mode(conn)
        if mode.lower() != "wal":
            self.warning = (
                f"sqlite store {self.path}: WAL mode is unavailable (journal mode {mode!r}); "
                "writers will block readers: keep the file on a local disk"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"cannot open the sqlite store {self.path}: its schema version {version} "
                    f"is newer than this alloconv_gate knows ({SCHEMA_VERSION}); upgrade it"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            for old in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
                for statement in _MIGRATIONS[old]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(_PING)
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")

    def _wal_mode(self, conn: sqlite3.Connection) -> str:
        """Switch a new file to WAL mode; the journal mode the file then has.

        The switch does not wait for the busy timeout: when several workers open a new
        file at once, all but one get SQLITE_BUSY at once. They try again until the file
        is in WAL mode or the busy timeout has passed.
        """
        deadline = time.monotonic() + self.busy_timeout
        while True:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            if mode.lower() == "wal":
                return mode
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return mode
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use, and again in a forked child."""
        connection = self._local.__dict__.get("connection")
        if connection is None or connection.closed or connection.pid != os.getpid():
            connection = _Connection(self._connect())
            self._local.connection = connection
            with self._lock:
                self._connections.add(connection)
        return connection.conn

    def _forget_connection(self) -> None:
        """Drop this thread's connection after an error; the next call opens a fresh one."""
        connection = self._local.__dict__.pop("connection", None)
        if connection is not None:
            connection.close()

    @contextlib.contextmanager
    def _read(self, doing: str) -> Iterator[sqlite3.Connection]:
        try:
            yield self._connection()
        except sqlite3.Error as exc:
            self._forget_connection()
            raise StoreError(f"sqlite store {self.path}: cannot {doing}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: it takes the write lock before reading, so
        what it reads is still true when it writes."""
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            self._forget_connection()
            raise StoreError(f"sqlite store {self.path}: cannot {doing}: {exc}") from exc

    def _before_fork(self) -> None:
        """Close the forking thread's connection, so that the child inherits none."""
        self._forget_connection()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()


def _complete(conn: sqlite3.Connection, attempt_id, outcome, latency, detail) -> bool:
    """Set an attempt's outcome; whether the journal had it."""
    cursor = conn.execute(
        "UPDATE attempts SET outcome = ?, latency = ?, detail = ? WHERE id = ?",
        (outcome, latency, detail, attempt_id),
    )
    return cursor.rowcount == 1


def _redeem(conn: sqlite3.Connection, gate, code_hash, granted_at, ends_at, prefixes, shares):
    conn.execute(
        "INSERT OR IGNORE INTO redemptions (gate, code_hash, granted_at, ends_at, "
        "devices, prefixes, shares_devices_with) VALUES (?, ?, ?, ?, 1, ?, ?)",
        (gate, code_hash, granted_at, ends_at, json.dumps(list(prefixes)), shares),
    )


def _hit(conn: sqlite3.Connection, key: str, window: int, now: float) -> int:
    """Count one event in the window holding ``now``, inside the caller's transaction."""
    start = int(now // window * window)
    # Windows that have ended, of any length: an index range, usually empty.
    conn.execute("DELETE FROM counters WHERE ends <= ?", (now,))
    conn.execute(
        "INSERT INTO counters (key, seconds, start, ends, count) VALUES (?, ?, ?, ?, 1) "
        "ON CONFLICT (key, seconds, start) DO UPDATE SET count = count + 1",
        (key, window, start, start + window),
    )
    (count,) = conn.execute(
        "SELECT count FROM counters WHERE key = ? AND seconds = ? AND start = ?",
        (key, window, start),
    ).fetchone()
    return count


def _add_to_set(conn, gate, code_hash, set_id, prefixes, passed_at, needed, since) -> SetState:
    """The step of :meth:`Store.add_to_set`, inside the caller's write transaction."""
    if conn.execute(
        "SELECT 1 FROM complete_sets WHERE gate = ? AND set_id = ?", (gate, set_id)
    ).fetchone():
        return SetState("closed")
    old = conn.execute(
        "SELECT completed FROM claims WHERE gate = ? AND code_hash = ?", (gate, code_hash)
    ).fetchone()
    if old is not None and old[0]:
        return SetState("used")
    conn.execute(
        "INSERT INTO claims (gate, code_hash, set_id, prefixes, passed_at, completed) "
        "VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (gate, code_hash) "
        "DO UPDATE SET set_id = excluded.set_id, prefixes = excluded.prefixes",
        (gate, code_hash, set_id, json.dumps(list(prefixes)), passed_at),
    )
    codes = _open_codes(conn, gate, set_id, since)
    if len(codes) < needed:
        return SetState("open", codes)
    conn.execute("INSERT INTO complete_sets (gate, set_id) VALUES (?, ?)", (gate, set_id))
    conn.executemany(
        "UPDATE claims SET completed = 1 WHERE gate = ? AND code_hash = ?",
        [(gate, hashed) for hashed in codes],
    )
    return SetState("complete", codes)


def _open_codes(conn: sqlite3.Connection, gate: str, set_id: str, since: float):
    """The codes that count in an unfinished set, oldest first (an index range)."""
    return tuple(
        hashed
        for (hashed,) in conn.execute(
            "SELECT code_hash FROM claims WHERE gate = ? AND set_id = ? "
            "AND completed = 0 AND passed_at >= ? ORDER BY passed_at, code_hash",
            (gate, set_id, since),
        )
    )


def _unusable(path: str) -> str | None:
    """Why ``path`` cannot hold a database, when sqlite would only say "unable to open"."""
    if os.path.isdir(path):
        return "it is a folder, not a database file"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"its folder {folder} does not exist"
    return None


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is None:
        return "locked" in str(exc)
    return code & 0xFF == sqlite3.SQLITE_BUSY


def _permission_hint(path: str) -> str:
    """Which file or folder the process's user cannot write, if any.

    A reader of a read-only database leaves its ``-wal`` and ``-shm`` files read-only
    too: once the database file is fixed, they still are, and are named here.
    """
    stuck = [
        name
        for name in (path, path + "-wal", path + "-shm")
        if os.path.exists(name) and not os.access(name, os.R_OK | os.W_OK)
    ]
    if stuck:
        return f" ({', '.join(stuck)}: not readable and writable by this process's user)"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f" (its folder {folder} is not writable by this process's user; WAL mode keeps "
            "-wal and -shm files beside the database)"
        )
    return ""


def _before_fork() -> None:
    for store in list(_STORES):
        store._before_fork()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
