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

from alloconv_gate.cli import main

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
        assert "ok   api_key: accepted by AlloConv" in out
        assert "ok   store: sqlite:///" in out
        assert out.strip().endswith("all good")
        assert sandbox.calls["api-micropaiement"] == 1  # and no code was spent

    def test_a_bad_key(self, capsys, tmp_path, sandbox_url):
        ini = write_ini(tmp_path, sandbox_url, api_key="wrong-key")
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert "FAIL api_key: refused by AlloConv (ERR99)" in out
        assert "wrong-key" not in out

    def test_a_bad_option_is_named(self, capsys, tmp_path, sandbox_url):
        ini = write_ini(tmp_path, sandbox_url, extra="duration = forever\n")
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert "FAIL options" in out and "'duration'" in out

    def test_alloconv_unreachable(self, capsys, tmp_path, sandbox, sandbox_url):
        sandbox.set_fault("error500")
        status, out, _ = run(capsys, "check", write_ini(tmp_path, sandbox_url))
        assert status == 1
        assert "FAIL number" in out
        assert "FAIL api_key: could not be checked" in out

    def test_a_store_that_cannot_be_opened(self, capsys, tmp_path, sandbox_url):
        (tmp_path / "adir").mkdir()
        ini = write_ini(tmp_path, sandbox_url, extra="store = sqlite:///adir\n")
        status, out, _ = run(capsys, "check", ini)
        assert status == 1
        assert "FAIL store" in out

    def test_every_gate_is_checked_or_the_one_named(self, capsys, tmp_path, sandbox_url):
        ini = write_ini(tmp_path, sandbox_url, second_gate=True)
        status, out, _ = run(capsys, "check", ini)
        assert status == 0
        assert "[filter:premium]" in out and "[filter:videos]" in out
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
            "https://example.com/",
        )
        assert status == 0
        link = out.strip()
        assert link.startswith("https://example.com/premium?alloconv_grant=")
        assert "works once" in err
        path = link[len("https://example.com") :]
        site.get(path, status=200).forms[0].submit(status=303)
        site.get("/premium/alpine-huts", status=200)
        site.reset()
        site.get(path, status=200).forms[0].submit(status=403)
        status, out, _ = run(capsys, "journal", ini, "--outcome", "granted", "--format", "json")
        assert [r["detail"] for r in json.loads(out)] == ["link used", "link issued for 7200s"]

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
        )
        path = write_ini(tmp_path, sandbox_url, extra=extra)
        Path(path).write_text(Path(path).read_text().replace("prefixes = /premium\n", "", 1))
        return path

    def test_check_lists_every_gate_and_number(self, capsys, ini, sandbox):
        status, out, _ = run(capsys, "check", ini)
        assert status == 0
        assert "gate premium: palier fra1" in out and "gate videos: palier fra2" in out
        assert "fra2: 08 99 23 45 68" in out

    def test_grant_for_a_named_gate_and_the_journal_of_the_section(self, capsys, ini):
        site = TestApp(loadapp(f"config:{ini}"))
        status, out, _ = run(capsys, "grant", ini, "--gate", "videos", "--for", "1h")
        assert status == 0
        path = out.strip()
        assert path.startswith("/videos?alloconv_grant=")
        site.get(path, status=200).forms[0].submit(status=303)
        site.get("/videos/x", status=404)  # the demo's own answer: the gate let it through
        site.get("/premium/x", status=402)
        _, out, _ = run(capsys, "journal", ini, "--format", "json")
        assert [r["outcome"] for r in json.loads(out)] == ["granted", "granted"]
