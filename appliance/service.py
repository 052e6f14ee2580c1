"""Start and stop the post: one linear sequence, one stop event.

`serve()` is `waypost run` after bootstrap (appliance/bootstrap.py): capture -> pipeline ->
store and alerts, the upkeep loop (stale hotlists, daily retention), the sync pusher and the web UI,
started in that order and stopped in the reverse.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import tempfile
import threading
from datetime import datetime
from pathlib import Path

from appliance import audit, db, hotlist, retention, store
from appliance.alerts import Notifier
from appliance.audit import system_actor
from appliance.capture import Capture, FrameSource
from appliance.capture.demo import demo_hotlist_csv
from appliance.config import Settings
from appliance.events import EventBus
from appliance.memory import limit_malloc_arenas, return_free_memory
from appliance.models import utcnow
from appliance.pipeline import Pipeline
from appliance.store import EvidenceStore
from recognizer import Recognizer
from sync.post import Pusher
from web import create_app
from web.server import WebServer, listen

log = logging.getLogger("waypost")


class PostService:
    """The running post: capture -> pipeline -> store/alerts, the web UI, periodic upkeep.
    Started in one order, stopped in the reverse, all on one stop event."""

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event | None = None,
        with_capture: bool = True,
        sock: socket.socket | None = None,
        source: FrameSource | None = None,
    ):
        self.settings = settings
        self._source = source  # a replay source in place of the configured one (tests), else None
        self.stop_event = stop or threading.Event()
        self.bus = EventBus()
        self.with_capture = with_capture
        self.capture: Capture | None = None
        self.pipeline: Pipeline | None = None
        self.recognizer_error: str | None = None
        self.web: WebServer | None = None
        self._threads: list[threading.Thread] = []
        self.pusher: Pusher | None = None
        self.started_at: datetime | None = None
        self._sock = sock  # the web port, bound by the caller (`waypost run`) or by start()
        self._start_recorded = False

    # -- start / stop --
    def start(self) -> PostService:
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
        self.web = WebServer(
            create_app(self.settings, service=self),
            self.settings.web.host,
            self.settings.web.port,
            self.settings.web.threads,
            sock=sock,
        ).start()
        with db.connection():
            with db.write():
                audit.record(
                    "system.start",
                    system_actor(self.settings),
                    details={"port": self.web.port, "capture": self.settings.capture.type},
                )
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
        assert self.started_at is not None  # the stop is recorded only after start() recorded the start
        uptime_s = round((utcnow() - self.started_at).total_seconds())
        try:
            with db.connection(), db.write():
                audit.record(
                    "system.stop",
                    system_actor(self.settings),
                    details={"uptime_s": uptime_s, "started_at": self.started_at.isoformat() + "Z"},
                )
        except Exception:  # a full disk must not keep the post from stopping; the log says so
            log.exception("could not record system.stop")

    def _spawn(self, name, target) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_capture(self) -> None:
        s = self.settings
        if s.capture.type == "demo":
            self._load_demo_hotlist()
        try:
            recognizer = Recognizer(
                s.recognizer.models_dir,
                threads=s.recognizer.threads,
                runtime=None if s.recognizer.runtime == "auto" else s.recognizer.runtime,
                second_look=s.recognizer.second_look,
                ocr_views=s.recognizer.ocr_views,
            )
        except Exception as exc:  # a missing or damaged model must not take the UI down with it
            self.recognizer_error = f"{type(exc).__name__}: {exc}"
            log.error("recognizer not loaded, capture not started: %s", self.recognizer_error)
            return
        self.pipeline = Pipeline(s, recognizer, EvidenceStore(s), bus=self.bus, notifier=Notifier(s))
        self.capture = Capture(s, source=self._source).start()
        self._spawn("pipeline", self._run_pipeline)

    def _start_sync(self) -> None:
        """Push to headquarters in the background (sync/post.py: backoff, marks only on ack)."""
        self.pusher = Pusher(self.settings, self.stop_event)
        self._spawn("sync", self.pusher.run)

    def _load_demo_hotlist(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "demo-hotlist.csv"
            demo_hotlist_csv(path)
            with db.connection():
                result = hotlist.import_csv(self.settings, path, "DEMO", system_actor(self.settings))
        log.info("demo hotlist loaded: %d entries", result.entries)

    def _run_pipeline(self) -> None:
        assert self.capture is not None and self.pipeline is not None  # started by _start_capture() after both
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
            return_free_memory()
            self.stop_event.wait(60)

    def _daily_retention(self) -> None:
        """The daily purge at retention.run_at (post time zone); see appliance/retention.py.
        It runs in batches, so the web UI and the pipeline go on while it works."""
        try:
            with db.connection():
                if retention.due(self.settings):
                    result = retention.run(self.settings, system_actor(self.settings), stop=self.stop_event)
                    log.info("retention: %s", "; ".join(result.lines()))
        except Exception:  # tomorrow's run records what this one purged (retention_run) and goes on
            log.exception("retention run failed")

    # -- status --
    def watchdog_problem(self) -> str | None:
        """Why the systemd watchdog must not be fed now, or None while the post works: the web
        server's thread runs and, when capture is on, its threads run and a stall has not lasted
        capture.stall_restart_s (shorter ones the capture reconnects by itself)."""
        if self.web is None or not self.web.thread.is_alive():
            return "the web server's thread has ended"
        if self.capture is None:
            return None  # capture off, or not started (recognizer or camera error): /health says why
        if self.capture.status()["state"] == "ended":
            return None  # a file source that ran out: nothing a restart would change
        if not self.capture.alive:
            return "the capture thread has ended"
        if not any(t.name == "pipeline" and t.is_alive() for t in self._threads):
            return "the pipeline thread has ended"
        stalled_s = self.capture.stalled_for()
        if stalled_s is not None and stalled_s > self.settings.capture.stall_restart_s:
            return f"the camera has stalled for {stalled_s:.0f} s (capture.stall_restart_s)"
        return None

    def watch(self) -> None:
        """The main loop until the stop event: tell systemd the post is ready, then feed its
        watchdog (WATCHDOG_USEC, set by the unit's WatchdogSec) at half its period while
        watchdog_problem() finds nothing; when it finds something the pings stop and systemd
        restarts the service."""
        notify("READY=1")
        period_s = watchdog_period_s()
        withheld: str | None = None
        while not self.stop_event.wait(period_s or 60):
            if period_s is None:
                continue
            problem = self.watchdog_problem()
            if problem is None:
                notify("WATCHDOG=1")
                if withheld:
                    log.warning("watchdog pings resumed (%s no longer)", withheld)
            elif problem != withheld:
                log.error("watchdog pings withheld, systemd will restart the service: %s", problem)
            withheld = problem
        notify("STOPPING=1")

    def health(self) -> dict:
        s = self.settings
        disk = store.capacity(s)
        lists = hotlist.status(s)
        capture = self.capture.status() if self.capture else {"state": "off" if not self.with_capture else "error"}
        problems = []
        if self.recognizer_error:
            problems.append(f"recognizer: {self.recognizer_error}")
        if capture.get("stalled_since"):
            problems.append(
                f"camera {capture.get('source')}: stalled since {capture['stalled_since']} "
                f"(no frame for {capture.get('stall_timeout_s')} s); reconnecting"
            )
        elif capture.get("state") in ("reconnecting", "error"):
            problems.append(f"camera: {capture.get('last_error')}")
        if any(h["stale"] for h in lists):
            problems.append("stale hotlists: " + ", ".join(h["name"] for h in lists if h["stale"]))
        if disk["free_mb"] < s.storage.min_free_mb:
            problems.append("low disk space")
        if disk["fills_before_retention"]:
            problems.append(
                f"disk full in {disk['full_in_days']:g} days at the current rate, before retention "
                f"({disk['retention_days']} days) frees space"
            )
        return {
            "status": "ok" if not problems else "degraded",
            "problems": problems,
            "post": s.post.id,
            "camera": capture,
            "recognizer": {"loaded": self.pipeline is not None, "error": self.recognizer_error},
            "pipeline": self.pipeline.status() if self.pipeline else None,
            "disk": disk,
            "hotlists": lists,
            "live_subscribers": self.bus.subscribers,
        }


def notify(message: str) -> bool:
    """Send one sd_notify message to systemd when it is listening ($NOTIFY_SOCKET, Type=notify).
    The protocol is one datagram on a Unix socket; written here rather than taken from PyPI's
    `sdnotify`, whose last release is from 2017."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify %s to %s failed: %s", message, address, exc)
        return False
    return True


def watchdog_period_s() -> float | None:
    """How often to feed systemd's watchdog: half of WATCHDOG_USEC, when it is set for this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


def serve(
    settings: Settings,
    stop: threading.Event | None = None,
    sock: socket.socket | None = None,
    source: FrameSource | None = None,
) -> None:
    """Run the post until SIGTERM/SIGINT or `stop` is set. `sock`: the web port, already bound
    (`web.server.listen()`); `source`: a replay source in place of the configured one (tests)."""
    limit_malloc_arenas()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    service = PostService(settings, stop, sock=sock, source=source).start()
    service.watch()
    log.info("stopping")
    service.stop()
