"""No paid code lost: the journal, restore, recovery, rate limits, store failures, links.

Through the middleware with WebTest, against the sandbox over real HTTP, with the memory
store (the engines themselves are tested against the store contract) and a clock.
"""

import logging
import threading
import time

import pytest
from clock import FakeClock
from webtest import TestApp

from alloconv_gate import Gate
from alloconv_gate.alloconv import AlloConv as AlloConvClient
from alloconv_gate.codes import code_hash, reference
from alloconv_gate.store import Attempt, StoreError
from alloconv_gate.store.memory import MemoryStore
from alloconv_gate.tokens import GrantLinks

KEY = "sandbox-key"
SECRET = "verification-tests-secret-0123456789abcdef"
PAID = b"paid content"


def paid_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [PAID, b" until %d" % environ["alloconv_gate.access_until"]]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_gate(sandbox_url, clock):
    def make(**options):
        settings = {
            "api_key": KEY,
            "secret": SECRET,
            "palier": "fra1",
            "prefixes": "/premium",
            "api_base": sandbox_url,
            "timeout": "2",
            "store": "memory",
            **options,
        }
        return Gate(paid_app, clock=clock, **settings)

    return make


@pytest.fixture
def gate(make_gate):
    return make_gate()


def visitor(gate, address="192.0.2.1"):
    """A browser of its own (its own cookies) at ``address``."""
    return TestApp(gate, extra_environ={"REMOTE_ADDR": address})


def submit(browser, code, status, path="/premium/x"):
    return browser.post(path, {"code": code}, status=status)


def journal(gate, **filters):
    return gate.store.journal(**filters)


def use_store(gate, store):
    """Put ``store`` under ``gate`` (as if it had been opened from its URL)."""
    gate.store = store
    for parts in gate._parts.values():
        object.__setattr__(parts.verifier, "_store", store)


class TestTheJournal:
    def test_an_accepted_code_leaves_one_complete_record(self, gate, sandbox, clock):
        code = sandbox.issue_code()
        submit(visitor(gate), code, 303)
        [record] = journal(gate)
        assert record.outcome == "ok"
        assert record.time == clock.now
        assert record.gate == gate.config.scope
        assert record.palier == "fra1"
        assert record.client == "192.0.2.1"
        assert record.code_masked == code[:4] + "****"
        assert record.code_hash == code_hash(SECRET, code)
        assert record.latency is not None and record.latency > 0
        assert record.detail == "OK"

    def test_no_record_holds_the_code_in_clear(self, gate, sandbox):
        code = sandbox.issue_code()
        submit(visitor(gate), code, 303)
        submit(visitor(gate), "ZZZZ9999", 402)
        for record in journal(gate):
            assert code not in repr(record)
            assert "ZZZZ9999" not in repr(record)

    @pytest.mark.parametrize(
        ("code", "status", "outcome"),
        [
            pytest.param("abc", 400, "refused-locally", id="too-short"),
            pytest.param("ZZZZ9999", 402, "invalid", id="unknown-code"),
        ],
    )
    def test_refusals_are_recorded(self, gate, code, status, outcome):
        submit(visitor(gate), code, status)
        [record] = journal(gate)
        assert record.outcome == outcome

    def test_the_record_is_pending_while_alloconv_is_asked(self, make_gate, sandbox):
        gate = make_gate(timeout="5")
        visitor(gate).get("/premium/x", status=402)  # the number, fetched before the hang
        sandbox.set_fault("hang", script="api-micropaiement")
        code = sandbox.issue_code()
        answered = threading.Thread(target=submit, args=(visitor(gate), code, 303))
        answered.start()
        deadline = time.monotonic() + 5
        while not journal(gate) and time.monotonic() < deadline:
            time.sleep(0.01)  # waiting for the other thread to reach AlloConv
        [pending] = journal(gate)
        assert pending.outcome == "pending"
        sandbox.clear_fault()  # the hang ends; AlloConv answers OK
        answered.join(10)
        [record] = journal(gate)
        assert record.outcome == "ok"

    def test_a_lost_answer_is_recorded_as_unknown(self, gate, sandbox):
        sandbox.set_fault("drop", script="api-micropaiement")
        code = sandbox.issue_code()
        submit(visitor(gate), code, 503)
        [record] = journal(gate)
        assert record.outcome == "unknown"


