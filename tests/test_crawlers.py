"""Search engines' crawlers through the gate: reverse then forward DNS, never the
User-Agent alone, answers cached. DNS is an injected resolver: no test leaves the host."""

import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import requests
from clock import FakeClock
from servers import client_address_from_header, serve
from webtest import TestApp

from alloconv_gate import ConfigError, Gate
from alloconv_gate.config import parse_options
from alloconv_gate.crawlers import (
    ERROR_TTL,
    MAX_LOOKUPS,
    MAX_THREADS,
    MAX_WAITING,
    NETWORK_LOOKUPS,
    CrawlerCheck,
    SystemResolver,
)

KEY = "sandbox-key"
SECRET = "correct-horse-battery-staple-0123456789"
PAID = b"the paid article"

GOOGLEBOT_UA = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.6478.126 Mobile Safari/537.36 "
    "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)
BINGBOT_UA = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"

GOOGLE_IP = "66.249.66.1"
GOOGLE_HOST = "crawl-66-249-66-1.googlebot.com"
GOOGLE_IP6 = "2001:4860:4801:10::1"
GOOGLE_HOST6 = "crawl-2001-4860-4801-10--1.googlebot.com"
BING_IP = "157.55.39.1"
BING_HOST = "msnbot-157-55-39-1.search.msn.com"
OTHER_IP = "203.0.113.7"


class FakeResolver:
    """DNS from two dicts, counting every question."""

    def __init__(self, ptr=None, addresses=None, error=None):
        self.ptr = {
            GOOGLE_IP: GOOGLE_HOST + ".",  # as PTR answers come: with the root's dot
            GOOGLE_IP6: GOOGLE_HOST6,
            BING_IP: BING_HOST,
            **(ptr or {}),
        }
        self.addresses = {
            GOOGLE_HOST: [GOOGLE_IP],
            # forward answers in the long form: compared as addresses, not strings
            GOOGLE_HOST6: ["2001:4860:4801:10:0:0:0:1"],
            BING_HOST: [BING_IP],
            **(addresses or {}),
        }
        self.error = error
        self.calls = []

    def reverse(self, address):
        self.calls.append(("reverse", address))
        if self.error:
            raise self.error
        return self.ptr.get(address)

    def forward(self, hostname):
        self.calls.append(("forward", hostname))
        return list(self.addresses.get(hostname, []))


class RecordingApp:
    def __init__(self):
        self.environs = []

    def __call__(self, environ, start_response):
        self.environs.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
        return [PAID]

    def crawlers(self):
        """The engines of the requests that reached the app as a verified crawler."""
        return [e["alloconv_gate.crawler"] for e in self.environs if "alloconv_gate.crawler" in e]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def resolver():
    return FakeResolver()


@pytest.fixture
def app():
    return RecordingApp()


@pytest.fixture
def make_gate(sandbox_url, clock, resolver, app):
    def make(**options):
        settings = {
            "api_key": KEY,
            "secret": SECRET,
            "palier": "fra1",
            "prefixes": "/premium",
            "api_base": sandbox_url,
            "store": "memory",
            "crawlers": "google bing",
            **options,
        }
        return TestApp(Gate(app, clock=clock, resolver=resolver, **settings))

    return make


@pytest.fixture
def site(make_gate):
    return make_gate()


def visit(site, address, user_agent, status=200, path="/premium/article"):
    return site.get(
        path,
        headers={"User-Agent": user_agent},
        extra_environ={"REMOTE_ADDR": address},
        status=status,
    )


