"""The sqlite engine: the store contract, real worker processes at once, forks, failures."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import sqlite_workers
from store_contract import GATE, HASH, StoreContract, attempt

from alloconv_gate.store import Redemption, StoreError, open_store, resolve_store_url
from alloconv_gate.store.sqlite_store import SCHEMA_VERSION, SqliteStore

PROCESSES = 4
WORKERS_SCRIPT = Path(__file__).with_name("sqlite_workers.py")


def write_junk(path: Path) -> None:
    """A file that is not a database: a wrong path in the ini, or a damaged disk."""
    path.write_bytes(b"not a database\n" * 200)


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "gate.sqlite3")


@pytest.fixture
def store(path):
    store = SqliteStore(path)
    yield store
    store.close()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store(self, store):
        """The module's store: a new file in tmp_path."""
        return store


def together(job, *args) -> list:
    """Run ``job(*args)`` in 4 fresh processes that start it at the same instant."""
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(PROCESSES, timeout=60)
    with ProcessPoolExecutor(
        PROCESSES, mp_context=spawn, initializer=sqlite_workers.init, initargs=(start,)
    ) as pool:
        futures = [pool.submit(job, *args) for _ in range(PROCESSES)]
        return [future.result(timeout=120) for future in futures]


def run_script(*args) -> dict:
    """Play a scenario of tests/sqlite_workers.py in a process of its own."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, str(WORKERS_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class TestOpening:
    def test_the_store_url_opens_a_file_beside_the_ini(self, tmp_path):
        """``store = sqlite:///gate.sqlite3`` in an ini means the ini's folder."""
        store = open_store(resolve_store_url("sqlite:///gate.sqlite3", str(tmp_path)))
        try:
            assert isinstance(store, SqliteStore)
            store.record(attempt())
        finally:
            store.close()
        assert (tmp_path / "gate.sqlite3").is_file()

    def test_a_file_of_the_first_schema_is_upgraded_and_keeps_its_redemptions(self, path):
        """A site upgrading alloconv_gate keeps the access it sold."""
        conn = sqlite3.connect(path)
        conn.executescript(
            """CREATE TABLE redemptions (gate TEXT NOT NULL, code_hash TEXT NOT NULL,
                   granted_at REAL NOT NULL, ends_at REAL NOT NULL, devices INTEGER NOT NULL,
                   PRIMARY KEY (gate, code_hash)) WITHOUT ROWID;
               INSERT INTO redemptions VALUES ('default:/premium', 'aa', 1000.0, 2000.0, 2);
               PRAGMA user_version = 1;"""
        )
        conn.close()
        store = SqliteStore(path)
        try:
            assert store.redemption("default:/premium", "aa") == Redemption(
                "default:/premium", "aa", 1000.0, 2000.0, 2, ()
            )
            store.redeem(GATE, HASH, 1000.0, 2000.0, ("/premium",))
            assert store.redemption(GATE, HASH).prefixes == ("/premium",)
            state = store.add_to_set(GATE, HASH, "s1", ("/p",), 1000.0, needed=2, since=0.0)
            assert state.status == "open"
        finally:
            store.close()
        (version,) = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()
        assert version == SCHEMA_VERSION

    def test_a_restart_finds_the_journal_and_redemptions(self, path):
        """Everything a paid visitor needs survives the workers restarting."""
        store = SqliteStore(path)
        store.record(attempt())
        store.complete("a1", "ok", 0.3, "OK")
        store.redeem(GATE, HASH, 1000.0, 2000.0)
        store.close()
        again = SqliteStore(path)
        try:
            assert [a.outcome for a in again.journal()] == ["ok"]
            assert again.redemption(GATE, HASH).ends_at == 2000.0
        finally:
            again.close()

    def test_the_file_is_in_wal_mode_with_the_schema_version(self, store, path):
        """WAL lets readers go on while a worker writes; the version allows later upgrades."""
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            conn.close()

    def test_a_file_from_a_newer_version_is_refused(self, path):
        """An older gate must not write into a schema it does not know."""
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()
        with pytest.raises(StoreError, match="newer") as caught:
            SqliteStore(path)
        assert path in str(caught.value)

    @pytest.mark.parametrize(
        ("make", "reason"),
        [
            pytest.param(None, "does not exist", id="missing-folder"),
            pytest.param(Path.mkdir, "is a folder", id="a-folder"),
            pytest.param(write_junk, "not a database", id="not-a-database"),
        ],
    )
    def test_a_path_that_cannot_hold_the_store_is_refused_at_start_up(self, tmp_path, make, reason):
        """The gate fails at start-up, saying which file and why, not on the first visitor."""
        path = tmp_path / "folder" / "gate.sqlite3"
        if make:
            path.parent.mkdir()
            make(path)
        with pytest.raises(StoreError, match=reason) as caught:
            SqliteStore(path)
        assert str(path) in str(caught.value)


