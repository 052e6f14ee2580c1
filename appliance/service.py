"""Start and stop the post: one linear sequence, one stop event.

For now the post is its database, evidence store and web UI; capture and sync workers plug into
`run()` in the same way (issues 4 and 7).
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import secrets
import signal
import socket
import threading
from dataclasses import dataclass

from appliance import audit, db, users
from appliance.config import Settings
from appliance.models import Camera, Post, User
from appliance.store import EvidenceStore

log = logging.getLogger("waypost")

SYSTEM = "system"


def system_actor(settings: Settings) -> audit.Actor:
    return audit.Actor(SYSTEM, settings.post.agency, "local")


@dataclass
class Bootstrap:
    migrations: list[str]
    recovered: dict
    admin_password: str | None = None   # set only when a first administrator was just created


def secret_key(settings: Settings) -> bytes:
    """The session signing key, made once with mode 0600 and kept in the data directory."""
    path = settings.data_dir / settings.web.secret_key_file
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def ensure_identity(settings: Settings) -> None:
    with db.write():
        post, created = Post.get_or_create(id=settings.post.id,
                                           defaults={"name": settings.post.name, "agency": settings.post.agency})
        if not created and (post.name, post.agency) != (settings.post.name, settings.post.agency):
            post.name, post.agency = settings.post.name, settings.post.agency
            post.save()
        Camera.get_or_create(id=settings.post.camera_id,
                             defaults={"post": post, "name": settings.post.camera_name})


def ensure_admin(settings: Settings, environ=os.environ) -> str | None:
    """Create the first administrator when there is none. Returns the password if it was generated.
    The password must be changed at the first sign-in either way: a generated one was printed on a
    console, and one given in WAYPOST_ADMIN_PASSWORD (the provisioning vault) is known to whoever
    provisioned the host."""
    if User.select().where(User.role == "admin").exists():
        return None
    given = environ.get("WAYPOST_ADMIN_PASSWORD")
    password = given or users.generate_password()
    try:
        users.add(system_actor(settings), username=environ.get("WAYPOST_ADMIN_USERNAME", "admin"),
                  display_name="ALPR administrator", organization=settings.post.agency, role="admin",
                  password=password, job_title="ALPR Administrator",
                  min_password_length=settings.web.min_password_length, must_change_password=True)
    except users.UserError as exc:
        raise users.UserError(f"cannot create the first administrator: {exc}"
                              + (" (from WAYPOST_ADMIN_PASSWORD)" if given else "")) from exc
    return None if given else password


def record_config(settings: Settings) -> list[str]:
    """Record the effective configuration when it differs from the last one recorded, so every
    configuration change (file or environment) is in the access log. Returns the changed keys."""
    import json

    from appliance.models import AccessRecord
    current = settings.model_dump(mode="json")
    last = (AccessRecord.select(AccessRecord.details).where(AccessRecord.action == "config.change")
            .order_by(AccessRecord.seq.desc()).first())
    previous = json.loads(last.details).get("config", {}) if last else {}

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    old, new = flat(previous), flat(current)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        with db.write():
            audit.record("config.change", system_actor(settings), query={"keys": changed},
                         details={"config": current, "changed": changed, "first": not previous})
    return changed


def bootstrap(settings: Settings, create_admin: bool = True) -> Bootstrap:
    """Everything `waypost init` and `waypost run` do before serving. Safe to repeat."""
    db.open_database(settings)
    done = db.migrate(settings)
    with db.connection():
        ensure_identity(settings)
        record_config(settings)
        recovered = EvidenceStore(settings).recover()
        password = ensure_admin(settings) if create_admin else None
    return Bootstrap(done, recovered, password)


class ListenError(OSError):
    """The web port cannot be had; the message says which and what to change."""


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on host:port now, before anything is announced or recorded, so a port
    already in use stops the start with one line instead of a traceback after the access log has
    been written to. waitress takes the socket over (WebServer(sock=...))."""
    where = f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                                             0, socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {where}: {exc.strerror}; set web.host (WAYPOST_WEB__HOST) "
                          "to an address of this host") from None
    sock = socket.socket(family, kind, proto)
    try:
        # as waitress does: a restart may rebind while the last run's connections are in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"cannot listen on {where}: address already in use; set web.port "
                              "(WAYPOST_WEB__PORT) to a free port") from None
        raise ListenError(f"cannot listen on {where}: {(exc.strerror or str(exc)).lower()}; check web.host "
                          "(WAYPOST_WEB__HOST) and web.port (WAYPOST_WEB__PORT)") from None
    return sock


