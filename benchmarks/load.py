"""The gate under a real server: throughput and latency, and a hanging AlloConv.

    make load        (or: python benchmarks/load.py [--seconds S] [--pairs N] [--uncapped])

The demo content app is served by waitress on loopback, bare and behind the gate, each in
its own process (8 threads each); the AlloConv sandbox runs in a thread of this process,
which drives the servers with a fixed number of keep-alive clients. A small HTTP/1.1
client on raw sockets keeps the clients' own cost well below the server's, so that the
server is what is measured. Where the machine has two CPUs or more, the servers run on one
CPU and the clients on the others, as a load generator on another machine would: sharing
CPUs, client and server threads preempt each other, and the figures then measure the
scheduler more than the server. Bare and gated are timed in short interleaved rounds (bare
first in one round, gated first in the next), and the ratio is the median of the rounds',
so that a noisy moment on a shared machine hits both alike and counts once. The rounds are
shared among several pairs of freshly started servers: one process runs a few percent
faster or slower than another for its whole life, and with a single pair that luck would
be the result (outside the prefixes, where the gate costs a fraction of a µs, one run gave
per-pair ratios from 0.92 to 1.06). The server's own CPU time per request is printed too
(from /proc, where there is one).

The demo app is cheap (a few µs): next to it, the bare figures are mostly waitress's and
WebOb's own cost, so the ratio is the gate's cost against the lightest site there can be.

Then the sandbox is made to hang on api-micropaiement and 50 code submissions are fired at
once at a gated server (``rate_limit = off``, each from its own loopback address), and the
latency of the rest of the site is measured while they hang, next to the same
measurement with no hang. If the gate has ``max_pending`` (detected by trying it), the
submissions past it should get 503 at once. Before the hang, bursts of 8 submissions of
good codes (as many as the server's threads, each from its own address) are fired at
once while AlloConv answers, at once and in 100 ms: every one should be verified.

The junk storms are code submissions POSTed from one address (every client is
127.0.0.1) to the gated server: a malformed code (400) and made-up codes past the
rate limit (429, after the window's first 5 get 402 from AlloConv). They have no bare
twin: they and the gate page are compared with the bare app's page in the same round,
and the storms with the gate page.

Targets (from issue 5): a valid cookie keeps at least 95% of the bare throughput; no error
responses; while 50 submissions hang, the site answers with its usual latency. From
issue 10: a junk storm keeps at least half of the gate page's throughput.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import logging
import math
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import waitress

from alloconv_gate import ConfigError, Gate
from alloconv_gate.demo import DemoSite
from alloconv_gate.sandbox import Sandbox

HOST = "127.0.0.1"
SERVER_THREADS = 8
SANDBOX_THREADS = 64  # hanging requests hold a sandbox thread each until released
SECRET = "a-benchmark-secret-that-is-long-enough-0123"
FREE = "/free/how-it-works"
PREMIUM = "/premium/alpine-huts"
OTHER_COOKIES = "_ga=GA1.1.123456789.1700000000; lang=fr"
MALFORMED = "abc"  # refused locally: too short
MADE_UP = "ZZZZ9999"  # well formed: the window's first 5 reach AlloConv, the rest get 429
BARE_PAGE = "valid cookie"  # the case whose bare server's rate the others without a twin face
BURST = 50
HEALTHY_BURST = 8  # concurrent submissions of good codes, as many as the server's threads
HEALTHY_ROUNDS = 10
# seconds: an answer to a submission this fast did not wait for AlloConv's timeout (a
# refusal may wait up to 1 s, the slots' slow threshold, at the start of a hang)
AT_ONCE = 2.0
SETTLE = 0.5  # seconds between firing the burst and measuring the site
STARTUP_TIMEOUT = 30.0
MAX_REQUESTS_PER_CLIENT = 1_000_000
REQUEST_TIMEOUT = 10.0


# -- the servers ------------------------------------------------------------------------


def cpu_split():
    """(the servers' CPUs, the clients' CPUs): apart where there are two or more, else None."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


