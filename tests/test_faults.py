"""AlloConv failing in every way we know, seen through the gate.

For each fault: the status the visitor gets, the message, the log line, no access, and
the journal record. And a hanging AlloConv must not take the site down (max_pending).
"""

import logging
import threading
import time

import pytest
from clock import FakeClock
from servers import ResetServer, refused_url
from webtest import TestApp

from alloconv_gate import Gate

SECRET = "fault-tests-secret-that-is-long-enough-0123"
LOST = "peut-être déjà été compté"  # error_lost: the code may have been spent
SAFE = "pas perdu"  # error_unavailable: the code was surely not spent


def content(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"content"]


@pytest.fixture
def make_gate(sandbox_url):
    def make(**options):
        settings = {
            "api_key": "sandbox-key",
            "secret": SECRET,
            "palier": "fra1",
            "prefixes": "/premium",
            "api_base": sandbox_url,
            "timeout": "1",
            "store": "memory",
            "number": "08 90 00 00 00",
            **options,
        }
        return Gate(content, clock=FakeClock(), **settings)

    return make


def alert(page):
    return page.html.find(attrs={"role": "alert"}).text


def errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("fault", "delay", "message", "outcome", "logged"),
    [
        pytest.param("hang", 0, LOST, "unknown", "ReadTimeout", id="hang"),
        pytest.param("slow", 1.3, LOST, "unknown", "ReadTimeout", id="slow-just-over-timeout"),
        pytest.param("error500", 0, LOST, "unavailable", "HTTP 500", id="http-500"),
        pytest.param("garbage", 0, LOST, "unavailable", "error", id="html-garbage"),
        pytest.param("empty", 0, LOST, "unavailable", "error", id="empty-body"),
        pytest.param("drop", 0, LOST, "unknown", "ChunkedEncodingError", id="dropped-after-use"),
    ],
)
def test_alloconv_faults(make_gate, sandbox, caplog, fault, delay, message, outcome, logged):
    gate = make_gate()
    sandbox.set_fault(fault, script="api-micropaiement", delay=delay)
    browser = TestApp(gate)
    started = time.monotonic()
    page = browser.post("/premium/x", {"code": sandbox.issue_code()}, status=503)
    assert time.monotonic() - started < 2.5  # timeout (1 s) plus a little
    sandbox.clear_fault()
    assert page.headers["Retry-After"]
    assert message in alert(page)
    # no access cookie (a lost answer sets only the signed note that this browser lost it)
    assert "alloconv_access=" not in " ".join(page.headers.getall("Set-Cookie"))
    browser.get("/premium/x", status=402)
    [line] = [m for m in errors(caplog) if "not verified" in m]
    assert logged in line
    assert "sandbox-key" not in caplog.text
    [record] = gate.store.journal()
    assert record.outcome == outcome


def test_slow_just_under_the_timeout_is_answered(make_gate, sandbox):
    sandbox.set_fault("slow", script="api-micropaiement", delay=0.6)
    browser = TestApp(make_gate())
    browser.post("/premium/x", {"code": sandbox.issue_code()}, status=303)
    browser.get("/premium/x", status=200)


def test_a_refused_connection_leaves_the_code_safe(make_gate, caplog):
    gate = make_gate(api_base=refused_url())
    page = TestApp(gate).post("/premium/x", {"code": "ABCDEFGH"}, status=503)
    assert SAFE in alert(page)
    assert any("unreachable" in m for m in errors(caplog))
    [record] = gate.store.journal()
    assert record.outcome == "unavailable"


def test_a_reset_after_sending_is_a_lost_answer(make_gate, caplog):
    with ResetServer() as server:
        gate = make_gate(api_base=server.url)
        page = TestApp(gate).post("/premium/x", {"code": "ABCDEFGH"}, status=503)
        # one code check, never retried, and one api-numeros call for the page
        assert server.requests == 2
    assert LOST in alert(page)
    [record] = gate.store.journal()
    assert record.outcome == "unknown"


def test_a_flapping_service(make_gate, sandbox):
    sandbox.set_fault("flap", script="api-micropaiement")
    gate = make_gate()
    browser = TestApp(gate)
    code = sandbox.issue_code()
    browser.post("/premium/x", {"code": code}, status=503)  # the failing half
    browser.post("/premium/x", {"code": code}, status=303)  # the code was not spent
    browser.get("/premium/x", status=200)
    assert sorted(r.outcome for r in gate.store.journal()) == ["ok", "unavailable"]


class TestAHangingAlloConv:
    """More submissions than max_pending, while AlloConv hangs: the rest are refused at
    once, and the rest of the site does not wait."""

    def test_past_max_pending_503_at_once_and_the_site_answers(self, make_gate, sandbox):
        gate = make_gate(max_pending="2", timeout="5", rate_limit="off")
        paid = TestApp(gate)
        paid.post("/premium/x", {"code": sandbox.issue_code()}, status=303)
        sandbox.set_fault("hang", script="api-micropaiement")
        statuses = []

        def submit(address):  # visitors of their own (one verification per client)
            answer = TestApp(gate, extra_environ={"REMOTE_ADDR": address}).post(
                "/premium/x", {"code": sandbox.issue_code()}, expect_errors=True
            )
            statuses.append((answer.status_int, time.monotonic()))

        started = time.monotonic()
        # two visitors of two networks (one network has half of max_pending at most)
        hanging = [
            threading.Thread(target=submit, args=(address,))
            for address in ("192.0.2.1", "198.51.100.1")
        ]
        for thread in hanging:
            thread.start()
        deadline = time.monotonic() + 5
        while sandbox.calls["api-micropaiement"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # until both verifications are in flight
        assert sandbox.calls["api-micropaiement"] == 3

        refused = TestApp(gate).post("/premium/x", {"code": sandbox.issue_code()}, status=503)
        assert int(refused.headers["Retry-After"]) <= 5
        assert SAFE in alert(refused)
        assert sandbox.calls["api-micropaiement"] == 3  # not sent
        TestApp(gate).get("/free", status=200)
        paid.get("/premium/x", status=200)
        assert time.monotonic() - started < 2  # nobody waited for the hang

        sandbox.clear_fault()
        for thread in hanging:
            thread.join(10)
        assert sorted(s for s, _ in statuses) == [303, 303]
        outcomes = [r.outcome for r in gate.store.journal()]
        assert outcomes.count("unavailable") == 1

    def test_max_pending_is_checked_at_start_up(self, make_gate):
        from alloconv_gate import ConfigError

        with pytest.raises(ConfigError, match="'max_pending'"):
            make_gate(max_pending="0")
