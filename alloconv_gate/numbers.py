"""The number cache: which number to show for a palier, fetched rarely and never in a crowd.

The number for a palier changes seldom, and the gate page must not wait on AlloConv for
every visitor, so a fetched number is reused for ``ttl`` seconds. When it goes stale,
one visitor's request fetches it again while everyone else is served the stale one; only
when there is nothing at all to show do requests wait, for that one fetch (per process).
When a fetch fails the last good number is kept, then the configured fallback; and a
failing AlloConv is asked again only after a pause, so that an outage does not make every
page view wait for a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .alloconv import NumberUnavailable

log = logging.getLogger("alloconv_gate")

# How long to wait before asking again after a failed fetch.
RETRY_AFTER_FAILURE = 30


class NumberCache:
    """The number of one palier, from ``fetch`` (e.g. ``AlloConv.number``)."""

    def __init__(
        self,
        fetch: Callable[[str], str],
        palier: str,
        *,
        ttl: int,
        fallback: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._fetch = fetch
        self.palier = palier
        self.ttl = ttl
        self.fallback = fallback
        self._clock = clock
        self._lock = threading.Lock()
        self._number: str | None = None
        self._next_fetch = float("-inf")

    def get(self) -> str | None:
        """The number to show, or None when there is none (fetch failed, no fallback)."""
        if self._clock() < self._next_fetch:
            return self._number or self.fallback
        # Someone else is fetching: show what we have rather than queue behind them.
        if self._number is not None and self._lock.locked():
            return self._number
        with self._lock:
            if self._clock() >= self._next_fetch:
                self._refresh()
        return self._number or self.fallback

    def _refresh(self) -> None:
        try:
            number = self._fetch(self.palier)
        except NumberUnavailable as exc:
            self._next_fetch = self._clock() + min(RETRY_AFTER_FAILURE, self.ttl)
            if exc.configuration_error:
                log.error("configuration error: %s; check the 'palier' option", exc)
            else:
                kept = "keeping the last good number" if self._number else "no number cached"
                log.error("api-numeros failed for palier %r: %s (%s)", self.palier, exc, kept)
            return
        self._number = " ".join(number.split())
        self._next_fetch = self._clock() + self.ttl
