"""The gate page as served: rendered once per number refresh, never stale, never mixed up.

Every visitor without access and every bot gets the page, so the plain GET is answered
from pages rendered ahead (per language, order of the numbers and numbers) with only the
request's own URL put in. These tests hold that shortcut to what the full way (WebOb,
``render`` from scratch) answers, over real HTTP where a visitor would notice.
"""

import html
import io
import re
from html.parser import HTMLParser

import pytest
import requests
from clock import FakeClock
from servers import serve

from alloconv_gate import Gate
from alloconv_gate.languages import (
    MEMO_MAX_CHARS,
    MEMO_SIZE,
    _order_memo,
    _preferred_memo,
    language_for,
    likely_order,
)
from alloconv_gate.messages import catalogue
from alloconv_gate.numbers import RETRY_AFTER_FAILURE
from alloconv_gate.page import Offer, PageContent, render
from alloconv_gate.sandbox import DEFAULT_NUMBERS, Sandbox

KEY = "sandbox-key"
SECRET = "correct-horse-battery-staple-0123456789"
FRA1, BEL1, CHE1 = (DEFAULT_NUMBERS[palier] for palier in ("fra1", "bel1", "che1"))
NEW_FRA1 = "08 99 11 22 33"
NOTICES = {
    "price_notice.bel1": "2,00 € par code (Belgique)",
    "price_notice.che1": "3.00 CHF par code (Suisse)",
}
# Visitors of one gate: (Accept-Language, the page's language, its numbers in order, the
# first price shown).
VISITORS = (
    (None, "fr", [FRA1, BEL1, CHE1], "3,00 €"),
    ("fr-BE,fr;q=0.8", "fr", [BEL1, FRA1, CHE1], "2,00 €"),
    ("en-GB,en;q=0.9", "en", [FRA1, BEL1, CHE1], "EUR 3.00"),
    ("de-CH,en;q=0.5", "en", [CHE1, FRA1, BEL1], "3.00 CHF"),
    ("fr-CH", "fr", [CHE1, FRA1, BEL1], "3.00 CHF"),
)
HOSTILE = "/premium/<x-q a=\"1\" b='2'>&amp;?q=\"><script>&x=<b>'"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the paid article"]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def own_sandbox():
    """A sandbox of this test's own, whose numbers it may change; (sandbox, api_base)."""
    sandbox = Sandbox()
    with serve(sandbox, threads=4) as server:
        yield sandbox, server.url


def make_gate(api_base, clock, **options):
    settings = {
        "api_key": KEY,
        "secret": SECRET,
        "palier": "fra1",
        "prefixes": "/premium",
        "api_base": api_base,
        "timeout": "2",
        "store": "memory",
        **options,
    }
    return Gate(app, clock=clock, **settings)