class TestVerifiedCrawlers:
    @pytest.mark.parametrize(
        ("address", "user_agent", "engine"),
        [
            pytest.param(GOOGLE_IP, GOOGLEBOT_UA, "google", id="googlebot"),
            pytest.param(GOOGLE_IP6, GOOGLEBOT_UA, "google", id="googlebot-ipv6"),
            pytest.param(f"::ffff:{GOOGLE_IP}", GOOGLEBOT_UA, "google", id="ipv4-mapped"),
            pytest.param(GOOGLE_IP, "Googlebot-Image/1.0", "google", id="googlebot-image"),
            pytest.param(BING_IP, BINGBOT_UA, "bing", id="bingbot"),
        ],
    )
    def test_reach_the_app(self, site, app, address, user_agent, engine):
        response = visit(site, address, user_agent)
        assert response.body == PAID
        assert app.environs[-1]["alloconv_gate.crawler"] == engine

    def test_get_the_same_private_headers_as_a_paying_visitor(self, site):
        response = visit(site, GOOGLE_IP, GOOGLEBOT_UA)
        assert response.headers["Cache-Control"] == "private, max-age=60"
        assert response.headers["Vary"] == "Cookie"

    def test_a_crawler_only_reads(self, site, app, resolver):
        site.post(
            "/premium/article",
            {"comment": "x"},
            headers={"User-Agent": GOOGLEBOT_UA},
            extra_environ={"REMOTE_ADDR": GOOGLE_IP},
            status=400,  # a form with no code, as from anyone
        )
        assert app.environs == []
        assert resolver.calls == []

    def test_ipv6_is_looked_up_as_given(self, site, resolver):
        visit(site, GOOGLE_IP6, GOOGLEBOT_UA)
        assert resolver.calls == [("reverse", GOOGLE_IP6), ("forward", GOOGLE_HOST6)]


class TestRefused:
    def test_forward_dns_giving_another_address(self, make_gate, resolver, app):
        resolver.addresses[GOOGLE_HOST] = ["66.249.66.2"]
        visit(make_gate(), GOOGLE_IP, GOOGLEBOT_UA, status=402)
        assert app.environs == []

    def test_forward_dns_giving_nothing(self, make_gate, resolver):
        resolver.addresses[GOOGLE_HOST] = []
        visit(make_gate(), GOOGLE_IP, GOOGLEBOT_UA, status=402)

    @pytest.mark.parametrize(
        "host",
        [
            pytest.param("crawl-203-0-113-7.googlebot.com.evil.example", id="suffix-after"),
            pytest.param("evilgooglebot.com", id="no-dot-boundary"),
            pytest.param("googlebot.com", id="the-bare-domain"),
            pytest.param("crawl-203-0-113-7.googlebot.co", id="other-tld"),
            # Google Cloud customers' VMs and Google's user-triggered fetchers: Google's
            # page lists these domains, but they fetch on behalf of anyone.
            pytest.param("7.113.0.203.bc.googleusercontent.com", id="gcp-vm"),
            pytest.param("203-0-113-7.gae.googleusercontent.com", id="user-triggered-gae"),
            pytest.param("google-proxy-203-0-113-7.google.com", id="user-triggered-proxy"),
            pytest.param("msnbot-203-0-113-7.search.msn.com.evil.example", id="bing-suffix"),
        ],
    )
    def test_look_alike_names(self, make_gate, resolver, app, host):
        # The attacker runs their own DNS: the forward lookup would agree.
        resolver.ptr[OTHER_IP] = host
        resolver.addresses[host] = [OTHER_IP]
        for user_agent in (GOOGLEBOT_UA, BINGBOT_UA):
            visit(make_gate(), OTHER_IP, user_agent, status=402)
        assert app.environs == []
        assert ("forward", host) not in resolver.calls  # refused on the name alone

    def test_a_bot_user_agent_from_an_address_with_no_name(self, site, resolver, app):
        visit(site, OTHER_IP, GOOGLEBOT_UA, status=402)
        assert resolver.calls == [("reverse", OTHER_IP)]
        assert app.environs == []

    def test_one_engines_user_agent_from_the_other_engines_crawler(self, site, app):
        visit(site, BING_IP, GOOGLEBOT_UA, status=402)
        visit(site, GOOGLE_IP, BINGBOT_UA, status=402)
        assert app.environs == []

    def test_an_engine_not_configured(self, make_gate, resolver, app):
        visit(make_gate(crawlers="google"), BING_IP, BINGBOT_UA, status=402)
        assert resolver.calls == []

    @pytest.mark.parametrize(
        "error",
        [
            pytest.param(socket.herror(2, "Host name lookup failure"), id="try-again"),
            pytest.param(socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), id="gaierror"),
            pytest.param(TimeoutError("timed out"), id="timeout"),
            pytest.param(RuntimeError("a broken resolver"), id="any-error"),
        ],
    )
    def test_a_resolver_error(self, make_gate, resolver, app, error):
        resolver.error = error
        visit(make_gate(), GOOGLE_IP, GOOGLEBOT_UA, status=402)
        assert app.environs == []

    @pytest.mark.parametrize("address", ["", "unknown", "66.249.66.1.evil", "::1::2"])
    def test_no_usable_client_address_is_not_looked_up(self, site, resolver, address):
        visit(site, address, GOOGLEBOT_UA, status=402)
        assert resolver.calls == []


