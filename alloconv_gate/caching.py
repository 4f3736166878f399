"""Keeping paid content out of shared caches.

A response the gate let through was produced for one paying visitor: a CDN or proxy that
stored it would serve it to everyone. So the gate makes it ``private`` (keeping anything
stricter the app said) and varies it on ``Cookie``.
"""

from __future__ import annotations

import re
from operator import itemgetter

# Headers through which CDNs and proxies take caching orders that override Cache-Control
# (RFC 9213's CDN-Cache-Control and its vendor forms such as Cloudflare-CDN-Cache-Control,
# Surrogate-Control, Akamai's Edge-Control, nginx's X-Accel-Expires).
_SURROGATE_HEADERS = frozenset(("surrogate-control", "edge-control", "x-accel-expires"))
# Directives that let a shared cache store or serve the response.
_SHARED_DIRECTIVES = frozenset(("public", "s-maxage", "proxy-revalidate"))
# One directive: commas inside a quoted list (private="Set-Cookie, X-Foo") do not split it.
_DIRECTIVE = re.compile(r'(?:[^,"]|"[^"]*")+')
_NAME = itemgetter(0)
_PRIVATE = ("Cache-Control", "private")
_VARY_COOKIE = ("Vary", "Cookie")


def private_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` with Cache-Control made private and Cookie added to Vary."""
    # This runs on every paid page view, and most apps send none of the headers it
    # rewrites: one test over all the names (false alarms only take the long way) lets
    # those responses skip the loop below.
    if type(headers) is not list:  # PEP 3333 says a list; an iterator would be used up
        headers = list(headers)
    names = "\n".join(map(_NAME, headers)).lower()
    if "control" not in names and "vary" not in names and "x-accel" not in names:
        return [*headers, _PRIVATE, _VARY_COOKIE]
    kept = []
    cache_control: list[str] = []
    vary: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "cache-control":
            cache_control.append(value)
        elif lower == "vary":
            vary.append(value)
        elif lower not in _SURROGATE_HEADERS and not lower.endswith("cdn-cache-control"):
            kept.append((name, value))
    kept.append(
        ("Cache-Control", private_cache_control(", ".join(cache_control)))
        if cache_control
        else _PRIVATE
    )
    kept.append(("Vary", vary_on_cookie(", ".join(vary))) if vary else _VARY_COOKIE)
    return kept


def private_cache_control(value: str) -> str:
    """``value`` without what lets shared caches store it, and with ``private`` unless it
    already says ``no-store`` or ``private``."""
    directives = []
    strict = False
    for directive in _DIRECTIVE.findall(value):
        directive = directive.strip()
        name = directive.split("=", 1)[0].strip().lower()
        if not directive or name in _SHARED_DIRECTIVES:
            continue
        if name == "private" and directive.lower() != "private":
            continue  # private="Set-Cookie" lets shared caches keep the rest
        strict = strict or name in ("private", "no-store")
        directives.append(directive)
    if not strict:
        directives.insert(0, "private")
    return ", ".join(directives)


def vary_on_cookie(value: str) -> str:
    """``value`` with ``Cookie`` among the fields (``*`` already covers it)."""
    fields = [field.strip() for field in value.split(",") if field.strip()]
    if any(field == "*" or field.lower() == "cookie" for field in fields):
        return ", ".join(fields)
    return ", ".join([*fields, "Cookie"])
