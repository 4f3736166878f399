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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import messages
from .crawlers import ENGINES
from .messages import catalogue
from .page import REQUIRED_PLACEHOLDERS
from .paths import normalise_prefix
from .store import DEFAULT_STORE, resolve_store_url

DEFAULT_API_BASE = "https://www.alloconv.fr/scripts"
# One per catalogue file (fr, en...); with "auto": the visitor's, from Accept-Language.
LANGUAGES = messages.languages()
MIN_SECRET_LENGTH = 32
# Every secret written in the package's examples and README (a test checks that they hold
# no other): accepted only with an AlloConv on loopback, the sandbox.
PUBLISHED_SECRETS = frozenset({"demo-secret-do-not-use-in-production-0123456789"})
SANDBOX_KEY = "sandbox-key"  # the sandbox's default key
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
    paliers: tuple[str, ...]  # the first is the main one; a code of any of them is accepted
    prefixes: tuple[str, ...]
    duration: int
    api_base: str
    timeout: float
    number_ttl: int
    numbers: tuple[str | None, ...]  # per palier: shown when api-numeros gives nothing
    price_notices: tuple[str | None, ...]  # per palier; None: the catalogue's, per language
    cookie_name: str
    cookie_secure: bool | None  # None: Secure when the request came over https
    language: str
    store: str  # a resolved store URL (see alloconv_gate.store)
    max_devices: int
    rate_limit: tuple[int, int] | None  # (submissions, per seconds), or None when off
    max_pending: int  # AlloConv verifications in flight per process
    template: str | None = None  # the text of a webmaster's gate page template
    codes: int = 1  # codes one access takes
    crawlers: tuple[str, ...] = ()  # search engines whose verified crawlers pass (site-wide)
    # Recoveries of lost answers allowed (count, per seconds) for the gate, or None: off.
    recoveries: tuple[int, int] | None = (3, 3600)
    shared_key: bool = False  # site-wide: gates selling different paliers may share a key

    @property
    def palier(self) -> str:
        return self.paliers[0]

    @property
    def number(self) -> str | None:
        return self.numbers[0]

    @property
    def price_notice(self) -> str:
        return self.notice(0, "fr" if self.language == "auto" else self.language)

    def notice(self, index: int, language: str) -> str:
        """The price text of the palier at ``index``, for a page in ``language``."""
        configured = self.price_notices[index]
        return configured or catalogue(language)[f"price_notice.{self.paliers[index]}"]

    @property
    def scope(self) -> str:
        """What a cookie of this gate is bound to: its name and the prefixes it protects.

        Two filter sections in one ini protect different prefixes, so their cookies never
        open each other's content even when they share the secret.
        """
        return f"{self.name}:{' '.join(sorted(self.prefixes))}"

    def __repr__(self) -> str:
        return (
            f"GateConfig(name={self.name!r}, paliers={self.paliers!r}, prefixes={self.prefixes!r})"
        )


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
    "gates",
    "template",
    "crawlers",
    "codes",
    "recoveries",
    "shared_key",
)
# What each named gate may set for itself (``premium.palier = fra2``); the same options
# without a gate name are the defaults of every gate.
GATE_OPTIONS = (
    "palier",
    "prefixes",
    "duration",
    "number",
    "price_notice",
    "template",
    "max_devices",
    "rate_limit",
    "codes",
    "recoveries",
    "api_key",
    "api_key_file",
)
# Either of these, set for a gate, replaces both of the filter's.
_KEY_OPTIONS = ("api_key", "api_key_file")
# What may be set per palier (``price_notice.bel1 = ...``), for a gate or for all.
PALIER_OPTIONS = ("number", "price_notice")
_GATE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def parse_options(options: Mapping[str, Any], *, here: str | None = None) -> GateConfig:
    """The first (often only) gate of :func:`parse_gates`."""
    return parse_gates(options, here=here)[0]


