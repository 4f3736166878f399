"""Bad input: Hypothesis drives the whole gate with what a broken or hostile client sends.

The gate is called as a WSGI server calls it, with a hand-built PEP 3333 environ, so that
every byte is chosen here: PATH_INFO is the latin-1 text of arbitrary bytes, QUERY_STRING
is raw, headers are ``HTTP_*`` keys. AlloConv is the sandbox over real HTTP on loopback,
the store is in memory, rate limits are off (every code that looks like one reaches the
sandbox), the clock stands still, and the crawler check asks a fake DNS. The gate offers
two paliers, picks its language from Accept-Language, answers JSON to those who ask, and
lets verified search engine crawlers read; a second one takes two codes for one access.

Each property is one test, and every example is checked against all of them:

1. under the prefix, the wrapped app is called only with a valid cookie (or for a
   verified crawler's GET);
2. the gate never raises and never answers 500: a valid status line, headers of str;
3. nothing the visitor sent comes back raw, in the body or in any header;
4. outside the prefix, the app gets the very environ and its own iterable comes back;
5. with a valid cookie, the app is reached and its answer is made private.

Every example is tagged with the classes of input it holds and the answer it got
(``hypothesis.event``): ``pytest tests/test_fuzz.py --hypothesis-show-statistics`` shows
how many ran of each.
"""

from __future__ import annotations

import io
import json
import os
import re
import string
import uuid
from dataclasses import dataclass, replace
from typing import ClassVar
from urllib.parse import quote, urlencode

import pytest
from clock import FakeClock
from hypothesis import event, given, settings
from hypothesis import strategies as st
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from alloconv_gate import Gate
from alloconv_gate.middleware import MAX_FORM_BYTES
from alloconv_gate.sandbox import Sandbox
from alloconv_gate.tokens import GRANT_PARAM, GrantLinks

KEY = "sandbox-key"
SECRET = "correct-horse-battery-staple-0123456789"
OTHER_SECRET = "another-secret-of-enough-length-0123456789"
COOKIE = "alloconv_access"
FORM = "application/x-www-form-urlencoded"
# What the gate salts its tokens with: its name, its prefixes and its mount (tokens.py).
SALT = "alloconv_gate.access:default:/premium:"
PAID = b"the paid article"

# What a visitor slips into any field they control; no piece of it may come back raw.
MARKER = "<x-fuzz q=\"1\" r='2'>"
RAW_PIECES = ("<x-fuzz", 'q="1"', "'2'>")

# The answers the gate may give (200 is the app's, a support link's page, or access
# granted in JSON). With the sandbox up and rate limits off, never a 5xx.
GATE_STATUSES = {200, 303, 400, 402, 403, 413}
STATUS_LINE = re.compile(r"[1-5][0-9]{2} [\x20-\x7e]+")
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
SURROGATE_HEADERS = {
    "surrogate-control",
    "cdn-cache-control",
    "cloudflare-cdn-cache-control",
    "edge-control",
    "x-accel-expires",
}

# 300 examples per property keeps the file well under a minute; set ALLOCONV_FUZZ_EXAMPLES
# for a longer hunt.
FUZZ = settings(max_examples=int(os.environ.get("ALLOCONV_FUZZ_EXAMPLES", "300")), deadline=None)


# The site: one gate for the module, its app, and tokens good and bad.


class MeteredInput:
    """A ``wsgi.input`` over ``data`` that counts the bytes read from it."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)
        self.read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = self._data.read(size)
        self.read_bytes += len(chunk)
        return chunk


class EndlessInput:
    """A ``wsgi.input`` that never ends (a chunked upload that goes on), counting reads."""

    def __init__(self, head: bytes = b"code="):
        self._head = head
        self.read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise AssertionError("the whole of an endless body was asked for")
        chunk = (self._head[self.read_bytes :] + b"A" * size)[:size]
        self.read_bytes += len(chunk)
        return chunk


class AppBody:
    """The app's iterable, so that tests can tell it from any other."""

    def __init__(self):
        self.closed = False

    def __iter__(self):
        return iter([PAID[:8], PAID[8:]])

    def close(self):
        self.closed = True


class RecordingApp:
    """The wrapped app: records the environ it got, and reads the body it was sent."""

    def __init__(self):
        self.headers: list[tuple[str, str]] = []
        self.calls: list[dict] = []

    def __call__(self, environ, start_response):
        headers = [("Content-Type", "text/plain"), *self.headers]
        body = AppBody()
        self.calls.append(
            {"environ": environ, "body": environ["wsgi.input"].read(), "answer": (headers, body)}
        )
        start_response("200 OK", headers)
        return body


@dataclass(frozen=True)
class Tokens:
    valid: str  # this gate's, bought through it
    other_prefix: str  # a gate with the same secret protecting /other
    other_secret: str  # a gate protecting /premium with another secret
    forged: str  # this gate's salt and payload, signed with another key
    progress: str = ""  # codes = 2: the progress cookie once one code has passed


@dataclass
class Site:
    gate: Gate
    app: RecordingApp
    sandbox: Sandbox
    clock: FakeClock
    tokens: Tokens

    def support_link(self) -> str:
        """A fresh one-time support link's token, as ``alloconv-gate grant`` makes them."""
        links = GrantLinks([SECRET], "default:/premium", self.clock)
        return links.issue(uuid.uuid4().hex, 3600)


class FakeDNS:
    """The crawler check's DNS: a real Googlebot and Bingbot, and addresses that only
    claim to be one (the PTR record their owner wrote, a look-alike name, a cloud VM)."""

    PTR: ClassVar = {
        "66.249.66.1": "crawl-66-249-66-1.googlebot.com",
        "157.55.39.1": "msnbot-157-55-39-1.search.msn.com",
        "203.0.113.7": "crawl-66-249-66-1.googlebot.com",
        "203.0.113.8": "crawl-203-0-113-8.googlebot.com.evil.example",
        "203.0.113.9": "vm-203-0-113-9.bc.googleusercontent.com",
    }
    A: ClassVar = {
        "crawl-66-249-66-1.googlebot.com": ["66.249.66.1"],
        "msnbot-157-55-39-1.search.msn.com": ["157.55.39.1"],
        "crawl-203-0-113-8.googlebot.com.evil.example": ["203.0.113.8"],
        "vm-203-0-113-9.bc.googleusercontent.com": ["203.0.113.9"],
    }

    def reverse(self, address: str) -> str | None:
        if address == "203.0.113.66":
            raise OSError("the resolver timed out")
        return self.PTR.get(address)

    def forward(self, hostname: str) -> list[str]:
        return self.A.get(hostname, [])


