"""A stand-in for the AlloConv API, for the demo and the tests.

AlloConv has no sandbox: every code checked against the real service is a real sale. This
WSGI app answers the two documented scripts as the documentation describes them
(``{mount}/api-numeros`` and ``{mount}/api-micropaiement``), issues its own test codes on a
page at ``{mount}/`` that a person can read on a phone, and can be told to misbehave (see
:meth:`Sandbox.set_fault`) so that a client's handling of timeouts, lost answers and junk can
be tested over real HTTP. Like an AlloConv account, it may hold several APIs, each a key
accepting its own paliers (``keys``), so that gates sold at different prices can be tested
with a key each.

The gate's ``api_base`` for a sandbox mounted at ``http://host/sandbox`` is that URL: the
scripts sit right under it, as they sit under ``https://www.alloconv.fr/scripts``.

By default the codes live in the process's memory, which is right for one server process
(waitress, a test). A server of several worker processes (``gunicorn --workers 2``) needs
``state``, a sqlite file that every worker shares: a code read off the page one worker
served must be known to the worker that checks it, and sold once whichever checks it first.
Without it, such a server gets a codes page that says so (503) instead of codes that work
half the time. Faults and ``calls`` stay each process's own: they are for tests.

Never expose it to real visitors: anyone can read free codes off its page.
"""

import contextlib
import html
import logging
import os
import re
import secrets
import sqlite3
import string
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from webob import Response
from webob.dec import wsgify

from .config import SANDBOX_KEY

CODE_ALPHABET = string.ascii_uppercase + string.digits
CODE_LENGTH = 8
DEFAULT_KEY = SANDBOX_KEY  # the demo's secret is accepted with this key only
DEFAULT_NUMBERS = {
    "fra1": "08 99 23 45 67",
    "fra2": "08 99 23 45 68",
    "bel1": "0905 12 345",
    "che1": "0901 123 456",
    "sms1": "ACCES au 81212",
}
SCRIPTS = ("api-numeros", "api-micropaiement")
FAULT_KINDS = ("hang", "slow", "error500", "garbage", "empty", "drop", "flap")
HANG_LIMIT = 30.0
"""Seconds a "hang" holds a request at most, so a test that forgets to clear it still ends."""
STATE_BUSY_TIMEOUT = 10.0
"""Seconds a worker waits for another one writing the ``state`` file before failing."""

log = logging.getLogger("alloconv_gate")


class DroppedAnswer(Exception):
    """Raised mid-answer by the "drop" fault so that the server breaks the connection."""


@dataclass(frozen=True)
class _Fault:
    kind: str
    script: str | None
    delay: float
    released: threading.Event = field(default_factory=threading.Event)

    def applies_to(self, script):
        return self.script is None or self.script == script


