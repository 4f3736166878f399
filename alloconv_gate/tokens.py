"""The access token: what the cookie carries, how it is issued and checked.

A token is an itsdangerous ``URLSafeTimedSerializer`` signature of the time access ends
and of the prefixes it was sold for, salted with where the site is mounted, so that:

- it carries its issue time, and is refused ``duration`` after it whatever the browser
  does with ``Max-Age`` (and refused before it, should the clock go back);
- it opens the prefixes it was sold for and no others: a token of one gate never opens
  another gate, even one with the same secret, and it keeps opening its paths when the
  webmaster adds prefixes to the gate or gives the gate a name (``gates = ...``);
- the secrets rotate: the first configured secret signs, all of them verify.

One cookie may carry the tokens of several gates that share its name, joined by ``~``:
buying access to one gate keeps the others. Tokens of the first format (salted with the
gate's name and prefixes, carrying only the end of access) are still accepted while the
gate's name and prefixes are those they were sold under.
"""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, bytes_to_int

Clock = Callable[[], float]

SEPARATOR = "~"
# A cookie the gate sets carries at most this many tokens (of several gates sharing it).
# Checking has no such bound: every token-shaped part of every cookie of our name is
# considered (a sibling subdomain could otherwise hide a good token behind a few of its
# own). What a part says is read first, without its signature (a base64 and a JSON
# decode), and only a part that says it opens the page now has its signature checked,
# once per process (bad ones too). At most MAX_CHECKS signatures are checked per request:
# a header of fresh forgeries costs that and no more, and a browser that a sibling
# subdomain filled with more forgeries than that gets in within a few page views, as
# the forgeries it keeps sending are remembered as bad.
MAX_CHECKS = 16
# And at most this many values of our cookie are read per request (about 9 KB of
# tokens, more than the 8 KB header limit of nginx's and Apache's defaults lets any
# browser send): what a hostile header costs is bounded
# whatever the server lets through.
MAX_PARTS = 128
MAX_TOKENS = 8
# How far apart the clocks of several servers may be: a token issued by one is good on
# the others at once. Tokens are dated this much in the past, and accepted this much
# older; the end of access carried in the token stays exact.
MAX_SKEW = 60
# Tokens whose signature was checked (good or bad), remembered per gate and process
# (about 3 MB at most), and Cookie headers that held a good one (about 5 MB at most,
# even for a visitor who sends thousands of made-up headers around one paid token:
# longer headers are not kept).
MAX_VERIFIED = 10_000
MAX_REMEMBERED_HEADERS = 4096
MAX_REMEMBERED_HEADER = 1024
# Browsers keep a cookie at most 400 days.
MAX_COOKIE_AGE = 400 * 86400
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_.\-]{20,1200}$")
# What a token says once its signature checked out: (until, issued, prefixes).
Signed = tuple[int, int, frozenset[str]]
_BAD: Signed = (0, 0, frozenset())  # a remembered bad signature: grants nothing, ever


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
    mounted twice in one site (``/cheap`` and ``/dear``) are two gates. A token opens a
    request when the prefix the request falls under is one of the token's prefixes.

    ``legacy_scope`` is the gate's scope in the first token format (its name and
    prefixes), whose tokens open this gate's prefixes while that scope is unchanged.
    """

    def __init__(
        self,
        secrets: Sequence[str],
        prefixes: Iterable[str],
        duration: int,
        clock: Clock = time.time,
        legacy_scope: str | None = None,
    ):
        self.duration = duration
        self.prefixes = tuple(prefixes)
        self._clock = clock
        self._secrets = secrets
        self._legacy_scope = legacy_scope
        self._verifying_signer = clocked_signer(clock)
        self._signing_signer = clocked_signer(lambda: clock() - MAX_SKEW)
        self._verifiers: dict[str, tuple[URLSafeTimedSerializer, ...]] = {}
        self._verified: dict[tuple[str, str], Signed] = {}
        self._granting: dict[tuple[str, str, str, str], Signed] = {}

    def _serializer(self, mount: str, signer: type[TimestampSigner]) -> URLSafeTimedSerializer:
        return serializer(self._secrets, f"alloconv_gate.access.v2:{mount}", signer)

    def _verifier(self, mount: str) -> tuple[URLSafeTimedSerializer, ...]:
        """This format's serializer, then the first format's (if this gate had one)."""
        verifiers = self._verifiers.get(mount)
        if verifiers is None:
            verifiers = (self._serializer(mount, self._verifying_signer),)
            if self._legacy_scope is not None:
                salt = f"alloconv_gate.access:{self._legacy_scope}:{mount}"
                verifiers += (serializer(self._secrets, salt, self._verifying_signer),)
            if len(self._verifiers) < 16:  # SCRIPT_NAME may come from a header
                self._verifiers[mount] = verifiers
        return verifiers

    def issue(
        self, until: int | None = None, mount: str = "", prefixes: Iterable[str] | None = None
    ) -> str:
        """A token granting access to ``prefixes`` (default: the gate's) until ``until``
        (default: now + duration)."""
        if until is None:
            until = int(self._clock()) + self.duration
        sold = sorted(self.prefixes if prefixes is None else prefixes)
        return self._serializer(mount, self._signing_signer).dumps([until, sold])

    def check_cookie(
        self, header: str, name: str, mount: str = "", prefix: str | None = None
    ) -> int | None:
        """:meth:`check` for the cookies called ``name`` in a whole Cookie header.

        A browser sends the same header with every page view, so a header that held a good
        token is remembered with that token's times: the next view of a paid page costs a
        dictionary lookup and a comparison of times, not a parse of the header.
        """
        prefix = self.prefixes[0] if prefix is None else prefix
        key = (mount, name, prefix, header)
        known = self._granting.get(key)
        if known is not None and self._grants_now(known, prefix):
            return known[0]
        found = self._find(SEPARATOR.join(cookie_values(header, name)), mount, prefix)
        if found is None:
            return None
        if len(header) <= MAX_REMEMBERED_HEADER:
            if len(self._granting) >= MAX_REMEMBERED_HEADERS:
                self._granting.clear()  # no lock: at worst, some headers are parsed again
            self._granting[key] = found
        return found[0]

    def check(self, value: str | None, mount: str = "", prefix: str | None = None) -> int | None:
        """The time access ends if ``value`` (a cookie value) holds a token that opens
        ``prefix`` (default: the gate's first) now, else None."""
        found = self._find(value, mount, self.prefixes[0] if prefix is None else prefix)
        return None if found is None else found[0]

    def _find(self, value: str | None, mount: str, prefix: str) -> Signed | None:
        """The first token in ``value`` that opens ``prefix`` now.

        Every part is considered, each distinct one once; parts that are not token-shaped
        cost a regular expression match, the others a signature check the first time this
        process sees them (see MAX_CHECKS).
        """
        if not value:
            return None
        verifiers = self._verifier(mount)
        seen = set()
        checks = 0
        for token in value.split(SEPARATOR, MAX_PARTS)[:MAX_PARTS]:
            if token in seen or not _TOKEN_SHAPE.match(token):
                continue
            seen.add(token)
            signed = self._verified.get((mount, token))
            if signed is None:
                claimed = self._claims(token)
                if claimed is None or not self._grants_now(claimed[0], prefix):
                    continue  # it would not open the page even if its signature were good
                if checks == MAX_CHECKS:
                    continue  # only what was checked before counts, for this request
                checks += 1
                signed = self._signed(verifiers, mount, token, claimed)
            if self._grants_now(signed, prefix):
                return signed
        return None

    def _claims(self, token: str) -> tuple[Signed, bool] | None:
        """What ``token`` says, its signature unchecked, and whether it is of the first
        format: nothing to trust, only a way to skip the parts that could not open the
        page anyway, and to check a signature with its format's serializer only."""
        try:
            body, timestamp, _signature = token.rsplit(".", 2)
            issued = bytes_to_int(base64_decode(timestamp))
            if body.startswith("."):  # itsdangerous compressed a long payload
                raw = zlib.decompressobj().decompress(base64_decode(body[1:]), 4096)
            else:
                raw = base64_decode(body)
            payload = json.loads(raw)
        except (ValueError, TypeError, struct.error, zlib.error, RecursionError, BadData):
            return None
        for legacy in (True, False):
            found = self._read(payload, legacy)
            if found is not None:
                return (found[0], issued, found[1]), legacy
        return None

    def _signed(
        self,
        verifiers: tuple[URLSafeTimedSerializer, ...],
        mount: str,
        token: str,
        claimed: tuple[Signed, bool] | None = None,
    ) -> Signed:
        """What ``token`` says, or ``_BAD``, remembered: a visitor sends the same token with
        every page view, and its signature never changes; time does."""
        signed = self._verified.get((mount, token))
        if signed is None:
            signed = self._verify(verifiers, token, claimed or self._claims(token))
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.clear()  # no lock: at worst, some signatures are re-checked
            self._verified[(mount, token)] = signed
        return signed

    def _verify(
        self,
        verifiers: tuple[URLSafeTimedSerializer, ...],
        token: str,
        claimed: tuple[Signed, bool] | None,
    ) -> Signed:
        """Its signature checked with the serializer of its format (``claimed``, what
        :meth:`_claims` read) only: a forgery costs one check, not one per format."""
        if claimed is None:
            return _BAD
        for verifier in verifiers[1:] if claimed[1] else verifiers[:1]:
            try:
                payload, issued = verifier.loads(token, return_timestamp=True)
            except BadData:
                continue
            found = self._read(payload, verifier is not verifiers[0])
            if found is not None:
                return (found[0], issued, found[1])
        return _BAD

    def _read(self, payload: object, legacy: bool) -> tuple[int, frozenset[str]] | None:
        """``(until, prefixes)`` from a signed payload, or None if it is not a token's."""
        if legacy:
            if self._legacy_scope is None or type(payload) is not int:
                return None
            return payload, frozenset(self.prefixes)
        if not isinstance(payload, list) or len(payload) != 2:
            return None
        until, prefixes = payload
        if type(until) is not int or not isinstance(prefixes, list):
            return None
        if not all(isinstance(p, str) for p in prefixes):
            return None
        return until, frozenset(prefixes)

    def _grants_now(self, signed: Signed, prefix: str) -> bool:
        """Whether a token with these ``(until, issued, prefixes)`` opens ``prefix`` now.

        The age limit is the one itsdangerous's max_age applies: from 0 to the duration.
        """
        until, issued, prefixes = signed
        now = self._clock()
        return 0 <= now - issued <= self.duration + MAX_SKEW and until > now and prefix in prefixes

    def cookie_value(self, token: str, existing: str | None, mount: str = "") -> str:
        """The cookie value that carries ``token`` and the other tokens in ``existing``
        that still give something ``token`` does not: other gates' (and those of other
        filter sections, which cannot be read here). Junk, and tokens that the new one
        covers or that no longer grant anything, are dropped."""
        verifiers = self._verifier(mount)
        new = self._signed(verifiers, mount, token)
        kept = []
        for old in dict.fromkeys((existing or "").split(SEPARATOR)):
            if old == token or not _TOKEN_SHAPE.match(old):
                continue
            signed = self._signed(verifiers, mount, old)
            if signed is not _BAD and (
                signed[0] <= self._clock() or (signed[2] <= new[2] and signed[0] <= new[0])
            ):
                continue  # ended, or everything it opens the new token opens as long
            kept.append(old)
        return SEPARATOR.join([token, *kept[: MAX_TOKENS - 1]])

    def max_age(self, value: str) -> int:
        """The cookie's Max-Age: as long as the longest access it carries, no longer.

        Another gate's token cannot be verified here, but its end of access can be read;
        it only ever lengthens the cookie's life, never grants anything.
        """
        now = int(self._clock())
        longest = 0
        for token in value.split(SEPARATOR):
            _signed, payload = self._verifier("")[0].loads_unsafe(token)
            if isinstance(payload, list) and payload:
                payload = payload[0]
            if type(payload) is int:
                longest = max(longest, payload - now)
        return max(1, min(longest, MAX_COOKIE_AGE))


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
    """With ``codes = N``: the visitor's unfinished set of codes.

    The cookie carries the set's id (signed, with where the site is mounted and the
    prefixes of the gate it is for); which codes count in it is the store's word (see
    :meth:`alloconv_gate.store.Store.add_to_set`), so that a copied cookie shares one set
    instead of multiplying it, and a code counts in one completed set at most.
    """

    LIFETIME = 86400

    def __init__(self, secrets: Sequence[str], clock: Clock = time.time):
        self._serializer = serializer(secrets, "alloconv_gate.progress.v2", clocked_signer(clock))

    def dump(self, set_id: str, prefixes: Iterable[str], mount: str = "") -> str:
        return self._serializer.dumps([mount, set_id, sorted(prefixes)])

    def load(self, value: str | None, prefixes: Iterable[str], mount: str = "") -> str | None:
        """The set id in ``value`` if it is a set of this gate (a prefix in common)."""
        if not value:
            return None
        try:
            signed_mount, set_id, signed_prefixes = self._serializer.loads(
                value, max_age=self.LIFETIME
            )
        except (BadData, TypeError, ValueError):
            return None
        if (
            signed_mount != mount
            or type(set_id) is not str
            or not isinstance(signed_prefixes, list)
        ):
            return None
        return set_id if set(prefixes) & set(signed_prefixes) else None


class LostAnswers:
    """The attempts whose answer this browser lost (a signed cookie set with that page),
    each with the prefixes of the gate that lost it.

    A code whose answer was lost may be recovered when AlloConv later says it was used,
    but only in the browser that lost the answer, on a page of the paths it was to buy:
    a code typed anywhere else is never recovered, so that made-up codes sent during an
    outage cannot be handed around, nor a cheap gate's code recovered at a dear gate.
    """

    LIFETIME = 86400  # as long as a lost answer may be recovered
    MAX_IDS = 8

    def __init__(self, secrets: Sequence[str], clock: Clock = time.time):
        self._serializer = serializer(secrets, "alloconv_gate.lost", clocked_signer(clock))

    def dump(self, entries: Iterable[tuple[str, Iterable[str]]], mount: str = "") -> str:
        """``entries``: (attempt id, prefixes) pairs, oldest first; the newest are kept."""
        kept = [[attempt, sorted(prefixes)] for attempt, prefixes in entries][-self.MAX_IDS :]
        return self._serializer.dumps([mount, kept])

    def load(self, values: Iterable[str], mount: str = "") -> list[tuple[str, tuple[str, ...]]]:
        """The (attempt id, prefixes) pairs in every good cookie value among ``values``."""
        entries: dict[str, tuple[str, ...]] = {}
        for value in values:
            try:
                signed_mount, found = self._serializer.loads(value, max_age=self.LIFETIME)
            except (BadData, TypeError, ValueError):
                continue
            if signed_mount != mount or not isinstance(found, list):
                continue
            for entry in found[: self.MAX_IDS]:
                if _is_entry(entry):
                    entries[entry[0]] = tuple(entry[1])
        return list(entries.items())


def _is_entry(entry: object) -> bool:
    return (
        isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], list)
        and all(isinstance(p, str) for p in entry[1])
    )
