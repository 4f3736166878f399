"""The examples work as their README says: free page open, paid page sold, code accepted.

Each example is loaded from its file, as a webmaster runs it, and built with the sandbox as
its AlloConv; no environment variable is needed.
"""

import functools
import importlib.util
import sys
from pathlib import Path

import pytest
from webtest import TestApp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = ["plain_wsgi", "flask_app", "django_wsgi", "pyramid_app"]
SECRET = "an-example-secret-long-enough-to-sign-cookies"
FREE_TEXT = "Free page: anyone can read this."
PAID_TEXT = "Premium article: only visitors with a code read this."


@functools.cache
def load_example(name):
    """The example's module, imported once from its file (Django is configured once)."""
    module_name = f"alloconv_examples_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # the Django example names itself as ROOT_URLCONF
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=NAMES, ids=NAMES)
def example(request):
    return load_example(request.param)


@pytest.fixture
def site(example, sandbox_url, tmp_path):
    store = f"sqlite:///{tmp_path}/journal.sqlite3"
    return TestApp(
        example.make_app(api_key="sandbox-key", secret=SECRET, api_base=sandbox_url, store=store)
    )


class TestExamples:
    def test_free_page_is_served(self, site):
        page = site.get("/")
        assert FREE_TEXT in page.text

    def test_paid_page_shows_the_gate(self, site, sandbox):
        page = site.get("/premium/article", status=402)
        assert PAID_TEXT not in page.text
        assert sandbox.numbers["fra1"] in page.text
        assert "code" in page.form.fields

    def test_a_sandbox_code_opens_the_paid_page(self, site, sandbox):
        code = sandbox.issue_code("fra1")
        form = site.get("/premium/article", status=402).form
        form["code"] = code
        granted = form.submit(status=303)
        assert granted.location.endswith("/premium/article")
        assert "alloconv_access=" in granted.headers["Set-Cookie"]
        assert sandbox.is_used(code)

        article = granted.follow(status=200)
        assert PAID_TEXT in article.text
        assert "private" in article.headers["Cache-Control"]

    def test_a_paid_code_opens_a_few_browsers_then_no_more(self, site, sandbox):
        code = sandbox.issue_code("fra1")
        for browser in range(3):  # max_devices: the first browser and two more
            site.reset()
            form = site.get("/premium/article", status=402).form
            form["code"] = code
            assert PAID_TEXT in form.submit(status=303).follow(status=200).text, browser

        site.reset()  # a fourth browser
        form = site.get("/premium/article", status=402).form
        form["code"] = code
        refused = form.submit(status=402)
        assert PAID_TEXT not in refused.text
        assert "Set-Cookie" not in refused.headers


class GooglebotDNS:
    """The DNS of one verified Googlebot address."""

    ADDRESS = "66.249.66.1"
    NAME = "crawl-66-249-66-1.googlebot.com"

    def reverse(self, address):
        return self.NAME if address == self.ADDRESS else None

    def forward(self, hostname):
        return [self.ADDRESS] if hostname == self.NAME else []


class TestExamplesAndSearchEngines:
    def test_a_verified_crawler_reads_the_paid_page(self, example, sandbox_url, tmp_path):
        site = TestApp(
            example.make_app(
                api_key="sandbox-key",
                secret=SECRET,
                api_base=sandbox_url,
                store=f"sqlite:///{tmp_path}/journal.sqlite3",
                crawlers="google",
                resolver=GooglebotDNS(),
            ),
            extra_environ={"REMOTE_ADDR": GooglebotDNS.ADDRESS},
        )
        googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
        page = site.get("/premium/article", headers={"User-Agent": googlebot}, status=200)
        assert PAID_TEXT in page.text
        assert "private" in page.headers["Cache-Control"]


class TestGateOptionsFromEnviron:
    def test_reads_key_secret_and_api_base(self, example, monkeypatch):
        monkeypatch.setenv("ALLOCONV_API_KEY", "env-key")
        monkeypatch.setenv("ALLOCONV_SECRET", SECRET)
        monkeypatch.setenv("ALLOCONV_API_BASE", "http://127.0.0.1:8001")
        assert example.gate_options_from_environ() == {
            "api_key": "env-key",
            "secret": SECRET,
            "api_base": "http://127.0.0.1:8001",
        }

    def test_api_base_is_optional(self, example, monkeypatch):
        monkeypatch.setenv("ALLOCONV_API_KEY", "env-key")
        monkeypatch.setenv("ALLOCONV_SECRET", SECRET)
        monkeypatch.delenv("ALLOCONV_API_BASE", raising=False)
        assert example.gate_options_from_environ() == {"api_key": "env-key", "secret": SECRET}

    def test_a_missing_secret_names_its_variable(self, example, monkeypatch):
        monkeypatch.setenv("ALLOCONV_API_KEY", "env-key")
        monkeypatch.delenv("ALLOCONV_SECRET", raising=False)
        with pytest.raises(KeyError, match="ALLOCONV_SECRET"):
            example.gate_options_from_environ()
