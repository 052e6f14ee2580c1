"""Frame sources and the capture worker.

A source is chosen by `capture.type` in the configuration; each lives in its own module here
(`demo`, `video`, `folder`, `stream`, `picamera2`) and is imported only when it is used, so a
laptop never imports camera libraries:

    source = create_source(settings.capture)      # a FrameSource, not yet open
    capture = Capture(settings.capture).start()   # runs the source in a thread
    frame = capture.get(timeout=1.0)              # a Frame, or None (nothing yet, or ended)
    capture.status()                              # dict for /health
    capture.stop()

A source's `read()` returns a Frame, or None when it has ended (a file with loop=false). It raises
`CorruptFrame` for one unreadable image or frame (the capture logs it and reads on) and
`SourceError` when the source is lost (the capture closes it and reopens it with capped backoff).

A source that stops delivering without raising (a libcamera stall blocks `capture_request()`
forever, a stream or a disk that hangs) is a stall: the capture runs each opening of the source in
a reader thread and watches how long the current open() or read() has been waiting. A wait longer
than `capture.stall_timeout_s` marks the camera stalled (`stalled_since` in the status, /health
degraded), is logged once per episode, and the source is closed (which releases a blocked read)
and reopened with capped backoff; the first frame after it logs the recovery.
"""

from __future__ import annotations

import collections
import importlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from appliance.models import utcnow

log = logging.getLogger("waypost.capture")

Box = tuple[int, int, int, int]


@dataclass(kw_only=True, eq=False)
class Frame:
    image: np.ndarray  # HxWx3 uint8 RGB: what the detector sees
    hires: np.ndarray | None = None  # a sharper evidence frame (picamera2 main stream), else None
    captured_at: datetime  # naive UTC: what is stored
    mono: float | None = None  # time.monotonic() when the frame was grabbed (sources stamping
    # the wall clock); passes time out by it, so an NTP step of the
    # wall clock neither holds a pass open nor splits it. None for
    # frames made elsewhere: then captured_at times them.
    index: int  # increases by one per frame the source produces
    source: str  # the source's name, e.g. "video:/srv/clip.mp4"
    truth: list[tuple[str, Box]] = field(default_factory=list)  # demo only: (plate, (x, y, w, h) in image px)

    @property
    def evidence(self) -> np.ndarray:
        """The frame to keep as evidence: the high-resolution one when there is one."""
        return self.hires if self.hires is not None else self.image

    @property
    def evidence_scale(self) -> float:
        """Multiply `image` coordinates by this to get `evidence` coordinates."""
        return self.evidence.shape[1] / self.image.shape[1]


class SourceError(Exception):
    """The source cannot deliver frames (missing file, lost camera, dropped stream)."""


class CorruptFrame(SourceError):
    """One image or frame could not be read; the source can go on with the next one."""


class SourceStall(SourceError):
    """The source's open() or read() waited longer than capture.stall_timeout_s."""

    def __init__(self, message: str, since: datetime, since_mono: float):
        super().__init__(message)
        self.since = since  # naive UTC: when the wait that stalled began
        self.since_mono = since_mono


class FrameSource:
    """Base of the sources. Subclasses set `type` and `live`, and implement open/read/close.

    `live` sources (cameras, streams) produce frames in real time and are read as fast as they
    deliver (the capture keeps one per 1/fps); the others (files, demo) are read once per 1/fps.
    """

    type: str = ""
    live: bool = False

    def __init__(self, settings):
        self.settings = settings
        self.index = -1  # of the last frame produced; survives close/open so it keeps increasing

    @property
    def name(self) -> str:
        return f"{self.type}:{self.settings.source}" if self.settings.source else self.type

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _next_index(self) -> int:
        self.index += 1
        return self.index

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


SOURCES: dict[str, type[FrameSource]] = {}


def register(cls: type[FrameSource]) -> type[FrameSource]:
    """Class decorator: make a source available under its `type`."""
    SOURCES[cls.type] = cls
    return cls


