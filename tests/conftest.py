from dataclasses import dataclass

import pytest
from servers import serve

from alloconv_gate.sandbox import Sandbox


@dataclass(frozen=True)
class SandboxServer:
    sandbox: Sandbox
    url: str


@pytest.fixture(scope="session")
def sandbox_server():
    """One sandbox over real HTTP for the whole run; ``url`` is the api_base to give a client."""
    sandbox = Sandbox()
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
