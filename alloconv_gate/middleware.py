"""The ``Gate`` WSGI middleware: AlloConv-paid access to some URL prefixes of any app.

A request goes one way through :meth:`Gate.__call__`:

1. not under a protected prefix: the app, untouched;
2. a valid access cookie for the gate of the longest matching prefix: the app, its
   response made private to the visitor (and likewise a verified search crawler's GET);
3. a code submitted (form or JSON): the verifier (local check, rate limit, restore,
   journal, AlloConv), then a cookie or the page with the error; or a support link used;
4. anything else: the gate page (402) with the numbers to call, or its JSON twin.

The first two are the fast paths every page view of a site takes. They read the environ,
look the Cookie header up among those that held a good token (a signature is checked once
per token, not per view) and add two headers to the app's answer: about 1.5 µs in all.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

import requests
from webob import Request, Response
from webob.acceptparse import create_accept_header
from webob.request import DisconnectionError

from .alloconv import AlloConv
from .caching import private_headers
from .clients import client_key
from .config import ConfigError, GateConfig, gates_by_key, palier_risks, parse_gates
from .crawlers import CrawlerCheck
from .languages import MEMO_MAX_CHARS, MEMO_SIZE, choose_language, language_for, likely_order
from .messages import catalogue
from .numbers import NumberCache
from .page import (
    Offer,
    PageCache,
    PageContent,
    render,
    render_ahead,
    render_link_page,
)
from .paths import PrefixMatcher
from .self_call import GuardedClient, cannot_call_itself, without_calls
from .slots import Slots
from .store import StoreError, open_store
from .tokens import (
    GRANT_PARAM,
    SEPARATOR,
    AccessTokens,
    LostAnswers,
    SetProgress,
    cookie_values,
)
from .verification import Decision, Verifier, Visit

log = logging.getLogger("alloconv_gate")

MAX_FORM_BYTES = 4096
# Brackets a JSON submission may hold: it has one object and at most one list. Deeper
# nesting is refused before parsing, which would recurse as deep (and any finaliser the
# garbage collector runs down there would fail with RecursionError).
MAX_JSON_BRACKETS = 16
RETRY_AFTER = 60  # seconds, on 503 answers
FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
# The stable, machine-readable errors of the JSON answers, by catalogue key.
JSON_ERRORS = {
    "error_empty": "malformed",
    "error_too_short": "malformed",
    "error_too_long": "malformed",
    "error_characters": "malformed",
    "error_malformed": "malformed",
    "error_invalid": "invalid",
    "error_access_ended": "invalid",
    "error_too_many_devices": "invalid",
    "error_link": "invalid",
    "error_more_codes": "more-codes",
    "error_recovery_support": "unavailable",
    "error_wrong_palier": "wrong-palier",
    "error_rate_limited": "rate-limited",
    "error_unavailable": "unavailable",
    "error_busy": "unavailable",
    "error_lost": "unavailable",
    "error_forbidden": "forbidden",
    "error_too_large": "too-large",
}
SECURITY_HEADERS = (
    # The page has no scripts and no external assets; nothing may frame the payment form.
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)
# The plain gate page's answer, as _page's Response sends it: status line, then the
# headers before and after Content-Length.
_PAGE_STATUS = {402: "402 Payment Required", 503: "503 Service Unavailable"}
_PAGE_TYPE = ("Content-Type", "text/html; charset=utf-8")
_PAGE_HEADERS = {
    402: (*SECURITY_HEADERS, ("Cache-Control", "no-store")),
    503: (*SECURITY_HEADERS, ("Cache-Control", "no-store"), ("Retry-After", str(RETRY_AFTER))),
}


@dataclass(frozen=True)
class GateParts:
    """One gate's settings and the objects that serve it."""

    config: GateConfig
    tokens: AccessTokens
    verifier: Verifier
    numbers: tuple[NumberCache, ...]  # one per palier, in the config's order
    progress: SetProgress  # codes = N: the visitor's unfinished set
    # (language, order, numbers) -> the plain page's status and page rendered ahead;
    # (language, order, numbers, error, codes passed) -> a refusal's page rendered ahead
    pages: PageCache = field(default_factory=PageCache, compare=False)

    @property
    def progress_cookie(self) -> str:
        return f"{self.config.cookie_name}_set_{self.config.name}"

    @property
    def lost_cookie(self) -> str:
        return f"{self.config.cookie_name}_lost"


