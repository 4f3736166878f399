"""The AlloConv client against the sandbox over real HTTP, and against broken servers."""

import logging
import time

import pytest
from servers import ResetServer, refused_url, serve

from alloconv_gate.alloconv import AlloConv, NumberUnavailable, Verdict
from alloconv_gate.codes import mask_code
from alloconv_gate.sandbox import Sandbox

KEY = "sandbox-key"


@pytest.fixture
def client(sandbox_url):
    return AlloConv(sandbox_url, KEY, timeout=2)


class TestVerify:
    def test_a_fresh_code_is_ok_then_consumed(self, client, sandbox):
        code = sandbox.issue_code("fra1")
        first = client.verify(code)
        assert first.verdict is Verdict.OK
        assert sandbox.is_used(code)
        assert client.verify(code).verdict is Verdict.INVALID

    @pytest.mark.parametrize(
        ("code", "verdict", "answer"),
        [
            pytest.param("ZZZZZZZZ", Verdict.INVALID, "ERR3", id="unknown-code"),
            pytest.param("", Verdict.REFUSED, "ERR1", id="no-code"),
            pytest.param("ABC", Verdict.REFUSED, "ERR2", id="too-short"),
        ],
    )
    def test_answers(self, client, code, verdict, answer):
        check = client.verify(code)
        assert (check.verdict, check.answer) == (verdict, answer)

    def test_bad_key_is_refused_and_the_code_stays_good(self, sandbox_url, sandbox):
        code = sandbox.issue_code("fra1")
        check = AlloConv(sandbox_url, "wrong-key", timeout=2).verify(code)
        assert (check.verdict, check.answer) == (Verdict.REFUSED, "ERR99")
        assert not sandbox.is_used(code)

    def test_wrong_palier(self):
        sandbox = Sandbox(accepted_paliers=["fra1"])
        with serve(sandbox) as server:
            code = sandbox.issue_code("fra2")
            check = AlloConv(server.url, KEY, timeout=2).verify(code)
        assert check.verdict is Verdict.WRONG_PALIER
        assert not sandbox.is_used(code)

    @pytest.mark.parametrize(
        ("fault", "verdict"),
        [
            pytest.param("error500", Verdict.ERROR, id="http-500"),
            pytest.param("garbage", Verdict.ERROR, id="html-garbage"),
            pytest.param("empty", Verdict.ERROR, id="empty-body"),
            pytest.param("drop", Verdict.UNKNOWN, id="dropped-after-sending"),
        ],
    )
    def test_broken_answers_never_grant(self, client, sandbox, fault, verdict):
        sandbox.set_fault(fault, script="api-micropaiement")
        check = client.verify(sandbox.issue_code("fra1"))
        assert check.verdict is verdict
        assert sandbox.calls["api-micropaiement"] == 1  # never retried: may be consumed

    def test_a_hang_times_out_within_the_timeout(self, sandbox_url, sandbox):
        sandbox.set_fault("hang", script="api-micropaiement")
        started = time.monotonic()
        check = AlloConv(sandbox_url, KEY, timeout=0.5).verify(sandbox.issue_code("fra1"))
        elapsed = time.monotonic() - started
        sandbox.clear_fault()
        assert check.verdict is Verdict.UNKNOWN
        assert elapsed < 1.5
        assert sandbox.calls["api-micropaiement"] == 1

    def test_slow_under_the_timeout_is_answered(self, sandbox_url, sandbox):
        sandbox.set_fault("slow", script="api-micropaiement", delay=0.2)
        check = AlloConv(sandbox_url, KEY, timeout=1).verify(sandbox.issue_code("fra1"))
        assert check.verdict is Verdict.OK
        assert check.latency >= 0.2

    def test_reset_after_sending_is_unknown_and_not_retried(self):
        with ResetServer() as server:
            check = AlloConv(server.url, KEY, timeout=2).verify("ABCDEFGH")
        assert check.verdict is Verdict.UNKNOWN
        assert server.requests == 1

    def test_refused_connection_is_unreachable(self):
        check = AlloConv(refused_url(), KEY, timeout=2).verify("ABCDEFGH")
        assert check.verdict is Verdict.UNREACHABLE

    def test_tolerant_parsing(self, sandbox):
        def answer_with_noise(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"\r\n  ok \r\n"]

        with serve(answer_with_noise) as server:
            assert AlloConv(server.url, KEY).verify("ABCDEFGH").verdict is Verdict.OK

    def test_the_key_never_shows_in_what_is_reported(self):
        key = "s3cr3t key/+="
        client = AlloConv(refused_url(), key, timeout=1)
        check = client.verify("ABCDEFGH1234")
        assert key not in check.answer
        assert "s3cr3t" not in check.answer
        assert "ABCDEFGH1234" not in check.answer


class TestNumber:
    def test_the_number_for_a_palier_is_stripped(self, client):
        assert client.number("fra1") == "08 99 23 45 67"

    def test_err918_is_a_configuration_error(self, client):
        with pytest.raises(NumberUnavailable) as raised:
            client.number("zzz9")
        assert raised.value.configuration_error

    @pytest.mark.parametrize("fault", ["error500", "garbage", "empty", "drop"])
    def test_broken_answers_give_no_number(self, client, sandbox, fault):
        sandbox.set_fault(fault, script="api-numeros")
        with pytest.raises(NumberUnavailable) as raised:
            client.number("fra1")
        assert not raised.value.configuration_error


def test_mask_code():
    assert mask_code("AB12CD34") == "AB12****"


def test_debug_logs_of_urllib3_hold_neither_key_nor_code(caplog, sandbox_url):
    caplog.set_level(logging.DEBUG)
    client = AlloConv(sandbox_url, KEY, timeout=2)
    client.verify("ABCDEFGH")
    client.number("fra1")
    assert "code1=ABCD****" in caplog.text  # the request line is still there, masked
    assert KEY not in caplog.text
    assert "ABCDEFGH" not in caplog.text


def serve_answer(*chunks, delay=0.0):
    """A stand-in AlloConv that answers ``chunks``, waiting ``delay`` before each."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        for chunk in chunks:
            time.sleep(delay)
            yield chunk

    return serve(app)


class TestOddAnswers:
    def test_a_byte_order_mark_is_ignored(self):
        with serve_answer(b"\xef\xbb\xbfOK\r\n") as server:
            assert AlloConv(server.url, KEY).verify("ABCDEFGH").verdict is Verdict.OK

    def test_an_answer_echoing_the_request_is_redacted(self):
        with serve_answer(b"Erreur: requete code1=ABCDEFGH1234&cle=sandbox-key invalide") as srv:
            check = AlloConv(srv.url, KEY).verify("ABCDEFGH1234")
        assert check.verdict is Verdict.ERROR
        assert KEY not in check.answer
        assert "ABCDEFGH1234" not in check.answer

    def test_a_trickling_answer_is_cut_at_the_timeout(self):
        with serve_answer(*[b" "] * 12, b"OK", delay=0.1) as server:
            started = time.monotonic()
            check = AlloConv(server.url, KEY, timeout=0.5).verify("ABCDEFGH")
            elapsed = time.monotonic() - started
        assert check.verdict is Verdict.UNKNOWN
        assert elapsed < 1.0