class TestCost:
    def test_an_ordinary_visitor_costs_no_lookup(self, site, resolver):
        for address in (GOOGLE_IP, OTHER_IP):
            visit(site, address, BROWSER_UA, status=402)
        visit(site, GOOGLE_IP, "", status=402)
        site.get("/premium/article", extra_environ={"REMOTE_ADDR": GOOGLE_IP}, status=402)
        assert resolver.calls == []

    def test_outside_the_prefixes_nothing_is_looked_up(self, site, resolver, app):
        visit(site, GOOGLE_IP, GOOGLEBOT_UA, path="/free/article")
        assert resolver.calls == []
        assert "alloconv_gate.crawler" not in app.environs[-1]

    def test_one_lookup_for_many_requests_then_again_after_the_ttl(self, site, resolver, clock):
        for _ in range(5):
            visit(site, GOOGLE_IP, GOOGLEBOT_UA)
        assert resolver.calls == [("reverse", GOOGLE_IP), ("forward", GOOGLE_HOST)]
        clock.advance(86400 - 1)
        visit(site, GOOGLE_IP, GOOGLEBOT_UA)
        assert len(resolver.calls) == 2
        clock.advance(1)
        visit(site, GOOGLE_IP, GOOGLEBOT_UA)
        assert len(resolver.calls) == 4

    def test_a_refusal_is_cached_too(self, site, resolver, clock):
        for _ in range(5):
            visit(site, OTHER_IP, GOOGLEBOT_UA, status=402)
        assert resolver.calls == [("reverse", OTHER_IP)]
        clock.advance(86400)
        visit(site, OTHER_IP, GOOGLEBOT_UA, status=402)
        assert len(resolver.calls) == 2

    def test_a_cached_refusal_does_not_outlive_a_fixed_dns(self, site, resolver, clock):
        """A DNS failure is retried soon: it must not keep Googlebot out for a day."""
        resolver.error = OSError("network unreachable")
        visit(site, GOOGLE_IP, GOOGLEBOT_UA, status=402)
        visit(site, GOOGLE_IP, GOOGLEBOT_UA, status=402)
        assert len(resolver.calls) == 1
        resolver.error = None
        clock.advance(ERROR_TTL)
        visit(site, GOOGLE_IP, GOOGLEBOT_UA)

    def test_no_thread_for_a_lookup_is_the_gate_page_not_a_500(
        self, site, resolver, app, monkeypatch
    ):
        def start(thread):
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(threading.Thread, "start", start)
        visit(site, GOOGLE_IP, GOOGLEBOT_UA, status=402)
        assert resolver.calls == []
        assert app.environs == []
        monkeypatch.undo()  # threads again: the address is looked up, nothing kept busy
        visit(site, GOOGLE_IP, GOOGLEBOT_UA)

    def test_the_cache_is_bounded_and_forgets_the_oldest(self, resolver, clock):
        check = CrawlerCheck(("google",), resolver=resolver, clock=clock, max_entries=3)
        addresses = [f"203.0.113.{n}" for n in range(1, 6)]
        for address in addresses:
            assert not check.is_verified(address, GOOGLEBOT_UA)
        assert len(check._cache) == 3
        resolver.calls.clear()
        check.is_verified(addresses[-1], GOOGLEBOT_UA)  # kept
        check.is_verified(addresses[0], GOOGLEBOT_UA)  # forgotten: asked again
        assert resolver.calls == [("reverse", addresses[0])]


class TestOffByDefault:
    def test_a_verifiable_crawler_gets_the_page_and_nothing_is_looked_up(
        self, sandbox_url, clock, resolver, app
    ):
        gate = Gate(
            app,
            clock=clock,
            resolver=resolver,
            api_key=KEY,
            secret=SECRET,
            palier="fra1",
            prefixes="/premium",
            api_base=sandbox_url,
            store="memory",
        )
        visit(TestApp(gate), GOOGLE_IP, GOOGLEBOT_UA, status=402)
        assert resolver.calls == []
        assert app.environs == []


