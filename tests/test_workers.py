"""Several worker processes sharing one sqlite store, as under gunicorn or uwsgi."""

import multiprocessing
from collections import Counter

import pytest
from workers import submit_codes

from alloconv_gate.store import open_store

PROCESSES = 4
NOW = 1_790_000_000.0


@pytest.fixture
def options(tmp_path, sandbox_url):
    return {
        "api_key": "sandbox-key",
        "secret": "workers-tests-secret-long-enough-0123456789",
        "palier": "fra1",
        "prefixes": "/premium",
        "api_base": sandbox_url,
        "store": f"sqlite:///{tmp_path}/journal.sqlite3",
    }


def in_processes(options, batches):
    """Run each batch of submissions in its own process, all at once."""
    with multiprocessing.get_context("spawn").Pool(len(batches)) as pool:
        results = pool.starmap(submit_codes, [(options, batch, NOW) for batch in batches])
    return results


def journal(options):
    store = open_store(options["store"])
    try:
        return store.journal(limit=10_000)
    finally:
        store.close()


def test_200_codes_from_4_processes_leave_200_complete_records(options, sandbox):
    codes = [sandbox.issue_code() for _ in range(200)]
    batches = [
        [(code, f"10.0.{p}.{i}") for i, code in enumerate(codes[p::PROCESSES])]
        for p in range(PROCESSES)
    ]
    results = in_processes(options, batches)
    assert Counter(status for statuses in results for status in statuses) == {303: 200}
    records = journal(options)
    assert len(records) == 200
    assert Counter(r.outcome for r in records) == {"ok": 200}
    assert all(sandbox.is_used(code) for code in codes)


def test_restore_and_its_device_limit_hold_across_processes(options, sandbox):
    code = sandbox.issue_code()
    [[first]] = in_processes(options, [[(code, "10.1.0.1")]])
    assert first == 303
    calls = sandbox.calls["api-micropaiement"]
    results = in_processes(options, [[(code, f"10.1.{p}.2")] for p in range(PROCESSES)])
    statuses = Counter(status for statuses in results for status in statuses)
    assert statuses == {303: 2, 402: 2}  # max_devices = 3, the first browser included
    assert sandbox.calls["api-micropaiement"] == calls  # restored without AlloConv


def test_the_rate_limit_holds_across_processes(options, sandbox):
    batches = [[("ZZZZ9999", "10.2.0.1")] * 3 for _ in range(PROCESSES)]
    results = in_processes(options, batches)
    statuses = Counter(status for statuses in results for status in statuses)
    assert statuses == {402: 5, 429: 7}  # rate_limit = 5/minute
    assert sandbox.calls["api-micropaiement"] == 5
