"""``alloconv-gate``: check a configuration, read the journal, make a support link.

It reads the same ini file as the site (through PasteDeploy, so ``%(here)s`` and
``[DEFAULT]`` work the same), and finds the gates in it: the ``[filter:NAME]`` sections
that ``use`` alloconv_gate. NAME is what ``--filter`` and ``--gate`` take.

    alloconv-gate check site.ini
    alloconv-gate journal site.ini --since 24h --outcome unknown
    alloconv-gate journal site.ini --code AB12CD34 --format json
    alloconv-gate grant site.ini --gate premium --for 24h --url https://example.com/premium/article
"""

from __future__ import annotations

import argparse
import configparser
import csv
import json
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import unquote, urlsplit, urlunsplit

from .alloconv import AlloConv, NumberUnavailable
from .codes import code_hash, reference
from .config import (
    MAX_DURATION,
    ConfigError,
    GateConfig,
    palier_risks,
    parse_duration,
    parse_gates,
)
from .paths import PrefixMatcher
from .store import OUTCOMES, Attempt, StoreError, open_store, sqlite_path
from .store.redis_store import redacted
from .tokens import GRANT_LINK_LIFETIME, GRANT_PARAM, GrantLinks

# How many records a journal look-up reads before filtering by gate and reference.
SCAN_LIMIT = 100_000
_USES = ("egg:alloconv_gate", "egg:alloconv_gate#main", "call:alloconv_gate.paste:filter_factory")


