"""The gate page: the number to call, the price, three steps and the code form.

Every value is HTML-escaped here, whatever its origin (the catalogue, the config, the
visitor's input, AlloConv's answer); the template only holds ``$placeholders``.
"""

from __future__ import annotations

import functools
import re
import secrets
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from html import escape
from importlib import resources
from string import Template
from urllib.parse import quote

from .messages import catalogue

_PHONE = re.compile(r"^\+?[\d .\-()]{4,30}$")
# An SMS+ answer: a keyword and a short number ("ACCES au 81212", "Envoyez ACCES au 81212").
_SMS = re.compile(
    r"^(?:envoyez\s+)?(?P<keyword>[A-Za-z0-9]{2,20})\s+au\s+(?P<short>\d{4,6})$", re.I
)

#: Placeholders a webmaster's template must hold: the form, and the numbers with their
#: prices (French law wants the cost shown).
REQUIRED_PLACEHOLDERS = ("form", "numbers")
#: Every placeholder a template may use (see the README).
PLACEHOLDERS = ("lang", "title", "lead", "numbers", "steps", "form", "access_lasts")


@dataclass(frozen=True)
class Offer:
    """One way to pay: the number for a palier (None when unknown) and its price."""

    number: str | None
    price_notice: str


@dataclass(frozen=True)
class PageContent:
    """What one gate page shows."""

    language: str
    offers: tuple[Offer, ...]  # in the order to show them, the visitor's likely first
    duration: int
    action: str  # the URL the form posts to (the page's own)
    error: str | None = None  # a catalogue key, e.g. "error_invalid"
    code: str = ""  # what the visitor typed, shown again after an error
    reference: str = ""  # for support, in messages that have a {reference}
    template: str | None = None  # a webmaster's template text; None: the default
    codes_needed: int = 1  # codes = N: how many codes one access takes
    codes_passed: int = 0  # and how many of them passed already


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
    """The page as UTF-8 HTML: the default template, or the webmaster's."""
    text = catalogue(content.language)
    duration = describe_duration(content.duration, text)
    values = {
        "lang": escape(text["html_lang"]),
        "title": escape(text["title"]),
        "lead": escape(text["lead"]),
        "access_lasts": escape(text["access_lasts"].format(duration=duration)),
        "numbers": "\n".join(_offer_block(offer, text) for offer in content.offers),
        "steps": _steps_block(text),
        "form": _form_block(content, text),
    }
    template = _template() if content.template is None else Template(content.template)
    return template.safe_substitute(values).encode("utf-8")


def _offer_block(offer: Offer, text: dict[str, str]) -> str:
    price = f'<p class="price">{escape(offer.price_notice)}</p>'
    number = offer.number
    if number is None:
        unavailable = escape(text["number_unavailable"])
        return f'<div class="offer"><p class="call">{unavailable}</p>{price}</div>'
    sms = _SMS.match(number)
    if sms:
        keyword, short = sms.group("keyword"), sms.group("short")
        shown = escape(text["sms"].format(keyword=keyword, short=short))
        link = f'<a class="number sms" href="sms:{short}?body={quote(keyword)}">{shown}</a>'
        return f'<div class="offer">{link}\n{price}</div>'
    shown = escape(number)
    if _PHONE.match(number) and sum(ch.isdigit() for ch in number) >= 4:
        dial = "".join(ch for ch in number if ch.isdigit() or ch == "+")
        link = f'<a class="number" href="tel:{dial}">{shown}</a>'
    else:
        link = f'<strong class="number">{shown}</strong>'
    call = escape(text["call"])
    return f'<div class="offer"><p class="call">{call}</p>\n{link}\n{price}</div>'


def _steps_block(text: dict[str, str]) -> str:
    steps = "".join(
        f"<li>{escape(text[key])}</li>" for key in ("step_call", "step_note", "step_type")
    )
    return f"<h2>{escape(text['steps_title'])}</h2>\n<ol>{steps}</ol>"


