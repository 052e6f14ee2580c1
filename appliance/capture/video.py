"""A video file, played once or in a loop (OpenCV; anything its bundled FFmpeg decodes)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from appliance.capture import CorruptFrame, Frame, FrameSource, SourceError, register
from appliance.models import utcnow


@register
class VideoSource(FrameSource):
    type = "video"

    def __init__(self, settings):
        super().__init__(settings)
        self._cap = None
        self._pos = 0  # frames read in this pass through the file
        self._total = 0  # frame count the container claims
        self._ended = False

    @property
    def path(self) -> Path:
        return Path(self.settings.source).expanduser()

    def open(self) -> None:
        if not self.settings.source:
            raise SourceError("capture.source is empty: set it to a video file for capture.type = video")
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} does not exist (capture.source)")
        self._open_file()
        self._ended = False

    def _open_file(self) -> None:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open video {self.path}: not a format OpenCV decodes, or the file is "
                "damaged (an .mp4 cut short loses the index at its end)"
            )
        self._cap = cap
        self._total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._pos = 0

    def read(self) -> Frame | None:
        if self._ended:
            return None
        ok, bgr = self._cap.read()
        if ok and bgr is not None:
            self._pos += 1
            return Frame(
                image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                captured_at=utcnow(),
                mono=time.monotonic(),
                index=self._next_index(),
                source=self.name,
            )
        # End of the file, or of what could be decoded of it.
        pos, total = self._pos, self._total
        if pos == 0:
            raise SourceError(f"video {self.path}: no frame could be decoded")
        # FFmpeg drops an undecodable frame by itself; only the count at the end tells (one frame
        # of slack: some containers announce one more than they hold).
        cut_short = total > 0 and pos < total - 1
        self._cap.release()
        if self.settings.loop:
            self._open_file()
        else:
            self._ended = True
        if cut_short:
            # Raised after the file is reopened (or marked ended): the capture logs it and the
            # next read() carries on from the start, or ends.
            raise CorruptFrame(
                f"video {self.path}: decoded {pos} of the {total} frames it announces, the file is "
                f"cut short or damaged; {'starting again' if self.settings.loop else 'ending'}"
            )
        return None if self._ended else self.read()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