def parse_gates(options: Mapping[str, Any], *, here: str | None = None) -> tuple[GateConfig, ...]:
    """Convert and check every option; raise :class:`ConfigError` naming the first bad one.

    Without ``gates``, the options describe one gate named ``default``. With
    ``gates = premium videos``, ``premium.palier = fra2`` sets an option for one gate,
    and options without a gate name are the defaults of all of them.

    ``here`` is the folder relative file paths are read from: the ini file's folder under
    PasteDeploy, the working directory otherwise.
    """
    here = here or os.getcwd()
    opts = {key: value for key, value in options.items() if value is not None}
    names = _parse_gate_names(opts.pop("gates", None))
    shared, per_gate = _split_by_gate(opts, names)
    named = names != ("default",)
    gates = tuple(_parse_gate(name, shared, per_gate[name], here, named) for name in names)
    _check_keys(gates, names)
    claimed: dict[str, str] = {}
    for gate in gates:
        for prefix in gate.prefixes:
            if prefix in claimed:
                raise ConfigError(
                    _prefix(names, gate.name) + "prefixes",
                    f"{prefix or '/'!r} is claimed by gates {claimed[prefix]!r} and {gate.name!r}",
                )
            claimed[prefix] = gate.name
    return gates


def _check_keys(gates: tuple[GateConfig, ...], names: tuple[str, ...]) -> None:
    """Refuse gates that sell different paliers and check codes with one key.

    AlloConv's answer never says which palier a code was bought for: what limits the
    paliers a key accepts is the API's settings in the AlloConv account. So a code of a
    cheap palier opens any gate that checks codes with the same key.
    """
    if gates[0].shared_key:
        return
    for sharing in gates_by_key(gates).values():
        risks = palier_risks(sharing, [repr(gate.name) for gate in sharing])
        if risks:
            raise ConfigError(
                "api_key",
                f"gates {', '.join(_gate_and_paliers(g) for g in sharing)} "
                f"check codes with the same key, and AlloConv does not say which palier a "
                f"code was bought for: {risks}. Give each price its own AlloConv API and key "
                f"({_prefix(names, sharing[-1].name)}api_key_file = ...), or accept the risk "
                f"with shared_key = true",
            )


def _gate_and_paliers(gate: GateConfig) -> str:
    return f"{gate.name!r} ({' '.join(gate.paliers)})"


def gates_by_key(gates) -> dict[str, list[GateConfig]]:
    """The gates that check codes with each key."""
    found: dict[str, list[GateConfig]] = {}
    for gate in gates:
        found.setdefault(gate.api_key, []).append(gate)
    return found


def palier_risks(gates, labels) -> str:
    """For gates that check codes with one key: which palier's code would open which gate
    (``a code of fra2 would open 'dear'``), each gate named by its label; ``""`` when
    they all sell the same paliers."""
    sold = {palier for gate in gates for palier in gate.paliers}
    return "; ".join(
        f"a code of {' '.join(sorted(sold - set(gate.paliers)))} would open {label}"
        for gate, label in zip(gates, labels, strict=True)
        if sold - set(gate.paliers)
    )


def _prefix(names: tuple[str, ...], name: str) -> str:
    """How an option of gate ``name`` is spelt in the ini (for error messages)."""
    return "" if names == ("default",) else f"{name}."


def _parse_gate_names(value: Any) -> tuple[str, ...]:
    if value is None:
        return ("default",)
    names = tuple(str(value).split()) if isinstance(value, str) else tuple(map(str, value))
    if not names:
        raise ConfigError("gates", "names no gate")
    for name in names:
        if not _GATE_NAME.match(name):
            raise ConfigError("gates", f"{name!r} is not a gate name (a-z, 0-9, _ and -)")
    if len(set(names)) != len(names):
        raise ConfigError("gates", "a gate is named twice")
    return names


def _split_by_gate(opts: dict[str, Any], names: tuple[str, ...]):
    """Shared options, and each gate's own ones (``premium.palier`` -> ``palier``)."""
    shared: dict[str, Any] = {}
    per_gate: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, value in opts.items():
        head, dot, rest = key.partition(".")
        if dot and head in per_gate and names != ("default",):
            option = rest.partition(".")[0]
            if option not in GATE_OPTIONS:
                close = difflib.get_close_matches(option, GATE_OPTIONS, n=1)
                hint = f"; did you mean {head}.{close[0]}?" if close else ""
                raise ConfigError(key, f"{option!r} cannot be set per gate{hint}")
            _check_palier_key(key, rest)
            per_gate[head][rest] = value
        elif dot and head in PALIER_OPTIONS:
            _check_palier_key(key, key)
            shared[key] = value
        elif key in OPTIONS:
            shared[key] = value
        else:
            _reject_unknown(key, names)
    return shared, per_gate