# REMOTE_ADDR values that are the verified crawler of an engine.
VERIFIED_CRAWLERS = {
    "66.249.66.1": "google",
    " 66.249.66.1": "google",
    "::ffff:66.249.66.1": "google",
    "157.55.39.1": "bing",
}
BOTS = {"google": ("googlebot", "google-inspectiontool"), "bing": ("bingbot",)}
BOTS_UA = ("Googlebot/2.1", "Google-InspectionTool/1.0", "bingbot/2.0", "Googlebot-News")


def make_gate(app, clock, api_base, **options):
    settings = {
        "api_key": KEY,
        "secret": SECRET,
        "palier": "fra1 bel1",
        "language": "auto",
        "prefixes": "/premium",
        "api_base": api_base,
        "timeout": "2",
        "store": "memory",
        "rate_limit": "off",
        "crawlers": "google bing",
        "price_notice.bel1": "2,00 € par appel",
        **options,
    }
    return Gate(app, clock=clock, resolver=FakeDNS(), **settings)


def sign(secret: str, payload, clock: FakeClock, *, age: float = 0, salt: str = SALT) -> str:
    """A token as the gate makes them, signed with ``secret``, dated ``age`` seconds ago."""

    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock() - age)

    return URLSafeTimedSerializer(secret, salt=salt, signer=Signer).dumps(payload)


def buy(gate, sandbox, path: str, *, status: str = "303 See Other") -> str:
    """The cookie value a visitor gets by paying ``gate`` with a fresh sandbox code."""
    visit = form_post(Visit(path=path), f"code={sandbox.issue_code()}".encode())
    headers = {}

    def start_response(given, headerlist, exc_info=None):
        assert given == status, given
        headers.update(headerlist)

    gate(visit.environ(), start_response)
    return headers["Set-Cookie"].split(";")[0].split("=", 1)[1]


@pytest.fixture(scope="module")
def site(sandbox_server):
    """One gate for every example of the module (and the tokens it is fuzzed with)."""
    sandbox = sandbox_server.sandbox
    sandbox.clear_fault()
    clock = FakeClock()
    app = RecordingApp()
    gate = make_gate(app, clock, sandbox_server.url)
    other_prefix = make_gate(app, clock, sandbox_server.url, prefixes="/other")
    other_secret = make_gate(app, clock, sandbox_server.url, secret=OTHER_SECRET)
    tokens = Tokens(
        valid=buy(gate, sandbox, "/premium/x"),
        other_prefix=buy(other_prefix, sandbox, "/other/x"),
        other_secret=buy(other_secret, sandbox, "/premium/x"),
        forged=sign(OTHER_SECRET, int(clock()) + 3600, clock),
    )
    yield Site(gate, app, sandbox, clock, tokens)
    sandbox.clear_fault()


PROGRESS = f"{COOKIE}_set_default"


@pytest.fixture(scope="module")
def site_of_two(site, sandbox_server):
    """A gate that takes two codes for one access (``codes = 2``), same secret and scope."""
    app = RecordingApp()
    gate = make_gate(app, site.clock, sandbox_server.url, codes="2")
    progress = buy(gate, site.sandbox, "/premium/x", status="402 Payment Required")
    return Site(gate, app, site.sandbox, site.clock, replace(site.tokens, progress=progress))


# One request, as a server hands it to the app.