class Sandbox:
    """A WSGI app that behaves like the AlloConv API, with its own test codes.

    An AlloConv account holds several APIs, one key each, and each API accepts the codes
    of the paliers set for it in the account ("mes APIs"); the answer to a check never
    says which palier a code was bought for. The sandbox models that with ``keys``.

    :param keys: key -> the paliers it accepts (an iterable of paliers of ``numbers``, at
        least one). A check with another key answers ``ERR99``; a code of a palier its key
        does not accept answers ``ERR4`` and is not consumed. Give either ``keys`` or
        ``api_key``/``accepted_paliers``, not both.
    :param api_key: with ``accepted_paliers``, the one key of an account with one API:
        ``Sandbox(api_key="k", accepted_paliers=["fra1"])`` is
        ``Sandbox(keys={"k": ["fra1"]})``. Default: ``"sandbox-key"``.
    :param accepted_paliers: the paliers ``api_key`` accepts. Default: all of ``numbers``.
    :param numbers: palier -> the text ``api-numeros`` answers for it. Codes can be issued
        for these paliers only.
    :param codes_shown: how many fresh codes the page shows for each palier.
    :param rng: a :class:`random.Random`-like object for the codes; seed one to get the same
        codes in a test. Default: the operating system's randomness.
    :param state: a sqlite file holding the issued and used codes, shared by every process
        that opens it (the worker processes of one server): see :class:`SqliteCodes`.
        Default: None, the codes live in this process's memory.

    ``keys`` is then the mapping key -> frozenset of paliers; ``api_key`` and
    ``accepted_paliers`` are its first key and that key's paliers.

    State is shared by all the server's threads and guarded by a lock (and, with ``state``,
    by all the processes that open the file). ``calls`` counts the requests received by each
    script, faulty answers included, in this process.
    """

    def __init__(
        self,
        *,
        keys=None,
        api_key=None,
        numbers=None,
        accepted_paliers=None,
        codes_shown=3,
        rng=None,
        state=None,
    ):
        numbers = dict(DEFAULT_NUMBERS if numbers is None else numbers)
        _check_numbers(numbers)
        if keys is None:
            keys = {
                DEFAULT_KEY if api_key is None else api_key: (
                    numbers if accepted_paliers is None else accepted_paliers
                )
            }
            keys = _check_keys(keys, numbers, "api_key", "accepted_paliers", empty_ok=True)
        elif api_key is not None or accepted_paliers is not None:
            raise ValueError(
                "keys: give either keys or api_key/accepted_paliers, not both "
                "(add the key to keys instead)"
            )
        else:
            keys = _check_keys(keys, numbers, "keys", "keys", empty_ok=False)
        if isinstance(codes_shown, bool) or not isinstance(codes_shown, int) or codes_shown < 0:
            raise ValueError(f"codes_shown: must be an integer >= 0, got {codes_shown!r}")
        self.keys = keys
        self.numbers = numbers
        self.codes_shown = codes_shown
        self.calls = Counter()
        self._rng = secrets.SystemRandom() if rng is None else rng
        self._lock = threading.Lock()
        self._state = MemoryCodes() if state is None else SqliteCodes(state)
        self._fault = None
        self._flaps = 0
        self._warned_memory = False

    @property
    def state(self):
        """The sqlite file the codes are kept in, or None when they live in this process."""
        return self._state.path

    @property
    def api_key(self):
        """The first key (the only one, unless ``keys`` named several)."""
        return next(iter(self.keys))

    @property
    def accepted_paliers(self):
        """The paliers the first key accepts."""
        return self.keys[self.api_key]

    def issue_code(self, palier="fra1"):
        """Return a fresh code of ``palier`` that the sandbox will accept once."""
        if palier not in self.numbers:
            raise ValueError(f"palier: {palier!r} is not in numbers")
        return self._issue([palier])[0]

    def _issue(self, paliers):
        """A fresh code for each palier of ``paliers``, recorded together (one write)."""
        codes = [None] * len(paliers)
        todo = range(len(paliers))
        while todo:
            with self._lock:  # a shared Random is not safe across threads
                drawn = {
                    n: "".join(self._rng.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
                    for n in todo
                }
            added = self._state.add([(drawn[n], paliers[n]) for n in todo])
            for n, new in zip(todo, added, strict=True):
                codes[n] = drawn[n] if new else None
            todo = [n for n, new in zip(todo, added, strict=True) if not new]  # draw again
        return codes

    def is_used(self, code):
        """Whether ``code`` was consumed by an ``OK`` answer (even one the client never got)."""
        return self._state.is_used(code)

    def set_fault(self, kind, *, script=None, delay=0.0):
        """Make the scripts misbehave until :meth:`clear_fault`.

        ``script`` limits the fault to ``"api-numeros"`` or ``"api-micropaiement"``. Kinds:

        - ``"hang"``: hold each request until ``clear_fault()`` (or 30 s), then answer it
          normally: a code checked by a request the client gave up on is consumed then.
        - ``"slow"``: wait ``delay`` seconds, then answer normally.
        - ``"error500"``: HTTP 500 with an HTML body; nothing is checked or consumed.
        - ``"garbage"``: HTTP 200 with an HTML page instead of an answer; nothing consumed.
        - ``"empty"``: HTTP 200 with an empty body; nothing consumed.
        - ``"drop"``: answer normally (an ``OK`` consumes the code), but break the connection
          after the first byte of the body: the answer is lost after the sale.
        - ``"flap"``: the 1st, 3rd, 5th... request gets ``"error500"``, the others a normal
          answer.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind: {kind!r} is not one of {', '.join(FAULT_KINDS)}")
        if script is not None and script not in SCRIPTS:
            raise ValueError(f"script: {script!r} is not one of {', '.join(SCRIPTS)}")
        if delay < 0:
            raise ValueError(f"delay: must be >= 0, got {delay!r}")
        self._replace_fault(_Fault(kind, script, float(delay)))

    def clear_fault(self):
        """Answer normally again, and release the requests held by a "hang"."""
        self._replace_fault(None)

    def _replace_fault(self, fault):
        with self._lock:
            previous, self._fault = self._fault, fault
            self._flaps = 0
        if previous is not None:
            previous.released.set()

    @wsgify
    def __call__(self, req):
        if req.path_info in ("", "/"):
            if req.environ.get("wsgi.multiprocess") and self._state.path is None:
                return self._no_shared_state()
            return self._codes_page()
        script = req.path_info[1:]
        if script not in SCRIPTS:
            return Response("Not found\n", status=404, content_type="text/plain")
        with self._lock:
            self.calls[script] += 1
        fault = self._fault
        if fault is not None and fault.applies_to(script):
            return self._faulty_answer(fault, script, req)
        return self._answer(script, req)

    def _answer(self, script, req):
        query = _query(req)
        if script == "api-numeros":
            text = self._number(query.get("palier"))
        else:
            text = self._check(query.get("cle"), query.get("code1"))
        return Response(text, content_type="text/plain", charset="utf-8")

    def _number(self, palier):
        if palier not in self.numbers:
            return "ERR918"
        return self.numbers[palier] + "\r\n"

    def _check(self, key, code):
        accepted = self.keys.get(key)
        if accepted is None:
            return "ERR99"
        if not code:
            return "ERR1"
        if len(code) < CODE_LENGTH:
            return "ERR2"
        return self._state.use(code, accepted)

    def _faulty_answer(self, fault, script, req):
        match fault.kind:
            case "hang":
                fault.released.wait(HANG_LIMIT)
            case "slow":
                time.sleep(fault.delay)
            case "error500":
                return _html_page("500 Internal Server Error", status=500)
            case "garbage":
                return _html_page("Maintenance: AlloConv will be back soon.")
            case "empty":
                return Response(b"", content_type="text/plain")
            case "flap":
                with self._lock:
                    self._flaps += 1
                    fails = self._flaps % 2 == 1
                if fails:
                    return _html_page("500 Internal Server Error", status=500)
        answer = self._answer(script, req)
        if fault.kind == "drop":
            return _cut_short(answer)
        return answer

    def _codes_page(self):
        sections = []
        fresh = iter(self._issue([p for p in self.numbers for _ in range(self.codes_shown)]))
        for palier, number in self.numbers.items():
            codes = "".join(f"<li><code>{next(fresh)}</code></li>" for _ in range(self.codes_shown))
            refused = self._keys_note(palier)
            sections.append(
                f"<section><h2>{html.escape(palier)}</h2>"
                f"<p>Number: <strong>{html.escape(number)}</strong></p>"
                f'{refused}<ul class="codes">{codes}</ul></section>'
            )
        response = Response(
            _CODES_PAGE.format(sections="\n".join(sections)),
            content_type="text/html",
            charset="utf-8",
        )
        response.cache_control.no_store = True
        return response

    def _no_shared_state(self):
        """The codes page under a server of several processes, with codes kept in one.

        Each worker would know only the codes on the pages it served, so a code read off
        this page would fail (ERR3) whenever another worker checks it: say so instead.
        """
        if not self._warned_memory:
            self._warned_memory = True
            log.error(
                "the sandbox keeps its codes in this process's memory, but the server runs "
                "several worker processes, which would not know each other's codes: give it "
                "a file they share, 'state = sandbox.sqlite3' in its ini section "
                "(Sandbox(state=...) in Python)"
            )
        body = _NO_SHARED_STATE_PAGE
        response = Response(body, status=503, content_type="text/html", charset="utf-8")
        response.cache_control.no_store = True
        return response

    def _keys_note(self, palier):
        """Which keys accept ``palier``'s codes, as a paragraph of the codes page."""
        accepting = [key for key, paliers in self.keys.items() if palier in paliers]
        others = [key for key in self.keys if key not in accepting]
        if not accepting:
            return (
                '<p class="refused">No key of this site accepts this palier: '
                "its codes answer ERR4.</p>"
            )
        note = f'<p class="keys">Accepted with {_key_list(accepting)}.</p>'
        if others:
            note += (
                f'<p class="refused">With {_key_list(others)}, its codes answer ERR4 '
                "(and stay unused).</p>"
            )
        return note


class MemoryCodes:
    """Issued and used codes in this process's memory: one server process, or a test."""

    path = None

    def __init__(self):
        self._lock = threading.Lock()
        self._codes = {}  # code -> palier
        self._used = set()

    def add(self, pairs):
        """Record new ``(code, palier)`` pairs; for each, False if the code exists already
        (the caller draws another)."""
        added = []
        with self._lock:
            for code, palier in pairs:
                added.append(code not in self._codes)
                self._codes.setdefault(code, palier)
        return added

    def use(self, code, accepted):
        """Sell ``code`` once: ``OK``, ``ERR3`` (unknown or used) or ``ERR4`` (palier)."""
        with self._lock:
            palier = self._codes.get(code)
            if palier is None or code in self._used:
                return "ERR3"
            if palier not in accepted:
                return "ERR4"
            self._used.add(code)
        return "OK"

    def is_used(self, code):
        with self._lock:
            return code in self._used


class SqliteCodes:
    """Issued and used codes in a sqlite file shared by every process that opens it.

    A server of several worker processes serves the codes page from one and the check from
    another; with the codes in this file both see the same codes, and a code is sold once:
    its "use" is one conditional ``UPDATE``, which sqlite runs whole or not at all, whichever
    process gets there first. Each operation opens and closes its own connection: a sandbox
    is never busy, and so no connection is shared by threads, kept across a fork or left
    open. WAL mode, so that reading the page never waits for a check.

    The file only grows (a few dozen bytes a code): delete it when the sandbox is stopped
    to start afresh. Keep it on a local disk, as any sqlite file shared by processes.
    """

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS codes ("
        "code TEXT PRIMARY KEY, palier TEXT NOT NULL, used INTEGER NOT NULL DEFAULT 0"
        ") WITHOUT ROWID"
    )

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            with self._db() as db:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute(self._SCHEMA)
        except sqlite3.Error as exc:
            raise ValueError(f"state: cannot use {self.path!r} as a sqlite file: {exc}") from None

    @contextlib.contextmanager
    def _db(self):
        db = sqlite3.connect(self.path, timeout=STATE_BUSY_TIMEOUT, isolation_level=None)
        try:
            # No fsync per write (safe in WAL mode): test codes need no durability.
            db.execute("PRAGMA synchronous = NORMAL")
            yield db
        finally:
            db.close()

    def add(self, pairs):
        insert = "INSERT OR IGNORE INTO codes (code, palier) VALUES (?, ?)"
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            added = [db.execute(insert, pair).rowcount == 1 for pair in pairs]
            db.execute("COMMIT")
        return added

    def use(self, code, accepted):
        with self._db() as db:
            row = db.execute("SELECT palier, used FROM codes WHERE code = ?", (code,)).fetchone()
            if row is None or row[1]:
                return "ERR3"
            if row[0] not in accepted:
                return "ERR4"
            # Another process may have sold it since the SELECT: one UPDATE finds used = 0.
            cursor = db.execute("UPDATE codes SET used = 1 WHERE code = ? AND used = 0", (code,))
            return "OK" if cursor.rowcount == 1 else "ERR3"

    def is_used(self, code):
        with self._db() as db:
            row = db.execute("SELECT used FROM codes WHERE code = ?", (code,)).fetchone()
            return bool(row and row[0])


def _key_list(keys):
    names = ", ".join(f"<code>{html.escape(key)}</code>" for key in keys)
    return f"key {names}" if len(keys) == 1 else f"keys {names}"


def _check_keys(keys, numbers, key_setting, paliers_setting, *, empty_ok):
    """``keys`` as a dict key -> frozenset of paliers, or ValueError naming the setting."""
    if not isinstance(keys, Mapping):
        raise ValueError(f"{key_setting}: must map each key to its paliers, got {keys!r}")
    if not keys:
        raise ValueError(f"{key_setting}: at least one key is needed")
    checked = {}
    for key, paliers in keys.items():
        if not isinstance(key, str) or not re.fullmatch(r"\S+", key):
            raise ValueError(
                f"{key_setting}: must be a non-empty string without spaces, got {key!r}"
            )
        if isinstance(paliers, str):
            raise ValueError(
                f"{paliers_setting}: the paliers of key {key!r} must be a list, not the "
                f"string {paliers!r}"
            )
        accepted = frozenset(paliers)
        if unknown := accepted - numbers.keys():
            raise ValueError(
                f"{paliers_setting}: key {key!r} lists paliers not in numbers: "
                f"{', '.join(sorted(map(str, unknown)))}"
            )
        if not accepted and not empty_ok:
            raise ValueError(f"{paliers_setting}: key {key!r} accepts no palier")
        checked[key] = accepted
    return checked


def _check_numbers(numbers):
    if not numbers:
        raise ValueError("numbers: at least one palier is needed")
    for palier, text in numbers.items():
        if not isinstance(palier, str) or not re.fullmatch(r"\S+", palier):
            raise ValueError(f"numbers: bad palier {palier!r}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"numbers: empty text for palier {palier!r}")


def _query(req):
    """The query's parameters, last value winning; bytes that are not UTF-8 never raise.

    ``req.GET`` raises on them, which would turn a visitor's garbled code into a 500.
    """
    pairs = urllib.parse.parse_qsl(req.query_string, keep_blank_values=True, errors="replace")
    return dict(pairs)


def _cut_short(answer):
    """Promise the whole body, send its first byte, then fail, so the server drops the line."""
    body = answer.body

    def first_byte_then_fail():
        yield body[:1]
        raise DroppedAnswer("sandbox fault 'drop': connection broken mid-answer")

    answer.app_iter = first_byte_then_fail()
    answer.content_length = len(body)
    return answer


def _html_page(text, *, status=200):
    body = (
        "<!DOCTYPE html><html><head><title>AlloConv</title></head>"
        f"<body><p>{html.escape(text)}</p></body></html>"
    )
    return Response(body, status=status, content_type="text/html", charset="utf-8")


_CODES_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AlloConv sandbox</title>
<style>
body {{ font-family: sans-serif; margin: 0 auto; max-width: 36em; padding: 1em; }}
.note {{ background: #fff3cd; padding: 0.5em 0.75em; }}
.refused {{ color: #8a1f11; }}
.codes {{ list-style: none; padding: 0; }}
.codes code {{ font-size: 1.4em; letter-spacing: 0.1em; }}
</style>
</head>
<body>
<h1>AlloConv sandbox</h1>
<p class="note">These are test codes for the demo: no call is needed and nothing is paid.
Each code works once; reload the page for more.</p>
{sections}
</body>
</html>
"""

_NO_SHARED_STATE_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AlloConv sandbox: no shared state</title>
</head>
<body>
<h1>AlloConv sandbox</h1>
<p>This server runs several worker processes, and the sandbox keeps its codes in the
memory of one: a code from this page would be unknown to the other workers.</p>
<p>Give the sandbox a file they share: <code>state = sandbox.sqlite3</code> in its section
of the ini file (<code>Sandbox(state=...)</code> in Python), or serve it with one process.</p>
</body>
</html>
"""

_SETTINGS = frozenset({"keys", "api_key", "numbers", "accepted_paliers", "codes_shown", "state"})


def make_app(global_conf=None, **settings):
    """PasteDeploy ``paste.app_factory``: a :class:`Sandbox` from ini strings.

    ``keys`` holds ``key = paliers`` pairs (the paliers whitespace-separated), one a line
    or separated by ``;``: ``keys = key-cheap = fra2 bel1; key-dear = fra1``. Without it,
    ``api_key`` is the one key and ``accepted_paliers`` (whitespace-separated) its paliers;
    ``keys`` with either of them is refused. ``numbers`` holds ``palier = text`` pairs, the
    same way; ``codes_shown`` is an integer. ``state`` is a sqlite file, relative to the
    ini file's folder, that keeps the codes for every worker process of the server (see
    :class:`SqliteCodes`). A misspelt or bad setting raises :class:`ValueError` naming it,
    at load time.
    """
    if unknown := settings.keys() - _SETTINGS:
        raise ValueError(f"unknown sandbox setting(s): {', '.join(sorted(unknown))}")
    options = {}
    if "keys" in settings:
        options["keys"] = _parse_keys(settings["keys"])
    if "api_key" in settings:
        options["api_key"] = settings["api_key"].strip()
    if "numbers" in settings:
        options["numbers"] = _parse_numbers(settings["numbers"])
    if "accepted_paliers" in settings:
        options["accepted_paliers"] = settings["accepted_paliers"].split()
    if "codes_shown" in settings:
        try:
            options["codes_shown"] = int(settings["codes_shown"])
        except ValueError:
            raise ValueError(f"codes_shown: not an integer: {settings['codes_shown']!r}") from None
    if "state" in settings:
        options["state"] = _state_path(settings["state"], (global_conf or {}).get("here"))
    return Sandbox(**options)


def _state_path(value, here):
    """The ``state`` file's path: relative to the ini file's folder, as the gate's files."""
    path = value.strip()
    if not path:
        raise ValueError("state: empty; give a sqlite file, e.g. state = sandbox.sqlite3")
    return os.path.join(here or os.getcwd(), os.path.expanduser(path))


def _parse_keys(text):
    keys = {}
    for key, paliers in _pairs("keys", "key = paliers", text):
        if key in keys:
            raise ValueError(f"keys: key {key!r} given twice")
        if not re.fullmatch(r"\S+", key):
            raise ValueError(f"keys: bad key {key!r}")
        listed = paliers.split()
        if len(set(listed)) != len(listed):
            raise ValueError(f"keys: a palier is listed twice for key {key!r}")
        keys[key] = listed
    return keys


def _pairs(setting, form, text):
    """The ``name = value`` pairs of ``text``, one a line or separated by ``;``."""
    pairs = []
    for item in re.split(r"[;\n]", text):
        if not item.strip():
            continue
        name, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not name or not value:
            raise ValueError(f"{setting}: expected '{form}', got {item.strip()!r}")
        pairs.append((name, value))
    if not pairs:
        raise ValueError(f"{setting}: no '{form}' pair")
    return pairs


def _parse_numbers(text):
    numbers = {}
    for palier, answer in _pairs("numbers", "palier = text", text):
        if palier in numbers:
            raise ValueError(f"numbers: palier {palier!r} given twice")
        numbers[palier] = answer
    return numbers
