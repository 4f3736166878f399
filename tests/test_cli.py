"""The support command line, on real ini files, with the sandbox and a sqlite journal."""

import csv
import io
import json
import re
import textwrap
from pathlib import Path

import pytest
from paste.deploy import loadapp
from webtest import TestApp

from alloconv_gate.cli import main, mask_key

SECRET = "cli-tests-secret-that-is-long-enough-0123456789"


def write_ini(folder, api_base, *, api_key="sandbox-key", extra="", second_gate=False):
    text = textwrap.dedent(
        f"""\
        [pipeline:main]
        pipeline = premium {"videos " if second_gate else ""}demo

        [filter:premium]
        use = egg:alloconv_gate
        api_key = {api_key}
        secret = {SECRET}
        palier = fra1
        prefixes = /premium
        api_base = {api_base}
        timeout = 2
        """
    )
    text += extra
    if second_gate:
        text += textwrap.dedent(
            f"""
            [filter:videos]
            use = egg:alloconv_gate
            api_key = {api_key}
            secret = {SECRET}
            palier = fra1
            prefixes = /videos
            api_base = {api_base}
            """
        )
    text += "\n[app:demo]\nuse = egg:alloconv_gate#demo\n"
    ini = folder / "site.ini"
    ini.write_text(text)
    return str(ini)


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def ini(tmp_path, sandbox_url):
    return write_ini(tmp_path, sandbox_url)


@pytest.fixture
def site(ini):
    return TestApp(loadapp(f"config:{ini}"), extra_environ={"REMOTE_ADDR": "203.0.113.9"})


class TestCheck:
    def test_a_good_configuration(self, capsys, ini, site, sandbox):
        status, out, _ = run(capsys, "check", ini)
        assert status == 0
        assert "ok   number: fra1: 08 99 23 45 67" in out
        assert "ok   api_key (san****): accepted by AlloConv" in out
        assert "info api_key (san****): sold for fra1." in out
        assert "sandbox-key" not in out
        assert "ok   store: sqlite:///" in out
        assert out.strip().endswith("all good")
        assert sandbox.calls["api-micropaiement"] == 1  # and no code was spent

    def test_a_bad_key(self, capsys, tmp_path, sandbox_url):
        ini = write_ini(tmp_path, sandbox_url, api_key="wrong-key")
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert "FAIL api_key (wro****): refused by AlloConv (ERR99)" in out
        assert "wrong-key" not in out

    def test_a_bad_option_is_named(self, capsys, tmp_path, sandbox_url):
        ini = write_ini(tmp_path, sandbox_url, extra="duration = forever\n")
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert "FAIL options" in out and "'duration'" in out

    def test_a_comma_between_prefixes_is_a_problem(self, capsys, tmp_path, sandbox_url):
        ini = write_ini(tmp_path, sandbox_url)
        text = Path(ini).read_text().replace("prefixes = /premium", "prefixes = /premium, /videos")
        Path(ini).write_text(text)
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert "FAIL options" in out and "'prefixes'" in out and "comma" in out
        assert "all good" not in out

    def test_the_demo_secret_with_the_real_alloconv_is_a_problem(self, capsys, tmp_path):
        demo = Path(__file__).resolve().parent.parent / "examples" / "demo.ini"
        ini = tmp_path / "site.ini"
        text = demo.read_text().replace(
            "api_base = http://127.0.0.1:6543/sandbox", "api_base = https://www.alloconv.fr/scripts"
        )
        assert "alloconv.fr" in text
        ini.write_text(text)
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert "FAIL options" in out and "'secret'" in out and "demo" in out
        assert "all good" not in out

    def test_alloconv_unreachable(self, capsys, tmp_path, sandbox, sandbox_url):
        sandbox.set_fault("error500")
        status, out, _ = run(capsys, "check", write_ini(tmp_path, sandbox_url))
        assert status == 1
        assert "FAIL number" in out
        assert "FAIL api_key (san****): could not be checked" in out

    def test_a_store_that_cannot_be_opened(self, capsys, tmp_path, sandbox_url):
        (tmp_path / "adir").mkdir()
        ini = write_ini(tmp_path, sandbox_url, extra="store = sqlite:///adir\n")
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert "FAIL store" in out

    def test_every_gate_is_checked_or_the_one_named(self, capsys, tmp_path, sandbox, sandbox_url):
        ini = write_ini(tmp_path, sandbox_url, second_gate=True)
        status, out, _ = run(capsys, "check", ini)
        assert status == 0
        assert "[filter:premium]" in out and "[filter:videos]" in out
        # Both sections sell fra1 with one key: it is asked about once, and no risk is shown.
        assert sandbox.calls["api-micropaiement"] == 1
        assert "ok   api_key (san****): accepted by AlloConv (checked above)" in out
        assert "[across filters]" not in out
        status, out, _ = run(capsys, "check", ini, "--filter", "videos")
        assert "[filter:premium]" not in out

    def test_a_broken_ini_is_a_failure_not_a_traceback(self, capsys, tmp_path, sandbox_url):
        ini = write_ini(tmp_path, sandbox_url, extra="number = %(missing)s\n")
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert "FAIL options" in out

    def test_no_such_file(self, capsys, tmp_path):
        status, _, err = run(capsys, "check", tmp_path / "nope.ini")
        assert status == 2
        assert "no such file" in err