class Gate:
    """WSGI middleware selling access to URL prefixes of ``app`` with AlloConv codes.

    Options are those of the ini file (see the README), as keyword arguments; strings are
    converted exactly as the ini's are. A bad option raises ``ConfigError`` here, at
    start-up. ``clock`` (a ``time.time``-like callable) and ``session`` (a
    ``requests.Session`` for AlloConv calls) are for tests, and so is ``resolver``, the
    DNS of the ``crawlers`` check (see :mod:`alloconv_gate.crawlers`); ``here`` is the
    folder that relative file paths are read from.
    """

    def __init__(
        self,
        app,
        *,
        clock=time.time,
        session: requests.Session | None = None,
        resolver=None,
        here: str | None = None,
        **options,
    ):
        self.app = app
        self.gates = configs = parse_gates(options, here=here)
        self.config = site = configs[0]  # what every gate shares: cookie, store...
        session = session or requests.Session()
        # One client per key (AlloConv checks a code against the paliers of its key's API),
        # all on one session.
        self._clients = {
            key: AlloConv(site.api_base, key, timeout=site.timeout, session=session)
            for key in dict.fromkeys(config.api_key for config in configs)
        }
        for sharing in gates_by_key(configs).values():
            risks = palier_risks(sharing, [repr(gate.name) for gate in sharing])
            if risks:  # shared_key = true, or start-up would have refused them
                log.warning("shared_key = true: one AlloConv key for several prices: %s", risks)
        try:
            self.store = open_store(site.store)
        except StoreError as exc:
            raise ConfigError("store", str(exc)) from None
        if self.store.warning:
            log.warning("%s", self.store.warning)
        # AlloConv verifications in flight and the circuit breaker, for all the gates of
        # this filter together.
        self._in_flight = Slots(site.max_pending, site.timeout, clock)
        self._parts = {}  # prefix -> the parts of the gate that claims it
        for config in configs:
            self._parts.update(dict.fromkeys(config.prefixes, self._gate_parts(config, clock)))
        self._paths = PrefixMatcher(self._parts)
        self._lost = LostAnswers(site.secrets, clock)
        self._crawlers = (
            CrawlerCheck(site.crawlers, resolver=resolver, clock=clock) if site.crawlers else None
        )

    def __call__(self, environ, start_response):
        prefixes = self._paths.match_all(environ.get("PATH_INFO", ""))
        if not prefixes:
            return self.app(environ, start_response)

        # A path spelt with dot segments may fall under two gates (as written and as
        # resolved): it needs access to each.
        header, mount = environ.get("HTTP_COOKIE", ""), environ.get("SCRIPT_NAME", "")
        until = None
        for prefix in prefixes:
            gate = self._parts[prefix]
            found = gate.tokens.check_cookie(header, self.config.cookie_name, mount, prefix)
            if found is None and not self._crawler_reads(environ):
                # api_base may be this very server, unable to answer our call (self_call)
                stuck = cannot_call_itself(environ, self.config.api_base)
                if stuck:
                    return without_calls(stuck, self._gate, gate, prefix, environ, start_response)
                return self._gate(gate, prefix, environ, start_response)
            if found is not None:
                until = found if until is None else min(until, found)
        if until is not None:
            environ["alloconv_gate.access_until"] = until

        # Let through. The response was made for one reader: no shared cache may keep it.
        def private_start_response(status, headers, exc_info=None):
            return start_response(status, private_headers(headers), exc_info)

        return self.app(environ, private_start_response)

    def _crawler_reads(self, environ) -> bool:
        """A search engine's verified crawler reads (never writes), so the page is indexed."""
        if self._crawlers is None or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return False
        crawler = self._crawlers.crawler(
            environ.get("REMOTE_ADDR") or "", environ.get("HTTP_USER_AGENT") or ""
        )
        if crawler is None:
            return False
        environ["alloconv_gate.crawler"] = crawler
        return True

    def _gate(self, gate: GateParts, prefix: str, environ, start_response):
        """No access: a code submitted, a support link used, or the gate page."""
        if _plain_page_request(environ) and (
            gate.config.codes == 1 or gate.progress_cookie not in environ.get("HTTP_COOKIE", "")
        ):  # with codes = N, a visitor who has a set under way sees its progress
            return self._plain_page(gate, environ, start_response)
        request = Request(environ)
        link = _grant_link(environ)
        if request.method == "POST" and request.content_type in (FORM_TYPE, JSON_TYPE):
            response = self._submit(gate, prefix, request)
        elif link and request.method in ("GET", "HEAD"):
            response = self._link_page(gate, request, link)
        else:
            response = self._page(gate, request, 402)
        return response(environ, start_response)

    def _plain_page(self, gate: GateParts, environ, start_response):
        """The gate page of a GET with nothing to say but the page: what every visitor
        without access, and every bot, gets.

        The same answer as :meth:`_page`'s, without WebOb: the page rendered once per
        language, order and numbers (:class:`PageCache`), with the request's own URL, and
        headers written ahead. It costs a few µs instead of tens.
        """
        numbers = tuple(cache.get() for cache in gate.numbers)
        accept_language = environ.get("HTTP_ACCEPT_LANGUAGE")
        language = language_for(gate.config.language, accept_language)
        order = likely_order(gate.config.paliers, accept_language)
        key = (language, order, numbers)
        status, page = gate.pages.get(key, lambda: self._render_plain(gate, *key))
        body = page.body(own_url(environ))
        headers = [_PAGE_TYPE, ("Content-Length", str(len(body))), *_PAGE_HEADERS[status]]
        start_response(_PAGE_STATUS[status], headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def _render_plain(self, gate: GateParts, language: str, order, numbers):
        """The plain page's status and its body but the action, as :meth:`_page` has them."""
        config = gate.config
        offers = _offers(config, numbers, language)
        status = 503 if all(number is None for number in numbers) else 402
        content = PageContent(
            language=language,
            offers=tuple(offers[index] for index in order),
            duration=config.duration,
            action="",
            template=config.template,
            codes_needed=config.codes,
        )
        return status, render_ahead(content)

    def _gate_parts(self, config: GateConfig, clock) -> GateParts:
        alloconv = GuardedClient(self._clients[config.api_key])  # see self_call
        numbers = tuple(
            NumberCache(
                alloconv.number, palier, ttl=config.number_ttl, fallback=fallback, clock=clock
            )
            for palier, fallback in zip(config.paliers, config.numbers, strict=True)
        )
        return GateParts(
            config,
            AccessTokens(config.secrets, config.prefixes, config.duration, clock, config.scope),
            Verifier(config, alloconv, self.store, clock, self._in_flight),
            numbers,
            SetProgress(config.secrets, clock),
        )

    def _cookie_value(self, environ) -> str:
        """Our cookie's value(s), joined: the tokens of any of them count."""
        return SEPARATOR.join(
            cookie_values(environ.get("HTTP_COOKIE", ""), self.config.cookie_name)
        )

    def _submit(self, gate: GateParts, prefix: str, request: Request) -> Response:
        """A code typed on the page (or sent as JSON): read safely, to the verifier."""
        if not _same_origin(request):
            log.warning("refused a code submission from origin %r", request.headers["Origin"])
            return self._page(gate, request, 403, "error_forbidden")
        length = request.content_length
        if length is not None and length < 0:  # webob would read such a body whole
            return self._page(gate, request, 400, "error_malformed")
        if (length or 0) > MAX_FORM_BYTES:
            return self._page(gate, request, 413, "error_too_large")
        try:
            body = request.body_file.read(MAX_FORM_BYTES + 1)
        except DisconnectionError:  # the body ended before its Content-Length
            return self._page(gate, request, 400, "error_malformed")
        if len(body) > MAX_FORM_BYTES:
            return self._page(gate, request, 413, "error_too_large")
        fields = _read_fields(body, request.content_type)
        if fields is None:
            return self._page(gate, request, 400, "error_malformed")
        if GRANT_PARAM in fields:
            return self._use_link(gate, request, fields[GRANT_PARAM][0])
        codes = [code.strip() for code in fields.get("code", [])] or [""]
        back_to = own_url(request.environ)  # computed before the code may be spent
        lost_before = self._lost.load(self._cookies(request, gate.lost_cookie), request.script_name)
        visit = Visit(
            client=_client(request),
            mount=request.script_name,
            prefix=prefix,
            set_id=self._set_id(gate, request) if gate.config.codes > 1 else None,
            lost=tuple(attempt for attempt, sold in lost_before if prefix in sold),
        )
        decision = gate.verifier.verify(codes, visit)
        if decision.granted:
            response = self._grant(gate, request, back_to, decision)
            if gate.config.codes > 1:
                response.delete_cookie(gate.progress_cookie, path="/")
            return response
        response = self._page(
            gate, request, decision.status, decision.error, decision.code, decision
        )
        if decision.set_id is not None and decision.passed:
            progress = gate.progress.dump(decision.set_id, gate.config.prefixes, visit.mount)
            self._set_cookie(
                request, response, gate.progress_cookie, progress, SetProgress.LIFETIME
            )
        if decision.lost is not None:
            entry = (decision.lost, gate.config.prefixes)
            lost = self._lost.dump([*lost_before, entry], visit.mount)
            self._set_cookie(request, response, gate.lost_cookie, lost, LostAnswers.LIFETIME)
        return response

    def _set_cookie(self, request: Request, response: Response, name, value, max_age) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self._secure(request),
            httponly=True,
            samesite="lax",
        )

    def _cookies(self, request: Request, name: str) -> list[str]:
        return cookie_values(request.environ.get("HTTP_COOKIE", ""), name)

    def _set_id(self, gate: GateParts, request: Request) -> str | None:
        """The visitor's unfinished set of this gate (the progress cookie), if any."""
        for value in self._cookies(request, gate.progress_cookie):
            set_id = gate.progress.load(value, gate.config.prefixes, request.script_name)
            if set_id is not None:
                return set_id
        return None

    def _link_page(self, gate: GateParts, request: Request, token: str) -> Response:
        """A support link opened: a button that uses it (a GET never does)."""
        language = choose_language(gate.config.language, request)
        body = render_link_page(language, own_url(request.environ), token)
        response = Response(body=body, content_type="text/html", charset="utf-8")
        response.cache_control = "no-store"
        # The link is in the URL, so it must not travel to other sites: "same-origin"
        # (from SECURITY_HEADERS) keeps it on this one. Not "no-referrer": with it,
        # Chromium posts the button's form with "Origin: null", which the gate refuses.
        response.headers.extend(SECURITY_HEADERS)
        return response

    def _use_link(self, gate: GateParts, request: Request, token: str) -> Response:
        """A support link: the cookie, and back to the same page without the link."""
        decision = gate.verifier.use_link(token, _client(request), request.script_name)
        if not decision.granted:
            return self._page(gate, request, decision.status, decision.error, "", decision)
        query = [(k, v) for k, v in parse_qsl(request.query_string) if k != GRANT_PARAM]
        path = own_url({**request.environ, "QUERY_STRING": urlencode(query)})
        return self._grant(gate, request, path, decision)

    def _grant(
        self, gate: GateParts, request: Request, back_to: str, decision: Decision
    ) -> Response:
        """303 back to the page the visitor wanted (JSON: 200), with the access cookie."""
        until = decision.until
        if _wants_json(request):
            response = _json(200, {"access_until": until})
        else:
            response = SameSiteRedirect(status=303, location=back_to)
            response.cache_control = "no-store"
        mount = request.script_name
        tokens = gate.tokens
        token = tokens.issue(until=until, mount=mount, prefixes=decision.prefixes or None)
        value = tokens.cookie_value(token, self._cookie_value(request.environ), mount)
        self._set_cookie(request, response, self.config.cookie_name, value, tokens.max_age(value))
        return response

    def _secure(self, request: Request) -> bool:
        secure = self.config.cookie_secure
        return request.scheme == "https" if secure is None else secure

    def _page(
        self,
        gate: GateParts,
        request: Request,
        status: int,
        error: str | None = None,
        code: str = "",
        decision: Decision | None = None,
    ) -> Response:
        """The gate page (or its JSON twin); 503 instead of 402 when there is no number."""
        config = gate.config
        language = choose_language(config.language, request)
        numbers = tuple(cache.get() for cache in gate.numbers)
        offers = _offers(config, numbers, language)
        if all(number is None for number in numbers) and status == 402:
            status = 503
        order = likely_order(config.paliers, request.environ.get("HTTP_ACCEPT_LANGUAGE"))
        offers = [offers[index] for index in order]
        reference = decision.reference if decision else ""
        passed = self._codes_passed(gate, request, decision)
        if _wants_json(request):
            body = _json_body(gate, request, offers, order, error, language, reference, passed)
            response = _json(status, body)
        else:
            content = PageContent(
                language=language,
                offers=tuple(offers),
                duration=config.duration,
                action=own_url(request.environ),
                error=error,
                code=code,
                reference=reference,
                template=config.template,
                codes_needed=config.codes,
                codes_passed=passed,
            )
            if reference:  # one visitor's lost answer: no page to share
                body = render(content)
            else:  # a refusal as many get it (junk among them): rendered ahead
                key = (language, order, numbers, error, passed)
                ahead = gate.pages.get(key, lambda: render_ahead(content, code=True))
                body = ahead.body(content.action, code)
            response = Response(body=body, status=status, content_type="text/html", charset="utf-8")
            response.headers.extend(SECURITY_HEADERS)
        response.cache_control = "no-store"
        if status in (429, 503):
            retry_after = decision.retry_after if decision else None
            response.retry_after = retry_after or RETRY_AFTER
        return response

    def _codes_passed(self, gate: GateParts, request: Request, decision: Decision | None) -> int:
        """With ``codes = N``: how many codes count in the visitor's set."""
        if gate.config.codes == 1:
            return 0
        if decision is not None and decision.set_id is not None:
            passed = decision.passed
        else:
            passed = gate.verifier.progress(self._set_id(gate, request), request.script_name)
        # A set that holds enough codes since `codes` was lowered still shows one field:
        # any submission then completes it (see Verifier.verify).
        return min(passed, gate.config.codes - 1)


