"""The HTTP server: waitress in a thread, on a port bound before anything is recorded. The post
(`waypost run`) and headquarters (`waypost hq serve`) both serve through it."""

from __future__ import annotations

import errno
import socket
import threading

from waitress import wasyncore
from waitress.server import create_server


class ListenError(OSError):
    """The web port cannot be had; the message says which and what to change."""


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on host:port now, before anything is announced or recorded, so a port
    already in use stops the start with one line instead of a traceback after the access log has
    been written to. waitress takes the socket over (WebServer(sock=...))."""
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ListenError(
            f"cannot listen on {where}: {exc.strerror}; set web.host (WAYPOST_WEB__HOST) to an address of this host"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        # as waitress does: a restart may rebind while the last run's connections are in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                f"cannot listen on {where}: address already in use; set web.port (WAYPOST_WEB__PORT) to a free port"
            ) from None
        raise ListenError(
            f"cannot listen on {where}: {(exc.strerror or str(exc)).lower()}; check web.host "
            "(WAYPOST_WEB__HOST) and web.port (WAYPOST_WEB__PORT)"
        ) from None
    return sock


class WebServer:
    """waitress in a thread, stoppable from any thread (the loop closes its own sockets)."""

    def __init__(self, app, host: str, port: int, threads: int = 4, sock: socket.socket | None = None):
        where = {"sockets": [sock]} if sock is not None else {"host": host, "port": port}
        # channel_request_lookahead: waitress keeps reading the socket while a view runs, so a live
        # stream sees its browser leave (environ["waitress.client_disconnected"]) and frees its thread
        self.server = create_server(app, threads=threads, ident="waypost", channel_request_lookahead=4, **where)
        self.thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._stopping = threading.Event()

    def _run(self) -> None:
        try:
            self.server.run()
        except OSError:
            # stop() closes every socket from inside the loop; the same loop pass may then poll
            # one it has just closed (EBADF). That is the end we asked for, not a fault.
            if not self._stopping.is_set():
                raise

    @property
    def port(self) -> int:
        return self.server.effective_port

    def start(self) -> WebServer:
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 5) -> None:
        def close_all():
            self.server.task_dispatcher.shutdown(timeout=timeout_s)
            wasyncore.close_all(self.server._map)

        if self._stopping.is_set():  # stopped already: its sockets (the trigger's too) are closed
            self.thread.join(timeout=timeout_s)
            return
        self._stopping.set()
        try:
            self.server.trigger.pull_trigger(close_all)
        except OSError:
            # the loop ended on its own and closed the trigger's pipe: nothing is left to close
            if self.thread.is_alive():
                raise
        self.thread.join(timeout=timeout_s)