class CommandError(Exception):
    """A problem to print as one line, with exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except CommandError as exc:
        print(f"alloconv-gate: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alloconv-gate", description="Support tools for alloconv_gate, reading the site's ini."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="validate every option, fetch the numbers, check the API keys and the store",
        description="Validates every option, fetches the number of each palier, checks each "
        "API key once without spending a code (keys are shown masked), says which paliers "
        "each key is sold for, and checks the store. Gates that sell different paliers "
        "with one key are a problem, even in different sections, unless shared_key = true "
        "accepts the risk: then a WARN line. Exit status 1 on any problem (FAIL); a WARN "
        "is a risk the configuration accepts, not a problem.",
    )
    check.add_argument("config", metavar="CONFIG.ini")
    check.add_argument("--filter", metavar="NAME", help="only this [filter:NAME] section")
    check.set_defaults(command=cmd_check)

    journal = commands.add_parser(
        "journal",
        help='what support needs to answer "I paid and got nothing"',
        description="Lists code submissions, newest first.",
    )
    journal.add_argument("config", metavar="CONFIG.ini")
    journal.add_argument("--filter", metavar="NAME", help="the gate's [filter:NAME] section")
    journal.add_argument("--since", metavar="DURATION", help="e.g. 24h, 7d (default: all)")
    journal.add_argument("--outcome", choices=OUTCOMES)
    journal.add_argument("--code", help="the code the visitor read out (never stored in clear)")
    journal.add_argument("--reference", help="the reference the gate page showed the visitor")
    journal.add_argument("--format", choices=("table", "csv", "json"), default="table")
    journal.add_argument("--limit", type=int, default=1000)
    journal.set_defaults(command=cmd_journal)

    grant = commands.add_parser(
        "grant",
        help="print a one-time link that gives its visitor access",
        description=f"Prints a signed link that gives access once; unused, it expires after "
        f"{GRANT_LINK_LIFETIME // 60} minutes. It is journaled.",
    )
    grant.add_argument("config", metavar="CONFIG.ini")
    grant.add_argument("--gate", metavar="NAME", help="the gate's [filter:NAME] section")
    grant.add_argument(
        "--for",
        dest="duration",
        default=None,
        metavar="DURATION",
        help="how long the access lasts (default: the gate's duration)",
    )
    grant.add_argument(
        "--url",
        default="",
        help="the page the visitor paid for, e.g. https://example.com/premium/article "
        "(its query is kept)",
    )
    grant.set_defaults(command=cmd_grant)
    return parser


# The ini file


def gate_sections(path: str) -> list[str]:
    """The names of the ``[filter:NAME]`` sections that use alloconv_gate."""
    if not os.path.isfile(path):
        raise CommandError(f"{path}: no such file")
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise CommandError(f"{path}: {exc}") from None
    return [
        section.split(":", 1)[1].strip()
        for section in parser.sections()
        if section.startswith("filter:")
        and parser.get(section, "use", fallback="").strip() in _USES
    ]


def load_gates(path: str, name: str) -> tuple[GateConfig, ...]:
    """The gates of section ``[filter:name]``, its options converted as at start-up."""
    try:
        from paste.deploy.loadwsgi import FILTER, loadcontext
    except ImportError:  # pragma: no cover - PasteDeploy comes with the [paste] extra
        raise CommandError(
            "reading an ini needs PasteDeploy: pip install alloconv_gate[paste]"
        ) from None
    try:
        context = loadcontext(FILTER, f"config:{os.path.abspath(path)}", name=name)
    except (configparser.Error, LookupError, ValueError) as exc:
        raise CommandError(f"{path}: {exc}") from None
    return parse_gates(context.local_conf, here=context.global_conf.get("here"))


def chosen(path: str, name: str | None, option: str) -> list[str]:
    names = gate_sections(path)
    if not names:
        raise CommandError(f"{path}: no [filter:NAME] section with use = egg:alloconv_gate")
    if name is None:
        return names
    if name not in names:
        raise CommandError(f"{path}: no gate {name!r} for {option}; there are: {', '.join(names)}")
    return [name]


def one_section(path: str, name: str | None, option: str) -> tuple[GateConfig, ...]:
    """The gates of the one filter section ``name`` names (or of the only one)."""
    names = chosen(path, name, option)
    if len(names) > 1:
        raise CommandError(f"{path} has several gates ({', '.join(names)}): choose with {option}")
    try:
        return load_gates(path, names[0])
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def one_gate(path: str, name: str | None, option: str) -> GateConfig:
    """The gate ``name`` names: a filter section with one gate, or a gate in ``gates``."""
    sections = gate_sections(path)
    if name is None or name in sections:
        configs = one_section(path, name, option)
        if len(configs) == 1:
            return configs[0]
        names = ", ".join(c.name for c in configs)
        raise CommandError(f"several gates in that section ({names}): choose with {option}")
    for section in sections:
        try:
            configs = load_gates(path, section)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
        for config in configs:
            if config.name == name:
                return config
    raise CommandError(f"{path}: no gate {name!r} for {option}; there are: {', '.join(sections)}")


# check

# What the check cannot find out, said next to what the key should accept.
_KEY_FACTS = (
    "AlloConv cannot be asked which paliers a key accepts (each API of the account, with "
    'its key, is set on the account\'s "mes APIs" page)'
)


def mask_key(key: str) -> str:
    """``abcd****``: at most 4 characters of the key and at most a third of it, so that a
    support transcript never holds a usable key and a short test key is not given away."""
    return key[: min(4, len(key) // 3)] + "****"


class _Report:
    """The check's lines, and its count of problems (FAIL) and warnings (WARN)."""

    def __init__(self) -> None:
        self.problems = 0
        self.warnings = 0
        # (api_base, key) -> AlloConv's answer to an empty code: each key is asked once.
        self.key_answers: dict[tuple[str, str], str] = {}

    def line(self, status: str, what: str, detail: str) -> None:
        """``status``: ``ok``, ``FAIL`` (a problem), ``WARN`` (a risk accepted) or ``info``."""
        self.problems += status == "FAIL"
        self.warnings += status == "WARN"
        print(f"  {status:<4} {what}: {detail}")

    def summary(self) -> str:
        if not self.problems and not self.warnings:
            return "all good"
        warned = f"{self.warnings} warning(s)" if self.warnings else ""
        if not self.problems:
            return f"no problem; {warned} (risks the configuration accepts, see WARN)"
        return f"{self.problems} problem(s)" + (f", {warned}" if warned else "")


def cmd_check(args) -> int:
    report = _Report()
    names = chosen(args.config, args.filter, "--filter")
    for name in names:
        print(f"[filter:{name}]")
        check_gate(args.config, name, report)
    _check_keys_across_filters(args.config, names, report)
    print(report.summary())
    return 1 if report.problems else 0