class SameSiteRedirect(Response):
    """A redirect whose ``Location`` is sent as given, relative.

    WebOb makes ``Location`` absolute from the Host header and the scheme the app sees,
    which behind a TLS-terminating proxy would send the visitor to http://.
    """

    def __call__(self, environ, start_response):
        start_response(self.status, self.headerlist)
        return []


# RFC 3986 path characters; everything else is percent-encoded.
_PATH_SAFE = "/!$&'()*+,;=:@"
_QUERY_SAFE = _PATH_SAFE + "?%"


def own_url(environ) -> str:
    """The request's own path and query as a same-site URL, whatever bytes it holds.

    PATH_INFO holds the decoded bytes of the path as latin-1 (PEP 3333), and may be no
    valid UTF-8 (``/premium/caf%E9``), so it is encoded back from its bytes. A backslash
    or a control character is percent-encoded, and the leading slashes collapsed, so that
    ``//evil.example/../premium`` or ``/\\evil.example`` never becomes a link to another site.
    """
    path = _quote_wsgi(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), _PATH_SAFE)
    query = environ.get("QUERY_STRING", "")
    url = "/" + path.lstrip("/")
    return f"{url}?{_quote_wsgi(query, _QUERY_SAFE)}" if query else url


def _quote_wsgi(text: str, safe: str) -> str:
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:  # not from a PEP 3333 server; be lenient
        raw = text.encode("utf-8", "surrogateescape")
    return quote(raw, safe=safe)


