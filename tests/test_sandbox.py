"""The sandbox over real HTTP, as the gate's client will see it."""

import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
import requests
from paste.deploy import loadapp
from servers import serve
from webtest import TestApp

from alloconv_gate.sandbox import DEFAULT_NUMBERS, Sandbox, make_app

KEY = "sandbox-key"
TIMEOUT = 5
CODE = re.compile(r"<code>([A-Z0-9]{8})</code>")


def numero(base, palier=None, *, timeout=TIMEOUT):
    return requests.get(f"{base}/api-numeros", params={"palier": palier}, timeout=timeout)


def check(base, code, key=KEY, *, timeout=TIMEOUT):
    params = {"code1": code, "cle": key}
    return requests.get(f"{base}/api-micropaiement", params=params, timeout=timeout)


@pytest.fixture(scope="module")
def picky():
    """A sandbox whose site accepts fra1 only, and whose fra1 number needs escaping."""
    sandbox = Sandbox(
        numbers={"fra1": "<b>08 99</b> & co", "sms1": "ACCES au 81212"},
        accepted_paliers=["fra1"],
        codes_shown=1,
    )
    with serve(sandbox) as server:
        yield sandbox, server.url


class TestNumbers:
    @pytest.mark.parametrize("palier", sorted(DEFAULT_NUMBERS))
    def test_known_palier_answers_its_text_with_a_line_end(self, sandbox_url, palier):
        response = numero(sandbox_url, palier)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.text == DEFAULT_NUMBERS[palier] + "\r\n"

    @pytest.mark.parametrize(
        "palier", [None, "", "fra9", "FRA1"], ids=["missing", "empty", "unknown", "wrong-case"]
    )
    def test_missing_or_unknown_palier_is_err918(self, sandbox_url, palier):
        response = numero(sandbox_url, palier)
        assert (response.status_code, response.text) == (200, "ERR918")


class TestCheck:
    @pytest.mark.parametrize(
        ("key", "code"),
        [(None, "ISSUED"), ("wrong-key", "ISSUED"), ("", "ISSUED"), ("wrong-key", None)],
        ids=["missing-key", "wrong-key", "empty-key", "key-checked-before-code"],
    )
    def test_bad_key_is_err99_and_consumes_nothing(self, sandbox, sandbox_url, key, code):
        issued = sandbox.issue_code()
        response = check(sandbox_url, issued if code == "ISSUED" else code, key=key)
        assert (response.status_code, response.text) == (200, "ERR99")
        assert not sandbox.is_used(issued)

    @pytest.mark.parametrize("code", [None, ""], ids=["missing", "empty"])
    def test_no_code_is_err1(self, sandbox_url, code):
        assert check(sandbox_url, code).text == "ERR1"

    def test_short_code_is_err2(self, sandbox, sandbox_url):
        assert check(sandbox_url, sandbox.issue_code()[:7]).text == "ERR2"

    def test_unknown_code_is_err3(self, sandbox_url):
        assert check(sandbox_url, "nevermade").text == "ERR3"

    def test_bytes_that_are_not_utf8_are_an_unknown_code(self, sandbox_url):
        url = f"{sandbox_url}/api-micropaiement?code1=%FF%FEABCDEF&cle={KEY}"
        assert requests.get(url, timeout=TIMEOUT).text == "ERR3"

    def test_a_code_is_good_once(self, sandbox, sandbox_url):
        code = sandbox.issue_code("sms1")
        assert not sandbox.is_used(code)
        first = check(sandbox_url, code)
        assert (first.status_code, first.text) == (200, "OK")
        assert first.headers["Content-Type"].startswith("text/plain")
        assert sandbox.is_used(code)
        assert check(sandbox_url, code).text == "ERR3"

    def test_concurrent_checks_of_one_code_sell_it_once(self, sandbox, sandbox_url):
        code = sandbox.issue_code()
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(lambda _: check(sandbox_url, code).text, range(24)))
        assert sorted(answers) == ["ERR3"] * 23 + ["OK"]

    def test_refused_palier_is_err4_and_leaves_the_code_unused(self, picky):
        sandbox, url = picky
        code = sandbox.issue_code("sms1")
        assert check(url, code).text == "ERR4"
        assert check(url, code).text == "ERR4"
        assert not sandbox.is_used(code)
        assert check(url, sandbox.issue_code("fra1")).text == "OK"

    def test_only_the_configured_key_is_accepted(self):
        sandbox = Sandbox(api_key="site-42")
        with serve(sandbox, threads=2) as server:
            assert check(server.url, sandbox.issue_code()).text == "ERR99"
            assert check(server.url, sandbox.issue_code(), key="site-42").text == "OK"