@pytest.fixture
def unprivileged_folder(tmp_path):
    """A folder the user running the read-only scenario owns.

    Tests run as root in the container, and root writes read-only files anyway: the
    scenario then drops to ``nobody``, which needs a folder it can reach, outside
    pytest's private temporary folders.
    """
    if os.geteuid() != 0:
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="alloconv-gate-test-"))
    try:
        os.chown(folder, sqlite_workers.NOBODY, sqlite_workers.NOBODY)
        yield folder
    finally:
        shutil.rmtree(folder)


class TestFailures:
    def test_a_file_replaced_by_junk_fails_on_use_naming_the_file(self, store, path):
        junk = Path(path).with_name("junk")
        write_junk(junk)
        os.replace(junk, path)
        with pytest.raises(StoreError, match="not a database") as caught:
            store.record(attempt())
        assert path in str(caught.value)

    def test_a_lock_held_too_long_fails_fast_instead_of_hanging(self, path):
        """A writer stuck past the busy timeout gives the gate an error (a 503), not a hang;
        readers go on meanwhile, and once it lets go the store works again."""
        store = SqliteStore(path, busy_timeout=0.2)
        blocker = sqlite3.connect(path, isolation_level=None)
        try:
            blocker.execute("BEGIN EXCLUSIVE")
            started = time.monotonic()
            with pytest.raises(StoreError, match="locked") as caught:
                store.hit("k", 60, 120.0)
            assert time.monotonic() - started < 3
            assert path in str(caught.value)
            assert store.journal() == []
            blocker.execute("ROLLBACK")
            assert store.hit("k", 60, 121.0) == 1
        finally:
            blocker.close()
            store.close()

    @pytest.mark.parametrize(
        ("what", "reads", "left_read_only"),
        [
            pytest.param("file", True, "gate.sqlite3-shm", id="read-only-file"),
            pytest.param("folder", False, None, id="read-only-file-and-folder"),
        ],
    )
    def test_a_read_only_store_fails_ping_writes_and_opening(
        self, unprivileged_folder, what, reads, left_read_only
    ):
        """A database the workers' user cannot write (say it belongs to root) is caught by
        ``alloconv-gate check`` (ping) and at start-up, naming the file and what to fix."""
        seen = run_script("read-only", str(unprivileged_folder), what)
        path = str(unprivileged_folder / "gate.sqlite3")
        for method in ("ping", "hit", "open"):
            assert seen[method] is not None, method
            assert path in seen[method], method
        assert "not readable and writable by this process's user" in seen["open"]
        assert (seen["journal"] is None) is reads
        if left_read_only:
            assert f"{path}-shm" in seen["open after fixing the file"]
        else:
            assert seen["open after fixing the file"] is None


class TestProcesses:
    """Several real worker processes on one file, all at once."""

    def test_4_processes_submitting_200_codes_leave_200_complete_records(self, path):
        """Workers starting together on a file that does not exist yet (the first run), each
        recording then completing 50 submissions: none lost, none left pending."""
        together(sqlite_workers.submit, path, 50)
        store = SqliteStore(path)
        try:
            journal = store.journal()
        finally:
            store.close()
        assert len(journal) == 200
        assert len({a.id for a in journal}) == 200
        assert {a.outcome for a in journal} == {"ok"}

    def test_4_processes_hitting_one_key_count_each_hit_once(self, store, path):
        """The rate limit holds across workers: 120 hits are 120, each seen once."""
        counts = [count for seen in together(sqlite_workers.hits, path, 30) for count in seen]
        assert sorted(counts) == list(range(1, 121))
        assert store.hit("default:/premium|203.0.113.7", 60, 121.0) == 121

    def test_4_processes_racing_for_devices_get_the_2_left(self, store, path):
        """Restores on 4 workers at once: max_devices=3 means 3 browsers, the first included."""
        store.redeem(GATE, HASH, 1000.0, 2000.0)
        assert sum(together(sqlite_workers.devices, path, 10)) == 2
        assert store.redemption(GATE, HASH).devices == 3

    def test_4_processes_using_the_same_support_links_each_works_once(self, store, path):
        """A support link clicked on two workers at once still opens only one browser."""
        used = [grant for seen in together(sqlite_workers.grants, path, 20) for grant in seen]
        assert sorted(used) == sorted(f"g{n}" for n in range(20))


class TestFork:
    @pytest.mark.parametrize(
        "how",
        [
            pytest.param("python", id="os-fork-as-gunicorn-preload"),
            pytest.param("c", id="c-fork-without-python-hooks"),
        ],
    )
    def test_a_forked_child_uses_the_store_and_the_parent_keeps_working(self, path, how):
        """Servers open the app, then fork workers: each must get a connection of its own."""
        seen = run_script("fork", path, how)
        assert seen == {"child": 0, "journal": ["parent-after", "child", "parent-before"]}