def pin(cpus):
    """Run this process (and the threads it starts) on ``cpus``, where that is possible."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def same_page_as_gated(app):
    """The bare app as the gated one runs it: the demo's premium pages print until when
    access lasts when the gate says so, and that work is the app's, not the gate's."""

    def bare(environ, start_response):
        environ["alloconv_gate.access_until"] = 2_000_000_000
        return app(environ, start_response)

    return bare


def serve(conn, gate_options, log_path, cpus=None):
    """Child process: the demo app, behind a gate unless ``gate_options`` is None.

    Sends the port back through ``conn``, then serves until the parent closes its end of
    the pipe (or dies): the process never outlives the benchmark.
    """
    pin(cpus)
    logging.basicConfig(
        filename=log_path, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s"
    )
    # "Task queue depth is N" on nearly every request once the clients outnumber the
    # threads: writing it would cost the server more than the gate does.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    try:
        app = (
            same_page_as_gated(DemoSite())
            if gate_options is None
            else Gate(DemoSite(), **gate_options)
        )
        server = waitress.create_server(app, host=HOST, port=0, threads=SERVER_THREADS)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("port", server.effective_port))

    def exit_with_parent():
        with contextlib.suppress(EOFError, OSError):
            conn.recv()
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    server.run()


@contextlib.contextmanager
def served(name, gate_options, log_path, cpus=None):
    """A server process for the time of the ``with``; yields its port and process id."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=serve, args=(theirs, gate_options, log_path, cpus), name=name, daemon=True
    )
    process.start()
    theirs.close()
    try:
        if not ours.poll(STARTUP_TIMEOUT):
            raise RuntimeError(f"{name}: no port after {STARTUP_TIMEOUT:.0f} s")
        kind, value = ours.recv()
        if kind != "port":
            raise RuntimeError(f"{name}: {value}")
        yield value, process.pid
    finally:
        ours.close()  # the child sees end-of-file and exits
        process.join(5)
        if process.is_alive():
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)


@contextlib.contextmanager
def sandbox_served():
    """The AlloConv sandbox in a thread of this process, so that codes and faults are at hand."""
    sandbox = Sandbox()
    server = waitress.create_server(sandbox, host=HOST, port=0, threads=SANDBOX_THREADS)
    threading.Thread(target=server.run, name="sandbox", daemon=True).start()
    try:
        yield sandbox, f"http://{HOST}:{server.effective_port}"
    finally:
        sandbox.clear_fault()
        server.close()


