"""The store contract as the gate relies on it, run against every engine.

Each engine's test module subclasses :class:`StoreContract` and gives it a ``store``
fixture (a fresh, empty store, closed afterwards). The class is not named ``Test*`` on
purpose: pytest collects it only through its subclasses (``TestMemoryStore``,
``TestSqliteStore``, ``TestRedisStore``), once per engine.

Times are plain numbers: engines never read the clock, so no test waits for time to pass.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from alloconv_gate.store import PENDING, Attempt, Redemption, SetState, StoreError

GATE = "default:/premium"
OTHER_GATE = "archive:/archive"
HASH = "a" * 64
OTHER_HASH = "b" * 64
THREADS = 8


def attempt(id: str = "a1", time: float = 1000.0, **fields) -> Attempt:
    """A journal record as the gate writes it before asking AlloConv (pending)."""
    values = {
        "gate": GATE,
        "palier": "fra1",
        "client": "203.0.113.7",
        "code_masked": "AB12****",
        "code_hash": HASH,
        **fields,
    }
    return Attempt(id=id, time=time, **values)


def together(count: int, job):
    """Run ``job()`` in ``count`` threads released at the same instant; their results."""
    start = threading.Barrier(count, timeout=30)

    def run():
        start.wait()
        return job()

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(run) for _ in range(count)]
        return [future.result() for future in futures]


# A journal to filter: ids name what makes each record stand out.
JOURNAL = (
    attempt("old-ok", 100.0, outcome="ok", latency=0.3, detail="OK"),
    attempt("lost", 200.0, outcome="unknown", detail="ReadTimeout"),
    attempt("other-code", 300.0, code_hash=OTHER_HASH, outcome="invalid", detail="ERR3"),
    attempt("other-gate", 400.0, gate=OTHER_GATE, outcome="ok", latency=0.2, detail="OK"),
    attempt("new-pending", 500.0),
)


class StoreContract:
    """What every engine must do; subclasses provide the ``store`` fixture."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError("each engine's test class provides a store fixture")

    # The journal

    def test_a_pending_record_is_in_the_journal_as_written(self, store):
        """The record written before AlloConv is asked is what support finds after a crash."""
        pending = attempt()
        store.record(pending)
        assert store.journal() == [pending]
        assert store.journal()[0].outcome == PENDING

    def test_complete_sets_outcome_latency_and_detail_and_keeps_the_rest(self, store):
        store.record(attempt())
        store.complete("a1", "ok", 0.42, "OK")
        assert store.journal() == [
            dataclasses.replace(attempt(), outcome="ok", latency=0.42, detail="OK")
        ]

    def test_a_record_can_arrive_complete(self, store):
        """Submissions that need no AlloConv call (typo, rate limit) are written once."""
        done = attempt(outcome="refused-locally", detail="error_too_short")
        store.record(done)
        assert store.journal() == [done]

    def test_complete_again_the_last_outcome_wins(self, store):
        """A record written as unknown and then recovered shows how it ended."""
        store.record(attempt())
        store.complete("a1", "unknown", 5.0, "ReadTimeout")
        store.complete("a1", "recovered", 0.3, "ERR3")
        assert [(a.outcome, a.latency, a.detail) for a in store.journal()] == [
            ("recovered", 0.3, "ERR3")
        ]

    def test_complete_of_an_unknown_attempt_raises(self, store):
        """An outcome with no record to hold it must not vanish silently."""
        with pytest.raises(StoreError):
            store.complete("never-recorded", "ok", 0.1, "OK")
        assert store.journal() == []

    def test_recording_an_id_twice_raises_and_keeps_the_first(self, store):
        first = attempt(outcome="ok")
        store.record(first)
        with pytest.raises(StoreError):
            store.record(attempt(outcome="invalid"))
        assert store.journal() == [first]

    @pytest.mark.parametrize(
        ("filters", "expected"),
        [
            pytest.param(
                {},
                ["new-pending", "other-gate", "other-code", "lost", "old-ok"],
                id="everything-newest-first",
            ),
            pytest.param(
                {"since": 300.0}, ["new-pending", "other-gate", "other-code"], id="since-inclusive"
            ),
            pytest.param({"since": 501.0}, [], id="since-after-everything"),
            pytest.param({"outcome": "unknown"}, ["lost"], id="outcome"),
            pytest.param({"outcome": "ok"}, ["other-gate", "old-ok"], id="outcome-on-any-gate"),
            pytest.param({"code_hash": OTHER_HASH}, ["other-code"], id="code"),
            pytest.param({"gate": OTHER_GATE}, ["other-gate"], id="gate"),
            pytest.param(
                {"gate": GATE, "code_hash": HASH},
                ["new-pending", "lost", "old-ok"],
                id="code-on-gate",
            ),
            pytest.param(
                {"since": 150.0, "outcome": "ok", "gate": GATE, "code_hash": HASH},
                [],
                id="all-filters-none-match",
            ),
            pytest.param(
                {"since": 50.0, "outcome": "ok", "gate": GATE, "code_hash": HASH},
                ["old-ok"],
                id="all-filters-one-match",
            ),
            pytest.param({"limit": 2}, ["new-pending", "other-gate"], id="limit-keeps-newest"),
            pytest.param({"outcome": "ok", "limit": 1}, ["other-gate"], id="limit-after-filter"),
        ],
    )
    def test_journal_filters(self, store, filters, expected):
        """What support runs to answer "I paid and got nothing"."""
        for record in (JOURNAL[2], JOURNAL[0], JOURNAL[4], JOURNAL[1], JOURNAL[3]):
            store.record(record)
        assert [a.id for a in store.journal(**filters)] == expected

    def test_journal_returns_complete_records(self, store):
        for record in JOURNAL:
            store.record(record)
        assert store.journal(outcome="ok") == [JOURNAL[3], JOURNAL[0]]

    # Redemptions

    def test_redemption_is_none_until_redeemed(self, store):
        assert store.redemption(GATE, HASH) is None
        store.redeem(GATE, HASH, 1000.0, 1000.0 + 86400)
        assert store.redemption(GATE, HASH) == Redemption(GATE, HASH, 1000.0, 87400.0, 1)

    def test_a_redemption_belongs_to_its_gate(self, store):
        """A code accepted by another gate does not open this one."""
        store.redeem(OTHER_GATE, HASH, 1000.0, 2000.0)
        assert store.redemption(GATE, HASH) is None
        assert store.redemption(OTHER_GATE, OTHER_HASH) is None

    def test_a_redemption_keeps_the_prefixes_it_was_sold_for(self, store):
        store.redeem(GATE, HASH, 1000.0, 2000.0, ("/premium", "/caf\xc3\xa9"))
        assert store.redemption(GATE, HASH).prefixes == ("/premium", "/caf\xc3\xa9")

    def test_a_redemption_says_whose_devices_it_shares(self, store):
        store.redeem(GATE, HASH, 1000.0, 2000.0, ("/p",))
        store.redeem(GATE, OTHER_HASH, 1000.0, 2000.0, ("/p",), HASH)
        assert store.redemption(GATE, OTHER_HASH).shares_devices_with == HASH
        assert store.redemption(GATE, HASH).shares_devices_with == ""

    def test_redeem_again_keeps_the_first_access_and_its_devices(self, store):
        """A second OK for the same code (a lost answer recovered) must not extend or reset."""
        store.redeem(GATE, HASH, 1000.0, 2000.0)
        assert store.add_device(GATE, HASH, 3) is True
        store.redeem(GATE, HASH, 1500.0, 9000.0)
        assert store.redemption(GATE, HASH) == Redemption(GATE, HASH, 1000.0, 2000.0, 2)

    def test_add_device_up_to_max_devices_the_first_included(self, store):
        store.redeem(GATE, HASH, 1000.0, 2000.0)
        assert [store.add_device(GATE, HASH, 3) for _ in range(4)] == [True, True, False, False]
        assert store.redemption(GATE, HASH).devices == 3

    def test_add_device_with_one_device_allowed_refuses_at_once(self, store):
        store.redeem(GATE, HASH, 1000.0, 2000.0)
        assert store.add_device(GATE, HASH, 1) is False
        assert store.redemption(GATE, HASH).devices == 1

    def test_add_device_without_a_redemption_is_refused_and_creates_none(self, store):
        store.redeem(OTHER_GATE, HASH, 1000.0, 2000.0)
        assert store.add_device(GATE, HASH, 3) is False
        assert store.redemption(GATE, HASH) is None
        assert store.redemption(OTHER_GATE, HASH).devices == 1

    # Rate limits

    def test_hit_counts_within_a_window(self, store):
        """The window of 60 s holding 120.0 runs from 120.0 to 180.0, its end excluded."""
        assert [store.hit("gate|203.0.113.7", 60, now) for now in (120.0, 150.5, 179.9)] == [
            1,
            2,
            3,
        ]

    def test_hit_restarts_in_the_next_window(self, store):
        for now in (120.0, 130.0, 179.0):
            store.hit("gate|203.0.113.7", 60, now)
        assert store.hit("gate|203.0.113.7", 60, 180.0) == 1
        assert store.hit("gate|203.0.113.7", 60, 200.0) == 2

    def test_hit_keys_count_apart(self, store):
        """One noisy visitor does not use up another's submissions."""
        assert store.hit("gate|203.0.113.7", 60, 120.0) == 1
        assert store.hit("gate|203.0.113.7", 60, 121.0) == 2
        assert store.hit("gate|198.51.100.1", 60, 122.0) == 1
        assert store.hit("other|203.0.113.7", 60, 123.0) == 1

    def test_a_short_window_ending_does_not_reset_a_longer_one(self, store):
        """Two gates sharing a store may limit per minute and per hour: clearing the ended
        minute windows must not forget the hour still running."""
        assert store.hit("hourly|203.0.113.7", 3600, 10.0) == 1
        assert store.hit("minutely|203.0.113.7", 60, 130.0) == 1
        assert store.hit("hourly|203.0.113.7", 3600, 140.0) == 2

    def test_one_key_with_windows_of_different_lengths_counts_apart(self, store):
        """Counts are per key, window length and window start: changing a gate's rate_limit
        from per minute to per hour does not carry the minute's count over."""
        assert store.hit("gate|203.0.113.7", 60, 0.0) == 1
        assert store.hit("gate|203.0.113.7", 60, 1.0) == 2
        assert store.hit("gate|203.0.113.7", 3600, 2.0) == 1

    def test_count_reads_what_hit_counted_without_counting(self, store):
        """The gate reads a client's count before a submission, and counts it only with
        the submission's record: reading must cost no event."""
        assert store.count("gate|203.0.113.7", 60, 120.0) == 0
        store.hit("gate|203.0.113.7", 60, 120.0)
        store.hit("gate|203.0.113.7", 60, 130.0)
        assert [store.count("gate|203.0.113.7", 60, 150.0) for _ in range(3)] == [2, 2, 2]
        assert store.count("gate|203.0.113.7", 60, 180.0) == 0  # the next window
        assert store.count("gate|203.0.113.7", 3600, 150.0) == 0  # another length
        assert store.count("gate|198.51.100.1", 60, 150.0) == 0
        assert store.hit("gate|203.0.113.7", 60, 170.0) == 3

    # One transaction for what used to be several

    def test_record_counted_counts_as_hit_does_and_records(self, store):
        store.hit("gate|203.0.113.7", 60, 990.0)
        assert store.record_counted(attempt(), "gate|203.0.113.7", 60, 5) == 2
        assert store.journal() == [attempt()]
        assert store.count("gate|203.0.113.7", 60, 1000.0) == 2
        assert store.hit("gate|203.0.113.7", 60, 1001.0) == 3

    def test_record_counted_over_the_limit_counts_but_journals_nothing(self, store):
        """The submission that finds the last place taken is not journaled as pending,
        so it is never sent to AlloConv; it still counts, as a hit would."""
        for n in range(2):
            store.hit("k", 60, 995.0 + n)
        assert store.record_counted(attempt(), "k", 60, 2) == 3
        assert store.journal() == []
        assert store.count("k", 60, 1000.0) == 3

    def test_record_counted_without_a_limit_always_records(self, store):
        for n in range(3):
            store.hit("k", 60, 995.0 + n)
        done = attempt(outcome="restored")
        assert store.record_counted(done, "k", 60) == 4
        assert store.journal() == [done]

    def test_record_counted_counts_in_the_window_of_the_attempts_time(self, store):
        assert store.record_counted(attempt("a1", 1000.0), "k", 60, 5) == 1  # 960 to 1020
        assert store.count("k", 60, 1019.0) == 1
        assert store.record_counted(attempt("a2", 1020.0), "k", 60, 5) == 1  # 1020 to 1080
        assert store.count("k", 60, 1020.0) == 1

    def test_record_counted_with_an_id_in_the_journal_raises_and_counts_nothing(self, store):
        first = attempt(outcome="ok")
        store.record(first)
        with pytest.raises(StoreError):
            store.record_counted(attempt(), "k", 60, 5)
        assert store.journal() == [first]
        assert store.count("k", 60, 1000.0) == 0

    def test_threads_racing_for_the_last_places_journal_exactly_those(self, store):
        """8 submissions of one client at once, 3 places left of 5: 3 pending records."""
        for n in range(2):
            store.hit("gate|203.0.113.7", 60, 990.0 + n)
        ids = iter(range(THREADS))
        lock = threading.Lock()

        def submit():
            with lock:
                number = next(ids)
            return store.record_counted(attempt(f"t{number}"), "gate|203.0.113.7", 60, 5)

        counts = together(THREADS, submit)
        assert sorted(counts) == list(range(3, 3 + THREADS))
        assert len(store.journal()) == 3

    def redemption(self, code_hash=HASH, shares="", **fields):
        values = {"granted_at": 1000.0, "ends_at": 2000.0, "devices": 1, "prefixes": ("/p",)}
        return Redemption(GATE, code_hash, **{**values, **fields}, shares_devices_with=shares)

    def test_settle_completes_the_pending_record_and_redeems_at_once(self, store):
        store.record(attempt())
        done = dataclasses.replace(attempt(), outcome="ok", latency=0.25, detail="OK")
        store.settle(done, [self.redemption()])
        assert store.journal() == [done]
        assert store.journal(outcome=PENDING) == []
        assert store.journal(outcome="ok") == [done]
        assert store.redemption(GATE, HASH) == self.redemption()

    def test_settle_keeps_the_rest_of_the_pending_record(self, store):
        """Only the outcome, latency and detail are the settlement's to write."""
        store.record(attempt())
        store.settle(attempt(outcome="ok", latency=0.2, detail="OK", client="198.51.100.9"))
        assert store.journal() == [attempt(outcome="ok", latency=0.2, detail="OK")]

    def test_settle_without_a_pending_record_adds_the_whole_record(self, store):
        """A set completed by codes that passed before needs no AlloConv call, so no
        pending record: its record is written once, with the access."""
        done = attempt(outcome="restored", detail="set complete")
        store.settle(done, [self.redemption(), self.redemption(OTHER_HASH, shares=HASH)])
        assert store.journal() == [done]
        assert store.redemption(GATE, OTHER_HASH).shares_devices_with == HASH
        assert store.redemption(GATE, HASH).shares_devices_with == ""

    def test_settle_keeps_a_redemption_that_exists(self, store):
        """A second OK for the same code must not extend the access or reset its devices."""
        store.redeem(GATE, HASH, 1000.0, 2000.0, ("/p",))
        store.add_device(GATE, HASH, 3)
        store.record(attempt(time=1500.0))
        store.settle(
            attempt(time=1500.0, outcome="recovered"),
            [self.redemption(granted_at=1500.0, ends_at=9000.0)],
        )
        assert store.redemption(GATE, HASH) == self.redemption(devices=2)

    def test_settle_without_redemptions_only_writes_the_record(self, store):
        store.record(attempt())
        store.settle(attempt(outcome="invalid", latency=0.1, detail="ERR3"))
        assert [(a.outcome, a.detail) for a in store.journal()] == [("invalid", "ERR3")]
        assert store.redemption(GATE, HASH) is None

    # Support grants

    def test_use_grant_once(self, store):
        """A support link works once: a copy forwarded to someone else gets nothing."""
        assert store.use_grant("g1", 1000.0) is True
        assert store.use_grant("g1", 1001.0) is False
        assert store.use_grant("g1", 99999.0) is False
        assert store.use_grant("g2", 1002.0) is True

    # Life

    def test_ping_on_a_working_store(self, store):
        assert store.ping() is None

    # Threads of one process

    def test_threads_racing_for_the_last_devices_get_exactly_those(self, store):
        """8 browsers, 25 tries each, on a code allowing 3: the 2 free places go, no more."""
        store.redeem(GATE, HASH, 1000.0, 2000.0)
        results = together(THREADS, lambda: [store.add_device(GATE, HASH, 3) for _ in range(25)])
        assert sum(sum(r) for r in results) == 2
        assert store.redemption(GATE, HASH).devices == 3

    def test_threads_hitting_one_key_count_every_hit_once(self, store):
        """8 threads of 50 hits: the count is 400 and no two hits saw the same count."""
        results = together(THREADS, lambda: [store.hit("k", 60, 120.0) for _ in range(50)])
        counts = [count for result in results for count in result]
        assert sorted(counts) == list(range(1, 401))
        assert store.hit("k", 60, 121.0) == 401

    # Sets of codes (codes = N)

    def add(self, store, code, set_id, passed_at=1000.0, needed=2, since=0.0, prefixes=("/p",)):
        return store.add_to_set(GATE, code, set_id, prefixes, passed_at, needed=needed, since=since)

    def test_a_set_is_open_until_it_holds_the_codes_it_needs(self, store):
        assert self.add(store, HASH, "s1") == SetState("open", (HASH,))
        assert store.set_codes(GATE, "s1", since=0.0) == (HASH,)
        claim = store.claim(GATE, HASH)
        assert (claim.set_id, claim.prefixes, claim.passed_at, claim.completed) == (
            "s1",
            ("/p",),
            1000.0,
            False,
        )
        assert self.add(store, OTHER_HASH, "s1", 1001.0) == SetState("complete", (HASH, OTHER_HASH))
        assert store.claim(GATE, HASH).completed
        assert store.set_codes(GATE, "s1", since=0.0) == ()

    def test_a_code_typed_again_in_its_set_counts_once(self, store):
        self.add(store, HASH, "s1")
        assert self.add(store, HASH, "s1", 1005.0) == SetState("open", (HASH,))
        assert store.claim(GATE, HASH).passed_at == 1000.0

    def test_a_code_moves_and_no_longer_counts_where_it_was(self, store):
        self.add(store, HASH, "owner", needed=3)
        self.add(store, OTHER_HASH, "owner", 1001.0, needed=3)
        assert self.add(store, HASH, "stranger", 2000.0, needed=3) == SetState("open", (HASH,))
        assert store.set_codes(GATE, "owner", since=0.0) == (OTHER_HASH,)
        claim = store.claim(GATE, HASH)
        assert (claim.set_id, claim.passed_at) == ("stranger", 1000.0)  # when it passed

    def test_a_complete_set_takes_no_more_codes(self, store):
        self.add(store, HASH, "s1", needed=1)
        assert self.add(store, OTHER_HASH, "s1", needed=1) == SetState("closed")
        assert store.claim(GATE, OTHER_HASH) is None

    def test_a_code_of_a_complete_set_moves_no_more(self, store):
        self.add(store, HASH, "s1", needed=1)
        assert self.add(store, HASH, "s2", needed=1) == SetState("used")
        assert store.claim(GATE, HASH).set_id == "s1"

    # A code AlloConv accepted for a set: the step and its record in one transaction

    def add_and_settle(self, store, code, set_id, record, needed=2):
        return store.add_to_set_and_settle(
            GATE,
            code,
            set_id,
            ("/p",),
            record.time,
            needed=needed,
            since=0.0,
            attempt=record,
            ends_at=5000,
        )

    def test_an_open_set_step_settles_its_pending_record(self, store):
        store.record(attempt("a1"))
        done = attempt("a1", outcome="ok", latency=0.2, detail="OK")
        assert self.add_and_settle(store, HASH, "s1234567890", done) == SetState("open", (HASH,))
        [record] = store.journal()
        assert (record.outcome, record.latency) == ("ok", 0.2)
        assert record.detail == "OK; set s1234567: code 1 of 2"
        assert store.journal(outcome=PENDING) == []
        assert store.redemption(GATE, HASH) is None  # no access yet

    def test_the_completing_step_writes_the_access_with_the_record(self, store):
        self.add(store, HASH, "s1", 900.0)
        store.record(attempt("a2", 1000.0, code_hash=OTHER_HASH))
        done = attempt("a2", 1000.0, code_hash=OTHER_HASH, outcome="ok", detail="OK")
        state = self.add_and_settle(store, OTHER_HASH, "s1", done)
        assert state == SetState("complete", (HASH, OTHER_HASH))
        assert store.journal(outcome="ok")[0].detail == "OK; set s1: code 2 of 2, complete"
        first, second = store.redemption(GATE, HASH), store.redemption(GATE, OTHER_HASH)
        assert (first.granted_at, first.ends_at, first.prefixes) == (1000.0, 5000, ("/p",))
        assert (first.shares_devices_with, second.shares_devices_with) == ("", HASH)
        assert store.claim(GATE, HASH).completed

    def test_a_step_that_changes_nothing_writes_nothing(self, store):
        self.add(store, HASH, "s1", needed=1)
        store.record(attempt("a3", code_hash=OTHER_HASH))
        done = attempt("a3", code_hash=OTHER_HASH, outcome="ok", detail="OK")
        assert self.add_and_settle(store, OTHER_HASH, "s1", done, needed=1) == SetState("closed")
        assert self.add_and_settle(store, HASH, "s2", done, needed=1) == SetState("used")
        assert [a.outcome for a in store.journal()] == [PENDING]  # the caller decides
        assert store.redemption(GATE, OTHER_HASH) is None

    def test_codes_that_passed_too_long_ago_do_not_count(self, store):
        self.add(store, HASH, "s1", 100.0)
        assert self.add(store, OTHER_HASH, "s1", 5000.0, since=1000.0) == SetState(
            "open", (OTHER_HASH,)
        )
        assert store.set_codes(GATE, "s1", since=1000.0) == (OTHER_HASH,)

    def test_sets_of_two_gates_are_apart(self, store):
        self.add(store, HASH, "s1")
        assert store.claim(OTHER_GATE, HASH) is None
        assert store.set_codes(OTHER_GATE, "s1", since=0.0) == ()

    def test_threads_completing_sets_with_one_code_complete_one(self, store):
        """Each thread's set holds one code of its own; all add the same shared code."""
        sets = [f"s{n}" for n in range(THREADS)]
        for n, set_id in enumerate(sets):
            self.add(store, f"{n:064x}", set_id)
        self.add(store, HASH, "first-owner")
        queue = list(sets)
        lock = threading.Lock()

        def complete():
            with lock:
                set_id = queue.pop()
            return self.add(store, HASH, set_id, 3000.0).status

        statuses = together(THREADS, complete)
        assert sorted(statuses) == ["complete"] + ["used"] * (THREADS - 1)
