"""Visitor-facing text, one JSON catalogue per language (``fr.json``, ``en.json``).

Adding a language is adding one file with the same keys as ``fr.json``.
"""

from __future__ import annotations

import functools
import json
from importlib import resources


@functools.cache
def catalogue(language: str) -> dict[str, str]:
    """The messages of ``language``, read once per process."""
    text = resources.files(__name__).joinpath(f"{language}.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def languages() -> tuple[str, ...]:
    """The languages there is a catalogue for, French (the default) first."""
    found = sorted(
        entry.name[: -len(".json")]
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(".json")
    )
    return tuple(sorted(found, key=lambda language: language != "fr"))
