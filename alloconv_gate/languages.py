"""The visitor's language and country, from ``Accept-Language`` (parsed by WebOb).

The language picks the page's catalogue when ``language = auto``; the country puts the
visitor's likely palier first when a gate offers several (``palier = fra1 bel1 che1``).
"""

from __future__ import annotations

from webob import Request

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


def choose_language(configured: str, request: Request) -> str:
    """``configured``, or with ``auto`` the visitor's preferred language we have."""
    if configured != "auto":
        return configured
    return request.accept_language.lookup(language_tags=list(LANGUAGES), default=LANGUAGES[0])


def likely_first(paliers: tuple[str, ...], request: Request) -> list[int]:
    """The indexes of ``paliers``, the one of the visitor's likely country first.

    The most specific match wins: ``fr-BE`` picks Belgium over France; a bare ``fr``
    keeps the configured order. Paliers of unknown countries keep their place.
    """
    if len(paliers) < 2 or "HTTP_ACCEPT_LANGUAGE" not in request.environ:
        return list(range(len(paliers)))
    ranked = request.accept_language.basic_filtering(
        [tag for palier in paliers for tag in COUNTRY_TAGS.get(palier[:3], ())]
    )
    best: dict[int, tuple[float, int]] = {}
    for rank, (tag, quality) in enumerate(ranked):
        for index, palier in enumerate(paliers):
            if tag in COUNTRY_TAGS.get(palier[:3], ()) and index not in best:
                # a region tag (fr-BE) beats a bare language (fr) of the same quality
                best[index] = (-quality, 0 if "-" in tag else 1, rank)
    return sorted(range(len(paliers)), key=lambda i: (best.get(i, (0.0, 2, 0)), i))