def _client(request: Request) -> str:
    """The client as the limits count it: an IPv4 address, or an IPv6 client's /64."""
    return client_key(request.remote_addr or "")


def _grant_link(environ) -> str | None:
    """The support link's token in the query string, if there is one."""
    query = environ.get("QUERY_STRING", "")
    if GRANT_PARAM not in query:
        return None
    for key, value in parse_qsl(query, errors="replace"):
        if key == GRANT_PARAM:
            return value
    return None


def _same_origin(request: Request) -> bool:
    """False when the ``Origin`` header names another site (or is ``null``).

    Schemes are not compared: behind a TLS-terminating proxy the app sees http while the
    browser says https. Hosts and explicit ports are.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and _strip_default_port(netloc) == _strip_default_port(request.host.lower())


def _strip_default_port(host: str) -> str:
    for port in (":80", ":443"):
        if host.endswith(port):
            return host[: -len(port)]
    return host


def _read_fields(body: bytes, content_type: str) -> dict[str, list[str]] | None:
    """The submitted fields (each a list of values), or None when the body is unreadable.

    JSON: ``{"code": "..."}``, or ``{"codes": ["...", "..."]}`` for a gate with codes = N.
    """
    try:
        if content_type == JSON_TYPE:
            if body.count(b"[") + body.count(b"{") > MAX_JSON_BRACKETS:
                return None  # no submission nests; parsing [[[[... would recurse deep
            data = json.loads(body.decode("utf-8"))
            if not isinstance(data, dict):
                return None
            # "\ud800" is valid JSON but no text: a lone surrogate cannot be encoded again
            json.dumps(data, ensure_ascii=False).encode("utf-8")
            fields = {k: [v] for k, v in data.items() if isinstance(v, str)}
            codes = data.get("codes")
            if isinstance(codes, list):
                fields["code"] = [c for c in codes[:8] if isinstance(c, str)]
            return fields
        return parse_qs(body.decode("ascii"), errors="strict", max_num_fields=16)
    except (UnicodeDecodeError, ValueError, RecursionError):  # [[[[... nests too deep
        return None


def _wants_json(request: Request) -> bool:
    """Whether the client prefers JSON to HTML (``Accept``), or sent JSON."""
    if request.content_type == JSON_TYPE:
        return True
    return _prefers_json(request.environ.get("HTTP_ACCEPT"))


def _offers(config: GateConfig, numbers, language: str) -> list[Offer]:
    """Each palier's number (None: unknown) with its price, in the config's order."""
    return [Offer(number, config.notice(index, language)) for index, number in enumerate(numbers)]


def _plain_page_request(environ) -> bool:
    """Whether the gate page is the whole answer, whatever else the request holds: a GET
    (or HEAD) that uses no support link and wants HTML."""
    return (
        environ.get("REQUEST_METHOD") in ("GET", "HEAD")
        and GRANT_PARAM not in environ.get("QUERY_STRING", "")
        and environ.get("CONTENT_TYPE", "").split(";", 1)[0] != JSON_TYPE
        and not _prefers_json(environ.get("HTTP_ACCEPT"))
    )


def _prefers_json(accept: str | None) -> bool:
    """Whether an ``Accept`` header (None: none) ranks JSON above HTML.

    Remembered per header text, as the language is (see :mod:`alloconv_gate.languages`):
    parsing it costs more than the rest of the gate page.
    """
    if accept is not None and len(accept) > MEMO_MAX_CHARS:
        return _ranks_json_first(accept)
    return _ranks_json_first_memo(accept)


def _ranks_json_first(accept: str | None) -> bool:
    offers = create_accept_header(accept).acceptable_offers(["text/html", JSON_TYPE])
    return bool(offers) and offers[0][0] == JSON_TYPE


_ranks_json_first_memo = functools.lru_cache(maxsize=MEMO_SIZE)(_ranks_json_first)


def _json(status: int, data: dict) -> Response:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    return Response(body=body, status=status, content_type=JSON_TYPE, charset="utf-8")


def _json_body(gate, request, offers, order, error, language, reference, passed) -> dict:
    """How to pay, for programs: HTTP 402 with the same facts as the page."""
    config = gate.config
    data = {
        "gate": config.name,
        "paliers": [
            {
                "palier": config.paliers[index],
                "number": offer.number,
                "price_notice": offer.price_notice,
            }
            for index, offer in zip(order, offers, strict=True)
        ],
        "duration": config.duration,
        "submit": {
            "method": "POST",
            "url": own_url(request.environ),
            "field": "code",
            "content_types": [JSON_TYPE, FORM_TYPE],
        },
    }
    if error:
        data["error"] = JSON_ERRORS.get(error, "invalid")
        data["message"] = catalogue(language)[error].format(
            reference=reference, done=passed, n=config.codes
        )
        if reference:
            data["reference"] = reference
    return data