class WebServer:
    """waitress in a thread, stoppable from any thread (the loop closes its own sockets)."""

    def __init__(self, app, host: str, port: int, threads: int = 4, sock: socket.socket | None = None):
        from waitress.server import create_server
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

    def start(self) -> "WebServer":
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 5) -> None:
        from waitress import wasyncore

        def close_all():
            self.server.task_dispatcher.shutdown(timeout=timeout_s)
            wasyncore.close_all(self.server._map)

        if self._stopping.is_set():      # stopped already: its sockets (the trigger's too) are closed
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


class PostService:
    """The running post: capture -> pipeline -> store/alerts, the web UI, periodic upkeep.
    Started in one order, stopped in the reverse, all on one stop event."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None, with_capture: bool = True,
                 sock: socket.socket | None = None):
        from appliance.events import EventBus
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self.bus = EventBus()
        self.with_capture = with_capture
        self.capture = None
        self.pipeline = None
        self.recognizer_error: str | None = None
        self.web: WebServer | None = None
        self._threads: list[threading.Thread] = []
        self.pusher = None
        self.started_at = None
        self._sock = sock           # the web port, bound by the caller (`waypost run`) or by start()
        self._start_recorded = False

    # -- start / stop --
    def start(self) -> "PostService":
        from appliance.models import utcnow
        # the port first: loading the demo hotlist below writes access records
        sock = self._sock or listen(self.settings.web.host, self.settings.web.port)
        self.started_at = utcnow()
        if self.with_capture:
            try:
                self._start_capture()
            except Exception as exc:  # the UI, the data and the log stay reachable without a camera
                self.recognizer_error = self.recognizer_error or f"capture not started: {type(exc).__name__}: {exc}"
                log.exception("capture not started")
        self._spawn("upkeep", self._upkeep)
        if self.settings.sync.enabled:
            self._start_sync()
        from web import create_app
        self.web = WebServer(create_app(self.settings, service=self), self.settings.web.host,
                             self.settings.web.port, self.settings.web.threads, sock=sock).start()
        with db.connection():
            with db.write():
                audit.record("system.start", system_actor(self.settings),
                             details={"port": self.web.port, "capture": self.settings.capture.type})
        self._start_recorded = True
        log.info("web UI on http://%s:%s", self.settings.web.host, self.web.port)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.web is not None:
            self.web.stop()
        if self.capture is not None:
            self.capture.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.pipeline is not None:
            with db.connection():
                self.pipeline.flush()
        if self._start_recorded:
            self._record_stop()
        log.info("stopped")

    def _record_stop(self) -> None:
        from appliance.models import utcnow
        uptime_s = round((utcnow() - self.started_at).total_seconds())
        try:
            with db.connection(), db.write():
                audit.record("system.stop", system_actor(self.settings),
                             details={"uptime_s": uptime_s, "started_at": self.started_at.isoformat() + "Z"})
        except Exception:       # a full disk must not keep the post from stopping; the log says so
            log.exception("could not record system.stop")

    def _spawn(self, name, target) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_capture(self) -> None:
        from appliance.alerts import Notifier
        from appliance.capture import Capture
        from appliance.pipeline import Pipeline
        from appliance.store import EvidenceStore
        from recognizer import Recognizer
        s = self.settings
        if s.capture.type == "demo":
            self._load_demo_hotlist()
        try:
            recognizer = Recognizer(s.recognizer.models_dir, threads=s.recognizer.threads,
                                    runtime=None if s.recognizer.runtime == "auto" else s.recognizer.runtime,
                                    second_look=s.recognizer.second_look, ocr_views=s.recognizer.ocr_views)
        except Exception as exc:  # a missing or damaged model must not take the UI down with it
            self.recognizer_error = f"{type(exc).__name__}: {exc}"
            log.error("recognizer not loaded, capture not started: %s", self.recognizer_error)
            return
        self.pipeline = Pipeline(s, recognizer, EvidenceStore(s), bus=self.bus, notifier=Notifier(s))
        self.capture = Capture(s).start()
        self._spawn("pipeline", self._run_pipeline)

    def _start_sync(self) -> None:
        """Push to headquarters in the background (sync/post.py: backoff, marks only on ack)."""
        from sync.post import Pusher
        self.pusher = Pusher(self.settings, self.stop_event)
        self._spawn("sync", self.pusher.run)

    def _load_demo_hotlist(self) -> None:
        import tempfile
        from pathlib import Path

        from appliance import hotlist
        from appliance.capture.demo import demo_hotlist_csv
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "demo-hotlist.csv"
            demo_hotlist_csv(path)
            with db.connection():
                result = hotlist.import_csv(self.settings, path, "DEMO", system_actor(self.settings))
        log.info("demo hotlist loaded: %d entries", result.entries)

    def _run_pipeline(self) -> None:
        with db.connection():
            while not self.stop_event.is_set():
                frame = self.capture.get(timeout=0.5)
                if frame is None:
                    if self.capture.finished:
                        self.pipeline.flush()
                        return
                    # a stalled source: passes it last showed still end (stored, alerts raised)
                    try:
                        self.pipeline.close_idle()
                    except Exception:
                        self.pipeline.stats.errors += 1
                        log.exception("pipeline failed closing idle passes; continuing")
                    continue
                try:
                    self.pipeline.process(frame)
                except Exception:
                    self.pipeline.stats.errors += 1
                    log.exception("pipeline failed on frame %s; continuing", frame.index)

    def _upkeep(self) -> None:
        from appliance import hotlist
        warned: list[str] = []
        while not self.stop_event.is_set():
            try:
                with db.connection():
                    stale = hotlist.record_stale(self.settings, system_actor(self.settings))
                if stale and stale != warned:
                    log.warning("stale hotlists produce no alerts: %s", ", ".join(stale))
                warned = stale
            except Exception:
                log.exception("upkeep failed")
            self._daily_retention()
            _return_free_memory()
            self.stop_event.wait(60)

    def _daily_retention(self) -> None:
        """The daily purge at retention.run_at (post time zone); see appliance/retention.py.
        It runs in batches, so the web UI and the pipeline go on while it works."""
        from appliance import retention
        try:
            with db.connection():
                if retention.due(self.settings):
                    result = retention.run(self.settings, system_actor(self.settings), stop=self.stop_event)
                    log.info("retention: %s", "; ".join(result.lines()))
        except Exception:    # tomorrow's run records what this one purged (retention_run) and goes on
            log.exception("retention run failed")

    # -- status --
    def health(self) -> dict:
        import shutil

        from appliance import hotlist
        s = self.settings
        disk = shutil.disk_usage(s.data_dir)
        lists = hotlist.status(s)
        capture = self.capture.status() if self.capture else {"state": "off" if not self.with_capture else "error"}
        problems = []
        if self.recognizer_error:
            problems.append(f"recognizer: {self.recognizer_error}")
        if capture.get("state") in ("reconnecting", "error"):
            problems.append(f"camera: {capture.get('last_error')}")
        if any(h["stale"] for h in lists):
            problems.append("stale hotlists: " + ", ".join(h["name"] for h in lists if h["stale"]))
        if disk.free < s.storage.min_free_mb * 1024 * 1024:
            problems.append("low disk space")
        return {
            "status": "ok" if not problems else "degraded",
            "problems": problems,
            "post": s.post.id,
            "camera": capture,
            "recognizer": {"loaded": self.pipeline is not None, "error": self.recognizer_error},
            "pipeline": self.pipeline.status() if self.pipeline else None,
            "disk": {"free_mb": disk.free // 2**20, "min_free_mb": s.storage.min_free_mb},
            "hotlists": lists,
            "live_subscribers": self.bus.subscribers,
        }


def _return_free_memory() -> None:
    """Hand memory freed by finished passes back to the system. Frames are megabytes each and
    glibc keeps freed blocks in its arenas, so a post's resident size otherwise creeps up towards
    its busiest minute. A no-op where the C library is not glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes
    import ctypes.util
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _malloc_trim():
    return getattr(_libc(), "malloc_trim", None)


M_ARENA_MAX = -8        # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap this process's glibc malloc arenas, before its threads start. glibc gives each thread
    that allocates an arena of its own (up to eight per core) and keeps what was freed there: the
    web server's four threads each came to hold a sync batch's working set, some 20 MB more for a
    post catching up by pull. Two arenas still spare the threads most of the contention. A no-op
    where the C library is not glibc."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, arenas)


def serve(settings: Settings, stop: threading.Event | None = None, sock: socket.socket | None = None) -> None:
    """Run the post until SIGTERM/SIGINT or `stop` is set. `sock`: the web port, already bound
    (`listen()`)."""
    limit_malloc_arenas()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    service = PostService(settings, stop, sock=sock).start()
    stop.wait()
    log.info("stopping")
    service.stop()