class TestJournal:
    def test_what_support_needs(self, capsys, ini, site, sandbox):
        good = sandbox.issue_code()
        site.post("/premium/alpine-huts", {"code": good}, status=303)
        site.reset()
        site.post("/premium/alpine-huts", {"code": "ZZZZ9999"}, status=402)

        status, out, _ = run(capsys, "journal", ini, "--format", "json")
        assert status == 0
        rows = json.loads(out)
        assert [r["outcome"] for r in rows] == ["invalid", "ok"]
        assert rows[1]["code"] == good[:4] + "****"
        assert rows[1]["client"] == "203.0.113.9"
        assert good not in out

        status, out, _ = run(capsys, "journal", ini, "--code", good, "--format", "json")
        assert [r["outcome"] for r in json.loads(out)] == ["ok"]

        status, out, _ = run(capsys, "journal", ini, "--outcome", "invalid", "--format", "csv")
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["outcome"] for r in rows] == ["invalid"]

        status, out, _ = run(capsys, "journal", ini, "--since", "1h")
        assert out.splitlines()[0].split()[:3] == ["time", "gate", "palier"]
        assert len(out.splitlines()) == 3

    def test_an_unknown_answer_and_its_reference(self, capsys, ini, site, sandbox):
        sandbox.set_fault("drop", script="api-micropaiement")
        code = sandbox.issue_code()
        page = site.post("/premium/alpine-huts", {"code": code}, status=503)
        _, out, _ = run(capsys, "journal", ini, "--outcome", "unknown", "--format", "json")
        [row] = json.loads(out)
        assert row["reference"] in page.text

    def test_no_records(self, capsys, ini, site):
        status, out, _ = run(capsys, "journal", ini)
        assert (status, out.strip()) == (0, "no records")

    def test_before_the_site_ever_started(self, capsys, ini):
        status, _, err = run(capsys, "journal", ini)
        assert status == 2
        assert "no journal at" in err
        assert not (Path(ini).parent / "alloconv_gate.sqlite3").exists()  # not created here

    def test_by_reference_and_only_this_gate(self, capsys, tmp_path, sandbox_url, sandbox):
        ini = write_ini(tmp_path, sandbox_url, second_gate=True)
        site = TestApp(loadapp(f"config:{ini}"))
        sandbox.set_fault("drop", script="api-micropaiement")
        page = site.post("/premium/alpine-huts", {"code": sandbox.issue_code()}, status=503)
        site.post("/videos/x", {"code": sandbox.issue_code()}, status=503)
        [ref] = re.findall(r"\b[0-9A-F]{10}\b", page.html.find(attrs={"role": "alert"}).text)
        _, out, _ = run(capsys, "journal", ini, "--filter", "premium", "--format", "json")
        assert len(json.loads(out)) == 1
        _, out, _ = run(
            capsys,
            "journal",
            ini,
            "--filter",
            "videos",
            "--reference",
            ref.lower(),
            "--format",
            "json",
        )
        assert json.loads(out) == []
        _, out, _ = run(
            capsys, "journal", ini, "--filter", "premium", "--reference", ref, "--format", "json"
        )
        assert [r["reference"] for r in json.loads(out)] == [ref]

    def test_a_code_read_out_with_spaces_and_after_a_secret_rotation(
        self, capsys, tmp_path, sandbox_url, sandbox
    ):
        ini = write_ini(tmp_path, sandbox_url)
        code = sandbox.issue_code()
        TestApp(loadapp(f"config:{ini}")).post("/premium/x", {"code": code}, status=303)
        new = "a-rotated-in-secret-that-is-long-enough-012345"
        Path(ini).write_text(Path(ini).read_text().replace(SECRET, f"{new} {SECRET}"))
        spaced = f"{code[:4]} {code[4:]}"
        _, out, _ = run(capsys, "journal", ini, "--code", spaced, "--format", "json")
        assert [r["outcome"] for r in json.loads(out)] == ["ok"]

    def test_several_gates_need_a_choice(self, capsys, tmp_path, sandbox_url):
        ini = write_ini(tmp_path, sandbox_url, second_gate=True)
        status, _, err = run(capsys, "journal", ini)
        assert status == 2
        assert "--filter" in err


