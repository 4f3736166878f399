"""Paying visitors get through a burst, and a hanging AlloConv does not take the site down.

The gate runs under waitress with 8 threads in front of a small app, the sandbox answers
as AlloConv over loopback, the store is a real sqlite file, and each visitor posts from
its own loopback address (127.0.x.1), as separate clients of a real site do. The circuit
breaker's cool-down is read on an injected clock; the age of calls in flight is real time,
since the waits it bounds are real.
"""

from __future__ import annotations

import collections
import http.client
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from bs4 import BeautifulSoup
from clock import FakeClock
from servers import serve

from alloconv_gate import Gate
from alloconv_gate.messages import catalogue
from alloconv_gate.slots import COOL_DOWN, FAILURES, RETRY_AFTER_BUSY, SLOW

SECRET = "slots-tests-secret-that-is-long-enough-0123456"
THREADS = 8  # waitress threads, as the issue measured
TEXT = catalogue("fr")
PAGE = "/premium/article"
HTTP_TIMEOUT = 30


def content(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [f"content at {environ['PATH_INFO']}".encode()]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str
    seconds: float  # from sending the request to the end of the answer

    @property
    def alert(self) -> str:
        found = BeautifulSoup(self.body, "html.parser").find(attrs={"role": "alert"})
        return found.text if found else ""

    @property
    def cookie(self) -> str:
        jar = SimpleCookie(self.headers.get("set-cookie", ""))
        return "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items())


@dataclass
class Site:
    gate: Gate
    port: int

    def request(self, method, path, *, body=None, headers=None, source=1) -> Answer:
        """One request on a new connection from 127.0.``source``.1 (each its own /24), or
        from ``source`` if it is an address."""
        address = source if isinstance(source, str) else f"127.0.{source}.1"
        connection = http.client.HTTPConnection(
            "127.0.0.1",
            self.port,
            timeout=HTTP_TIMEOUT,
            source_address=(address, 0),
        )
        started = time.monotonic()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        seconds = time.monotonic() - started
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, headers, text, seconds)

    def submit(self, code, *, source=1, json_body=False) -> Answer:
        if json_body:
            body = json.dumps({"code": code})
            kind = "application/json"
        else:
            body, kind = urlencode({"code": code}), "application/x-www-form-urlencoded"
        return self.request("POST", PAGE, body=body, headers={"Content-Type": kind}, source=source)

    def get(self, path, cookie=None) -> Answer:
        return self.request("GET", path, headers={"Cookie": cookie} if cookie else {})


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def start(sandbox_url, tmp_path, clock):
    servers = []

    def start(**options) -> Site:
        settings = {
            "api_key": "sandbox-key",
            "secret": SECRET,
            "palier": "fra1",
            "prefixes": "/premium",
            "api_base": sandbox_url,
            "store": f"sqlite:///{tmp_path}/alloconv.sqlite3",
            "number": "08 90 00 00 00",
            "rate_limit": "off",
            **options,
        }
        gate = Gate(content, clock=clock, **settings)
        server = serve(gate, threads=THREADS)
        servers.append(server)
        return Site(gate, server.port)

    yield start
    for server in servers:
        server.close()


def calls(sandbox):
    return sandbox.calls["api-micropaiement"]


def wait_for_calls(sandbox, count, seconds=5.0):
    deadline = time.monotonic() + seconds
    while calls(sandbox) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls(sandbox) == count


def burst(site, codes, first_source=2):
    """The codes posted at once, each from its own address; their answers, in order."""
    barrier = threading.Barrier(len(codes))

    def post(numbered):
        n, code = numbered
        barrier.wait(HTTP_TIMEOUT)
        return site.submit(code, source=first_source + n)

    with ThreadPoolExecutor(len(codes)) as pool:
        return list(pool.map(post, enumerate(codes)))


class TestAHealthyBurst:
    """With the default max_pending (2) and AlloConv answering, 8 visitors paying at the
    same moment all get in: the ones that find the slots busy wait a moment for one.
    (Before: 2 got in and the rest got 503.)"""

    @pytest.mark.parametrize(
        "delay",
        [
            pytest.param(0.0, id="alloconv-answers-at-once"),
            pytest.param(0.1, id="alloconv-answers-in-100ms"),
        ],
    )
    def test_8_concurrent_submissions_are_all_verified(self, start, sandbox, delay):
        site = start()
        assert site.gate.config.max_pending == 2  # the default
        if delay:
            sandbox.set_fault("slow", script="api-micropaiement", delay=delay)
        codes = [sandbox.issue_code() for _ in range(THREADS)]
        answers = burst(site, codes)
        assert [a.status for a in answers] == [303] * THREADS
        assert all(sandbox.is_used(code) for code in codes)
        assert calls(sandbox) == THREADS
        for answer in answers:  # and each cookie opens the page
            assert site.get(PAGE, answer.cookie).status == 200
        outcomes = [r.outcome for r in site.gate.store.journal()]
        assert outcomes == ["ok"] * THREADS


