"""The number cache: fetched rarely, kept through failures, never fetched by a crowd."""

import logging
import threading

import pytest
from clock import FakeClock

from alloconv_gate.alloconv import NumberUnavailable
from alloconv_gate.numbers import RETRY_AFTER_FAILURE, NumberCache

TTL = 3600
WAIT = 10  # seconds a thread may take before the test calls it stuck (never reached when green)


class Fetch:
    """A stand-in for ``AlloConv.number``: answers from a queue and counts its calls."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls: list[str] = []

    def __call__(self, palier: str) -> str:
        self.calls.append(palier)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class BlockingFetch:
    """A fetch that waits for ``release`` before answering, so that threads pile up."""

    def __init__(self, answer):
        self.answer = answer
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self._count = threading.Lock()

    def __call__(self, palier: str) -> str:
        with self._count:
            self.calls += 1
        self.started.set()
        assert self.release.wait(WAIT), "the test never released the fetch"
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


FAILURE = NumberUnavailable("ConnectionError: refused")
ERR918 = NumberUnavailable(
    "palier 'zzz9' is unknown to AlloConv (ERR918)", configuration_error=True
)


@pytest.fixture
def clock():
    return FakeClock()


def cache(fetch, clock, ttl=TTL, fallback=None) -> NumberCache:
    return NumberCache(fetch, "fra1", ttl=ttl, fallback=fallback, clock=clock)


class TestReuse:
    def test_fetched_for_the_palier_on_first_need(self, clock):
        fetch = Fetch("08 99 12 34 56")
        numbers = cache(fetch, clock)
        assert fetch.calls == []
        assert numbers.get() == "08 99 12 34 56"
        assert fetch.calls == ["fra1"]

    def test_reused_within_ttl(self, clock):
        fetch = Fetch("08 99 12 34 56")
        numbers = cache(fetch, clock)
        numbers.get()
        clock.advance(TTL - 1)
        assert numbers.get() == "08 99 12 34 56"
        assert len(fetch.calls) == 1

    def test_fetched_again_after_ttl(self, clock):
        fetch = Fetch("08 99 12 34 56", "08 99 65 43 21")
        numbers = cache(fetch, clock)
        numbers.get()
        clock.advance(TTL)
        assert numbers.get() == "08 99 65 43 21"
        assert len(fetch.calls) == 2

    def test_lines_of_the_answer_joined(self, clock):
        numbers = cache(Fetch("  SMS CODE\r\n au 81234 \n"), clock)
        assert numbers.get() == "SMS CODE au 81234"


class TestFailures:
    def test_failure_keeps_the_last_good_number(self, clock):
        fetch = Fetch("08 99 12 34 56", FAILURE)
        numbers = cache(fetch, clock, fallback="08 00 00 00 00")
        numbers.get()
        clock.advance(TTL)
        assert numbers.get() == "08 99 12 34 56"
        assert len(fetch.calls) == 2

    def test_without_a_good_number_the_fallback(self, clock):
        numbers = cache(Fetch(FAILURE), clock, fallback="08 00 00 00 00")
        assert numbers.get() == "08 00 00 00 00"

    def test_without_either_none(self, clock):
        assert cache(Fetch(FAILURE), clock).get() is None

    def test_no_refetch_before_the_retry_pause(self, clock):
        fetch = Fetch(FAILURE, "08 99 12 34 56")
        numbers = cache(fetch, clock, fallback="08 00 00 00 00")
        numbers.get()
        clock.advance(RETRY_AFTER_FAILURE - 1)
        assert numbers.get() == "08 00 00 00 00"
        assert len(fetch.calls) == 1
        clock.advance(1)
        assert numbers.get() == "08 99 12 34 56"
        assert len(fetch.calls) == 2

    def test_retry_pause_never_longer_than_ttl(self, clock):
        fetch = Fetch(FAILURE, "08 99 12 34 56")
        numbers = cache(fetch, clock, ttl=10)
        assert numbers.get() is None
        clock.advance(10)
        assert numbers.get() == "08 99 12 34 56"

    def test_after_a_failure_the_last_good_number_stays_through_the_pause(self, clock):
        fetch = Fetch("08 99 12 34 56", FAILURE)
        numbers = cache(fetch, clock)
        numbers.get()
        clock.advance(TTL)
        numbers.get()
        clock.advance(RETRY_AFTER_FAILURE - 1)
        assert numbers.get() == "08 99 12 34 56"
        assert len(fetch.calls) == 2

    def test_other_errors_are_not_swallowed(self, clock):
        # Only the client's NumberUnavailable means "no number"; a bug must show.
        numbers = cache(Fetch(ZeroDivisionError("bug")), clock)
        with pytest.raises(ZeroDivisionError):
            numbers.get()


class TestLogging:
    def test_err918_logged_as_configuration_error(self, clock, caplog):
        with caplog.at_level(logging.ERROR, logger="alloconv_gate"):
            assert cache(Fetch(ERR918), clock).get() is None
        [record] = caplog.records
        assert record.name == "alloconv_gate"
        assert record.levelno == logging.ERROR
        assert "configuration error" in record.getMessage()
        assert "ERR918" in record.getMessage()
        assert "'palier'" in record.getMessage()

    def test_failure_logged_with_palier_and_what_is_kept(self, clock, caplog):
        fetch = Fetch("08 99 12 34 56", FAILURE)
        numbers = cache(fetch, clock)
        numbers.get()
        clock.advance(TTL)
        with caplog.at_level(logging.ERROR, logger="alloconv_gate"):
            numbers.get()
        [record] = caplog.records
        assert record.levelno == logging.ERROR
        assert "'fra1'" in record.getMessage()
        assert "ConnectionError: refused" in record.getMessage()
        assert "keeping the last good number" in record.getMessage()

    def test_failure_without_number_says_so(self, clock, caplog):
        with caplog.at_level(logging.ERROR, logger="alloconv_gate"):
            cache(Fetch(FAILURE), clock).get()
        [record] = caplog.records
        assert "no number cached" in record.getMessage()

    def test_success_logs_nothing(self, clock, caplog):
        with caplog.at_level(logging.DEBUG, logger="alloconv_gate"):
            cache(Fetch("08 99 12 34 56"), clock).get()
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def run_in_threads(function, count):
    """Start ``count`` threads that each call ``function`` once they are all ready; return
    (threads, results, ready) where ``ready`` passes once every thread is about to call."""
    results = [None] * count
    ready = threading.Barrier(count + 1)

    def worker(index):
        ready.wait(WAIT)
        results[index] = function()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, results, ready


def join_all(threads):
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"


class TestCrowd:
    @pytest.mark.parametrize(
        "answer, fallback, expected",
        [
            pytest.param("08 99 12 34 56", None, "08 99 12 34 56", id="success"),
            pytest.param(FAILURE, "08 00 00 00 00", "08 00 00 00 00", id="failure-fallback"),
            pytest.param(FAILURE, None, None, id="failure-nothing"),
        ],
    )
    def test_many_threads_with_nothing_cached_cause_one_fetch(
        self, clock, answer, fallback, expected
    ):
        fetch = BlockingFetch(answer)
        numbers = cache(fetch, clock, fallback=fallback)
        threads, results, ready = run_in_threads(numbers.get, 20)
        ready.wait(WAIT)
        assert fetch.started.wait(WAIT)
        fetch.release.set()
        join_all(threads)
        assert fetch.calls == 1
        assert results == [expected] * 20

    def test_stale_number_served_while_another_thread_fetches(self, clock):
        fetch = BlockingFetch("08 99 12 34 56")
        fetch.release.set()  # the first fetch answers at once
        numbers = cache(fetch, clock)
        numbers.get()
        clock.advance(TTL)
        fetch.answer = "08 99 65 43 21"
        fetch.started.clear()
        fetch.release.clear()  # the next one hangs until released
        fetching = threading.Thread(target=numbers.get, daemon=True)
        fetching.start()
        assert fetch.started.wait(WAIT)

        others, results, ready = run_in_threads(numbers.get, 5)
        ready.wait(WAIT)
        join_all(others)  # they return without waiting for the fetch
        assert results == ["08 99 12 34 56"] * 5
        assert fetch.calls == 2

        fetch.release.set()
        join_all([fetching])
        assert numbers.get() == "08 99 65 43 21"
        assert fetch.calls == 2