# -- the client ---------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests.

    Reads only what it needs (the status, ``Content-Length``, ``Connection: close``), so
    that thousands of requests a second cost the driving process little.
    """

    def __init__(self, port, timeout, source=None):
        self.sock = socket.create_connection((HOST, port), timeout, source_address=source)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def exchange(self, raw):
        """Send ``raw``, read the whole answer; its status, and whether the server closes."""
        self.sock.sendall(raw)
        buffer = self.buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            buffer += self._recv()
        head = buffer[:end].split(b"\r\n")
        status = int(head[0][9:12])
        length, close = None, False
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if length is None:
            raise ConnectionError("an answer without Content-Length")
        total = end + 4 + length
        while len(buffer) < total:
            buffer += self._recv()
        self.buffer = buffer[total:]
        return status, close

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        return data

    def close(self):
        self.sock.close()


def raw_post(port, path, code):
    """A form posting ``code``, as the gate page's form does."""
    body = urlencode({"code": code}).encode("ascii")
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Accept: text/html",
        "Content-Type: application/x-www-form-urlencoded",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def raw_get(port, path, cookie=None):
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}", "Accept: text/html"]
    if cookie:
        lines.append(f"Cookie: {OTHER_COOKIES}; {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@dataclass
class Result:
    """What the clients of one case saw: answers, their latencies, the wall time."""

    expected: int
    also: frozenset = frozenset()  # other statuses that are no error (402 before a 429...)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0  # answers with another status than expected
    failures: int = 0  # no answer: timeout, reset, refused
    statuses: collections.Counter = field(default_factory=collections.Counter)
    seconds: float = 0.0

    def add(self, other):
        self.latencies += other.latencies
        self.errors += other.errors
        self.failures += other.failures
        self.statuses.update(other.statuses)
        self.seconds += other.seconds

    @property
    def rate(self):
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p):
        """Nearest-rank percentile, in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


def client_loop(port, raw, result, start, timeout):
    """Back-to-back requests on one connection until the deadline; reconnects on failure.

    ``start`` is set, with the deadline in ``start.deadline``, once every client is ready.
    """
    latencies, statuses = result.latencies, result.statuses
    connection = None
    start.wait()
    deadline = start.deadline
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.perf_counter() >= deadline:
            break
        try:
            if connection is None:
                connection = Connection(port, timeout)
            started = time.perf_counter()
            status, close = connection.exchange(raw)
            latencies.append(time.perf_counter() - started)
        except (OSError, ValueError):
            result.failures += 1
            if connection is not None:
                connection.close()
            connection = None
            time.sleep(0.01)
            continue
        statuses[status] += 1
        if status != result.expected and status not in result.also:
            result.errors += 1
        if close:
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


def run_load(jobs, seconds, timeout=REQUEST_TIMEOUT):
    """Run every job at the same time for ``seconds``; a :class:`Result` per job name.

    ``jobs`` maps a name to (port, prepared request, expected status, number of clients),
    and optionally the other statuses that are no error.
    """
    start = threading.Event()
    per_client = []
    threads = []
    for name, (port, raw, expected, clients, *also) in jobs.items():
        for _ in range(clients):
            result = Result(expected, frozenset(*also))
            per_client.append((name, result))
            threads.append(
                threading.Thread(
                    target=client_loop, args=(port, raw, result, start, timeout), daemon=True
                )
            )
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    start.deadline = started + seconds
    start.set()
    for thread in threads:
        thread.join(max(0.0, started + seconds + timeout + 5 - time.perf_counter()))
    elapsed = time.perf_counter() - started
    results = {name: Result(jobs[name][2]) for name in jobs}
    for name, result in per_client:
        results[name].add(result)
    for result in results.values():
        result.seconds = elapsed
    return results


def get_cookie(port, code):
    """Post ``code`` to the gate once; the access cookie it sets, as ``name=value``."""
    connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request(
            "POST",
            PREMIUM,
            urlencode({"code": code}),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    if response.status != 303:
        raise RuntimeError(f"posting a sandbox code: HTTP {response.status}, expected 303")
    cookie = SimpleCookie()
    for header in response.headers.get_all("Set-Cookie") or ():
        cookie.load(header)
    morsel = cookie["alloconv_access"]
    return f"{morsel.key}={morsel.value}"


def check(port, path, cookie, expected):
    connection = Connection(port, REQUEST_TIMEOUT)
    try:
        status, _ = connection.exchange(raw_get(port, path, cookie))
    finally:
        connection.close()
    if status != expected:
        raise RuntimeError(f"GET {path} on port {port}: HTTP {status}, expected {expected}")


# -- throughput ---------------------------------------------------------------------------


def cpu_seconds(pid):
    """CPU time (user + system) used so far by process ``pid``; None where /proc is not."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(args, server_pairs):
    """The three cases, bare and gated interleaved, on fresh server pairs; prints the table.

    ``server_pairs(n)`` starts the ``n``-th pair of servers, a context manager that
    yields ((port, pid) of the bare server, (port, pid) of the gated one, a cookie of the
    gated one). Each pair gets an equal share of the rounds: a process is faster or slower
    by a few percent for the whole of its life (where its memory and hash tables fell, as
    pyperf's docs say), and several pairs average that out where more rounds with one pair
    would not. Besides what the clients see, the server's own CPU time per request is read
    from /proc.
    """
    # case -> (path, with the cookie, expected status, code POSTed or None for a GET)
    cases = {
        "outside the prefixes": (FREE, False, 200, None),
        "valid cookie": (PREMIUM, True, 200, None),
        "gate page, no cookie": (PREMIUM, False, 402, None),
        "junk: malformed code": (PREMIUM, False, 400, MALFORMED),
        "junk: rate-limited": (PREMIUM, False, 429, MADE_UP),
    }
    # The bare app has no gate page and takes no code: these face the bare page.
    untwinned = [case for case, (_, _, expected, _) in cases.items() if expected >= 400]
    storms = [case for case in untwinned if cases[case][3] is not None]
    keys = [
        (case, server)
        for case in cases
        for server in ("bare", "gated")
        if not (case in untwinned and server == "bare")
    ]

    def result_for(case):
        """Made-up codes get 402 from AlloConv for the window's first 5, and 503 while one
        of them is with AlloConv (one verification per client at a time), then 429."""
        expected = cases[case][2]
        return Result(expected, frozenset({402, 503}) if expected == 429 else frozenset())

    totals = {key: result_for(key[0]) for key in keys}
    cpu = collections.Counter()
    ratios = collections.defaultdict(list)
    per_pair = collections.defaultdict(list)
    vs_page = collections.defaultdict(list)  # a storm's rate / the gate page's, per round
    slice_seconds = args.seconds / args.rounds
    rounds_per_pair = [len(range(n, args.rounds, args.pairs)) for n in range(args.pairs)]
    for pair, rounds in enumerate(rounds_per_pair):
        with server_pairs(pair) as (bare, gated, cookie):
            # (case, server) -> (port, pid, request, expected)
            runs = {}
            for case, server in keys:
                path, with_cookie, expected, code = cases[case]
                port, pid = bare if server == "bare" else gated
                if code is None:
                    raw = raw_get(port, path, cookie if with_cookie else None)
                else:
                    raw = raw_post(port, path, code)
                runs[case, server] = (port, pid, raw, expected)
            for port, _, raw, expected in runs.values():  # warm up: connections, caches
                run_load({"warm-up": (port, raw, expected, args.clients)}, 0.3)
            pair_totals = {key: result_for(key[0]) for key in runs}
            for round_number in range(rounds):
                order = ("bare", "gated") if round_number % 2 == 0 else ("gated", "bare")
                in_round = {}
                for case in cases:
                    rates = {}
                    for server in order:
                        if (case, server) not in runs:
                            continue
                        port, pid, raw, expected = runs[case, server]
                        cpu_before = cpu_seconds(pid)
                        also = result_for(case).also
                        job = {"case": (port, raw, expected, args.clients, also)}
                        result = run_load(job, slice_seconds)["case"]
                        cpu_after = cpu_seconds(pid)
                        if cpu_before is not None and cpu_after is not None:
                            cpu[case, server] += cpu_after - cpu_before
                        pair_totals[case, server].add(result)
                        rates[server] = result.rate
                        in_round[case, server] = result.rate
                    if len(rates) == 2 and rates["bare"]:
                        ratios[case].append(rates["gated"] / rates["bare"])
                bare_page = in_round[BARE_PAGE, "bare"]
                for case in untwinned:
                    if bare_page:
                        ratios[case].append(in_round[case, "gated"] / bare_page)
                page = in_round["gate page, no cookie", "gated"]
                for case in storms:
                    if page:
                        vs_page[case].append(in_round[case, "gated"] / page)
            for key, result in pair_totals.items():
                totals[key].add(result)
            for case in cases:
                twin = case if (case, "bare") in pair_totals else BARE_PAGE
                bare_rate = pair_totals[twin, "bare"].rate
                per_pair[case].append(pair_totals[case, "gated"].rate / bare_rate)

    print(
        f"Under load: {args.clients} keep-alive clients in this process, waitress "
        f"{SERVER_THREADS} threads in each server process, {args.seconds:g} s per case "
        f"in {args.rounds} interleaved rounds, on {args.pairs} fresh pairs of servers"
    )
    print(f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load()})")
    if args.server_cpus is not None:
        print(f"servers on CPU {cpus(args.server_cpus)}, clients on CPU {cpus(args.client_cpus)}")
    with contextlib.suppress(OSError):
        if os.getloadavg()[0] > (os.cpu_count() or 1):
            print("The machine is busy (load average above its CPUs): expect noisy rounds.")
    print()
    print(
        f"{'case':22} {'server':10} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"
        f" {'errors':>7} {'server CPU µs/req':>18}"
    )
    for case in cases:
        for server in ("bare", "gated"):
            if (case, server) not in totals:
                continue
            result = totals[case, server]
            label = case if server == "bare" or case in untwinned else ""
            errors = result.errors + result.failures
            per_request = cpu[case, server] / len(result.latencies) * 1e6 if cpu else None
            print(
                f"{label:22} {server:10} {result.rate:8.0f} {ms(result.percentile(50)):>8}"
                f" {ms(result.percentile(90)):>8} {ms(result.percentile(99)):>8} {errors:7d}"
                f" {'-' if per_request is None else f'{per_request:.0f}':>18}"
            )
        if case in ratios:
            twin = BARE_PAGE if case in untwinned else case
            pooled = totals[case, "gated"].rate / totals[twin, "bare"].rate
            spread = sorted(ratios[case])
            pairs = " ".join(f"{ratio:.3f}" for ratio in per_pair[case])
            name = "/bare page" if case in untwinned else "gated/bare"
            print(
                f"{'':22} {name:10} {statistics.median(spread):8.3f}   (median of the"
                f" rounds; {spread[0]:.3f} to {spread[-1]:.3f}; pooled {pooled:.3f};"
                f" per pair {pairs})"
            )
        if case in vs_page:
            spread = sorted(vs_page[case])
            pooled = totals[case, "gated"].rate / totals["gate page, no cookie", "gated"].rate
            print(
                f"{'':22} {'/gate page':10} {statistics.median(spread):8.3f}   (median of the"
                f" rounds; {spread[0]:.3f} to {spread[-1]:.3f}; pooled {pooled:.3f})"
            )
    print()
    kept = statistics.median(ratios["valid cookie"])
    errors = sum(r.errors + r.failures for r in totals.values())
    print(f"valid cookie keeps {kept:.1%} of the bare throughput (target: at least 95%)")
    for case in storms:
        print(
            f"{case} keeps {statistics.median(vs_page[case]):.1%} of the gate page's "
            "throughput (target: at least 50%)"
        )
    print(f"error responses: {errors} (target: 0)")
    for (case, server), result in totals.items():
        if result.errors or result.failures:
            print(
                f"  {case}, {server}: statuses {dict(result.statuses)}, "
                f"{result.failures} without an answer"
            )
    return kept, errors