BASE = {"api_key": KEY, "secret": SECRET, "palier": "fra1", "prefixes": "/premium"}


class TestConfig:
    @pytest.mark.parametrize(
        ("value", "engines"),
        [
            pytest.param(None, (), id="default"),
            pytest.param("", (), id="empty"),
            pytest.param("none", (), id="none"),
            pytest.param("google", ("google",), id="google"),
            pytest.param(" Google\n  bing ", ("google", "bing"), id="ini-spelling"),
            pytest.param(["bing"], ("bing",), id="python-list"),
        ],
    )
    def test_values(self, value, engines):
        options = {**BASE} if value is None else {**BASE, "crawlers": value}
        assert parse_options(options).crawlers == engines

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("google yahoo", id="unknown-engine"),
            pytest.param("googlebot", id="a-bot-not-an-engine"),
            pytest.param("google google", id="twice"),
            pytest.param("google none", id="none-among-engines"),
        ],
    )
    def test_bad_values_name_the_option(self, value):
        with pytest.raises(ConfigError) as raised:
            parse_options({**BASE, "crawlers": value})
        assert raised.value.option == "crawlers"
        assert "'crawlers'" in str(raised.value)

    def test_bad_engine_stops_the_gate_at_start_up(self, app):
        with pytest.raises(ConfigError) as raised:
            Gate(app, store="memory", crawlers="google altavista", **BASE)
        assert raised.value.option == "crawlers"

    def test_is_site_wide_not_per_gate(self):
        options = {**BASE, "gates": "premium", "premium.crawlers": "google"}
        with pytest.raises(ConfigError) as raised:
            parse_options(options)
        assert raised.value.option == "premium.crawlers"

    def test_the_check_refuses_an_unknown_engine(self):
        with pytest.raises(ValueError, match="'yahoo' is not a search engine"):
            CrawlerCheck(("google", "yahoo"))


class TestSystemResolver:
    """The standard library's answers mapped to the resolver's; sockets patched."""

    def test_reverse(self, monkeypatch):
        monkeypatch.setattr(socket, "gethostbyaddr", lambda a: (GOOGLE_HOST, [], [a]))
        assert SystemResolver().reverse(GOOGLE_IP) == GOOGLE_HOST

    def test_no_name_is_an_answer(self, monkeypatch):
        def gethostbyaddr(address):
            raise socket.herror(1, "Unknown host")

        monkeypatch.setattr(socket, "gethostbyaddr", gethostbyaddr)
        assert SystemResolver().reverse(OTHER_IP) is None

    def test_a_failure_is_raised(self, monkeypatch):
        def gethostbyaddr(address):
            raise socket.herror(2, "Host name lookup failure")

        monkeypatch.setattr(socket, "gethostbyaddr", gethostbyaddr)
        with pytest.raises(socket.herror):
            SystemResolver().reverse(OTHER_IP)

    def test_forward_asks_for_the_absolute_name(self, monkeypatch):
        asked = []

        def getaddrinfo(host, port, **kwargs):
            asked.append(host)
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (GOOGLE_IP, 0)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (GOOGLE_IP6, 0, 0, 0)),
            ]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        assert SystemResolver().forward(GOOGLE_HOST) == [GOOGLE_IP, GOOGLE_IP6]
        assert asked == [GOOGLE_HOST + "."]

    def test_forward_no_address_is_an_answer(self, monkeypatch):
        def getaddrinfo(host, port, **kwargs):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        assert SystemResolver().forward("nowhere.example") == []

    def test_through_the_check_with_patched_sockets(self, monkeypatch, clock):
        monkeypatch.setattr(socket, "gethostbyaddr", lambda a: (GOOGLE_HOST, [], [a]))
        monkeypatch.setattr(
            socket,
            "getaddrinfo",
            lambda host, port, **kw: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (GOOGLE_IP, 0))],
        )
        check = CrawlerCheck(("google",), clock=clock)
        assert check.crawler(GOOGLE_IP, GOOGLEBOT_UA) == "google"
        assert not check.is_verified("66.249.66.2", GOOGLEBOT_UA)


