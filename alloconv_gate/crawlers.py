"""Search engines' crawlers: which requests come from a verified Googlebot or Bingbot.

A User-Agent proves nothing: anyone can send ``Googlebot``. Google and Bing document the
check that only their DNS can pass: the reverse DNS (PTR) of the client address is a host
name in the engine's own domain, and the forward DNS (A/AAAA) of that name gives back the
same address. A look-alike name (``googlebot.com.evil.example``) fails the first step; a
PTR record the owner of an address wrote to claim ``crawl-1-2-3-4.googlebot.com`` fails
the second, since only Google answers for googlebot.com.

The User-Agent serves only as a pre-filter: an ordinary visitor's request costs no DNS
lookup. Answers, good and bad, are cached per address.

The check must not let a burst of requests claiming to be crawlers hold the site: the
system resolver cannot be timed out, and whoever owns an address also owns its reverse
zone, so can make its PTR answer as slow as the resolver allows. Hence each lookup runs
in a daemon thread of its own, never in the server's thread; one address has at most one
lookup running, which every request from it shares; at most :data:`MAX_LOOKUPS` run at
once; at most :data:`MAX_WAITING` server threads wait for one, each until the lookup's
deadline (:data:`LOOKUP_DEADLINE` after it started). Any request that cannot wait, or
whose lookup misses its deadline, is an ordinary visitor (the gate page, never access);
a late answer is still cached for the next request.

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

from .clients import network_key

log = logging.getLogger("alloconv_gate")

# How long a failed lookup (not an answer: a timeout, a SERVFAIL) keeps an address
# unverified before it is asked again.
ERROR_TTL = 60
MAX_ENTRIES = 10_000
# DNS lookups running at once (in their own threads), per check (one per filter section).
# Beyond it, a new address is an ordinary visitor: a lookup stuck in the resolver keeps
# its place until the resolver gives up: a hostile reverse zone costs four threads of
# ours at most, none of the server's.
MAX_LOOKUPS = 4
# Server threads waiting at once for a lookup's answer. Fewer than the lookups and than
# any server's threads (waitress's default is 4): an address whose PTR answers just
# before the deadline, again and again, holds this many threads and no more.
MAX_WAITING = 2
# Seconds a request waits for its address's lookup, counted from the lookup's start. A
# crawler's PTR is answered in milliseconds from a resolver's cache, rarely over a second.
LOOKUP_DEADLINE = 2.0
# Lookups running at once for one network (an IPv4 /24, an IPv6 /48): whoever owns a
# reverse zone owns a network's, so a hostile one takes these places and no more.
NETWORK_LOOKUPS = 2
# Lookups in the resolver at once, those past their deadline included (a lookup cannot be
# stopped; its thread ends when the resolver gives up, 10 s with glibc's defaults).
MAX_THREADS = 32


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
    /etc/resolv.conf say otherwise). :class:`CrawlerCheck` therefore calls them in a
    thread of their own and stops waiting at its deadline, and caches the answers. Any
    other error than "no such name" is raised, and the check then fails closed.
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
    :data:`ERROR_TTL` seconds, and until then the address is not verified. A request waits
    at most ``deadline`` seconds (real time, from the start of its address's lookup) for
    an answer, and only when fewer than ``max_waiting`` others wait; at most
    ``max_lookups`` lookups run at once (see the module's docstring).

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
        deadline: float = LOOKUP_DEADLINE,
        max_lookups: int = MAX_LOOKUPS,
        max_waiting: int = MAX_WAITING,
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
        self.deadline = deadline
        self.max_lookups = max_lookups
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified as each lookup ends
        # address -> (time the entry expires, the engine it is verified for or None)
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._running: dict[str, _Lookup] = {}  # address -> its lookup, until it ends
        self._waiting = 0  # server threads waiting for a lookup's answer

    def claimed(self, user_agent: str) -> tuple[str, ...]:
        """The engines whose bots ``user_agent`` claims to be (no lookup)."""
        agent = user_agent.lower()
        return tuple(
            engine.name for engine in self.engines if any(bot in agent for bot in engine.bots)
        )

    def crawler(self, client_address: str, user_agent: str) -> str | None:
        """The engine whose verified crawler sent the request, or None.

        No DNS lookup unless ``user_agent`` claims one of the engines' bots. None, too,
        when the answer is not known within the bounds of the module's docstring.
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

    @property
    def lookups_running(self) -> int:
        with self._lock:
            return len(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no lookup runs (so that late answers are cached); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def _verified(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        key = str(address)
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and self._clock() < entry[0]:
                self._cache.move_to_end(key)  # a crawler that comes back stays cached
                return entry[1]
            lookup = self._running.get(key)
            start = lookup is None
            if start:
                busy = self._no_lookup_for(address)
                if busy:
                    log.debug("crawler check of %s not started: %s", key, busy)
                    return None
                lookup = _Lookup(time.monotonic() + self.deadline, _network(address))
                self._running[key] = lookup
            wait = self._waiting < self.max_waiting
            if wait:
                self._waiting += 1
        if start:
            thread = threading.Thread(
                target=self._run, args=(key, address, lookup), name="alloconv_gate-dns"
            )
            thread.daemon = True  # a lookup stuck in the resolver must not delay exit
            try:
                thread.start()
            except RuntimeError as exc:  # no thread to be had: an ordinary visitor
                log.warning("crawler check of %s not started: %r", key, exc)
                self._finish(key, lookup, None, 0.0)  # cached as expired already
        if not wait:
            return None
        try:
            lookup.done.wait(max(0.0, lookup.deadline - time.monotonic()))
        finally:
            with self._lock:
                self._waiting -= 1
        if not lookup.done.is_set():
            log.info("crawler check of %s: no answer within %s s", key, self.deadline)
            return None
        return lookup.engine

    def _no_lookup_for(self, address) -> str | None:
        """Why no lookup may start for ``address`` now (None: one may); under the lock.

        A lookup past its deadline frees its place among :data:`MAX_LOOKUPS` (nobody waits
        for it any more) but keeps its thread until the resolver gives up, within
        :data:`MAX_THREADS`; and one network (an IPv4 /24, an IPv6 /48) has at most
        :data:`NETWORK_LOOKUPS` running. So the owner of a reverse zone that never answers
        must hold many networks to keep real crawlers from being verified.
        """
        now = time.monotonic()
        network = _network(address)
        lookups = list(self._running.values())
        if len(lookups) >= MAX_THREADS:
            return f"{len(lookups)} lookups still in the resolver"
        if sum(lookup.network == network for lookup in lookups) >= NETWORK_LOOKUPS:
            return f"{NETWORK_LOOKUPS} lookups running for {network}"
        if sum(lookup.deadline > now for lookup in lookups) >= self.max_lookups:
            return f"{self.max_lookups} lookups running"
        return None

    def _run(self, key: str, address, lookup: _Lookup) -> None:
        """Look ``address`` up in this thread, then cache and hand over the answer."""
        engine = None
        expires = 0.0
        try:
            engine, host = self._lookup(address)
        except Exception as exc:  # any failure: not verified (fail closed)
            log.warning("crawler check of %s failed: %r", key, exc)
            expires = self._clock() + min(ERROR_TTL, self.ttl)
        else:
            log.info("crawler check: %s is %s (%s)", key, host or "no name", engine or "refused")
            expires = self._clock() + self.ttl
        finally:  # even on an unexpected BaseException: the address is not kept busy
            self._finish(key, lookup, engine, expires)

    def _finish(self, key: str, lookup: _Lookup, engine: str | None, expires: float) -> None:
        with self._lock:
            self._cache.pop(key, None)
            self._cache[key] = (expires, engine)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
            lookup.engine = engine
            del self._running[key]
            self._idle.notify_all()
        lookup.done.set()

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


class _Lookup:
    """One address's lookup in flight: its deadline, then its answer."""

    __slots__ = ("deadline", "done", "engine", "network")

    def __init__(self, deadline: float, network: str):
        self.deadline = deadline  # time.monotonic() after which nobody waits for it
        self.network = network  # the address's network (see _network)
        self.done = threading.Event()
        self.engine: str | None = None


def _network(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The network ``address`` is part of, as one owner of a reverse zone holds it: an
    IPv4 /24, an IPv6 /48 (a site's usual delegation), a 6to4 or NAT64 address's IPv4."""
    return network_key(str(address))


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an address (an IPv4-mapped IPv6 one as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address
