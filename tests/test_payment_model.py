"""No access without paying its price, and no paid code lost: a stateful model of a site.

Hypothesis drives one site through random histories: two or three gates in one filter,
each selling its own palier with its own key (an AlloConv API each, see
tests/conftest.py) and taking 1 to 3 codes for an access; browsers (WebTest apps, a
cookie jar each) that buy codes and type them at any gate (a form or JSON), type again
codes typed before (where they typed them, at the gate selling them, or anywhere), retry
a code whose answer was lost, type made-up codes, copy each other's cookies, and read the
gates' pages; AlloConv (the session sandbox, over real HTTP) losing its answer to the
next code checked, after consuming it; the secret rotated under the browsers' feet (a
new Gate on the same store); the clock moving on (access lasts 30 minutes, 2 hours or a
day). ``max_devices = 1``, so every successful submission is a fresh access or a
recovery, and ``rate_limit = off``, so that every code reaches the rules that matter.

After every step the model checks, for each gate:

- accesses granted x codes per access <= the distinct codes that passed there (consumed
  by AlloConv when typed there, or recovered there), and the looser bound
  accesses <= consumed // codes + recoveries;
- recoveries stay within their budget (3 an hour);
- every code AlloConv consumed has a journal record at the gate it was typed at that
  says what happened to it (``ok``, or ``unknown`` when the answer was lost), and no
  record is left pending;
- a code AlloConv accepted at a gate (answer received) keeps what it bought there: its
  redemption (codes = 1) or its place in a set of that gate (codes = N).

Whenever a browser opens a gate's page, it is served (200, with the end of access the
model expects) exactly when the model says it holds access there: granted to it, or to
the browser it copied cookies from, and not yet ended; a browser with access that posts
a code reaches the app, and no code is checked. Per submission: never a 500; a code of a
palier the gate's key does not accept is refused (402, ``wrong-palier``) and not
consumed; a good fresh code opens the gate (or counts in the visitor's set, kept in the
progress cookie); a lost answer is a 503 noted in the browser's cookie; a consumed code
whose answer was lost is recovered in the browser that lost it, within the budget; with
codes = 1 a code that bought access at a gate never buys it again.

``ALLOCONV_FUZZ_EXAMPLES`` sets the number of examples (see tests/test_fuzz.py); the run's
counts are printed at the end (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
from clock import FakeClock
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from webtest import TestApp

from alloconv_gate import Gate
from alloconv_gate.codes import code_hash, reference
from alloconv_gate.messages import catalogue
from alloconv_gate.store.memory import MemoryStore

# _site: the store key of a site's redemptions and sets (mounted at the root here).
from alloconv_gate.verification import RECOVERY_WINDOW, _site

# 200 examples of up to 40 steps take 25 to 40 s here (2 cores); ALLOCONV_FUZZ_EXAMPLES
# for a longer hunt.
EXAMPLES = int(os.environ.get("ALLOCONV_FUZZ_EXAMPLES", "200"))
STEPS = 40

SECRET = "payment-model-tests-secret-0123456789abcdef"
NEW_SECRETS = (
    "payment-model-rotated-secret-one-0123456789",
    "payment-model-rotated-secret-two-0123456789",
)
# name, palier, key (accepting that palier only), price notice
GATES = (
    ("alpha", "fra1", "key-fra1", None),
    ("beta", "fra2", "key-fra2", "1,50 € par code"),
    ("gamma", "bel1", "key-bel1", "2,00 € par code (Belgique)"),
)
PALIERS = ("fra1", "fra2", "bel1", "che1")
DURATIONS = {"30m": 1800, "2h": 7200, "24h": 86400}
MAX_BROWSERS = 5
RECOVERIES = (3, 3600)  # the default budget: 3 an hour per gate
LOST_COOKIE = "alloconv_access_lost"
LOST_IDS = 8  # LostAnswers.MAX_IDS
LOST_LIFETIME = 86400  # LostAnswers.LIFETIME
TEXT = catalogue("fr")
# What a consumed code's record at its gate may say: accepted, or the answer lost.
CONSUMED_OUTCOMES = {"ok", "unknown"}
# Made-up codes hold a lower-case letter: the sandbox issues upper case and digits only.
made_up_codes = st.from_regex(r"[a-z][A-Za-z0-9]{7,11}", fullmatch=True)

STATS: Counter = Counter()


def page_error(alert: str) -> str | None:
    """The catalogue key of the error shown in a page's alert, if any."""
    for key, message in TEXT.items():
        if key.startswith("error_"):
            pieces = re.split(r"\{[a-z]+\}", message)
            if all(piece in alert for piece in pieces):
                return key
    return None