class TestRestore:
    def test_the_same_code_in_another_browser_gets_the_same_end(self, gate, sandbox, clock):
        code = sandbox.issue_code()
        first = visitor(gate)
        submit(first, code, 303)
        original_end = int(clock.now) + 86400
        clock.advance(3600)
        calls = sandbox.calls["api-micropaiement"]

        second = visitor(gate, "198.51.100.7")
        restored = submit(second, code, 303)
        assert "Max-Age=82800;" in restored.headers["Set-Cookie"]  # the time left, not a day
        assert sandbox.calls["api-micropaiement"] == calls  # no AlloConv call
        page = second.get("/premium/x", status=200)
        assert page.body.endswith(b"until %d" % original_end)
        assert [r.outcome for r in journal(gate)] == ["restored", "ok"]

    def test_at_most_max_devices_browsers(self, make_gate, sandbox):
        gate = make_gate(max_devices="2")
        code = sandbox.issue_code()
        submit(visitor(gate), code, 303)
        submit(visitor(gate), code, 303)
        page = submit(visitor(gate), code, 402)
        assert "nombre maximal d'appareils" in page.html.find(attrs={"role": "alert"}).text

    def test_no_restore_once_access_has_ended(self, gate, sandbox, clock):
        code = sandbox.issue_code()
        submit(visitor(gate), code, 303)
        clock.advance(86400)
        page = submit(visitor(gate), code, 402)
        assert "est terminé" in page.html.find(attrs={"role": "alert"}).text

    def test_a_code_accepted_by_another_gate_does_not_open_this_one(self, make_gate, sandbox):
        store = MemoryStore()
        premium = make_gate()
        videos = make_gate(prefixes="/videos")
        use_store(premium, store)  # one store, as with one sqlite file
        use_store(videos, store)
        code = sandbox.issue_code()
        submit(visitor(videos), code, 303, "/videos/x")
        submit(visitor(premium), code, 402)


class TestRecovery:
    def test_err3_after_a_lost_answer_grants_access(self, gate, sandbox, caplog, clock):
        code = sandbox.issue_code()
        sandbox.set_fault("drop", script="api-micropaiement")
        browser = visitor(gate)
        submit(browser, code, 503)  # consumed, answer lost
        sandbox.clear_fault()
        clock.advance(60)
        submit(browser, code, 303)  # AlloConv now says ERR3
        browser.get("/premium/x", status=200)
        assert [r.outcome for r in journal(gate)] == ["recovered", "unknown"]
        assert any(
            r.levelno == logging.WARNING and "consumed then" in r.getMessage()
            for r in caplog.records
        )

    def test_err3_without_a_lost_answer_stays_a_refusal(self, gate, make_gate, sandbox):
        code = sandbox.issue_code()
        visitor(make_gate(prefixes="/other")).post("/other/x", {"code": code}, status=303)
        submit(visitor(gate), code, 402)

    def test_a_lost_answer_on_another_gate_does_not_recover_here(self, make_gate, sandbox):
        store = MemoryStore()
        premium, videos = make_gate(), make_gate(prefixes="/videos")
        use_store(premium, store)
        use_store(videos, store)
        code = sandbox.issue_code()
        sandbox.set_fault("drop", script="api-micropaiement")
        submit(visitor(videos), code, 503, "/videos/x")
        sandbox.clear_fault()
        # No access here; the visitor may have paid at the other gate: support's reference.
        page = submit(visitor(premium), code, 503)
        assert "alloconv_access=" not in " ".join(page.headers.getall("Set-Cookie"))
        assert reference(code_hash(SECRET, code)) in page.text


