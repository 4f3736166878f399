"""What each kind of submission costs the store, in write transactions on a real sqlite
file, through a real server (waitress on loopback).

A write transaction is a durable write (an fsync of the WAL): a storm of junk that cost
one each ran at a tenth of the bare app's throughput. So: a code that reaches AlloConv
costs two (its pending record with its rate-limit count before the call, its outcome
with its access after), a restore two, and a refusal that needs no AlloConv call none
once the bound or limit is reached, while the limits still hold across processes and
hosts (the store's counter stays the authority).

Every statement the gate's sqlite connections run is traced; a write transaction is a
``BEGIN IMMEDIATE`` (reads run outside transactions).
"""

from __future__ import annotations

import threading

import pytest
import requests
from clock import FakeClock
from servers import serve

from alloconv_gate import Gate
from alloconv_gate.store.sqlite_store import SqliteStore

SECRET = "writes-tests-secret-long-enough-0123456789"
MADE_UP = "ZZZZ9999"  # a code of the right form that AlloConv refuses (ERR3)
TIMEOUT = 10


def paid_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"paid"]


class Trace:
    """The statements every sqlite connection opened since the test began has run,
    each with the number of AlloConv verifications made when it ran."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.statements: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, statement: str) -> None:
        with self.lock:
            self.statements.append((statement, self.sandbox.calls["api-micropaiement"]))

    def clear(self) -> None:
        with self.lock:
            self.statements.clear()

    def writes(self) -> list[int]:
        """One item per write transaction: the AlloConv calls made when it began."""
        with self.lock:
            return [calls for sql, calls in self.statements if sql == "BEGIN IMMEDIATE"]


@pytest.fixture
def trace(monkeypatch, sandbox):
    trace = Trace(sandbox)
    connect = SqliteStore._connect

    def traced(store):
        conn = connect(store)
        conn.set_trace_callback(trace)
        return conn

    monkeypatch.setattr(SqliteStore, "_connect", traced)
    return trace


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def start(sandbox_url, tmp_path, clock, trace):
    """Start a gated site under waitress; sites started in one test share the sqlite
    file, as the worker processes of one site do."""
    servers, gates = [], []

    def start(**options):
        settings = {
            "api_key": "sandbox-key",
            "secret": SECRET,
            "palier": "fra1",
            "prefixes": "/premium",
            "api_base": sandbox_url,
            "timeout": "2",
            "store": f"sqlite:///{tmp_path}/gate.sqlite3",
            **options,
        }
        gate = Gate(paid_app, clock=clock, **settings)
        gates.append(gate)
        servers.append(serve(gate, threads=4))
        return servers[-1].url

    yield start
    for server in servers:
        server.close()
    for gate in gates:
        gate.store.close()


def post(url, code, session=None):
    """Type ``code`` on the page, as a browser (``session``: the same one again)."""
    session = session or requests.Session()
    session.trust_env = False
    return session.post(
        url + "/premium/x", data={"code": code}, timeout=TIMEOUT, allow_redirects=False
    )


class TestWritesPerSubmission:
    def test_a_verified_code_takes_two_write_transactions(self, start, trace, sandbox):
        """One before AlloConv is asked (the pending record, which makes a lost answer
        recoverable, with the rate-limit count), one after (the outcome and the access)."""
        url = start()
        trace.clear()
        assert post(url, sandbox.issue_code()).status_code == 303
        assert trace.writes() == [0, 1]

    def test_each_code_of_a_set_takes_two(self, start, trace, sandbox):
        """codes = 2: the first code's record with its place in the set, then the second
        code's with the access the set bought, each in one transaction after its pending
        record."""
        url = start(codes="2")
        browser = requests.Session()
        trace.clear()
        assert post(url, sandbox.issue_code(), browser).status_code == 402  # 1 of 2
        assert trace.writes() == [0, 1]
        trace.clear()
        assert post(url, sandbox.issue_code(), browser).status_code == 303  # complete
        assert trace.writes() == [1, 2]
        assert browser.get(url + "/premium/x", timeout=TIMEOUT).status_code == 200

    def test_a_code_alloconv_refuses_takes_two(self, start, trace, sandbox):
        url = start()
        trace.clear()
        assert post(url, MADE_UP).status_code == 402
        assert trace.writes() == [0, 1]

    def test_without_a_rate_limit_still_two(self, start, trace, sandbox):
        url = start(rate_limit="off")
        trace.clear()
        assert post(url, sandbox.issue_code()).status_code == 303
        assert trace.writes() == [0, 1]

    def test_a_restore_takes_two_and_no_call(self, start, trace, sandbox):
        """The device counted, then the record with its rate-limit count."""
        url = start()
        code = sandbox.issue_code()
        assert post(url, code).status_code == 303
        trace.clear()
        assert post(url, code).status_code == 303  # another browser, same code
        assert trace.writes() == [1, 1]  # no call since the first

    def test_rate_limited_refusals_cost_nothing_once_the_store_said_so(
        self, start, trace, sandbox, clock
    ):
        url = start()  # rate_limit = 5/minute
        for _ in range(5):
            assert post(url, MADE_UP).status_code == 402
        trace.clear()
        first = post(url, MADE_UP)
        assert first.status_code == 429
        assert len(trace.writes()) == 2  # the count that said so, the window's one record
        trace.clear()
        for _ in range(20):
            refused = post(url, MADE_UP)
            assert refused.status_code == 429
            assert 0 < int(refused.headers["Retry-After"]) <= 60
        assert trace.statements == []  # not even a read
        assert sandbox.calls["api-micropaiement"] == 5
        clock.advance(60)  # the window has ended, and what this process remembered with it
        assert post(url, sandbox.issue_code()).status_code == 303

    def test_malformed_codes_cost_no_write_past_the_journals_bound(self, start, trace):
        url = start()
        trace.clear()
        for _ in range(50):  # 10 x rate_limit journaled: a typo is still on record
            assert post(url, "abc").status_code == 400
        assert len(trace.writes()) == 50
        trace.clear()
        for _ in range(100):
            assert post(url, "abc").status_code == 400
        assert trace.statements == []


class TestTheWindowsRefusalIsJournaled:
    def test_once_even_when_the_count_passed_the_limit_without_a_refusal(
        self, start, tmp_path, clock
    ):
        """Submissions are counted with their records after a read of the count, so
        several at once (other processes, or restores and busy refusals, which the limit
        does not refuse) can take it past the limit before any 429. The window's first
        429 is still journaled, once."""
        url = start()  # 5/minute
        assert post(url, MADE_UP).status_code == 402
        store = SqliteStore(f"{tmp_path}/gate.sqlite3")
        try:
            [first] = store.journal()
            for _ in range(6):  # what submissions racing in other processes counted
                store.hit(f"{first.gate}|{first.client}", 60, clock.now)
            for _ in range(3):
                assert post(url, MADE_UP).status_code == 429
            assert len(store.journal(outcome="rate-limited")) == 1
        finally:
            store.close()


class TestTheStoreStaysTheAuthority:
    """What a process remembers only skips writes for a client the store said is over
    the limit: the limit holds across the processes sharing the store."""

    def test_another_process_refuses_a_client_the_store_counted_out(self, start, trace, sandbox):
        first, second = start(), start()  # two workers of one site
        for _ in range(5):
            assert post(first, MADE_UP).status_code == 402
        assert post(first, MADE_UP).status_code == 429
        trace.clear()
        assert post(second, MADE_UP).status_code == 429  # it knew nothing: the store said
        assert len(trace.writes()) == 1  # counted, but the window's record exists already
        trace.clear()
        assert post(second, MADE_UP).status_code == 429
        assert trace.statements == []
        assert sandbox.calls["api-micropaiement"] == 5

    def test_submissions_spread_over_processes_get_the_limit_and_no_more(self, start, sandbox):
        sites = [start(), start(), start()]
        statuses = [post(sites[n % 3], MADE_UP).status_code for n in range(12)]
        assert statuses == [402] * 5 + [429] * 7
        assert sandbox.calls["api-micropaiement"] == 5

    def test_the_limit_is_exact_when_processes_race_for_the_last_places(self, start, sandbox):
        """4 submissions at once, one in each of 4 processes, 2 places left: 2 reach
        AlloConv. The count each read before says there is room; the one made with the
        pending record, in its transaction, decides."""
        sites = [start(rate_limit="10/minute") for _ in range(4)]
        for _ in range(8):
            assert post(sites[0], MADE_UP).status_code == 402
        barrier = threading.Barrier(4)
        statuses = []

        def submit(n):
            session = requests.Session()
            session.trust_env = False
            session.get(sites[n] + "/", timeout=TIMEOUT)  # connected before the race
            barrier.wait(TIMEOUT)
            statuses.append(post(sites[n], MADE_UP, session).status_code)

        threads = [threading.Thread(target=submit, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT * 2)
        assert sorted(statuses) == [402, 402, 429, 429]
        assert sandbox.calls["api-micropaiement"] == 10


class TestSeveralHosts:
    def test_hosts_sharing_a_redis_get_the_limit_and_no_more(
        self, sandbox_url, redis_url, sandbox, clock
    ):
        """Two hosts, each its own process memory, one Redis: 5 a minute in all."""
        settings = {
            "api_key": "sandbox-key",
            "secret": SECRET,
            "palier": "fra1",
            "prefixes": "/premium",
            "api_base": sandbox_url,
            "timeout": "2",
            "store": redis_url,
        }
        gates = [Gate(paid_app, clock=clock, **settings) for _ in range(2)]
        servers = [serve(gate, threads=4) for gate in gates]
        try:
            statuses = [post(servers[n % 2].url, MADE_UP).status_code for n in range(10)]
        finally:
            for server in servers:
                server.close()
            for gate in gates:
                gate.store.close()
        assert statuses == [402] * 5 + [429] * 5
        assert sandbox.calls["api-micropaiement"] == 5