def ms(value):
    return "-" if math.isnan(value) else f"{value:.2f}"


def cpus(numbers):
    return ", ".join(str(number) for number in sorted(numbers))


def load():
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# -- a hanging AlloConv ---------------------------------------------------------------


class Burst:
    """``BURST`` code submissions fired at once, each on its own connection and address."""

    def __init__(self, port, codes):
        self.port = port
        self.codes = codes
        self.answers = {}  # index -> (seconds after firing, status, Retry-After)
        self.lock = threading.Lock()
        self.fired = 0.0
        self.addresses = 0
        self.threads = []

    def fire(self):
        barrier = threading.Barrier(len(self.codes) + 1)
        self.threads = [
            threading.Thread(target=self._submit, args=(i, code, barrier), daemon=True)
            for i, code in enumerate(self.codes)
        ]
        for thread in self.threads:
            thread.start()
        barrier.wait(STARTUP_TIMEOUT)
        self.fired = time.perf_counter()

    def _submit(self, index, code, barrier):
        # 127.0.2.1, 127.0.3.1, ...: Linux answers all of 127/8 on loopback; each its own
        # /24, as separate visitors' networks are (the gate bounds what one network takes).
        source = (f"127.0.{2 + index}.1", 0)
        connection = http.client.HTTPConnection(HOST, self.port, timeout=60, source_address=source)
        try:
            connection.connect()
            with self.lock:
                self.addresses += 1
        except OSError:
            connection = http.client.HTTPConnection(HOST, self.port, timeout=60)
        barrier.wait(STARTUP_TIMEOUT)
        try:
            connection.request(
                "POST",
                PREMIUM,
                urlencode({"code": code}),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
            response = connection.getresponse()
            response.read()
            answer = (response.status, response.getheader("Retry-After"))
        except OSError as exc:
            answer = (type(exc).__name__, None)
        finally:
            connection.close()
        with self.lock:
            self.answers[index] = (time.perf_counter() - self.fired, *answer)

    def snapshot(self):
        """(answered at once by status, answered later by status, still waiting)."""
        with self.lock:
            answers = list(self.answers.values())
        at_once = collections.Counter(s for t, s, _ in answers if t <= AT_ONCE)
        later = collections.Counter(s for t, s, _ in answers if t > AT_ONCE)
        return at_once, later, len(self.codes) - len(answers)

    def join(self, timeout):
        deadline = time.perf_counter() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.perf_counter()))


