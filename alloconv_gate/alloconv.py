"""The AlloConv HTTP client: the number for a palier, and the verdict on a code.

AlloConv answers plain text (``OK``, ``ERR3``, a phone number...). Checking a code
*consumes* it, so the one thing this client must never do is ask twice when the first
question may have arrived: it retries only a connection that was refused (the request
surely never left), never a timeout or a reset after sending. Such a lost answer is its
own verdict, :attr:`Verdict.UNKNOWN`, so that the caller can keep a record of it.

The API key travels in the query string (the API's design), so no URL and no exception
text built by ``requests`` or urllib3 is ever logged without :meth:`AlloConv.redact`.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import requests
from urllib3.exceptions import NewConnectionError

from .codes import mask_code

log = logging.getLogger("alloconv_gate")

MAX_ANSWER_BYTES = 4096


class RedactingFilter(logging.Filter):
    """Masks the key and the code in URLs that urllib3 logs at DEBUG level.

    urllib3 logs every request line it sends; ours carry ``cle=KEY&code1=CODE``. A site
    that turns on DEBUG logging must not write its API key or its visitors' codes.
    """

    _KEY = re.compile(r"(cle=)[^&\s\"']*")
    _CODE = re.compile(r"(code1=[^&\s\"']{0,4})[^&\s\"']*")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "cle=" in message or "code1=" in message:
            message = self._CODE.sub(r"\1****", self._KEY.sub(r"\1***", message))
            record.msg, record.args = message, ()
        return True


_REDACTING_FILTER = RedactingFilter()
logging.getLogger("urllib3.connectionpool").addFilter(_REDACTING_FILTER)


class Verdict(enum.Enum):
    """What became of a code submitted to AlloConv."""

    OK = "ok"  # valid, and now consumed
    INVALID = "invalid"  # ERR3: unknown or already used
    WRONG_PALIER = "wrong-palier"  # ERR4: valid, for a palier this site does not accept
    REFUSED = "refused"  # ERR99, ERR1, ERR2: AlloConv refused the request, code untouched
    UNREACHABLE = "unreachable"  # never sent (connect, TLS handshake, proxy): code untouched
    UNKNOWN = "unknown"  # sent, but the answer was lost (read timeout, broken connection)
    ERROR = "error"  # an answer that is none of the documented ones (HTTP error, garbage)

    @property
    def is_visitors_fault(self) -> bool:
        return self in (Verdict.INVALID, Verdict.WRONG_PALIER)


@dataclass(frozen=True)
class Check:
    """A verdict with what the webmaster needs to know about it."""

    verdict: Verdict
    answer: str  # AlloConv's answer, or a short description of what went wrong
    latency: float  # seconds spent, retries included


class NumberUnavailable(Exception):
    """api-numeros gave no number; ``configuration_error`` when it said ERR918."""

    def __init__(self, reason: str, *, configuration_error: bool = False):
        super().__init__(reason)
        self.configuration_error = configuration_error


_VERDICTS = {
    "OK": Verdict.OK,
    "ERR3": Verdict.INVALID,
    "ERR4": Verdict.WRONG_PALIER,
    "ERR99": Verdict.REFUSED,
    "ERR1": Verdict.REFUSED,
    "ERR2": Verdict.REFUSED,
}


class AlloConv:
    """A client of the two AlloConv scripts under ``api_base``.

    One ``requests.Session`` is kept for the client's life (connection reuse), and every
    call is bounded by ``timeout`` (see :meth:`_get`).
    """

    def __init__(
        self,
        api_base: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        session: requests.Session | None = None,
    ):
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self._api_key = api_key
        self._session = session or requests.Session()

    def number(self, palier: str) -> str:
        """The text to show for ``palier`` (a phone number, or an SMS keyword and number)."""
        try:
            answer = self._get("api-numeros", {"palier": palier})
        except requests.RequestException as exc:
            raise NumberUnavailable(self.redact(exc)) from None
        if answer.upper() == "ERR918":
            raise NumberUnavailable(
                f"palier {palier!r} is unknown to AlloConv (ERR918)", configuration_error=True
            )
        if not answer or answer.upper().startswith("ERR") or "<" in answer or len(answer) > 200:
            raise NumberUnavailable(f"unexpected answer {answer[:80]!r}")
        return answer

    def verify(self, code: str) -> Check:
        """Ask AlloConv whether ``code`` is good. Never raises for network trouble."""
        started = time.monotonic()
        params = {"code1": code, "cle": self._api_key}
        for attempt in (1, 2):
            try:
                answer = self._get("api-micropaiement", params)
            except requests.HTTPError as exc:
                return Check(Verdict.ERROR, self.redact(exc, code), time.monotonic() - started)
            except requests.RequestException as exc:
                if attempt == 1 and _refused(exc):
                    continue
                verdict = Verdict.UNREACHABLE if _never_sent(exc) else Verdict.UNKNOWN
                return Check(verdict, self.redact(exc, code), time.monotonic() - started)
            verdict = _VERDICTS.get(answer.upper(), Verdict.ERROR)
            # An unexpected answer may echo the request, key included.
            return Check(verdict, self.redact(answer, code)[:80], time.monotonic() - started)
        raise AssertionError("unreachable")  # pragma: no cover

    def redact(self, what: object, code: str | None = None) -> str:
        """``what`` as text with the API key (and ``code``, if given) masked."""
        text = f"{type(what).__name__}: {what}" if isinstance(what, BaseException) else str(what)
        for secret in (self._api_key, quote_plus(self._api_key), quote(self._api_key)):
            text = text.replace(secret, "***")
        if code:
            text = text.replace(code, mask_code(code))
        return text

    def _get(self, script: str, params: dict[str, str]) -> str:
        """The answer of ``script``, stripped; raises ``requests.RequestException``.

        ``timeout`` bounds connecting and each read, and the body must have arrived
        within ``timeout`` of the start, so that an answer trickling in byte by byte does
        not hold the visitor (and a server thread) for long.
        """
        deadline = time.monotonic() + self.timeout
        with self._session.get(
            f"{self.api_base}/{script}",
            params=params,
            timeout=self.timeout,
            stream=True,
            allow_redirects=False,
        ) as response:
            if response.status_code != 200:
                raise requests.HTTPError(f"HTTP {response.status_code}", response=response)
            body = b""
            for chunk in response.iter_content(chunk_size=None):
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    break
                if time.monotonic() > deadline:
                    raise requests.ReadTimeout(f"answer not complete within {self.timeout}s")
        # utf-8-sig: an answer that starts with a byte-order mark is still "OK".
        return body[:MAX_ANSWER_BYTES].decode("utf-8-sig", "replace").strip()


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether the request surely never reached AlloConv, so that the code is unspent.

    That is anything that fails before the request is written: connecting (refused,
    unknown host, connect timeout), the TLS handshake (an expired or untrusted
    certificate, a server that never finishes it) and the proxy (refused, or a tunnel
    that never opens). Only what fails after sending (a read timeout, a reset or a closed
    connection while waiting) may have consumed the code.

    urllib3 reports a timeout during the TLS handshake or a proxy's CONNECT as a *read*
    timeout, so where the failure happened is read from the traceback of its cause.
    """
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    if isinstance(exc, requests.exceptions.ProxyError) or _refused(exc):
        return True
    return _failed_while_connecting(exc)


