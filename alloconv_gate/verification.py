"""What happens to a submitted code, from the local check to the verdict, with its record.

The rules, in the order they apply:

1. a code that cannot be an AlloConv code is refused here (no call, no limit spent);
2. past ``rate_limit`` submissions per client and gate, the answer is 429 (no call);
3. **restore**: a code this gate already accepted, whose access has not ended, gets a
   new cookie ending when the first one does, on at most ``max_devices`` browsers;
4. past ``max_pending`` verifications in flight in this process, the answer is an
   immediate 503 (a hanging AlloConv must not hold every server thread);
5. otherwise a *pending* record is written, and only then is AlloConv asked: if the
   record cannot be written, AlloConv is not asked and the code stays unspent;
6. **recovery**: AlloConv's ``ERR3`` for a code whose earlier answer on this gate was
   lost after sending (a timeout or a broken connection, in the last day), or whose
   earlier attempt a dead worker left pending, means it was consumed then: access is
   granted. An answer that came back garbled (HTTP 500, junk) is not a lost one: ERR3
   also answers codes that never existed, so recovery is kept to real losses;
7. access is granted on ``OK``; if the store then fails, the visitor still gets the
   cookie they paid for and the whole record goes to the ERROR log.

Nothing here knows WSGI: :meth:`Verifier.submit` returns a :class:`Decision` that the
middleware turns into a response.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from .alloconv import AlloConv, Check, Verdict
from .codes import code_hash, local_problem, mask_code, reference
from .config import GateConfig
from .store import PENDING, Attempt, Store, StoreError
from .tokens import GrantLinks

log = logging.getLogger("alloconv_gate")

RETRY_AFTER = 60  # seconds, on 503
RETRY_AFTER_BUSY = 5  # seconds, on 503 for too many verifications in flight
# An answer lost this long ago no longer proves anything: ERR3 is also what a code
# that never existed gets, so recovery must not be stockpiled during an outage.
RECOVERY_WINDOW = 86400
# A pending record older than the timeout and this margin was left by a worker that died.
PENDING_GRACE = 60
# Local refusals journaled per client and window: this many times the rate limit.
LOCAL_RECORDS_FACTOR = 10
DEFAULT_RATE = (5, 60)  # for that bound when rate_limit is off


@dataclass(frozen=True)
class Decision:
    """The answer to a submission: access until ``until``, or a page with an error."""

    until: int | None = None  # access granted until then
    status: int = 200  # the page's status when refused
    error: str | None = None  # a catalogue key
    reference: str = ""
    retry_after: int | None = None
    passed: tuple[str, ...] = ()  # with codes = N: the hashes of this set's codes that passed
    needed: int = 1  # with codes = N: how many codes the set takes

    @property
    def granted(self) -> bool:
        return self.until is not None


def refuse(status: int, error: str, **extra) -> Decision:
    return Decision(status=status, error=error, **extra)


class Verifier:
    """Checks codes for one gate, keeping the journal and redemptions in ``store``."""

    def __init__(
        self,
        config: GateConfig,
        alloconv: AlloConv,
        store: Store,
        clock: Callable[[], float],
    ):
        self.config = config
        self._alloconv = alloconv
        self._store = store
        self._clock = clock
        self._hash_keys = config.secrets  # the first hashes new records; all find old ones
        self._links = GrantLinks(config.secrets, config.scope, clock)
        self._in_flight = threading.BoundedSemaphore(config.max_pending)

    def hash_of(self, code: str) -> str:
        return code_hash(self._hash_keys[0], code)

    def submit(self, code: str, client: str, gate: str, passed: tuple[str, ...] = ()) -> Decision:
        """Decide on ``code`` (already stripped) sent by ``client`` to ``gate``.

        With ``codes = N``, ``passed`` holds the hashes of the codes of this set that
        passed before: access is granted when N have passed, and until then the decision
        carries the progress.
        """
        now = self._clock()
        attempt = Attempt(
            id=uuid.uuid4().hex,
            time=now,
            gate=gate,
            palier=self.config.palier,
            client=client,
            code_masked=mask_code(code),
            code_hash=code_hash(self._hash_keys[0], code),
        )
        hashes = [code_hash(key, code) for key in self._hash_keys]
        problem = local_problem(code)
        if problem:
            self._record_local_refusal(attempt, problem)
            return refuse(400, problem)
        try:
            limited = self._rate_limited(attempt)
            if limited:
                return limited
            redemption = self._redemption(gate, hashes)
            if redemption is not None:
                return self._restore(attempt, redemption)
        except StoreError as exc:
            log.error("store failed, %s not sent to AlloConv: %s", _who(attempt), exc)
            return refuse(503, "error_unavailable", retry_after=RETRY_AFTER)
        # A hanging AlloConv must not take every server thread: past max_pending
        # verifications in flight, the answer is an immediate 503.
        if not self._in_flight.acquire(blocking=False):
            log.warning("%s not sent: max_pending verifications in flight", _who(attempt))
            self._record_done(attempt, "unavailable", "max_pending reached")
            return refuse(503, "error_unavailable", retry_after=RETRY_AFTER_BUSY)
        try:
            try:
                self._store.record(attempt)
            except StoreError as exc:
                log.error("store failed, %s not sent to AlloConv: %s", _who(attempt), exc)
                return refuse(503, "error_unavailable", retry_after=RETRY_AFTER)
            return self._ask(attempt, code, hashes, passed)
        finally:
            self._in_flight.release()

    def use_link(self, token: str, client: str, gate: str) -> Decision:
        """A support link (``alloconv-gate grant``): access once, for the time it says."""
        now = self._clock()
        found = self._links.check(token)
        attempt = Attempt(uuid.uuid4().hex, now, gate, self.config.palier, client, "link", "")
        try:
            if found is None or not self._store.use_grant(found[0], now):
                log.warning("a support link that is bad, expired or used was refused")
                return refuse(403, "error_link")
        except StoreError as exc:
            log.error("store failed, support link not used: %s", exc)
            return refuse(503, "error_unavailable", retry_after=RETRY_AFTER)
        grant_id, duration = found
        self._record_done(dataclasses.replace(attempt, code_hash=grant_id), "granted", "link used")
        log.info("support link %s used by %s", grant_id, client)
        return Decision(until=int(now) + duration)

    def _record_local_refusal(self, attempt: Attempt, problem: str) -> None:
        """Journal a typo, but not a flood of junk: at most LOCAL_RECORDS_FACTOR times the
        rate limit per client and window (they cost no AlloConv call, only disk)."""
        limit, window = self.config.rate_limit or DEFAULT_RATE
        key = f"{attempt.gate}|{attempt.client}|local"
        try:
            if self._store.hit(key, window, attempt.time) > LOCAL_RECORDS_FACTOR * limit:
                return
        except StoreError:
            return
        self._record_done(attempt, "refused-locally", problem)

    def _rate_limited(self, attempt: Attempt) -> Decision | None:
        if self.config.rate_limit is None:
            return None
        limit, window = self.config.rate_limit
        key = f"{attempt.gate}|{attempt.client}"
        count = self._store.hit(key, window, attempt.time)
        if count <= limit:
            return None
        if count == limit + 1:  # the first refusal of the window is journaled, not a flood
            log.warning("%s refused: over rate_limit", _who(attempt))
            self._record_done(attempt, "rate-limited", "")
        retry_after = math.ceil(attempt.time // window * window + window - attempt.time)
        return refuse(429, "error_rate_limited", retry_after=retry_after)

    def _restore(self, attempt: Attempt, redemption) -> Decision:
        """A code this gate accepted before: a cookie for one more browser, no call."""
        if redemption.ends_at <= attempt.time:
            self._record_done(attempt, "invalid", "access already ended")
            return refuse(402, "error_access_ended")
        if not self._store.add_device(attempt.gate, redemption.code_hash, self.config.max_devices):
            self._record_done(attempt, "invalid", "max_devices reached")
            return refuse(402, "error_too_many_devices")
        self._record_done(attempt, "restored", "")
        log.info("%s restored until %d", _who(attempt), redemption.ends_at)
        return Decision(until=int(redemption.ends_at))

    def _ask(
        self, attempt: Attempt, code: str, hashes: list[str], passed: tuple[str, ...]
    ) -> Decision:
        """The pending record is written: ask AlloConv, then complete it."""
        check = self._alloconv.verify(code)
        verdict = check.verdict
        if verdict is Verdict.OK:
            return self._grant(attempt, check, "ok", passed)
        if verdict is Verdict.INVALID:
            return self._used(attempt, check, hashes, passed)
        if verdict is Verdict.WRONG_PALIER:
            log.info("%s refused: %s", _who(attempt), check.answer)
            self._complete(attempt, "wrong-palier", check)
            return refuse(402, "error_wrong_palier")
        ref = reference(attempt.code_hash)
        log.error(
            "%s not verified (reference %s): %s: %r",
            _who(attempt),
            ref,
            verdict.value,
            check.answer,
        )
        if check.answer.upper() == "ERR99":
            log.error("AlloConv refused the API key (ERR99): check the 'api_key' option")
        self._complete(attempt, "unknown" if verdict is Verdict.UNKNOWN else "unavailable", check)
        # Only a refusal before the code reached AlloConv (unreachable, ERR99/1/2) is sure
        # to have left it unspent; after a lost or garbled answer the page says so.
        spent_maybe = verdict in (Verdict.UNKNOWN, Verdict.ERROR)
        return refuse(
            503,
            "error_lost" if spent_maybe else "error_unavailable",
            reference=ref,
            retry_after=RETRY_AFTER,
        )

    def _used(
        self, attempt: Attempt, check: Check, hashes: list[str], passed: tuple[str, ...]
    ) -> Decision:
        """ERR3: unknown or already used. Used *here* is not a refusal:

        - a redemption that appeared meanwhile (the same code sent twice at once, from a
          double click or two tabs): restore;
        - an earlier attempt of this code on this gate whose answer was lost, or that
          a crash left pending: it was consumed then; recovery;
        - with ``codes = N``, a code of an unfinished set that passed here before (the
          visitor lost the progress cookie): it counts again.
        """
        try:
            redemption = self._redemption(attempt.gate, hashes)
            if redemption is not None:
                self._complete(attempt, "invalid", check)
                return self._restore(dataclasses.replace(attempt, id=uuid.uuid4().hex), redemption)
            lost = self._lost_before(attempt, hashes)
            counted = self.config.codes > 1 and self._passed_before(attempt, hashes)
        except StoreError as exc:
            log.error("store failed after ERR3 for %s: %s", _who(attempt), exc)
            self._complete(attempt, "unavailable", check)
            return refuse(503, "error_unavailable", retry_after=RETRY_AFTER)
        if lost:
            log.warning(
                "%s: AlloConv says ERR3 for a code whose earlier answer was lost: "
                "it was consumed then; access granted",
                _who(attempt),
            )
            return self._grant(attempt, check, "recovered", passed)
        if counted:
            return self._grant(attempt, check, "restored", passed)
        log.info("%s refused: %s", _who(attempt), check.answer)
        self._complete(attempt, "invalid", check)
        return refuse(402, "error_invalid")

    def _redemption(self, gate: str, hashes: list[str]):
        for hashed in hashes:
            redemption = self._store.redemption(gate, hashed)
            if redemption is not None:
                return redemption
        return None

    def _lost_before(self, attempt: Attempt, hashes: list[str]) -> bool:
        """Whether an earlier attempt of this code on this gate may have consumed it.

        That is an ``unknown`` answer in the last RECOVERY_WINDOW, or a ``pending`` record
        that its request outlived (its worker died while AlloConv was being asked).
        """
        stale = attempt.time - self.config.timeout - PENDING_GRACE
        for hashed in hashes:
            for earlier in self._store.journal(gate=attempt.gate, code_hash=hashed, limit=50):
                if earlier.id == attempt.id:
                    continue
                if earlier.outcome == "unknown" and earlier.time > attempt.time - RECOVERY_WINDOW:
                    return True
                if earlier.outcome == PENDING and earlier.time < stale:
                    return True
        return False

    def _passed_before(self, attempt: Attempt, hashes: list[str]) -> bool:
        """Whether a code of an unfinished set passed on this gate within ``duration``."""
        since = attempt.time - self.config.duration
        return any(
            earlier.outcome == "ok" and earlier.id != attempt.id
            for hashed in hashes
            for earlier in self._store.journal(
                gate=attempt.gate, code_hash=hashed, outcome="ok", since=since, limit=5
            )
        )

    def _grant(
        self, attempt: Attempt, check: Check, outcome: str, passed: tuple[str, ...] = ()
    ) -> Decision:
        done = (*passed, attempt.code_hash)
        needed = self.config.codes
        if len(done) < needed:
            # One code of a set passed: its record says so; access waits for the others.
            detail = f"{check.answer}; code {len(done)} of {needed}"
            self._complete(attempt, outcome, dataclasses.replace(check, answer=detail))
            log.info("%s %s: code %d of %d", _who(attempt), outcome, len(done), needed)
            return refuse(402, "error_more_codes", passed=done, needed=needed)
        until = int(attempt.time) + self.config.duration
        try:
            for hashed in done:
                self._store.redeem(attempt.gate, hashed, attempt.time, until)
            self._store.complete(attempt.id, outcome, check.latency, check.answer)
        except StoreError as exc:
            # Paid is paid: the cookie goes out, and the record goes to the log in full.
            done = dataclasses.replace(
                attempt, outcome=outcome, latency=check.latency, detail=check.answer
            )
            log.error("store failed after AlloConv accepted a code: %s; record: %r", exc, done)
        log.info("%s %s in %.2fs", _who(attempt), outcome, check.latency)
        return Decision(until=until)

    def _complete(self, attempt: Attempt, outcome: str, check: Check) -> None:
        try:
            self._store.complete(attempt.id, outcome, check.latency, check.answer)
        except StoreError as exc:
            done = dataclasses.replace(
                attempt, outcome=outcome, latency=check.latency, detail=check.answer
            )
            log.error("store failed completing a record: %s; record: %r", exc, done)

    def _record_done(self, attempt: Attempt, outcome: str, detail: str) -> None:
        """Journal a submission that needed no AlloConv call; a failure only logs."""
        try:
            self._store.record(dataclasses.replace(attempt, outcome=outcome, detail=detail))
        except StoreError as exc:
            log.error("store failed recording %s (%s): %s", _who(attempt), outcome, exc)


def _who(attempt: Attempt) -> str:
    return f"code {attempt.code_masked} from {attempt.client} (palier {attempt.palier})"
