"""The visitor's language and country, from ``Accept-Language`` (parsed by WebOb).

The language picks the page's catalogue when ``language = auto``; the country puts the
visitor's likely palier first when a gate offers several (``palier = fra1 bel1 che1``).

Every visitor without access gets the gate page, and parsing the header is most of what
choosing costs (a few µs, as much as the rest of the page). Browsers send few distinct
headers, so each answer is remembered by the header's text: a bounded memo
(:data:`MEMO_SIZE` headers of at most :data:`MEMO_MAX_CHARS` characters, longer ones are
parsed each time), so that a client sending a new header with every request costs what
parsing costs, and never memory.
"""

from __future__ import annotations

import functools

from webob import Request
from webob.acceptparse import create_accept_language_header

from .config import LANGUAGES

# The language tags of each country a palier code starts with (AlloConv names paliers by
# country: fra1, bel1, che1, lux1, can1...).
COUNTRY_TAGS = {
    "fra": ("fr-FR", "fr"),
    "bel": ("fr-BE", "nl-BE", "de-BE", "nl"),
    "che": ("fr-CH", "de-CH", "it-CH", "rm-CH"),
    "lux": ("fr-LU", "de-LU", "lb"),
    "can": ("fr-CA", "en-CA"),
    "mco": ("fr-MC",),
}
#: How many distinct headers each memo keeps (least recently used dropped first).
MEMO_SIZE = 256
#: Headers longer than this are parsed every time, never kept.
MEMO_MAX_CHARS = 256


def choose_language(configured: str, request: Request) -> str:
    """``configured``, or with ``auto`` the visitor's preferred language we have."""
    return language_for(configured, request.environ.get("HTTP_ACCEPT_LANGUAGE"))


def language_for(configured: str, accept_language: str | None) -> str:
    """:func:`choose_language` from the header's text (None: no header)."""
    if configured != "auto":
        return configured
    if accept_language is not None and len(accept_language) > MEMO_MAX_CHARS:
        return _preferred(accept_language)
    return _preferred_memo(accept_language)


def likely_first(paliers: tuple[str, ...], request: Request) -> list[int]:
    """The indexes of ``paliers``, the one of the visitor's likely country first.

    The most specific match wins: ``fr-BE`` picks Belgium over France; a bare ``fr``
    keeps the configured order. Paliers of unknown countries keep their place.
    """
    return list(likely_order(paliers, request.environ.get("HTTP_ACCEPT_LANGUAGE")))


def likely_order(paliers: tuple[str, ...], accept_language: str | None) -> tuple[int, ...]:
    """:func:`likely_first` from the header's text (None: no header), as a tuple."""
    if len(paliers) < 2 or accept_language is None:
        return _configured_order(len(paliers))
    if len(accept_language) > MEMO_MAX_CHARS:
        return _order(paliers, accept_language)
    return _order_memo(paliers, accept_language)


def _preferred(accept_language: str | None) -> str:
    header = create_accept_language_header(accept_language)
    return header.lookup(language_tags=list(LANGUAGES), default=LANGUAGES[0])


def _order(paliers: tuple[str, ...], accept_language: str) -> tuple[int, ...]:
    ranked = create_accept_language_header(accept_language).basic_filtering(
        [tag for palier in paliers for tag in COUNTRY_TAGS.get(palier[:3], ())]
    )
    best: dict[int, tuple[float, int, int]] = {}
    for rank, (tag, quality) in enumerate(ranked):
        for index, palier in enumerate(paliers):
            if tag in COUNTRY_TAGS.get(palier[:3], ()) and index not in best:
                # a region tag (fr-BE) beats a bare language (fr) of the same quality
                best[index] = (-quality, 0 if "-" in tag else 1, rank)
    return tuple(sorted(range(len(paliers)), key=lambda i: (best.get(i, (0.0, 2, 0)), i)))


_preferred_memo = functools.lru_cache(maxsize=MEMO_SIZE)(_preferred)
_order_memo = functools.lru_cache(maxsize=MEMO_SIZE)(_order)


@functools.cache
def _configured_order(count: int) -> tuple[int, ...]:
    return tuple(range(count))
