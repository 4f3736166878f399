"""Real servers on loopback, so that tests see what a client sees over the network.

``serve`` runs a WSGI app under waitress (the multi-threaded server the demo uses);
``refused_url`` and ``ResetServer`` stand for an AlloConv that is down or that breaks the
connection after reading the request, which no WSGI app can imitate.
"""

import contextlib
import socket
import struct
import threading

import waitress
from waitress import wasyncore

JOIN_TIMEOUT = 5.0


class Server:
    """A WSGI app served by waitress in a daemon thread until :meth:`close`."""

    def __init__(self, app, *, threads=16):
        self._map = {}
        self._server = waitress.create_server(
            app, map=self._map, host="127.0.0.1", port=0, threads=threads
        )
        self.port = int(self._server.effective_port)
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.run, name=f"waitress:{self.port}")
        self._thread.daemon = True
        self._thread.start()

    def close(self):
        """Stop the loop and the worker threads, closing every socket.

        The sockets are closed from inside the loop's own thread (through waitress's
        trigger): closing them from here while the loop polls them would race. Seen once
        under heavy load: EBADF while closing, with the workers still writing; hence the
        order below.
        """
        if not self._thread.is_alive():
            return
        # Workers first, so that none writes to a socket being closed under it.
        self._server.task_dispatcher.shutdown(timeout=JOIN_TIMEOUT)
        # OSError: the trigger is closed already, the loop is ending on its own.
        with contextlib.suppress(OSError):
            self._server.trigger.pull_trigger(lambda: wasyncore.close_all(self._map))
        self._thread.join(JOIN_TIMEOUT)
        if self._thread.is_alive():
            raise RuntimeError(f"waitress on port {self.port} did not stop")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def serve(app, *, threads=16):
    """Serve ``app`` on 127.0.0.1 at a free port; close the result (or use ``with``)."""
    return Server(app, threads=threads)


def client_address_from_header(app):
    """The client address from ``X-Test-Client``, as a proxy-fix middleware sets it."""

    def with_address(environ, start_response):
        environ["REMOTE_ADDR"] = environ.get("HTTP_X_TEST_CLIENT", environ["REMOTE_ADDR"])
        return app(environ, start_response)

    return with_address


def refused_url():
    """An http URL on loopback where nothing listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class ResetServer:
    """Reads each request head, then resets the connection (RST) without answering.

    ``requests`` counts the request heads read: the client's request did arrive, and its
    answer is lost, as when a connection breaks after AlloConv got the code.
    """

    def __init__(self):
        self.requests = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, name=f"reset:{self.port}")
        self._thread.daemon = True
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(JOIN_TIMEOUT)
                if _read_head(conn):
                    with self._lock:
                        self.requests += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def close(self):
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT)
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _read_head(conn):
    """Read up to the blank line that ends an HTTP request head; False if it never came."""
    head = b""
    try:
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return False
            head += chunk
    except OSError:
        return False
    return b"\r\n\r\n" in head