def create_source(settings) -> FrameSource:
    """The source named by `settings.type` (CaptureSettings, or the whole Settings), not yet open."""
    settings = getattr(settings, "capture", settings)
    if settings.type not in SOURCES:
        try:
            importlib.import_module(f"{__name__}.{settings.type}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{settings.type}":
                raise
    try:
        cls = SOURCES[settings.type]
    except KeyError:
        raise SourceError(
            f"unknown capture type {settings.type!r} (known: demo, picamera2, video, folder, stream)"
        ) from None
    return cls(settings)


def backoff_delays(initial_s: float, max_s: float, rng: random.Random | None = None) -> Iterator[float]:
    """Waits between reconnection attempts: initial_s doubling up to max_s, each shortened by up
    to 20% at random so posts that lost a shared stream do not retry in step. Never above max_s."""
    rng = rng or random.Random()
    delay = initial_s
    while True:
        yield min(max_s, delay) * rng.uniform(0.8, 1.0)
        delay = min(max_s, delay * 2)


class _LatestQueue:
    """A bounded queue that drops its OLDEST item when full: a slow consumer sees recent frames
    and latency never builds up."""

    def __init__(self, size: int):
        self._items: collections.deque[Frame] = collections.deque()
        self._size = size
        self._cond = threading.Condition()
        self.closed = False

    def put(self, item: Frame, block: bool = False) -> bool:
        """Add an item; returns True when an older item was dropped to make room. With block=True
        it waits for room instead (nothing is dropped) until the queue is closed."""
        with self._cond:
            while block and len(self._items) >= self._size and not self.closed:
                self._cond.wait()
            dropped = len(self._items) >= self._size
            if dropped:
                self._items.popleft()
            self._items.append(item)
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None) -> Frame | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not self.closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            if not self._items:
                return None
            self._cond.notify_all()  # a blocked put may go on
            return self._items.popleft()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __len__(self):
        return len(self._items)


