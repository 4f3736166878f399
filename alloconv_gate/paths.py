"""Which requests a gate protects: path normalisation and prefix matching.

A prefix matches on segment boundaries (``/premium`` protects ``/premium`` and
``/premium/x``, not ``/premiumx``), and on the path as the app will understand it:
``//premium/x``, ``/premium/./x`` and ``/free/../premium/x`` are all under ``/premium``.
Most paths hold none of those tricks, so the common case costs two substring tests and
one regular expression match.
"""

from __future__ import annotations

import re
from urllib.parse import unquote


def normalise_path(path: str, *, resolve_parents: bool = True) -> str:
    """Collapse doubled slashes and drop ``.`` segments; resolve ``..`` (never above the
    root) unless ``resolve_parents`` is false."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == ".." and resolve_parents:
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


def normalise_prefix(prefix: str) -> str:
    """A configured prefix in the form PATH_INFO has, without its trailing slash.

    PATH_INFO holds the percent-decoded bytes of the path as latin-1 text (PEP 3333), so a
    prefix such as ``/café`` or ``/caf%C3%A9`` is compared as its UTF-8 bytes. ``/`` (the
    whole site) becomes the empty string, which every path starts with.
    """
    prefix = prefix.strip()
    if not prefix.startswith("/") or prefix.startswith("//"):
        raise ValueError(f"{prefix!r} must start with '/' (a path: no scheme, no host)")
    if "," in prefix:
        # "/premium, /videos" read as two prefixes would be "/premium," and "/videos":
        # "/premium" itself left open. Prefixes are separated by spaces only.
        raise ValueError(f"{prefix!r} holds a comma: separate prefixes with spaces only")
    if any(ch in prefix for ch in "?#") or any(ch.isspace() for ch in prefix):
        raise ValueError(f"{prefix!r} must be a plain path, without query, fragment or spaces")
    if not prefix.isprintable():
        raise ValueError(f"{prefix!r} must be a plain path, without control characters")
    decoded = unquote(prefix, errors="strict")
    return normalise_path(decoded).rstrip("/").encode("utf-8").decode("latin-1")


class PrefixMatcher:
    """Finds the longest configured prefix a PATH_INFO falls under."""

    def __init__(self, prefixes):
        self.prefixes = tuple(sorted(prefixes, key=len, reverse=True))
        alternatives = "|".join(re.escape(prefix) for prefix in self.prefixes)
        self._regex = re.compile(f"({alternatives})(?:/|$)")

    def match(self, path: str) -> str | None:
        """The prefix ``path`` is under, or None; the first of :meth:`match_all`."""
        found = self.match_all(path)
        return found[0] if found else None

    def match_all(self, path: str) -> tuple[str, ...]:
        """The prefixes ``path`` is under (none, one, or two), given a raw PATH_INFO.

        A path with dot segments is read two ways: resolved (``/free/../premium``, as a
        browser would send it) and as written (``/premium/../x``, which an app that does
        not resolve ``..`` itself, such as a ``<path:...>`` route, may serve as a premium
        page). When the two fall under different prefixes (``/dear/a/../../cheap/x``), the
        request is under both, and needs access to each: when in doubt, the gate stays
        closed.
        """
        if "//" in path or "/." in path or path[:1] != "/":
            resolved = self._match(normalise_path(path))
            written = self._match(normalise_path(path, resolve_parents=False))
            return tuple(dict.fromkeys(p for p in (resolved, written) if p is not None))
        found = self._regex.match(path)
        return (found[1],) if found else ()

    def _match(self, path: str) -> str | None:
        found = self._regex.match(path)
        return found[1] if found else None
