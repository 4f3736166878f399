"""The gate as a webmaster configures it: real ini files through PasteDeploy's loadapp."""

import re
import textwrap
from pathlib import Path

import pytest
import requests
from paste.deploy import loadapp
from servers import serve
from webtest import TestApp

from alloconv_gate import ConfigError, Gate

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SECRET = "an-ini-secret-that-is-long-enough-0123456789"


def write_ini(folder, gate_options, *, extra=""):
    """An ini with one gate in front of the demo site; returns its loadapp URI."""
    ini = folder / "site.ini"
    ini.write_text(
        textwrap.dedent(
            """\
            [pipeline:main]
            pipeline = gate demo

            [filter:gate]
            use = egg:alloconv_gate
            {gate_options}

            [app:demo]
            use = egg:alloconv_gate#demo
            {extra}
            """
        ).format(gate_options=textwrap.dedent(gate_options).strip(), extra=extra)
    )
    return f"config:{ini}"


def base_options(api_base):
    return textwrap.dedent(
        f"""\
        api_key = sandbox-key
        secret = {SECRET}
        palier = fra1
        prefixes = /premium
        api_base = {api_base}
        """
    )


class TestLoadingAnIni:
    def test_a_filter_section_gates_the_app(self, tmp_path, sandbox_url, sandbox):
        browser = TestApp(loadapp(write_ini(tmp_path, base_options(sandbox_url))))
        browser.get("/", status=200)
        browser.get("/premium/alpine-huts", status=402)
        browser.post("/premium/alpine-huts", {"code": sandbox.issue_code()}, status=303)
        assert "Alpine" in browser.get("/premium/alpine-huts", status=200).text

    def test_every_option_is_converted_from_its_string(self, tmp_path, sandbox_url):
        options = base_options(sandbox_url) + textwrap.dedent(
            """\
            duration = 7d
            timeout = 2.5
            number_ttl = 30m
            number = 08 90 00 00 00
            price_notice = 2 € par appel
            cookie_name = paid
            cookie_secure = true
            language = en
            """
        )
        gate = loadapp(write_ini(tmp_path, options))
        assert isinstance(gate, Gate)
        config = gate.config
        assert (config.duration, config.timeout, config.number_ttl) == (7 * 86400, 2.5, 1800)
        assert (config.cookie_name, config.cookie_secure, config.language) == ("paid", True, "en")
        assert config.number == "08 90 00 00 00"
        assert config.price_notice == "2 € par appel"

    @pytest.mark.parametrize(
        ("line", "option"),
        [
            pytest.param("prefixs = /videos", "prefixs", id="misspelt"),
            pytest.param("duration = forever", "duration", id="bad-duration"),
            pytest.param("cookie_secure = maybe", "cookie_secure", id="bad-bool"),
            pytest.param("language = de", "language", id="bad-language"),
            pytest.param("timeout = soon", "timeout", id="bad-timeout"),
        ],
    )
    def test_a_bad_option_stops_loading_and_is_named(self, tmp_path, line, option):
        uri = write_ini(tmp_path, base_options("http://127.0.0.1:9") + line)
        with pytest.raises(ConfigError) as raised:
            loadapp(uri)
        assert raised.value.option == option
        assert repr(option) in str(raised.value)

    @pytest.mark.parametrize("missing", ["api_key", "secret", "palier", "prefixes"])
    def test_a_missing_required_option_is_named(self, tmp_path, missing):
        options = "\n".join(
            line
            for line in base_options("http://127.0.0.1:9").splitlines()
            if not line.strip().startswith(missing + " ")
        )
        with pytest.raises(ConfigError, match=repr(missing)):
            loadapp(write_ini(tmp_path, options))

    def test_secret_and_key_files_are_read_next_to_the_ini(self, tmp_path, sandbox_url, sandbox):
        (tmp_path / "secret.txt").write_text(SECRET + "\n")
        (tmp_path / "key.txt").write_text("sandbox-key\n")
        options = f"""\
            api_key_file = key.txt
            secret_file = secret.txt
            palier = fra1
            prefixes = /premium
            api_base = {sandbox_url}
            """
        browser = TestApp(loadapp(write_ini(tmp_path, options)))
        browser.post("/premium/alpine-huts", {"code": sandbox.issue_code()}, status=303)

    def test_two_filter_sections_are_two_gates(self, tmp_path, sandbox_url, sandbox):
        ini = tmp_path / "two.ini"
        videos = base_options(sandbox_url).replace("/premium", "/videos")
        ini.write_text(
            "[pipeline:main]\npipeline = premium videos demo\n\n"
            f"[filter:premium]\nuse = egg:alloconv_gate\n{base_options(sandbox_url)}\n"
            f"[filter:videos]\nuse = egg:alloconv_gate\n{videos}\n"
            "[app:demo]\nuse = egg:alloconv_gate#demo\n"
        )
        browser = TestApp(loadapp(f"config:{ini}"))
        browser.post("/premium/alpine-huts", {"code": sandbox.issue_code()}, status=303)
        browser.get("/premium/alpine-huts", status=200)
        browser.get("/videos/any", status=402)


class TestTheDemo:
    def test_a_newcomer_goes_through_the_whole_flow(self, tmp_path):
        """examples/demo.ini as `make demo` serves it, over real HTTP, on a free port."""
        target = {}
        with serve(lambda environ, start_response: target["app"](environ, start_response)) as srv:
            ini = tmp_path / "demo.ini"
            demo = (EXAMPLES / "demo.ini").read_text()
            ini.write_text(demo.replace("http://127.0.0.1:6543", srv.url))
            target["app"] = loadapp(f"config:{ini}")
            http = requests.Session()

            home = http.get(f"{srv.url}/", timeout=5)
            assert home.status_code == 200
            article = f"{srv.url}/premium/alpine-huts"
            gate_page = http.get(article, timeout=5)
            assert gate_page.status_code == 402
            assert "08 99 23 45 67" in gate_page.text

            codes_page = http.get(f"{srv.url}/sandbox/", timeout=5).text
            code = re.findall(r"\b[A-Z0-9]{8}\b", codes_page)[-1]
            paid = http.post(article, data={"code": code}, timeout=5)
            assert [r.status_code for r in paid.history] == [303]
            assert paid.status_code == 200
            assert "Alpine" in paid.text
            assert http.get(article, timeout=5).status_code == 200