class TestASlowAlloConv:
    """AlloConv healthy but slow (0.9 s an answer): made-up codes sent at once from as
    many addresses as an attacker likes hold the slots' threads and at most one more;
    the others are refused at once, so a small server keeps threads for the site."""

    def test_a_storm_holds_no_more_than_the_slots_and_one(self, start, sandbox):
        site = start()  # max_pending 2
        sandbox.set_fault("slow", script="api-micropaiement", delay=0.9)
        try:
            for n in range(3):  # AlloConv's pace is learnt from its answers
                assert site.submit(f"WARMUP0{n}", source=100 + n).status == 402
            answers = burst(site, [f"MADEUP{n:02}" for n in range(12)])
        finally:
            sandbox.clear_fault()
        refused_at_once = [a for a in answers if a.status == 503 and a.seconds < 0.5]
        assert len(refused_at_once) >= 12 - 2 - 1
        for answer in refused_at_once:
            assert answer.headers["retry-after"] == str(RETRY_AFTER_BUSY)
            assert answer.alert == TEXT["error_busy"]
        assert calls(sandbox) <= 3 + 3  # the warm-up, the slots, and the one that waited


class TestOneNetworksShare:
    """An attacker with many addresses of one network (an IPv4 /24 here; an IPv6 /48 of
    /64s alike) sends made-up codes without pause while AlloConv answers in 0.2 s: the
    network holds half of max_pending, in flight or waiting, so paying visitors still
    get in. (Before, with the short queue, they were all refused.)"""

    def test_paying_visitors_get_in_while_a_network_floods(self, start, sandbox):
        site = start()  # max_pending 2: one place for the network
        sandbox.set_fault("slow", script="api-micropaiement", delay=0.2)
        stop = threading.Event()
        statuses = collections.Counter()

        def flood(host):
            n = 0
            while not stop.is_set():
                n += 1
                answer = site.submit(f"MADE{host:02}{n:04}", source=f"127.0.200.{host}")
                statuses[answer.status] += 1

        try:
            with ThreadPoolExecutor(12) as pool:
                for host in range(2, 14):
                    pool.submit(flood, host)
                time.sleep(0.5)  # the flood under way
                paying = [site.submit(sandbox.issue_code(), source=20 + n) for n in range(8)]
                stop.set()
        finally:
            stop.set()
            sandbox.clear_fault()
        assert [a.status for a in paying] == [303] * 8
        assert statuses[503] > 0  # the flood was turned away, not served
        assert all(a.seconds < 2 for a in paying)


class TestAHangingAlloConv:
    """50 submissions while AlloConv hangs: the slots' calls wait for AlloConv, the rest
    are refused at once (no call, the code not spent), and the rest of the site answers
    at its usual latency."""

    def test_50_submissions_leave_the_site_answering(self, start, sandbox):
        site = start(timeout="5")
        paid = site.submit(sandbox.issue_code(), source=200)
        assert paid.status == 303
        cookie = paid.cookie

        def site_latency(rounds):
            seconds = []
            for _ in range(rounds):
                for answer in (site.get("/free"), site.get(PAGE, cookie)):
                    assert answer.status == 200
                    seconds.append(answer.seconds)
            return seconds

        usual = site_latency(20)
        before = calls(sandbox)
        sandbox.set_fault("hang", script="api-micropaiement")
        codes = [sandbox.issue_code() for _ in range(50)]
        try:
            with ThreadPoolExecutor(1) as pool:
                submissions = pool.submit(burst, site, codes)
                time.sleep(0.05)  # the burst is on its way
                during = site_latency(20)
                # All the refusals are in while the two slots' calls still hang.
                wait_for_calls(sandbox, before + 2)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not _refusals_in(site, 48):
                    time.sleep(0.02)
                refused_while_hanging = _refusals_in(site, 48)
                held = calls(sandbox) - before
                sandbox.clear_fault()
                answers = submissions.result(HTTP_TIMEOUT)
        finally:
            sandbox.clear_fault()

        assert refused_while_hanging
        assert held == 2  # only the slots' calls reached AlloConv
        refusals = [a for a in answers if a.status == 503]
        assert len(refusals) == 48
        assert sorted(a.status for a in answers if a.status != 503) == [303, 303]
        for refusal in refusals:
            assert refusal.headers["retry-after"] == str(RETRY_AFTER_BUSY)
            assert refusal.alert == TEXT["error_busy"]
            # within the slow threshold and the queue of 8 threads, far from the 5 s hang
            assert refusal.seconds < SLOW + 1.0
        assert sum(1 for c in codes if sandbox.is_used(c)) == 2  # the others not spent
        # The site: no page waited for the hang.
        assert max(during) < SLOW + 1.0, (max(during), statistics.median(usual))
        assert statistics.median(during) < statistics.median(usual) + 0.1


