"""The gate page: the number, the price, the steps and the form, escaped, self-contained."""

import re
from dataclasses import replace
from html import unescape
from html.parser import HTMLParser

import pytest

from alloconv_gate.messages import catalogue, languages
from alloconv_gate.page import (
    Offer,
    PageCache,
    PageContent,
    describe_duration,
    render,
    render_ahead,
)

NOTICE = "3,00 € par code (appel surtaxé)"
XSS = '"><script>alert(1)</script>'
QUOTES = 'it\'s "quoted" & <b>bold</b>'
ERRORS = [key for key in catalogue("fr") if key.startswith("error_")]


def page(**overrides) -> str:
    values = {
        "language": "fr",
        "number": "08 99 12 34 56",
        "price_notice": NOTICE,
        "duration": 86400,
        "action": "/premium/article?id=3",
    }
    values.update(overrides)
    values["offers"] = (Offer(values.pop("number"), values.pop("price_notice")),)
    body = render(PageContent(**values))
    assert isinstance(body, bytes)
    return body.decode("utf-8")


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside each element with an id."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.texts.append(data)

    def find(self, tag, **attrs) -> list[dict[str, str | None]]:
        return [
            found
            for name, found in self.tags
            if name == tag and all(found.get(k) == v for k, v in attrs.items())
        ]

    def one(self, tag, **attrs) -> dict[str, str | None]:
        [found] = self.find(tag, **attrs)
        return found


