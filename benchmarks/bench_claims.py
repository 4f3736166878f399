"""What a wrong code costs the store on a big journal, codes = 2 beside codes = 1.

    make bench-claims   (or: python benchmarks/bench_claims.py [--records N] [--rounds N])

A sqlite journal of ``--records`` records (a million by default: ``ok`` codes spread over
400 days, as a busy site keeps them) is written once. Then wrong codes (AlloConv answers
ERR3 at once: an in-process stand-in, so that only the gate and the store are timed) are
submitted to gates with ``codes = 1`` and ``codes = 2`` and durations of a day, 30 days
and 400 days, in interleaved rounds; the median cost of one wrong code and the ratio of
codes = 2 to codes = 1 are printed for each duration.

Before sets of codes were kept in the store, a codes = 2 gate looked for the code among
the ``ok`` records of the last ``duration``: 3.4x a codes = 1 gate's cost with a day,
35x with 30 days, 109x (146 ms) with 400 days, on a million records. A set claim is a
primary-key look-up, whatever the journal's size.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid

from webtest import TestApp

from alloconv_gate import Gate
from alloconv_gate.alloconv import AlloConv, Check, Verdict
from alloconv_gate.store.sqlite_store import SqliteStore

SECRET = "a-benchmark-secret-that-is-long-enough-0123"
NOW = 1_790_000_000.0
DURATIONS = (("1 day", "1d"), ("30 days", "30d"), ("400 days", "400d"))


class AnswersErr3(AlloConv):
    """AlloConv saying ERR3 (not, or no longer, valid) at once, without the network."""

    def __init__(self):
        super().__init__("http://127.0.0.1:9", "benchmark-key")

    def verify(self, code: str) -> Check:
        return Check(Verdict.INVALID, "ERR3", 0.0)


def fill(path: str, records: int) -> None:
    """A journal of ``records`` ``ok`` records over 400 days, with their redemptions."""
    SqliteStore(path).close()
    conn = sqlite3.connect(path)
    span = 400 * 86400
    rows = (
        (
            uuid.uuid4().hex,
            NOW - span + span * n / records,
            "default:/premium",
            "fra1",
            f"203.0.{n % 250}.{n % 200}",
            "AB12****",
            os.urandom(32).hex(),
            "ok",
            0.3,
            "OK",
        )
        for n in range(records)
    )
    with conn:
        conn.executemany("INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.close()


def gate(path: str, codes: int, duration: str) -> Gate:
    gate = Gate(
        lambda environ, start_response: [],
        api_key="benchmark-key",
        secret=SECRET,
        palier="fra1",
        prefixes="/premium",
        store=f"sqlite:///{path}",
        rate_limit="off",
        codes=str(codes),
        duration=duration,
        clock=lambda: NOW,
    )
    for parts in gate._parts.values():
        object.__setattr__(parts.verifier, "_alloconv", AnswersErr3())
        for cache in parts.numbers:  # the page's number, without the network
            cache._fetch = lambda palier: "08 99 23 45 67"
    return gate


def wrong_code_cost(site: TestApp, n: int) -> float:
    """Seconds for one wrong code typed on the page, over ``n`` of them (each a new code,
    from a new browser)."""
    started = time.perf_counter()
    for i in range(n):
        site.reset()
        site.post("/premium/x", {"code": f"WRONG{i:07d}{uuid.uuid4().hex[:6]}"}, status=402)
    return (time.perf_counter() - started) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--codes-per-round", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "journal.sqlite3")
        started = time.perf_counter()
        fill(path, args.records)
        print(
            f"journal of {args.records:,} records written in {time.perf_counter() - started:.1f} s"
        )
        gates = {
            (label, codes): TestApp(gate(path, codes, duration))
            for label, duration in DURATIONS
            for codes in (1, 2)
        }
        times: dict[tuple[str, int], list[float]] = {case: [] for case in gates}
        for _ in range(args.rounds):
            for case, verifier in gates.items():
                times[case].append(wrong_code_cost(verifier, args.codes_per_round))
        print(f"one wrong code, median of {args.rounds} rounds of {args.codes_per_round}:")
        print(f"  {'duration':<10} {'codes = 1':>12} {'codes = 2':>12} {'ratio':>7}")
        for label, _duration in DURATIONS:
            one = statistics.median(times[(label, 1)])
            two = statistics.median(times[(label, 2)])
            print(f"  {label:<10} {one * 1e6:>9.0f} µs {two * 1e6:>9.0f} µs {two / one:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
