"""The redis store against a real redis-server: the whole store contract, then what only
Redis shows: several hosts sharing it, and Redis going down, hanging or refusing writes.

Two ``RedisStore`` instances on the same Redis stand for two hosts behind a load balancer:
they share nothing but Redis, as two hosts would.
"""

import re
import socket
import sys
import threading
import time
import traceback

import pytest
import redis
from store_contract import StoreContract

from alloconv_gate.store import Attempt, Redemption, StoreError, open_store, redis_store
from alloconv_gate.store.memory import MemoryStore
from alloconv_gate.store.redis_store import RedisStore

#: A call on a Redis that is down must fail well within this (connection refused is instant).
DOWN_BOUND = 3.0
#: The timeout given to stores whose Redis hangs, and how long a call may then take: one
#: timeout and some slack, not the several timeouts that retrying would add.
HANG_TIMEOUT = 0.5
HANG_BOUND = 3 * HANG_TIMEOUT
PASSWORD = "s3cret-Pw"


def attempt(id_, *, time=1000.0, gate="/paid", code_hash="ab" * 8, outcome="pending"):
    return Attempt(id_, time, gate, "1", "192.0.2.1", "AB12****", code_hash, outcome)


class TestRedisStore(StoreContract):
    """The store contract, every test of it, against real Redis."""

    @pytest.fixture
    def store(self, redis_url):
        store = RedisStore(redis_url)
        yield store
        store.close()


@pytest.fixture
def hosts(redis_url):
    """Two stores on one Redis: two hosts behind a load balancer."""
    first, second = RedisStore(redis_url), RedisStore(redis_url)
    yield first, second
    first.close()
    second.close()