class Capture:
    """Runs one source in a thread and hands its frames over through a drop-oldest queue.

    Pacing: file and demo sources are read once per 1/fps; live sources are read continuously
    (so their buffers never go stale) and every frame that comes before its turn is let go.
    `paced=False` hands over every frame of a file or demo source as fast as the consumer takes
    them, dropping none (benchmarks, tests)."""

    def __init__(
        self,
        settings,
        *,
        source: FrameSource | None = None,
        queue_size: int = 2,
        paced: bool = True,
        backoff_initial_s: float = 1.0,
        stop_timeout_s: float = 5.0,
    ):
        self.settings = getattr(settings, "capture", settings)
        self.source = source or create_source(self.settings)
        self.paced = paced
        self.backoff_initial_s = backoff_initial_s
        self.stop_timeout_s = stop_timeout_s
        self._queue = _LatestQueue(queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._delivered_at: collections.deque = collections.deque(maxlen=21)  # for the measured fps
        # Each opening of the source is read by its own reader thread, numbered; a reader left
        # behind by a stall finds its number outdated when its wait ends and delivers nothing.
        self._generation = 0
        self._waiting: tuple[int, float] | None = None  # (generation, monotonic start) of a source call
        self._stall_mono: float | None = None  # when the current stall episode's wait began
        self._status: dict[str, Any] = {
            "state": "starting",
            "type": self.source.type,
            "source": self.source.name,
            "frames_delivered": 0,
            "frames_dropped": 0,
            "errors": 0,
            "reconnects": 0,
            "last_error": None,
            "last_error_at": None,
            "last_frame_at": None,
            "retry_in_s": None,
            "stalled_since": None,
            "stall_timeout_s": self.settings.stall_timeout_s,
        }

    # --- consumer side ---------------------------------------------------------------------
    def start(self) -> Capture:
        if self._thread is not None:
            raise RuntimeError("capture already started")
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.source.type}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the worker and close the source. Returns within stop_timeout_s even when a read
        hangs (e.g. a stream stalled inside OpenCV); the thread is a daemon then and is left behind."""
        self._stop.set()
        self._queue.close()
        if self._thread is not None:
            self._thread.join(self.stop_timeout_s)
            if self._thread.is_alive():
                log.warning(
                    "capture %s did not stop within %.0f s (a read is blocked); leaving it",
                    self.source.name,
                    self.stop_timeout_s,
                )
        with self._lock:
            if self._status["state"] != "ended":
                self._status["state"] = "stopped"
            self._status["retry_in_s"] = None

    def get(self, timeout: float | None = None) -> Frame | None:
        """The oldest frame waiting, or None after `timeout` or once the capture has ended or stopped."""
        return self._queue.get(timeout)

    @property
    def finished(self) -> bool:
        """True when the source has ended or the capture stopped, and every frame was taken."""
        return self._queue.closed and not len(self._queue)

    def stalled_for(self) -> float | None:
        """Seconds since the current stall episode began, or None when the source is not stalled."""
        since = self._stall_mono
        return None if since is None else time.monotonic() - since

    @property
    def alive(self) -> bool:
        """The capture's supervising thread runs (false before start, after the source ended or a stop)."""
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> dict:
        with self._lock:
            out = dict(self._status)
            times = list(self._delivered_at)
        out["queue_depth"] = len(self._queue)
        recent = len(times) > 1 and time.monotonic() - times[-1] < 5.0
        out["fps"] = round((len(times) - 1) / (times[-1] - times[0]), 1) if recent and times[-1] > times[0] else 0.0
        for key in ("last_error_at", "last_frame_at", "stalled_since"):
            if out[key] is not None:
                out[key] = out[key].isoformat() + "Z"
        return out

    # --- worker side -----------------------------------------------------------------------
    def _set(self, **changes) -> None:
        with self._lock:
            self._status.update(changes)

    def _error(self, message: str, *, exc_info=False) -> None:
        log.error("capture %s: %s", self.source.name, message, exc_info=exc_info)
        with self._lock:
            self._status["errors"] += 1
            self._status["last_error"] = message
            self._status["last_error_at"] = utcnow()

    def _deliver(self, frame: Frame) -> None:
        dropped = self._queue.put(frame, block=not (self.paced or self.source.live))
        self._delivered_since_open = True
        if self._stall_mono is not None:
            log.warning(
                "capture %s: frames again after a stall of %.1f s",
                self.source.name,
                time.monotonic() - self._stall_mono,
            )
            self._stall_mono = None
            self._set(stalled_since=None)
        with self._lock:
            self._status["frames_delivered"] += 1
            self._status["frames_dropped"] += int(dropped)
            self._status["last_frame_at"] = frame.captured_at
            self._delivered_at.append(time.monotonic())
            if self._status["state"] != "ok":
                self._status["state"] = "ok"
                self._status["retry_in_s"] = None

    def _run(self) -> None:
        delays = None
        try:
            while not self._stop.is_set():
                self._delivered_since_open = False
                try:
                    ended = self._watched()
                except Exception as exc:  # noqa: BLE001 - lost camera/stream, unreadable file, stall: retried
                    self._close_source()
                    if delays is None or self._delivered_since_open:  # a source that worked again starts at 1 s
                        delays = backoff_delays(self.backoff_initial_s, self.settings.reconnect_max_s)
                    if isinstance(exc, SourceStall):
                        self._wait_stalled(exc, next(delays))
                    else:
                        self._wait_retry(exc, next(delays))
                    continue
                self._close_source()
                if ended:
                    log.info("capture %s: source ended", self.source.name)
                    self._set(state="ended", retry_in_s=None)
                    return
        finally:
            self._queue.close()

    def _watched(self) -> bool:
        """Open the source and pump it in a reader thread while this one watches its waits. True
        when the source ended, False when the capture stopped; raises what the reader raised, or
        SourceStall when one open() or read() waited longer than stall_timeout_s."""
        self._generation += 1
        generation = self._generation
        outcome: dict[str, Any] = {}

        def reader() -> None:
            try:
                self._waiting = (generation, time.monotonic())
                self.source.open()
                if generation == self._generation:
                    self._waiting = None
                outcome["ended"] = self._pump(generation)
            except BaseException as exc:  # noqa: BLE001 - handed to the supervising thread, which retries
                outcome["error"] = exc

        thread = threading.Thread(target=reader, name=f"capture-read-{self.source.type}", daemon=True)
        thread.start()
        timeout = self.settings.stall_timeout_s
        while True:
            thread.join(min(0.25, timeout / 4))
            if not thread.is_alive():
                break
            if self._stop.is_set():
                thread.join(self.stop_timeout_s)
                return False
            waiting = self._waiting
            if waiting is not None and waiting[0] == generation and time.monotonic() - waiting[1] > timeout:
                self._generation += 1  # the reader, once its wait ends, delivers nothing more
                since_mono = waiting[1]
                since = utcnow() - timedelta(seconds=time.monotonic() - since_mono)
                raise SourceStall(f"no frame for {timeout:g} s (capture.stall_timeout_s)", since, since_mono)
        if "error" in outcome:
            raise outcome["error"]
        return bool(outcome.get("ended"))

    def _wait_stalled(self, exc: SourceStall, delay: float) -> None:
        """Report a stall once per episode (an episode ends with the next frame delivered), then wait."""
        if self._stall_mono is None:
            self._stall_mono = exc.since_mono
            log.error(
                "capture %s: stalled since %s: %s; closing and reopening it until frames come again",
                self.source.name,
                exc.since.isoformat(timespec="seconds") + "Z",
                exc,
            )
            with self._lock:
                self._status["errors"] += 1
                self._status["last_error"] = f"stalled: {exc}"
                self._status["last_error_at"] = utcnow()
                self._status["stalled_since"] = exc.since
        else:
            log.debug("capture %s: still stalled; reopening in %.1f s", self.source.name, delay)
        with self._lock:
            self._status["state"] = "stalled"
            self._status["reconnects"] += 1
            self._status["retry_in_s"] = round(delay, 3)
        self._stop.wait(delay)

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:  # noqa: BLE001 - closing a broken source must not stop the retries
            log.exception("capture %s: error while closing the source", self.source.name)

    def _wait_retry(self, exc: Exception, delay: float) -> None:
        message = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
        self._error(f"{message}; retrying in {delay:.1f} s", exc_info=not isinstance(exc, SourceError))
        with self._lock:
            self._status["state"] = "reconnecting"
            self._status["reconnects"] += 1
            self._status["retry_in_s"] = round(delay, 3)
        self._stop.wait(delay)

    def _pump(self, generation: int) -> bool:
        """Read until the source ends (True), the capture stops or a stall replaced this reader
        (False), or an error is raised."""
        period = 1.0 / self.settings.fps
        due = time.monotonic()
        while not self._stop.is_set():
            if self.paced and not self.source.live:
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return False
            self._waiting = (generation, time.monotonic())
            try:
                frame = self.source.read()
            except CorruptFrame as exc:
                if generation != self._generation:
                    return False
                self._waiting = None
                self._error(str(exc))
                due = max(due + period, time.monotonic() - period)
                continue
            if generation != self._generation:
                return False  # the supervisor gave this reader up as stalled and reopened the source
            self._waiting = None
            if frame is None:
                return True
            now = time.monotonic()
            if self.paced and self.source.live and now < due - 0.25 * period:
                continue  # a live source runs faster than fps: keep reading, deliver on time
            # Falling behind by more than a period (slow read, spawn of a demo sprite) does not
            # make the next frames come in a burst.
            due = max(due + period, now - period)
            self._deliver(frame)
        return False
