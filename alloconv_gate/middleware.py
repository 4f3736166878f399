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
from urllib.parse import parse_qs, quote, urlsplit

import requests
from webob import Request, Response

from .alloconv import AlloConv, Verdict
from .caching import private_headers
from .codes import local_problem, mask_code, reference
from .config import parse_options
from .numbers import NumberCache
from .page import PageContent, render
from .paths import PrefixMatcher
from .tokens import SEPARATOR, AccessTokens, cookie_values

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
_VERDICT_STATUS = {
    Verdict.INVALID: (402, "error_invalid"),
    Verdict.WRONG_PALIER: (402, "error_wrong_palier"),
}


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
        if request.method == "POST" and request.content_type == FORM_TYPE:
            response = self._submit(request)
        else:
            response = self._page(request, 402)
        return response(environ, start_response)

    def _cookie_value(self, environ) -> str:
        """Our cookie's value(s), joined: the tokens of any of them count."""
        return SEPARATOR.join(
            cookie_values(environ.get("HTTP_COOKIE", ""), self.config.cookie_name)
        )

    def _submit(self, request: Request) -> Response:
        """A code typed on the page: check it here, then ask AlloConv."""
        if not _same_origin(request):
            log.warning("refused a code submission from origin %r", request.headers["Origin"])
            return self._page(request, 403, "error_forbidden")
        if (request.content_length or 0) > MAX_FORM_BYTES:
            return self._page(request, 413, "error_too_large")
        body = request.body_file.read(MAX_FORM_BYTES + 1)
        if len(body) > MAX_FORM_BYTES:
            return self._page(request, 413, "error_too_large")
        try:
            fields = parse_qs(body.decode("ascii"), errors="strict", max_num_fields=16)
        except (UnicodeDecodeError, ValueError):
            return self._page(request, 400, "error_malformed")
        code = fields.get("code", [""])[0].strip()
        problem = local_problem(code)
        if problem:
            return self._page(request, 400, problem, code)

        back_to = own_url(request.environ)  # computed before the code may be spent
        check = self._alloconv.verify(code)
        where = f"code {mask_code(code)} from {request.remote_addr} (palier {self.config.palier})"
        if check.verdict is Verdict.OK:
            log.info("%s accepted in %.2fs", where, check.latency)
            return self._grant(request, back_to)
        if check.verdict.is_visitors_fault:
            log.info("%s refused: %s", where, check.answer)
            status, message = _VERDICT_STATUS[check.verdict]
            return self._page(request, status, message, code)
        ref = reference(self.config.secrets[0], code)
        log.error(
            "%s not verified (reference %s): %s: %r", where, ref, check.verdict.value, check.answer
        )
        if check.answer.upper() == "ERR99":
            log.error("AlloConv refused the API key (ERR99): check the 'api_key' option")
        # The answer was lost after the code was sent: it may have been spent.
        message = "error_lost" if check.verdict is Verdict.UNKNOWN else "error_unavailable"
        return self._page(request, 503, message, code, reference=ref)

    def _grant(self, request: Request, back_to: str) -> Response:
        """303 back to the page the visitor wanted, with the access cookie."""
        response = SameSiteRedirect(status=303, location=back_to)
        response.cache_control = "no-store"
        mount = request.script_name
        value = self._tokens.cookie_value(
            self._tokens.issue(mount=mount), self._cookie_value(request.environ), mount
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
        reference: str = "",
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
            reference=reference,
        )
        response = Response(
            body=render(content), status=status, content_type="text/html", charset="utf-8"
        )
        response.cache_control = "no-store"
        if status == 503:
            response.retry_after = RETRY_AFTER
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