def _check_palier_key(key: str, option: str) -> None:
    name, dot, palier = option.partition(".")
    if dot and (name not in PALIER_OPTIONS or not _PALIER.match(palier)):
        raise ConfigError(
            key, "unknown option; per palier only number.PALIER or price_notice.PALIER"
        )


def _parse_gate(name: str, shared: dict, own: dict, here: str, named: bool) -> GateConfig:
    if any(option in own for option in _KEY_OPTIONS):
        shared = {k: v for k, v in shared.items() if k not in _KEY_OPTIONS}
    try:
        return _parse_one_gate(name, {**shared, **own}, here)
    except ConfigError as exc:
        per_gate = named and exc.option.partition(".")[0] in GATE_OPTIONS
        if exc.option in own or (per_gate and exc.option not in shared):
            # name the option as the ini spells it for this gate: premium.duration
            raise ConfigError(f"{name}.{exc.option}", str(exc).split(": ", 2)[-1]) from None
        raise


def _parse_one_gate(name: str, opts: dict[str, Any], here: str) -> GateConfig:
    language = _choice(opts, "language", (*LANGUAGES, "auto"), "fr")
    paliers = _parse_paliers(opts.get("palier"))
    api_base = _parse_api_base(str(opts.get("api_base", DEFAULT_API_BASE)).strip())
    api_key = _one_of(opts, "api_key", "api_key_file", here, _parse_api_key)
    return GateConfig(
        name=name,
        api_key=api_key,
        secrets=_not_published(
            _one_of(opts, "secret", "secret_file", here, _parse_secrets),
            api_base,
            api_key,
            "secret_file" if "secret_file" in opts else "secret",
        ),
        paliers=paliers,
        prefixes=_parse_prefixes(opts.get("prefixes")),
        duration=parse_duration("duration", opts.get("duration", "24h"), MAX_DURATION),
        api_base=api_base,
        timeout=_parse_timeout(opts.get("timeout", 5)),
        number_ttl=parse_duration("number_ttl", opts.get("number_ttl", "1h"), MAX_DURATION),
        numbers=tuple(
            _optional_text(opts, f"number.{p}") or _optional_text(opts, "number") for p in paliers
        ),
        price_notices=tuple(
            _price_notice(opts, p, language, i == 0) for i, p in enumerate(paliers)
        ),
        cookie_name=_parse_cookie_name(str(opts.get("cookie_name", "alloconv_access")).strip()),
        cookie_secure=_parse_cookie_secure(opts.get("cookie_secure", "auto")),
        language=language,
        store=_parse_store(opts.get("store", DEFAULT_STORE), here),
        max_devices=_parse_count("max_devices", opts.get("max_devices", 3), 1, 100),
        rate_limit=_parse_rate("rate_limit", opts.get("rate_limit", "5/minute")),
        max_pending=_parse_count("max_pending", opts.get("max_pending", 2), 1, 1000),
        template=_parse_template(opts.get("template"), here),
        crawlers=_parse_crawlers(opts.get("crawlers")),
        codes=_parse_count("codes", opts.get("codes", 1), 1, 5),
        recoveries=_parse_rate("recoveries", opts.get("recoveries", "3/hour")),
        shared_key=_parse_bool("shared_key", opts.get("shared_key", False)),
    )


def _parse_paliers(value: Any) -> tuple[str, ...]:
    if value is None or not str(value).strip():
        raise ConfigError("palier", "is required")
    paliers = tuple(value.split() if isinstance(value, str) else map(str, value))
    for palier in paliers:
        if not _PALIER.match(palier):
            raise ConfigError("palier", f"{palier!r} is not an AlloConv palier code such as 'fra1'")
    if len(set(paliers)) != len(paliers):
        raise ConfigError("palier", "a palier is listed twice")
    return paliers


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


def _reject_unknown(key: str, names: tuple[str, ...]) -> None:
    head, dot, _rest = key.partition(".")
    if dot and names == ("default",):
        raise ConfigError(key, "unknown option; per-gate options need 'gates = NAME ...'")
    if dot:
        raise ConfigError(key, f"unknown option: no gate {head!r} in 'gates'")
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
        return convert(file_option, _read_file(file_option, opts[file_option], here)[1])
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