def _refusals_in(site, count):
    """Whether ``count`` submissions were journaled as not sent (refused by the slots)."""
    journal = site.gate.store.journal(limit=200)
    return sum(1 for r in journal if r.outcome == "unavailable") >= count


class TestTheCircuitBreaker:
    """Consecutive timeouts open it: every submission then gets 503 at once, without a
    call and without spending the code; after the cool-down one probe is let through, and
    an answer closes it (a timeout opens it again)."""

    def open_it(self, site, sandbox, first_source=2):
        """FAILURES submissions at once, each timing out (max_pending lets them all in)."""
        sandbox.set_fault("hang", script="api-micropaiement")
        try:
            answers = burst(site, [f"HANGING{n}" for n in range(FAILURES)], first_source)
        finally:
            sandbox.clear_fault()
        assert [a.status for a in answers] == [503] * FAILURES
        assert all(TEXT["error_lost"].split("{")[0] in a.alert for a in answers)

    def test_timeouts_open_it_and_a_good_probe_closes_it(self, start, sandbox, clock):
        site = start(timeout="0.5", max_pending=str(FAILURES))
        self.open_it(site, sandbox)
        before = calls(sandbox)
        code = sandbox.issue_code()

        refused = site.submit(code, source=20)
        assert refused.status == 503
        assert refused.headers["retry-after"] == str(COOL_DOWN)
        assert refused.alert == TEXT["error_unavailable"]  # "your code is not lost"
        assert refused.seconds < 0.5  # at once: no wait for AlloConv's timeout
        as_json = site.submit(code, source=21, json_body=True)
        assert as_json.status == 503
        assert json.loads(as_json.body)["error"] == "unavailable"
        clock.advance(COOL_DOWN - 10)
        later = site.submit(code, source=22)
        assert (later.status, later.headers["retry-after"]) == (503, "10")
        assert calls(sandbox) == before  # none of them was sent
        assert not sandbox.is_used(code)

        clock.advance(10)  # the cool-down is over: the next submission is the probe
        assert site.submit(code, source=23).status == 303
        assert [a.status for a in burst(site, [sandbox.issue_code() for _ in range(3)])] == [
            303
        ] * 3  # closed
        outcomes = [r.outcome for r in site.gate.store.journal(limit=100)]
        assert outcomes.count("unavailable") == 3  # the refusals are journaled

    def test_a_probe_that_times_out_opens_it_again(self, start, sandbox, clock):
        site = start(timeout="0.5", max_pending=str(FAILURES))
        self.open_it(site, sandbox)
        clock.advance(COOL_DOWN)
        sandbox.set_fault("hang", script="api-micropaiement")
        try:
            probe = site.submit("PROBECODE1", source=30)
        finally:
            sandbox.clear_fault()
        assert probe.status == 503  # the probe's answer was lost
        code = sandbox.issue_code()
        again = site.submit(code, source=31)
        assert (again.status, again.headers["retry-after"]) == (503, str(COOL_DOWN))
        assert not sandbox.is_used(code)

    def test_other_submissions_are_refused_while_the_probe_is_in_flight(
        self, start, sandbox, clock
    ):
        site = start(timeout="3", max_pending=str(FAILURES))
        self.open_it(site, sandbox)
        clock.advance(COOL_DOWN)
        sandbox.set_fault("hang", script="api-micropaiement")
        before = calls(sandbox)
        with ThreadPoolExecutor(1) as pool:
            probe = pool.submit(site.submit, sandbox.issue_code(), source=40)
            try:
                wait_for_calls(sandbox, before + 1)
                refused = site.submit(sandbox.issue_code(), source=41)
            finally:
                sandbox.clear_fault()
            assert probe.result(HTTP_TIMEOUT).status == 303  # the probe's answer came
        assert refused.status == 503
        assert refused.headers["retry-after"] == str(RETRY_AFTER_BUSY)
        assert refused.alert == TEXT["error_unavailable"]
        assert refused.seconds < 1
        assert site.submit(sandbox.issue_code(), source=42).status == 303  # closed

    def test_failures_that_come_back_at_once_do_not_open_it(self, start, sandbox):
        """A broken connection or a refused one holds no thread: the breaker is for
        hangs. Each such code is still a lost (or unsent) answer, handled as before."""
        site = start(timeout="3", max_pending=str(FAILURES))
        sandbox.set_fault("drop", script="api-micropaiement")
        try:
            for n in range(2 * FAILURES):
                answer = site.submit(f"DROPPED{n}", source=2 + n)
                assert answer.status == 503
                assert TEXT["error_lost"].split("{")[0] in answer.alert
        finally:
            sandbox.clear_fault()
        code = sandbox.issue_code()
        assert site.submit(code, source=30).status == 303  # sent, not refused at once
        assert sandbox.is_used(code)

    def test_an_answer_between_timeouts_keeps_it_closed(self, start, sandbox):
        site = start(timeout="0.5", max_pending="1")
        for _ in range(3):
            sandbox.set_fault("hang", script="api-micropaiement")
            try:
                for n in range(FAILURES - 1):
                    assert site.submit(f"HANGING{n}", source=2 + n).status == 503
            finally:
                sandbox.clear_fault()
            assert site.submit(sandbox.issue_code(), source=9).status == 303


