"""What happens to a submitted code, from the local check to the verdict, with its record.

The rules, in the order they apply:

1. a code that cannot be an AlloConv code is refused here (no call, no limit spent);
2. past ``rate_limit`` submissions per client and gate, the answer is 429 (no call);
3. **restore**: a code that bought access to this gate's paths, whose access has not
   ended, gets a new cookie ending when the first one does, on at most ``max_devices``
   browsers;
4. with ``codes = N``, a code that passed in an unfinished set of this gate counts in
   the visitor's set without a call: typed again in the same set it counts once, typed
   in another browser's set it moves there (and no longer counts where it was);
5. past ``max_pending`` verifications in flight in this process (a short wait while
   AlloConv looks healthy), a second one for the same client, or while the circuit
   breaker is open, the answer is a 503 without a call (:mod:`alloconv_gate.slots`: a
   hanging AlloConv must not hold every server thread);
6. otherwise a *pending* record is written, and only then is AlloConv asked: if the
   record cannot be written, AlloConv is not asked and the code stays unspent;
7. **recovery**: AlloConv's ``ERR3`` says "not, or no longer, valid", for a used code and
   a made-up one alike. So it means "consumed by the lost request" only for a code whose
   earlier answer was lost after sending (a read timeout, a broken connection) in the
   last day, typed again in the browser that lost the answer (:class:`LostAnswers`), and
   within the gate's ``recoveries`` budget; past it, support decides (the reference);
8. access is granted on ``OK`` (with ``codes = N``, once the set holds N codes: a code
   counts in one completed set at most); if the store then fails, the visitor still
   gets the cookie they paid for and the whole record goes to the ERROR log.

A code is known by one keyed hash, under the *oldest* configured secret (the last one
listed), so that rotating the secret (a new one in front) changes no code's identity.

Nothing here knows WSGI: :meth:`Verifier.verify` returns a :class:`Decision` that the
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
from .slots import Slots
from .store import PENDING, Attempt, Redemption, Store, StoreError
from .store.base import set_detail, set_redemptions
from .store.local import LocalCounts
from .tokens import GrantLinks, SetProgress

log = logging.getLogger("alloconv_gate")

RETRY_AFTER = 60  # seconds, on 503
# An answer lost this long ago no longer proves anything: ERR3 is also what a code
# that never existed gets, so recovery must not be stockpiled during an outage.
RECOVERY_WINDOW = 86400
# A pending record older than the timeout and this margin was left by a request that
# never completed it (its worker died, or the store failed after the call).
PENDING_GRACE = 60
# Local refusals journaled per client and window: this many times the rate limit.
LOCAL_RECORDS_FACTOR = 10
# ... and per gate and window from all clients together, in each process: junk sent from
# as many addresses (IPv6 /64s) as an attacker has costs no more disk than this.
LOCAL_RECORDS_ALL_FACTOR = 100
DEFAULT_RATE = (5, 60)  # for that bound when rate_limit is off
MORE_CODES = "error_more_codes"


@dataclass(frozen=True)
class Visit:
    """What the verifier is told of the visitor: who, where, and what their browser holds."""

    client: str  # the client address
    mount: str = ""  # SCRIPT_NAME: where the site is mounted
    prefix: str | None = None  # the prefix of the page the code was typed on
    set_id: str | None = None  # codes = N: the visitor's set (the progress cookie)
    lost: tuple[str, ...] = ()  # attempts whose answer this browser lost, on these paths


@dataclass(frozen=True)
class Decision:
    """The answer to a submission: access until ``until``, or a page with an error."""

    until: int | None = None  # access granted until then
    prefixes: tuple[str, ...] = ()  # the paths the access opens
    status: int = 200  # the page's status when refused
    error: str | None = None  # a catalogue key
    reference: str = ""
    retry_after: int | None = None
    code: str = ""  # the code that failed, shown again in its field
    lost: str | None = None  # the attempt whose answer was lost (for LostAnswers)
    set_id: str | None = None  # codes = N: the visitor's set, to keep in its cookie
    passed: int = 0  # codes = N: how many codes count in it

    @property
    def granted(self) -> bool:
        return self.until is not None


def refuse(status: int, error: str, **extra) -> Decision:
    return Decision(status=status, error=error, **extra)


@dataclass(frozen=True)
class _Submission:
    """One code on its way: its record, the hashes that may name it, and the visit."""

    attempt: Attempt
    code: str
    hashes: tuple[str, ...]  # under every configured secret, the identity's first
    visit: Visit
    site: str  # the store key of the access (redemptions, sets): where the site is mounted

    @property
    def code_id(self) -> str:
        return self.attempt.code_hash


class Verifier:
    """Checks codes for one gate, keeping the journal, redemptions and sets in ``store``."""

    def __init__(
        self,
        config: GateConfig,
        alloconv: AlloConv,
        store: Store,
        clock: Callable[[], float],
        in_flight: Slots | None = None,
    ):
        self.config = config
        self._alloconv = alloconv
        self._store = store
        self._clock = clock
        # The oldest secret names a code for good; all of them find records written
        # under any (the journal of the first format used the first secret).
        self._hash_keys = (config.secrets[-1], *config.secrets[:-1])
        self._links = GrantLinks(config.secrets, config.scope, clock)
        # What this process remembers so that junk costs no disk write: the clients the
        # store said are over rate_limit (until their window ends), and the local refusals
        # of each client journaled in the window. The submission whose rate-limit count
        # is still owed (made with its record) is the thread's: one at a time.
        self._over_limit = LocalCounts()
        self._local_records = LocalCounts()
        self._uncounted = threading.local()
        # max_pending is the process's bound, shared by every gate of the filter (the
        # middleware passes one semaphore to all their verifiers).
        self._in_flight = in_flight or Slots(config.max_pending, config.timeout, clock)

    def journal_gate(self, mount: str) -> str:
        """The gate, as the journal and the rate limits know it: its scope, and its mount."""
        return f"{self.config.scope}@{mount}" if mount else self.config.scope

    def verify(self, codes: list[str], visit: Visit) -> Decision:
        """Decide on the codes typed (already stripped), in turn, until access is granted
        or one fails. With ``codes = N`` the visitor's set keeps what passed."""
        needed = self.config.codes
        if needed == 1:
            return self._one(codes[0] if codes else "", visit)
        set_id = visit.set_id or uuid.uuid4().hex
        full = self._complete_if_full(visit)
        if full is not None:
            return full
        decision = refuse(402, MORE_CODES)
        for code in codes[:needed] or [""]:
            decision = self._one(code, dataclasses.replace(visit, set_id=set_id))
            if decision.granted:
                return decision
            if decision.error != MORE_CODES:
                break
            set_id = decision.set_id or set_id
        if decision.set_id is None:  # a failure keeps the progress there was
            decision = dataclasses.replace(
                decision, set_id=set_id, passed=self._passed(set_id, visit.mount)
            )
        return decision

    def _passed(self, set_id: str, mount: str) -> int:
        """How many codes count in the set (for the page); 0 if the store cannot say."""
        try:
            return len(self._store.set_codes(_site(mount), set_id, since=self._since()))
        except StoreError:
            return 0

    def _complete_if_full(self, visit: Visit) -> Decision | None:
        """The visitor's set holds enough codes already (``codes`` was lowered since they
        passed): it buys the access now, and the code just typed is not spent."""
        if visit.set_id is None:
            return None
        site = _site(visit.mount)
        try:
            codes = self._store.set_codes(site, visit.set_id, since=self._since())
            claim = self._store.claim(site, codes[0]) if len(codes) >= self.config.codes else None
        except StoreError:
            return None
        if claim is None:
            return None
        gate = self.journal_gate(visit.mount)
        attempt = Attempt(
            uuid.uuid4().hex, self._clock(), gate, self.config.palier, visit.client, "set", codes[0]
        )
        sub = _Submission(attempt, "", (codes[0],), visit, site)
        return self._in_set(
            sub, claim.passed_at, None, "its set holds the codes the gate takes now"
        )

    def progress(self, set_id: str | None, mount: str) -> int:
        """How many codes count in the visitor's set, for the page."""
        return 0 if set_id is None else self._passed(set_id, mount)

    def _one(self, code: str, visit: Visit) -> Decision:
        """Decide on one code: the rules of the module's docstring, in order."""
        now = self._clock()
        hashes = tuple(code_hash(key, code) for key in self._hash_keys)
        attempt = Attempt(
            id=uuid.uuid4().hex,
            time=now,
            gate=self.journal_gate(visit.mount),
            palier=self.config.palier,
            client=visit.client,
            code_masked=mask_code(code),
            code_hash=hashes[0],
        )
        sub = _Submission(attempt, code, hashes, visit, _site(visit.mount))
        problem = local_problem(code)
        if problem:
            self._record_local_refusal(attempt, problem)
            return refuse(400, problem, code=code)
        try:
            limited = self._rate_limited(attempt)
            if limited:
                return limited
            redemption = self._redemption(sub)
            if redemption is not None:
                return self._restore(sub, redemption)
            counted = self._counted_before(sub)
            if counted:
                return counted
        except StoreError as exc:
            log.error("store failed, %s not sent to AlloConv: %s", _who(attempt), exc)
            return refuse(503, "error_unavailable", retry_after=RETRY_AFTER, code=code)
        # A hanging AlloConv must not take every server thread: past max_pending
        # verifications in flight (after a short wait while AlloConv looks healthy), a
        # second one for the same client, or while the circuit breaker is open, the
        # answer is a 503 without a call.
        busy = self._in_flight.enter(visit.client)
        if busy is not None:
            log.warning("%s not sent: %s", _who(attempt), busy.why)
            self._record_done(attempt, "unavailable", busy.why)
            return refuse(503, busy.error, retry_after=busy.retry_after, code=code)
        try:
            try:
                limited = self._record_pending(attempt)
            except StoreError as exc:
                log.error("store failed, %s not sent to AlloConv: %s", _who(attempt), exc)
                return refuse(503, "error_unavailable", retry_after=RETRY_AFTER, code=code)
            if limited is not None:
                return limited
            return self._ask(sub)
        finally:
            self._in_flight.leave(visit.client)

    def use_link(self, token: str, client: str, mount: str) -> Decision:
        """A support link (``alloconv-gate grant``): access once, for the time it says."""
        now = self._clock()
        found = self._links.check(token)
        gate = self.journal_gate(mount)
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
        return Decision(until=int(now) + duration, prefixes=self.config.prefixes)

    # Before AlloConv is asked

    def _record_local_refusal(self, attempt: Attempt, problem: str) -> None:
        """Journal a typo, but not a flood of junk: at most LOCAL_RECORDS_FACTOR times the
        rate limit per client and window, and LOCAL_RECORDS_ALL_FACTOR times it from all
        clients, in each process. They cost no AlloConv call, and are counted in this
        process, so that past the bound they cost no disk write either (a counter in the
        store would cost one each)."""
        limit, window = self.config.rate_limit or DEFAULT_RATE
        counts, now = self._local_records, attempt.time
        per_client = counts.add(f"{attempt.gate}|{attempt.client}", window, now)
        if per_client > LOCAL_RECORDS_FACTOR * limit:
            return
        if counts.add(f"{attempt.gate}|*", window, now) > LOCAL_RECORDS_ALL_FACTOR * limit:
            return
        self._record_done(attempt, "refused-locally", problem)

    def _rate_limited(self, attempt: Attempt) -> Decision | None:
        """429 past ``rate_limit``, from the store's counter, which every process and host
        shares; reading it costs no write. A submission under the limit is counted with
        the first record it writes (:meth:`_record_pending`, :meth:`_record_done`). Once
        the store has said a client is over the limit, this process refuses them at once
        until the window ends, without touching the store."""
        if self.config.rate_limit is None:
            return None
        limit, window = self.config.rate_limit
        key = f"{attempt.gate}|{attempt.client}"
        if self._over_limit.get(key, window, attempt.time):
            return _too_many(attempt.time, window)
        if self._store.count(key, window, attempt.time) < limit:
            self._uncounted.attempt_id = attempt.id
            return None
        return self._over(attempt)

    def _over(self, attempt: Attempt) -> Decision:
        """The store says this client has used the window's submissions: remembered here
        until the window ends. Only the window's first refusal (across every process,
        counted apart: submissions journaled without a call, a restore say, may take the
        count past the limit with no refusal) is journaled, not a flood."""
        window = self.config.rate_limit[1]
        key = f"{attempt.gate}|{attempt.client}"
        self._over_limit.add(key, window, attempt.time)
        try:
            first = self._store.hit(f"{key}|refused", window, attempt.time) == 1
        except StoreError as exc:
            log.error("store failed counting a refusal of %s: %s", _who(attempt), exc)
            first = False
        if first:
            log.warning("%s refused: over rate_limit", _who(attempt))
            self._record_done(attempt, "rate-limited", "")
        return _too_many(attempt.time, window)

    def _record_pending(self, attempt: Attempt) -> Decision | None:
        """The pending record, written before AlloConv is asked, with the submission's
        rate-limit count in the same transaction: one write instead of two, and exact
        across processes and hosts (a window's last place goes to one submission). None,
        or a 429 when others took the last place since the count was read."""
        key = self._owed(attempt)
        if key is None:
            self._store.record(attempt)
            return None
        limit, window = self.config.rate_limit
        count = self._store.record_counted(attempt, key, window, limit)
        return None if count <= limit else self._over(attempt)

    def _counted(self, attempt: Attempt) -> bool:
        """Whether this submission's rate-limit count is made (or none is needed)."""
        return getattr(self._uncounted, "attempt_id", None) != attempt.id

    def _owed(self, attempt: Attempt) -> str | None:
        """The rate-limit key of this submission, if its count is still to be made (with
        the record being written: then no longer owed); else None."""
        if getattr(self._uncounted, "attempt_id", None) != attempt.id:
            return None
        self._uncounted.attempt_id = None
        return f"{attempt.gate}|{attempt.client}"

    def _redemption(self, sub: _Submission) -> Redemption | None:
        """The access this code bought on this gate's paths, if it bought one.

        Redemptions are kept by where the site is mounted and name the prefixes they
        were sold for; those of the first format, by the gate's scope then.
        """
        found = self._store.redemption(sub.site, sub.code_id)
        if found is not None:
            return found
        for hashed in sub.hashes:
            found = self._store.redemption(sub.attempt.gate, hashed)
            if found is not None:
                return dataclasses.replace(found, prefixes=self.config.prefixes)
        return None

    def _restore(self, sub: _Submission, redemption: Redemption) -> Decision:
        """A code that bought access here before: a cookie for one more browser, no call."""
        attempt = sub.attempt
        if redemption.ends_at <= attempt.time:
            self._record_done(attempt, "invalid", "access already ended")
            return refuse(402, "error_access_ended", code=sub.code)
        page = sub.visit.prefix
        if (page if page is not None else self.config.prefixes[0]) not in redemption.prefixes:
            # Another gate's code, or one sold before this page's prefix was added: a
            # cookie for it would not open this page, so no device is spent on it.
            sold = " ".join(p or "/" for p in redemption.prefixes)
            self._record_done(attempt, "invalid", f"sold for {sold}, not this page")
            return refuse(402, "error_wrong_palier", code=sub.code)
        counted = redemption.shares_devices_with or redemption.code_hash
        if not self._store.add_device(redemption.gate, counted, self.config.max_devices):
            self._record_done(attempt, "invalid", "max_devices reached")
            return refuse(402, "error_too_many_devices", code=sub.code)
        self._record_done(attempt, "restored", "")
        log.info("%s restored until %d", _who(attempt), redemption.ends_at)
        return Decision(until=int(redemption.ends_at), prefixes=redemption.prefixes)

    def _counted_before(self, sub: _Submission) -> Decision | None:
        """A code that passed in an unfinished set of this gate counts in the visitor's
        set, without asking AlloConv again (on a gate whose ``codes`` was lowered since,
        down to 1, it may buy access alone)."""
        claim = self._store.claim(sub.site, sub.code_id)
        if claim is None or claim.completed or claim.passed_at < self._since():
            return None
        if not set(claim.prefixes) & set(self.config.prefixes):
            return None  # it passed at another gate: AlloConv's ERR3 will refuse it
        if claim.set_id == sub.visit.set_id:
            return self._in_set(sub, claim.passed_at, None, "typed again in its set")
        detail = f"moved from set {claim.set_id[:8]}"
        return self._in_set(sub, claim.passed_at, "moved", detail)

    # AlloConv

    def _ask(self, sub: _Submission) -> Decision:
        """The pending record is written: ask AlloConv, then complete it."""
        attempt = sub.attempt
        check = self._alloconv.verify(sub.code)
        # the circuit breaker counts the calls that held their thread for nothing
        self._in_flight.answered(sub.visit.client, check.verdict, check.latency)
        verdict = check.verdict
        if verdict is Verdict.OK:
            return self._passed_now(sub, check, "ok")
        if verdict is Verdict.INVALID:
            return self._used(sub, check)
        if verdict is Verdict.WRONG_PALIER:
            log.info("%s refused: %s", _who(attempt), check.answer)
            self._complete(attempt, "wrong-palier", check)
            return refuse(402, "error_wrong_palier", code=sub.code)
        ref = reference(attempt.code_hash)
        log.error(
            "%s not verified (reference %s): %s: %r",
            _who(attempt),
            ref,
            verdict.value,
            check.answer,
        )
        if check.answer.upper() == "ERR99":
            name = self.config.name
            option = "'api_key'" if name == "default" else f"'{name}.api_key' (or the filter's)"
            log.error("AlloConv refused the API key (ERR99): check the option %s", option)
        lost = verdict is Verdict.UNKNOWN
        self._complete(attempt, "unknown" if lost else "unavailable", check)
        # Only a refusal before the code reached AlloConv (unreachable, ERR99/1/2) is sure
        # to have left it unspent; after a lost or garbled answer the page says so.
        spent_maybe = verdict in (Verdict.UNKNOWN, Verdict.ERROR)
        return refuse(
            503,
            "error_lost" if spent_maybe else "error_unavailable",
            reference=ref,
            retry_after=RETRY_AFTER,
            code=sub.code,
            lost=attempt.id if lost else None,
        )

    def _used(self, sub: _Submission, check: Check) -> Decision:
        """ERR3: not, or no longer, valid. Used *here* is not a refusal:

        - a redemption or a set claim that appeared meanwhile (the same code sent twice
          at once, from a double click or two tabs): restore, or count it;
        - an earlier attempt of this code, in this browser, whose answer was lost: it
          was consumed then; recovery, within the ``recoveries`` budget.
        """
        attempt = sub.attempt
        try:
            redemption = self._redemption(sub)
            if redemption is not None:
                self._complete(attempt, "invalid", check)
                return self._restore(_again(sub), redemption)
            counted = self._counted_before(_again(sub))
            if counted is not None:
                self._complete(attempt, "invalid", check)
                return counted
            if self._store.claim(sub.site, sub.code_id) is not None:
                # It passed in a set of another gate (or long ago): that pass is what
                # used it, whatever answer was lost since; it is never recovered here.
                self._complete(
                    attempt,
                    "invalid",
                    dataclasses.replace(check, answer="ERR3; it passed in another set"),
                )
                return refuse(402, "error_wrong_palier", code=sub.code)
            lost, here = self._lost_before(sub)
        except StoreError as exc:
            log.error("store failed after ERR3 for %s: %s", _who(attempt), exc)
            self._complete(attempt, "unavailable", check)
            return refuse(503, "error_unavailable", retry_after=RETRY_AFTER, code=sub.code)
        if lost is None:
            log.info("%s refused: %s", _who(attempt), check.answer)
            self._complete(attempt, "invalid", check)
            return refuse(402, "error_invalid", code=sub.code)
        if not here:
            # Not the browser that lost the answer: no access, but the visitor may have
            # paid, so the page gives them the reference that support looks up.
            return self._for_support(sub, check, lost, "not the browser that lost the answer")
        return self._recover(sub, check, lost)

    def _for_support(self, sub: _Submission, check: Check, lost: Attempt, why: str) -> Decision:
        """ERR3 after a lost answer that is not recovered: the reference, for support."""
        attempt = sub.attempt
        log.warning(
            "%s: ERR3 after a lost answer (attempt %s), not recovered: %s; for support",
            _who(attempt),
            lost.id,
            why,
        )
        # Not itself a lost answer: the loss it may be is the earlier attempt's, whose
        # record says so (and ages out of the recovery window with it).
        detail = f"ERR3 after the lost answer of attempt {lost.id}: {why}; for support"
        self._complete(attempt, "invalid", dataclasses.replace(check, answer=detail))
        return _to_support(sub)

    def _lost_before(self, sub: _Submission) -> tuple[Attempt | None, bool]:
        """The earlier attempt of this code whose answer was lost, and whether this browser
        is the one that lost it, on paths of this page (its LostAnswers cookie says so).

        That is an ``unknown`` answer in the last RECOVERY_WINDOW, or a ``pending`` record
        that its request outlived (its worker died, or the store failed completing it).
        """
        now = sub.attempt.time
        stale = now - self.config.timeout - PENDING_GRACE
        found = None
        for hashed in sub.hashes:
            # Any gate's record: the browser's note says which paths it was lost for, and
            # the gate's name or prefixes may have changed since.
            for earlier in self._store.journal(code_hash=hashed, limit=50):
                if earlier.id == sub.attempt.id or earlier.time <= now - RECOVERY_WINDOW:
                    continue
                if earlier.outcome == "unknown" or (
                    earlier.outcome == PENDING and earlier.time < stale
                ):
                    if earlier.id in sub.visit.lost:
                        return earlier, True
                    found = found or earlier
        return found, False

    def _recover(self, sub: _Submission, check: Check, lost: Attempt) -> Decision:
        """Grant on ERR3 after a lost answer, within the gate's ``recoveries`` budget."""
        attempt = sub.attempt
        budget = self.config.recoveries
        spent = budget is None
        retry_after = RETRY_AFTER
        if budget is not None:
            count, window = budget
            try:
                used = self._store.hit(f"{attempt.gate}|recoveries", window, attempt.time)
            except StoreError as exc:
                log.error("store failed counting a recovery for %s: %s", _who(attempt), exc)
                used = count + 1
            spent = used > count
            retry_after = _window_left(attempt.time, window)
        if spent:
            why = "recoveries off" if budget is None else "recoveries budget spent"
            decision = self._for_support(sub, check, lost, why)
            # Still this browser's loss: the same code may be recovered once the budget
            # allows it again, within the recovery window of the answer that was lost.
            return dataclasses.replace(decision, retry_after=retry_after, lost=lost.id)
        log.warning(
            "%s: AlloConv says ERR3 for a code whose earlier answer was lost (attempt %s): "
            "it was consumed then; access granted",
            _who(attempt),
            lost.id,
        )
        return self._passed_now(sub, check, "recovered")

    # A code that passed

    def _passed_now(self, sub: _Submission, check: Check, outcome: str) -> Decision:
        """AlloConv accepted the code (or recovery says it did): access, or one more code
        in the visitor's set."""
        if sub.visit.set_id is not None:
            return self._in_set(sub, sub.attempt.time, outcome, check.answer, check)
        return self._grant(sub, check, outcome, (sub.code_id,))

    def _in_set(
        self,
        sub: _Submission,
        passed_at: float,
        outcome: str | None,
        detail: str,
        check: Check | None = None,
    ) -> Decision:
        """Count the code in the visitor's set (a new one if that set is complete already),
        and grant access when the set is complete.

        ``outcome`` is the journal's word for the code (None: it counted there already).
        """
        set_id = sub.visit.set_id or uuid.uuid4().hex
        needed = self.config.codes
        # A code AlloConv accepted, its pending record (and rate-limit count) written: the
        # set step writes its record, and the access when it completes the set, in the
        # same transaction (Store.add_to_set_and_settle): two in all for the submission.
        settled = None
        if check is not None and self._counted(sub.attempt):
            settled = dataclasses.replace(
                sub.attempt, outcome=outcome or "restored", latency=check.latency, detail=detail
            )
        try:
            state = self._add(sub, set_id, passed_at, settled)
            if state.status == "closed":  # completed meanwhile (a copied progress cookie)
                set_id = uuid.uuid4().hex
                state = self._add(sub, set_id, passed_at, settled)
        except StoreError as exc:
            return self._set_failed(sub, outcome, detail, check, exc)
        if state.status == "used":  # it completed another set meanwhile
            self._finish(sub, outcome, check, f"{detail}; counts in a completed set already")
            return refuse(402, "error_invalid", code=sub.code)
        done = len(state.codes)
        complete = state.status == "complete"
        where = set_detail(detail, set_id, done, needed, complete)
        if complete and settled is not None:
            return self._granted(sub, check, outcome)
        if complete:
            return self._grant(sub, check, outcome, state.codes, where)
        if settled is None:
            self._finish(sub, outcome, check, where)
        log.info("%s %s: %s", _who(sub.attempt), outcome or "counted", where)
        return refuse(402, MORE_CODES, set_id=set_id, passed=done)

    def _add(self, sub: _Submission, set_id: str, passed_at: float, settled: Attempt | None):
        """Count the code in the set; with ``settled`` (the attempt's final record), write
        that record, and the access if the set completes, in the same transaction."""
        place = (sub.site, sub.code_id, set_id, self.config.prefixes, passed_at)
        needed, since = self.config.codes, self._since()
        if settled is None:
            return self._store.add_to_set(*place, needed=needed, since=since)
        return self._store.add_to_set_and_settle(
            *place, needed=needed, since=since, attempt=settled, ends_at=self._until(sub)
        )

    def _until(self, sub: _Submission) -> int:
        """When the access this submission buys ends."""
        return int(sub.attempt.time) + self.config.duration

    def _set_failed(self, sub, outcome, detail, check, exc) -> Decision:
        """The store failed to count a code that passed: it is not lost, support has it."""
        attempt = sub.attempt
        record = dataclasses.replace(attempt, outcome=outcome or "restored", detail=detail)
        log.error("store failed counting a code that passed: %s; record: %r", exc, record)
        if outcome is not None:
            self._finish(sub, outcome, check, f"{detail}; not counted in a set: store failed")
        return _to_support(sub)

    def _grant(
        self,
        sub: _Submission,
        check: Check | None,
        outcome: str | None,
        codes: tuple[str, ...],
        detail: str | None = None,
    ) -> Decision:
        """Access bought by ``codes``: their redemptions, then the record."""
        attempt = sub.attempt
        # One access, whatever the number of codes it took: its browsers are counted on
        # the first code's redemption.
        redemptions = set_redemptions(
            sub.site, codes, attempt.time, self._until(sub), self.config.prefixes
        )
        try:
            self._finish(sub, outcome, check, detail, redemptions=redemptions)
        except StoreError as exc:
            # Paid is paid: the cookie goes out, and the record goes to the log in full.
            done = dataclasses.replace(attempt, outcome=outcome or "restored", detail=detail or "")
            log.error("store failed after AlloConv accepted a code: %s; record: %r", exc, done)
        return self._granted(sub, check, outcome)

    def _granted(self, sub: _Submission, check: Check | None, outcome: str | None) -> Decision:
        """Access bought and written: the decision, logged."""
        latency = check.latency if check else 0.0
        log.info("%s %s in %.2fs", _who(sub.attempt), outcome or "completed its set", latency)
        return Decision(until=self._until(sub), prefixes=self.config.prefixes)

    # The journal

    def _finish(
        self,
        sub: _Submission,
        outcome: str | None,
        check: Check | None,
        detail: str | None,
        *,
        redemptions: list[Redemption] | None = None,
    ) -> None:
        """Complete the attempt's record (asked AlloConv), or write it (no call); a code
        that counted already (``outcome`` None) is journaled ``restored``.

        With ``redemptions`` (the access the code bought), the record and the access are
        written in one transaction (:meth:`Store.settle`), and a failure raises: the
        caller logs the whole record, and the visitor who paid still gets in.
        """
        attempt = sub.attempt
        answer = check.answer if check else ""
        text = detail if detail is not None else answer
        if redemptions is not None:
            latency = check.latency if check else attempt.latency
            key = self._owed(attempt)
            if key is not None:  # a set completed without a call: its count, apart
                self._store.hit(key, self.config.rate_limit[1], attempt.time)
            done = dataclasses.replace(
                attempt, outcome=outcome or "restored", latency=latency, detail=text
            )
            self._store.settle(done, redemptions)
        elif check is None:
            self._record_done(attempt, outcome or "restored", text)
        else:
            self._complete(attempt, outcome or "restored", dataclasses.replace(check, answer=text))

    def _complete(self, attempt: Attempt, outcome: str, check: Check) -> None:
        try:
            self._store.complete(attempt.id, outcome, check.latency, check.answer)
        except StoreError as exc:
            done = dataclasses.replace(
                attempt, outcome=outcome, latency=check.latency, detail=check.answer
            )
            log.error("store failed completing a record: %s; record: %r", exc, done)

    def _record_done(self, attempt: Attempt, outcome: str, detail: str) -> None:
        """Journal a submission that needed no AlloConv call, with its rate-limit count
        in the same transaction if it is still owed; a failure only logs."""
        done = dataclasses.replace(attempt, outcome=outcome, detail=detail)
        key = self._owed(attempt)
        try:
            if key is None:
                self._store.record(done)
            else:
                self._store.record_counted(done, key, self.config.rate_limit[1])
        except StoreError as exc:
            log.error("store failed recording %s (%s): %s", _who(attempt), outcome, exc)

    def _since(self) -> float:
        """The oldest pass that still counts in an unfinished set."""
        return self._clock() - SetProgress.LIFETIME


def _site(mount: str) -> str:
    """The store key of the access sold on a site mounted at ``mount``: redemptions and
    sets belong to the paths they were sold for, not to a gate's name or settings."""
    return f"site@{mount}"


def _to_support(sub: _Submission) -> Decision:
    """The visitor may have paid and the gate cannot tell: the reference, for support."""
    reference_ = reference(sub.attempt.code_hash)
    return refuse(
        503, "error_recovery_support", reference=reference_, retry_after=RETRY_AFTER, code=sub.code
    )


def _again(sub: _Submission) -> _Submission:
    """The same submission under a new record id (the first one is completed already)."""
    return dataclasses.replace(sub, attempt=dataclasses.replace(sub.attempt, id=uuid.uuid4().hex))


def _too_many(now: float, window: int) -> Decision:
    return refuse(429, "error_rate_limited", retry_after=_window_left(now, window))


def _window_left(now: float, window: int) -> int:
    return math.ceil(now // window * window + window - now)


def _who(attempt: Attempt) -> str:
    return f"code {attempt.code_masked} from {attempt.client} (palier {attempt.palier})"
