"""The gate page: the number to call, the price, three steps and the code form.

Every value is HTML-escaped here, whatever its origin (the catalogue, the config, the
visitor's input, AlloConv's answer); the template only holds ``$placeholders``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from html import escape
from importlib import resources
from string import Template

from .messages import catalogue

_PHONE = re.compile(r"^\+?[\d .\-()]{4,30}$")


@dataclass(frozen=True)
class PageContent:
    """What one gate page shows."""

    language: str
    number: str | None
    price_notice: str
    duration: int
    action: str  # the URL the form posts to (the page's own)
    error: str | None = None  # a catalogue key, e.g. "error_invalid"
    code: str = ""  # what the visitor typed, shown again after an error
    reference: str = ""  # for support, in messages that have a {reference}


@functools.cache
def _template(name: str = "gate.html") -> Template:
    text = resources.files(__package__).joinpath(f"templates/{name}").read_text("utf-8")
    return Template(text)


def render_link_page(language: str, action: str, token: str) -> bytes:
    """The page a support link opens: a button that uses the link.

    Using the link takes a POST, so that mail scanners and chat previews, which fetch
    links before the person does, do not use it up.
    """
    text = catalogue(language)
    values = {
        "lang": text["html_lang"],
        "title": text["link_title"],
        "lead": text["link_lead"],
        "submit": text["link_submit"],
        "action": action,
        "token": token,
    }
    escaped = {key: escape(value, quote=True) for key, value in values.items()}
    return _template("link.html").substitute(escaped).encode("utf-8")


def render(content: PageContent) -> bytes:
    """The page as UTF-8 HTML."""
    text = catalogue(content.language)
    values = {
        key: text[key]
        for key in ("title", "lead", "steps_title", "step_call", "step_note", "step_type")
    }
    duration = describe_duration(content.duration, text)
    values.update(
        code_label=text["code_label"],
        submit=text["submit"],
        lang=text["html_lang"],
        price_notice=content.price_notice,
        error=text[content.error].format(reference=content.reference) if content.error else "",
        action=content.action,
        code=content.code,
        access_lasts=text["access_lasts"].format(duration=duration),
    )
    escaped = {key: escape(value, quote=True) for key, value in values.items()}
    escaped["invalid"] = ' aria-invalid="true"' if content.error else ""
    escaped["number_block"] = _number_block(content.number, text)
    return _template().substitute(escaped).encode("utf-8")


def _number_block(number: str | None, text: dict[str, str]) -> str:
    if number is None:
        return f'<p class="call">{escape(text["number_unavailable"])}</p>'
    shown = escape(number)
    if _PHONE.match(number) and sum(ch.isdigit() for ch in number) >= 4:
        dial = "".join(ch for ch in number if ch.isdigit() or ch == "+")
        link = f'<a class="number" href="tel:{dial}">{shown}</a>'
    else:
        link = f'<strong class="number">{shown}</strong>'
    return f'<p class="call">{escape(text["call"])}</p>\n{link}'


def describe_duration(seconds: int, text: dict[str, str]) -> str:
    """``86400`` -> "1 jour" / "1 day": the largest whole unit that fits."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return text[f"one_{unit}"] if count == 1 else text[f"{unit}s"].format(n=count)
    return text["one_second"] if seconds == 1 else text["seconds"].format(n=seconds)