class TestRateLimits:
    def test_past_the_limit_429_without_calling_alloconv(self, gate, sandbox, clock):
        browser = visitor(gate)
        for _ in range(5):
            submit(browser, "ZZZZ9999", 402)
            clock.advance(1)  # all in one minute window
        calls = sandbox.calls["api-micropaiement"]
        page = submit(browser, sandbox.issue_code(), 429)
        assert sandbox.calls["api-micropaiement"] == calls
        assert 0 < int(page.headers["Retry-After"]) <= 61
        assert "Trop d'essais" in page.html.find(attrs={"role": "alert"}).text
        assert journal(gate)[0].outcome == "rate-limited"

    def test_the_next_window_is_open_again(self, gate, sandbox, clock):
        browser = visitor(gate)
        for _ in range(5):
            submit(browser, "ZZZZ9999", 402)
        submit(browser, "ZZZZ9999", 429)
        clock.advance(60)
        submit(browser, sandbox.issue_code(), 303)

    def test_the_limit_is_per_client(self, gate, sandbox):
        for _ in range(5):
            submit(visitor(gate, "192.0.2.1"), "ZZZZ9999", 402)
        submit(visitor(gate, "192.0.2.1"), "ZZZZ9999", 429)
        submit(visitor(gate, "192.0.2.2"), sandbox.issue_code(), 303)

    def test_local_refusals_do_not_count(self, gate, sandbox):
        browser = visitor(gate)
        for _ in range(10):
            submit(browser, "abc", 400)
        submit(browser, sandbox.issue_code(), 303)

    def test_rate_limit_off(self, make_gate, sandbox):
        browser = visitor(make_gate(rate_limit="off"))
        for _ in range(8):
            submit(browser, "ZZZZ9999", 402)

    def test_an_ipv6_client_is_its_64(self, gate, sandbox):
        # One customer's line: moving to another address of the /64 buys no more tries.
        for host in range(1, 6):
            submit(visitor(gate, f"2001:db8:1:2::{host}"), "ZZZZ9999", 402)
        page = submit(visitor(gate, "2001:db8:1:2:abcd::99"), sandbox.issue_code(), 429)
        assert "Retry-After" in page.headers
        # The neighbouring /64 is someone else.
        submit(visitor(gate, "2001:db8:1:3::1"), sandbox.issue_code(), 303)

    def test_an_ipv4_mapped_address_is_its_ipv4(self, gate, sandbox):
        for _ in range(5):
            submit(visitor(gate, "192.0.2.7"), "ZZZZ9999", 402)
        submit(visitor(gate, "::ffff:192.0.2.7"), sandbox.issue_code(), 429)


class FailingStore(MemoryStore):
    """A memory store whose named methods raise StoreError, as a full disk would."""

    def __init__(self, *failing):
        super().__init__()
        self.failing = set(failing)

    def __getattribute__(self, name):
        if name in object.__getattribute__(self, "failing"):

            def fail(*args, **kwargs):
                raise StoreError(f"{name}: disk full")

            return fail
        return object.__getattribute__(self, name)


class TestStoreFailures:
    def test_no_pending_record_means_alloconv_is_not_asked(self, gate, sandbox, caplog):
        use_store(gate, FailingStore("record"))
        code = sandbox.issue_code()
        page = submit(visitor(gate), code, 503)
        assert page.headers["Retry-After"]
        assert "pas perdu" in page.text
        assert sandbox.calls["api-micropaiement"] == 0
        assert not sandbox.is_used(code)
        assert "not sent to AlloConv" in caplog.text

    def test_an_accepted_code_gets_its_cookie_when_the_store_fails_after(
        self, gate, sandbox, caplog
    ):
        use_store(gate, FailingStore("redeem", "complete"))
        code = sandbox.issue_code()
        browser = visitor(gate)
        submit(browser, code, 303)
        browser.get("/premium/x", status=200)
        [error] = [r for r in caplog.records if "after AlloConv accepted" in r.getMessage()]
        assert error.levelno == logging.ERROR
        assert code_hash(SECRET, code) in error.getMessage()  # the whole record
        assert code not in caplog.text

    @pytest.mark.parametrize("method", ["hit", "redemption"])
    def test_a_failing_lookup_fails_closed(self, gate, sandbox, method):
        use_store(gate, FailingStore(method))
        submit(visitor(gate), sandbox.issue_code(), 503)
        assert sandbox.calls["api-micropaiement"] == 0


