"""A network camera stream (RTSP, HTTP MJPEG, ...) through OpenCV's FFmpeg backend.

A dropped stream raises SourceError; the Capture reopens it with capped backoff. The source is
`live`: it is read continuously so OpenCV's buffer never holds stale frames.
"""

from __future__ import annotations

import os
import re
import time

import cv2

from appliance.capture import Frame, FrameSource, SourceError, register
from appliance.models import utcnow

OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 10_000


def redact(url: str) -> str:
    """rtsp://user:secret@host/... -> rtsp://user:***@host/... (for logs and /health)."""
    return re.sub(r"(//[^/:@]*):[^/@]*@", r"\1:***@", url)


@register
class StreamSource(FrameSource):
    type = "stream"
    live = True

    def __init__(self, settings):
        super().__init__(settings)
        self._cap = None
        self._read = 0

    @property
    def name(self) -> str:
        return f"stream:{redact(self.settings.source)}"

    def open(self) -> None:
        url = self.settings.source
        if not url:
            raise SourceError(
                "capture.source is empty: set it to the camera's stream URL "
                "(rtsp://... or http://...) for capture.type = stream"
            )
        # RTSP over TCP: UDP loses packets on busy links and gives smeared frames.
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        cap = cv2.VideoCapture(
            url,
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS],
        )
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open stream {redact(url)}: unreachable, refused, wrong credentials "
                "or not a stream OpenCV can decode"
            )
        self._cap = cap
        self._read = 0

    def read(self) -> Frame:
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise SourceError(
                f"stream {redact(self.settings.source)} stopped delivering frames after {self._read} frames"
            )
        self._read += 1
        return Frame(
            image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
            captured_at=utcnow(),
            mono=time.monotonic(),
            index=self._next_index(),
            source=self.name,
        )

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
