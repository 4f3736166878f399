"""The test servers themselves: a helper that misbehaves makes every test that uses it lie."""

import threading

import pytest
import requests
from servers import ResetServer, refused_url, serve

from alloconv_gate.sandbox import Sandbox


def test_serve_answers_over_http_and_close_stops_every_thread():
    before = set(threading.enumerate())
    with serve(Sandbox(), threads=4) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert requests.get(f"{server.url}/api-numeros?palier=fra1", timeout=5).ok
    assert set(threading.enumerate()) <= before
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url, timeout=5)


def test_refused_url_refuses_connections():
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(refused_url(), timeout=5)


def test_reset_server_reads_the_request_then_resets():
    with ResetServer() as server:
        with pytest.raises(requests.exceptions.ConnectionError, match="reset"):
            requests.get(f"{server.url}/api-micropaiement?code1=ABCD1234", timeout=5)
        assert server.requests == 1
