"""examples/demo.ini served by real gunicorn processes, as its README says to serve it.

The gate calls the sandbox over HTTP on its own server, while it holds the visitor's
request; the sandbox keeps its codes in a sqlite file (``state``) that the workers share.
Threaded workers (one process or two) and several sync workers sell a code read off the
sandbox page; one sync worker, which cannot answer the gate's call, refuses at once, leaves
the code unspent and logs an ERROR naming the fix.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from webtest import TestApp

from alloconv_gate import Gate
from alloconv_gate.sandbox import SqliteCodes
from alloconv_gate.self_call import cannot_call_itself
from alloconv_gate.store import open_store

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
START_TIMEOUT = 30.0
ARTICLE = "/premium/alpine-huts"
# A timeout the one-worker refusal must not wait for (the ini's default is 5 s).
LONG_TIMEOUT = 20


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """gunicorn serving a copy of examples/demo.ini in ``folder``, until :meth:`stop`."""

    def __init__(self, folder: Path, *args: str, edit=lambda text: text):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        ini = folder / "demo.ini"
        text = (EXAMPLES / "demo.ini").read_text().replace("http://127.0.0.1:6543", self.url)
        ini.write_text(edit(text))
        self.log = folder / f"gunicorn-{self.port}.log"
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own arguments, no shell
                [
                    *(sys.executable, "-m", "gunicorn", "--paste", str(ini)),
                    *("--bind", f"127.0.0.1:{self.port}", "--no-control-socket"),
                    *("--graceful-timeout", "5", *args),
                ],
                cwd=folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise

    def _wait_until_up(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start-up:\n{self.output()}")
            try:
                requests.get(f"{self.url}/", timeout=START_TIMEOUT)
                return
            except requests.ConnectionError:  # not listening yet
                time.sleep(0.05)
        raise RuntimeError(f"gunicorn did not answer within {START_TIMEOUT}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self):
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def journal(self):
        store = open_store(f"sqlite:///{self.folder}/alloconv_gate.sqlite3")
        try:
            return store.journal(limit=1000)
        finally:
            store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


def codes_on_the_page(http, url) -> list[str]:
    page = http.get(f"{url}/sandbox/", timeout=10)
    assert page.status_code == 200, page.text
    return re.findall(r"<code>([A-Z0-9]{8})</code>", page.text)


THREADED_OR_SEVERAL = [
    pytest.param(["--workers", "2"], id="sync-2-workers"),
    pytest.param(["--workers", "1", "--threads", "4"], id="gthread-1-worker"),
    pytest.param(["--workers", "2", "--threads", "4"], id="gthread-2-workers"),
]


class TestServedWithGunicorn:
    @pytest.mark.parametrize("args", THREADED_OR_SEVERAL)
    def test_codes_read_off_the_sandbox_page_buy_the_article(self, tmp_path, args):
        """Each code comes from a page of its own, served by whichever worker took it, and
        is checked by the worker the gate's call reached: all are sold, once each."""
        with Gunicorn(tmp_path, *args) as server:
            gate_page = requests.get(server.url + ARTICLE, timeout=10)
            assert gate_page.status_code == 402
            assert "08 99 23 45 67" in gate_page.text  # the sandbox's number, fetched
            codes = [codes_on_the_page(requests.Session(), server.url)[0] for _ in range(4)]
            for code in codes:
                http = requests.Session()
                paid = http.post(server.url + ARTICLE, data={"code": code}, timeout=10)
                assert [r.status_code for r in paid.history] == [303]
                assert paid.status_code == 200
                assert "Alpine" in paid.text and "Your access lasts until" in paid.text
            outcomes = sorted(record.outcome for record in server.journal())
            output = server.output()
        assert outcomes.count("ok") == 4
        assert "unknown" not in outcomes
        if "--threads" not in args:  # one-threaded workers: it works, with a warning
            assert re.search(r"WARNING \[alloconv_gate\] api_base \S+ is this server", output)
        state = SqliteCodes(tmp_path / "sandbox.sqlite3")
        assert all(state.is_used(code) for code in codes)

    def test_one_sync_worker_refuses_at_once_and_the_code_stays_good(self, tmp_path):
        """Its only worker cannot answer the gate's call: no call is made, so neither the
        page nor the submission waits for the timeout, and the code is not spent."""

        def long_timeout(text):
            return text.replace("duration = 30m\n", f"duration = 30m\ntimeout = {LONG_TIMEOUT}\n")

        with Gunicorn(tmp_path, "--workers", "1", edit=long_timeout) as server:
            started = time.monotonic()
            gate_page = requests.get(server.url + ARTICLE, timeout=LONG_TIMEOUT + 5)
            code = codes_on_the_page(requests, server.url)[0]
            refused = requests.post(
                server.url + ARTICLE, data={"code": code}, timeout=LONG_TIMEOUT + 5
            )
            took = time.monotonic() - started
            records = server.journal()
            output = server.output()
        assert took < LONG_TIMEOUT / 2  # a call made would have waited LONG_TIMEOUT
        assert gate_page.status_code == 503  # no number can be asked
        assert refused.status_code == 503 and refused.history == []
        assert refused.headers["Retry-After"]
        assert "Alpine" not in refused.text
        assert [record.outcome for record in records] == ["unavailable"]
        assert "one request at a time" in records[0].detail
        assert re.search(r"ERROR \[alloconv_gate\] a code submitted got 503.*--threads", output)
        assert re.search(r"ERROR \[alloconv_gate\] the number of palier 'fra1' not asked", output)
        state = SqliteCodes(tmp_path / "sandbox.sqlite3")
        assert not state.is_used(code)

        # Served as the ini says, with threads, the same code buys the article.
        with Gunicorn(tmp_path, "--workers", "1", "--threads", "4") as server:
            paid = requests.post(server.url + ARTICLE, data={"code": code}, timeout=10)
        assert [r.status_code for r in paid.history] == [303]
        assert "Alpine" in paid.text

    def test_several_workers_without_state_say_so_instead_of_showing_codes(self, tmp_path):
        def no_state(text):
            return text.replace("state = sandbox.sqlite3\n", "")

        with Gunicorn(tmp_path, "--workers", "2", edit=no_state) as server:
            page = requests.get(f"{server.url}/sandbox/", timeout=10)
            output = server.output()
        assert page.status_code == 503
        assert "state = sandbox.sqlite3" in page.text
        assert not re.findall(r"<code>([A-Z0-9]{8})</code>", page.text)
        assert re.search(r"ERROR \[alloconv_gate\] the sandbox keeps its codes in this", output)


