"""The access token: what the cookie carries, how it is issued and checked.

A token is an itsdangerous ``URLSafeTimedSerializer`` signature of the time access ends,
salted with the gate's scope, so that:

- it carries its issue time, and is refused ``duration`` after it whatever the browser
  does with ``Max-Age`` (and refused before it, should the clock go back);
- a token of one gate never opens another gate, even one with the same secret;
- the secrets rotate: the first configured secret signs, all of them verify.

One cookie may carry the tokens of several gates that share its name (two filter
sections in one ini), joined by ``~``: buying access to one gate keeps the others.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

Clock = Callable[[], float]

SEPARATOR = "~"
# More than a handful of gates on one site is unlikely; the bound keeps a hostile cookie
# from costing more than a few signature checks.
MAX_TOKENS = 8
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_.\-]{20,200}$")


def clocked_signer(clock: Clock) -> type[TimestampSigner]:
    """A ``TimestampSigner`` class that reads the time from ``clock`` (injected by tests).

    A class rather than a constructor argument: itsdangerous builds a signer on every
    ``loads``, and a plain class attribute keeps that as cheap as its default.
    """

    def get_timestamp(self) -> int:
        return int(clock())

    return type("ClockedSigner", (TimestampSigner,), {"get_timestamp": get_timestamp})


class AccessTokens:
    """Issues and checks the access tokens of one gate."""

    def __init__(self, secrets: Sequence[str], scope: str, duration: int, clock: Clock = time.time):
        self.duration = duration
        self._clock = clock
        # itsdangerous signs with the last key of its list; ours signs with the first.
        self._serializer = URLSafeTimedSerializer(
            list(reversed(secrets)),
            salt=f"alloconv_gate.access:{scope}",
            signer=clocked_signer(clock),
        )

    def issue(self, until: int | None = None) -> str:
        """A token granting access from now until ``until`` (default: now + duration)."""
        if until is None:
            until = int(self._clock()) + self.duration
        return self._serializer.dumps(until)

    def check(self, value: str | None) -> int | None:
        """The time access ends if ``value`` (a cookie value) holds a good token, else None."""
        if not value:
            return None
        for token in value.split(SEPARATOR, MAX_TOKENS)[:MAX_TOKENS]:
            until = self._check_one(token)
            if until is not None:
                return until
        return None

    def _check_one(self, token: str) -> int | None:
        try:
            until = self._serializer.loads(token, max_age=self.duration)
        except BadData:
            return None
        if type(until) is int and until > self._clock():
            return until
        return None

    def _is_own(self, token: str) -> bool:
        """Whether this gate signed ``token``, at any age (old ones are dropped, not kept)."""
        signed_here, _payload = self._serializer.loads_unsafe(token)
        return signed_here

    def cookie_value(self, token: str, existing: str | None) -> str:
        """The cookie value that carries ``token`` and the other gates' tokens in ``existing``."""
        others = [
            old
            for old in (existing or "").split(SEPARATOR)[:MAX_TOKENS]
            if _TOKEN_SHAPE.match(old) and not self._is_own(old)
        ]
        return SEPARATOR.join([token, *others[: MAX_TOKENS - 1]])
