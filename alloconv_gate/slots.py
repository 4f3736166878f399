"""How many AlloConv verifications a process lets hold its threads, and when to stop asking.

A code check holds a server thread for as long as AlloConv takes to answer, up to
``timeout`` (5 s by default). A healthy AlloConv answers in a fraction of a second, so a
burst of paying visitors is a short queue; a hanging one would hold every thread that
takes a code, and the whole site (free pages, paid pages) would wait behind them. Three
things keep both true, in the way resilient HTTP clients do (a bulkhead with a short wait,
and a circuit breaker):

- **Slots**: at most ``max_pending`` verifications in flight per process (all the gates of
  a filter together), and one per client address, in flight or waiting: the rest of that
  client's submissions get 503 at once, so a few addresses cannot take every slot; and
  one network (an IPv4 /24, an IPv6 /48: what one owner usually holds) has at most half
  of ``max_pending`` (at least one) in flight or waiting, so that an attacker with many
  addresses of one network cannot keep the slots and the queue from paying visitors.
- **A short wait while AlloConv looks healthy**: a submission that finds every slot busy
  waits for one if the queue it joins can expect to be served within
  :data:`QUEUE_BUDGET` at AlloConv's recent pace (so that waiting submissions, sent from
  as many addresses as an attacker has, hold few threads when AlloConv answers slowly),
  and then (at most :data:`MAX_WAIT`) as long as no call in flight is older than the
  *slow* threshold (:data:`SLOW`, or a quarter of ``timeout`` if less) and the last call
  to end did not time out. When AlloConv hangs, the calls in flight pass that age within
  :data:`SLOW`, every waiting submission is refused then, and later ones are refused at
  once: a hang holds no more than the slots for long.
- **A circuit breaker**: :data:`FAILURES` AlloConv calls in a row that held their thread
  and got no answer (timeouts: a failure that comes back at once holds nothing) open it;
  every submission then gets 503 with ``Retry-After`` at once, without a call (the code
  is not spent). After :data:`COOL_DOWN` one submission is let through as
  a probe (the others are still refused); any answer from AlloConv closes the breaker, a
  timeout opens it again for another cool-down.

The breaker's cool-down is read on the injected clock (tests skip it); the age of calls
in flight on ``time.monotonic``, since the waits it bounds are real ones.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .alloconv import Verdict
from .clients import network_key

log = logging.getLogger("alloconv_gate")

SLOW = 1.0  # seconds: a call in flight older than this (or timeout / 4) looks slow
MAX_WAIT = 2.0  # seconds a submission may wait for a slot while AlloConv looks healthy
FAILURES = 3  # timeouts in a row (calls that held their thread, no answer) that open it
COOL_DOWN = 30  # seconds the breaker stays open before a probe is let through
RETRY_AFTER_BUSY = 5  # seconds, on 503 when the slots are busy
# Seconds the submissions waiting for a slot may expect to wait in all, at AlloConv's
# recent pace: a submission waits only if it and those ahead of it would get a slot within
# it. With AlloConv answering in milliseconds a burst of paying visitors queues; answering
# in 0.9 s, one waits at most (with max_pending 2), so that made-up codes sent from many
# addresses cannot hold more threads than the slots and that one.
QUEUE_BUDGET = 0.5
FIRST_LATENCY = 0.1  # seconds: AlloConv's pace assumed until it has answered

# What tells that AlloConv is not answering (the thread waited, or the service is down);
# any answer, even an HTTP error or an unexpected text, came back and held nothing long.
NOT_ANSWERING = (Verdict.UNKNOWN, Verdict.UNREACHABLE)


@dataclass(frozen=True)
class Busy:
    """Why a submission is not sent to AlloConv now: for the log and journal (``why``),
    and for the visitor (a catalogue key and a ``Retry-After``)."""

    why: str
    error: str
    retry_after: int


PER_CLIENT = Busy(
    "a verification of this client is in flight already", "error_busy", RETRY_AFTER_BUSY
)
PER_NETWORK = Busy(
    "verifications of this client's network (IPv4 /24, IPv6 /48) fill its share",
    "error_busy",
    RETRY_AFTER_BUSY,
)
PROBING = Busy(
    "circuit breaker open, a submission is trying AlloConv again",
    "error_unavailable",
    RETRY_AFTER_BUSY,
)


class Slots:
    """The verifications in flight in this process, and the breaker; shared by the gates of
    a filter (the middleware makes one), thread-safe.

    :meth:`enter` before asking AlloConv, :meth:`answered` with its verdict, and
    :meth:`leave` always after (the call made or not).
    """

    def __init__(self, limit: int, timeout: float, clock: Callable[[], float] = time.time):
        self._limit = limit
        self._slow = min(SLOW, timeout / 4)
        self._clock = clock
        self._changed = threading.Condition()
        # client -> when its call started (monotonic), or inf once AlloConv has answered it
        self._calls: dict[str, float] = {}
        self._waiting: set[str] = set()
        self._failures = 0  # timeouts or unreachable answers in a row
        self._opened_at: float | None = None  # the breaker opened then (clock), or closed
        self._probe: str | None = None  # the client whose call is trying AlloConv again
        self._latency = FIRST_LATENCY  # of AlloConv's answers, a moving average
        # network -> its clients in flight or waiting, at most _per_network of them
        self._networks: Counter[str] = Counter()
        self._per_network = max(1, limit // 2)

    def enter(self, client: str) -> Busy | None:
        """None if the verification may go ahead (then :meth:`leave` after), else why not.

        May wait up to :data:`MAX_WAIT` for a slot, while AlloConv looks healthy.
        """
        with self._changed:
            if client in self._calls or client in self._waiting:
                return PER_CLIENT
            network = network_key(client)
            if self._networks[network] >= self._per_network:
                return PER_NETWORK
            self._networks[network] += 1
            self._waiting.add(client)
            try:
                refused = self._wait_for_a_slot()
            finally:
                self._waiting.discard(client)
            if refused is not None:
                self._leave_network(network)
                return refused
            if self._opened_at is not None:
                self._probe = client
                log.warning("circuit breaker: trying AlloConv again with one submission")
            self._calls[client] = time.monotonic()
        return None

    def _wait_for_a_slot(self) -> Busy | None:
        """Under the lock: None once a slot is free, else why the submission is refused."""
        deadline = time.monotonic() + MAX_WAIT
        joining = True  # the queue is judged as this submission joins it
        while True:
            refused = self._breaker_refusal()
            if refused is not None:
                return refused
            if len(self._calls) < self._limit:
                return None
            now = time.monotonic()
            if joining and self._queue_wait() > QUEUE_BUDGET:
                return self._full(now, queue=True)
            joining = False
            wait = min(self._healthy_for(now), deadline - now)
            if wait <= 0:
                return self._full(now)
            self._changed.wait(wait)

    def _leave_network(self, network: str) -> None:
        self._networks[network] -= 1
        if not self._networks[network]:
            del self._networks[network]

    def answered(self, client: str, verdict: Verdict, latency: float) -> None:
        """AlloConv's verdict on the call of ``client``, which took ``latency`` seconds:
        the breaker counts it.

        Only a failure that held the thread (a timeout: at least the slow threshold) counts
        towards opening the breaker; one that came back at once (a refused connection, a
        connection broken after sending) held nothing, and leaves the count as it was.
        """
        with self._changed:
            if client in self._calls:  # answered: what its slot does next is not AlloConv's
                self._calls[client] = math.inf
            probe = client == self._probe
            if probe:
                self._probe = None
            # every call's time, failures too: one that fails just under the slow
            # threshold holds its thread as long as an answer would
            self._latency = 0.7 * self._latency + 0.3 * latency
            if verdict not in NOT_ANSWERING:
                if self._opened_at is not None:
                    log.warning("circuit breaker closed: AlloConv answers again")
                self._failures, self._opened_at = 0, None
            elif latency < self._slow:
                pass  # a quick failure: no thread was held
            else:
                self._failures += 1
                if self._opened_at is not None or self._failures >= FAILURES:
                    if self._opened_at is None or probe:
                        log.error(
                            "circuit breaker open: AlloConv did not answer %d times in a row "
                            "(%s); code submissions get 503 at once for %d s",
                            self._failures,
                            verdict.value,
                            COOL_DOWN,
                        )
                    self._opened_at = self._clock()
            self._changed.notify_all()

    def leave(self, client: str) -> None:
        """The verification of ``client`` is over (or was never sent): its slot is free."""
        with self._changed:
            if self._calls.pop(client, None) is not None:
                self._leave_network(network_key(client))
            if client == self._probe:  # it never asked AlloConv: another submission may
                self._probe = None
            self._changed.notify_all()

    def _breaker_refusal(self) -> Busy | None:
        if self._opened_at is None:
            return None
        if self._probe is not None:
            return PROBING
        left = self._opened_at + COOL_DOWN - self._clock()
        if left <= 0:
            return None  # the caller becomes the probe
        why = f"circuit breaker open ({self._failures} AlloConv calls in a row did not answer)"
        return Busy(why, "error_unavailable", max(1, math.ceil(left)))

    def _healthy_for(self, now: float) -> float:
        """How much longer AlloConv looks healthy (no slow call in flight, the last call did
        not time out); 0 or less if it does not."""
        if self._failures:
            return 0.0
        return min(self._calls.values(), default=now) + self._slow - now

    def _queue_wait(self) -> float:
        """How long the submissions waiting now (this one among them) may expect to wait
        in all for a slot, at AlloConv's recent pace."""
        return len(self._waiting) * self._latency / self._limit

    def _full(self, now: float, *, queue: bool = False) -> Busy:
        if queue:
            why = (
                f"max_pending reached, and {len(self._waiting) - 1} submissions wait already "
                f"(AlloConv answers in {self._latency:.2f} s)"
            )
        elif self._failures:
            why = "max_pending reached, and AlloConv's last call did not answer"
        elif self._healthy_for(now) <= 0:
            why = f"max_pending reached, and AlloConv is slow (a call over {self._slow:g} s)"
        else:
            why = f"max_pending reached, still full after waiting {MAX_WAIT:g} s"
        return Busy(why, "error_busy", RETRY_AFTER_BUSY)