# Where the connection (TCP, TLS handshake, proxy tunnel) is made, in urllib3 and http.client.
_CONNECTING = frozenset(
    {"connect", "_new_conn", "_tunnel", "do_handshake", "ssl_wrap_socket", "_connect_tls_proxy"}
)
# Where the request is written and the answer read.
_EXCHANGING = frozenset({"getresponse", "_send_output", "_send_request", "send_bytes"})


def _failed_while_connecting(exc: BaseException) -> bool:
    """Whether the deepest cause of ``exc`` was raised while connecting, before any byte
    of the request was written (and not while writing it or reading the answer)."""
    seen: set[int] = set()
    innermost = exc
    while id(innermost) not in seen and len(seen) < 16:
        seen.add(id(innermost))
        nested = innermost.__cause__ or innermost.__context__
        if nested is None:
            break
        innermost = nested
    names = []
    trace = innermost.__traceback__
    while trace is not None:
        names.append(trace.tb_frame.f_code.co_name)
        trace = trace.tb_next
    # The frames from where it was caught down to where it was raised: the last ones
    # that say what was going on decide.
    for name in reversed(names):
        if name in _EXCHANGING:
            return False
        if name in _CONNECTING:
            return True
    return False


def _refused(exc: requests.RequestException) -> bool:
    """Whether the connection was refused (or the host unknown): worth one quick retry.

    A connect timeout is not retried: that would double the visitor's wait.
    """
    if type(exc) is not requests.ConnectionError or not exc.args:
        return False
    reason = getattr(exc.args[0], "reason", None)
    return isinstance(reason, NewConnectionError)
