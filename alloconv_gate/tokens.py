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
# More than a handful of gates on one site is unlikely; the bounds keep a hostile cookie
# from costing more than a few signature checks.
MAX_TOKENS = 8
MAX_PARTS = 32
# How far apart the clocks of several servers may be: a token issued by one is good on
# the others at once. Tokens are dated this much in the past, and accepted this much
# older; the end of access carried in the token stays exact.
MAX_SKEW = 60
# Tokens whose signature was checked, remembered per gate and process (about 3 MB at
# most), and Cookie headers that held one (about 5 MB at most, even for a visitor who
# sends thousands of made-up headers around one paid token: longer headers are not kept).
MAX_VERIFIED = 10_000
MAX_REMEMBERED_HEADERS = 4096
MAX_REMEMBERED_HEADER = 1024
# Browsers keep a cookie at most 400 days.
MAX_COOKIE_AGE = 400 * 86400
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_.\-]{20,200}$")


def clocked_signer(clock: Clock) -> type[TimestampSigner]:
    """A ``TimestampSigner`` class that reads the time from ``clock`` (injected by tests),
    and gives issue times as Unix times.

    A class rather than a constructor argument: itsdangerous builds a signer on every
    ``loads``, and a plain class attribute keeps that as cheap as its default.
    """

    def get_timestamp(self) -> int:
        return int(clock())

    def timestamp_to_datetime(self, ts: int) -> int:
        # The gate compares issue times as Unix times: skip the datetime round trip.
        return ts

    return type(
        "ClockedSigner",
        (TimestampSigner,),
        {"get_timestamp": get_timestamp, "timestamp_to_datetime": timestamp_to_datetime},
    )


def serializer(
    secrets: Sequence[str], salt: str, signer: type[TimestampSigner]
) -> URLSafeTimedSerializer:
    """An itsdangerous serializer where the first secret signs and all of them verify.

    itsdangerous signs with the *last* key of its list, hence the reversal, done here once
    for the access tokens, the support links and the progress of a set of codes.
    """
    return URLSafeTimedSerializer(list(reversed(secrets)), salt=salt, signer=signer)


def cookie_values(header: str, name: str) -> list[str]:
    """The values of every cookie called exactly ``name`` in a Cookie header.

    A browser may send the name more than once (cookies set for other paths or
    subdomains); all are returned so that a good token in any of them counts.
    """
    if name not in header:
        return []
    values = []
    for pair in header.split(";"):
        key, equals, value = pair.partition("=")
        if equals and key.strip(" \t") == name:
            values.append(value.strip(' \t"'))
    return values


