"""The ``Gate`` WSGI middleware: AlloConv-paid access to some URL prefixes of any app.

A request goes one way through :meth:`Gate.__call__`:

1. not under a protected prefix: the app, untouched;
2. a valid access cookie: the app, its response made private to the visitor;
3. a code submitted: local check, then AlloConv, then a cookie or the page with the error;
4. anything else: the gate page (402) with the number to call.

The first two are the fast paths every page view of a site takes: they read the environ
and check one signature, and build nothing else.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

import requests
from webob import Request, Response
from webob.request import DisconnectionError

from .alloconv import AlloConv
from .caching import private_headers
from .config import ConfigError, parse_options
from .numbers import NumberCache
from .page import PageContent, render, render_link_page
from .paths import PrefixMatcher
from .store import StoreError, open_store
from .tokens import GRANT_PARAM, SEPARATOR, AccessTokens, cookie_values
from .verification import Decision, Verifier

log = logging.getLogger("alloconv_gate")

MAX_FORM_BYTES = 4096
RETRY_AFTER = 60  # seconds, on 503 answers
FORM_TYPE = "application/x-www-form-urlencoded"
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


class Gate:
    """WSGI middleware selling access to ``prefixes`` of ``app`` with AlloConv codes.

    Options are those of the ini file (see the README), as keyword arguments; strings are
    converted exactly as the ini's are. A bad option raises ``ConfigError`` here, at
    start-up. ``clock`` (a ``time.time``-like callable) and ``session`` (a
    ``requests.Session`` for AlloConv calls) are for tests; ``here`` is the folder that
    relative file paths are read from.
    """

    def __init__(
        self,
        app,
        *,
        clock=time.time,
        session: requests.Session | None = None,
        here: str | None = None,
        **options,
    ):
        self.app = app
        self.config = config = parse_options(options, here=here)
        self._paths = PrefixMatcher(config.prefixes)
        self._tokens = AccessTokens(config.secrets, config.scope, config.duration, clock)
        self._alloconv = AlloConv(
            config.api_base, config.api_key, timeout=config.timeout, session=session
        )
        try:
            self.store = open_store(config.store)
        except StoreError as exc:
            raise ConfigError("store", str(exc)) from None
        if self.store.warning:
            log.warning("%s", self.store.warning)
        self._verifier = Verifier(config, self._alloconv, self.store, clock)
        self._numbers = NumberCache(
            self._alloconv.number,
            config.palier,
            ttl=config.number_ttl,
            fallback=config.number,
            clock=clock,
        )

    def __call__(self, environ, start_response):
        if self._paths.match(environ.get("PATH_INFO", "")) is None:
            return self.app(environ, start_response)

        until = self._tokens.check(self._cookie_value(environ), environ.get("SCRIPT_NAME", ""))
        if until is not None:
            environ["alloconv_gate.access_until"] = until

            def private_start_response(status, headers, exc_info=None):
                return start_response(status, private_headers(headers), exc_info)

            return self.app(environ, private_start_response)

        request = Request(environ)
        link = _grant_link(environ)
        if request.method == "POST" and request.content_type == FORM_TYPE:
            response = self._submit(request)
        elif link and request.method in ("GET", "HEAD"):
            response = self._link_page(request, link)
        else:
            response = self._page(request, 402)
        return response(environ, start_response)

    def _cookie_value(self, environ) -> str:
        """Our cookie's value(s), joined: the tokens of any of them count."""
        return SEPARATOR.join(
            cookie_values(environ.get("HTTP_COOKIE", ""), self.config.cookie_name)
        )

    def _submit(self, request: Request) -> Response:
        """A code typed on the page: the visitor's form, read safely, to the verifier."""
        if not _same_origin(request):
            log.warning("refused a code submission from origin %r", request.headers["Origin"])
            return self._page(request, 403, "error_forbidden")
        length = request.content_length
        if length is not None and length < 0:  # webob would read such a body whole
            return self._page(request, 400, "error_malformed")
        if (length or 0) > MAX_FORM_BYTES:
            return self._page(request, 413, "error_too_large")
        try:
            body = request.body_file.read(MAX_FORM_BYTES + 1)
        except DisconnectionError:  # the body ended before its Content-Length
            return self._page(request, 400, "error_malformed")
        if len(body) > MAX_FORM_BYTES:
            return self._page(request, 413, "error_too_large")
        try:
            fields = parse_qs(body.decode("ascii"), errors="strict", max_num_fields=16)
        except (UnicodeDecodeError, ValueError):
            return self._page(request, 400, "error_malformed")
        if GRANT_PARAM in fields:
            return self._use_link(request, fields[GRANT_PARAM][0])
        code = fields.get("code", [""])[0].strip()
        back_to = own_url(request.environ)  # computed before the code may be spent
        decision = self._verifier.submit(code, _client(request), self._gate_id(request))
        if decision.granted:
            return self._grant(request, back_to, decision.until)
        return self._page(request, decision.status, decision.error, code, decision)

    def _link_page(self, request: Request, token: str) -> Response:
        """A support link opened: a button that uses it (a GET never does)."""
        body = render_link_page(self.config.language, own_url(request.environ), token)
        response = Response(body=body, content_type="text/html", charset="utf-8")
        response.cache_control = "no-store"
        response.headers.extend(SECURITY_HEADERS)
        response.headers["Referrer-Policy"] = "no-referrer"  # the link is in the URL
        return response

    def _use_link(self, request: Request, token: str) -> Response:
        """A support link: the cookie, and back to the same page without the link."""
        decision = self._verifier.use_link(token, _client(request), self._gate_id(request))
        if not decision.granted:
            return self._page(request, decision.status, decision.error, "", decision)
        query = [(k, v) for k, v in parse_qsl(request.query_string) if k != GRANT_PARAM]
        path = own_url({**request.environ, "QUERY_STRING": urlencode(query)})
        return self._grant(request, path, decision.until)

    def _gate_id(self, request: Request) -> str:
        """This gate, as the store knows it: its scope, and where it is mounted."""
        mount = request.script_name
        return f"{self.config.scope}@{mount}" if mount else self.config.scope

    def _grant(self, request: Request, back_to: str, until: int) -> Response:
        """303 back to the page the visitor wanted, with a cookie good until ``until``."""
        response = SameSiteRedirect(status=303, location=back_to)
        response.cache_control = "no-store"
        mount = request.script_name
        value = self._tokens.cookie_value(
            self._tokens.issue(until=until, mount=mount), self._cookie_value(request.environ), mount
        )
        secure = self.config.cookie_secure
        response.set_cookie(
            self.config.cookie_name,
            value,
            max_age=self._tokens.max_age(value),
            path="/",
            secure=request.scheme == "https" if secure is None else secure,
            httponly=True,
            samesite="lax",
        )
        return response

    def _page(
        self,
        request: Request,
        status: int,
        error: str | None = None,
        code: str = "",
        decision: Decision | None = None,
    ) -> Response:
        """The gate page; 503 instead of 402 when there is no number to show."""
        number = self._numbers.get()
        if number is None and status == 402:
            status = 503
        content = PageContent(
            language=self.config.language,
            number=number,
            price_notice=self.config.price_notice,
            duration=self.config.duration,
            action=own_url(request.environ),
            error=error,
            code=code,
            reference=decision.reference if decision else "",
        )
        response = Response(
            body=render(content), status=status, content_type="text/html", charset="utf-8"
        )
        response.cache_control = "no-store"
        if status in (429, 503):
            retry_after = decision.retry_after if decision else None
            response.retry_after = retry_after or RETRY_AFTER
        response.headers.extend(SECURITY_HEADERS)
        return response


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
    return request.remote_addr or "-"


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