def check_gate(path: str, name: str, report: _Report | None = None) -> int:
    """Print one line per check of section ``[filter:name]``; return its number of problems."""
    report = report or _Report()
    before = report.problems
    try:
        configs = load_gates(path, name)
    except (ConfigError, CommandError) as exc:
        report.line("FAIL", "options", str(exc))
        return report.problems - before
    config = configs[0]  # what the gates share: store, api_base, timeout
    keys = _key_labels(configs)
    clients = {key: AlloConv(config.api_base, key, timeout=config.timeout) for key in keys}
    for gate in configs:
        label = "" if gate.name == "default" else f"gate {gate.name}: "
        paliers, prefixes = " ".join(gate.paliers), " ".join(p or "/" for p in gate.prefixes)
        report.line(
            "ok",
            "options",
            f"{label}palier {paliers}, prefixes {prefixes}, {keys[gate.api_key]}",
        )
        for palier in gate.paliers:
            try:
                report.line("ok", "number", f"{palier}: {clients[gate.api_key].number(palier)}")
            except NumberUnavailable as exc:
                report.line("FAIL", "number", f"{palier}: {exc}")
    for key, label in keys.items():
        _check_key(report, clients[key], (config.api_base, key), label)
        _describe_key(report, label, [gate for gate in configs if gate.api_key == key])
    _check_store(report, config)
    return report.problems - before


def _key_labels(configs: tuple[GateConfig, ...]) -> dict[str, str]:
    """Each distinct key -> how the check names it: masked, and numbered when there are
    several (two keys may look alike once masked)."""
    keys = list(dict.fromkeys(gate.api_key for gate in configs))
    if len(keys) == 1:
        return {keys[0]: f"api_key ({mask_key(keys[0])})"}
    return {key: f"api_key {n} ({mask_key(key)})" for n, key in enumerate(keys, 1)}


def _check_key(report: _Report, client: AlloConv, which: tuple[str, str], label: str) -> None:
    """Ask AlloConv about the key once per run. An empty code answers ERR1 with a good key
    and ERR99 with a bad one: no code is spent."""
    again = which in report.key_answers
    if not again:
        report.key_answers[which] = client.verify("").answer
    answer = report.key_answers[which]
    above = " (checked above)" if again else ""
    if answer == "ERR1":
        report.line("ok", label, f"accepted by AlloConv{above}")
    elif answer == "ERR99":
        report.line("FAIL", label, f"refused by AlloConv (ERR99){above}")
    else:
        report.line("FAIL", label, f"could not be checked: {answer}{above}")


def _describe_key(report: _Report, label: str, gates: list[GateConfig]) -> None:
    """What the key should accept, as far as the configuration tells; and the risk when
    gates that sell different paliers share it (``shared_key = true``)."""
    sold = " ".join(dict.fromkeys(palier for gate in gates for palier in gate.paliers))
    if len(gates) == 1:
        users = _gate_name(gates[0])
        where = f" ({users})" if users else ""
    else:
        users = ", ".join(_gate_label(gate) for gate in gates)
        where = "; ".join(f"{_gate_name(gate)}: {' '.join(gate.paliers)}" for gate in gates)
        where = f" ({where})"
    report.line(
        "info",
        label,
        f"sold for {sold}{where}. {_KEY_FACTS}: make sure this key's API accepts {sold} "
        f"only, so that a code of another palier gets ERR4",
    )
    risks = _risks(gates)
    if risks:
        report.line(
            "WARN",
            label,
            f"shared_key = true: {users} check codes with this key and AlloConv does not "
            f"say which palier a code was bought for: {risks}. Give each price its own "
            f"AlloConv API and key to close that",
        )


def _gate_name(gate: GateConfig, section: str | None = None) -> str:
    """``gate premium``, ``[filter:videos]``, ``[filter:site] gate hd``; ``""`` for the one
    gate of a section, within the section."""
    named = "" if gate.name == "default" else f"gate {gate.name}"
    return named if section is None else f"[filter:{section}] {named}".rstrip()


