"""Search engines' crawlers: which requests come from a verified Googlebot or Bingbot.

A User-Agent proves nothing: anyone can send ``Googlebot``. Google and Bing document the
check that only their DNS can pass: the reverse DNS (PTR) of the client address is a host
name in the engine's own domain, and the forward DNS (A/AAAA) of that name gives back the
same address. A look-alike name (``googlebot.com.evil.example``) fails the first step; a
PTR record the owner of an address wrote to claim ``crawl-1-2-3-4.googlebot.com`` fails
the second, since only Google answers for googlebot.com.

The User-Agent serves only as a pre-filter: an ordinary visitor's request costs no DNS
lookup. Answers, good and bad, are cached per address.

Only the domains the engines' *indexing* crawlers come from are trusted. Google's
verification page also lists ``google.com`` and ``googleusercontent.com``, for its
special-case crawlers and its user-triggered fetchers: those fetch on behalf of people,
and ``googleusercontent.com`` names the machines of Google Cloud's customers (a rented
VM's address reverse-resolves to ``*.bc.googleusercontent.com``, and back). Trusting them
would let anyone with a cloud VM and a Googlebot User-Agent read for free. Googlebot
itself always comes from ``crawl-*.googlebot.com`` or ``geo-crawl-*.geo.googlebot.com``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("alloconv_gate")

# How long a failed lookup (not an answer: a timeout, a SERVFAIL) keeps an address
# unverified before it is asked again.
ERROR_TTL = 60
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Engine:
    name: str
    bots: tuple[str, ...]  # User-Agent tokens its indexing crawlers send, lower-case
    domains: tuple[str, ...]  # what their reverse DNS names end with


ENGINES = {
    engine.name: engine
    for engine in (
        # Googlebot, Googlebot-Image/-News/-Video; Google-InspectionTool is Search
        # Console's URL inspection and the Rich Results Test, from the same hosts.
        Engine("google", ("googlebot", "google-inspectiontool"), (".googlebot.com",)),
        Engine("bing", ("bingbot",), (".search.msn.com",)),
    )
}


class Resolver(Protocol):
    def reverse(self, address: str) -> str | None:
        """The PTR name of ``address``, or None when it has none."""

    def forward(self, hostname: str) -> list[str]:
        """The A and AAAA addresses of ``hostname`` (empty when it has none)."""


class SystemResolver:
    """The operating system's resolver, through the standard library.

    Neither call can be given a timeout: ``socket.gethostbyaddr`` and
    ``socket.getaddrinfo`` block for as long as the system resolver takes (glibc: 5
    seconds per try, 2 tries per name server, unless ``options timeout: attempts:`` in
    /etc/resolv.conf say otherwise). Only the first request of a claimed crawler from a
    new address waits for it: :class:`CrawlerCheck` caches the answers. Any other error
    than "no such name" is raised, and the check then fails closed.
    """

    # h_errno values (netdb.h) that are answers: there is no such name.
    _NO_NAME = frozenset((1, 4))  # HOST_NOT_FOUND, NO_DATA
    _NO_ADDRESS = frozenset(
        code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code
    )

    def reverse(self, address: str) -> str | None:
        try:
            return socket.gethostbyaddr(address)[0]
        except socket.herror as exc:
            if exc.errno in self._NO_NAME:
                return None
            raise

    def forward(self, hostname: str) -> list[str]:
        try:  # the trailing dot: never a name under the host's search domains
            infos = socket.getaddrinfo(hostname + ".", None, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            if exc.errno in self._NO_ADDRESS:
                return []
            raise
        return [str(info[4][0]) for info in infos]


class CrawlerCheck:
    """Which requests come from the verified crawlers of ``engines`` (``"google"``,
    ``"bing"``).

    ``resolver`` (an object with ``reverse`` and ``forward``, see :class:`Resolver`) and
    ``clock`` are for tests. Answers are kept ``ttl`` seconds per address, for at most
    ``max_entries`` addresses (the oldest go first); a lookup that fails is retried after
    :data:`ERROR_TTL` seconds, and until then the address is not verified.

    Security: the check trusts the client address it is given. Behind a reverse proxy,
    ``REMOTE_ADDR`` must be the real client's, set by a proxy-fix middleware that trusts
    exactly as many ``X-Forwarded-For`` hops as there are proxies: one more, and a visitor
    can claim a real Googlebot address.
    """

    def __init__(
        self,
        engines: Iterable[str],
        *,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.time,
        ttl: float = 86400,
        max_entries: int = MAX_ENTRIES,
    ):
        names = tuple(dict.fromkeys(engines))
        for name in names:
            if name not in ENGINES:
                raise ValueError(f"{name!r} is not a search engine: {', '.join(ENGINES)}")
        self.engines = tuple(ENGINES[name] for name in names)
        self._resolver = resolver if resolver is not None else SystemResolver()
        self._clock = clock
        self.ttl = ttl
        self.max_entries = max_entries
        self._lock = threading.Lock()
        # address -> (time the entry expires, the engine it is verified for or None)
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()

    def claimed(self, user_agent: str) -> tuple[str, ...]:
        """The engines whose bots ``user_agent`` claims to be (no lookup)."""
        agent = user_agent.lower()
        return tuple(
            engine.name for engine in self.engines if any(bot in agent for bot in engine.bots)
        )

    def crawler(self, client_address: str, user_agent: str) -> str | None:
        """The engine whose verified crawler sent the request, or None.

        No DNS lookup unless ``user_agent`` claims one of the engines' bots.
        """
        claimed = self.claimed(user_agent)
        if not claimed:
            return None
        address = _address(client_address)
        if address is None:
            return None
        engine = self._verified(address)
        return engine if engine in claimed else None

    def is_verified(self, client_address: str, user_agent: str) -> bool:
        return self.crawler(client_address, user_agent) is not None

    def _verified(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        key = str(address)
        now = self._clock()
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and now < entry[0]:
                return entry[1]
        # Outside the lock: a slow lookup must not hold up the other threads.
        try:
            engine, host = self._lookup(address)
        except Exception as exc:  # any failure: not verified (fail closed)
            log.warning("crawler check of %s failed: %r", key, exc)
            engine, expires = None, now + min(ERROR_TTL, self.ttl)
        else:
            log.info("crawler check: %s is %s (%s)", key, host or "no name", engine or "refused")
            expires = now + self.ttl
        with self._lock:
            self._cache.pop(key, None)
            self._cache[key] = (expires, engine)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return engine

    def _lookup(self, address) -> tuple[str | None, str | None]:
        """(the engine, the host name): reverse, then forward back to ``address``."""
        host = self._resolver.reverse(str(address))
        if not host:
            return None, None
        host = host.rstrip(".").lower()
        engine = next(
            (e.name for e in self.engines if any(host.endswith(d) for d in e.domains)), None
        )
        if engine is None:
            return None, host
        if not any(_address(found) == address for found in self._resolver.forward(host)):
            return None, host
        return engine, host


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an address (an IPv4-mapped IPv6 one as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address