def before_after(before, during, digits=2):
    return " -> ".join("-" if math.isnan(x) else f"{x:.{digits}f}" for x in (before, during))


def counts(counter):
    return ", ".join(f"{n} x {status}" for status, n in sorted(counter.items(), key=str)) or "none"


def hang(args, sandbox, gate_options, log_path, label):
    """The burst of submissions against a hanging AlloConv; prints what the site did."""
    with served(f"gate ({label})", gate_options, log_path, args.server_cpus) as (port, _):
        cookie = get_cookie(port, sandbox.issue_code("fra1"))
        check(port, PREMIUM, cookie, 200)
        jobs = {
            "outside the prefixes": (port, raw_get(port, FREE), 200, args.probe_clients),
            "valid cookie": (port, raw_get(port, PREMIUM, cookie), 200, args.probe_clients),
        }
        run_load(jobs, 0.3)  # warm up
        quiet = run_load(jobs, args.probe_seconds, args.probe_timeout)

        burst = Burst(port, [sandbox.issue_code("fra1") for _ in range(BURST)])
        sandbox.set_fault("hang", script="api-micropaiement")
        try:
            burst.fire()
            time.sleep(SETTLE)
            first = burst.snapshot()
            hanging = run_load(jobs, args.probe_seconds, args.probe_timeout)
            window = time.perf_counter() - burst.fired
            second = burst.snapshot()
        finally:
            sandbox.clear_fault()
        burst.join(60)
        final = burst.snapshot()
        retry_after = collections.Counter(
            f"Retry-After: {ra}" if ra else "no Retry-After"
            for _, status, ra in burst.answers.values()
            if status == 503
        )
        refused = sorted(
            t for t, status, _ in burst.answers.values() if status == 503 and t <= AT_ONCE
        )

    print(f"-- {label}")
    print(
        f"{BURST} submissions fired at once from {burst.addresses or 1} client address(es); "
        f"after {SETTLE:g} s: {counts(first[0])} answered at once (within {AT_ONCE:g} s), "
        f"{first[2]} still waiting"
    )
    print(
        f"after {window:.1f} s (end of the measurement): {counts(second[0] + second[1])} "
        f"answered, {second[2]} still waiting"
    )
    print(
        f"after the release: {counts(final[0])} at once, {counts(final[1])} later, "
        f"{final[2]} never answered; the 503s: {counts(retry_after)}"
    )
    if refused:
        print(
            f"the 503s at once came {refused[0] * 1000:.0f} to {refused[-1] * 1000:.0f} ms "
            f"after firing (median {statistics.median(refused) * 1000:.0f} ms)"
        )
    print(
        f"{args.probe_clients} clients per path for {args.probe_seconds:g} s, "
        f"no hang -> while {BURST} submissions hang:"
    )
    print(
        f"{'path':22} {'p50 ms':>16} {'p90 ms':>16} {'p99 ms':>16} {'req/s':>14}"
        f" {'no answer':>10} {'errors':>8}"
    )
    for name in jobs:
        before, during = quiet[name], hanging[name]
        print(
            f"{name:22} {before_after(before.percentile(50), during.percentile(50)):>16}"
            f" {before_after(before.percentile(90), during.percentile(90)):>16}"
            f" {before_after(before.percentile(99), during.percentile(99)):>16}"
            f" {before_after(before.rate, during.rate, 0):>14}"
            f" {before_after(before.failures, during.failures, 0):>10}"
            f" {before_after(before.errors, during.errors, 0):>8}"
        )
    print()
    return hanging


