"""Several gates, several countries and kinds of payment, the page's language and
template, and the JSON twin of the page, through the middleware."""

import json
from typing import ClassVar

import pytest
from clock import FakeClock
from servers import serve
from webtest import TestApp

from alloconv_gate import ConfigError, Gate
from alloconv_gate.config import parse_gates
from alloconv_gate.middleware import MAX_FORM_BYTES
from alloconv_gate.sandbox import Sandbox

SECRET = "several-gates-tests-secret-0123456789abcdef"
BASE = {"api_key": "sandbox-key", "secret": SECRET, "store": "memory", "timeout": "2"}


def content(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


@pytest.fixture
def make_gate(sandbox_url):
    def make(**options):
        return Gate(content, clock=FakeClock(), **{**BASE, "api_base": sandbox_url, **options})

    return make


# Gates sold at different prices check codes with different keys (an AlloConv API each,
# accepting its own paliers: see tests/conftest.py), or start-up refuses them.
TWO_GATES = {
    "gates": "premium videos",
    "palier": "fra1",
    "premium.api_key": "key-fra1",
    "videos.api_key": "key-fra2",
    "premium.prefixes": "/premium",
    "videos.prefixes": "/videos",
    "videos.palier": "fra2",
    "videos.price_notice": "1,50 € par code",
    "videos.duration": "1h",
}


class TestConfiguration:
    def test_per_gate_options_override_the_defaults(self):
        premium, videos = parse_gates({**BASE, **TWO_GATES})
        assert (premium.name, premium.paliers, premium.duration) == ("premium", ("fra1",), 86400)
        assert (videos.name, videos.paliers, videos.duration) == ("videos", ("fra2",), 3600)
        assert videos.price_notice == "1,50 € par code"
        assert premium.scope != videos.scope
        assert (premium.api_key, videos.api_key) == ("key-fra1", "key-fra2")

    def test_without_gates_one_gate_named_default_keeps_its_scope(self):
        [gate] = parse_gates({**BASE, "palier": "fra1", "prefixes": "/premium"})
        assert (gate.name, gate.scope) == ("default", "default:/premium")

    @pytest.mark.parametrize(
        ("extra", "option"),
        [
            pytest.param({"music.prefixes": "/music"}, "music.prefixes", id="undeclared-gate"),
            pytest.param({"premium.shared_key": "true"}, "premium.shared_key", id="not-per-gate"),
            pytest.param({"premium.secret": SECRET}, "premium.secret", id="secret-not-per-gate"),
            pytest.param({"premium.api_key": "a b"}, "premium.api_key", id="bad-gate-key"),
            pytest.param({"premium.duration": "forever"}, "premium.duration", id="bad-value"),
            pytest.param({"videos.prefixes": "/premium"}, "videos.prefixes", id="same-prefix"),
            pytest.param({"gates": "premium Videos"}, "gates", id="bad-name"),
            pytest.param({"gates": "premium premium"}, "gates", id="twice"),
            pytest.param({"price_notice.x-1": "1 €"}, "price_notice.x-1", id="bad-palier-key"),
        ],
    )
    def test_mistakes_are_named_at_start_up(self, extra, option):
        with pytest.raises(ConfigError) as raised:
            parse_gates({**BASE, **TWO_GATES, **extra})
        assert raised.value.option == option

    def test_per_gate_options_need_gates(self):
        with pytest.raises(ConfigError, match="'gates = NAME"):
            parse_gates({**BASE, "palier": "fra1", "prefixes": "/p", "premium.duration": "1h"})


class TestSeveralGates:
    def test_each_gate_has_its_own_palier_and_access(self, make_gate, sandbox):
        browser = TestApp(make_gate(**TWO_GATES))
        assert "08 99 23 45 67" in browser.get("/premium/a", status=402).text
        videos_page = browser.get("/videos/a", status=402)
        assert "08 99 23 45 68" in videos_page.text
        assert "1,50 €" in videos_page.text
        browser.post("/videos/a", {"code": sandbox.issue_code("fra2")}, status=303)
        browser.get("/videos/a", status=200)
        browser.get("/premium/a", status=402)  # one gate's cookie never opens another

    def test_the_longest_prefix_decides(self, make_gate, sandbox):
        gate = make_gate(
            gates="site hd",
            palier="fra1",
            **{
                "site.prefixes": "/videos",
                "site.api_key": "key-fra1",
                "hd.prefixes": "/videos/hd",
                "hd.api_key": "key-fra2",
                "hd.palier": "fra2",
                "hd.price_notice": "2 €",
            },
        )
        browser = TestApp(gate)
        browser.post("/videos/x", {"code": sandbox.issue_code()}, status=303)
        browser.get("/videos/x", status=200)
        assert "08 99 23 45 68" in browser.get("/videos/hd/x", status=402).text


class TestSeveralPaliers:
    OPTIONS: ClassVar = {
        "palier": "fra1 bel1 che1",
        "prefixes": "/premium",
        "price_notice.bel1": "2,00 € par code (Belgique)",
        "price_notice.che1": "3.00 CHF par code (Suisse)",
    }

    def numbers_in_order(self, page):
        return [a.text for a in page.html.find_all("a", class_="number")]

    @pytest.mark.parametrize(
        ("accept_language", "first"),
        [
            pytest.param(None, "08 99 23 45 67", id="no-header-configured-order"),
            pytest.param("fr", "08 99 23 45 67", id="french-keeps-order"),
            pytest.param("fr-BE,fr;q=0.8", "0905 12 345", id="belgium"),
            pytest.param("nl-BE", "0905 12 345", id="flemish"),
            pytest.param("de-CH,de;q=0.9", "0901 123 456", id="switzerland"),
        ],
    )
    def test_one_number_per_country_the_visitors_first(self, make_gate, accept_language, first):
        headers = {"Accept-Language": accept_language} if accept_language else {}
        page = TestApp(make_gate(**self.OPTIONS)).get("/premium/x", headers=headers, status=402)
        numbers = self.numbers_in_order(page)
        assert len(numbers) == 3
        assert numbers[0] == first
        assert "Belgique" in page.text and "Suisse" in page.text

    def test_a_code_of_any_listed_palier_is_accepted(self, make_gate, sandbox):
        browser = TestApp(make_gate(**self.OPTIONS))
        browser.post("/premium/x", {"code": sandbox.issue_code("bel1")}, status=303)
        browser.get("/premium/x", status=200)

    def test_an_sms_palier_gets_an_sms_link_with_its_keyword(self, make_gate):
        page = TestApp(
            make_gate(palier="sms1", prefixes="/premium", price_notice="1 € par SMS")
        ).get("/premium/x", status=402)
        link = page.html.find("a", class_="number")
        assert link["href"] == "sms:81212?body=ACCES"
        assert link.text == "Envoyez ACCES au 81212"


class TestLanguage:
    @pytest.mark.parametrize(
        ("accept_language", "lang"),
        [
            pytest.param(None, "fr", id="none"),
            pytest.param("en-GB,en;q=0.9", "en", id="english"),
            pytest.param("de,en;q=0.5,fr;q=0.7", "fr", id="french-preferred"),
            pytest.param("es", "fr", id="neither"),
        ],
    )
    def test_auto_follows_the_visitor(self, make_gate, accept_language, lang):
        headers = {"Accept-Language": accept_language} if accept_language else {}
        gate = make_gate(palier="fra1", prefixes="/premium", language="auto")
        page = TestApp(gate).get("/premium/x", headers=headers, status=402)
        assert page.html.html["lang"] == lang
        price = page.html.find(class_="price").text
        assert price.startswith("EUR 3.00" if lang == "en" else "3,00 €")


class TestTemplate:
    def test_a_webmasters_template_with_escaped_values(self, make_gate, tmp_path):
        (tmp_path / "page.html").write_text(
            '<!DOCTYPE html><html lang="$lang"><title>$title</title><body class=mine>'
            "<header>My site</header>$numbers $form<p>$access_lasts</p>$unknown</body></html>"
        )
        gate = make_gate(
            palier="fra1", prefixes="/premium", template="page.html", here=str(tmp_path)
        )
        page = TestApp(gate).get('/premium/x?q="><script>', status=402)
        assert "<header>My site</header>" in page.text
        assert page.forms[0]["code"].value == ""
        assert "08 99 23 45 67" in page.text
        assert "<script>" not in page.text
        assert "$unknown" in page.text  # left as written, never a crash

    def test_a_template_without_the_form_is_a_start_up_error(self, make_gate, tmp_path):
        (tmp_path / "page.html").write_text("<html>$numbers</html>")
        with pytest.raises(ConfigError, match=r"\$form"):
            make_gate(palier="fra1", prefixes="/premium", template="page.html", here=str(tmp_path))

    def test_an_unreadable_template(self, make_gate, tmp_path):
        with pytest.raises(ConfigError, match="'template'"):
            make_gate(palier="fra1", prefixes="/premium", template="nope.html", here=str(tmp_path))


class TestJSON:
    HEADERS: ClassVar = {"Accept": "application/json"}

    @pytest.fixture
    def client(self, make_gate):
        return TestApp(
            make_gate(palier="fra1 bel1", prefixes="/premium", **{"price_notice.bel1": "2 €"})
        )

    def test_402_says_how_to_pay(self, client):
        answer = client.get("/premium/x?a=1", headers=self.HEADERS, status=402)
        assert answer.content_type == "application/json"
        assert answer.headers["Cache-Control"] == "no-store"
        body = answer.json
        assert body["gate"] == "default"
        assert [p["palier"] for p in body["paliers"]] == ["fra1", "bel1"]
        assert body["paliers"][0]["number"] == "08 99 23 45 67"
        assert body["paliers"][1]["price_notice"] == "2 €"
        assert body["duration"] == 86400
        assert body["submit"] == {
            "method": "POST",
            "url": "/premium/x?a=1",
            "field": "code",
            "content_types": ["application/json", "application/x-www-form-urlencoded"],
        }

    def test_html_stays_the_default(self, client):
        for accept in (None, "*/*", "text/html,application/json;q=0.9"):
            headers = {"Accept": accept} if accept else {}
            answer = client.get("/premium/x", headers=headers, status=402)
            assert answer.content_type == "text/html"

    def test_a_good_code_as_json(self, client, sandbox):
        answer = client.post_json("/premium/x", {"code": sandbox.issue_code()}, status=200)
        assert answer.json["access_until"] > 0
        assert "alloconv_access=" in answer.headers["Set-Cookie"]
        client.get("/premium/x", status=200)

    @pytest.mark.parametrize(
        ("body", "status", "error"),
        [
            pytest.param({"code": "ZZZZ9999"}, 402, "invalid", id="invalid"),
            pytest.param({"code": "abc"}, 400, "malformed", id="malformed"),
            pytest.param({"nothing": 1}, 400, "malformed", id="no-code"),
        ],
    )
    def test_refusals_have_a_stable_error(self, client, body, status, error):
        answer = client.post_json("/premium/x", body, status=status)
        assert answer.json["error"] == error
        assert answer.json["message"]
        assert "Set-Cookie" not in answer.headers

    def test_not_json_at_all(self, client):
        answer = client.post(
            "/premium/x", b"{not json", content_type="application/json", status=400
        )
        assert answer.json["error"] == "malformed"

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b'{"code": "ABCDEFGH\\ud800"}', id="code"),
            pytest.param(b'{"codes": ["\\udfff", "ABCDEFGH"]}', id="codes"),
            pytest.param(b'{"alloconv_grant": "\\ud800"}', id="support-link"),
        ],
    )
    def test_a_lone_surrogate_is_malformed(self, client, sandbox, body):
        answer = client.post("/premium/x", body, content_type="application/json", status=400)
        assert answer.json["error"] == "malformed"
        assert sandbox.calls["api-micropaiement"] == 0

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"[" * 2000 + b"]" * 2000, id="arrays"),
            pytest.param(b'{"a":[' * 500 + b"]}" * 500, id="objects-and-arrays"),
        ],
    )
    def test_json_nested_too_deep_is_malformed(self, client, body):
        assert len(body) <= MAX_FORM_BYTES
        answer = client.post("/premium/x", body, content_type="application/json", status=400)
        assert answer.json["error"] == "malformed"

    def test_wrong_palier_rate_limited_and_unavailable(self, make_gate, sandbox):
        strict = Sandbox(accepted_paliers=["fra1"])
        with serve(strict) as server:
            client = TestApp(
                make_gate(
                    palier="fra1", prefixes="/premium", api_base=server.url, rate_limit="2/minute"
                )
            )
            answer = client.post_json("/premium/x", {"code": strict.issue_code("fra2")}, status=402)
            assert answer.json["error"] == "wrong-palier"
            client.post_json("/premium/x", {"code": "ZZZZ9999"}, status=402)
            limited = client.post_json("/premium/x", {"code": "ZZZZ9998"}, status=429)
            assert limited.json["error"] == "rate-limited"
            assert limited.headers["Retry-After"]
        sandbox.set_fault("drop", script="api-micropaiement")
        client = TestApp(make_gate(palier="fra1", prefixes="/premium"))
        lost = client.post_json("/premium/x", {"code": sandbox.issue_code()}, status=503)
        assert lost.json["error"] == "unavailable"
        assert lost.json["reference"] in lost.json["message"]
        assert json.loads(lost.body)["paliers"]


