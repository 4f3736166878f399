"""The store's contract: the payment journal, redemptions, rate-limit counters, grants.

The gate keeps four kinds of state, so that no paid code is ever lost and nobody
hammers AlloConv through the site:

- the **journal**: one :class:`Attempt` per code submission, written *before* AlloConv
  is asked (outcome ``pending``) and completed after, so that a crash in between leaves a
  pending record, never nothing;
- **redemptions**: for each code AlloConv accepted, when access was granted and when it
  ends, the prefixes it was sold for, and on how many browsers it was restored;
- **set claims** (``codes = N``): which set of codes each code that passed counts in, so
  that a code counts in at most one completed set;
- **rate-limit counters**, in fixed windows;
- **support grants**: one-time links, each usable once.

Three engines implement it: sqlite (the default; several worker processes on one
host), redis (several hosts) and memory (tests; one process). Every method does its
work atomically across all processes sharing the store, or raises :class:`StoreError`;
what a failure means is the gate's decision (it fails closed). A write that raised may
still have happened (a timeout on a Redis that answers late): the gate never relies on
a failed write not having taken place. Engines never read the
clock: times come from the caller, so tests inject them.

Codes never reach a store in clear: records hold ``code_masked`` and ``code_hash`` (a
keyed hash, see :mod:`alloconv_gate.codes`).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

PENDING = "pending"
OUTCOMES = (
    PENDING,
    "ok",
    "invalid",
    "wrong-palier",
    "refused-locally",
    "rate-limited",
    "unavailable",
    "unknown",
    "restored",
    "recovered",
    "moved",
    "granted",
)


class StoreError(Exception):
    """The store could not do what was asked (disk full, read-only, Redis down...)."""


@dataclass(frozen=True)
class Attempt:
    """One code submission, as the journal keeps it."""

    id: str  # unique, made by the caller (uuid4 hex)
    time: float  # when the submission arrived (Unix time)
    gate: str  # the gate's scope
    palier: str
    client: str  # the client address (REMOTE_ADDR)
    code_masked: str  # "AB12****"
    code_hash: str  # keyed hash of the code, hex
    outcome: str = PENDING
    latency: float | None = None  # seconds AlloConv took to answer, if it was asked
    detail: str = ""  # AlloConv's answer or what went wrong, redacted ("ERR3", "ReadTimeout")


@dataclass(frozen=True)
class Redemption:
    """A code AlloConv accepted for a gate, and the access it bought."""

    gate: str
    code_hash: str
    granted_at: float
    ends_at: float
    devices: int  # browsers that got a cookie for it, the first one included
    prefixes: tuple[str, ...] = ()  # the paths it was sold for; () in records of v1
    # The redemption whose browsers this one's count with: with codes = N, the codes of a
    # set bought one access, restored on max_devices browsers in all. "": its own.
    shares_devices_with: str = ""


@dataclass(frozen=True)
class Claim:
    """With ``codes = N``: the set of codes a code that passed counts in."""

    code_hash: str
    set_id: str
    prefixes: tuple[str, ...]  # the paths of the gate where it passed
    passed_at: float  # when AlloConv accepted it (kept when the code moves)
    completed: bool  # its set is complete: it bought access and moves no more


@dataclass(frozen=True)
class SetState:
    """What :meth:`Store.add_to_set` did.

    ``status`` is ``open`` (the code is in the set, which needs more), ``complete`` (the
    code completed the set: ``codes`` bought the access), ``closed`` (the set was complete
    already: nothing changed) or ``used`` (the code counts in a completed set already:
    nothing changed). ``codes`` are the hashes of the set's codes, oldest first.
    """

    status: str
    codes: tuple[str, ...] = ()


class Store(abc.ABC):
    """What the gate needs to remember, shared by every process that uses the same store."""

    #: A warning the gate logs at start-up (the memory store's, say), or None.
    warning: str | None = None

    # The journal

    @abc.abstractmethod
    def record(self, attempt: Attempt) -> None:
        """Add ``attempt`` to the journal (pending, or already complete)."""

    @abc.abstractmethod
    def complete(self, attempt_id: str, outcome: str, latency: float | None, detail: str) -> None:
        """Set the outcome of an attempt (normally a pending one; the last call wins)."""

    @abc.abstractmethod
    def journal(
        self,
        *,
        since: float | None = None,
        outcome: str | None = None,
        code_hash: str | None = None,
        gate: str | None = None,
        limit: int = 1000,
    ) -> list[Attempt]:
        """Attempts matching every filter given, newest first (equal times in no set
        order), at most ``limit`` (1 or more)."""

    # Redemptions

    @abc.abstractmethod
    def redemption(self, gate: str, code_hash: str) -> Redemption | None:
        """The redemption of this code on this gate, if AlloConv accepted it here."""

    @abc.abstractmethod
    def redeem(
        self,
        gate: str,
        code_hash: str,
        granted_at: float,
        ends_at: float,
        prefixes: tuple[str, ...] = (),
        shares_devices_with: str = "",
    ) -> None:
        """Record that this code bought access to ``prefixes`` until ``ends_at``, on one
        device (or on those of the redemption of the code ``shares_devices_with``).

        Idempotent: an existing redemption of the same code on the same gate is kept.
        """

    @abc.abstractmethod
    def add_device(self, gate: str, code_hash: str, max_devices: int) -> bool:
        """Count one more browser for this redemption, unless it has ``max_devices``.

        Returns whether it was counted. Atomic: two browsers racing for the last place
        cannot both get it.
        """

    # Sets of codes (codes = N)

    @abc.abstractmethod
    def claim(self, gate: str, code_hash: str) -> Claim | None:
        """The set this code counts in, if it passed in one."""

    @abc.abstractmethod
    def set_codes(self, gate: str, set_id: str, *, since: float) -> tuple[str, ...]:
        """The codes that count in an unfinished set (passed since ``since``), oldest
        first; none once the set is complete."""

    @abc.abstractmethod
    def add_to_set(
        self,
        gate: str,
        code_hash: str,
        set_id: str,
        prefixes: tuple[str, ...],
        passed_at: float,
        *,
        needed: int,
        since: float,
    ) -> SetState:
        """Make this code count in set ``set_id``, moving it from the set it was in.

        In one atomic step: nothing changes if the set is complete already (``closed``)
        or if the code counts in a completed set (``used``); otherwise the code's claim
        now names ``set_id`` (a code already claimed keeps its ``passed_at``), and if the
        set then holds ``needed`` codes that passed since ``since``, they are marked
        completed together (``complete``). Two requests racing to complete sets with the
        same code cannot both complete one.
        """

    @abc.abstractmethod
    def add_to_set_and_settle(
        self,
        gate: str,
        code_hash: str,
        set_id: str,
        prefixes: tuple[str, ...],
        passed_at: float,
        *,
        needed: int,
        since: float,
        attempt: Attempt,
        ends_at: int,
    ) -> SetState:
        """:meth:`add_to_set`, and what it leads to, in one atomic step: a code that
        AlloConv accepted for a set costs one transaction after its pending record.

        ``open``: ``attempt``'s final record is written as :meth:`settle` writes it, its
        detail followed by :func:`set_detail`. ``complete``: the same, and the access the
        set bought, as :meth:`settle` adds redemptions: one per code, granted at
        ``attempt.time`` until ``ends_at`` on ``prefixes``, counted on the first code's
        (:func:`set_redemptions`). ``closed`` or ``used``: nothing is written.
        """

    # Rate limits

    @abc.abstractmethod
    def hit(self, key: str, window: int, now: float) -> int:
        """Count one event for ``key`` in the fixed window of ``window`` seconds holding
        ``now`` (it starts at ``now // window * window``); return the window's count.

        Counts are per key, window length and window start."""

    @abc.abstractmethod
    def count(self, key: str, window: int, now: float) -> int:
        """The count :meth:`hit` has made so far for ``key`` in the window holding ``now``
        (0 if none): a read, no write, so that a visitor under the limit costs no
        transaction until their submission is journaled (see :meth:`record_counted`)."""

    # Writes folded together: a submission that reaches AlloConv costs two transactions,
    # one before the call (its pending record, which makes a lost answer recoverable, and
    # its rate-limit count) and one after (its outcome and what it bought).

    @abc.abstractmethod
    def record_counted(
        self, attempt: Attempt, key: str, window: int, limit: int | None = None
    ) -> int:
        """In one atomic step: count one event for ``key`` as :meth:`hit` does (in the
        window holding ``attempt.time``), and add ``attempt`` to the journal as
        :meth:`record` does unless the count is then over ``limit`` (None: no limit).
        Returns the count.

        Counting and the check happen together, so that processes and hosts racing for a
        client's last submission of a window cannot both journal one (and so ask
        AlloConv). An ``attempt.id`` already in the journal raises :class:`StoreError`
        and nothing is counted.
        """

    @abc.abstractmethod
    def settle(self, attempt: Attempt, redemptions: Sequence[Redemption] = ()) -> None:
        """In one atomic step: add each redemption as :meth:`redeem` does (one device; one
        that exists for its gate and code is kept), and write the attempt's final
        record: its outcome, latency and detail complete the record of the same id (its
        pending record), or the whole attempt is added when the journal has no such id.

        A code AlloConv accepted then never has an access without its record, or a record
        saying ``ok`` without its access.
        """

    # Support grants

    @abc.abstractmethod
    def use_grant(self, grant_id: str, now: float) -> bool:
        """Mark a one-time grant used: True the first time, False ever after."""

    # Life

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise :class:`StoreError` unless the store can be read and written."""

    def close(self) -> None:  # noqa: B027 - engines without resources have nothing to do
        """Release connections."""


def set_detail(detail: str, set_id: str, count: int, needed: int, complete: bool) -> str:
    """A set step's journal detail: what happened to the code, then where it counts."""
    where = f"{detail}; set {set_id[:8]}: code {count} of {needed}"
    return f"{where}, complete" if complete else where


def set_redemptions(
    gate: str, codes: Sequence[str], granted_at: float, ends_at: int, prefixes: tuple[str, ...]
) -> list[Redemption]:
    """The access a complete set bought: one redemption per code; one access whatever the
    number of codes it took, so its browsers are counted on the first code's."""
    return [
        Redemption(gate, hashed, granted_at, ends_at, 1, tuple(prefixes), shared)
        for hashed in codes
        for shared in [codes[0] if hashed != codes[0] else ""]
    ]