# A slow DNS, over real HTTP: a burst of requests claiming to be Googlebot must not hold
# the site. The resolver blocks until the test releases it, so that what each request
# does while a lookup hangs is seen, with no timing to guess.

RESOLVER_WAIT = 30  # seconds a blocked resolver waits at most, should a test go wrong
STATUS_WAIT = 10  # seconds a test waits at most for what must happen at once


class SlowResolver(FakeResolver):
    """A :class:`FakeResolver` whose ``reverse`` blocks until :attr:`release` is set,
    counting how many lookups are in it at once."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)  # released once per reverse() entered
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0

    def reverse(self, address):
        answer = super().reverse(address)  # records the call as it is asked
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        self.entered.release()
        try:
            if not self.release.wait(RESOLVER_WAIT):
                raise TimeoutError("the test never released the resolver")
            return answer
        finally:
            with self._lock:
                self.inside -= 1

    def wait_entered(self, count):
        for _ in range(count):
            assert self.entered.acquire(timeout=STATUS_WAIT), "a lookup never started"

    def reverse_calls(self):
        return [call for call in self.calls if call[0] == "reverse"]


@dataclass
class Served:
    url: str
    check: CrawlerCheck
    resolver: SlowResolver

    def claim(self, address, user_agent=GOOGLEBOT_UA):
        """A GET of the paid page claiming to be ``user_agent`` from ``address``:
        (status, seconds taken)."""
        started = time.perf_counter()
        answer = requests.get(
            self.url + "/premium/article",
            headers={"User-Agent": user_agent, "X-Test-Client": address},
            timeout=RESOLVER_WAIT + STATUS_WAIT,
        )
        return answer.status_code, time.perf_counter() - started


@pytest.fixture
def slow_resolver():
    return SlowResolver()


@pytest.fixture
def served(sandbox_url, clock, slow_resolver, app):
    """The gate with the slow resolver, behind a proxy-fix, under waitress with its
    default 4 threads: two requests waiting for DNS must leave the other two free."""
    gate = Gate(
        app,
        clock=clock,
        resolver=slow_resolver,
        api_key=KEY,
        secret=SECRET,
        palier="fra1",
        prefixes="/premium",
        api_base=sandbox_url,
        store="memory",
        crawlers="google",
        rate_limit="off",
    )
    check = gate._crawlers
    with serve(client_address_from_header(gate), threads=4) as server:
        try:
            yield Served(server.url, check, slow_resolver)
        finally:  # no request thread may still wait when the server stops
            slow_resolver.release.set()
            assert check.wait_idle(STATUS_WAIT)


@contextmanager
def concurrently(served, threads):
    """A pool of ``threads`` clients; on the way out the resolver is released, so that a
    failed assertion does not leave the clients waiting for it."""
    with ThreadPoolExecutor(threads) as pool:
        try:
            yield pool
        finally:
            served.resolver.release.set()


def median_latency(session, url, times=30):
    """The median seconds of ``times`` GETs of ``url``, each checked to be the app's page."""
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        answer = session.get(url, timeout=STATUS_WAIT)
        seconds.append(time.perf_counter() - started)
        assert answer.status_code == 200
        assert answer.content == PAID
    return statistics.median(seconds)


def paying_visitor(url, sandbox):
    """A session holding an access cookie to /premium, bought with a sandbox code."""
    session = requests.Session()
    answer = session.post(
        url + "/premium/article",
        data={"code": sandbox.issue_code()},
        allow_redirects=False,
        timeout=STATUS_WAIT,
    )
    assert answer.status_code == 303
    assert session.get(url + "/premium/article", timeout=STATUS_WAIT).content == PAID
    return session