class Page(HTMLParser):
    """What a visitor reads on the page: its language, numbers in order, prices, form."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.lang = self.action = None
        self.numbers: list[str] = []
        self.prices: list[str] = []
        self._into: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.lang = attrs["lang"]
        elif tag == "form":
            self.action = attrs["action"]
        css = (attrs.get("class") or "").split()
        self._into = self.numbers if "number" in css else self.prices if "price" in css else None

    def handle_data(self, data):
        if self._into is not None:
            self._into.append(data)
            self._into = None


def call(gate, path, query="", method="GET", **headers):
    """The gate called as a server calls it: (status, header list, body)."""
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "localhost",
        "CONTENT_LENGTH": "0",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
    }
    environ.update({f"HTTP_{name.upper()}": value for name, value in headers.items()})
    if "HTTP_CONTENT_TYPE" in environ:
        environ["CONTENT_TYPE"] = environ.pop("HTTP_CONTENT_TYPE")
    answer = {}

    def start_response(status, headerlist, exc_info=None):
        answer.update(status=status, headers=headerlist)

    body = b"".join(gate(environ, start_response))
    return answer["status"], answer["headers"], body


class TestANumberRefresh:
    def test_the_next_page_shows_the_new_number(self, own_sandbox, clock):
        sandbox, api_base = own_sandbox
        with serve(make_gate(api_base, clock, number_ttl="1h")) as site:
            url = f"{site.url}/premium/article"
            assert Page(requests.get(url, timeout=5).text).numbers == [FRA1]
            sandbox.numbers["fra1"] = NEW_FRA1
            clock.advance(3599)  # within number_ttl: the cached number, no call
            assert Page(requests.get(url, timeout=5).text).numbers == [FRA1]
            assert sandbox.calls["api-numeros"] == 1
            clock.advance(1)
            page = requests.get(url, timeout=5)
            assert page.status_code == 402
            assert Page(page.text).numbers == [NEW_FRA1]
            assert FRA1 not in page.text
            assert page.headers["Content-Length"] == str(len(page.content))
            assert requests.head(url, timeout=5).headers["Content-Length"] == str(len(page.content))
            twin = requests.get(url, headers={"Accept": "application/json"}, timeout=5)
            assert twin.json()["paliers"][0]["number"] == NEW_FRA1
            assert sandbox.calls["api-numeros"] == 2

    def test_a_number_back_after_an_outage_turns_503_into_402(self, own_sandbox, clock):
        sandbox, api_base = own_sandbox
        sandbox.set_fault("error500", script="api-numeros")
        with serve(make_gate(api_base, clock)) as site:
            url = f"{site.url}/premium/article"
            down = requests.get(url, timeout=5)
            assert down.status_code == 503
            assert down.headers["Retry-After"] == "60"
            assert Page(down.text).numbers == []
            sandbox.clear_fault()
            clock.advance(RETRY_AFTER_FAILURE)
            up = requests.get(url, timeout=5)
            assert up.status_code == 402
            assert "Retry-After" not in up.headers
            assert Page(up.text).numbers == [FRA1]


class TestNeverMixedUp:
    def test_languages_orders_and_urls_each_their_own(self, sandbox_url, clock):
        """Visitors of every kind, interleaved over one server, each get their page."""
        gate = make_gate(sandbox_url, clock, palier="fra1 bel1 che1", language="auto", **NOTICES)
        with serve(gate) as site, requests.Session() as session:
            for turn in range(3):
                for index, (accept_language, lang, numbers, price) in enumerate(VISITORS):
                    path = f"/premium/{index}?turn={turn}"
                    headers = {"Accept-Language": accept_language} if accept_language else {}
                    answer = session.get(site.url + path, headers=headers, timeout=5)
                    assert answer.status_code == 402
                    page = Page(answer.text)
                    assert (page.lang, page.numbers, page.action) == (lang, numbers, path)
                    assert page.prices[0].startswith(price)

    def test_the_language_is_the_gates_own_when_not_auto(self, sandbox_url, clock):
        english = make_gate(sandbox_url, clock, language="en")
        french = make_gate(sandbox_url, clock)
        for _ in range(2):
            for gate, lang in ((english, "en"), (french, "fr"), (english, "en")):
                _, _, body = call(gate, "/premium/x", ACCEPT_LANGUAGE="fr-FR")
                assert Page(body.decode()).lang == lang


class TestTheSameAnswerAsTheFullWay:
    """A POST of no known type goes the full way (WebOb, and a page rendered ahead with a
    place for the code typed) to the very page a GET gets without WebOb: status, headers
    in order, body. And both are what ``render`` makes from scratch."""

    def test_what_render_makes(self, sandbox_url, clock):
        gate = make_gate(sandbox_url, clock, palier="fra1 bel1 che1", language="auto", **NOTICES)
        content = PageContent(
            language="fr",  # de-CH: neither French nor English, so the default
            offers=(
                Offer(CHE1, NOTICES["price_notice.che1"]),
                Offer(FRA1, catalogue("fr")["price_notice.fra1"]),
                Offer(BEL1, NOTICES["price_notice.bel1"]),
            ),
            duration=86400,
            action="/premium/x?a=%3Cb%3E'&c",
        )
        for method, content_type in (("GET", None), ("POST", "text/plain"), ("GET", None)):
            headers = {"CONTENT_TYPE": content_type} if content_type else {}
            _, _, body = call(
                gate, "/premium/x", "a=<b>'&c", method=method, ACCEPT_LANGUAGE="de-CH", **headers
            )
            assert body == render(content)

    @pytest.mark.parametrize(
        "path, query",
        [
            pytest.param("/premium/article", "", id="plain"),
            pytest.param("/premium/a b/caf\xe9", "x=1&y=%22", id="spaces-latin1"),
            pytest.param(HOSTILE, "q=\"><script>&z='", id="hostile"),
            pytest.param("//evil.example/../premium/x", "", id="other-site"),
        ],
    )
    @pytest.mark.parametrize("accept_language", [None, "en-GB", "fr-BE,fr;q=0.8", "de-CH"], ids=str)
    @pytest.mark.parametrize("number", [True, False], ids=["402", "503"])
    def test_get_and_the_full_way_agree(
        self, sandbox, sandbox_url, clock, path, query, accept_language, number
    ):
        if not number:
            sandbox.set_fault("error500", script="api-numeros")
        gate = make_gate(sandbox_url, clock, palier="fra1 bel1 che1", language="auto", **NOTICES)
        headers = {"ACCEPT_LANGUAGE": accept_language} if accept_language else {}
        for _ in range(2):  # the first GET renders the page, the second is served it
            fast = call(gate, path, query, **headers)
            full = call(gate, path, query, method="POST", CONTENT_TYPE="text/plain", **headers)
            assert fast == full
            assert fast[0].startswith("402" if number else "503")
            head = call(gate, path, query, method="HEAD", **headers)
            assert head == (fast[0], fast[1], b"")
        html = fast[2].decode()
        assert "<script>" not in html and "<b>" not in html and "<x-q" not in html

    @pytest.mark.parametrize("cookie", [None, "theme=dark; alloconv_access=junk"], ids=str)
    def test_a_gate_of_two_codes_before_any_passed(self, sandbox_url, clock, cookie):
        gate = make_gate(sandbox_url, clock, codes="2")
        headers = {"COOKIE": cookie} if cookie else {}
        for _ in range(2):
            fast = call(gate, HOSTILE, **headers)
            full = call(gate, HOSTILE, method="POST", CONTENT_TYPE="text/plain", **headers)
            assert fast == full
        assert fast[2].count(b'name="code"') == 2

    def test_a_webmasters_template_with_the_form_twice(self, sandbox_url, clock, tmp_path):
        (tmp_path / "page.html").write_text(
            '<html lang="$lang"><body>$numbers $form <footer>$form</footer></body></html>'
        )
        gate = make_gate(sandbox_url, clock, template="page.html", here=str(tmp_path))
        fast = call(gate, HOSTILE, "q=<b>")
        full = call(gate, HOSTILE, "q=<b>", method="POST", CONTENT_TYPE="text/plain")
        assert fast == full
        assert len(re.findall(r'<form method="post" action="[^"<>]*"', fast[2].decode())) == 2


class TestRefusals:
    def test_each_visitor_sees_the_code_they_typed_where_they_typed_it(self, sandbox_url, clock):
        """Refusals of typed junk are served from one page rendered ahead: each answer
        holds its own visitor's code, URL and language, never another's."""
        gate = make_gate(sandbox_url, clock, language="auto")
        typed = [
            ("fr", "AB", "error_too_short"),
            ("en", '"><script>alert(1)</script>', "error_characters"),
            ("fr", "ABCD!234", "error_characters"),
            ("en", "XY", "error_too_short"),
        ]
        with serve(gate) as site, requests.Session() as session:
            for turn in range(2):
                for index, (language, code, error) in enumerate(typed):
                    path = f"/premium/{index}?turn={turn}"
                    answer = session.post(
                        site.url + path,
                        data={"code": code},
                        headers={"Accept-Language": language},
                        timeout=5,
                    )
                    assert answer.status_code == 400
                    assert "<script>" not in answer.text
                    page = Page(answer.text)
                    assert (page.lang, page.action) == (language, path)
                    assert Field(answer.text).value == code
                    alert = catalogue(language)[error].format(reference="", done=0, n=1)
                    assert html.escape(alert) in answer.text


class Field(HTMLParser):
    """The code field's value, as a browser reads it."""

    def __init__(self, html_text: str):
        super().__init__(convert_charrefs=True)
        self.value = None
        self.feed(html_text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("name") == "code":
            self.value = attrs["value"]


class TestJsonOrHtml:
    @pytest.mark.parametrize(
        "headers, json",
        [
            pytest.param({}, False, id="no-accept"),
            pytest.param({"ACCEPT": "*/*"}, False, id="anything"),
            pytest.param({"ACCEPT": "text/html,*/*;q=0.8"}, False, id="browser"),
            pytest.param({"ACCEPT": "application/json"}, True, id="json"),
            pytest.param({"ACCEPT": "application/*"}, True, id="application-any"),
            pytest.param({"ACCEPT": "text/html;q=0.1, application/json"}, True, id="ranked"),
            pytest.param({"CONTENT_TYPE": "application/json"}, True, id="sent-json"),
        ],
    )
    def test_each_client_gets_what_it_asks_for_every_time(self, sandbox_url, clock, headers, json):
        gate = make_gate(sandbox_url, clock)
        for _ in range(2):  # remembered per header: the second answer is the same
            status, answer_headers, body = call(gate, "/premium/x", **headers)
            assert status.startswith("402")
            content_type = dict(answer_headers)["Content-Type"]
            assert content_type.startswith("application/json" if json else "text/html")
            assert body.startswith(b"{" if json else b"<!DOCTYPE html>")


class TestTheMemos:
    def test_headers_are_remembered_within_bounds(self):
        for index in range(3 * MEMO_SIZE):
            assert language_for("auto", f"en;q=0.{index % 9 + 1}, x-{index}") == "en"
            assert likely_order(("fra1", "bel1"), f"fr-BE, x-{index}") == (1, 0)
        assert _preferred_memo.cache_info().currsize <= MEMO_SIZE
        assert _order_memo.cache_info().currsize <= MEMO_SIZE

    def test_a_long_header_is_read_and_not_kept(self):
        header = ", ".join(f"x-{index};q=0.1" for index in range(MEMO_MAX_CHARS)) + ", en"
        before = _preferred_memo.cache_info().currsize
        assert language_for("auto", header) == "en"
        assert likely_order(("fra1", "bel1"), header + ", fr-BE") == (1, 0)
        assert _preferred_memo.cache_info().currsize == before