class TestGrant:
    def test_a_link_gives_access_once_and_is_journaled(self, capsys, ini, site):
        status, out, err = run(
            capsys,
            "grant",
            ini,
            "--gate",
            "premium",
            "--for",
            "2h",
            "--url",
            "https://example.com/premium/alpine-huts?lang=fr",
        )
        assert status == 0
        link = out.strip()
        assert link.startswith("https://example.com/premium/alpine-huts?lang=fr&alloconv_grant=")
        assert "works once" in err
        path = link[len("https://example.com") :]
        site.get(path, status=200).forms[0].submit(status=303)
        site.get("/premium/alpine-huts", status=200)
        site.reset()
        site.get(path, status=200).forms[0].submit(status=403)
        status, out, _ = run(capsys, "journal", ini, "--outcome", "granted", "--format", "json")
        assert [r["detail"] for r in json.loads(out)] == ["link used", "link issued for 7200s"]

    @pytest.mark.parametrize(
        "url", ["https://example.com", "https://example.com/", "https://example.com/free/page"]
    )
    def test_the_link_must_lead_to_a_page_of_the_gate(self, capsys, ini, url):
        status, out, err = run(capsys, "grant", ini, "--gate", "premium", "--url", url)
        assert status == 2
        assert "'--url'" in err and "/premium" in err
        assert out == ""

    def test_an_unknown_gate(self, capsys, ini):
        status, _, err = run(capsys, "grant", ini, "--gate", "videos")
        assert status == 2
        assert "premium" in err

    def test_a_link_cannot_outlive_the_gates_duration(self, capsys, ini):
        status, _, err = run(capsys, "grant", ini, "--for", "2d")
        assert status == 2
        assert "at most the gate's duration" in err

    def test_a_bad_duration(self, capsys, ini):
        status, _, err = run(capsys, "grant", ini, "--for", "soon")
        assert status == 2
        assert "'--for'" in err