class TestSeveralCodesForOneAccess:
    @pytest.fixture
    def browser(self, make_gate):
        return TestApp(make_gate(palier="fra1", prefixes="/premium", codes="2"))

    def test_the_page_asks_for_two_codes_and_says_so(self, browser):
        page = browser.get("/premium/x", status=402)
        assert len(page.html.find_all("input", attrs={"name": "code"})) == 2
        assert "demande 2 codes" in page.text

    def test_both_codes_at_once(self, browser, sandbox):
        codes = [sandbox.issue_code(), sandbox.issue_code()]
        form = browser.get("/premium/x", status=402).forms[0]
        form.set("code", codes[0], index=0)
        form.set("code", codes[1], index=1)
        form.submit(status=303)
        browser.get("/premium/x", status=200)

    def test_a_code_that_passed_is_kept_when_the_other_fails(self, browser, sandbox):
        good, later = sandbox.issue_code(), sandbox.issue_code()
        form = browser.get("/premium/x", status=402).forms[0]
        form.set("code", good, index=0)
        form.set("code", "ZZZZ9999", index=1)
        page = form.submit(status=402)
        assert "pas valide" in page.html.find(attrs={"role": "alert"}).text
        page = browser.get("/premium/x", status=402)  # progress kept in its cookie
        assert len(page.html.find_all("input", attrs={"name": "code"})) == 1
        assert page.html.find("label").text == "Code 2"
        page.forms[0].set("code", later)
        answer = page.forms[0].submit(status=303)
        assert any(  # the finished set's progress cookie is deleted
            c.startswith("alloconv_access_set_default=;")
            for c in answer.headers.getall("Set-Cookie")
        )
        browser.get("/premium/x", status=200)

    def test_one_code_then_the_next_later(self, browser, sandbox):
        first = browser.post("/premium/x", {"code": sandbox.issue_code()}, status=402)
        assert "1 code(s) sur 2" in first.html.find(attrs={"role": "alert"}).text
        browser.post("/premium/x", {"code": sandbox.issue_code()}, status=303)
        browser.get("/premium/x", status=200)

    def test_progress_survives_a_lost_cookie_through_the_journal(self, browser, sandbox):
        first, second = sandbox.issue_code(), sandbox.issue_code()
        browser.post("/premium/x", {"code": first}, status=402)
        browser.reset()  # the progress cookie is gone
        form = browser.get("/premium/x", status=402).forms[0]
        form.set("code", first, index=0)  # AlloConv now says ERR3: it passed here
        form.set("code", second, index=1)
        form.submit(status=303)

    def test_as_json(self, browser, sandbox):
        codes = [sandbox.issue_code(), sandbox.issue_code()]
        answer = browser.post_json("/premium/x", {"codes": codes}, status=200)
        assert answer.json["access_until"] > 0

    def test_a_finished_set_restores_with_any_of_its_codes(self, browser, make_gate, sandbox):
        codes = [sandbox.issue_code(), sandbox.issue_code()]
        browser.post_json("/premium/x", {"codes": codes}, status=200)
        gate = browser.app
        other = TestApp(gate)
        other.post("/premium/x", {"code": codes[1]}, status=303)
        other.get("/premium/x", status=200)

    def test_one_code_at_a_time_as_json(self, browser, sandbox):
        first = browser.post_json("/premium/x", {"code": sandbox.issue_code()}, status=402)
        assert first.json["error"] == "more-codes"
        assert "1 code(s) sur 2" in first.json["message"]
        assert any(
            c.startswith("alloconv_access_set_default=") for c in first.headers.getall("Set-Cookie")
        )
        last = browser.post_json("/premium/x", {"code": sandbox.issue_code()}, status=200)
        assert last.json["access_until"] > 0
        browser.get("/premium/x", status=200)

    def test_after_a_good_code_and_a_wrong_one_the_wrong_one_is_shown(self, browser, sandbox):
        good = sandbox.issue_code()
        form = browser.get("/premium/x", status=402).forms[0]
        form.set("code", good, index=0)
        form.set("code", "ZZZZ9999", index=1)
        page = form.submit(status=402)
        [field] = page.html.find_all("input", attrs={"name": "code"})
        assert field["value"] == "ZZZZ9999"  # what failed, never the code that passed