# -- main -------------------------------------------------------------------------------


def log_summary(paths):
    """What the server processes logged (WARNING and up), counted by level and logger."""
    lines = collections.Counter()
    for name, path in paths.items():
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as log:
            for line in log:
                level, _, rest = line.partition(" ")
                if level in ("WARNING", "ERROR", "CRITICAL"):
                    lines[name, level, rest.partition(" ")[0]] += 1
    if not lines:
        return "nothing at WARNING or above"
    return "; ".join(f"{name}: {n} {level} {logger}" for (name, level, logger), n in lines.items())


def show_logs(paths, lines=40):
    """On failure, the end of each server's log on stderr, before the folder goes."""
    for name, path in paths.items():
        tail = []
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as log:
            tail = log.readlines()[-lines:]
        if tail:
            print(f"-- the end of the {name} server's log:\n{''.join(tail)}", file=sys.stderr)


def healthy_bursts(sandbox, gate_options, log_path, server_cpus):
    """Bursts of good codes while AlloConv answers: how many were verified (303)."""
    with served("gate (healthy bursts)", gate_options, log_path, server_cpus) as (port, _):
        for delay in (0.0, 0.1):
            statuses, slowest = collections.Counter(), 0.0
            if delay:
                sandbox.set_fault("slow", script="api-micropaiement", delay=delay)
            try:
                for _ in range(HEALTHY_ROUNDS):
                    codes = [sandbox.issue_code("fra1") for _ in range(HEALTHY_BURST)]
                    burst = Burst(port, codes)
                    burst.fire()
                    burst.join(60)
                    for seconds, status, _ in burst.answers.values():
                        statuses[status] += 1
                        slowest = max(slowest, seconds)
            finally:
                sandbox.clear_fault()
            fired = HEALTHY_ROUNDS * HEALTHY_BURST
            print(
                f"AlloConv answering in {delay * 1000:.0f} ms: {HEALTHY_ROUNDS} bursts of "
                f"{HEALTHY_BURST} good codes at once: {statuses[303]} of {fired} verified "
                f"({statuses[303] / fired:.0%}; {counts(statuses)}), slowest answer "
                f"{slowest * 1000:.0f} ms"
            )