@pytest.fixture(scope="module")
def account():
    """An account with two APIs: the cheap one's key accepts fra2 and bel1, the dear one's
    fra1, as a site selling two prices has."""
    sandbox = Sandbox(keys={"key-cheap": ["fra2", "bel1"], "key-dear": ["fra1"]}, codes_shown=1)
    with serve(sandbox, threads=4) as server:
        yield sandbox, server.url


class TestSeveralKeys:
    def test_each_key_accepts_its_own_paliers(self, account):
        sandbox, url = account
        assert check(url, sandbox.issue_code("fra1"), key="key-dear").text == "OK"
        assert check(url, sandbox.issue_code("fra2"), key="key-cheap").text == "OK"
        assert check(url, sandbox.issue_code("bel1"), key="key-cheap").text == "OK"

    def test_a_code_of_a_palier_its_key_does_not_accept_is_err4_and_stays_unused(self, account):
        sandbox, url = account
        cheap = sandbox.issue_code("fra2")
        assert check(url, cheap, key="key-dear").text == "ERR4"
        assert not sandbox.is_used(cheap)
        assert check(url, cheap, key="key-cheap").text == "OK"
        assert check(url, cheap, key="key-dear").text == "ERR3"  # used: ERR3 wins
        dear = sandbox.issue_code("fra1")
        assert check(url, dear, key="key-cheap").text == "ERR4"
        assert check(url, dear, key="key-dear").text == "OK"

    @pytest.mark.parametrize("key", ["sandbox-key", "key-chea", "", None])
    def test_any_other_key_is_err99(self, account, key):
        sandbox, url = account
        code = sandbox.issue_code("fra2")
        assert check(url, code, key=key).text == "ERR99"
        assert check(url, "", key=key).text == "ERR99"
        assert not sandbox.is_used(code)

    def test_an_empty_code_is_err1_with_every_key(self, account):
        _, url = account
        assert {check(url, "", key=k).text for k in ("key-cheap", "key-dear")} == {"ERR1"}

    def test_the_page_says_which_key_accepts_which_palier(self, account):
        _, url = account
        page = requests.get(url, timeout=TIMEOUT).text
        sections = dict(re.findall(r"<h2>(\w+)</h2>(.*?)</section>", page, re.S))
        assert "Accepted with key <code>key-dear</code>." in sections["fra1"]
        assert "With key <code>key-cheap</code>, its codes answer ERR4" in sections["fra1"]
        assert "Accepted with key <code>key-cheap</code>." in sections["fra2"]
        assert "With key <code>key-dear</code>, its codes answer ERR4" in sections["bel1"]
        assert "No key of this site accepts this palier" in sections["che1"]

    def test_keys_are_shown_escaped(self):
        sandbox = Sandbox(keys={"<k>&": ["fra1"]}, codes_shown=0)
        with serve(sandbox, threads=2) as server:
            page = requests.get(server.url, timeout=TIMEOUT).text
        assert "<code>&lt;k&gt;&amp;</code>" in page
        assert "<k>" not in page

    def test_api_key_and_accepted_paliers_describe_one_key(self):
        sandbox = Sandbox(api_key="k", accepted_paliers=["fra1"])
        assert sandbox.keys == {"k": {"fra1"}}
        assert (sandbox.api_key, sandbox.accepted_paliers) == ("k", {"fra1"})
        assert Sandbox().keys == {"sandbox-key": set(DEFAULT_NUMBERS)}
        several = Sandbox(keys={"a": ["fra1"], "b": ["fra2"]})
        assert (several.api_key, several.accepted_paliers) == ("a", {"fra1"})

    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"keys": {"k": ["fra1"]}, "api_key": "other"}, "keys"),
            ({"keys": {"k": ["fra1"]}, "accepted_paliers": ["fra1"]}, "keys"),
            ({"keys": {}}, "keys"),
            ({"keys": ["k"]}, "keys"),
            ({"keys": {"": ["fra1"]}}, "keys"),
            ({"keys": {"a key": ["fra1"]}}, "keys"),
            ({"keys": {1: ["fra1"]}}, "keys"),
            ({"keys": {"k": "fra1"}}, "keys"),
            ({"keys": {"k": []}}, "keys"),
            ({"keys": {"k": ["fra9"]}}, "keys"),
            ({"api_key": ""}, "api_key"),
            ({"api_key": 42}, "api_key"),
            ({"accepted_paliers": ["fra9"]}, "accepted_paliers"),
        ],
        ids=[
            "keys-and-api_key",
            "keys-and-accepted_paliers",
            "no-key",
            "not-a-mapping",
            "empty-key",
            "key-with-space",
            "key-not-a-string",
            "paliers-a-string",
            "no-palier",
            "palier-not-in-numbers",
            "empty-api_key",
            "api_key-not-a-string",
            "accepted-not-in-numbers",
        ],
    )
    def test_bad_keys_are_refused_by_name(self, options, named):
        with pytest.raises(ValueError, match=f"^{named}:"):
            Sandbox(**options)


