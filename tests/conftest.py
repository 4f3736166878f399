import os
from dataclasses import dataclass

import pytest
from redis_server import RedisServer, find_binary
from servers import serve

from alloconv_gate.sandbox import DEFAULT_NUMBERS, Sandbox

# The session sandbox's account has several APIs, as a site selling several prices has:
# "sandbox-key" accepts every palier (the tests of one gate use it), and each other key
# accepts only the paliers in its name, for tests of gates sold at different prices.
SANDBOX_KEYS = {
    "sandbox-key": tuple(DEFAULT_NUMBERS),
    "key-fra1": ("fra1",),
    "key-fra2": ("fra2",),
    "key-fra2-bel1": ("fra2", "bel1"),
    "key-bel1": ("bel1",),
}


@dataclass(frozen=True)
class SandboxServer:
    sandbox: Sandbox
    url: str


@pytest.fixture(scope="session")
def sandbox_server():
    """One sandbox over real HTTP for the whole run; ``url`` is the api_base to give a client.

    Its keys are :data:`SANDBOX_KEYS`.
    """
    sandbox = Sandbox(keys=SANDBOX_KEYS)
    with serve(sandbox) as server:
        yield SandboxServer(sandbox, server.url)


@pytest.fixture
def sandbox(sandbox_server):
    """The shared sandbox, with no fault and its call counts at zero."""
    sandbox = sandbox_server.sandbox
    sandbox.clear_fault()
    sandbox.calls.clear()
    yield sandbox
    sandbox.clear_fault()


@pytest.fixture
def sandbox_url(sandbox, sandbox_server):
    return sandbox_server.url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port for the whole run (``url``, ``stop()``,
    ``start()``, ``pause()``, ``resume()``).

    Skipped when redis-server is not installed, except under ``CI=true``: there a skipped
    Redis test would hide that the redis store was never tested, so it fails.
    """
    binary = find_binary()
    if binary is None:
        reason = "redis-server is not installed (Debian: apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; under CI=true the redis store must be tested")
        pytest.skip(reason)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """The test Redis's URL, running and with an empty database, whatever the last test did."""
    redis_server.ready()
    return redis_server.url