def max_pending_default(options):
    """The gate's default ``max_pending``, or None when this gate has no such option."""
    try:
        Gate(DemoSite(), **options, max_pending=1)
    except ConfigError as exc:
        if exc.option == "max_pending":
            return None
        raise
    return Gate(DemoSite(), **options).config.max_pending


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per case (default 8)")
    parser.add_argument("--rounds", type=int, default=32, help="interleaved rounds (default 32)")
    parser.add_argument(
        "--pairs", type=int, default=8, help="fresh pairs of servers the rounds run on (8)"
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument(
        "--probe-clients", type=int, default=2, help="clients per path during the hang (2)"
    )
    parser.add_argument(
        "--probe-seconds",
        type=float,
        default=5.0,
        help="how long the site is measured while the submissions hang (default 5)",
    )
    parser.add_argument(
        "--probe-timeout",
        type=float,
        default=REQUEST_TIMEOUT,
        help=f"seconds a request may wait during the hang ({REQUEST_TIMEOUT:g})",
    )
    parser.add_argument(
        "--uncapped",
        action="store_true",
        help="also run the hang with max_pending above the server's threads, for contrast",
    )
    args = parser.parse_args()
    if not 0 < args.seconds <= 120 or not 1 <= args.rounds <= 100:
        parser.error("--seconds must be in (0, 120] and --rounds in [1, 100]")
    if not 1 <= args.clients <= 256 or not 1 <= args.probe_clients <= 64:
        parser.error("--clients must be in [1, 256] and --probe-clients in [1, 64]")
    if not 0 < args.probe_timeout <= 60 or not 0 < args.probe_seconds <= 60:
        parser.error("--probe-timeout and --probe-seconds must be in (0, 60]")
    if not 1 <= args.pairs <= args.rounds:
        parser.error("--pairs must be from 1 to --rounds")

    split = cpu_split()
    args.server_cpus, args.client_cpus = split or (None, None)
    pin(args.client_cpus)  # the sandbox's threads too: they only matter once AlloConv hangs
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="alloconv-load-"))
        sandbox, api_base = stack.enter_context(sandbox_served())
        options = {
            "api_key": "sandbox-key",
            "secret": SECRET,
            "palier": "fra1",
            "prefixes": "/premium",
            "api_base": api_base,
        }

        def store(name):
            return f"sqlite:///{os.path.join(folder, name)}.sqlite3"

        logs = {name: os.path.join(folder, f"{name}.log") for name in ("bare", "gated")}

        def show_logs_on_failure(kind, exc, traceback):
            if exc is not None:
                show_logs(logs)
            return False  # the exception goes on

        stack.push(show_logs_on_failure)  # runs once the servers have stopped

        @contextlib.contextmanager
        def server_pairs(number):
            gated_options = {**options, "store": store(f"gated-{number}")}
            with (
                served(f"bare {number}", None, logs["bare"], args.server_cpus) as bare,
                served(f"gated {number}", gated_options, logs["gated"], args.server_cpus) as gated,
            ):
                cookie = get_cookie(gated[0], sandbox.issue_code("fra1"))
                check(gated[0], PREMIUM, cookie, 200)
                check(gated[0], PREMIUM, None, 402)
                check(bare[0], PREMIUM, None, 200)
                yield bare, gated, cookie

        throughput(args, server_pairs)
        print()

        hang_options = {**options, "store": store("hang"), "rate_limit": "off"}
        default = max_pending_default(hang_options)
        timeout = Gate(DemoSite(), **hang_options).config.timeout
        print(
            f"A hanging AlloConv: api-micropaiement held until released; gate timeout "
            f"{timeout:g} s, rate_limit off, waitress {SERVER_THREADS} threads"
        )
        scenarios = [("hang", hang_options, f"max_pending {default} (its default)")]
        if default is None:
            scenarios = [("hang", hang_options, "this gate has no max_pending")]
        elif args.uncapped:
            uncapped = {**hang_options, "store": store("uncapped"), "max_pending": 1000}
            scenarios.append(("uncapped", uncapped, "max_pending 1000 (no cap)"))
        healthy = {**hang_options, "store": store("healthy")}
        logs["healthy"] = os.path.join(folder, "healthy.log")
        healthy_bursts(sandbox, healthy, logs["healthy"], args.server_cpus)
        print()
        for name, gate_options, label in scenarios:
            logs[name] = os.path.join(folder, f"{name}.log")
            hang(args, sandbox, gate_options, logs[name], label)
        print(f"server logs: {log_summary(logs)}")


if __name__ == "__main__":
    main()
