"""One AlloConv key per price: a cheap palier's code never opens a dear gate.

AlloConv's answer to a code check never says which palier the code was bought for; what
limits the paliers a key accepts is the account's API for that key (a code of another
palier gets ERR4). So gates sold at different prices must check codes with different
keys. These tests run the gate under waitress against the sandbox (whose session account
has a key per palier: see tests/conftest.py), and drive it as a browser would.
"""

import configparser
import logging
import textwrap
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from bs4 import BeautifulSoup
from paste.deploy import loadapp
from servers import serve
from webtest import TestApp

from alloconv_gate import ConfigError, Gate
from alloconv_gate.config import parse_gates
from alloconv_gate.messages import catalogue

SECRET = "one-key-per-price-tests-secret-0123456789abcdef"
TIMEOUT = 5
WRONG_PALIER = catalogue("fr")["error_wrong_palier"]
# Two prices: /cheap sells fra2 (1,50 €), /dear sells fra1 (3 €).
CHEAP_AND_DEAR = {
    "gates": "cheap dear",
    "cheap.palier": "fra2",
    "cheap.price_notice": "1,50 € par code",
    "cheap.prefixes": "/cheap",
    "dear.palier": "fra1",
    "dear.prefixes": "/dear",
}
OWN_KEYS = {"cheap.api_key": "key-fra2", "dear.api_key": "key-fra1"}