class TestSupportLinks:
    def link(self, gate, clock, grant_id="g-1", duration=3600):
        links = GrantLinks([SECRET], gate.config.scope, clock)
        return f"/premium/x?page=2&alloconv_grant={links.issue(grant_id, duration)}"

    def use(self, browser, url, status):
        """Open the link, then press its button, as the visitor does."""
        page = browser.get(url, status=200)
        assert page.headers["Referrer-Policy"] == "same-origin"  # the link never leaves the site
        return page.forms[0].submit(status=status)

    def test_a_link_grants_access_once(self, gate, clock):
        url = self.link(gate, clock)
        browser = visitor(gate)
        answer = self.use(browser, url, 303)
        assert answer.headers["Location"] == "/premium/x?page=2"
        page = browser.get("/premium/x", status=200)
        assert page.body.endswith(b"until %d" % (int(clock.now) + 3600))
        self.use(visitor(gate), url, 403)
        assert [r.outcome for r in journal(gate)] == ["granted"]

    def test_opening_the_link_does_not_use_it(self, gate, clock):
        """Mail scanners and chat previews fetch links before the person does."""
        url = self.link(gate, clock)
        visitor(gate).head(url, status=200)
        visitor(gate).get(url, status=200)
        assert journal(gate) == []
        self.use(visitor(gate), url, 303)

    def test_the_link_page_escapes_the_token(self, gate):
        page = visitor(gate).get('/premium/x?alloconv_grant="><script>x</script>', status=200)
        assert "<script>x" not in page.text

    def test_a_link_expires_after_an_hour(self, gate, clock):
        url = self.link(gate, clock)
        clock.advance(3601)
        self.use(visitor(gate), url, 403)

    def test_another_gates_link_is_refused(self, gate, make_gate, clock):
        url = self.link(make_gate(prefixes="/videos"), clock)
        self.use(visitor(gate), url, 403)

    def test_a_tampered_link_is_refused(self, gate, clock):
        self.use(visitor(gate), self.link(gate, clock) + "x", 403)


class TestRedisGoingDown:
    """A real Redis stopped mid-test: nothing granted wrongly, no code spent."""

    def test_submissions_wait_for_redis_and_the_site_stays_up(
        self, make_gate, sandbox, redis_server, redis_url
    ):
        gate = make_gate(store=redis_url)
        code = sandbox.issue_code()
        browser = visitor(gate)
        submit(browser, code, 303)
        redis_server.stop()
        try:
            browser.get("/premium/x", status=200)  # a valid cookie never needs the store
            fresh = sandbox.issue_code()
            page = submit(visitor(gate), fresh, 503)
            assert "pas perdu" in page.text
            assert not sandbox.is_used(fresh)
        finally:
            redis_server.start()
        submit(visitor(gate), fresh, 303)  # the code was kept unspent: it works now


class TestRecoveryIsKeptToRealLosses:
    """ERR3 also answers codes that never existed: recovery must not hand them access."""

    @pytest.mark.parametrize("fault", ["error500", "garbage", "empty"])
    def test_a_made_up_code_sent_during_a_garbled_answer_stays_refused(
        self, gate, sandbox, clock, fault
    ):
        sandbox.set_fault(fault, script="api-micropaiement")
        browser = visitor(gate)
        submit(browser, "MADEUP12", 503)
        sandbox.clear_fault()
        clock.advance(60)
        submit(browser, "MADEUP12", 402)

    def test_a_lost_answer_older_than_a_day_no_longer_recovers(self, gate, sandbox, clock):
        code = sandbox.issue_code()
        sandbox.set_fault("drop", script="api-micropaiement")
        submit(visitor(gate), code, 503)
        sandbox.clear_fault()
        clock.advance(86400 + 1)
        submit(visitor(gate), code, 402)

    def test_a_pending_record_left_by_a_dead_worker_goes_to_support(self, gate, sandbox, clock):
        # No browser was told that its answer was lost: ERR3 cannot say whether the code
        # was consumed by that request or never existed, so support decides.
        code = sandbox.issue_code()
        sandbox.set_fault("hang", script="api-micropaiement")
        # a worker that wrote the pending record, sent the code, and died
        gate.store.record(
            Attempt(
                "dead",
                clock.now,
                gate.config.scope,
                "fra1",
                "192.0.2.1",
                code[:4] + "****",
                code_hash(SECRET, code),
            )
        )
        sandbox.clear_fault()
        AlloConvClient(gate.config.api_base, KEY).verify(code)  # what the dead worker sent
        clock.advance(2 + 61)  # past timeout and the grace
        page = submit(visitor(gate), code, 503)
        assert reference(code_hash(SECRET, code)) in page.text
        assert "alloconv_access=" not in " ".join(page.headers.getall("Set-Cookie"))
        latest = journal(gate)[0]
        assert (latest.outcome, latest.detail) == (
            "invalid",
            "ERR3 after the lost answer of attempt dead: not the browser that lost the answer; "
            "for support",
        )

    def test_a_recent_pending_record_is_not_yet_a_loss(self, gate, sandbox, clock):
        code = sandbox.issue_code()
        gate.store.record(
            Attempt(
                "inflight",
                clock.now,
                gate.config.scope,
                "fra1",
                "192.0.2.1",
                code[:4] + "****",
                code_hash(SECRET, code),
            )
        )
        AlloConvClient(gate.config.api_base, KEY).verify(code)
        clock.advance(1)  # the other request may still get its OK
        submit(visitor(gate), code, 402)