class TestSlowDns:
    def test_a_burst_from_one_address_makes_one_lookup_and_the_site_keeps_answering(
        self, served, sandbox, app
    ):
        served.check.deadline = RESOLVER_WAIT  # only the test's release ends the lookup
        visitor = paying_visitor(served.url, sandbox)
        anyone = requests.Session()
        free, paid = served.url + "/free/page", served.url + "/premium/article"
        before = median_latency(anyone, free), median_latency(visitor, paid)

        with concurrently(served, 20) as pool:
            burst = [pool.submit(served.claim, GOOGLE_IP) for _ in range(20)]
            served.resolver.wait_entered(1)
            # All but the few allowed to wait get the gate page at once, lookup hanging.
            answered = []
            for future in as_completed(burst, timeout=STATUS_WAIT):
                answered.append(future.result())
                if len(answered) == 20 - MAX_WAITING:
                    break
            assert [status for status, _ in answered] == [402] * (20 - MAX_WAITING)
            during = median_latency(anyone, free), median_latency(visitor, paid)
            assert sum(not future.done() for future in burst) == MAX_WAITING
            assert served.resolver.reverse_calls() == [("reverse", GOOGLE_IP)]
            assert app.crawlers() == []

            served.resolver.release.set()
            statuses = sorted(future.result()[0] for future in burst)
        # The ones that waited got the answer within the deadline: a verified crawler.
        assert statuses == [200] * MAX_WAITING + [402] * (20 - MAX_WAITING)
        assert served.resolver.calls == [("reverse", GOOGLE_IP), ("forward", GOOGLE_HOST)]
        assert served.claim(GOOGLE_IP)[0] == 200
        assert len(served.resolver.calls) == 2  # from the cache

        print(
            f"\nmedian latency before / during the burst: free page {before[0] * 1e3:.2f} / "
            f"{during[0] * 1e3:.2f} ms ({during[0] / before[0]:.2f}x), paid page "
            f"{before[1] * 1e3:.2f} / {during[1] * 1e3:.2f} ms ({during[1] / before[1]:.2f}x)"
        )
        for usual, now in zip(before, during, strict=True):
            assert now < 5 * usual + 0.05  # generous: waiting for the lookup would be 30 s

    def test_the_deadline_makes_a_slow_answer_the_gate_page_and_the_answer_is_kept(
        self, served, app
    ):
        served.check.deadline = 0.5
        status, seconds = served.claim(GOOGLE_IP)
        assert status == 402
        assert 0.5 <= seconds < STATUS_WAIT  # waited for the deadline, not for the answer
        # The lookup is still running: a request now shares its (passed) deadline.
        status, seconds = served.claim(GOOGLE_IP)
        assert status == 402
        assert seconds < 0.5
        assert app.crawlers() == []

        served.resolver.release.set()
        assert served.check.wait_idle(STATUS_WAIT)
        assert served.claim(GOOGLE_IP)[0] == 200  # the late answer, from the cache
        assert app.crawlers() == ["google"]
        assert served.resolver.calls == [("reverse", GOOGLE_IP), ("forward", GOOGLE_HOST)]

    def test_a_late_refusal_is_kept_too(self, served, clock):
        """Else an address without a crawler's name would cost a lookup per request."""
        served.check.deadline = 0  # nobody waits
        served.resolver.ptr[GOOGLE_IP] = None  # no name: an answer, kept a day
        assert served.claim(GOOGLE_IP)[0] == 402
        served.resolver.release.set()
        assert served.check.wait_idle(STATUS_WAIT)
        assert served.claim(GOOGLE_IP)[0] == 402
        clock.advance(86400 - 1)
        assert served.claim(GOOGLE_IP)[0] == 402
        assert served.resolver.reverse_calls() == [("reverse", GOOGLE_IP)]

    def test_many_addresses_never_run_more_than_the_bound_of_lookups(self, served, app):
        served.check.deadline = RESOLVER_WAIT
        addresses = [f"203.0.{n}.1" for n in range(1, 11)]  # each its own network
        for n, address in enumerate(addresses, start=1):
            host = f"crawl-203-0-{n}-1.googlebot.com"
            served.resolver.ptr[address] = host
            served.resolver.addresses[host] = [address]

        with concurrently(served, len(addresses)) as pool:
            burst = {pool.submit(served.claim, address): address for address in addresses}
            served.resolver.wait_entered(MAX_LOOKUPS)
            answered = []
            for future in as_completed(burst, timeout=STATUS_WAIT):
                answered.append(future.result()[0])
                if len(answered) == len(addresses) - MAX_WAITING:
                    break
            # Six addresses found no free lookup, two found no free place to wait:
            # each got the gate page at once.
            assert answered == [402] * (len(addresses) - MAX_WAITING)
            assert len(served.resolver.reverse_calls()) == MAX_LOOKUPS
            assert served.check.lookups_running == MAX_LOOKUPS
            served.resolver.release.set()
            statuses = [future.result()[0] for future in burst]
        assert sorted(statuses) == [200] * MAX_WAITING + [402] * (len(addresses) - MAX_WAITING)
        assert served.check.wait_idle(STATUS_WAIT)

        # One by one, every address is verified: four from the cache, six looked up now.
        assert [served.claim(address)[0] for address in addresses] == [200] * len(addresses)
        assert len(served.resolver.reverse_calls()) == len(addresses)
        assert served.resolver.most_inside == MAX_LOOKUPS