def paid_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    until = environ["alloconv_gate.access_until"]
    return [f"paid {environ['PATH_INFO']} until {until}".encode()]


def use_store(gate: Gate, store) -> None:
    """Put ``store`` under ``gate``, as tests/test_verification.py does."""
    gate.store = store
    for parts in gate._parts.values():
        object.__setattr__(parts.verifier, "_store", store)


@dataclass(frozen=True)
class GateSpec:
    name: str
    palier: str
    key: str
    notice: str | None
    codes: int

    @property
    def prefix(self) -> str:
        return f"/{self.name}"

    @property
    def scope(self) -> str:  # GateConfig.scope: how the journal names the gate
        return f"{self.name}:{self.prefix}"


@dataclass
class Browser:
    app: TestApp
    address: str
    # The model of its access cookie: gate index -> the end of the access its token
    # carries (ended ones included, until a new cookie drops them), and whether it has
    # the cookie at all (copying cookies overwrites the other's only then).
    tokens: dict[int, int] = field(default_factory=dict)
    has_access_cookie: bool = False
    # The LostAnswers cookie: the attempts whose answer it lost, each with the gate
    # (the paths) it was lost at, and when the cookie was signed.
    lost: list[tuple[str, int]] = field(default_factory=list)
    lost_signed_at: float | None = None


@dataclass(frozen=True)
class Answer:
    status: int
    success: bool
    error: str | None  # the JSON error, or the catalogue key found in the page's alert
    set_cookies: tuple[str, ...]
    reference: str | None
    body: object