def content(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [f"paid content at {environ['PATH_INFO']}".encode()]


def gate(sandbox_url, **options):
    base = {"secret": SECRET, "store": "memory", "timeout": "2", "api_base": sandbox_url}
    return Gate(content, **{**base, **CHEAP_AND_DEAR, **options})


class Browser:
    """A ``requests`` session that reads the gate page's form and posts it, as a browser
    does: the form's own action and fields, the cookie kept between requests."""

    def __init__(self, base_url):
        self.base_url = base_url
        self.session = requests.Session()

    def get(self, path):
        return self.session.get(self.base_url + path, timeout=TIMEOUT, allow_redirects=False)

    def type_code(self, path, code):
        """Open ``path``, find the gate's form, type ``code`` in it and submit it."""
        page = self.get(path)
        assert page.status_code == 402
        form = BeautifulSoup(page.text, "html.parser").find("form")
        assert form["method"] == "post"
        fields = {field["name"]: field.get("value", "") for field in form.find_all("input")}
        assert "code" in fields
        fields["code"] = code
        return self.session.post(
            urljoin(page.url, form["action"]), data=fields, timeout=TIMEOUT, allow_redirects=False
        )

    def follow(self, answer):
        """Follow a 303 as a browser does, with the cookie it set."""
        assert answer.status_code == 303
        return self.session.get(
            urljoin(answer.url, answer.headers["Location"]),
            timeout=TIMEOUT,
            allow_redirects=False,
        )


def alert(page):
    return BeautifulSoup(page.text, "html.parser").find(attrs={"role": "alert"}).get_text()


@pytest.fixture
def site(sandbox_url):
    """The two gates, each with its own key, served by waitress."""
    with serve(gate(sandbox_url, **OWN_KEYS), threads=4) as server:
        yield server.url


class TestACheapCodeAtADearGate:
    """The attack: buy the cheap palier's code, type it at the dear gate."""

    def test_gets_402_wrong_palier_and_no_access(self, site, sandbox):
        browser = Browser(site)
        cheap_code = sandbox.issue_code("fra2")
        answer = browser.type_code("/dear/article", cheap_code)
        assert answer.status_code == 402
        assert WRONG_PALIER in alert(answer)
        assert "Set-Cookie" not in answer.headers
        assert not browser.session.cookies
        assert browser.get("/dear/article").status_code == 402
        assert sandbox.calls["api-micropaiement"] == 1  # AlloConv was asked: ERR4

    def test_the_code_is_still_good_at_the_cheap_gate_and_only_there(self, site, sandbox):
        browser = Browser(site)
        cheap_code = sandbox.issue_code("fra2")
        assert browser.type_code("/dear/article", cheap_code).status_code == 402
        assert not sandbox.is_used(cheap_code)
        answer = browser.type_code("/cheap/video", cheap_code)
        page = browser.follow(answer)
        assert (page.status_code, page.text) == (200, "paid content at /cheap/video")
        assert sandbox.is_used(cheap_code)
        assert browser.get("/cheap/other").status_code == 200
        assert browser.get("/dear/article").status_code == 402  # the cookie is cheap's only

    def test_as_json_the_error_is_wrong_palier(self, site, sandbox):
        answer = requests.post(
            f"{site}/dear/article",
            json={"code": sandbox.issue_code("fra2")},
            headers={"Accept": "application/json"},
            timeout=TIMEOUT,
        )
        assert answer.status_code == 402
        assert answer.json()["error"] == "wrong-palier"
        assert "Set-Cookie" not in answer.headers

    def test_a_dear_code_opens_the_dear_gate(self, site, sandbox):
        browser = Browser(site)
        page = browser.follow(browser.type_code("/dear/article", sandbox.issue_code("fra1")))
        assert page.status_code == 200
        assert browser.get("/cheap/video").status_code == 402

    def test_with_one_shared_key_the_cheap_code_opens_the_dear_gate(self, sandbox_url, sandbox):
        """What shared_key = true accepts: the bug these keys close, still there."""
        shared = gate(sandbox_url, api_key="sandbox-key", shared_key="true")
        with serve(shared, threads=2) as server:
            browser = Browser(server.url)
            page = browser.follow(browser.type_code("/dear/article", sandbox.issue_code("fra2")))
            assert (page.status_code, page.text) == (200, "paid content at /dear/article")


class TestStartUp:
    def test_a_shared_key_is_refused_naming_api_key_and_the_risk(self, sandbox_url):
        with pytest.raises(ConfigError) as raised:
            gate(sandbox_url, api_key="sandbox-key")
        error = raised.value
        assert error.option == "api_key"
        message = str(error)
        assert "a code of fra1 would open 'cheap'" in message
        assert "a code of fra2 would open 'dear'" in message
        assert "shared_key = true" in message
        assert "sandbox-key" not in message

    def test_only_the_paliers_a_gate_lacks_are_named(self, sandbox_url):
        with pytest.raises(ConfigError, match="'api_key'") as raised:
            gate(
                sandbox_url,
                api_key="sandbox-key",
                **{"dear.palier": "fra1 fra2", "dear.price_notice.fra2": "1,50 €"},
            )
        message = str(raised.value)
        assert "a code of fra1 would open 'cheap'" in message
        assert "would open 'dear'" not in message

    def test_gates_selling_the_same_paliers_may_share_a_key(self, sandbox_url, sandbox):
        browser = TestApp(gate(sandbox_url, api_key="key-fra1", **{"cheap.palier": "fra1"}))
        browser.post("/cheap/x", {"code": sandbox.issue_code("fra1")}, status=303)
        browser.get("/cheap/x", status=200)
        browser.get("/dear/x", status=402)  # one gate's cookie never opens another

    def test_shared_key_true_starts_and_warns(self, sandbox_url, caplog):
        with caplog.at_level(logging.WARNING, logger="alloconv_gate"):
            gate(sandbox_url, api_key="sandbox-key", shared_key="true")
        [warning] = [r for r in caplog.records if "shared_key" in r.getMessage()]
        assert warning.levelno == logging.WARNING
        assert "a code of fra1 would open 'cheap'" in warning.getMessage()
        assert "sandbox-key" not in caplog.text

    def test_shared_key_is_a_filter_option_not_a_gates(self, sandbox_url):
        with pytest.raises(ConfigError) as raised:
            gate(sandbox_url, api_key="sandbox-key", **{"dear.shared_key": "true"})
        assert raised.value.option == "dear.shared_key"

    def test_only_per_gate_keys_and_no_filter_key(self, sandbox_url, sandbox):
        browser = TestApp(gate(sandbox_url, **OWN_KEYS))
        browser.post("/cheap/x", {"code": sandbox.issue_code("fra2")}, status=303)
        browser.get("/cheap/x", status=200)

    def test_a_gate_without_a_key_when_the_filter_has_none(self, sandbox_url):
        with pytest.raises(ConfigError, match="is required") as raised:
            gate(sandbox_url, **{"cheap.api_key": "key-fra2"})
        assert "api_key" in raised.value.option

    def test_a_per_gate_key_file_read_relative_to_here(self, sandbox_url, sandbox, tmp_path):
        (tmp_path / "keys").mkdir()
        (tmp_path / "keys" / "cheap.key").write_text("key-fra2\n")
        (tmp_path / "site.key").write_text("sandbox-key\n")
        site = gate(
            sandbox_url,
            here=str(tmp_path),
            api_key_file="site.key",  # the filter's, replaced for both gates
            **{"cheap.api_key_file": "keys/cheap.key", "dear.api_key": "key-fra1"},
        )
        cheap, dear = site.gates
        assert (cheap.api_key, dear.api_key) == ("key-fra2", "key-fra1")
        browser = TestApp(site)
        # Checked with key-fra2, not the filter's sandbox-key (which accepts every palier).
        browser.post("/cheap/x", {"code": sandbox.issue_code("fra1")}, status=402)
        browser.post("/cheap/x", {"code": sandbox.issue_code("fra2")}, status=303)

    def test_a_per_gate_key_replaces_the_filters_pair_without_a_give_either_error(self):
        options = {"secret": SECRET, "store": "memory", **CHEAP_AND_DEAR}
        both = {"api_key": "sandbox-key", "api_key_file": "/nonexistent/site.key"}
        with pytest.raises(ConfigError, match="give either"):
            parse_gates({**options, **both})
        cheap, dear = parse_gates({**options, **both, **OWN_KEYS})
        assert (cheap.api_key, dear.api_key) == ("key-fra2", "key-fra1")

    def test_a_gate_giving_both_key_options_is_named(self, tmp_path):
        (tmp_path / "cheap.key").write_text("key-fra2\n")
        options = {"secret": SECRET, "store": "memory", **CHEAP_AND_DEAR, **OWN_KEYS}
        with pytest.raises(ConfigError, match="give either") as raised:
            parse_gates({**options, "cheap.api_key_file": "cheap.key"}, here=str(tmp_path))
        assert raised.value.option == "cheap.api_key"

    def test_an_unreadable_per_gate_key_file_is_named(self, tmp_path):
        options = {"secret": SECRET, "store": "memory", **CHEAP_AND_DEAR, **OWN_KEYS}
        del options["cheap.api_key"]
        with pytest.raises(ConfigError, match="cannot read") as raised:
            parse_gates({**options, "cheap.api_key_file": "nope.key"}, here=str(tmp_path))
        assert raised.value.option == "cheap.api_key_file"

    @pytest.mark.parametrize(
        ("option", "named"),
        [
            pytest.param("cheap.api_kye", "cheap.api_kye", id="per-gate"),
            pytest.param("api_kye", "api_kye", id="filter"),
        ],
    )
    def test_a_misspelt_key_option_is_named(self, option, named):
        options = {"secret": SECRET, "store": "memory", **CHEAP_AND_DEAR, **OWN_KEYS}
        with pytest.raises(ConfigError) as raised:
            parse_gates({**options, option: "key-fra2"})
        assert raised.value.option == named
        assert "api_kye" in str(raised.value)


INI = """\
[pipeline:main]
pipeline = alloconv site

[filter:alloconv]
use = egg:alloconv_gate
secret = {secret}
api_base = {api_base}
store = memory
gates = cheap dear
cheap.palier = fra2
cheap.price_notice = 1,50 € par code
cheap.prefixes = /cheap
cheap.api_key_file = keys/cheap.key
dear.palier = fra1
dear.prefixes = /dear
dear.api_key_file = keys/dear.key

[app:site]
use = egg:alloconv_gate#demo
"""


def test_an_ini_with_a_key_file_per_price(tmp_path, sandbox_url, sandbox):
    """The README's way: each gate reads its key from a file next to the ini."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "cheap.key").write_text("key-fra2\n")
    (tmp_path / "keys" / "dear.key").write_text("key-fra1\n")
    (tmp_path / "site.ini").write_text(
        textwrap.dedent(INI).format(secret=SECRET, api_base=sandbox_url)
    )
    with serve(loadapp(f"config:{tmp_path / 'site.ini'}"), threads=2) as server:
        browser = Browser(server.url)
        cheap_code = sandbox.issue_code("fra2")
        answer = browser.type_code("/dear/x", cheap_code)
        assert answer.status_code == 402
        assert WRONG_PALIER in alert(answer)
        page = browser.follow(browser.type_code("/cheap/x", cheap_code))
        assert page.status_code == 404  # the demo's own answer: the gate let it through
        assert browser.get("/dear/x").status_code == 402


def test_the_readmes_several_gates_example_starts_with_a_key_per_price(tmp_path):
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Several gates\n", 1)[1]
    ini = section.split("```ini\n", 1)[1].split("```", 1)[0]
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(ini)
    options = dict(parser["filter:alloconv"])
    assert options.pop("use") == "egg:alloconv_gate"
    (tmp_path / "alloconv.secret").write_text(SECRET)
    (tmp_path / "alloconv-premium.key").write_text("key-for-3-euros\n")
    (tmp_path / "alloconv-videos.key").write_text("key-for-1-50-euros\n")
    premium, videos = parse_gates({**options, "store": "memory"}, here=str(tmp_path))
    assert (premium.api_key, videos.api_key) == ("key-for-3-euros", "key-for-1-50-euros")
    # The same example with one key for both prices does not start.
    one_key = {k: v for k, v in options.items() if not k.endswith(".api_key_file")}
    with pytest.raises(ConfigError) as raised:
        parse_gates({**one_key, "api_key": "k", "store": "memory"}, here=str(tmp_path))
    assert raised.value.option == "api_key"