def race(calls):
    """Run ``calls`` in threads released together; their results, in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class TestSeveralHosts:
    """What one host writes, every host sees at once, and races between hosts have one
    winner: the guarantees a load balancer must not break."""

    def test_a_record_written_on_one_host_is_completed_and_read_on_the_other(self, hosts):
        first, second = hosts
        first.record(attempt("a1"))
        second.complete("a1", "unknown", 3.5, "ReadTimeout")
        assert [(a.id, a.outcome, a.latency) for a in first.journal()] == [("a1", "unknown", 3.5)]

    def test_one_id_recorded_by_two_hosts_at_once_is_kept_once(self, hosts):
        first, second = hosts
        outcomes = race(
            [lambda store=store: _raises(store.record, attempt("same")) for store in hosts * 5]
        )
        assert outcomes.count(None) == 1
        assert len(first.journal()) == len(second.journal()) == 1

    def test_rate_limit_counts_every_hosts_hits(self, hosts):
        first, second = hosts
        assert [first.hit("/paid|192.0.2.1", 60, 1020.0) for _ in range(3)] == [1, 2, 3]
        assert second.hit("/paid|192.0.2.1", 60, 1079.9) == 4
        assert second.hit("/paid|192.0.2.1", 60, 1080.0) == 1

    def test_hits_racing_on_two_hosts_each_get_their_own_count(self, hosts):
        counts = race([lambda store=store: store.hit("k", 60, 0.0) for store in hosts * 20])
        assert sorted(counts) == list(range(1, 41))

    def test_a_code_accepted_through_one_host_is_restored_through_the_other(self, hosts):
        first, second = hosts
        first.redeem("/paid", "ab" * 8, 1000.0, 87400.0)
        second.redeem("/paid", "ab" * 8, 2000.0, 88400.0)
        found = second.redemption("/paid", "ab" * 8)
        assert (found.granted_at, found.ends_at, found.devices) == (1000.0, 87400.0, 1)
        assert second.redemption("/other", "ab" * 8) is None

    def test_hosts_racing_for_the_last_devices_share_the_limit(self, hosts):
        first, _ = hosts
        first.redeem("/paid", "ab" * 8, 1000.0, 87400.0)
        added = race(
            [lambda store=store: store.add_device("/paid", "ab" * 8, 3) for store in hosts * 10]
        )
        assert added.count(True) == 2
        assert first.redemption("/paid", "ab" * 8).devices == 3

    def test_a_support_link_used_on_two_hosts_at_once_works_once(self, hosts):
        used = race([lambda store=store: store.use_grant("g1", 1000.0) for store in hosts * 10])
        assert used.count(True) == 1
        assert not hosts[0].use_grant("g1", 5000.0)


def _raises(call, *args):
    try:
        call(*args)
    except StoreError as error:
        return error
    return None


class TestJournalPages:
    """The journal is read a page at a time; across page boundaries (and many records at
    the same second) support sees each record once, newest first."""

    @pytest.fixture
    def stores(self, redis_url, monkeypatch):
        monkeypatch.setattr(redis_store, "PAGE", 4)
        store = RedisStore(redis_url)
        reference = MemoryStore()
        for number in range(40):
            made = attempt(
                f"a{number:02}",
                time=1000.0 + number // 7,
                gate="/paid" if number % 3 else "/other",
                code_hash=("ab" if number % 2 else "cd") * 8,
                outcome="unknown" if number % 5 == 0 else "pending",
            )
            store.record(made)
            reference.record(made)
        yield store, reference
        store.close()

    @pytest.mark.parametrize(
        "filters",
        [
            pytest.param({}, id="all"),
            pytest.param({"limit": 9}, id="limit"),
            pytest.param({"since": 1003.0}, id="since"),
            pytest.param({"outcome": "unknown", "gate": "/paid"}, id="outcome-and-gate"),
            pytest.param({"code_hash": "ab" * 8, "since": 1002.0, "limit": 5}, id="code"),
            pytest.param({"gate": "/other"}, id="gate"),
        ],
    )
    def test_each_record_once_newest_first(self, stores, filters):
        store, reference = stores
        found = store.journal(**filters)
        expected = reference.journal(**filters)
        assert len({a.id for a in found}) == len(found)
        assert [a.time for a in found] == [a.time for a in expected]
        if "limit" not in filters:
            assert set(found) == set(expected)


CALLS = [
    pytest.param(lambda s: s.record(attempt("a1")), id="record"),
    pytest.param(lambda s: s.complete("a2", "ok", 0.2, "OK"), id="complete"),
    pytest.param(lambda s: s.journal(outcome="unknown"), id="journal"),
    pytest.param(lambda s: s.redemption("/paid", "ab" * 8), id="redemption"),
    pytest.param(lambda s: s.redeem("/paid", "ab" * 8, 1000.0, 2000.0), id="redeem"),
    pytest.param(lambda s: s.add_device("/paid", "ab" * 8, 3), id="add_device"),
    pytest.param(lambda s: s.hit("k", 60, 1000.0), id="hit"),
    pytest.param(lambda s: s.count("k", 60, 1000.0), id="count"),
    pytest.param(lambda s: s.record_counted(attempt("a1"), "k", 60, 5), id="record_counted"),
    pytest.param(lambda s: s.settle(attempt("a1", outcome="ok")), id="settle"),
    pytest.param(lambda s: s.use_grant("g1", 1000.0), id="use_grant"),
    pytest.param(lambda s: s.ping(), id="ping"),
]


def timed_failure(call, store):
    """The StoreError ``call(store)`` raises, and how long it took to come."""
    started = time.monotonic()
    with pytest.raises(StoreError) as raised:
        call(store)
    return raised.value, time.monotonic() - started


class TestRedisFailing:
    """A failing Redis must make the store fail fast and clearly (the gate then refuses
    to spend codes), and must not need the site restarted once Redis is back."""

    @pytest.mark.parametrize("call", CALLS)
    def test_redis_down_fails_at_once_and_the_store_works_when_it_is_back(
        self, redis_server, redis_url, call
    ):
        store = RedisStore(redis_url)
        try:
            store.ping()  # leaves a pooled connection, which Redis will drop
            redis_server.stop()
            error, took = timed_failure(call, store)
            assert took < DOWN_BOUND
            assert redis_url in str(error)
            redis_server.start()
            store.record(attempt("a2"))
            call(store)
            assert "a2" in [a.id for a in store.journal()]
        finally:
            store.close()

    @pytest.mark.parametrize("call", CALLS)
    def test_a_hanging_redis_fails_within_the_timeout(self, redis_server, redis_url, call):
        store = RedisStore(redis_url, timeout=HANG_TIMEOUT)
        try:
            store.ping()
            redis_server.pause()
            error, took = timed_failure(call, store)
            assert took < HANG_BOUND
            assert "Timeout" in str(error) or "timed out" in str(error)
            redis_server.resume()
            assert store.hit("after", 60, 1000.0) == 1
        finally:
            redis_server.resume()
            store.close()

    def test_an_unreachable_redis_fails_at_start_up_naming_it(self):
        url = f"redis://127.0.0.1:{_refused_port()}/0"
        with pytest.raises(StoreError, match="Connection refused") as raised:
            open_store(url)
        assert url in str(raised.value)

    def test_a_redis_that_never_answers_fails_at_start_up_within_the_timeout(self):
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
            started = time.monotonic()
            with pytest.raises(StoreError) as raised:
                RedisStore(url, timeout=HANG_TIMEOUT)
            assert time.monotonic() - started < HANG_BOUND
        assert url in str(raised.value)

    def test_a_redis_refusing_writes_fails_at_start_up(self, redis_server, redis_url):
        """A read-only replica answers PING; the gate would only find out at the first
        payment that it cannot journal it."""
        admin = redis.Redis.from_url(redis_url)
        try:
            admin.replicaof("127.0.0.1", str(_refused_port()))
            with pytest.raises(StoreError, match=r"(?i)read.only"):
                RedisStore(redis_url)
        finally:
            admin.replicaof("NO", "ONE")
            admin.close()

    def test_a_bad_url_fails_at_start_up_naming_it(self):
        with pytest.raises(StoreError, match=re.escape("redis://127.0.0.1:port/0")):
            RedisStore("redis://127.0.0.1:port/0")


def _refused_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _told(error):
    """Everything a log line with the traceback would show of ``error``."""
    return "".join(traceback.format_exception(error))


class TestPassword:
    """The Redis password never reaches an error message or a log."""

    @pytest.mark.parametrize(
        "template",
        [
            pytest.param("redis://:{password}@127.0.0.1:{port}/0", id="password"),
            pytest.param("redis://gate:{password}@127.0.0.1:{port}/0", id="user-password"),
            pytest.param("redis://127.0.0.1:{port}/0?password={password}", id="query"),
        ],
    )
    def test_unreachable(self, template):
        url = template.format(password=PASSWORD, port=_refused_port())
        with pytest.raises(StoreError) as raised:
            open_store(url)
        assert "127.0.0.1" in str(raised.value)
        assert PASSWORD not in _told(raised.value)

    @pytest.fixture
    def user_url(self, redis_server, redis_url):
        """A URL for a Redis user ``gate`` with a password, as production would have."""
        admin = redis.Redis.from_url(redis_url)
        admin.acl_setuser(
            "gate", enabled=True, passwords=["+" + PASSWORD], keys="*", commands=["+@all"]
        )
        admin.close()
        return f"redis://gate:{PASSWORD}@127.0.0.1:{redis_server.port}/0"

    def test_wrong_password(self, user_url):
        with pytest.raises(StoreError, match=r"(?i)password") as raised:
            RedisStore(user_url.replace(PASSWORD, "not-" + PASSWORD))
        assert PASSWORD not in _told(raised.value)

    def test_failing_later(self, redis_server, user_url):
        store = RedisStore(user_url)
        try:
            redis_server.stop()
            error, _ = timed_failure(lambda s: s.hit("k", 60, 1000.0), store)
            assert f"redis://gate:***@127.0.0.1:{redis_server.port}/0" in str(error)
            assert PASSWORD not in _told(error)
        finally:
            store.close()


def test_without_the_redis_extra_start_up_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)
    url = f"redis://:{PASSWORD}@127.0.0.1:6379/0"
    with pytest.raises(StoreError) as raised:
        open_store(url)
    assert str(raised.value) == (
        "store = redis://:***@127.0.0.1:6379/0 needs the redis package: "
        "pip install alloconv_gate[redis]"
    )


def test_keys_stay_under_the_prefix_and_only_counters_and_grants_expire(redis_url):
    """A Redis shared with other applications: the gate's keys are recognisable, and
    only what is safe to forget (counters, used grants) expires; the journal and the
    redemptions stay for support."""
    store = RedisStore(redis_url)
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        store.record(attempt("a1", outcome="unknown"))
        store.redeem("/paid", "ab" * 8, 1000.0, 2000.0)
        store.hit("k", 60, 1000.0)
        store.record_counted(attempt("a2"), "k2", 60)
        store.settle(
            attempt("a2", outcome="ok"),
            [Redemption("/paid", "cd" * 8, 1000.0, 2000.0, 1)],
        )
        store.use_grant("g1", 1000.0)
        keys = admin.keys("*")
        assert all(key.startswith("alloconv_gate:") for key in keys)
        expiring = {key.split(":")[1] for key in keys if admin.ttl(key) > 0}
        assert expiring == {"hit", "grant", "ping"}
    finally:
        admin.close()
        store.close()
