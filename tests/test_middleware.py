"""The gate end to end: WebTest in front, the sandbox AlloConv over real HTTP behind."""

import io
import logging
import re
import time

import pytest
from clock import FakeClock
from servers import refused_url, serve
from webtest import TestApp

from alloconv_gate import Gate
from alloconv_gate.sandbox import Sandbox

KEY = "sandbox-key"
SECRET = "correct-horse-battery-staple-0123456789"
OTHER_SECRET = "another-secret-of-enough-length-0123456789"
PAID = b"the paid article"


class RecordingApp:
    """A wrapped app that records what reached it and streams its answer."""

    def __init__(self, headers=(("Content-Type", "text/plain"),)):
        self.headers = list(headers)
        self.calls = []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.calls.append({"environ": environ, "body": body})
        start_response("200 OK", list(self.headers))
        return StreamedBody([PAID[:8], PAID[8:]])


class StreamedBody:
    """An app iterable that knows whether the server closed it."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.closed = False

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.closed = True


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def app():
    return RecordingApp()


@pytest.fixture
def make_gate(sandbox_url, clock, app):
    def make(wrapped=None, **options):
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
        return Gate(app if wrapped is None else wrapped, clock=clock, **settings)

    return make


@pytest.fixture
def browser(make_gate):
    return TestApp(make_gate())


def buy(browser, sandbox, path="/premium/article", palier="fra1"):
    """Go through the paid flow; returns the 303 answer."""
    return browser.post(path, {"code": sandbox.issue_code(palier)}, status=303)


def access_cookie(response):
    [header] = [v for k, v in response.headerlist if k == "Set-Cookie"]
    return header


def call_wsgi(
    gate, path, *, method="GET", body=b"", cookie=None, content_type=None, content_length=None
):
    """Call the gate as a server would, returning (status, headers, iterable)."""
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(body)) if content_length is None else content_length,
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
    }
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer.update(status=status, headers=headers)

    iterable = gate(environ, start_response)
    return environ, answer, iterable


class TestOutsideThePrefixes:
    def test_everything_reaches_the_app_untouched(self, make_gate, app):
        gate = make_gate()
        environ, answer, iterable = call_wsgi(gate, "/free/page", method="POST", body=b"a=1")
        [call] = app.calls
        assert call["environ"] is environ
        assert not any(key.startswith("alloconv_gate") for key in environ)
        assert call["body"] == b"a=1"
        assert answer == {"status": "200 OK", "headers": [("Content-Type", "text/plain")]}
        assert isinstance(iterable, StreamedBody)  # the app's own iterable, so close() too
        assert b"".join(iterable) == PAID
        iterable.close()
        assert iterable.closed

    @pytest.mark.parametrize(
        "path",
        [
            pytest.param("/", id="root"),
            pytest.param("", id="empty"),
            pytest.param("/premiumx", id="longer-segment"),
            pytest.param("/premium-old/x", id="dash-suffix"),
            pytest.param("/free/premium", id="prefix-deeper"),
            pytest.param("/Premium", id="other-case"),
        ],
    )
    def test_paths_not_under_a_prefix_are_free(self, make_gate, app, path):
        _, answer, _ = call_wsgi(make_gate(), path)
        assert answer["status"] == "200 OK"
        assert len(app.calls) == 1


class TestUnderThePrefixes:
    @pytest.mark.parametrize(
        "path",
        [
            pytest.param("/premium", id="exact"),
            pytest.param("/premium/", id="trailing-slash"),
            pytest.param("/premium/a/b", id="deeper"),
            pytest.param("//premium/x", id="double-slash"),
            pytest.param("/premium//x", id="inner-double-slash"),
            pytest.param("/premium/./x", id="dot"),
            pytest.param("/./premium", id="leading-dot"),
            pytest.param("/free/../premium/x", id="dot-dot-in"),
            pytest.param("/../premium", id="dot-dot-above-root"),
            pytest.param("premium/x", id="no-leading-slash"),
            pytest.param("/premium/../x", id="dot-dot-out-as-written"),
            pytest.param("/premium/..", id="dot-dot-to-root"),
        ],
    )
    def test_gated_without_a_cookie(self, make_gate, app, path):
        _, answer, _ = call_wsgi(make_gate(), path)
        assert answer["status"] == "402 Payment Required"
        assert app.calls == []

    @pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    def test_no_method_gets_through(self, make_gate, app, method):
        _, answer, _ = call_wsgi(make_gate(), "/premium/x", method=method, body=b"x")
        assert answer["status"] == "402 Payment Required"
        assert app.calls == []


class TestThePage:
    def test_402_with_the_number_price_and_form(self, browser):
        page = browser.get("/premium/article?id=7", status=402)
        assert page.content_type == "text/html"
        assert page.charset.lower() == "utf-8"
        assert page.headers["Cache-Control"] == "no-store"
        assert page.html.html["lang"] == "fr"
        link = page.html.find("a", class_="number")
        assert link["href"] == "tel:0899234567"
        assert link.text == "08 99 23 45 67"
        assert "3,00 €" in page.text
        form = page.forms[0]
        assert form.method.upper() == "POST"
        assert form.action == "/premium/article?id=7"
        assert form["code"].value == ""
        assert page.html.find("label", attrs={"for": "code"})
        assert page.html.find(attrs={"role": "alert"}) is not None
        assert "http://" not in page.text and "https://" not in page.text

    def test_english(self, make_gate):
        page = TestApp(make_gate(language="en")).get("/premium/x", status=402)
        assert page.html.html["lang"] == "en"
        assert "Your access code" in page.text

    def test_head_has_the_headers_and_no_body(self, browser):
        get = browser.get("/premium/x", status=402)
        head = browser.head("/premium/x", status=402)
        assert head.body == b""
        assert head.headers["Content-Type"] == get.headers["Content-Type"]
        assert head.headers["Cache-Control"] == "no-store"

    def test_the_number_is_fetched_once_then_cached(self, browser, sandbox):
        for _ in range(5):
            browser.get("/premium/x", status=402)
        assert sandbox.calls["api-numeros"] == 1
        assert sandbox.calls["api-micropaiement"] == 0

    def test_no_number_at_all_is_503(self, make_gate, sandbox, caplog):
        sandbox.set_fault("error500", script="api-numeros")
        page = TestApp(make_gate()).get("/premium/x", status=503)
        assert page.headers["Retry-After"]
        assert "momentanément indisponible" in page.text
        assert 'href="tel:' not in page.text
        assert "api-numeros failed" in caplog.text

    def test_the_configured_number_stands_in(self, make_gate, sandbox):
        sandbox.set_fault("error500", script="api-numeros")
        page = TestApp(make_gate(number="08 90 00 00 00")).get("/premium/x", status=402)
        assert page.html.find("a", class_="number")["href"] == "tel:0890000000"

    def test_the_last_good_number_is_kept(self, make_gate, sandbox, clock):
        browser = TestApp(make_gate(number_ttl="60s"))
        browser.get("/premium/x", status=402)
        sandbox.set_fault("error500", script="api-numeros")
        clock.advance(120)
        page = browser.get("/premium/x", status=402)
        assert "08 99 23 45 67" in page.text

    def test_unknown_palier_is_logged_as_a_configuration_error(self, make_gate, caplog):
        browser = TestApp(make_gate(palier="zzz9", price_notice="1 €"))
        browser.get("/premium/x", status=503)
        assert "configuration error" in caplog.text
        assert "ERR918" in caplog.text


class TestCodeSubmission:
    def test_a_good_code_grants_access(self, browser, sandbox, app, clock):
        answer = browser.post(
            "/premium/article?id=7", {"code": f"  {sandbox.issue_code()}\n"}, status=303
        )
        assert answer.headers["Location"].endswith("/premium/article?id=7")
        assert answer.headers["Cache-Control"] == "no-store"
        cookie = access_cookie(answer)
        assert cookie.startswith("alloconv_access=")
        for attribute in ("Max-Age=86400", "Path=/", "HttpOnly", "SameSite=lax"):
            assert attribute in cookie
        assert "secure" not in cookie.lower()
        page = answer.follow(status=200)
        assert page.body == PAID
        assert app.calls[0]["environ"]["alloconv_gate.access_until"] == int(clock()) + 86400

    def test_secure_cookie_over_https(self, browser, sandbox):
        answer = browser.post(
            "/premium/x",
            {"code": sandbox.issue_code()},
            status=303,
            extra_environ={"wsgi.url_scheme": "https", "HTTP_HOST": "localhost:443"},
        )
        assert "; secure" in access_cookie(answer).lower()

    @pytest.mark.parametrize(
        ("option", "secure"), [("true", True), ("false", False)], ids=["true", "false"]
    )
    def test_cookie_secure_option(self, make_gate, sandbox, option, secure):
        answer = buy(TestApp(make_gate(cookie_secure=option)), sandbox)
        assert ("; secure" in access_cookie(answer).lower()) is secure

    @pytest.mark.parametrize(
        ("code", "message"),
        [
            pytest.param("", "Saisissez le code", id="empty"),
            pytest.param("   ", "Saisissez le code", id="blank"),
            pytest.param("ABC123", "trop court", id="short"),
            pytest.param("A" * 65, "trop long", id="long"),
            pytest.param("ABCD-1234", "que des lettres et des chiffres", id="dash"),
            pytest.param("ÉÉÉÉÉÉÉÉ", "que des lettres et des chiffres", id="non-ascii"),
        ],
    )
    def test_local_check_makes_no_alloconv_call(self, browser, sandbox, app, code, message):
        page = browser.post("/premium/x", {"code": code}, status=400)
        assert message in page.html.find(attrs={"role": "alert"}).text
        assert sandbox.calls["api-micropaiement"] == 0
        assert app.calls == []

    def test_a_missing_field_is_like_an_empty_code(self, browser, sandbox):
        browser.post("/premium/x", {"other": "x"}, status=400)
        assert sandbox.calls["api-micropaiement"] == 0

    def test_a_wrong_code(self, browser, sandbox, app):
        page = browser.post("/premium/x", {"code": "WRONGCODE1"}, status=402)
        assert "pas valide" in page.html.find(attrs={"role": "alert"}).text
        assert page.forms[0]["code"].value == "WRONGCODE1"
        assert "Set-Cookie" not in page.headers
        assert app.calls == []

    def test_a_code_used_elsewhere_is_refused(self, make_gate, browser, sandbox):
        code = sandbox.issue_code()
        TestApp(make_gate(prefixes="/other")).post("/other/x", {"code": code}, status=303)
        page = browser.post("/premium/x", {"code": code}, status=402)
        assert "déjà été utilisé" in page.text

    def test_a_code_for_another_palier(self, make_gate):
        sandbox = Sandbox(accepted_paliers=["fra1"])
        with serve(sandbox) as server:
            browser = TestApp(make_gate(api_base=server.url))
            page = browser.post("/premium/x", {"code": sandbox.issue_code("fra2")}, status=402)
        assert "ne correspond pas" in page.html.find(attrs={"role": "alert"}).text

    def test_the_english_messages(self, make_gate):
        page = TestApp(make_gate(language="en")).post(
            "/premium/x", {"code": "ZZZZZZZZ"}, status=402
        )
        assert "not valid" in page.text

    def test_a_bad_api_key_is_503_and_logged_without_the_key(self, make_gate, sandbox, caplog):
        code = sandbox.issue_code()
        browser = TestApp(make_gate(api_key="not-the-key-1234"))
        page = browser.post("/premium/x", {"code": code}, status=503)
        assert page.headers["Retry-After"]
        assert "pas perdu" in page.text
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("'api_key'" in message for message in errors)
        assert "not-the-key-1234" not in caplog.text
        assert code not in caplog.text
        assert code[:4] + "****" in caplog.text
        assert not sandbox.is_used(code)

    @pytest.mark.parametrize("fault", ["error500", "garbage", "empty", "drop", "flap"])
    def test_alloconv_trouble_is_503_never_access(self, browser, sandbox, app, fault, caplog):
        sandbox.set_fault(fault, script="api-micropaiement")
        browser.get("/premium/x", status=402)  # number cached before the trouble
        page = browser.post("/premium/x", {"code": sandbox.issue_code()}, status=503)
        assert page.headers["Retry-After"]
        # no access cookie (a lost answer sets only the signed note that this browser lost it)
        assert "alloconv_access=" not in " ".join(page.headers.getall("Set-Cookie"))
        assert app.calls == []
        assert [r for r in caplog.records if r.levelno == logging.ERROR]
        assert sandbox.calls["api-micropaiement"] == 1

    def test_a_hanging_alloconv_is_answered_within_the_timeout(self, make_gate, sandbox):
        browser = TestApp(make_gate(timeout="0.5"))
        browser.get("/premium/x", status=402)
        sandbox.set_fault("hang", script="api-micropaiement")
        started = time.monotonic()
        browser.post("/premium/x", {"code": sandbox.issue_code()}, status=503)
        assert time.monotonic() - started < 1.5

    def test_a_foreign_origin_is_refused_before_anything(self, browser, sandbox):
        code = sandbox.issue_code()
        browser.post(
            "/premium/x", {"code": code}, headers={"Origin": "https://evil.example"}, status=403
        )
        browser.post("/premium/x", {"code": code}, headers={"Origin": "null"}, status=403)
        assert sandbox.calls["api-micropaiement"] == 0
        assert not sandbox.is_used(code)

    def test_the_own_origin_is_accepted_whatever_the_scheme(self, browser, sandbox):
        browser.post(
            "/premium/x",
            {"code": sandbox.issue_code()},
            headers={"Origin": "https://localhost"},
            status=303,
        )

    def test_an_oversized_body_is_413_unread(self, browser, sandbox):
        body = b"code=" + b"A" * 100_000
        browser.post(
            "/premium/x", body, content_type="application/x-www-form-urlencoded", status=413
        )
        assert sandbox.calls["api-micropaiement"] == 0

    def test_undecodable_body_is_400(self, browser, sandbox):
        browser.post(
            "/premium/x",
            b"code=%FF%FE%FD%FC%FB%FA%F9%F8",
            content_type="application/x-www-form-urlencoded",
            status=400,
        )
        assert sandbox.calls["api-micropaiement"] == 0

    @pytest.mark.parametrize("length", ["-1", "-100000"])
    def test_a_negative_content_length_is_400_unread(self, make_gate, sandbox, length):
        body = f"code={sandbox.issue_code()}&pad=".encode() + b"A" * 100_000
        environ, answer, _ = call_wsgi(
            make_gate(),
            "/premium/x",
            method="POST",
            body=body,
            content_type="application/x-www-form-urlencoded",
            content_length=length,
        )
        assert answer["status"] == "400 Bad Request"
        assert environ["wsgi.input"].tell() == 0
        assert sandbox.calls["api-micropaiement"] == 0

    def test_a_body_shorter_than_its_content_length_is_400(self, make_gate, sandbox):
        body = f"code={sandbox.issue_code()}".encode()  # the client went away mid-body
        _, answer, _ = call_wsgi(
            make_gate(),
            "/premium/x",
            method="POST",
            body=body,
            content_type="application/x-www-form-urlencoded",
            content_length=str(len(body) + 1),
        )
        assert answer["status"] == "400 Bad Request"
        assert sandbox.calls["api-micropaiement"] == 0

    def test_what_the_visitor_typed_is_escaped(self, browser):
        page = browser.post("/premium/x", {"code": '"><script>alert(1)</script>'}, status=400)
        assert "<script>" not in page.text
        assert "&lt;script&gt;" in page.text
        assert page.forms[0]["code"].value == '"><script>alert(1)</script>'

    @pytest.mark.parametrize(
        ("path", "location"),
        [
            pytest.param(
                "//evil.example/../premium", "/evil.example/../premium", id="double-slash"
            ),
            pytest.param(
                "/\\evil.example/../premium", "/%5Cevil.example/../premium", id="backslash"
            ),
            pytest.param("/premium/caf\xe9", "/premium/caf%E9", id="latin-1-not-utf-8"),
            pytest.param("/premium/\xff", "/premium/%FF", id="invalid-utf-8"),
            pytest.param("/premium/\x1b[2J", "/premium/%1B%5B2J", id="control-character"),
        ],
    )
    def test_the_redirect_stays_on_site_whatever_the_path(self, make_gate, sandbox, path, location):
        body = f"code={sandbox.issue_code()}".encode()
        form = "application/x-www-form-urlencoded"
        _, answer, _ = call_wsgi(make_gate(), path, method="POST", body=body, content_type=form)
        assert answer["status"] == "303 See Other"
        assert dict(answer["headers"])["Location"] == location

    def test_the_query_is_kept_and_encoded(self, browser, sandbox):
        answer = browser.post(
            "/premium/x?page=2&q=a%20b&raw=\x01", {"code": sandbox.issue_code()}, status=303
        )
        assert answer.headers["Location"] == "/premium/x?page=2&q=a%20b&raw=%01"

    @pytest.mark.parametrize("path", ["/premium/%FF", "/premium/caf%E9", "/premium/%C3"])
    def test_paths_that_are_not_utf_8_get_the_page(self, browser, path):
        page = browser.get(path, status=402)
        assert page.forms[0].action == path
        browser.head(path, status=402)

    def test_a_lost_answer_gives_a_reference_and_says_the_code_may_be_spent(
        self, browser, sandbox, caplog
    ):
        browser.get("/premium/x", status=402)
        sandbox.set_fault("drop", script="api-micropaiement")
        page = browser.post("/premium/x", {"code": sandbox.issue_code()}, status=503)
        alert = page.html.find(attrs={"role": "alert"}).text
        assert "peut-être déjà été compté" in alert
        [reference] = re.findall(r"référence ([0-9A-F]{10})", alert)
        assert f"reference {reference}" in caplog.text

    def test_an_unreachable_alloconv_says_the_code_is_safe(self, make_gate):
        browser = TestApp(make_gate(api_base=refused_url(), number="08 90 00 00 00"))
        page = browser.post("/premium/x", {"code": "ABCDEFGH"}, status=503)
        assert "pas perdu" in page.html.find(attrs={"role": "alert"}).text


class TestTheCookie:
    def test_a_valid_cookie_passes_a_post_body_through(self, browser, sandbox, app):
        buy(browser, sandbox)
        response = browser.post("/premium/comment", {"text": "merci"}, status=200)
        assert response.body == PAID
        assert app.calls[-1]["body"] == b"text=merci"

    @pytest.mark.parametrize(
        ("app_headers", "cache_control", "vary"),
        [
            pytest.param([], "private", "Cookie", id="nothing-said"),
            pytest.param(
                [("Cache-Control", "public, max-age=60")],
                "private, max-age=60",
                "Cookie",
                id="public-made-private",
            ),
            pytest.param([("Cache-Control", "no-store")], "no-store", "Cookie", id="stricter-kept"),
            pytest.param(
                [("Vary", "Accept-Encoding")],
                "private",
                "Accept-Encoding, Cookie",
                id="vary-extended",
            ),
        ],
    )
    def test_paid_responses_stay_out_of_shared_caches(
        self, make_gate, sandbox, app_headers, cache_control, vary
    ):
        wrapped = RecordingApp([("Content-Type", "text/plain"), *app_headers])
        browser = TestApp(make_gate(wrapped))
        buy(browser, sandbox)
        page = browser.get("/premium/x", status=200)
        assert page.headers["Cache-Control"] == cache_control
        assert page.headers["Vary"] == vary

    def test_access_ends_after_the_duration_whatever_the_browser_does(
        self, make_gate, sandbox, clock, app
    ):
        browser = TestApp(make_gate(duration="30m"))
        buy(browser, sandbox)
        clock.advance(30 * 60 - 1)
        browser.get("/premium/x", status=200)
        clock.advance(1)
        browser.get("/premium/x", status=402)  # the browser still sends the cookie
        assert len(app.calls) == 1

    def test_a_tampered_cookie_is_refused(self, browser, sandbox):
        value = access_cookie(buy(browser, sandbox)).split(";")[0].split("=", 1)[1]
        browser.reset()
        for position in range(0, len(value) - 1, 3):  # the last char holds padding bits
            flipped = value[:position] + ("A" if value[position] != "A" else "B")
            browser.set_cookie("alloconv_access", flipped + value[position + 1 :])
            browser.get("/premium/x", status=402)
        browser.set_cookie("alloconv_access", value)
        browser.get("/premium/x", status=200)

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("", id="empty"),
            pytest.param("garbage", id="garbage"),
            pytest.param("a.b.c", id="three-parts"),
            pytest.param("~" * 50, id="separators"),
            pytest.param("x" * 4000, id="huge"),
        ],
    )
    def test_malformed_cookies_are_refused(self, make_gate, app, value):
        _, answer, _ = call_wsgi(make_gate(), "/premium/x", cookie=f"alloconv_access={value}")
        assert answer["status"] == "402 Payment Required"
        assert app.calls == []

    def test_a_retired_secret_no_longer_opens(self, make_gate, sandbox):
        old = TestApp(make_gate(secret=SECRET))
        buy(old, sandbox)
        cookie = old.cookies["alloconv_access"]
        assert cookie
        rotated = TestApp(make_gate(secret=f"{OTHER_SECRET} {SECRET}"))
        rotated.set_cookie("alloconv_access", cookie)
        rotated.get("/premium/x", status=200)  # still listed: verifies
        retired = TestApp(make_gate(secret=OTHER_SECRET))
        retired.set_cookie("alloconv_access", cookie)
        retired.get("/premium/x", status=402)

    def test_one_gates_cookie_never_opens_another_with_the_same_secret(
        self, make_gate, sandbox, app
    ):
        videos = make_gate(prefixes="/videos")
        both = TestApp(make_gate(videos, prefixes="/premium"))
        buy(both, sandbox, "/premium/x")
        both.get("/premium/x", status=200)
        both.get("/videos/x", status=402)
        buy(both, sandbox, "/videos/x")
        both.get("/videos/x", status=200)
        both.get("/premium/x", status=200)  # buying the second kept the first

    def test_a_longer_access_keeps_its_cookie_life_when_a_shorter_one_is_bought(
        self, make_gate, sandbox
    ):
        week = make_gate(prefixes="/a", duration="7d")
        browser = TestApp(make_gate(week, prefixes="/b", duration="30m"))
        assert "Max-Age=604800" in access_cookie(buy(browser, sandbox, "/a/x"))
        assert "Max-Age=604800" in access_cookie(buy(browser, sandbox, "/b/x"))
        browser.get("/a/x", status=200)
        browser.get("/b/x", status=200)

    def test_the_same_gate_mounted_twice_is_two_gates(self, make_gate, sandbox, app):
        cheap, dear = make_gate(), make_gate()

        def site(environ, start_response):
            mount = "/dear" if environ["PATH_INFO"].startswith("/dear") else "/cheap"
            environ["SCRIPT_NAME"] += mount
            environ["PATH_INFO"] = environ["PATH_INFO"][len(mount) :]
            return (dear if mount == "/dear" else cheap)(environ, start_response)

        browser = TestApp(site)
        buy(browser, sandbox, "/cheap/premium/x")
        browser.get("/cheap/premium/x", status=200)
        browser.get("/dear/premium/x", status=402)

    @pytest.mark.parametrize(
        "header",
        [
            pytest.param("alloconv_access=junkjunkjunkjunkjunk~{good}", id="junk-token-first"),
            pytest.param("alloconv_access=junk; alloconv_access={good}", id="junk-cookie-first"),
            pytest.param('alloconv_access="{good}"', id="quoted"),
            pytest.param("a=1;alloconv_access={good} ;b=2", id="no-space"),
        ],
    )
    def test_a_good_token_is_found_among_junk(self, make_gate, sandbox, app, header):
        gate = make_gate()
        good = TestApp(gate)
        buy(good, sandbox)
        value = good.cookies["alloconv_access"]
        _, answer, _ = call_wsgi(gate, "/premium/x", cookie=header.format(good=value))
        assert answer["status"] == "200 OK"

    @pytest.mark.parametrize(
        "header",
        [
            pytest.param("foo=bar alloconv_access={good}", id="inside-another-value"),
            pytest.param("xalloconv_access={good}", id="longer-name"),
            pytest.param("ALLOCONV_ACCESS={good}", id="other-case"),
        ],
    )
    def test_a_token_under_another_cookie_name_is_ignored(self, make_gate, sandbox, app, header):
        gate = make_gate()
        good = TestApp(gate)
        buy(good, sandbox)
        value = good.cookies["alloconv_access"]
        _, answer, _ = call_wsgi(gate, "/premium/x", cookie=header.format(good=value))
        assert answer["status"] == "402 Payment Required"