def _gate_label(gate: GateConfig, section: str | None = None) -> str:
    """The gate's name and its paliers, ``""`` for the one gate of a section."""
    name = _gate_name(gate, section)
    return f"{name} ({' '.join(gate.paliers)})" if name else ""


def _risks(gates: list[GateConfig], sections: list[str] | None = None) -> str:
    """``a code of fra2 would open gate premium; ...`` for gates sharing one key, or ``""``."""
    sections = sections or [None] * len(gates)
    labels = [_gate_name(gate, section) for gate, section in zip(gates, sections, strict=True)]
    return palier_risks(gates, labels)


def _check_keys_across_filters(path: str, checked: list[str], report: _Report) -> None:
    """Gates of different filter sections that share a key but sell different paliers.

    Each section is a Gate of its own, so start-up cannot see this: a code of one
    section's palier opens the other's prefixes. A problem, unless every section
    involved says ``shared_key = true``.
    """
    by_key: dict[tuple[str, str], list[tuple[str, GateConfig]]] = {}
    for section in gate_sections(path):
        try:
            configs = load_gates(path, section)
        except (ConfigError, CommandError):
            continue  # reported with its section, when checked
        for gate in configs:
            by_key.setdefault((gate.api_base, gate.api_key), []).append((section, gate))
    lines = []
    for (_, key), users in by_key.items():
        sections = [section for section, _ in users]
        if len(set(sections)) < 2 or not set(sections) & set(checked):
            continue
        gates = [gate for _, gate in users]
        if len({frozenset(gate.paliers) for gate in gates}) < 2:
            continue
        accepted = all(gate.shared_key for gate in gates)
        where = ", ".join(_gate_label(gate, section) for section, gate in users)
        lines.append(
            (
                "WARN" if accepted else "FAIL",
                f"api_key ({mask_key(key)})",
                f"{where} check codes with the same key, and AlloConv does not say which "
                f"palier a code was bought for: {_risks(gates, sections)}. "
                + (
                    "Every section says shared_key = true"
                    if accepted
                    else "Give each price its own AlloConv API and key (or, to accept "
                    "the risk, shared_key = true in each section)"
                ),
            )
        )
    if lines:
        print("[across filters]")
        for line in lines:
            report.line(*line)


def _check_store(report: _Report, config: GateConfig) -> None:
    path = sqlite_path(config.store)
    shown = config.store if path is not None else redacted(config.store)
    if config.store == "memory":
        report.line("ok", "store", "memory: in the site's process only, nothing shared or kept")
        return
    if path is not None:
        folder = os.path.dirname(path)
        if not os.path.exists(path):
            if os.path.isdir(folder) and os.access(folder, os.W_OK):
                report.line("ok", "store", f"{shown} (the site creates it when it starts)")
            else:
                report.line("FAIL", "store", f"{folder} is not a folder the site can write")
            return
    try:
        store = _open(config)
        store.ping()
        store.close()
        report.line("ok", "store", shown)
    except (StoreError, CommandError) as exc:
        report.line("FAIL", "store", str(exc))


# journal

_COLUMNS = ("time", "gate", "palier", "client", "code", "reference", "outcome", "latency", "detail")


def cmd_journal(args) -> int:
    configs = one_section(args.config, args.filter, "--filter")
    config = configs[0]
    since = None
    if args.since:
        try:
            since = time.time() - parse_duration("--since", args.since, 100 * 365 * 86400)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
    code = "".join(args.code.split()) if args.code else None
    # Records are hashed with the first secret of their day: try every configured one.
    hashes = [code_hash(secret, code) for secret in config.secrets] if code else [None]
    store = _open(config)
    try:
        attempts = [
            attempt
            for hashed in hashes
            for attempt in store.journal(
                since=since, outcome=args.outcome, code_hash=hashed, limit=SCAN_LIMIT
            )
            if _of_gate(attempt, configs) and _has_reference(attempt, args.reference)
        ]
    except StoreError as exc:
        raise CommandError(str(exc)) from None
    finally:
        store.close()
    attempts.sort(key=lambda a: a.time, reverse=True)
    rows = [_row(a) for a in attempts[: args.limit]]
    _print_rows(rows, args.format)
    return 0