class TestEachRefusal:
    """The status, Retry-After and message of the slots' refusals (the breaker's are in
    TestTheCircuitBreaker)."""

    def test_busy_while_alloconv_is_slow(self, start, sandbox):
        site = start(timeout="5", max_pending="1")
        sandbox.set_fault("slow", script="api-micropaiement", delay=3)
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(site.submit, sandbox.issue_code(), source=2)
            try:
                wait_for_calls(sandbox, 1)
                code = sandbox.issue_code()
                refused = site.submit(code, source=3)
                json_refused = site.submit(code, source=4, json_body=True)
            finally:
                sandbox.clear_fault()
            assert held.result(HTTP_TIMEOUT).status == 303  # slow is not failed
        assert refused.status == 503
        assert refused.headers["retry-after"] == str(RETRY_AFTER_BUSY)
        assert refused.alert == TEXT["error_busy"]
        # it waited while the call in flight looked healthy, no longer
        assert refused.seconds < SLOW + 0.5
        assert json.loads(json_refused.body)["error"] == "unavailable"
        assert json_refused.headers["retry-after"] == str(RETRY_AFTER_BUSY)
        assert not sandbox.is_used(code)
        assert site.submit(code, source=3).status == 303  # typed again, it passes

    def test_one_verification_per_client_address(self, start, sandbox):
        site = start(timeout="5", max_pending="4")
        sandbox.set_fault("slow", script="api-micropaiement", delay=2)
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(site.submit, sandbox.issue_code(), source=2)
            try:
                wait_for_calls(sandbox, 1)
                code = sandbox.issue_code()
                same = site.submit(code, source=2)  # slots are free, but not for them
                other = site.submit(sandbox.issue_code(), source=3)
            finally:
                sandbox.clear_fault()
            assert held.result(HTTP_TIMEOUT).status == 303
        assert same.status == 503
        assert same.headers["retry-after"] == str(RETRY_AFTER_BUSY)
        assert same.alert == TEXT["error_busy"]
        assert same.seconds < 0.5  # at once
        assert not sandbox.is_used(code)
        assert other.status == 303  # someone else is not refused for it

    def test_a_client_waiting_for_a_slot_holds_its_one_place(self, start, sandbox):
        """A client cannot fill the server's threads with submissions that wait."""
        site = start(timeout="5", max_pending="1")
        sandbox.set_fault("slow", script="api-micropaiement", delay=0.6)  # healthy, not fast
        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(site.submit, sandbox.issue_code(), source=2)
            wait_for_calls(sandbox, 1)
            waiting = pool.submit(site.submit, sandbox.issue_code(), source=3)
            time.sleep(0.1)  # it is waiting for the slot
            code = sandbox.issue_code()
            again = site.submit(code, source=3)
            statuses = [held.result(HTTP_TIMEOUT).status, waiting.result(HTTP_TIMEOUT).status]
        assert statuses == [303, 303]  # the waiting one got the slot when it was free
        assert again.status == 503
        assert again.headers["retry-after"] == str(RETRY_AFTER_BUSY)
        assert again.alert == TEXT["error_busy"]
        assert again.seconds < 0.4  # at once, not after the wait
        assert not sandbox.is_used(code)