@dataclass(frozen=True)
class Visit:
    method: str = "GET"
    path: str = "/premium/x"
    query: str = ""
    script_name: str = ""
    scheme: str = "http"
    cookie: str | None = None
    content_type: str | None = None
    content_length: str | None = None
    chunked: bool = False  # wsgi.input_terminated: a body without CONTENT_LENGTH
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    remote_addr: str = "127.0.0.1"
    cookie_opens: bool = False  # the cookie holds a token the gate must accept
    kinds: tuple[str, ...] = ()  # the classes of input, for the statistics

    def environ(self) -> dict:
        environ = {
            "REQUEST_METHOD": self.method,
            "SCRIPT_NAME": self.script_name,
            "PATH_INFO": self.path,
            "QUERY_STRING": self.query,
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "443" if self.scheme == "https" else "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": self.remote_addr,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.scheme,
            "wsgi.input": MeteredInput(self.body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if self.chunked:
            environ["wsgi.input_terminated"] = True
        if self.content_type is not None:
            environ["CONTENT_TYPE"] = self.content_type
        if self.content_length is not None:
            environ["CONTENT_LENGTH"] = self.content_length
        if self.cookie is not None:
            environ["HTTP_COOKIE"] = self.cookie
        for name, value in self.headers:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        return environ

    def opens(self) -> bool:
        """Whether the gate must let this visit through to the app."""
        paid = self.cookie_opens and self.script_name == ""
        return not under_prefix(self.path) or paid or self.crawler() is not None

    def crawler(self) -> str | None:
        """The engine whose verified crawler reads: its address, User-Agent and method."""
        if self.method not in ("GET", "HEAD"):
            return None
        engine = VERIFIED_CRAWLERS.get(self.remote_addr)
        agent = dict(self.headers).get("User-Agent", "").lower()
        return engine if engine and any(bot in agent for bot in BOTS[engine]) else None


def under_prefix(path: str) -> bool:
    """Whether an app may take PATH_INFO ``path`` for one under /premium.

    The oracle the gate is held to, written apart from it: segments split on ``/``, empty
    and ``.`` ones dropped, and ``..`` either resolved (as a browser or a router does,
    never above the root) or kept (as an app that does not resolve it might route
    ``/premium/../x``); either way starting with ``premium`` is under the prefix.
    """
    kept = [segment for segment in path.split("/") if segment not in ("", ".")]
    resolved: list[str] = []
    for segment in kept:
        if segment != "..":
            resolved.append(segment)
        elif resolved:
            resolved.pop()
    return kept[:1] == ["premium"] or resolved[:1] == ["premium"]


# Strategies: the pieces of a visit.


def latin1(data: bytes) -> str:
    return data.decode("latin-1")


def as_wsgi(text: str) -> str:
    """Unicode as a server passes it: its UTF-8 bytes as latin-1 text."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def any_bytes(max_size: int) -> st.SearchStrategy[str]:
    return st.binary(max_size=max_size).map(latin1)


def unicode_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size).map(as_wsgi)


CONTROL_BYTES = st.binary(min_size=1, max_size=8).map(lambda b: latin1(bytes(c % 32 for c in b)))
TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"

STANDARD_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
JUNK_METHODS = st.one_of(
    st.sampled_from(["get", "post", "POST ", "", "TRACE", "CONNECT", "PROPFIND", "M-POST"]),
    st.text(alphabet=TCHAR, min_size=1, max_size=12),
    any_bytes(12),
)
# Half of the visits POST, the method whose body the gate reads.
METHODS = st.sampled_from(["POST", "standard", "junk", "POST"]).flatmap(
    lambda kind: (
        st.sampled_from(STANDARD_METHODS)
        if kind == "standard"
        else JUNK_METHODS
        if kind == "junk"
        else st.just(kind)
    )
)

LOOKALIKES = (
    "Premium",
    "PREMIUM",
    "premiumx",
    "premium-old",
    "premium;x",
    "premium;",
    "premium\\x",
    "premium%2F",
    "%70remium",
    "premium ",
    " premium",
    "premium\x00",
    "premium.",
    "premium..",
    "prem",
    "premium\t",
    as_wsgi("premiu\u0301m"),
)
DOT_SEGMENTS = (".", "..", "...", "%2e%2e", ".%2e", "..\\", "\\..", "..;", ";", ". ", ".. ")
SEGMENTS = st.one_of(
    st.just("premium"),
    st.sampled_from(LOOKALIKES),
    st.sampled_from(DOT_SEGMENTS),
    st.sampled_from(["free", "x", "article", "index.html", "a.b", "~user"]),
    any_bytes(12),
    unicode_text(8),
    st.just(MARKER),
)
SEPARATORS = st.sampled_from(["/", "/", "/", "/", "//", "\\", "/./", "/../", "/;/", "%2F"])
LONG_FILLERS = ("a", "/", "./", "../", "a/", "%", "\xff", as_wsgi("é"), "\\", ";")


# Ways into /premium that keep it the first segment, whatever follows.
UNDER_LEADS = ("/premium/", "//premium//", "/./premium/", "premium/", "/.//premium/")
# Spellings that are not the segment "premium", to move a path out of the prefix.
NOT_PREMIUM = ("Premium", "PREMIUM", "prem", "pre%6Dium", "PREMIUM_")


@st.composite
def paths(draw, *, under: bool | None = None) -> str:
    """PATH_INFO, biased towards /premium and the tricks that could hide it; ``under``
    (if not None) says whether it must be under the prefix or outside."""
    lead = draw(st.sampled_from(["/", "/", "/", "/", "//", "///", "", "\\", "/\\", "/./", "/../"]))
    first = draw(st.one_of(st.just("premium"), SEGMENTS))
    rest = draw(st.lists(st.tuples(SEPARATORS, SEGMENTS), max_size=6))
    path = lead + first + "".join(separator + segment for separator, segment in rest)
    path += draw(st.sampled_from(["", "", "", "/", "//", "/.", "/..", "\\", "?", "#"]))
    if draw(st.integers(0, 7)) == 0:
        filler = draw(st.sampled_from(LONG_FILLERS)) * draw(st.integers(256, 8192))
        path = draw(st.sampled_from([path + "/" + filler, "/" + filler + path, filler + path]))
    if under and not under_prefix(path):
        path = draw(st.sampled_from(UNDER_LEADS)) + path
    elif under is False and under_prefix(path):
        path = path.replace("premium", draw(st.sampled_from(NOT_PREMIUM)))
    assert under is None or under_prefix(path) is under
    return path


ANY_PATH = st.one_of(paths(under=True), paths(under=False))
UNDER = paths(under=True)
OUTSIDE = paths(under=False)


def path_kinds(path: str) -> list[str]:
    raw = path.encode("latin-1")
    kinds = ["path: under the prefix" if under_prefix(path) else "path: outside the prefix"]
    checks = {
        "dot segments": any(s in (".", "..") for s in path.split("/")),
        "doubled slashes": "//" in path,
        "backslashes": "\\" in path,
        "semicolons": ";" in path,
        "control bytes": any(c < 32 or c == 127 for c in raw),
        "bytes 128-255": any(c > 127 for c in raw),
        "not UTF-8": not _is_utf8(raw),
        "no leading slash": path[:1] != "/",
        "premium look-alikes": any(look in path for look in LOOKALIKES),
        "long (1 KB or more)": len(path) >= 1024,
    }
    return kinds + [f"path: {name}" for name, present in checks.items() if present]


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


QUERY_KEYS = st.one_of(
    st.sampled_from(["alloconv_grant", "page", "q", "code", "", "alloconv_grant[]", "a b"]),
    any_bytes(8),
)
QUERY_VALUES = st.one_of(
    st.sampled_from(["", "1", "%", "%0", "%zz", "%00", "%0d%0a", "%FF", "%C3", "+", "~", "=="]),
    st.sampled_from(["%3Cscript%3E", quote(MARKER), "..%2F..%2Fpremium", "%25%32%46"]),
    any_bytes(24),
    unicode_text(8),
    CONTROL_BYTES,
    st.just(MARKER),
)
QUERIES = st.one_of(
    st.just(""),
    any_bytes(200),
    st.lists(st.tuples(QUERY_KEYS, st.sampled_from(["=", "=", ""]), QUERY_VALUES), max_size=8).map(
        lambda fields: "&".join(key + eq + value for key, eq, value in fields)
    ),
    st.lists(QUERY_VALUES, max_size=4).map(lambda junk: "alloconv_grant=" + "".join(junk)),
)


def query_kinds(query: str) -> list[str]:
    checks = {
        "empty": not query,
        "control bytes": any(ord(c) < 32 or ord(c) == 127 for c in query),
        "bytes 128-255": any(ord(c) > 127 for c in query),
        "%-sequences": "%" in query,
        "alloconv_grant junk": "alloconv_grant" in query,
    }
    return [f"query: {name}" for name, present in checks.items() if present]


# Cookies. Junk values never hold ";", which would start another cookie of any name.

OTHER_NAMES = st.sampled_from(
    ["session", "a", "csrftoken", "alloconv_access2", "xalloconv_access", "ALLOCONV_ACCESS"]
)
SAFE_VALUES = st.text(alphabet=string.ascii_letters + string.digits + "-._~=%+/ ", max_size=40)
TOKEN_SHAPED = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=20)


def other_cookies(max_size: int = 4) -> st.SearchStrategy[list[str]]:
    return st.lists(st.tuples(OTHER_NAMES, SAFE_VALUES).map("=".join), max_size=max_size)


def refused_values(site: Site) -> st.SearchStrategy[tuple[str, str]]:
    """(kind, value) of cookie values that must open nothing."""
    tokens, clock = site.tokens, site.clock
    now = int(clock())
    valid = tokens.valid
    odd_payloads = st.one_of(
        st.sampled_from(["x", 1.5e12, True, None, [now + 3600], {"until": now + 3600}]),
        st.integers(max_value=now),
        st.text(max_size=8),
    )
    return st.one_of(
        st.just(("empty", "")),
        any_bytes(60).map(lambda value: ("junk", value.replace(";", ""))),
        st.integers(0, len(valid) - 1).map(lambda n: ("truncated token", valid[:n])),
        st.just(("re-signed with another key", tokens.forged)),
        st.sampled_from([tokens.other_prefix, tokens.other_secret]).map(
            lambda value: ("another gate's token", value)
        ),
        odd_payloads.map(lambda payload: ("right key, no valid end", sign(SECRET, payload, clock))),
        st.just(("right key, too old", sign(SECRET, now + 3600, clock, age=86400 + 61))),
        st.just(("right key, from the future", sign(SECRET, now + 3600, clock, age=-3600))),
        st.tuples(st.sampled_from('xA~="\\%'), st.integers(4096, 65536)).map(
            lambda t: ("huge", t[0] * t[1])
        ),
        st.lists(
            st.one_of(TOKEN_SHAPED, st.just(tokens.forged), st.just(valid[:-1]), st.just("")),
            min_size=8,
            max_size=200,
        ).map(lambda parts: ("many ~ parts", "~".join(parts))),
        st.sampled_from([valid[::-1], valid.upper(), valid + "A", "A" + valid]).map(
            lambda value: ("altered token", value)
        ),
    )


@st.composite
def refused_cookies(draw, site: Site) -> tuple[str, str | None]:
    """(kind, Cookie header) that must not open the gate, whatever else it holds."""
    shape = draw(st.sampled_from(["absent", "plain", "plain", "quoted", "duplicates", "many"]))
    if shape == "absent":
        return "cookie: absent", None
    if shape == "many":
        count = draw(st.integers(50, 400))
        pairs = [f"c{i}=v{i}" for i in range(count)]
        pairs.insert(draw(st.integers(0, count)), f"{COOKIE}={site.tokens.forged}")
        return "cookie: many cookies", "; ".join(pairs)
    values = draw(
        st.lists(refused_values(site), min_size=1, max_size=3 if shape == "duplicates" else 1)
    )
    ours = [f'{COOKIE}="{v}"' if shape == "quoted" else f"{COOKIE}={v}" for _, v in values]
    misnamed = draw(
        st.sampled_from(["", "ALLOCONV_ACCESS=", "xalloconv_access=", "foo=bar alloconv_access="])
    )
    if misnamed:  # a valid token under a name that is not ours
        ours.append(misnamed + site.tokens.valid)
    pairs = draw(other_cookies()) + ours
    pairs = draw(st.permutations(pairs))
    separator = draw(st.sampled_from(["; ", ";", " ; ", ";\t"]))
    kind = values[0][0] if shape == "plain" else shape
    return f"cookie: {kind}", separator.join(pairs)


@st.composite
def valid_cookies(draw, site: Site) -> tuple[str, str]:
    """(kind, Cookie header) holding this gate's valid token among junk it must skip.

    At most 6 token-shaped parts come before it, and 30 parts in all: the gate checks at
    most 8 signatures and 32 parts, by design.
    """
    tokens = site.tokens
    junk_part = st.one_of(
        st.sampled_from([tokens.forged, tokens.other_prefix, tokens.other_secret]),
        TOKEN_SHAPED.map(lambda s: s[:60]),
        SAFE_VALUES.map(lambda s: s.replace("~", "").replace(" ", "")),
    )
    before = draw(st.lists(junk_part, max_size=3))
    after = draw(st.lists(junk_part, max_size=3))
    value = "~".join([*before, tokens.valid, *after])
    quoted = draw(st.booleans())
    ours = [f'{COOKIE}="{value}"' if quoted else f"{COOKIE}={value}"]
    if draw(st.booleans()):  # a second cookie of our name, set for another path
        duplicate = "~".join(draw(st.lists(junk_part, min_size=1, max_size=2)))
        ours.insert(draw(st.integers(0, 1)), f"{COOKIE}={duplicate}")
    pairs = draw(st.permutations(draw(other_cookies()) + ours))
    separator = draw(st.sampled_from(["; ", ";", " ; ", ";\t"]))
    kind = "among other cookies" if len(pairs) > 1 else "alone"
    return f"cookie: valid, {kind}{', quoted' if quoted else ''}", separator.join(pairs)


PROGRESS_SALT = "alloconv_gate.progress:default:/premium"


def progress_values(site: Site) -> st.SearchStrategy[tuple[str, str]]:
    """(kind, value) of the ``codes = N`` progress cookie: real, or anything but."""
    real, clock = site.tokens.progress, site.clock
    odd_payloads = st.sampled_from(
        [["", "x"], ["/mount", ["a" * 64]], "x", [], ["", ["h"] * 100], ["", [1, None]], [None]]
    )
    return st.one_of(
        st.just(("one code passed", real)),
        st.integers(0, len(real) - 1).map(lambda n: ("truncated", real[:n])),
        st.just(
            ("re-signed with another key", sign(OTHER_SECRET, ["", []], clock, salt=PROGRESS_SALT))
        ),
        odd_payloads.map(
            lambda payload: (
                "right key, odd payload",
                sign(SECRET, payload, clock, salt=PROGRESS_SALT),
            )
        ),
        any_bytes(60).map(lambda value: ("junk", value.replace(";", ""))),
        st.integers(4096, 65536).map(lambda n: ("huge", "A" * n)),
    )


@st.composite
def progress_cookies(draw, site: Site) -> tuple[str, str]:
    """(kind, Cookie header) with a progress cookie next to an access cookie that fails."""
    _, access = draw(refused_cookies(site))
    kind, value = draw(progress_values(site))
    pair = f"{PROGRESS}={value}"
    if access is None:
        return f"cookie: progress, {kind}", pair
    return f"cookie: progress, {kind}", draw(
        st.sampled_from([f"{access}; {pair}", f"{pair}; {access}"])
    )


# Bodies.

CODES = st.one_of(
    st.sampled_from(["", " ", "\t\n", "ABC", "A" * 65, "ABCD-1234", "ABCD 1234", "0" * 8]),
    st.text(alphabet=string.ascii_letters + string.digits, min_size=8, max_size=64),
    any_bytes(40),
    unicode_text(20),
    st.sampled_from([MARKER, "A" * 8 + MARKER, f'"><script>{MARKER}</script>']),
)


def form_fields(codes) -> st.SearchStrategy[list[tuple[str, str]]]:
    names = st.sampled_from(["code", "x", "", "code[]", "CODE", GRANT_PARAM])
    extra = st.tuples(names, st.one_of(unicode_text(12), CODES))
    return st.tuples(codes, st.lists(extra, max_size=4)).map(lambda t: [("code", t[0]), *t[1]])


JSON_TYPES = ("application/json", "application/json", "application/json; charset=utf-8", FORM)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
DEPTHS = st.sampled_from([2, 100, 1000, 2000, 2048]) | st.integers(1, 2048)
SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)


def json_bodies(codes) -> st.SearchStrategy[str]:
    """JSON texts: the documented ``{"code": ...}`` and ``{"codes": [...]}``, and worse."""
    return st.one_of(
        codes.map(lambda code: json.dumps({"code": code})),
        st.lists(st.one_of(codes, JSON_VALUES), max_size=10).map(
            lambda items: json.dumps({"codes": items})
        ),
        st.dictionaries(st.sampled_from(["code", "codes", GRANT_PARAM, "x"]), JSON_VALUES).map(
            json.dumps
        ),
        JSON_VALUES.map(json.dumps),
        st.tuples(codes, SURROGATES, st.sampled_from(["code", "codes", GRANT_PARAM])).map(
            # lone surrogates, as \\ud800 escapes: valid JSON, not valid text
            lambda t: json.dumps({t[2]: [t[0] + t[1]] if t[2] == "codes" else t[0] + t[1]})
        ),
        DEPTHS.map(lambda depth: "[" * depth + "]" * depth),
        DEPTHS.map(lambda depth: '{"code":' * (depth // 5) + "1" + "}" * (depth // 5)),
        st.sampled_from(["", "{", "NaN", '{"code": 1e999}', '{"code": "A", "code": "B"}']),
        st.sampled_from(['"\\ud800"', '{"code": "\\u0000AAAAAAA"}', "\ufeff{}", "[]", "null"]),
    )


@st.composite
def bodies(draw, site: Site) -> tuple[str, str | None, bytes]:
    """(kind, CONTENT_TYPE, body)."""
    real_code = st.builds(site.sandbox.issue_code)
    codes = st.one_of(CODES, real_code) if draw(st.integers(0, 4)) == 0 else CODES
    kind = draw(
        st.sampled_from(
            [
                *("none", "form", "form", "form", "raw bytes as a form", "many fields"),
                *("JSON", "JSON", "JSON", "multipart", "wrong content type", "oversized"),
                "support link",
            ]
        )
    )
    if kind == "none":
        return "body: none", draw(st.sampled_from([None, FORM])), b""
    if kind == "form":
        fields = draw(form_fields(codes))
        body = urlencode(fields).encode()
        if draw(st.booleans()):  # not percent-encoded, as a careless client sends it
            body = b"&".join(f"{k}={v}".encode("latin-1", "replace") for k, v in fields)
        content_type = draw(st.sampled_from([FORM, FORM, FORM + "; charset=utf-8", FORM.upper()]))
        return "body: urlencoded form", content_type, body
    if kind == "raw bytes as a form":
        body = draw(st.sampled_from([b"code=", b"", b"code=%FF%FE", b"\xef\xbb\xbfcode="]))
        return "body: invalid UTF-8 or raw bytes", FORM, body + draw(st.binary(max_size=200))
    if kind == "many fields":
        count = draw(st.integers(17, 600))
        body = "&".join(f"f{i}=v" for i in range(count)) + "&code=" + draw(CODES)
        return "body: urlencoded, many fields", FORM, body.encode("utf-8", "surrogatepass")
    if kind == "JSON":
        body = draw(json_bodies(codes)).encode("utf-8", "surrogatepass")
        return "body: JSON", draw(st.sampled_from(JSON_TYPES)), body
    if kind == "multipart":
        code = draw(codes).encode("utf-8", "surrogatepass")
        body = (
            b'--XyZ\r\nContent-Disposition: form-data; name="code"\r\n\r\n'
            + code
            + b"\r\n--XyZ--\r\n"
        )
        return "body: multipart", "multipart/form-data; boundary=XyZ", body
    if kind == "wrong content type":
        body = urlencode(draw(form_fields(codes))).encode()
        content_type = draw(
            st.one_of(
                st.sampled_from(["text/plain", "", FORM + "x", "application/x-www-form", "*/*"]),
                any_bytes(40),
            )
        )
        return "body: wrong content type", content_type, body
    if kind == "support link":  # the button of the link's page
        fields = [(GRANT_PARAM, site.support_link()), *draw(form_fields(codes))[1:]]
        return "body: a real support link", FORM, urlencode(fields).encode()
    size = draw(st.integers(MAX_FORM_BYTES + 1, 4 * MAX_FORM_BYTES))
    code = site.sandbox.issue_code() if draw(st.booleans()) else "A" * 8
    return "body: oversized", FORM, (f"code={code}&pad=").encode().ljust(size, b"A")


@st.composite
def content_lengths(draw, body: bytes) -> tuple[str, str | None, bool]:
    """(kind, CONTENT_LENGTH, chunked)."""
    kind = draw(st.sampled_from(["exact"] * 4 + ["absent", "chunked", "junk", "negative", "lies"]))
    if kind == "exact":
        return "length: exact", str(len(body)), False
    if kind == "absent":
        return "length: absent", None, False
    if kind == "chunked":
        return "length: absent, chunked input", None, True
    if kind == "junk":
        junk = st.sampled_from(["", "abc", "1e3", "0x10", " 12 ", "+5", "5_0", "-0", "NaN"])
        return "length: junk", draw(st.one_of(junk, any_bytes(8))), False
    if kind == "negative":
        negative = st.sampled_from(["-1", f"-{len(body)}", "-4097", " -1", str(-(10**20))])
        return "length: negative", draw(negative), False
    lie = draw(st.sampled_from([-1, 1, 100, 10**6, 10**20]))
    return "length: lies", str(max(0, len(body) + lie)), False


HOSTS = ("localhost", "localhost:80", "LOCALHOST", "localhost:8080", "evil.example", "")
ORIGINS = st.one_of(
    st.none(),  # half of the visits: a form that gets past the Origin check
    st.one_of(
        st.sampled_from(["http://localhost", "https://localhost", "http://localhost:80"]),
        st.sampled_from(["null", "https://evil.example", "http://localhost.evil.example"]),
        st.sampled_from(
            ["http://[::1", "http://", "localhost", "file://", "http://evil.example:80"]
        ),
        any_bytes(40),
        st.sampled_from([MARKER, "https://" + MARKER]),
    ),
)
JUNK_HEADER = st.one_of(any_bytes(40), st.just(MARKER))
EXTRA_HEADERS = st.lists(
    st.one_of(
        st.tuples(
            st.just("Accept"),
            st.sampled_from(
                [
                    "*/*",
                    "text/html",
                    "application/json",
                    "application/json;q=0.9, text/html;q=0.1",
                    "text/html;q=0, application/json",
                    "application/json;q=abc",
                    "*/*;q=0",
                    ",,;",
                ]
            )
            | JUNK_HEADER,
        ),
        st.tuples(
            st.just("Accept-Language"),
            st.sampled_from(["fr-BE", "nl-BE, fr;q=0.5", "en", "*", "en;q=x", "-, ;q=1"])
            | JUNK_HEADER,
        ),
        st.tuples(
            st.sampled_from(["X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"])
            | st.sampled_from(["X-Forwarded-Prefix", "Referer", "Content-Length"])
            | st.just("Transfer-Encoding"),
            st.sampled_from(["https", "evil.example", "66.249.66.1", "chunked", "-1"])
            | JUNK_HEADER,
        ),
    ),
    max_size=4,
)


USER_AGENTS = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Googlebot-Image/1.0",
            "GOOGLEBOT",
            "Mozilla/5.0 (compatible; Google-InspectionTool/1.0)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "googlebot bingbot",
            "Googlebo t",
        ]
    ),
    JUNK_HEADER,
)
REMOTE_ADDRS = st.one_of(
    st.sampled_from(["127.0.0.1", "127.0.0.1", *VERIFIED_CRAWLERS]),
    st.sampled_from(["203.0.113.7", "203.0.113.8", "203.0.113.9", "203.0.113.66"]),
    st.sampled_from(["", "::1", "66.249.66.1, 10.0.0.1", "066.249.066.001", "66.249.66.1%0"]),
    any_bytes(16),
)


def client_kinds(visit: Visit) -> list[str]:
    agent = dict(visit.headers).get("User-Agent", "").lower()
    if visit.crawler():
        return ["client: a verified crawler"]
    if any(bot in agent for bots in BOTS.values() for bot in bots):
        return ["client: claims to be a crawler, unverified"]
    return ["client: no crawler"]


@st.composite
def visits(draw, site: Site, *, paths=ANY_PATH, cookies=None) -> Visit:
    """A whole request, every piece of it arbitrary."""
    method = draw(METHODS)
    path = draw(paths)
    query = draw(QUERIES)
    link = draw(st.integers(0, 9)) == 0
    if link:  # a real support link, good once
        query = f"{query}&{GRANT_PARAM}={site.support_link()}"
    body_kind, content_type, body = draw(bodies(site))
    length_kind, content_length, chunked = draw(content_lengths(body))
    cookie_kind, cookie = draw(cookies if cookies is not None else refused_cookies(site))
    headers = list(draw(EXTRA_HEADERS))
    origin = draw(ORIGINS)
    if origin is not None:
        headers.append(("Origin", origin))
    host = draw(st.one_of(st.none(), st.sampled_from(HOSTS), any_bytes(20), st.just(MARKER)))
    if host is not None:
        headers.append(("Host", host))
    agent = draw(USER_AGENTS)
    if agent is not None:
        headers.append(("User-Agent", agent))
    kinds = [
        "method: standard" if method in STANDARD_METHODS else "method: junk",
        *path_kinds(path),
        *query_kinds(query),
        *(["query: a real support link"] if link else []),
        cookie_kind,
        body_kind,
        length_kind,
        "header: Origin" if origin is not None else "header: no Origin",
        *(f"header: {name}" for name, _ in headers if name not in ("Origin", "User-Agent")),
    ]
    visit = Visit(
        method=method,
        path=path,
        query=query,
        script_name=draw(st.sampled_from(["", "", "", "", "/mount", "/m%C3%A9", "/" + MARKER])),
        scheme=draw(st.sampled_from(["http", "http", "https"])),
        cookie=cookie,
        content_type=content_type,
        content_length=content_length,
        chunked=chunked,
        body=body,
        headers=tuple(headers),
        cookie_opens=cookie_kind.startswith("cookie: valid"),
        remote_addr=draw(REMOTE_ADDRS),
    )
    return replace(visit, kinds=tuple(dict.fromkeys([*kinds, *client_kinds(visit)])))


# The marker, where the visitor may put it.


@st.composite
def with_marker(draw, site: Site, visit: Visit, where: str) -> Visit:
    """``visit`` with the marker in ``where``. With the marker in the path or the query,
    a paid code or a support link may come along: the answer is then a redirect whose
    Location is made from the request, or the link's page whose form posts back to it."""
    if where == "path":  # a segment more keeps the path under the prefix
        visit = replace(visit, path=visit.path + "/" + MARKER)
    elif where.startswith("query"):
        marker = quote(MARKER, safe="") if where.endswith("encoded") else MARKER
        query = draw(st.sampled_from([f"q={marker}", f"{marker}=1", marker]))
        visit = replace(visit, query=f"{visit.query}&{query}" if visit.query else query)
    elif where == "code":
        code = draw(st.sampled_from([MARKER, "A" * 8 + MARKER, "ABCDEFGH" + quote(MARKER)]))
        visit = form_post(visit, urlencode({"code": code}).encode())
    elif where == "support link":
        marker = draw(st.sampled_from([MARKER, quote(MARKER), site.support_link() + MARKER]))
        if draw(st.booleans()):  # opened: its page holds the link
            visit = replace(visit, method="GET", query=f"{GRANT_PARAM}={marker}")
            visit = relabel(visit, "method: standard", "query: alloconv_grant junk")
        else:
            visit = form_post(visit, urlencode({GRANT_PARAM: marker}).encode())
    elif where == "cookie":
        visit = replace(visit, cookie=f"{COOKIE}={MARKER}; {MARKER}={MARKER}")
        visit = relabel(visit, "cookie: marker")
    else:
        visit = replace(visit, headers=(*visit.headers, ("Origin", "https://" + MARKER)))
    if where in ("path", "query", "query, %-encoded"):
        then = draw(
            st.sampled_from(["", "a paid code", "a support link, opened", "a support link, used"])
        )
        if then == "a paid code":
            visit = form_post(visit, f"code={site.sandbox.issue_code()}".encode())
        elif then == "a support link, opened":
            link = f"{GRANT_PARAM}={site.support_link()}"
            kinds = (*visit.kinds, "query: a real support link")
            visit = replace(visit, method="GET", query=f"{visit.query}&{link}", kinds=kinds)
            visit = relabel(visit, "method: standard")
        elif then == "a support link, used":
            visit = form_post(visit, f"{GRANT_PARAM}={site.support_link()}".encode())
            visit = relabel(visit, "body: a real support link")
    return visit


def form_post(visit: Visit, body: bytes) -> Visit:
    """``visit`` as a same-origin form submission with ``body``."""
    headers = tuple((name, value) for name, value in visit.headers if name != "Origin")
    visit = replace(
        visit,
        method="POST",
        content_type=FORM,
        content_length=str(len(body)),
        chunked=False,
        body=body,
        headers=headers,
    )
    origin = ("header: Origin", "header: no Origin")
    kinds = (*(kind for kind in visit.kinds if kind not in origin), "header: no Origin")
    visit = replace(visit, kinds=kinds)
    return relabel(visit, "method: standard", "body: urlencoded form", "length: exact")


def relabel(visit: Visit, *kinds: str) -> Visit:
    """``visit`` with ``kinds`` in place of those it had of the same classes."""
    classes = {kind.split(":")[0] for kind in kinds}
    kept = [kind for kind in visit.kinds if kind.split(":")[0] not in classes]
    return replace(visit, kinds=(*kept, *kinds))


# What the app says of caching, for the gate to make private.

APP_HEADERS = st.lists(
    st.tuples(
        st.sampled_from(["Cache-Control", "cache-control", "Vary", "Surrogate-Control"])
        | st.sampled_from(["CDN-Cache-Control", "Cloudflare-CDN-Cache-Control", "Edge-Control"])
        | st.sampled_from(["X-Accel-Expires", "ETag"]),
        st.sampled_from(
            [
                "public",
                "public, max-age=60",
                "s-maxage=600",
                "max-age=60, s-maxage=600, public",
                "no-store",
                "private",
                'private="Set-Cookie"',
                'no-cache="Set-Cookie, X-Foo"',
                "proxy-revalidate, must-revalidate",
                "Accept-Encoding",
                "cookie",
                "*",
                "",
                ",,",
                "max-age=3600",
            ]
        ),
    ),
    max_size=5,
)


# Serving a visit, and what holds of every answer.


@dataclass
class Answer:
    environ: dict
    before: dict
    status: str
    headers: list
    iterable: object
    body: bytes


def serve(site: Site, visit: Visit) -> Answer:
    """Call the gate as a server does; any exception fails the example (property 2)."""
    site.app.calls.clear()
    environ = visit.environ()
    before = dict(environ)
    started = {}

    def start_response(status, headers, exc_info=None):
        assert exc_info is None
        assert not started, "start_response called twice"
        started.update(status=status, headers=headers)

    iterable = site.gate(environ, start_response)
    chunks = list(iterable)
    if hasattr(iterable, "close"):
        iterable.close()
    assert all(type(chunk) is bytes for chunk in chunks)
    return Answer(
        environ, before, started["status"], started["headers"], iterable, b"".join(chunks)
    )


def tag(visit: Visit, answer: Answer) -> None:
    """Count the example in each class of input it belongs to, and by its answer."""
    for kind in visit.kinds:
        event(kind)
    event(f"answer: {answer.status}")


def check_every_property(site: Site, visit: Visit, answer: Answer) -> None:
    # 2: a well-formed answer, never a 500.
    assert type(answer.status) is str and STATUS_LINE.fullmatch(answer.status), answer.status
    code = int(answer.status[:3])
    assert code in GATE_STATUSES, answer.status
    assert type(answer.headers) is list
    for name, value in answer.headers:
        assert type(name) is str and HEADER_NAME.fullmatch(name), name
        assert type(value) is str, (name, value)
        assert not any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value), (name, value)
        value.encode("latin-1")
    calls = site.app.calls
    if not visit.opens():
        # 1: no app, and no more of the body read than a form may hold.
        assert calls == [], visit
        if code == 200:  # the page a support link opens, or access granted, in JSON
            headers = dict(answer.headers)
            link_page = GRANT_PARAM in visit.query and visit.method in ("GET", "HEAD")
            json_grant = headers["Content-Type"].startswith("application/json")
            assert link_page or (json_grant and "Set-Cookie" in headers), answer.headers
        assert answer.environ["wsgi.input"].read_bytes <= MAX_FORM_BYTES + 1
    elif not under_prefix(visit.path):
        # 4: the app, untouched: the same environ, the whole body, its own answer.
        [call] = calls
        assert call["environ"] is answer.environ
        assert answer.environ == answer.before
        assert call["body"] == visit.body
        headers, body = call["answer"]
        assert answer.headers is headers
        assert answer.iterable is body and body.closed
    else:
        # 5: the app, its answer made private to the visitor (or the crawler).
        [call] = calls
        assert call["environ"] is answer.environ
        if visit.cookie_opens and visit.script_name == "":
            assert type(answer.environ["alloconv_gate.access_until"]) is int
        else:
            assert answer.environ["alloconv_gate.crawler"] == visit.crawler()
        assert call["body"] == visit.body
        assert answer.iterable is call["answer"][1]
        check_private(answer.headers)
    # 3: whatever the visitor sent, none of the marker comes back raw.
    text = answer.body.decode("latin-1")
    for piece in RAW_PIECES:
        assert piece not in text, (piece, text)
        for name, value in answer.headers:
            assert piece not in value, (piece, name, value)


def check_private(headers: list[tuple[str, str]]) -> None:
    names = [name.lower() for name, _ in headers]
    assert not SURROGATE_HEADERS & set(names), headers
    [cache_control] = [value for name, value in headers if name.lower() == "cache-control"]
    directives = [
        d.split("=", 1)[0].strip().lower() for d in re.sub(r'"[^"]*"', "", cache_control).split(",")
    ]
    assert "private" in directives or "no-store" in directives, cache_control
    assert not {"public", "s-maxage"} & set(directives), cache_control
    [vary] = [value for name, value in headers if name.lower() == "vary"]
    fields = {field.strip().lower() for field in vary.split(",")}
    assert "cookie" in fields or "*" in fields, vary


# The properties.


class TestProperties:
    @FUZZ
    @given(data=st.data())
    def test_under_the_prefix_no_valid_cookie_never_reaches_the_app(self, site, data):
        visit = data.draw(visits(site, paths=UNDER))
        answer = serve(site, visit)
        tag(visit, answer)
        assert site.app.calls == [] or visit.crawler()
        check_every_property(site, visit, answer)

    @FUZZ
    @given(data=st.data())
    def test_only_a_verified_crawler_reads_without_paying(self, site, data):
        visit = data.draw(visits(site, paths=UNDER))
        agent = data.draw(st.sampled_from([f"Mozilla/5.0 (compatible; {bot})" for bot in BOTS_UA]))
        headers = tuple((name, value) for name, value in visit.headers if name != "User-Agent")
        visit = replace(
            visit,
            method=data.draw(st.sampled_from(["GET", "GET", "HEAD", "POST", "OPTIONS"])),
            headers=(*headers, ("User-Agent", agent)),
            remote_addr=data.draw(st.sampled_from(list(VERIFIED_CRAWLERS)) | REMOTE_ADDRS),
        )
        kinds = [kind for kind in visit.kinds if not kind.startswith(("client:", "method:"))]
        visit = replace(visit, kinds=(*kinds, "method: standard", *client_kinds(visit)))
        answer = serve(site, visit)
        tag(visit, answer)
        assert bool(site.app.calls) == (visit.crawler() is not None)
        check_every_property(site, visit, answer)

    @FUZZ
    @given(data=st.data())
    def test_one_code_of_two_never_opens(self, site_of_two, data):
        """With ``codes = 2``, whatever the progress cookie says, only access opens."""
        visit = data.draw(visits(site_of_two, paths=UNDER, cookies=progress_cookies(site_of_two)))
        answer = serve(site_of_two, visit)
        tag(visit, answer)
        check_every_property(site_of_two, visit, answer)

    @FUZZ
    @given(data=st.data())
    def test_never_a_500_never_an_exception(self, site, data):
        cookies = st.one_of(refused_cookies(site), valid_cookies(site))
        visit = data.draw(visits(site, cookies=cookies))
        answer = serve(site, visit)
        tag(visit, answer)
        check_every_property(site, visit, answer)

    @FUZZ
    @given(data=st.data())
    def test_code_submissions_never_crash_nor_open(self, site, data):
        """The path with the most to parse: a same-site POST of a form or JSON, any body."""
        visit = data.draw(visits(site, paths=UNDER))
        content_type = data.draw(st.sampled_from([FORM, "application/json", *JSON_TYPES]))
        origin = data.draw(st.sampled_from([None, "http://localhost", "https://localhost"]))
        headers = tuple((name, value) for name, value in visit.headers if name != "Origin")
        visit = replace(
            visit,
            method="POST",
            content_type=content_type,
            headers=headers if origin is None else (*headers, ("Origin", origin)),
        )
        visit = relabel(visit, "method: standard")
        answer = serve(site, visit)
        tag(visit, answer)
        event(f"submitted as: {content_type}")
        check_every_property(site, visit, answer)

    @FUZZ
    @given(data=st.data())
    def test_nothing_the_visitor_sent_comes_back_raw(self, site, data):
        visit = data.draw(visits(site, paths=UNDER))
        where = data.draw(
            st.sampled_from(
                ["path", "query", "query, %-encoded", "code", "support link", "cookie", "origin"]
            )
        )
        visit = data.draw(with_marker(site, visit, where))
        event(f"marker in: {where}")
        answer = serve(site, visit)
        tag(visit, answer)
        if visit.method == "POST" and visit.content_type == FORM and answer.status[:3] == "303":
            event("marker: answered with a redirect (Location)")
        check_every_property(site, visit, answer)

    @FUZZ
    @given(data=st.data())
    def test_outside_the_prefix_the_app_gets_the_very_environ(self, site, data):
        cookies = st.one_of(refused_cookies(site), valid_cookies(site))
        visit = data.draw(visits(site, paths=OUTSIDE, cookies=cookies))
        answer = serve(site, visit)
        tag(visit, answer)
        assert len(site.app.calls) == 1
        check_every_property(site, visit, answer)

    @FUZZ
    @given(data=st.data())
    def test_a_valid_cookie_reaches_the_app_privately(self, site, data):
        visit = data.draw(visits(site, paths=UNDER, cookies=valid_cookies(site)))
        visit = replace(visit, script_name="")
        site.app.headers = data.draw(APP_HEADERS)
        try:
            answer = serve(site, visit)
        finally:
            app_headers, site.app.headers = site.app.headers, []
        tag(visit, answer)
        assert len(site.app.calls) == 1
        check_every_property(site, visit, answer)
        event(f"app headers: {len(app_headers)}")


# The form's size limit, with bodies that a test can see being read.


def post(site: Site, wsgi_input, content_length: str | None, *, chunked: bool = False):
    environ = Visit(method="POST", content_type=FORM, content_length=content_length).environ()
    environ["wsgi.input"] = wsgi_input
    if chunked:
        environ["wsgi.input_terminated"] = True
    site.app.calls.clear()
    started = {}
    site.gate(environ, lambda status, headers, exc_info=None: started.update(status=status))
    assert site.app.calls == []
    return started["status"]


class TestTheSizeLimit:
    def test_a_huge_content_length_is_413_with_nothing_read(self, site):
        endless = EndlessInput()
        assert post(site, endless, str(10**12)) == "413 Request Entity Too Large"
        assert endless.read_bytes == 0

    def test_a_body_one_byte_too_large_is_413_unread(self, site):
        body = MeteredInput(b"code=".ljust(MAX_FORM_BYTES + 1, b"A"))
        assert post(site, body, str(MAX_FORM_BYTES + 1)).startswith("413")
        assert body.read_bytes == 0

    def test_a_chunked_body_is_never_read_past_the_limit(self, site):
        endless = EndlessInput()
        assert post(site, endless, None, chunked=True).startswith("413")
        assert 0 < endless.read_bytes <= MAX_FORM_BYTES + 1

    def test_a_chunked_body_within_the_limit_is_read(self, site):
        body = MeteredInput(b"code=ABCD")
        assert post(site, body, None, chunked=True).startswith("400")  # too short a code
        assert body.read_bytes == len(b"code=ABCD")

    def test_a_body_at_the_limit_is_read(self, site):
        body = MeteredInput(b"code=ABCDEFGH&pad=".ljust(MAX_FORM_BYTES, b"A"))
        assert post(site, body, str(MAX_FORM_BYTES)).startswith("402")
        assert body.read_bytes == MAX_FORM_BYTES


# Controls: the bad tokens above are refused for the reason they are meant to be.


class TestTheForgeries:
    def check(self, site, token: str, *, opens: bool) -> str:
        visit = Visit(cookie=f"{COOKIE}={token}", cookie_opens=opens)
        answer = serve(site, visit)
        check_every_property(site, visit, answer)
        return answer.status

    def test_the_valid_token_opens(self, site):
        assert self.check(site, site.tokens.valid, opens=True) == "200 OK"

    def test_the_same_construction_with_the_right_key_opens(self, site):
        token = sign(SECRET, int(site.clock()) + 3600, site.clock)
        assert self.check(site, token, opens=True) == "200 OK"

    def test_the_forged_token_is_refused(self, site):
        assert self.check(site, site.tokens.forged, opens=False) == "402 Payment Required"

    @pytest.mark.parametrize("token", ["other_prefix", "other_secret"])
    def test_another_gates_token_is_refused(self, site, token):
        status = self.check(site, getattr(site.tokens, token), opens=False)
        assert status == "402 Payment Required"