@pytest.mark.parametrize("command", ["check", "journal", "grant"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "CONFIG.ini" in capsys.readouterr().out


class TestNamedGatesInOneSection:
    """``gates = premium videos`` in one filter section: the CLI knows each gate."""

    @pytest.fixture
    def ini(self, tmp_path, sandbox_url):
        extra = (
            "gates = premium videos\npremium.prefixes = /premium\n"
            "videos.prefixes = /videos\nvideos.palier = fra2\nvideos.price_notice = 1 €\n"
            "premium.api_key = key-fra1\nvideos.api_key = key-fra2\n"
        )
        path = write_ini(tmp_path, sandbox_url, extra=extra)
        Path(path).write_text(Path(path).read_text().replace("prefixes = /premium\n", "", 1))
        return path

    def test_check_lists_every_gate_and_number(self, capsys, ini, sandbox):
        status, out, _ = run(capsys, "check", ini)
        assert status == 0
        assert "gate premium: palier fra1" in out and "gate videos: palier fra2" in out
        assert "fra2: 08 99 23 45 68" in out

    def test_check_shows_each_gates_key_masked_and_asks_about_each_once(self, capsys, ini, sandbox):
        status, out, _ = run(capsys, "check", ini)
        assert status == 0
        assert "gate premium: palier fra1, prefixes /premium, api_key 1 (ke****)" in out
        assert "gate videos: palier fra2, prefixes /videos, api_key 2 (ke****)" in out
        assert "ok   api_key 1 (ke****): accepted by AlloConv" in out
        assert "ok   api_key 2 (ke****): accepted by AlloConv" in out
        assert sandbox.calls["api-micropaiement"] == 2  # one empty code per key
        assert "info api_key 1 (ke****): sold for fra1 (gate premium)." in out
        assert "info api_key 2 (ke****): sold for fra2 (gate videos)." in out
        assert "AlloConv cannot be asked which paliers a key accepts" in out
        assert '"mes APIs"' in out
        assert "make sure this key's API accepts fra2 only" in out
        assert "WARN" not in out and out.strip().endswith("all good")
        for key in ("key-fra1", "key-fra2", "sandbox-key"):
            assert key not in out

    def test_grant_for_a_named_gate_and_the_journal_of_the_section(self, capsys, ini):
        site = TestApp(loadapp(f"config:{ini}"))
        status, out, _ = run(
            capsys, "grant", ini, "--gate", "videos", "--for", "1h", "--url", "/videos/x"
        )
        assert status == 0
        path = out.strip()
        assert path.startswith("/videos/x?alloconv_grant=")
        site.get(path, status=200).forms[0].submit(status=303)
        site.get("/videos/x", status=404)  # the demo's own answer: the gate let it through
        site.get("/premium/x", status=402)
        _, out, _ = run(capsys, "journal", ini, "--format", "json")
        assert [r["outcome"] for r in json.loads(out)] == ["granted", "granted"]


class TestKeys:
    """What ``check`` says about API keys: masked, each asked about once, and the risk of
    gates that sell different paliers with one key."""

    @pytest.mark.parametrize(
        ("key", "masked"),
        [
            ("0123456789abcdef0123456789abcdef", "0123****"),
            ("sandbox-key", "san****"),
            ("key-fra1", "ke****"),
            ("abc", "a****"),
            ("ab", "****"),
            ("", "****"),
        ],
    )
    def test_a_key_is_masked_to_at_most_4_characters_and_a_third(self, key, masked):
        assert mask_key(key) == masked

    def write(self, tmp_path, sandbox_url, *, filter_options, second=None):
        text = textwrap.dedent(
            f"""\
            [pipeline:main]
            pipeline = site {"other " if second else ""}demo

            [filter:site]
            use = egg:alloconv_gate
            secret = {SECRET}
            api_base = {sandbox_url}
            store = memory
            """
        )
        text += filter_options
        if second:
            text += textwrap.dedent(
                f"""
                [filter:other]
                use = egg:alloconv_gate
                secret = {SECRET}
                api_base = {sandbox_url}
                store = memory
                """
            )
            text += second
        text += "\n[app:demo]\nuse = egg:alloconv_gate#demo\n"
        ini = tmp_path / "site.ini"
        ini.write_text(text)
        return str(ini)

    CHEAP_AND_DEAR = (
        "gates = cheap dear\n"
        "cheap.palier = fra2\ncheap.price_notice = 1 €\ncheap.prefixes = /cheap\n"
        "dear.palier = fra1\ndear.prefixes = /dear\n"
    )

    def test_a_refused_key_among_two_is_the_one_problem(self, capsys, tmp_path, sandbox_url):
        options = self.CHEAP_AND_DEAR + "cheap.api_key = key-fra2\ndear.api_key = not-a-key\n"
        status, out, _ = run(
            capsys, "check", self.write(tmp_path, sandbox_url, filter_options=options)
        )
        assert status == 1
        assert "ok   api_key 1 (ke****): accepted by AlloConv" in out
        assert "FAIL api_key 2 (not****): refused by AlloConv (ERR99)" in out
        assert out.strip().endswith("1 problem(s)")
        assert "not-a-key" not in out and "key-fra2" not in out

    def test_a_key_file_per_gate(self, capsys, tmp_path, sandbox_url):
        (tmp_path / "cheap.key").write_text("key-fra2\n")
        (tmp_path / "dear.key").write_text("key-fra1\n")
        options = (
            self.CHEAP_AND_DEAR
            + "api_key = sandbox-key\ncheap.api_key_file = cheap.key\n"
            + "dear.api_key_file = dear.key\n"
        )
        status, out, _ = run(
            capsys, "check", self.write(tmp_path, sandbox_url, filter_options=options)
        )
        assert status == 0
        assert "api_key 1 (ke****): accepted by AlloConv" in out
        assert "api_key 2 (ke****): accepted by AlloConv" in out
        assert "sandbox-key" not in out and "san****" not in out  # no gate uses it

    def test_one_key_for_two_prices_is_refused_naming_api_key(
        self, capsys, tmp_path, sandbox, sandbox_url
    ):
        options = self.CHEAP_AND_DEAR + "api_key = sandbox-key\n"
        status, out, _ = run(
            capsys, "check", self.write(tmp_path, sandbox_url, filter_options=options)
        )
        assert status == 1
        assert "FAIL options: alloconv_gate: option 'api_key'" in out
        assert "a code of fra2 would open 'dear'" in out
        assert "sandbox-key" not in out
        assert sandbox.calls["api-micropaiement"] == 0

    def test_shared_key_shows_the_risk_without_failing(self, capsys, tmp_path, sandbox_url):
        options = self.CHEAP_AND_DEAR + "api_key = sandbox-key\nshared_key = true\n"
        status, out, _ = run(
            capsys, "check", self.write(tmp_path, sandbox_url, filter_options=options)
        )
        assert status == 0
        [warning] = [line for line in out.splitlines() if line.startswith("  WARN")]
        assert warning.startswith("  WARN api_key (san****): shared_key = true:")
        assert "a code of fra1 would open gate cheap" in warning
        assert "a code of fra2 would open gate dear" in warning
        assert "own AlloConv API and key" in warning
        assert (
            "info api_key (san****): sold for fra2 fra1 (gate cheap: fra2; gate dear: fra1)" in out
        )
        assert out.strip().endswith(
            "no problem; 1 warning(s) (risks the configuration accepts, see WARN)"
        )
        assert "sandbox-key" not in out

    def test_shared_key_with_one_price_shows_no_risk(self, capsys, tmp_path, sandbox_url):
        options = (
            "gates = a b\npalier = fra1\na.prefixes = /a\nb.prefixes = /b\n"
            "api_key = sandbox-key\nshared_key = true\n"
        )
        status, out, _ = run(
            capsys, "check", self.write(tmp_path, sandbox_url, filter_options=options)
        )
        assert status == 0
        assert "WARN" not in out
        assert "sold for fra1 (gate a: fra1; gate b: fra1)" in out

    SECTION_FRA1 = "palier = fra1\nprefixes = /dear\napi_key = sandbox-key\n"
    SECTION_FRA2 = "palier = fra2\nprice_notice = 1 €\nprefixes = /cheap\napi_key = sandbox-key\n"

    def test_one_key_for_two_prices_in_two_sections_is_a_problem(
        self, capsys, tmp_path, sandbox, sandbox_url
    ):
        ini = self.write(
            tmp_path, sandbox_url, filter_options=self.SECTION_FRA1, second=self.SECTION_FRA2
        )
        TestApp(loadapp(f"config:{ini}"))  # each section is its own Gate: the site starts
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert sandbox.calls["api-micropaiement"] == 1
        across = out.split("[across filters]\n")[1]
        assert across.startswith(
            "  FAIL api_key (san****): [filter:site] (fra1), [filter:other] (fra2) check codes "
            "with the same key"
        )
        assert (
            "a code of fra2 would open [filter:site]; a code of fra1 would open [filter:other]"
            in across
        )
        # Checking one section still compares it with the others.
        status, out, _ = run(capsys, "check", ini, "--filter", "other")
        assert status == 1
        assert "[filter:site]" not in out.split("[across filters]")[0]
        assert "FAIL api_key (san****): [filter:site] (fra1)" in out
        assert "sandbox-key" not in out

    def test_two_sections_that_both_accept_the_risk(self, capsys, tmp_path, sandbox_url):
        ini = self.write(
            tmp_path,
            sandbox_url,
            filter_options=self.SECTION_FRA1 + "shared_key = true\n",
            second=self.SECTION_FRA2 + "shared_key = true\n",
        )
        status, out, _ = run(capsys, "check", ini)
        assert status == 0
        assert "  WARN api_key (san****): [filter:site] (fra1), [filter:other] (fra2)" in out
        assert "Every section says shared_key = true" in out
        ini = self.write(
            tmp_path,
            sandbox_url,
            filter_options=self.SECTION_FRA1 + "shared_key = true\n",
            second=self.SECTION_FRA2,
        )
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert "  FAIL api_key (san****): [filter:site] (fra1), [filter:other] (fra2)" in out