class TestSecretRotation:
    """Rotating the secret (new first, old kept) keeps restores and recoveries working."""

    NEW = "a-brand-new-secret-after-rotation-0123456789"

    def test_restore_after_rotation(self, make_gate, sandbox, clock):
        store = MemoryStore()
        before = make_gate()
        use_store(before, store)
        code = sandbox.issue_code()
        submit(visitor(before), code, 303)
        clock.advance(60)
        after = make_gate(secret=f"{self.NEW} {SECRET}")
        use_store(after, store)
        submit(visitor(after), code, 303)
        assert store.journal()[0].outcome == "restored"

    def test_recovery_after_rotation(self, make_gate, sandbox, clock):
        store = MemoryStore()
        before = make_gate()
        use_store(before, store)
        code = sandbox.issue_code()
        sandbox.set_fault("drop", script="api-micropaiement")
        browser = visitor(before)
        submit(browser, code, 503)
        sandbox.clear_fault()
        clock.advance(60)
        after = make_gate(secret=f"{self.NEW} {SECRET}")
        use_store(after, store)
        same_browser = visitor(after)
        same_browser.cookiejar = browser.cookiejar
        submit(same_browser, code, 303)
        assert store.journal()[0].outcome == "recovered"


class RedemptionLateStore(MemoryStore):
    """The first look-up misses the redemption, as when two tabs send one code at once."""

    def __init__(self):
        super().__init__()
        self.misses = 1

    def redemption(self, gate, code_hash):
        if self.misses:
            self.misses -= 1
            return None
        return super().redemption(gate, code_hash)


class TestTheSameCodeTwiceAtOnce:
    def test_the_second_tab_is_restored_not_refused(self, gate, sandbox):
        code = sandbox.issue_code()
        submit(visitor(gate), code, 303)
        late = RedemptionLateStore()
        late._redemptions = gate.store._redemptions
        use_store(gate, late)
        submit(visitor(gate), code, 303)  # AlloConv said ERR3: it was ours

    def test_a_store_failing_after_err3_is_503_not_invalid(self, gate, sandbox):
        code = sandbox.issue_code()
        TestApp(gate).post("/premium/x", {"code": code}, status=303)
        failing = FailingStore("redemption")
        use_store(gate, failing)
        submit(visitor(gate), "ZZZZ9999", 503)


class TestTheJournalIsNotFlooded:
    def test_local_refusals_are_journaled_up_to_a_bound(self, gate):
        browser = visitor(gate)
        for _ in range(60):
            submit(browser, "abc", 400)  # every one still answered
        assert len(journal(gate, outcome="refused-locally")) == 50  # 10 x rate_limit

    def test_junk_from_many_addresses_is_journaled_up_to_a_bound(self, gate, clock):
        # one junk code from each of 600 /64s: the per-client bound never applies
        for n in range(600):
            submit(visitor(gate, f"2001:db8:0:{n:x}::1"), "abc", 400)
        assert len(journal(gate, outcome="refused-locally", limit=1000)) == 500  # 100 x 5
        clock.advance(60)  # a new window
        submit(visitor(gate, "2001:db8:1::1"), "abc", 400)
        assert len(journal(gate, outcome="refused-locally", limit=1000)) == 501

    def test_one_rate_limited_record_per_window(self, gate, sandbox, clock):
        browser = visitor(gate)
        for _ in range(5):
            submit(browser, "ZZZZ9999", 402)
        for _ in range(4):
            submit(browser, "ZZZZ9999", 429)
        assert len(journal(gate, outcome="rate-limited")) == 1
