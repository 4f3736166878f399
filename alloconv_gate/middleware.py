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
import re
import time
from urllib.parse import parse_qs, urlsplit

import requests
from webob import Request, Response

from .alloconv import AlloConv, Verdict, mask_code
from .caching import private_headers
from .config import parse_options
from .numbers import NumberCache
from .page import PageContent, render
from .paths import PrefixMatcher
from .tokens import SEPARATOR, AccessTokens

log = logging.getLogger("alloconv_gate")

MAX_FORM_BYTES = 4096
MIN_CODE_LENGTH = 8
MAX_CODE_LENGTH = 64
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
        # The name, where it starts the header or follows a separator, and its value.
        self._cookie = re.compile(rf'(?<![^;\s]){re.escape(config.cookie_name)}="?([^";]*)')
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

        until = self._tokens.check(self._cookie_value(environ))
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
        """Our cookie's value, read without parsing every cookie of the site.

        A browser may send the name twice (set with different paths); the values are
        joined so that a good token in any of them counts.
        """
        return SEPARATOR.join(self._cookie.findall(environ.get("HTTP_COOKIE", "")))

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

        check = self._alloconv.verify(code)
        where = f"code {mask_code(code)} from {request.remote_addr} (palier {self.config.palier})"
        if check.verdict is Verdict.OK:
            log.info("%s accepted in %.2fs", where, check.latency)
            return self._grant(request)
        if check.verdict.is_visitors_fault:
            log.info("%s refused: %s", where, check.answer)
            status, message = _VERDICT_STATUS[check.verdict]
            return self._page(request, status, message, code)
        log.error("%s not verified: %s: %s", where, check.verdict.value, check.answer)
        if check.answer.upper() == "ERR99":
            log.error("AlloConv refused the API key (ERR99): check the 'api_key' option")
        return self._page(request, 503, "error_unavailable", code)

    def _grant(self, request: Request) -> Response:
        """303 back to the page the visitor wanted, with the access cookie."""
        response = Response(status=303, location=_own_url(request))
        response.cache_control = "no-store"
        secure = self.config.cookie_secure
        response.set_cookie(
            self.config.cookie_name,
            self._tokens.cookie_value(self._tokens.issue(), self._cookie_value(request.environ)),
            max_age=self.config.duration,
            path="/",
            secure=request.scheme == "https" if secure is None else secure,
            httponly=True,
            samesite="lax",
        )
        return response

    def _page(
        self, request: Request, status: int, error: str | None = None, code: str = ""
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
            action=_own_url(request),
            error=error,
            code=code,
        )
        response = Response(
            body=render(content), status=status, content_type="text/html", charset="utf-8"
        )
        response.cache_control = "no-store"
        if status == 503:
            response.retry_after = RETRY_AFTER
        response.headers.extend(SECURITY_HEADERS)
        return response


def local_problem(code: str) -> str | None:
    """Why ``code`` cannot be an AlloConv code (a catalogue key), or None if it may be."""
    if not code:
        return "error_empty"
    if len(code) < MIN_CODE_LENGTH:
        return "error_too_short"
    if len(code) > MAX_CODE_LENGTH:
        return "error_too_long"
    if not (code.isascii() and code.isalnum()):
        return "error_characters"
    return None


def _own_url(request: Request) -> str:
    """The request's path and query, as a same-site URL.

    ``path_qs`` percent-encodes what is unsafe (a backslash among it); collapsing leading
    slashes keeps ``//evil.example/../premium`` from becoming a link to another site.
    """
    return "/" + request.path_qs.lstrip("/")


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