def _of_gate(attempt: Attempt, configs: tuple[GateConfig, ...]) -> bool:
    """Whether ``attempt`` was made at one of these gates (wherever the site mounts it)."""
    return any(
        attempt.gate == config.scope or attempt.gate.startswith(config.scope + "@")
        for config in configs
    )


def _has_reference(attempt: Attempt, wanted: str | None) -> bool:
    return wanted is None or reference(attempt.code_hash) == wanted.strip().upper()


def _row(attempt: Attempt) -> dict[str, str]:
    when = datetime.fromtimestamp(attempt.time, timezone.utc)
    return {
        "time": when.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "gate": attempt.gate,
        "palier": attempt.palier,
        "client": attempt.client,
        "code": attempt.code_masked,
        "reference": reference(attempt.code_hash) if attempt.code_hash else "",
        "outcome": attempt.outcome,
        "latency": "" if attempt.latency is None else f"{attempt.latency:.2f}s",
        "detail": attempt.detail,
    }


def _print_rows(rows: list[dict[str, str]], form: str) -> None:
    if form == "json":
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    elif form == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif not rows:
        print("no records")
    else:
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in _COLUMNS}
        print("  ".join(c.ljust(widths[c]) for c in _COLUMNS).rstrip())
        for row in rows:
            print("  ".join(row[c].ljust(widths[c]) for c in _COLUMNS).rstrip())


# grant


def cmd_grant(args) -> int:
    config = one_gate(args.config, args.gate, "--gate")
    try:
        duration = (
            config.duration
            if args.duration is None
            else parse_duration("--for", args.duration, MAX_DURATION)
        )
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    if duration > config.duration:
        raise CommandError(
            f"option '--for': at most the gate's duration ({config.duration}s): "
            f"the access cookie cannot outlive it"
        )
    _link(args.url, "", config)  # a page of this gate, checked before anything is made
    grant_id = uuid.uuid4().hex
    token = GrantLinks(config.secrets, config.scope).issue(grant_id, duration)
    store = _open(config)
    record = Attempt(
        id=uuid.uuid4().hex,
        time=time.time(),
        gate=config.scope,
        palier=config.palier,
        client="support",
        code_masked="link",
        code_hash=grant_id,
        outcome="granted",
        detail=f"link issued for {duration}s",
    )
    try:
        store.record(record)
    except StoreError as exc:
        raise CommandError(f"the link was not made: {exc}") from None
    finally:
        store.close()
    print(_link(args.url, token))
    print(
        f"(works once, within {GRANT_LINK_LIFETIME // 60} minutes; gives access for "
        f"{duration} seconds)",
        file=sys.stderr,
    )
    return 0


def _link(url: str, token: str, config: GateConfig | None = None) -> str:
    """``url`` (the page the visitor paid for) with the support link's token in its query.

    With ``config``, only checks that ``url`` names a page under one of the gate's
    prefixes: a link to the site's home, or to a page the gate does not sell, would give
    nothing (the gate never sees it).
    """
    parts = urlsplit(url.strip())
    if config is not None:
        path = unquote(parts.path).encode("utf-8").decode("latin-1")
        if parts.path in ("", "/") or PrefixMatcher(config.prefixes).match(path) is None:
            shown = " ".join(p or "/" for p in config.prefixes)
            raise CommandError(
                f"option '--url': {url!r} is not a page of this gate (prefixes {shown}): "
                f"give the page the visitor paid for, e.g. https://example.com"
                f"{config.prefixes[0] or ''}/article"
            )
        return ""
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{query}{GRANT_PARAM}={token}", fragment=""))


def _open(config: GateConfig):
    """The site's store, never created here: a file made by this command (run as another
    user, say root) could leave the site's workers unable to write it."""
    if config.store == "memory":
        raise CommandError("store = memory lives in the site's process: nothing to read here")
    path = sqlite_path(config.store)
    if path is not None and not os.path.exists(path):
        raise CommandError(f"no journal at {path} yet: the site creates it when it starts")
    try:
        return open_store(config.store)
    except StoreError as exc:
        raise CommandError(str(exc)) from None