class TestIssueCode:
    def test_codes_are_eight_uppercase_letters_or_digits(self, sandbox):
        codes = {sandbox.issue_code(palier) for palier in DEFAULT_NUMBERS for _ in range(20)}
        assert len(codes) == 20 * len(DEFAULT_NUMBERS)
        assert all(re.fullmatch(r"[A-Z0-9]{8}", code) for code in codes)

    def test_a_seeded_rng_gives_the_same_codes(self):
        first, second = (Sandbox(rng=random.Random(7)) for _ in range(2))
        assert [first.issue_code() for _ in range(5)] == [second.issue_code() for _ in range(5)]

    def test_unknown_palier_is_refused(self, sandbox):
        with pytest.raises(ValueError, match="fra9"):
            sandbox.issue_code("fra9")


class TestCodesPage:
    def test_lists_fresh_codes_for_every_palier_that_then_verify(self, sandbox_url):
        response = requests.get(f"{sandbox_url}/", timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "no-store" in response.headers["Cache-Control"]
        page = response.text
        assert "<title>AlloConv sandbox</title>" in page
        assert "test codes for the demo" in page
        assert 'name="viewport"' in page
        for number in DEFAULT_NUMBERS.values():
            assert number in page
        codes = CODE.findall(page)
        assert len(set(codes)) == 3 * len(DEFAULT_NUMBERS)
        assert {check(sandbox_url, code).text for code in codes} == {"OK"}
        assert {check(sandbox_url, code).text for code in codes} == {"ERR3"}

    def test_each_visit_shows_new_codes(self, sandbox_url):
        first, second = (requests.get(sandbox_url, timeout=TIMEOUT).text for _ in range(2))
        assert not set(CODE.findall(first)) & set(CODE.findall(second))

    def test_no_external_assets(self, sandbox_url):
        page = requests.get(sandbox_url, timeout=TIMEOUT).text
        assert "<link" not in page
        assert "src=" not in page

    def test_escapes_numbers_and_flags_refused_paliers(self, picky):
        _, url = picky
        page = requests.get(f"{url}/", timeout=TIMEOUT).text
        assert "&lt;b&gt;08 99&lt;/b&gt; &amp; co" in page
        assert "<b>" not in page
        assert page.count("ERR4") == 1
        fra1_code, sms1_code = CODE.findall(page)
        assert check(url, sms1_code).text == "ERR4"
        assert check(url, fra1_code).text == "OK"

    def test_codes_shown_sets_how_many(self):
        with serve(Sandbox(codes_shown=0), threads=2) as server:
            assert CODE.findall(requests.get(server.url, timeout=TIMEOUT).text) == []

    @pytest.mark.parametrize("path", ["/nope", "/api-numeros/", "/scripts/api-numeros"])
    def test_other_paths_are_404(self, sandbox, sandbox_url, path):
        response = requests.get(sandbox_url + path, timeout=TIMEOUT)
        assert response.status_code == 404
        assert response.headers["Content-Type"].startswith("text/plain")
        assert sum(sandbox.calls.values()) == 0

    def test_faults_leave_the_page_alone(self, sandbox, sandbox_url):
        sandbox.set_fault("error500")
        response = requests.get(sandbox_url, timeout=TIMEOUT)
        assert response.status_code == 200
        assert CODE.findall(response.text)


class TestFaults:
    def test_hang_times_the_client_out_until_cleared(self, sandbox, sandbox_url):
        sandbox.set_fault("hang")
        with pytest.raises(requests.exceptions.ReadTimeout):
            numero(sandbox_url, "fra1", timeout=(TIMEOUT, 0.3))
        sandbox.clear_fault()
        assert numero(sandbox_url, "fra1").text == DEFAULT_NUMBERS["fra1"] + "\r\n"

    def test_a_held_check_consumes_its_code_once_released(self, sandbox, sandbox_url):
        sandbox.set_fault("hang", script="api-micropaiement")
        code = sandbox.issue_code()
        with ThreadPoolExecutor(max_workers=1) as pool:
            held = pool.submit(check, sandbox_url, code)
            with pytest.raises(FutureTimeout):
                held.result(timeout=0.3)
            assert not sandbox.is_used(code)
            sandbox.clear_fault()
            assert held.result(timeout=TIMEOUT).text == "OK"
        assert sandbox.is_used(code)

    def test_slow_answers_normally_after_the_delay(self, sandbox, sandbox_url):
        sandbox.set_fault("slow", delay=0.2)
        code = sandbox.issue_code()
        started = time.monotonic()
        assert check(sandbox_url, code).text == "OK"
        assert time.monotonic() - started >= 0.2

    def test_error500_is_an_html_500_and_consumes_nothing(self, sandbox, sandbox_url):
        sandbox.set_fault("error500")
        code = sandbox.issue_code()
        response = check(sandbox_url, code)
        assert response.status_code == 500
        assert response.headers["Content-Type"].startswith("text/html")
        assert "<html>" in response.text
        assert not sandbox.is_used(code)
        sandbox.clear_fault()
        assert check(sandbox_url, code).text == "OK"

    def test_garbage_is_an_html_page_with_status_200(self, sandbox, sandbox_url):
        sandbox.set_fault("garbage")
        code = sandbox.issue_code()
        response = check(sandbox_url, code)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.text.startswith("<!DOCTYPE html>")
        assert not sandbox.is_used(code)

    def test_empty_is_an_empty_200(self, sandbox, sandbox_url):
        sandbox.set_fault("empty")
        code = sandbox.issue_code()
        response = check(sandbox_url, code)
        assert (response.status_code, response.content) == (200, b"")
        assert not sandbox.is_used(code)

    def test_drop_loses_the_answer_after_the_sale(self, sandbox, sandbox_url):
        sandbox.set_fault("drop")
        code = sandbox.issue_code()
        with pytest.raises(requests.exceptions.RequestException):
            check(sandbox_url, code)
        assert sandbox.is_used(code)
        sandbox.clear_fault()
        assert check(sandbox_url, code).text == "ERR3"

    def test_drop_breaks_numbers_too(self, sandbox, sandbox_url):
        sandbox.set_fault("drop", script="api-numeros")
        with pytest.raises(requests.exceptions.RequestException):
            numero(sandbox_url, "fra1")

    def test_flap_alternates_500_and_normal_answers(self, sandbox, sandbox_url):
        sandbox.set_fault("flap")
        answers = [(r.status_code, r.text) for r in (numero(sandbox_url, "bel1") for _ in range(4))]
        good = (200, DEFAULT_NUMBERS["bel1"] + "\r\n")
        assert [status for status, _ in answers] == [500, 200, 500, 200]
        assert answers[1] == answers[3] == good

    @pytest.mark.parametrize("kind", ["error500", "garbage", "empty", "drop", "flap", "hang"])
    def test_script_limits_the_fault(self, sandbox, sandbox_url, kind):
        sandbox.set_fault(kind, script="api-numeros")
        assert check(sandbox_url, sandbox.issue_code()).text == "OK"

    @pytest.mark.parametrize(
        ("kind", "options", "named"),
        [
            ("explode", {}, "kind"),
            ("hang", {"script": "api-numero"}, "script"),
            ("slow", {"delay": -1}, "delay"),
        ],
        ids=["kind", "script", "delay"],
    )
    def test_bad_fault_is_refused(self, sandbox, kind, options, named):
        with pytest.raises(ValueError, match=named):
            sandbox.set_fault(kind, **options)


class TestCalls:
    def test_counts_requests_per_script_faulty_ones_included(self, sandbox, sandbox_url):
        numero(sandbox_url, "fra1")
        numero(sandbox_url, "nope")
        check(sandbox_url, "nevermade")
        sandbox.set_fault("error500")
        check(sandbox_url, "nevermade")
        requests.get(sandbox_url, timeout=TIMEOUT)
        assert sandbox.calls == {"api-numeros": 2, "api-micropaiement": 2}

    def test_counts_concurrent_requests_exactly(self, sandbox, sandbox_url):
        with ThreadPoolExecutor(max_workers=12) as pool:
            list(pool.map(lambda _: check(sandbox_url, "nevermade"), range(40)))
        assert sandbox.calls["api-micropaiement"] == 40


INI = """\
[app:main]
use = call:alloconv_gate.sandbox:make_app
api_key = from-the-ini
numbers =
    x1 = 08 00 00 00 01
    y1 = CODE au 80000
accepted_paliers = x1
codes_shown = 2
"""


KEYS_INI = """\
[app:main]
use = egg:alloconv_gate#sandbox
keys =
    key-cheap = fra2 bel1
    key-dear = fra1
codes_shown = 1
"""


class TestMakeApp:
    def test_defaults(self):
        sandbox = make_app({})
        assert (sandbox.api_key, sandbox.numbers, sandbox.codes_shown) == (
            "sandbox-key",
            DEFAULT_NUMBERS,
            3,
        )
        assert sandbox.accepted_paliers == set(DEFAULT_NUMBERS)
        assert sandbox.keys == {"sandbox-key": set(DEFAULT_NUMBERS)}

    def test_keys_one_a_line_or_separated_by_semicolons(self):
        sandbox = make_app({}, keys="key-cheap = fra2 bel1; key-dear = fra1\n  k3 = che1 ;")
        assert sandbox.keys == {
            "key-cheap": {"fra2", "bel1"},
            "key-dear": {"fra1"},
            "k3": {"che1"},
        }

    def test_semicolon_separated_numbers(self):
        sandbox = make_app({}, numbers="fra1 = 08 99 23 45 67; fra2 = 08 99 23 45 68;")
        assert sandbox.numbers == {"fra1": "08 99 23 45 67", "fra2": "08 99 23 45 68"}

    def test_an_ini_file_through_loadapp(self, tmp_path):
        (tmp_path / "sandbox.ini").write_text(INI)
        sandbox = loadapp(f"config:{tmp_path / 'sandbox.ini'}")
        with serve(sandbox, threads=2) as server:
            assert numero(server.url, "y1").text == "CODE au 80000\r\n"
            page = requests.get(server.url, timeout=TIMEOUT).text
            x1_codes = CODE.findall(page)[:2]
            y1_codes = CODE.findall(page)[2:]
            assert len(y1_codes) == 2
            assert check(server.url, x1_codes[0], key="from-the-ini").text == "OK"
            assert check(server.url, y1_codes[0], key="from-the-ini").text == "ERR4"
            assert check(server.url, x1_codes[1]).text == "ERR99"

    def test_keys_in_an_ini_file_through_loadapp(self, tmp_path):
        (tmp_path / "sandbox.ini").write_text(KEYS_INI)
        sandbox = loadapp(f"config:{tmp_path / 'sandbox.ini'}")
        with serve(sandbox, threads=2) as server:
            page = requests.get(server.url, timeout=TIMEOUT).text
            fra1, fra2, bel1 = CODE.findall(page)[:3]
            assert check(server.url, fra2, key="key-dear").text == "ERR4"
            assert check(server.url, fra1, key="key-dear").text == "OK"
            assert check(server.url, fra2, key="key-cheap").text == "OK"
            assert check(server.url, bel1, key="key-cheap").text == "OK"
            assert check(server.url, sandbox.issue_code()).text == "ERR99"

    @pytest.mark.parametrize(
        ("settings", "named"),
        [
            ({"apikey": "k"}, "apikey"),
            ({"key": "k = fra1"}, "key"),
            ({"keys": "k fra1"}, "keys"),
            ({"keys": "= fra1"}, "keys"),
            ({"keys": "k ="}, "keys"),
            ({"keys": "a key = fra1"}, "keys"),
            ({"keys": "k = fra1; k = fra2"}, "keys"),
            ({"keys": "k = fra1 fra1"}, "keys"),
            ({"keys": "k = fra9"}, "keys"),
            ({"keys": " ; "}, "keys"),
            ({"keys": "k = fra1", "api_key": "other"}, "keys"),
            ({"keys": "k = fra1", "accepted_paliers": "fra1"}, "keys"),
            ({"api_key": "  "}, "api_key"),
            ({"codes_shown": "three"}, "codes_shown"),
            ({"codes_shown": "-1"}, "codes_shown"),
            ({"numbers": "fra1 08 99 23 45 67"}, "numbers"),
            ({"numbers": "= 08 99 23 45 67"}, "numbers"),
            ({"numbers": "fra1 ="}, "numbers"),
            ({"numbers": "fra 1 = 08 99 23 45 67"}, "numbers"),
            ({"numbers": "fra1 = 08 99; fra1 = 08 98"}, "numbers"),
            ({"numbers": " ; "}, "numbers"),
            ({"accepted_paliers": "fra1 fra9"}, "accepted_paliers"),
        ],
        ids=[
            "unknown-setting",
            "key-misspelt",
            "keys-pair-without-equals",
            "keys-pair-without-key",
            "keys-pair-without-paliers",
            "keys-key-with-space",
            "keys-key-twice",
            "keys-palier-twice",
            "keys-palier-not-in-numbers",
            "keys-no-pairs",
            "keys-and-api_key",
            "keys-and-accepted_paliers",
            "blank-key",
            "codes-not-int",
            "codes-negative",
            "pair-without-equals",
            "pair-without-palier",
            "pair-without-text",
            "palier-with-space",
            "palier-twice",
            "no-pairs",
            "accepted-not-in-numbers",
        ],
    )
    def test_bad_settings_are_refused_by_name(self, settings, named):
        with pytest.raises(ValueError, match=named):
            make_app({}, **settings)


class TestSharedState:
    """``state``: the codes in a sqlite file, for a server of several worker processes.

    Two Sandbox objects on one file stand for two workers here (each has its own
    connections, as a process has); tests/test_demo_servers.py runs real gunicorn workers.
    """

    @pytest.fixture
    def workers(self, tmp_path):
        pair = [Sandbox(state=tmp_path / "sandbox.sqlite3") for _ in range(2)]
        with serve(pair[0]) as first, serve(pair[1]) as second:
            yield pair, [first.url, second.url]

    def test_a_code_off_one_workers_page_is_sold_by_the_other_once(self, workers):
        (sandboxes, (first, second)) = workers
        code = CODE.findall(requests.get(first, timeout=TIMEOUT).text)[0]
        assert check(second, code).text == "OK"
        assert sandboxes[0].is_used(code)
        assert check(first, code).text == "ERR3"
        assert check(second, code).text == "ERR3"

    def test_concurrent_checks_in_both_workers_sell_a_code_once(self, workers):
        (sandboxes, urls) = workers
        codes = [sandboxes[0].issue_code() for _ in range(4)]
        jobs = [(urls[n % 2], code) for code in codes for n in range(8)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda job: check(*job).text, jobs))
        assert sorted(answers) == ["ERR3"] * 28 + ["OK"] * 4

    def test_a_refused_palier_stays_unused(self, tmp_path):
        picky = Sandbox(accepted_paliers=["fra1"], state=tmp_path / "s.sqlite3")
        with serve(picky) as server:
            code = picky.issue_code("fra2")
            assert check(server.url, code).text == "ERR4"
            assert not picky.is_used(code)

    def test_codes_survive_a_restart(self, tmp_path):
        before = Sandbox(state=tmp_path / "s.sqlite3")
        code = before.issue_code()
        after = Sandbox(state=tmp_path / "s.sqlite3")
        with serve(after) as server:
            assert check(server.url, code).text == "OK"

    @pytest.mark.parametrize("kept", ["memory", "state"])
    def test_a_code_drawn_twice_is_drawn_again(self, tmp_path, kept):
        """A code already issued is never handed out again: the page's batch included."""

        class Repeating:
            letters = iter("A" * 8 * 3 + "B" * 8 + "C" * 8)

            def choice(self, alphabet):
                return next(self.letters)

        state = tmp_path / "s.sqlite3" if kept == "state" else None
        sandbox = Sandbox(numbers={"fra1": "08 99"}, codes_shown=2, rng=Repeating(), state=state)
        assert sandbox.issue_code() == "AAAAAAAA"
        page = TestApp(sandbox).get("/")  # draws A, A (both taken), then B, C
        assert CODE.findall(page.text) == ["BBBBBBBB", "CCCCCCCC"]

    def test_the_ini_names_it_relative_to_its_folder(self, tmp_path):
        (tmp_path / "sandbox.ini").write_text(INI + "state = codes.sqlite3\n")
        sandbox = loadapp(f"config:{tmp_path / 'sandbox.ini'}")
        assert sandbox.state == str(tmp_path / "codes.sqlite3")
        assert (tmp_path / "codes.sqlite3").exists()

    @pytest.mark.parametrize("value", ["", "no-such-folder/codes.sqlite3", "."], ids=repr)
    def test_a_file_that_cannot_be_used_is_refused_by_name(self, tmp_path, value):
        with pytest.raises(ValueError, match=r"^state: "):
            make_app({"here": str(tmp_path)}, state=value)


class TestSeveralProcessesWithoutState:
    """A server of several processes, codes in one process's memory: the page says so."""

    def test_the_page_names_the_fix_and_shows_no_code(self, caplog):
        page = TestApp(Sandbox()).get("/", extra_environ={"wsgi.multiprocess": True}, status=503)
        assert "state = sandbox.sqlite3" in page.text
        assert not CODE.findall(page.text)
        [record] = [r for r in caplog.records if r.name == "alloconv_gate"]
        assert record.levelname == "ERROR" and "state = sandbox.sqlite3" in record.getMessage()

    def test_with_state_it_shows_codes(self, tmp_path):
        sandbox = Sandbox(state=tmp_path / "s.sqlite3")
        page = TestApp(sandbox).get("/", extra_environ={"wsgi.multiprocess": True})
        assert len(CODE.findall(page.text)) == 3 * len(DEFAULT_NUMBERS)

    def test_one_process_keeps_them_in_memory(self):
        page = TestApp(Sandbox()).get("/", extra_environ={"wsgi.multiprocess": False})
        assert CODE.findall(page.text)
