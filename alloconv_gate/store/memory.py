"""The memory store: for tests and a single process; everything is lost on restart."""

from __future__ import annotations

import dataclasses
import threading

from .base import (
    Attempt,
    Claim,
    Redemption,
    SetState,
    Store,
    StoreError,
    set_detail,
    set_redemptions,
)


class MemoryStore(Store):
    """Everything in dicts behind one lock.

    The steps that fold several writes together (:meth:`record_counted`,
    :meth:`settle`) are made of the single ones, under the same (reentrant) lock: one
    step for other threads, and a test double that makes ``record`` or ``redeem`` fail
    makes them fail too.
    """

    warning = (
        "store = memory keeps the journal and redemptions in this process only: they are "
        "lost on restart and not shared with other workers; use sqlite or redis in production"
    )

    def __init__(self):
        self._lock = threading.RLock()
        self._attempts: dict[str, Attempt] = {}
        self._redemptions: dict[tuple[str, str], Redemption] = {}
        self._counters: dict[tuple[str, int, int], int] = {}
        self._claims: dict[tuple[str, str], Claim] = {}
        self._complete_sets: set[tuple[str, str]] = set()
        self._used_grants: set[str] = set()

    def record(self, attempt: Attempt) -> None:
        with self._lock:
            if attempt.id in self._attempts:
                raise StoreError(f"attempt {attempt.id} is already in the journal")
            self._attempts[attempt.id] = attempt

    def complete(self, attempt_id: str, outcome: str, latency: float | None, detail: str) -> None:
        with self._lock:
            try:
                attempt = self._attempts[attempt_id]
            except KeyError:
                raise StoreError(f"no attempt {attempt_id} in the journal") from None
            self._attempts[attempt_id] = dataclasses.replace(
                attempt, outcome=outcome, latency=latency, detail=detail
            )

    def journal(self, *, since=None, outcome=None, code_hash=None, gate=None, limit=1000):
        with self._lock:
            found = [
                a
                for a in self._attempts.values()
                if (since is None or a.time >= since)
                and (outcome is None or a.outcome == outcome)
                and (code_hash is None or a.code_hash == code_hash)
                and (gate is None or a.gate == gate)
            ]
        found.sort(key=lambda a: a.time, reverse=True)
        return found[:limit]

    def redemption(self, gate: str, code_hash: str) -> Redemption | None:
        with self._lock:
            return self._redemptions.get((gate, code_hash))

    def redeem(self, gate, code_hash, granted_at, ends_at, prefixes=(), shares_devices_with=""):
        with self._lock:
            self._redemptions.setdefault(
                (gate, code_hash),
                Redemption(
                    gate, code_hash, granted_at, ends_at, 1, tuple(prefixes), shares_devices_with
                ),
            )

    def add_device(self, gate: str, code_hash: str, max_devices: int) -> bool:
        with self._lock:
            redemption = self._redemptions.get((gate, code_hash))
            if redemption is None or redemption.devices >= max_devices:
                return False
            self._redemptions[(gate, code_hash)] = dataclasses.replace(
                redemption, devices=redemption.devices + 1
            )
            return True

    def claim(self, gate: str, code_hash: str) -> Claim | None:
        with self._lock:
            return self._claims.get((gate, code_hash))

    def set_codes(self, gate: str, set_id: str, *, since: float) -> tuple[str, ...]:
        with self._lock:
            return self._open_codes(gate, set_id, since)

    def _open_codes(self, gate: str, set_id: str, since: float) -> tuple[str, ...]:
        codes = sorted(
            (c.passed_at, c.code_hash)
            for (g, _), c in self._claims.items()
            if g == gate and c.set_id == set_id and not c.completed and c.passed_at >= since
        )
        return tuple(hashed for _, hashed in codes)

    def add_to_set(self, gate, code_hash, set_id, prefixes, passed_at, *, needed, since):
        with self._lock:
            if (gate, set_id) in self._complete_sets:
                return SetState("closed")
            old = self._claims.get((gate, code_hash))
            if old is not None and old.completed:
                return SetState("used")
            when = passed_at if old is None else old.passed_at
            self._claims[(gate, code_hash)] = Claim(code_hash, set_id, tuple(prefixes), when, False)
            hashes = self._open_codes(gate, set_id, since)
            if len(hashes) < needed:
                return SetState("open", hashes)
            self._complete_sets.add((gate, set_id))
            for hashed in hashes:
                self._claims[(gate, hashed)] = dataclasses.replace(
                    self._claims[(gate, hashed)], completed=True
                )
            return SetState("complete", hashes)

    def add_to_set_and_settle(
        self, gate, code_hash, set_id, prefixes, passed_at, *, needed, since, attempt, ends_at
    ):
        with self._lock:
            state = self.add_to_set(
                gate, code_hash, set_id, prefixes, passed_at, needed=needed, since=since
            )
            if state.status in ("open", "complete"):
                complete = state.status == "complete"
                detail = set_detail(attempt.detail, set_id, len(state.codes), needed, complete)
                redemptions = (
                    set_redemptions(gate, state.codes, attempt.time, ends_at, prefixes)
                    if complete
                    else ()
                )
                self.settle(dataclasses.replace(attempt, detail=detail), redemptions)
            return state

    def hit(self, key: str, window: int, now: float) -> int:
        start = int(now // window * window)
        with self._lock:
            for ended in [k for k in self._counters if k[2] + k[1] <= now]:
                del self._counters[ended]
            count = self._counters.get((key, window, start), 0) + 1
            self._counters[(key, window, start)] = count
            return count

    def count(self, key: str, window: int, now: float) -> int:
        with self._lock:
            return self._counters.get((key, window, int(now // window * window)), 0)

    def record_counted(self, attempt, key, window, limit=None):
        with self._lock:
            if attempt.id in self._attempts:
                raise StoreError(f"attempt {attempt.id} is already in the journal")
            count = self.hit(key, window, attempt.time)
            if limit is None or count <= limit:
                self.record(attempt)
            return count

    def settle(self, attempt, redemptions=()):
        with self._lock:
            for r in redemptions:
                self.redeem(
                    r.gate, r.code_hash, r.granted_at, r.ends_at, r.prefixes, r.shares_devices_with
                )
            if attempt.id in self._attempts:
                self.complete(attempt.id, attempt.outcome, attempt.latency, attempt.detail)
            else:
                self.record(attempt)

    def use_grant(self, grant_id: str, now: float) -> bool:
        with self._lock:
            if grant_id in self._used_grants:
                return False
            self._used_grants.add(grant_id)
            return True

    def ping(self) -> None:
        return None
