"""A gate whose ``api_base`` is the very server answering it, when that server cannot
answer a second request: the demo's sandbox mounted beside the site, served one request at
a time.

The gate calls ``api_base`` over HTTP while it holds the request it is answering, so when
``api_base`` is its own server (``api_base = http://127.0.0.1:6543/sandbox``, the sandbox
mounted at ``/sandbox``) the call needs a second worker of that server. A server that
answers one request at a time (one process, one thread: ``gunicorn --workers 1`` with its
default sync worker, ``wsgiref``) has none: the call would wait for the worker that makes
it until ``timeout``, the page would show no number, and a code would be journaled a lost
answer, then sold when the worker frees itself to read the call. So while such a request
is answered no call to ``api_base`` is made: the page shows the fallback number (or
answers 503), a submitted code gets 503 and stays unspent (journaled ``unavailable``, not
a lost answer), and each call not made logs an ERROR naming the fix.

Several one-threaded processes (``gunicorn --workers 2``) can answer: another worker takes
the call while one is free. A WARNING, once per process, says that as many submissions at
once as there are workers wait for the timeout.

The server is recognised from the environ alone: ``api_base``'s port is ``SERVER_PORT``
and its host is a loopback address (never from a name the visitor may send).
Nothing here is on the fast paths: only a request the gate answers itself comes here.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from urllib.parse import urlsplit

from .alloconv import Check, NumberUnavailable, Verdict
from .config import is_loopback

log = logging.getLogger("alloconv_gate")

FIX = (
    "serve the site with threads (gunicorn --threads 4 ..., waitress), or serve "
    "api_base (the sandbox) from another server"
)
_no_calls: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "alloconv_gate_no_calls", default=None
)
_warned = False


def cannot_call_itself(environ, api_base: str) -> str | None:
    """Why this request cannot call ``api_base`` (it is this one-at-a-time server), or None."""
    global _warned
    if environ.get("wsgi.multithread") or not _is_this_server(environ, api_base):
        return None
    if environ.get("wsgi.multiprocess"):
        if not _warned:
            _warned = True
            log.warning(
                "api_base %s is this server, whose workers answer one request at a time: "
                "each code submission holds one worker while its check needs another, so as "
                "many submissions at once as workers wait for the timeout; %s",
                api_base,
                FIX,
            )
        return None
    return f"api_base {api_base} is this server, which answers one request at a time"


def without_calls(reason: str, answer, *args):
    """``answer(*args)``, during which a :class:`GuardedClient` calls nothing."""
    token = _no_calls.set(reason)
    try:
        return answer(*args)
    finally:
        _no_calls.reset(token)


class GuardedClient:
    """An AlloConv client that makes no call inside :func:`without_calls`.

    There ``number`` raises :class:`NumberUnavailable` and ``verify`` answers
    ``UNREACHABLE`` (the code was never sent, so it is unspent) at once, with an ERROR log.
    """

    def __init__(self, client):
        self._client = client

    def number(self, palier: str) -> str:
        reason = _no_calls.get()
        if reason is None:
            return self._client.number(palier)
        log.error("the number of palier %r not asked: %s; %s", palier, reason, FIX)
        raise NumberUnavailable(f"not asked: {reason}")

    def verify(self, code: str) -> Check:
        reason = _no_calls.get()
        if reason is None:
            return self._client.verify(code)
        log.error("a code submitted got 503, not sent to AlloConv: %s; %s", reason, FIX)
        return Check(Verdict.UNREACHABLE, f"not sent: {reason}", 0.0)


def _is_this_server(environ, api_base: str) -> bool:
    """``api_base`` is on loopback, at this server's port.

    Not by name: the Host header (and gunicorn's ``SERVER_NAME``, taken from it) is the
    visitor's word, and a visitor naming AlloConv's host must not stop the calls (and
    the number) of everyone else. A site that calls itself does so on loopback: http is
    refused elsewhere.
    """
    port, host = _port_and_host(api_base)
    return port == str(environ.get("SERVER_PORT", "")) and is_loopback(host)


@functools.lru_cache(maxsize=16)
def _port_and_host(api_base: str) -> tuple[str, str]:
    """``api_base``'s port (as the environ spells ports) and host, parsed once."""
    try:
        parts = urlsplit(api_base)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "", ""
    return str(port), parts.hostname or ""