def _form_block(content: PageContent, text: dict[str, str]) -> str:
    needed, passed = content.codes_needed, content.codes_passed
    error = ""
    if content.error:
        error = text[content.error].format(reference=content.reference, done=passed, n=needed)
    invalid = (
        ' aria-invalid="true"' if content.error and content.error != "error_more_codes" else ""
    )
    intro = f'<p class="codes">{escape(text["codes_needed"].format(n=needed))}</p>\n'
    fields = []
    for i in range(passed + 1, needed + 1):
        field_id = "code" if i == passed + 1 else f"code{i}"
        label = text["code_label"] if needed == 1 else text["code_label_n"].format(i=i)
        value = content.code if i == passed + 1 else ""
        fields.append(
            f'<label for="{field_id}">{escape(label)}</label>\n'
            f'<input id="{field_id}" name="code" type="text" value="{escape(value)}" required '
            f'minlength="8" maxlength="64" autocomplete="one-time-code" '
            f'autocapitalize="characters" spellcheck="false" aria-describedby="code-error"'
            f"{invalid if i == passed + 1 else ''}>\n"
        )
    return (
        f'<div class="alert" role="alert" id="code-error">{escape(error)}</div>\n'
        f"{intro if needed > 1 else ''}"
        f'<form method="post" action="{escape(content.action)}">\n'
        f"{''.join(fields)}"
        f'<button type="submit">{escape(text["submit"])}</button>\n'
        f"</form>"
    )


# Where a page rendered ahead of its request gets what the request brings: random, so
# that no template, catalogue or AlloConv answer can hold them, and left as is by escape().
_HOLE_TOKEN = secrets.token_hex(16)
_ACTION_HOLE = f"alloconv-gate-action-{_HOLE_TOKEN}"
_CODE_HOLE = f"alloconv-gate-code-{_HOLE_TOKEN}"
_CODE_HOLE_BYTES = _CODE_HOLE.encode("ascii")
_HOLES = re.compile(f"({_ACTION_HOLE}|{_CODE_HOLE})".encode("ascii"))


@dataclass(frozen=True)
class PageAhead:
    """A page rendered but for what each request puts in it: its own URL (the form's
    action) and, after a refusal, the code the visitor typed."""

    parts: tuple[bytes, ...]  # the page around the holes
    holes: tuple[bytes, ...]  # which hole each gap between two parts is

    def body(self, action: str, code: str = "") -> bytes:
        """The page with ``action`` and ``code`` (escaped here), byte for byte what
        :func:`render` makes of them."""
        action_bytes = escape(action).encode("utf-8")
        if _CODE_HOLE_BYTES not in self.holes:
            return action_bytes.join(self.parts)
        values = {_CODE_HOLE_BYTES: escape(code).encode("utf-8")}
        pieces = [self.parts[0]]
        for hole, part in zip(self.holes, self.parts[1:], strict=True):
            pieces += (values.get(hole, action_bytes), part)
        return b"".join(pieces)


def render_ahead(content: PageContent, *, code: bool = False) -> PageAhead:
    """``content`` rendered once, to be served to many requests with their own URLs (and,
    with ``code``, the code each typed; else the code field is empty).

    The action URL and the code typed are the only parts of a page that change from one
    request to the next; the rest depends on the gate, the language, the order and the
    numbers (which change once per number refresh at most), and the refusal's message.
    """
    page = render(replace(content, action=_ACTION_HOLE, code=_CODE_HOLE if code else ""))
    split = _HOLES.split(page)
    return PageAhead(tuple(split[0::2]), tuple(split[1::2]))


class PageCache:
    """What a gate's page looks like for each thing it may show: built once, kept a while.

    Keys hold everything the page depends on (the numbers among them), so a refreshed
    number makes a new key and an old page is never served for it; old keys are simply
    no longer asked for. At most ``size`` pages are kept: the cache starts afresh when
    full, so that a stream of new numbers (or of visitors' orders and languages) never
    grows it. Two threads building the same page at once is harmless: both are equal.
    """

    def __init__(self, size: int = 128):
        self._size = size
        self._pages: dict[Hashable, object] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], object]):
        """The value for ``key``, from ``build()`` the first time."""
        try:
            return self._pages[key]
        except KeyError:
            pass
        value = build()
        with self._lock:
            if len(self._pages) >= self._size:
                self._pages.clear()
            self._pages[key] = value
        return value


def describe_duration(seconds: int, text: dict[str, str]) -> str:
    """``86400`` -> "1 jour" / "1 day": the largest whole unit that fits."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return text[f"one_{unit}"] if count == 1 else text[f"{unit}s"].format(n=count)
    return text["one_second"] if seconds == 1 else text["seconds"].format(n=seconds)
