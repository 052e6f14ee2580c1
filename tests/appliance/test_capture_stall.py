"""A camera that stops delivering without an error (issue 19): the real Capture and the real
service, fed by a folder replay source that can be made to hang in read() as libcamera does."""

from __future__ import annotations

import json
import logging
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.bootstrap import bootstrap
from appliance.capture import Capture
from appliance.capture.folder import FolderSource
from appliance.service import serve
from tests.appliance.test_cli import free_port
from tests.conftest import make_settings

STALL_TIMEOUT_S = 0.5
MARGIN_S = 1.5


class StallingFolderSource(FolderSource):
    """The folder source whose read() blocks while `stalled` is set, as a hung capture_request() does."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.stalled = threading.Event()
        self.resumed = threading.Event()

    def stall(self) -> None:
        self.resumed.clear()
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()
        self.resumed.set()

    def read(self):
        if self.stalled.is_set():
            self.resumed.wait()
        return super().read()


@pytest.fixture
def frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"f{i}.jpg"), np.full((120, 160, 3), 40 * i, np.uint8))
    return folder


def wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not reached within {timeout} s")


def stall_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "stalled since" in r.getMessage()]


def test_a_stall_is_reported_once_per_episode_reconnected_and_recovers(tmp_path, frames, caplog):
    caplog.set_level(logging.DEBUG, logger="waypost.capture")
    settings = make_settings(
        tmp_path / "data", capture__type="folder", capture__source=frames, capture__stall_timeout_s=STALL_TIMEOUT_S
    ).capture
    source = StallingFolderSource(settings)
    capture = Capture(settings, source=source, backoff_initial_s=0.1).start()
    try:
        wait_for(lambda: capture.status()["frames_delivered"] >= 3, 5)
        assert capture.status()["stalled_since"] is None

        source.stall()
        stalled_at = time.monotonic()
        status = wait_for(lambda: (s := capture.status())["stalled_since"] and s, STALL_TIMEOUT_S + MARGIN_S)
        assert time.monotonic() - stalled_at < STALL_TIMEOUT_S + MARGIN_S
        assert status["state"] == "stalled"
        assert "no frame for 0.5 s" in status["last_error"]
        # The source is closed and reopened while it stays hung, and the log says so once.
        wait_for(lambda: capture.status()["reconnects"] >= 3, 10)
        assert len(stall_lines(caplog)) == 1
        assert capture.stalled_for() is not None

        before = capture.status()["frames_delivered"]
        source.resume()
        wait_for(lambda: capture.status()["frames_delivered"] > before + 2, 10)
        status = capture.status()
        assert status["state"] == "ok" and status["stalled_since"] is None
        assert capture.stalled_for() is None
        assert any("frames again after a stall" in r.getMessage() for r in caplog.records)

        # A second episode is a second log line.
        source.stall()
        wait_for(lambda: capture.status()["stalled_since"], STALL_TIMEOUT_S + MARGIN_S)
        assert len(stall_lines(caplog)) == 2
    finally:
        source.resume()
        capture.stop()


class NotifySocket:
    """The end systemd holds for a Type=notify service: a datagram socket named by NOTIFY_SOCKET."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="wp-notify-")  # short: a socket path has at most 107 bytes
        self.path = str(Path(self.dir) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def messages(self, seconds: float) -> list[str]:
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return got

    def first(self, message: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if self.sock.recv(4096).decode() == message:
                    return
            except TimeoutError:
                break
        raise AssertionError(f"{message} did not arrive within {seconds} s")

    def close(self):
        self.sock.close()
        Path(self.path).unlink(missing_ok=True)
        Path(self.dir).rmdir()


def health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def test_service_reports_ready_feeds_the_watchdog_and_stops_when_the_camera_stays_stalled(
    tmp_path, frames, monkeypatch
):
    settings = make_settings(
        tmp_path / "data",
        web__port=free_port(),
        capture__type="folder",
        capture__source=frames,
        capture__stall_timeout_s=STALL_TIMEOUT_S,
        capture__stall_restart_s=1.0,
    )
    bootstrap(settings, create_admin=False)
    notify = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", "300000")  # a ping every 0.15 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    source = StallingFolderSource(settings.capture)
    stop = threading.Event()
    runner = threading.Thread(target=serve, args=(settings,), kwargs={"stop": stop, "source": source}, daemon=True)
    runner.start()
    port = settings.web.port
    try:
        notify.first("READY=1", 60)  # the recognizer loads first
        assert notify.messages(1.0).count("WATCHDOG=1") >= 3
        wait_for(lambda: health(port)["camera"]["frames_delivered"] > 0, 10)
        assert health(port)["status"] == "ok", health(port)["problems"]

        source.stall()
        answer = wait_for(lambda: (h := health(port))["status"] == "degraded" and h, STALL_TIMEOUT_S + MARGIN_S)
        (problem,) = [p for p in answer["problems"] if p.startswith("camera")]
        assert "folder:" in problem and "stalled since " + answer["camera"]["stalled_since"] in problem
        # Reconnecting is the capture's job for stall_restart_s; after that the pings stop.
        time.sleep(1.0 + 0.5)
        notify.messages(0.3)  # pings sent before the bound was passed
        assert "WATCHDOG=1" not in notify.messages(1.0)

        source.resume()
        wait_for(lambda: health(port)["status"] == "ok", 10)
        assert "WATCHDOG=1" in notify.messages(1.0)
    finally:
        source.resume()
        stop.set()
        runner.join(30)
        notify.close()
    assert not runner.is_alive()