class PaymentModel(RuleBasedStateMachine):
    """One site, its browsers and the codes they typed; see the module's docstring."""

    # Set by the autouse fixture below: the sandbox, its URL, and one requests session
    # for every Gate (a session per Gate would leave keep-alive connections behind, past
    # waitress's connection limit).
    sandbox = None
    api_base = None
    session = None

    browsers = Bundle("browsers")
    typed = Bundle("typed")

    def __init__(self):
        super().__init__()
        STATS["examples"] += 1
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.secrets = [SECRET]
        self.people: list[Browser] = []
        self.palier_of: dict[str, str | None] = {}  # code -> palier (None: made up)
        self.typed_at: dict[str, list[int]] = {}  # code -> the gates it was typed at
        self.losses: list[tuple[int, str, int]] = []  # (browser, code, gate): answer lost
        self.by_hash: dict[str, str] = {}  # a code's hash under any secret -> the code
        self.consumed: dict[str, int] = {}  # code -> the gate it was consumed at
        self.passed: list[set[str]] = []  # per gate: codes consumed or recovered there
        self.accesses: list[int] = []
        self.recoveries: list[int] = []
        self.records: dict[str, object] = {}  # the journal as of the last step
        self.drop_next = False

    # The site

    @initialize(
        target=browsers,
        n_gates=st.integers(2, 3),
        codes=st.lists(st.integers(1, 3), min_size=3, max_size=3),
        duration=st.sampled_from(sorted(DURATIONS)),
    )
    def open_site(self, n_gates, codes, duration):
        self.specs = [
            GateSpec(name, palier, key, notice, count)
            for (name, palier, key, notice), count in zip(GATES[:n_gates], codes, strict=False)
        ]
        self.duration_text = duration
        self.duration = DURATIONS[duration]
        self.passed = [set() for _ in self.specs]
        self.accesses = [0] * len(self.specs)
        self.recoveries = [0] * len(self.specs)
        self.gate = self._start_gate()
        return self._new_browser()

    def _start_gate(self) -> Gate:
        options = {
            "gates": " ".join(spec.name for spec in self.specs),
            "secret": " ".join(self.secrets),
            "api_base": self.api_base,
            "timeout": "2",
            "store": "memory",
            "rate_limit": "off",
            "max_devices": "1",
            "duration": self.duration_text,
        }
        for spec in self.specs:
            options[f"{spec.name}.palier"] = spec.palier
            options[f"{spec.name}.api_key"] = spec.key
            options[f"{spec.name}.prefixes"] = spec.prefix
            options[f"{spec.name}.codes"] = str(spec.codes)
            if spec.notice:
                options[f"{spec.name}.price_notice"] = spec.notice
        gate = Gate(paid_app, clock=self.clock, session=self.session, **options)
        use_store(gate, self.store)
        return gate

    def _new_browser(self) -> int:
        index = len(self.people)
        address = f"192.0.2.{index + 1}"
        app = TestApp(self.gate, extra_environ={"REMOTE_ADDR": address})
        self.people.append(Browser(app, address))
        return index

    def _learn(self, code: str, palier: str | None) -> None:
        self.palier_of.setdefault(code, palier)
        for secret in (SECRET, *NEW_SECRETS):
            self.by_hash[code_hash(secret, code)] = code

    def _hashes(self, code: str) -> list[str]:
        return [code_hash(secret, code) for secret in self.secrets]

    def _accepts(self, gate: int, code: str) -> bool:
        palier = self.palier_of[code]
        return palier is not None and palier in self.sandbox.keys[self.specs[gate].key]

    # Rules

    @precondition(lambda self: len(self.people) < MAX_BROWSERS)
    @rule(target=browsers)
    def new_browser(self):
        STATS["steps"] += 1
        return self._new_browser()

    @rule(target=typed, browser=browsers, data=st.data())
    def buy_and_type(self, browser, data):
        """Buy one to three codes (mostly of the gate's palier) and type them at a gate."""
        STATS["steps"] += 1
        gate = data.draw(st.integers(0, len(self.specs) - 1), label="gate")
        own = self.specs[gate].palier
        count = data.draw(st.integers(1, 3), label="count")
        paliers = data.draw(
            st.lists(
                st.one_of(st.just(own), st.sampled_from(PALIERS)), min_size=count, max_size=count
            ),
            label="paliers",
        )
        codes = []
        for palier in paliers:
            code = self.sandbox.issue_code(palier)
            self._learn(code, palier)
            codes.append(code)
        fmt = data.draw(st.sampled_from(["form", "json-code", "json-codes"]), label="format")
        sent = self._submit(browser, gate, codes, fmt)
        return multiple(*sent)

    @rule(browser=browsers, code=typed, data=st.data())
    def type_again(self, browser, code, data):
        """Type a code typed before, in any browser: where it was typed before, at the
        gate that sells its palier, or anywhere (as a visitor, or one who found it, would)."""
        STATS["steps"] += 1
        sold = [i for i, spec in enumerate(self.specs) if spec.palier == self.palier_of[code]]
        places = [*dict.fromkeys(self.typed_at[code]), *sold, *range(len(self.specs))]
        gate = data.draw(st.sampled_from(places), label="gate")
        fmt = data.draw(st.sampled_from(["form", "json-code", "json-codes"]), label="format")
        self._submit(browser, gate, [code], fmt)

    @precondition(lambda self: self.losses)
    @rule(data=st.data())
    def retry_lost_answer(self, data):
        """Do what the page says after a lost answer: type the same code again, later,
        in the browser that lost it, on the same page or at the gate selling it."""
        STATS["steps"] += 1
        browser, code, gate = data.draw(st.sampled_from(self.losses[::-1]), label="loss")
        sold = [i for i, spec in enumerate(self.specs) if spec.palier == self.palier_of[code]]
        gate = data.draw(st.sampled_from([gate, *sold]), label="gate")
        fmt = data.draw(st.sampled_from(["form", "json-code", "json-codes"]), label="format")
        self._submit(browser, gate, [code], fmt)

    @rule(target=typed, browser=browsers, code=made_up_codes, data=st.data())
    def type_made_up(self, browser, code, data):
        """Type a code that AlloConv never issued."""
        STATS["steps"] += 1
        self._learn(code, None)
        gate = data.draw(st.integers(0, len(self.specs) - 1), label="gate")
        fmt = data.draw(st.sampled_from(["form", "json-code", "json-codes"]), label="format")
        self._submit(browser, gate, [code], fmt)
        return code

    @precondition(lambda self: not self.drop_next)
    @rule()
    def lose_next_answer(self):
        """AlloConv will consume the next code checked, and its answer will be lost."""
        STATS["steps"] += 1
        self.drop_next = True

    @rule(source=browsers, target_browser=browsers)
    def copy_cookies(self, source, target_browser):
        """Hand every cookie of one browser to another (same names are overwritten)."""
        STATS["steps"] += 1
        if source == target_browser:
            return
        src, dst = self.people[source], self.people[target_browser]
        for cookie in list(src.app.cookiejar):
            dst.app.cookiejar.set_cookie(cookie)
        if src.has_access_cookie:
            dst.tokens = dict(src.tokens)
            dst.has_access_cookie = True
        if src.lost_signed_at is not None:
            dst.lost = list(src.lost)
            dst.lost_signed_at = src.lost_signed_at

    @precondition(lambda self: len(self.secrets) <= len(NEW_SECRETS))
    @rule()
    def rotate_secret(self):
        """A new secret in front, the old ones kept: a new Gate on the same store, and
        every browser, cookies kept, talks to it from now on."""
        STATS["steps"] += 1
        self.secrets.insert(0, NEW_SECRETS[len(self.secrets) - 1])
        self.gate = self._start_gate()
        for person in self.people:
            jar = person.app.cookiejar
            person.app = TestApp(self.gate, extra_environ={"REMOTE_ADDR": person.address})
            person.app.cookiejar = jar

    @rule(minutes=st.integers(1, 180))
    def advance_clock(self, minutes):
        STATS["steps"] += 1
        self.clock.advance(60 * minutes)

    @rule(browser=browsers, data=st.data())
    def read(self, browser, data):
        """Open a page of a gate: served exactly when the model says the browser paid."""
        STATS["steps"] += 1
        gate = data.draw(st.integers(0, len(self.specs) - 1), label="gate")
        page = data.draw(st.sampled_from(["article", "page/2", ""]), label="page")
        self._check_reads(browser, gate, page)

    # Submitting codes, with the bookkeeping and the facts of one step

    def _check_reads(self, browser: int, gate: int, page: str = "article") -> None:
        person = self.people[browser]
        path = f"{self.specs[gate].prefix}/{page}" if page else self.specs[gate].prefix
        answer = person.app.get(path, status="*")
        STATS["requests"] += 1
        until = person.tokens.get(gate)
        holds = until is not None and until > self.clock.now
        assert answer.status_int != 500
        if holds:
            assert answer.status_int == 200, (
                f"browser {browser} paid for {path} until {until} (now {self.clock.now}) "
                f"but got {answer.status}"
            )
            assert answer.body == f"paid {path} until {until}".encode()
        else:
            assert answer.status_int == 402, (
                f"browser {browser} read {path} ({answer.status}) without access: "
                f"{answer.body[:200]!r}; model tokens {person.tokens}, now {self.clock.now}"
            )

    def _post(self, person: Browser, path: str, codes: list[str], fmt: str) -> Answer:
        response = _send(person, path, codes, fmt)
        STATS["requests"] += 1
        set_cookies = tuple(response.headers.getall("Set-Cookie"))
        status = response.status_int
        if fmt == "form":
            success = status == 303
            error = ref = None
            if status != 303:
                alert = response.html.find(attrs={"role": "alert"})
                error = page_error(alert.get_text() if alert is not None else "")
            else:
                assert response.headers["Location"] == path
            return Answer(status, success, error, set_cookies, ref, response.body)
        data = response.json
        success = status == 200 and "access_until" in data
        return Answer(status, success, data.get("error"), set_cookies, data.get("reference"), data)

    def _submit(self, browser: int, gate: int, codes: list[str], fmt: str) -> list[str]:
        """Type ``codes`` at ``gate`` in ``browser``; returns the codes sent."""
        if fmt == "json-code":
            codes = codes[:1]
        spec = self.specs[gate]
        person = self.people[browser]
        now = self.clock.now
        STATS["submissions"] += 1
        for code in codes:
            self.typed_at.setdefault(code, []).append(gate)
        used_before = {code: self.sandbox.is_used(code) for code in codes}
        calls_before = self.sandbox.calls["api-micropaiement"]
        first = codes[0]
        until = person.tokens.get(gate)
        if until is not None and until > now:
            self._post_with_access(browser, gate, codes, fmt, until)
            return codes
        expect_recovery = self._expects_recovery(person, gate, first)
        bought_before = self._bought_here(gate, first)
        drop, self.drop_next = self.drop_next, False
        if drop:
            STATS["drops"] += 1
            self.sandbox.set_fault("drop", script="api-micropaiement")
        try:
            answer = self._post(person, f"{spec.prefix}/article", codes, fmt)
        finally:
            if drop:
                self.sandbox.clear_fault()
        calls = self.sandbox.calls["api-micropaiement"] - calls_before
        consumed = [c for c in codes if self.sandbox.is_used(c) and not used_before[c]]
        new = [r for r in self.store.journal(limit=10**6) if r.id not in self.records]
        for record in new:
            self.records[record.id] = record
        where = f"{fmt} of {codes} at gate {spec.name} (codes={spec.codes}) in browser {browser}"

        # Never a 500; only the answers a good-looking code can get.
        assert answer.status in (200, 303, 402, 503), f"{where}: {answer.status}"
        assert all(r.gate == spec.scope for r in new), f"{where}: {new}"
        assert all(r.outcome != "pending" for r in new), f"{where}: {new}"
        for code in consumed:
            assert self._accepts(gate, code), f"{where}: consumed {code} of another palier"
            self.consumed[code] = gate
            self.passed[gate].add(code)
        recovered = [r for r in new if r.outcome == "recovered"]
        self.recoveries[gate] += len(recovered)
        for record in recovered:
            self.passed[gate].add(self.by_hash[record.code_hash])
        STATS["recoveries"] += len(recovered)

        # The lost answer: 503 with a reference, noted in the browser's LostAnswers cookie.
        lost_cookie = any(c.startswith(LOST_COOKIE + "=") for c in answer.set_cookies)
        if drop:
            assert calls <= 1, f"{where}: {calls} AlloConv calls under a dropped answer"
            if calls:
                assert answer.status == 503, f"{where}: {answer.status} for a lost answer"
                assert lost_cookie, f"{where}: the lost answer is not noted in the browser"
                assert answer.error in ("unavailable", "error_lost"), f"{where}: {answer}"
        if lost_cookie:
            unknown = [r for r in new if r.outcome == "unknown"]
            assert len(unknown) == 1, f"{where}: {new}"
            if fmt != "form":
                assert answer.reference == reference(unknown[0].code_hash)
            if person.lost_signed_at is None or now - person.lost_signed_at > LOST_LIFETIME:
                person.lost = []
            person.lost = [*person.lost, (unknown[0].id, gate)][-LOST_IDS:]
            person.lost_signed_at = now
            self.losses.append((browser, self.by_hash[unknown[0].code_hash], gate))

        # A code of a palier this gate's key does not accept: refused, never consumed.
        issued = self.palier_of[first] is not None
        if issued and not used_before[first] and not self._accepts(gate, first) and not drop:
            assert answer.status == 402, f"{where}: {answer.status}"
            assert answer.error in ("wrong-palier", "error_wrong_palier"), (
                f"{where}: {answer.error}"
            )
        assert not any(c in consumed for c in codes if not self._accepts(gate, c))

        # A good fresh code: access (codes = 1), or it counts in the visitor's set.
        if not used_before[first] and self._accepts(gate, first) and not drop:
            assert first in consumed, f"{where}: a good fresh code was not consumed"
        if consumed and not drop:
            if spec.codes == 1:
                assert answer.success, f"{where}: consumed {consumed}, got {answer}"
            else:
                progress = f"alloconv_access_set_{spec.name}="
                assert answer.success or any(c.startswith(progress) for c in answer.set_cookies), (
                    f"{where}: consumed {consumed}, got {answer} and no progress kept"
                )

        # A code whose answer was lost in this browser: recovered, within the budget.
        if expect_recovery and not drop:
            assert recovered, f"{where}: not recovered: {answer}, {new}"
            if spec.codes == 1:
                assert answer.success, f"{where}: recovered but {answer}"
        # With max_devices = 1, a code that bought access here never buys it again.
        if bought_before and spec.codes == 1:
            assert not answer.success, (
                f"{where}: {first} bought access at {spec.name} before, and again now "
                f"(max_devices = 1): {answer}; journal of the code: "
                f"{self._history(first)}"
            )

        if answer.success:
            self.accesses[gate] += 1
            STATS["accesses"] += 1
            until = int(now) + self.duration
            if fmt != "form":
                assert answer.body["access_until"] == until, f"{where}: {answer.body}"
            person.tokens = {g: end for g, end in person.tokens.items() if g != gate and end > now}
            person.tokens[gate] = until
            person.has_access_cookie = True
            self._check_reads(browser, gate)
        return codes

    def _post_with_access(self, browser: int, gate: int, codes: list[str], fmt: str, until):
        """A browser with access posts to the app, not to the gate: no code is checked."""
        person = self.people[browser]
        path = f"{self.specs[gate].prefix}/article"
        calls = self.sandbox.calls["api-micropaiement"]
        response = _send(person, path, codes, fmt)
        STATS["requests"] += 1
        STATS["submissions with access"] += 1
        assert response.status_int == 200, f"browser {browser} has access: {response.status}"
        assert response.body == f"paid {path} until {until}".encode()
        assert self.sandbox.calls["api-micropaiement"] == calls
        assert len(self.store.journal(limit=10**6)) == len(self.records)

    def _journal_of(self, code: str, gate: int | None = None) -> list:
        found = []
        for hashed in self._hashes(code):
            scope = None if gate is None else self.specs[gate].scope
            found += self.store.journal(code_hash=hashed, gate=scope, limit=10**6)
        return found

    def _history(self, code: str) -> list[tuple]:
        return sorted(
            (r.time, r.gate, r.outcome, r.detail, r.client) for r in self._journal_of(code)
        )

    def _bought_here(self, gate: int, code: str) -> bool:
        """Whether ``code`` already bought access (or counts in a set) at ``gate``."""
        return any(r.outcome in ("ok", "recovered") for r in self._journal_of(code, gate))

    def _expects_recovery(self, person: Browser, gate: int, code: str) -> bool:
        """Whether typing ``code`` now at ``gate`` in ``person`` must recover it: its
        earlier answer was lost there in this browser, in the last day, it never passed
        anywhere since (no redemption nor set to get in the way), AlloConv will say ERR3
        (used, or made up), and the gate's recoveries budget is not spent this hour."""
        now = self.clock.now
        if self.palier_of[code] is not None and not self.sandbox.is_used(code):
            return False  # AlloConv will say OK or ERR4, not ERR3
        if person.lost_signed_at is None or now - person.lost_signed_at >= LOST_LIFETIME:
            return False
        if any(r.outcome in ("ok", "recovered") for r in self._journal_of(code)):
            return False
        noted = {attempt for attempt, lost_at in person.lost if lost_at == gate}
        if not any(
            r.outcome == "unknown" and r.id in noted and r.time > now - RECOVERY_WINDOW + 60
            for r in self._journal_of(code, gate)
        ):
            return False
        if len(self._journal_of(code)) >= 50:  # Verifier._lost_before reads the last 50
            return False
        count, window = RECOVERIES
        start = now // window * window
        tries = [
            r
            for r in self.store.journal(gate=self.specs[gate].scope, since=start, limit=10**6)
            if r.outcome == "recovered" or r.detail == "ERR3; recoveries budget spent"
        ]
        return len(tries) < count

    # Invariants

    @invariant()
    def no_access_without_its_price(self):
        for index, spec in enumerate(self.specs):
            consumed = sum(1 for gate in self.consumed.values() if gate == index)
            assert self.accesses[index] <= consumed // spec.codes + self.recoveries[index], (
                f"gate {spec.name}: {self.accesses[index]} accesses for {consumed} codes "
                f"consumed (codes = {spec.codes}) and {self.recoveries[index]} recoveries"
            )
            assert self.accesses[index] * spec.codes <= len(self.passed[index]), (
                f"gate {spec.name}: {self.accesses[index]} accesses of {spec.codes} code(s) "
                f"for {len(self.passed[index])} distinct codes that passed there: "
                + "; ".join(f"{code}: {self._history(code)}" for code in self.passed[index])
            )

    @invariant()
    def recoveries_within_their_budget(self):
        count, window = RECOVERIES
        for spec in self.specs:
            windows = Counter(
                int(r.time // window)
                for r in self.records.values()
                if r.gate == spec.scope and r.outcome == "recovered"
            )
            assert all(n <= count for n in windows.values()), (spec.name, windows)

    @invariant()
    def no_paid_code_lost(self):
        for code, gate in self.consumed.items():
            outcomes = {r.outcome for r in self._journal_of(code, gate)}
            assert outcomes & CONSUMED_OUTCOMES, (
                f"{code} consumed at {self.specs[gate].name} but its records there say "
                f"{outcomes or 'nothing'}: {self._history(code)}"
            )
        assert not self.store.journal(outcome="pending")

    @invariant()
    def a_paid_code_keeps_counting_where_it_was_paid(self):
        """A code AlloConv accepted at a gate (its answer received) keeps what it bought
        there: its access (codes = 1), or its place in a set of that gate (codes = N)."""
        site = _site("")
        for code, gate in self.consumed.items():
            spec = self.specs[gate]
            if not any(r.outcome == "ok" for r in self._journal_of(code, gate)):
                continue  # its answer was lost: recovery or support will say
            hashed = code_hash(SECRET, code)
            if spec.codes == 1:
                held = self.store.redemption(site, hashed)
                what = "redemption"
            else:
                held = self.store.claim(site, hashed)
                what = "place in a set"
            assert held is not None and spec.prefix in held.prefixes, (
                f"{code} was paid at {spec.name} (codes = {spec.codes}) but its {what} is "
                f"{held}: {self._history(code)}"
            )

    def teardown(self):
        STATS["sandbox codes"] += len([c for c, p in self.palier_of.items() if p])


@pytest.fixture(autouse=True)
def _site_parts(sandbox, sandbox_url):
    """The session sandbox for the machine (a TestCase class cannot take fixtures), and
    the run's figures at the end."""
    PaymentModel.sandbox = sandbox
    PaymentModel.api_base = sandbox_url
    STATS.clear()
    started = time.monotonic()
    with requests.Session() as session:
        PaymentModel.session = session
        yield
    PaymentModel.sandbox = PaymentModel.api_base = PaymentModel.session = None
    figures = ", ".join(f"{n} {what}" for what, n in STATS.items())
    print(f"\npayment model: {figures} in {time.monotonic() - started:.1f} s")


TestCase = PaymentModel.TestCase
TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None)


def _send(person, path: str, codes: list[str], fmt: str):
    """Post ``codes`` as a form, as ``{"code": ...}`` or as ``{"codes": [...]}``."""
    if fmt == "form":
        return person.app.post(path, [("code", code) for code in codes], status="*")
    body = {"code": codes[0]} if fmt == "json-code" else {"codes": codes}
    return person.app.post(path, json.dumps(body), content_type="application/json", status="*")
