"""A real ``redis-server`` on loopback, so that the redis store is tested against Redis
itself, including Redis going down and hanging, which no fake imitates faithfully.

Each server runs in its own folder on a free port, with persistence off, so that it
neither touches nor depends on a Redis the machine may already run.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

BINARY = "redis-server"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def find_binary() -> str | None:
    """The path of ``redis-server``, or None when it is not installed."""
    return shutil.which(BINARY) or shutil.which(BINARY, path="/usr/bin:/usr/sbin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command(port: int, *words: str, timeout: float = 2.0) -> bytes:
    """Send one inline command and return the first line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(" ".join(words).encode() + b"\r\n")
        answer = b""
        while not answer.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.strip()


class RedisServer:
    """``redis-server`` in ``folder`` on a free port; :meth:`stop` and :meth:`start` it
    again on the same port (Redis going down and coming back), :meth:`pause` and
    :meth:`resume` it (Redis hanging: it accepts connections and never answers)."""

    def __init__(self, binary: str, folder):
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.paused = False
        self.log = folder / "redis.log"

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        if self.process is not None:
            return
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own arguments, no shell
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.folder),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if command(self.port, "PING") == b"+PONG":
                    return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{self.read_log()}")

    def stop(self) -> None:
        """Stop the server (every client connection drops) and wait until it is gone."""
        if self.process is None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        self.process = None

    def pause(self) -> None:
        """Freeze the server: the kernel still accepts connections, nothing answers."""
        if self.process is not None and not self.paused:
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.process is not None and self.paused:
            self.process.send_signal(signal.SIGCONT)
            self.paused = False

    def ready(self) -> None:
        """Running, answering, and with an empty database: what each test starts from."""
        self.resume()
        self.start()
        if command(self.port, "FLUSHDB") != b"+OK":
            raise RuntimeError(f"redis-server on port {self.port} did not flush")

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