class AccessTokens:
    """Issues and checks the access tokens of one gate.

    ``mount`` (the request's SCRIPT_NAME) is part of the salt: the same gate settings
    mounted twice in one site (``/cheap`` and ``/dear``) are two gates.
    """

    def __init__(self, secrets: Sequence[str], scope: str, duration: int, clock: Clock = time.time):
        self.duration = duration
        self._clock = clock
        self._secrets = secrets
        self._scope = scope
        self._verifying_signer = clocked_signer(clock)
        self._signing_signer = clocked_signer(lambda: clock() - MAX_SKEW)
        self._verifiers: dict[str, URLSafeTimedSerializer] = {}
        self._verified: dict[tuple[str, str], tuple[int, int]] = {}
        self._granting: dict[tuple[str, str, str], tuple[int, int]] = {}

    def _serializer(self, mount: str, signer: type[TimestampSigner]) -> URLSafeTimedSerializer:
        return serializer(self._secrets, f"alloconv_gate.access:{self._scope}:{mount}", signer)

    def _verifier(self, mount: str) -> URLSafeTimedSerializer:
        verifier = self._verifiers.get(mount)
        if verifier is None:
            verifier = self._serializer(mount, self._verifying_signer)
            if len(self._verifiers) < 16:  # SCRIPT_NAME may come from a header
                self._verifiers[mount] = verifier
        return verifier

    def issue(self, until: int | None = None, mount: str = "") -> str:
        """A token granting access from now until ``until`` (default: now + duration)."""
        if until is None:
            until = int(self._clock()) + self.duration
        return self._serializer(mount, self._signing_signer).dumps(until)

    def check_cookie(self, header: str, name: str, mount: str = "") -> int | None:
        """:meth:`check` for the cookies called ``name`` in a whole Cookie header.

        A browser sends the same header with every page view, so a header that held a good
        token is remembered with that token's times: the next view of a paid page costs a
        dictionary lookup and a comparison of times, not a parse of the header.
        """
        key = (mount, name, header)
        known = self._granting.get(key)
        if known is not None and self._grants_now(known):
            return known[0]
        found = self._find(SEPARATOR.join(cookie_values(header, name)), mount)
        if found is None:
            return None
        if len(header) <= MAX_REMEMBERED_HEADER:
            if len(self._granting) >= MAX_REMEMBERED_HEADERS:
                self._granting.clear()  # no lock: at worst, some headers are parsed again
            self._granting[key] = found
        return found[0]

    def check(self, value: str | None, mount: str = "") -> int | None:
        """The time access ends if ``value`` (a cookie value) holds a good token, else None."""
        found = self._find(value, mount)
        return None if found is None else found[0]

    def _find(self, value: str | None, mount: str) -> tuple[int, int] | None:
        """The end and issue time of the first token in ``value`` that grants access now.

        Parts that are not token-shaped are skipped (junk from elsewhere must not hide a
        good token), and at most ``MAX_TOKENS`` signatures are checked.
        """
        if not value:
            return None
        verifier = self._verifier(mount)
        checked = 0
        for token in value.split(SEPARATOR, MAX_PARTS)[:MAX_PARTS]:
            if not _TOKEN_SHAPE.match(token):
                continue
            found = self._check_one(verifier, mount, token)
            if found is not None:
                return found
            checked += 1
            if checked == MAX_TOKENS:
                break
        return None

    def _check_one(
        self, verifier: URLSafeTimedSerializer, mount: str, token: str
    ) -> tuple[int, int] | None:
        """The end and issue time of ``token`` if it grants access now, or None.

        A visitor sends the same token with every page view, so a token whose signature
        checked out is remembered (with its issue time and end) and only its times are
        checked again: the signature never changes, time does.
        """
        signed = self._verified.get((mount, token))
        if signed is None:
            try:
                until, issued = verifier.loads(token, return_timestamp=True)
            except BadData:
                return None
            if type(until) is not int:
                return None
            signed = (until, issued)
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()  # no lock: at worst, some signatures are re-checked
            self._verified[(mount, token)] = signed
        return signed if self._grants_now(signed) else None

    def _grants_now(self, signed: tuple[int, int]) -> bool:
        """Whether a token with these ``(until, issued)`` times grants access now.

        The age limit is the one itsdangerous's max_age applies: from 0 to the duration.
        """
        until, issued = signed
        now = self._clock()
        return 0 <= now - issued <= self.duration + MAX_SKEW and until > now

    def cookie_value(self, token: str, existing: str | None, mount: str = "") -> str:
        """The cookie value that carries ``token`` and the other gates' tokens in ``existing``.

        This gate's older tokens are dropped; junk is dropped.
        """
        verifier = self._verifier(mount)
        others = [
            old
            for old in (existing or "").split(SEPARATOR, MAX_PARTS)[:MAX_PARTS]
            if _TOKEN_SHAPE.match(old) and not verifier.loads_unsafe(old)[0]
        ]
        return SEPARATOR.join([token, *others[: MAX_TOKENS - 1]])

    def max_age(self, value: str) -> int:
        """The cookie's Max-Age: long enough for the longest access it carries.

        Another gate's token cannot be verified here, but its end of access can be read;
        it only ever lengthens the cookie's life, never grants anything.
        """
        now = int(self._clock())
        longest = self.duration
        for token in value.split(SEPARATOR):
            _signed, until = self._verifier("").loads_unsafe(token)
            if type(until) is int:
                longest = max(longest, until - now)
        return min(longest, MAX_COOKIE_AGE)


# A support link must be used soon after it is made, or not at all.
GRANT_LINK_LIFETIME = 3600
GRANT_PARAM = "alloconv_grant"  # the query parameter that carries a support link


class GrantLinks:
    """One-time links that support makes to give a visitor access (``alloconv-gate grant``).

    A link carries a random id and how long the access lasts, signed for one gate; it is
    good for an hour, and once (the store remembers used ids).
    """

    def __init__(self, secrets: Sequence[str], scope: str, clock: Clock = time.time):
        self._serializer = serializer(
            secrets, f"alloconv_gate.grant:{scope}", clocked_signer(clock)
        )

    def issue(self, grant_id: str, duration: int) -> str:
        return self._serializer.dumps([grant_id, duration])

    def check(self, token: str) -> tuple[str, int] | None:
        """``(grant_id, duration)`` if ``token`` is a good, fresh link for this gate."""
        try:
            grant_id, duration = self._serializer.loads(token, max_age=GRANT_LINK_LIFETIME)
        except (BadData, TypeError, ValueError):
            return None
        if type(grant_id) is not str or type(duration) is not int or duration <= 0:
            return None
        return grant_id, duration


class SetProgress:
    """With ``codes = N``: which codes of the visitor's unfinished set have passed.

    Kept in a signed cookie of its own, so that a code that passed is never lost because
    another failed; the journal keeps the same, should the cookie be lost.
    """

    LIFETIME = 86400

    def __init__(self, secrets: Sequence[str], scope: str, clock: Clock = time.time):
        self._serializer = serializer(
            secrets, f"alloconv_gate.progress:{scope}", clocked_signer(clock)
        )

    def dump(self, passed: tuple[str, ...], mount: str = "") -> str:
        return self._serializer.dumps([mount, list(passed)])

    def load(self, value: str | None, mount: str = "") -> tuple[str, ...]:
        if not value:
            return ()
        try:
            signed_mount, passed = self._serializer.loads(value, max_age=self.LIFETIME)
        except (BadData, TypeError, ValueError):
            return ()
        if signed_mount != mount or not isinstance(passed, list):
            return ()
        return tuple(h for h in passed[:8] if isinstance(h, str))
