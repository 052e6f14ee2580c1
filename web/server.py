"""The HTTP server: waitress in a thread, on a port bound before anything is recorded. The post
(`waypost run`) and headquarters (`waypost hq serve`) both serve through it."""

from __future__ import annotations

import errno
import io
import socket
import threading

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask, WSGITask
from waitress.utilities import RequestEntityTooLarge

# The WSGI environ key of a request whose body waitress refused for its size (max_request_body_size),
# before reading it: the application gets the request without its body, so that it can answer in
# its own terms (JSON for the sync API) and keep a record; its value is the limit.
BODY_TOO_LARGE = "waypost.body_too_large"


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


class _BodyTooLarge(WSGITask):
    """A request whose body waitress refused for its size, handed to the application without it."""

    def get_environment(self):
        environ = super().get_environment()
        environ[BODY_TOO_LARGE] = self.channel.server.adj.max_request_body_size
        environ["wsgi.input"] = io.BytesIO()
        return environ

    def execute(self):
        self.set_close_on_finish()  # the rest of the body is never read: the connection ends with the answer
        super().execute()


class _Channel(HTTPChannel):
    @staticmethod
    def error_task_class(channel, request):
        if isinstance(request.error, RequestEntityTooLarge):
            return _BodyTooLarge(channel, request)
        return ErrorTask(channel, request)


def proxy_settings(app) -> dict:
    """waitress's settings for the reverse proxy on this host that web.trusted_proxy names (nginx, from
    127.0.0.1). waitress 3 removes X-Forwarded-* headers from any peer it does not trust before the
    application sees them, so without these the app's ProxyFix never had them: every client behind
    the proxy was the proxy to the access log and to the sign-in throttle (one address failing too
    often then shut everyone out). Trusted from 127.0.0.1 only: a client reaching waitress directly
    cannot name another address."""
    settings = getattr(app, "config", {}).get("WAYPOST")
    if settings is None or not settings.web.trusted_proxy:
        return {}
    return {
        "trusted_proxy": "127.0.0.1",
        "trusted_proxy_count": 1,
        "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
    }


class WebServer:
    """waitress in a thread, stoppable from any thread (the loop closes its own sockets).

    With `max_request_body_size`, a larger body is refused before it is read and the request goes
    to the application marked BODY_TOO_LARGE (the application must answer such a request without
    reading a body), instead of getting waitress's plain-text 413."""

    def __init__(
        self,
        app,
        host: str,
        port: int,
        threads: int = 4,
        sock: socket.socket | None = None,
        max_request_body_size: int | None = None,
    ):
        where: dict[str, object] = {"sockets": [sock]} if sock is not None else {"host": host, "port": port}
        if max_request_body_size is not None:
            where["max_request_body_size"] = max_request_body_size
        # channel_request_lookahead: waitress keeps reading the socket while a view runs, so a live
        # stream sees its browser leave (environ["waitress.client_disconnected"]) and frees its thread
        self.server = create_server(
            app, threads=threads, ident="waypost", channel_request_lookahead=4, **where, **proxy_settings(app)
        )
        if max_request_body_size is not None:
            self.server.channel_class = _Channel
        self.thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._stopping = threading.Event()

    def serve(self) -> None:
        """Serve in this thread until interrupted (KeyboardInterrupt, SIGTERM's handler)."""
        self.server.run()

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