def _not_published(
    secrets: tuple[str, ...], api_base: str, api_key: str, option: str
) -> tuple[str, ...]:
    """Refuse a secret printed in this package's examples for a site that sells for real.

    Anyone who read the demo can sign access cookies with its secret: with a real AlloConv
    it would open every paid page for free. It is accepted with the sandbox only: on
    loopback *and* with the sandbox's own key, since a real AlloConv may be reached
    through a proxy on loopback too, but never with the sandbox's key.
    """
    if is_loopback(urlsplit(api_base).hostname or "") and api_key == SANDBOX_KEY:
        return secrets
    for position, secret in enumerate(secrets, 1):
        if secret in PUBLISHED_SECRETS:
            raise ConfigError(
                option,
                f"secret number {position} is the demo's, published in alloconv_gate's "
                "examples: anyone can sign access cookies with it; make your own "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
            )
    return secrets


def _parse_api_base(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("api_base", f"{value!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise ConfigError("api_base", f"{value!r} must not hold a query or fragment")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            "api_base",
            f"{value!r}: the API key travels in the URL: use https (http on loopback only)",
        )
    return value.rstrip("/")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
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
    if str(value).strip().lower() == "auto":
        return None
    try:
        return _parse_bool("cookie_secure", value)
    except ConfigError:
        raise ConfigError("cookie_secure", f"{value!r} is not true, false or auto") from None


def _price_notice(opts: Mapping[str, Any], palier: str, language: str, first: bool) -> str | None:
    """The price text of ``palier``: ``price_notice.PALIER``, else ``price_notice`` (which
    with several paliers is the first one's), else None for the catalogue's default, which
    must then exist in every language the page may use."""
    notice = _optional_text(opts, f"price_notice.{palier}") or (
        _optional_text(opts, "price_notice") if first else None
    )
    if notice:
        return notice
    languages = LANGUAGES if language == "auto" else (language,)
    if any(f"price_notice.{palier}" not in messages.catalogue(lang) for lang in languages):
        raise ConfigError(
            "price_notice" if first else f"price_notice.{palier}",
            f"is required for palier {palier!r}: the law wants the cost shown and there is "
            f"no default for that palier",
        )
    return None


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


def _parse_rate(option: str, value: Any) -> tuple[int, int] | None:
    """``"5/minute"`` -> (5, 60); ``"off"`` -> None."""
    text = str(value).strip().lower()
    if text in ("off", "none"):
        return None
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(option, f"{value!r} is not a rate such as 5/minute, 30/hour, or off")
    return int(match.group(1)), _PERIODS[match.group(2)]


def _parse_bool(option: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(option, f"{value!r} is not true or false")


def _parse_crawlers(value: Any) -> tuple[str, ...]:
    """``"google bing"`` -> ("google", "bing"); nothing, ``none`` or ``off`` -> ()."""
    raw = value.split() if isinstance(value, str) else [str(v) for v in value or ()]
    names = [name.lower() for name in raw]
    if names in (["none"], ["off"]):
        return ()
    for name in names:
        if name not in ENGINES:
            raise ConfigError(
                "crawlers", f"{name!r} is not a search engine: {', '.join(ENGINES)} (or none)"
            )
    if len(set(names)) != len(names):
        raise ConfigError("crawlers", "an engine is listed twice")
    return tuple(names)


def _parse_template(value: Any, here: str) -> str | None:
    """The text of a page template; it must hold the ``$form`` placeholder."""
    if value is None or not str(value).strip():
        return None
    path, text = _read_file("template", value, here)
    missing = [name for name in REQUIRED_PLACEHOLDERS if f"${name}" not in text]
    if missing:
        raise ConfigError("template", f"{path!r} lacks the placeholder ${missing[0]}")
    return text


def _read_file(option: str, value: Any, here: str) -> tuple[str, str]:
    """The path ``value`` names (relative to ``here``) and the file's text."""
    path = os.path.join(here, os.path.expanduser(str(value).strip()))
    try:
        with open(path, encoding="utf-8") as f:
            return path, f.read()
    except OSError as exc:
        raise ConfigError(option, f"cannot read {path!r}: {exc.strerror}") from None
