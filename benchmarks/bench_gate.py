"""What the gate costs per request, measured side by side in one run.

    make bench        (or: python benchmarks/bench_gate.py [--rounds N])

Each case calls a WSGI callable with a fresh copy of one environ and drains the answer,
as a server would. The cases are timed in interleaved rounds and the median of the
rounds is reported, so that a noisy moment on the machine hits every case alike.

Targets (from the core issue): outside the prefixes, within 1 microsecond of the bare
app; a valid cookie adds at most 1.5 times one itsdangerous ``loads``; the gate page makes
no AlloConv call once the number is cached. From issue 10: the gate page at most 15 µs on
a fast machine (where one ``loads`` takes about 7 µs: so about 2 ``loads``).

The environ is a complete PEP 3333 one, as waitress builds it (a multithreaded server).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from http.cookies import SimpleCookie

import waitress
from itsdangerous import URLSafeTimedSerializer
from webtest import TestApp

from alloconv_gate import Gate
from alloconv_gate.sandbox import Sandbox
from alloconv_gate.tokens import AccessTokens

SECRET = "a-benchmark-secret-that-is-long-enough-0123"
BODY = b"<html><body>An article.</body></html>"


def bare_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(BODY)))])
    return [BODY]


BROWSER_HEADERS = {
    "HTTP_ACCEPT": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
    "image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    "HTTP_ACCEPT_LANGUAGE": "fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7",
    "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/131.0.0.0 Safari/537.36",
}


def environ_for(path, cookie=None, headers=None):
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_ACCEPT": "text/html",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        **(headers or {}),
    }
    if cookie:
        environ["HTTP_COOKIE"] = f"_ga=GA1.1.123456789.1700000000; lang=fr; {cookie}; theme=dark"
    return environ


def request_loop(app, environs, n):
    """Seconds per request for ``n`` requests of ``app`` on copies of ``environs`` (cycled)."""
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    count = len(environs)
    started = time.perf_counter()
    for i in range(n):
        result = app(environs[i % count].copy(), start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    elapsed = time.perf_counter() - started
    return elapsed / n, statuses[-1]


def call_loop(function, n):
    started = time.perf_counter()
    for _ in range(n):
        function()
    return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20000, help="per round and case")
    args = parser.parse_args()

    sandbox = Sandbox()
    server = waitress.create_server(sandbox, host="127.0.0.1", port=0, threads=2)
    threading.Thread(target=server.run, daemon=True).start()
    gate = Gate(
        bare_app,
        api_key="sandbox-key",
        secret=SECRET,
        palier="fra1",
        prefixes="/premium /videos",
        api_base=f"http://127.0.0.1:{server.effective_port}",
        store=f"sqlite:///{tempfile.mkdtemp()}/journal.sqlite3",
    )
    browser = TestApp(gate)
    granted = browser.post("/premium/a", {"code": sandbox.issue_code("fra1")}, status=303)
    cookie = SimpleCookie(granted.headers["Set-Cookie"])
    token = cookie["alloconv_access"].value
    cookie_pair = f"alloconv_access={token}"
    browser.get("/premium/a", status=200)
    browser.reset()
    browser.get("/premium/a", status=402)  # fetches and caches the number
    calls_before = sandbox.calls.copy()

    serializer = URLSafeTimedSerializer(SECRET, salt="benchmark")
    same_size = serializer.dumps([int(time.time()) + 86400, sorted(gate.config.prefixes)])
    assert len(same_size) == len(token), (same_size, token)

    # Tokens the gate has not seen yet: what a visitor's first request after payment
    # costs (the gate remembers tokens whose signature checked out).
    fresh = AccessTokens([SECRET], gate.config.prefixes, gate.config.duration)
    # A hostile Cookie header: forged token-shaped values of our cookie's name (signed
    # with another secret, never seen before), sent before the good one.
    forger = AccessTokens([SECRET[::-1]], gate.config.prefixes, gate.config.duration)
    unseen = iter(range(10**9))

    def unseen_cookies():
        base = int(time.time()) + 3600
        return [
            environ_for(
                "/premium/article", f"alloconv_access={fresh.issue(until=base + next(unseen))}"
            )
            for _ in range(args.requests)
        ]

    def hostile_cookies(size):
        base = int(time.time()) + 3600
        environs = []
        for _ in range(hostile_n):
            forged, length = [], 0
            while length < size:
                forged.append(f"alloconv_access={forger.issue(until=base + next(unseen))}")
                length += len(forged[-1]) + 2
            environs.append(environ_for("/premium/article", "; ".join(forged)))
        return environs

    hostile_n = 50
    cases = {
        "bare app": (bare_app, [environ_for("/free/article")]),
        "gate, outside the prefixes": (gate, [environ_for("/free/article")]),
        "gate, valid cookie": (gate, [environ_for("/premium/article", cookie_pair)]),
        "gate, valid cookie, first sight": (gate, None),
        "gate, the gate page (402)": (gate, [environ_for("/premium/article")]),
        "gate, the gate page, browser (402)": (
            gate,
            [environ_for("/premium/article?id=7", headers=BROWSER_HEADERS)],
        ),
        "gate, 8 KB of forged cookies (402)": (gate, 8 * 1024),
        "gate, 64 KB of forged cookies (402)": (gate, 64 * 1024),
    }
    per_case: dict[str, list[float]] = {name: [] for name in cases}
    per_case["itsdangerous loads, same size"] = []
    for _ in range(args.rounds):
        for name, (app, environs) in cases.items():
            n = args.requests
            if isinstance(environs, int):
                n, environs = hostile_n, hostile_cookies(environs)
            seconds, status = request_loop(app, environs or unseen_cookies(), n)
            expected = "402 Payment Required" if "402" in name else "200 OK"
            assert status == expected, (name, status)
            per_case[name].append(seconds)
        per_case["itsdangerous loads, same size"].append(
            call_loop(lambda: serializer.loads(same_size, max_age=86400), args.requests)
        )
    server.close()

    us = {name: statistics.median(times) * 1e6 for name, times in per_case.items()}
    bare = us["bare app"]
    loads = us["itsdangerous loads, same size"]
    print(
        f"Per request, median of {args.rounds} interleaved rounds (Python {sys.version.split()[0]})"
    )
    print(f"{'case':34} {'µs':>9} {'+µs vs bare':>12}")
    for name, value in us.items():
        extra = "" if name.startswith("itsdangerous") else f"{value - bare:+12.2f}"
        print(f"{name:34} {value:9.2f} {extra}")
    outside = us["gate, outside the prefixes"] - bare
    cookie_cost = us["gate, valid cookie"] - bare
    first_cost = us["gate, valid cookie, first sight"] - bare
    page_calls = {k: sandbox.calls[k] - calls_before.get(k, 0) for k in sandbox.calls}
    print()
    print(f"outside the prefixes: +{outside:.2f} µs over the bare app (target: within 1 µs)")
    print(
        f"valid cookie: +{cookie_cost:.2f} µs = {cookie_cost / loads:.2f} x one loads "
        f"of {loads:.2f} µs (target: at most 1.5 x)"
    )
    print(f"valid cookie, first sight: +{first_cost:.2f} µs = {first_cost / loads:.2f} x one loads")
    print(f"AlloConv calls during the timed rounds: {sum(page_calls.values())} (target: 0)")
    page = us["gate, the gate page (402)"]
    browser_page = us["gate, the gate page, browser (402)"]
    print(
        f"the gate page: {page:.2f} µs = {page / loads:.2f} x one loads; with a browser's "
        f"headers {browser_page:.2f} µs = {browser_page / loads:.2f} x (target: at most 15 µs "
        f"on a fast machine, about 2 x one loads)"
    )
    for size in (8, 64):
        hostile = us[f"gate, {size} KB of forged cookies (402)"]
        print(
            f"{size} KB of fresh forged cookies: {hostile:.0f} µs = {hostile / loads:.1f} x one "
            f"loads, {hostile / page:.0f} x the gate page (at most 16 signature checks a request)"
        )


if __name__ == "__main__":
    main()
