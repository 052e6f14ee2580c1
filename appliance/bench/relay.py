"""A TCP relay on 127.0.0.1 between a post and headquarters: a slow link on loopback.

Every connection made to the relay's port is joined to the target port; what goes through is
counted (the bytes the post sends: `up_bytes`, first and last at `up_first` and `up_last`, by
time.monotonic()) and, with `link_mbit`, paced in each direction to that many megabits per second
(a token bucket per direction, as a modem's uplink and downlink; the socket buffers in between
fill and stall the sender as a slow link does). `waypost bench sync --link-mbit` and the test of
sync.max_kbps use it.
"""

from __future__ import annotations

import socket
import threading
import time

CHUNK = 16 * 1024


class Bucket:
    """A token bucket of `rate` bytes per second holding at most `burst` bytes: take(n) waits until
    n bytes may go. Shared by the threads of one direction."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate = rate
        self.burst = burst if burst is not None else max(CHUNK, rate / 20)
        self.tokens = self.burst
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            self.tokens -= n
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class Relay:
    def __init__(self, port: int, target_port: int, link_mbit: float | None = None, host: str = "127.0.0.1"):
        self.port, self.target_port, self.host = port, target_port, host
        rate = link_mbit * 1_000_000 / 8 if link_mbit else None
        self.up = Bucket(rate) if rate else None
        self.down = Bucket(rate) if rate else None
        self.up_bytes = 0
        self.down_bytes = 0
        self.up_first: float | None = None
        self.up_last: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server((host, port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, name="relay-accept", daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection((self.host, self.target_port), timeout=30)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.settimeout(None)
            pair = _Pair(client, server)
            threading.Thread(target=self._pump, args=(pair, client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, server, client, False), daemon=True).start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket, up: bool) -> None:
        bucket = self.up if up else self.down
        try:
            while data := src.recv(CHUNK):
                if bucket is not None:
                    bucket.take(len(data))
                dst.sendall(data)
                with self._lock:
                    if up:
                        now = time.monotonic()
                        self.up_bytes += len(data)
                        self.up_first = now if self.up_first is None else self.up_first
                        self.up_last = now
                    else:
                        self.down_bytes += len(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)  # the other end learns this direction has ended
            except OSError:
                pass
            pair.done()


class _Pair:
    """The two sockets of one relayed connection, closed when both directions have ended."""

    def __init__(self, a: socket.socket, b: socket.socket):
        self.sockets = (a, b)
        self.left = 2
        self.lock = threading.Lock()

    def done(self) -> None:
        with self.lock:
            self.left -= 1
            last = self.left == 0
        if last:
            for sock in self.sockets:
                sock.close()
