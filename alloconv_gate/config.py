"""The gate's settings: ini strings or keyword arguments in, one frozen object out.

Every option arrives either as a string from a PasteDeploy ini file or as a Python value
from code that wraps an app. Both go through the same converters here, once, at start-up,
so that a misspelt or bad option stops the site from starting with a message that names
it, instead of yielding a gate that silently lets everyone in or locks everyone out.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import messages
from .paths import normalise_prefix
from .store import DEFAULT_STORE, resolve_store_url

DEFAULT_API_BASE = "https://www.alloconv.fr/scripts"
LANGUAGES = ("fr", "en")
MIN_SECRET_LENGTH = 32
# Browsers cap a cookie's lifetime at 400 days; a longer access would end early, silently.
MAX_DURATION = 400 * 86400

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^(\d+)\s*/\s*(second|minute|hour|day)s?$")
_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_PALIER = re.compile(r"^[a-z0-9]{1,32}$")
_COOKIE_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,64}$")
_TRUE = frozenset(("true", "yes", "on", "y", "t", "1"))
_FALSE = frozenset(("false", "no", "off", "n", "f", "0"))


class ConfigError(ValueError):
    """A bad or missing option; ``option`` names it."""

    def __init__(self, option: str, problem: str):
        self.option = option
        super().__init__(f"alloconv_gate: option {option!r}: {problem}")


@dataclass(frozen=True)
class GateConfig:
    """Validated settings of one gate. Built by :func:`parse_options`, never by hand."""

    name: str
    api_key: str
    secrets: tuple[str, ...]
    palier: str
    prefixes: tuple[str, ...]
    duration: int
    api_base: str
    timeout: float
    number_ttl: int
    number: str | None
    price_notice: str
    cookie_name: str
    cookie_secure: bool | None  # None: Secure when the request came over https
    language: str
    store: str  # a resolved store URL (see alloconv_gate.store)
    max_devices: int
    rate_limit: tuple[int, int] | None  # (submissions, per seconds), or None when off
    max_pending: int  # AlloConv verifications in flight per process

    @property
    def scope(self) -> str:
        """What a cookie of this gate is bound to: its name and the prefixes it protects.

        Two filter sections in one ini protect different prefixes, so their cookies never
        open each other's content even when they share the secret.
        """
        return f"{self.name}:{' '.join(sorted(self.prefixes))}"

    def __repr__(self) -> str:
        return f"GateConfig(name={self.name!r}, palier={self.palier!r}, prefixes={self.prefixes!r})"


OPTIONS = (
    "api_key",
    "api_key_file",
    "secret",
    "secret_file",
    "palier",
    "prefixes",
    "duration",
    "api_base",
    "timeout",
    "number_ttl",
    "number",
    "price_notice",
    "cookie_name",
    "cookie_secure",
    "language",
    "store",
    "max_devices",
    "rate_limit",
    "max_pending",
)


def parse_options(options: Mapping[str, Any], *, here: str | None = None) -> GateConfig:
    """Convert and check every option; raise :class:`ConfigError` naming the first bad one.

    ``here`` is the folder relative file paths are read from: the ini file's folder under
    PasteDeploy, the working directory otherwise.
    """
    _reject_unknown(options)
    here = here or os.getcwd()
    opts = {key: value for key, value in options.items() if value is not None}
    language = _choice(opts, "language", LANGUAGES, "fr")
    palier = _required(opts, "palier")
    if not _PALIER.match(palier):
        raise ConfigError("palier", f"{palier!r} is not an AlloConv palier code such as 'fra1'")
    return GateConfig(
        name="default",
        api_key=_one_of(opts, "api_key", "api_key_file", here, _parse_api_key),
        secrets=_one_of(opts, "secret", "secret_file", here, _parse_secrets),
        palier=palier,
        prefixes=_parse_prefixes(opts.get("prefixes")),
        duration=parse_duration("duration", opts.get("duration", "24h"), MAX_DURATION),
        api_base=_parse_api_base(str(opts.get("api_base", DEFAULT_API_BASE)).strip()),
        timeout=_parse_timeout(opts.get("timeout", 5)),
        number_ttl=parse_duration("number_ttl", opts.get("number_ttl", "1h"), MAX_DURATION),
        number=_optional_text(opts, "number"),
        price_notice=_price_notice(opts, palier, language),
        cookie_name=_parse_cookie_name(str(opts.get("cookie_name", "alloconv_access")).strip()),
        cookie_secure=_parse_cookie_secure(opts.get("cookie_secure", "auto")),
        language=language,
        store=_parse_store(opts.get("store", DEFAULT_STORE), here),
        max_devices=_parse_count("max_devices", opts.get("max_devices", 3), 1, 100),
        rate_limit=_parse_rate_limit(opts.get("rate_limit", "5/minute")),
        max_pending=_parse_count("max_pending", opts.get("max_pending", 2), 1, 1000),
    )


def parse_duration(option: str, value: Any, maximum: int) -> int:
    """Seconds from ``3600``, ``"90s"``, ``"30m"``, ``"24h"`` or ``"7d"``."""
    if isinstance(value, bool):
        raise ConfigError(option, f"{value!r} is not a duration")
    if isinstance(value, int):
        seconds = value
    else:
        match = _DURATION.match(str(value).strip().lower())
        if not match:
            raise ConfigError(option, f"{value!r} is not a duration: 3600, 90s, 30m, 24h or 7d")
        seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 0 < seconds <= maximum:
        raise ConfigError(option, f"{value!r} must be more than 0 and at most {maximum} seconds")
    return seconds


def _reject_unknown(options: Iterable[str]) -> None:
    for key in options:
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(key, f"unknown option{hint}")


def _required(opts: Mapping[str, Any], option: str) -> str:
    value = str(opts.get(option, "")).strip()
    if not value:
        raise ConfigError(option, "is required")
    return value


def _optional_text(opts: Mapping[str, Any], option: str) -> str | None:
    value = " ".join(str(opts.get(option, "")).split())
    return value or None


def _choice(opts: Mapping[str, Any], option: str, allowed: tuple[str, ...], default: str) -> str:
    value = str(opts.get(option, default)).strip().lower()
    if value not in allowed:
        raise ConfigError(option, f"{value!r} is not one of {', '.join(allowed)}")
    return value


def _one_of(opts, option, file_option, here, convert):
    """The value of ``option``, or of the file named by ``file_option``: exactly one of them."""
    if option in opts and file_option in opts:
        raise ConfigError(option, f"give either {option!r} or {file_option!r}, not both")
    if file_option in opts:
        path = os.path.join(here, os.path.expanduser(str(opts[file_option]).strip()))
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise ConfigError(file_option, f"cannot read {path!r}: {exc.strerror}") from None
        return convert(file_option, text)
    if option not in opts:
        raise ConfigError(option, f"is required (or {file_option!r})")
    return convert(option, opts[option])


def _parse_api_key(option: str, value: Any) -> str:
    key = str(value).strip()
    if not key:
        raise ConfigError(option, "is empty")
    if any(ch.isspace() for ch in key) or not key.isprintable():
        raise ConfigError(option, "holds spaces or control characters")
    return key


def _parse_secrets(option: str, value: Any) -> tuple[str, ...]:
    secrets = tuple(value.split() if isinstance(value, str) else (str(s) for s in value))
    if not secrets:
        raise ConfigError(option, "is empty")
    for position, secret in enumerate(secrets, 1):
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                option,
                f"secret number {position} has {len(secret)} characters; at least "
                f"{MIN_SECRET_LENGTH} are needed (python3 -c 'import secrets; "
                f"print(secrets.token_urlsafe(32))' makes one)",
            )
    return secrets


def _parse_prefixes(value: Any) -> tuple[str, ...]:
    raw = value.split() if isinstance(value, str) else [str(p) for p in value or ()]
    if not raw:
        raise ConfigError("prefixes", "is required, e.g. '/premium /videos'")
    prefixes = []
    for prefix in raw:
        try:
            normal = normalise_prefix(prefix)
        except ValueError as exc:
            raise ConfigError("prefixes", str(exc)) from None
        if normal in prefixes:
            raise ConfigError("prefixes", f"{prefix!r} is given twice")
        prefixes.append(normal)
    return tuple(prefixes)


def _parse_api_base(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("api_base", f"{value!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise ConfigError("api_base", f"{value!r} must not hold a query or fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            "api_base",
            f"{value!r}: the API key travels in the URL: use https (http on loopback only)",
        )
    return value.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_timeout(value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError("timeout", f"{value!r} is not a number of seconds")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError("timeout", f"{value!r} is not a number of seconds") from None
    if not 0 < seconds <= 60:
        raise ConfigError("timeout", f"{value!r} must be more than 0 and at most 60 seconds")
    return seconds


def _parse_cookie_name(value: str) -> str:
    if not _COOKIE_NAME.match(value):
        raise ConfigError("cookie_name", f"{value!r} is not a valid cookie name")
    return value


def _parse_cookie_secure(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError("cookie_secure", f"{value!r} is not true, false or auto")


def _price_notice(opts: Mapping[str, Any], palier: str, language: str) -> str:
    notice = _optional_text(opts, "price_notice")
    if notice:
        return notice
    default = messages.catalogue(language).get(f"price_notice.{palier}")
    if default is None:
        raise ConfigError(
            "price_notice",
            f"is required for palier {palier!r}: the law wants the cost shown and there is "
            f"no default for that palier",
        )
    return default


def _parse_store(value: Any, here: str) -> str:
    try:
        return resolve_store_url(str(value), here)
    except ValueError as exc:
        raise ConfigError("store", str(exc)) from None


def _parse_count(option: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(option, f"{value!r} is not a whole number")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(option, f"{value!r} is not a whole number") from None
    if not low <= number <= high:
        raise ConfigError(option, f"{value!r} must be from {low} to {high}")
    return number


def _parse_rate_limit(value: Any) -> tuple[int, int] | None:
    """``"5/minute"`` -> (5, 60); ``"off"`` -> None."""
    text = str(value).strip().lower()
    if text in ("off", "none"):
        return None
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(
            "rate_limit", f"{value!r} is not a rate such as 5/minute, 30/hour, or off"
        )
    return int(match.group(1)), _PERIODS[match.group(2)]
