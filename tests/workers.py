"""What one worker process does in tests/test_workers.py (importable by spawned children)."""

from webtest import TestApp

from alloconv_gate import Gate


def submit_codes(options, submissions, now):
    """Submit ``(code, client address)`` pairs through a gate of this process's own, all
    at the time ``now`` (so that no rate-limit window ends during a test).

    Returns the status codes, in order.
    """
    gate = Gate(lambda environ, start_response: [], clock=lambda: now, **options)
    statuses = []
    for code, client in submissions:
        browser = TestApp(gate, extra_environ={"REMOTE_ADDR": client})
        answer = browser.post("/premium/x", {"code": code}, expect_errors=True)
        statuses.append(answer.status_int)
    gate.store.close()
    return statuses