def text_of(html: str, element_id: str) -> str:
    """The text of the element with ``element_id`` (ours hold no nested tags), unescaped."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match, element_id
    return unescape(match.group(1))


def visible_text(html: str) -> str:
    return "".join(Elements(html).texts)


class TestLanguage:
    def test_french_by_default(self):
        html = page()
        text = visible_text(html)
        assert Elements(html).one("html")["lang"] == "fr"
        assert "Contenu réservé" in text
        assert "Appelez le" in text
        assert "Valider" in text
        assert "Votre code d'accès" in text

    def test_english(self):
        html = page(language="en")
        text = visible_text(html)
        assert Elements(html).one("html")["lang"] == "en"
        assert "Paid content" in text
        assert "Your access code" in text
        assert "Submit" in text
        assert "Contenu réservé" not in text

    def test_three_steps(self):
        html = page()
        assert len(Elements(html).find("li")) == 3
        assert "Appelez le numéro ci-dessus." in visible_text(html)

    def test_catalogues_have_the_same_keys(self):
        for language in languages():
            assert set(catalogue(language)) == set(catalogue("fr")), language

    def test_every_catalogue_file_is_a_language(self):
        assert languages() == ("fr", "en")

    @pytest.mark.parametrize("language", ["fr", "en"])
    @pytest.mark.parametrize("error", ERRORS)
    def test_every_error_renders_in_every_language(self, language, error):
        html = page(language=language, error=error, reference="0A1B2C3D4E")
        expected = catalogue(language)[error].format(reference="0A1B2C3D4E", done=0, n=1)
        assert text_of(html, "code-error") == expected

    def test_utf8_with_a_charset_meta(self):
        html = page()
        assert Elements(html).find("meta", charset="utf-8")
        assert html.startswith("<!DOCTYPE html>")


class TestNumber:
    @pytest.mark.parametrize(
        "number, dial",
        [
            pytest.param("08 99 12 34 56", "0899123456", id="spaces"),
            pytest.param("08.99.12.34.56", "0899123456", id="dots"),
            pytest.param("08-99-12-34-56", "0899123456", id="dashes"),
            pytest.param("+33 (0)8 99 12 34 56", "+330899123456", id="international"),
            pytest.param("3617", "3617", id="short"),
        ],
    )
    def test_phone_number_is_a_tel_link(self, number, dial):
        html = page(number=number)
        link = Elements(html).one("a", **{"class": "number"})
        assert link["href"] == f"tel:{dial}"
        assert number in visible_text(html)  # shown as given

    @pytest.mark.parametrize(
        "number",
        [
            pytest.param("SMS CODE au 81234", id="sms-keyword"),
            pytest.param("123", id="too-few-digits"),
            pytest.param("08 99 12 34 56 ext 2", id="words-after"),
            pytest.param("tel:0899123456", id="url-like"),
        ],
    )
    def test_other_text_shown_without_link(self, number):
        html = page(number=number)
        elements = Elements(html)
        assert elements.find("a") == []
        assert elements.one("strong", **{"class": "number"}) is not None
        assert number in visible_text(html)
        assert "tel:" not in html.replace(number, "")

    def test_number_unavailable(self):
        html = page(number=None)
        assert "Le numéro à appeler est momentanément indisponible" in visible_text(html)
        assert "tel:" not in html
        assert Elements(html).find("a") == []

    def test_number_unavailable_in_english(self):
        assert "The number to call is unavailable" in visible_text(page(language="en", number=None))

    def test_price_notice_shown(self):
        assert NOTICE in visible_text(page())
        assert NOTICE in visible_text(page(number=None))


class TestForm:
    def test_posts_to_the_action_with_a_code_field(self):
        elements = Elements(page())
        form = elements.one("form")
        assert form["method"] == "post"
        assert form["action"] == "/premium/article?id=3"
        code = elements.one("input", name="code")
        assert code["id"] == "code"
        assert elements.one("label")["for"] == "code"

    def test_input_helps_phones_and_assistive_technology(self):
        code = Elements(page()).one("input", name="code")
        assert code["autocomplete"] == "one-time-code"
        assert code["aria-describedby"] == "code-error"
        assert code["maxlength"] == "64"
        assert code["minlength"] == "8"
        assert "aria-invalid" not in code

    def test_submit_button(self):
        assert Elements(page()).one("button")["type"] == "submit"

    def test_viewport_for_phones(self):
        viewport = Elements(page()).one("meta", name="viewport")
        assert "width=device-width" in viewport["content"]

    def test_no_error_leaves_alert_empty(self):
        html = page()
        alert = Elements(html).one("div", role="alert")
        assert alert["id"] == "code-error"
        assert text_of(html, "code-error") == ""

    def test_error_in_alert_region_and_input_marked_invalid(self):
        html = page(error="error_invalid", code="ABCD1234")
        assert text_of(html, "code-error") == "Ce code n'est pas valide ou a déjà été utilisé."
        code = Elements(html).one("input", name="code")
        assert code["aria-invalid"] == "true"
        assert code["value"] == "ABCD1234"

    def test_code_empty_by_default(self):
        assert Elements(page()).one("input", name="code")["value"] == ""


class TestEscaping:
    @pytest.mark.parametrize(
        "hostile", [pytest.param(XSS, id="script"), pytest.param(QUOTES, id="quotes")]
    )
    @pytest.mark.parametrize("field", ["price_notice", "number", "action", "code"])
    def test_every_text_field_escaped(self, field, hostile):
        html = page(**{field: hostile})
        assert "<script>" not in html
        assert "<b>" not in html
        assert hostile not in html
        # The value survives, as text, where it belongs.
        elements = Elements(html)
        if field == "code":
            assert elements.one("input", name="code")["value"] == hostile
        elif field == "action":
            assert elements.one("form")["action"] == hostile
        else:
            assert hostile in visible_text(html)

    def test_code_with_error_still_escaped(self):
        html = page(code=XSS, error="error_characters")
        assert "<script>" not in html
        assert Elements(html).one("input", name="code")["value"] == XSS

    def test_tags_in_page_are_only_ours(self):
        html = page(price_notice=XSS, number=XSS, action=XSS, code=XSS)
        tags = {name for name, _ in Elements(html).tags}
        assert tags <= {
            "html", "head", "meta", "title", "style", "body", "main", "div", "h1", "h2",
            "p", "ol", "li", "form", "label", "input", "button", "a", "strong",
        }  # fmt: skip


class TestSelfContained:
    @pytest.mark.parametrize("language", ["fr", "en"])
    @pytest.mark.parametrize("number", ["08 99 12 34 56", "SMS CODE au 81234", None])
    def test_no_external_resources(self, language, number):
        html = page(language=language, number=number, error="error_invalid")
        assert "http://" not in html
        assert "https://" not in html
        assert "src=" not in html
        assert "@import" not in html
        assert "url(" not in html
        assert not Elements(html).find("link")


class TestDuration:
    @pytest.mark.parametrize(
        "seconds, french, english",
        [
            pytest.param(86400, "1 jour", "1 day", id="one-day"),
            pytest.param(7 * 86400, "7 jours", "7 days", id="days"),
            pytest.param(3600, "1 heure", "1 hour", id="one-hour"),
            pytest.param(24 * 3600 * 2 + 3600, "49 heures", "49 hours", id="hours"),
            pytest.param(5400, "90 minutes", "90 minutes", id="minutes"),
            pytest.param(60, "1 minute", "1 minute", id="one-minute"),
            pytest.param(90, "90 secondes", "90 seconds", id="seconds"),
            pytest.param(1, "1 seconde", "1 second", id="one-second"),
            pytest.param(3601, "3601 secondes", "3601 seconds", id="odd-seconds"),
        ],
    )
    def test_largest_whole_unit(self, seconds, french, english):
        assert describe_duration(seconds, catalogue("fr")) == french
        assert describe_duration(seconds, catalogue("en")) == english

    def test_shown_on_the_page(self):
        assert "Votre accès dure 1 jour." in visible_text(page(duration=86400))
        assert "Your access lasts 90 minutes." in visible_text(page(language="en", duration=5400))


class TestRenderedAhead:
    """The page rendered once for many requests is, with each one's URL, what render makes."""

    @pytest.mark.parametrize(
        "action",
        [
            pytest.param("/premium/article?id=3", id="plain"),
            pytest.param(XSS, id="script"),
            pytest.param(QUOTES, id="quotes"),
            pytest.param("", id="empty"),
            pytest.param("/caf\xe9/&amp;/\u20ac", id="entities-and-non-ascii"),
        ],
    )
    @pytest.mark.parametrize(
        "template",
        [
            pytest.param(None, id="built-in"),
            pytest.param("<p>$form</p><div>$numbers</div><p>$form</p>$$form $unknown", id="own"),
        ],
    )
    @pytest.mark.parametrize("language", ["fr", "en"])
    def test_byte_for_byte_what_render_makes(self, action, template, language):
        content = PageContent(
            language=language,
            offers=(Offer("08 99 12 34 56", NOTICE), Offer(None, XSS), Offer("ACCES au 81212", "")),
            duration=5400,
            action="/another/page",
            template=template,
        )
        ahead = render_ahead(content)
        assert ahead.body(action) == render(replace(content, action=action))
        assert ahead.body(action).count(b"<form") == (2 if template else 1)

    @pytest.mark.parametrize("language", ["fr", "en"])
    @pytest.mark.parametrize("error", [None, *ERRORS])
    @pytest.mark.parametrize("code", ["", "ABCD1234", XSS, QUOTES])
    @pytest.mark.parametrize("needed, passed", [(1, 0), (3, 1)])
    def test_with_the_code_typed_after_a_refusal(self, language, error, code, needed, passed):
        content = PageContent(
            language=language,
            offers=(Offer("08 99 12 34 56", NOTICE),),
            duration=86400,
            action="",
            error=error,
            codes_needed=needed,
            codes_passed=passed,
        )
        ahead = render_ahead(content, code=True)
        for action in ("/premium/article?id=3", XSS):
            expected = render(replace(content, action=action, code=code))
            assert ahead.body(action, code) == expected


class TestPageCache:
    def test_built_once_per_key(self):
        cache, built = PageCache(), []

        def build(value):
            built.append(value)
            return value

        for _ in range(3):
            assert cache.get(("fr", (0,)), lambda: build("fr")) == "fr"
            assert cache.get(("en", (0,)), lambda: build("en")) == "en"
        assert built == ["fr", "en"]

    def test_bounded_and_still_right_when_full(self):
        cache = PageCache(size=4)
        for _ in range(3):
            for key in range(10):
                assert cache.get(key, lambda key=key: f"page {key}") == f"page {key}"
        assert len(cache._pages) <= 4