# What each server says in the environ, and whether the gate's call to itself can be answered.
SERVERS = {
    "gunicorn-sync-1": {"wsgi.multithread": False, "wsgi.multiprocess": False},
    "gunicorn-sync-2": {"wsgi.multithread": False, "wsgi.multiprocess": True},
    "gunicorn-gthread": {"wsgi.multithread": True, "wsgi.multiprocess": True},
    "waitress": {"wsgi.multithread": True, "wsgi.multiprocess": False},
}
HERE = {"SERVER_NAME": "127.0.0.1", "SERVER_PORT": "6543", "HTTP_HOST": "127.0.0.1:6543"}


class TestCannotCallItself:
    @pytest.mark.parametrize(
        ("server", "stuck"),
        [
            ("gunicorn-sync-1", True),
            ("gunicorn-sync-2", False),
            ("gunicorn-gthread", False),
            ("waitress", False),
        ],
    )
    def test_only_one_process_of_one_thread_is_stuck(self, server, stuck):
        environ = {**HERE, **SERVERS[server]}
        reason = cannot_call_itself(environ, "http://127.0.0.1:6543/sandbox")
        assert (reason is not None) is stuck

    @pytest.mark.parametrize(
        ("api_base", "environ", "same"),
        [
            pytest.param("http://127.0.0.1:6543/sandbox", {}, True, id="same"),
            pytest.param("http://localhost:6543/sandbox", {}, True, id="localhost"),
            pytest.param("http://[::1]:6543/sandbox", {}, True, id="ipv6-loopback"),
            # Known by loopback only: a name may be the visitor's word (the Host header,
            # gunicorn's SERVER_NAME), and one visitor must not stop the others' calls.
            pytest.param(
                "https://demo.example/sandbox",
                {"SERVER_NAME": "10.0.0.5", "SERVER_PORT": "443", "HTTP_HOST": "demo.example"},
                False,
                id="a-name-the-visitor-sends",
            ),
            pytest.param(
                "https://www.alloconv.fr/scripts",
                {"SERVER_NAME": "www.alloconv.fr", "SERVER_PORT": "443"},
                False,
                id="a-spoofed-server-name",
            ),
            pytest.param("http://127.0.0.1:8001", {}, False, id="another-port"),
            pytest.param("https://www.alloconv.fr/scripts", {}, False, id="alloconv"),
            pytest.param(
                "https://www.alloconv.fr/scripts",
                {"SERVER_PORT": "443", "HTTP_HOST": "site.example"},
                False,
                id="alloconv-on-443",
            ),
        ],
    )
    def test_the_server_is_known_by_its_port_and_host(self, api_base, environ, same):
        environ = {**HERE, **SERVERS["gunicorn-sync-1"], **environ}
        assert (cannot_call_itself(environ, api_base) is not None) is same

    def test_a_stuck_gate_makes_no_call_and_journals_no_lost_answer(
        self, tmp_path, sandbox, sandbox_url, caplog
    ):
        """The gate of a one-threaded server whose api_base is itself (here WebTest's
        environ: one thread, one process, port 80) never calls it: the page and the
        submission answer 503 at once and the code stays good for a server that can."""
        port = sandbox_url.rsplit(":", 1)[1]
        options = {
            "api_key": "sandbox-key",
            "secret": "self-call-tests-secret-long-enough-0123456789",
            "palier": "fra1",
            "prefixes": "/premium",
            "api_base": sandbox_url,
            "store": f"sqlite:///{tmp_path}/journal.sqlite3",
        }
        gate = Gate(lambda environ, start_response: [], **options)
        stuck = TestApp(gate, extra_environ={"SERVER_PORT": port})
        code = sandbox.issue_code()
        with caplog.at_level("ERROR", logger="alloconv_gate"):
            stuck.get("/premium/a", status=503)
            stuck.post("/premium/a", {"code": code}, status=503)
        assert sandbox.calls == {}
        assert not sandbox.is_used(code)
        assert [r.outcome for r in gate.store.journal()] == ["unavailable"]
        assert any("--threads" in r.getMessage() for r in caplog.records)
        # The same gate, asked through another port (not itself): it calls, and sells.
        TestApp(gate).post("/premium/a", {"code": code}, status=303)
        assert sandbox.is_used(code)
        gate.store.close()