class HangingZone(FakeResolver):
    """The reverse zones of ``hanging`` addresses never answer (until :attr:`release`):
    an attacker's own zone; every other address is answered at once."""

    def __init__(self, hanging):
        super().__init__()
        self.hanging = set(hanging)
        self.release = threading.Event()

    def reverse(self, address):
        if address in self.hanging:
            self.release.wait(RESOLVER_WAIT)
        return super().reverse(address)


class TestHostileReverseZones:
    """Whoever owns addresses owns their reverse zone and can make it never answer. Such
    lookups must not keep real crawlers from being verified."""

    def check(self, hanging, clock, deadline=0.2):
        resolver = HangingZone(hanging)
        check = CrawlerCheck(("google",), resolver=resolver, clock=clock, deadline=deadline)
        return check, resolver

    def test_one_network_takes_two_lookups_and_no_more(self, clock):
        attack = [f"2001:db8:bad:{n}::1" for n in range(1, 5)]  # four /64s of one /48
        check, resolver = self.check(attack, clock, deadline=0)
        try:
            for address in attack:
                assert check.crawler(address, GOOGLEBOT_UA) is None
            assert check.lookups_running == NETWORK_LOOKUPS
            assert check.crawler(GOOGLE_IP, GOOGLEBOT_UA) == "google"
        finally:
            resolver.release.set()
            assert check.wait_idle(STATUS_WAIT)

    def test_lookups_past_their_deadline_leave_room_for_crawlers(self, clock):
        attack = [f"198.51.{n}.1" for n in range(MAX_LOOKUPS)]  # as many networks as places
        check, resolver = self.check(attack, clock)
        try:
            with ThreadPoolExecutor(MAX_LOOKUPS) as pool:
                assert (
                    list(pool.map(lambda a: check.crawler(a, GOOGLEBOT_UA), attack))
                    == [None] * MAX_LOOKUPS
                )
            # every place was taken until the deadline; past it, a crawler is looked up
            assert check.lookups_running == MAX_LOOKUPS
            assert check.crawler(GOOGLE_IP, GOOGLEBOT_UA) == "google"
        finally:
            resolver.release.set()
            assert check.wait_idle(STATUS_WAIT)

    def test_the_threads_in_the_resolver_are_bounded(self, clock):
        attack = [f"10.{n // 250}.{n % 250}.1" for n in range(MAX_THREADS + 5)]
        check, resolver = self.check(attack, clock, deadline=0)
        try:
            for address in attack:
                assert check.crawler(address, GOOGLEBOT_UA) is None
            assert check.lookups_running == MAX_THREADS
            assert check.crawler(GOOGLE_IP, GOOGLEBOT_UA) is None  # the gate page, for now
        finally:
            resolver.release.set()
            assert check.wait_idle(STATUS_WAIT)
        assert check.crawler(GOOGLE_IP, GOOGLEBOT_UA) == "google"  # once they are gone

    def test_a_crawler_that_comes_back_is_not_pushed_out_of_the_cache(self, clock):
        resolver = FakeResolver()
        check = CrawlerCheck(("google",), resolver=resolver, clock=clock, max_entries=3)
        assert check.crawler(GOOGLE_IP, GOOGLEBOT_UA) == "google"
        for n in range(10):  # a flood of new addresses, the crawler visiting between them
            check.crawler(f"203.0.113.{n}", GOOGLEBOT_UA)
            assert check.crawler(GOOGLE_IP, GOOGLEBOT_UA) == "google"
        assert resolver.calls.count(("reverse", GOOGLE_IP)) == 1
