"""Raspberry Pi camera through picamera2 (libcamera), imported only when this source opens.

Two streams from one exposure: `main` at capture.width x height is the evidence frame
(Frame.hires) and `lores` at capture.detect_width is what the detector sees (Frame.image).
lores is YUV420 on most Pi cameras and is converted to RGB here. A short manual exposure
(capture.exposure_time_us, ~1 ms) keeps moving plates sharp; 0 leaves it to the auto exposure.

picamera2 is not on PyPI in a usable form (it needs the libcamera bindings that only Raspberry Pi
OS ships): install it with apt and make the venv with --system-site-packages.
"""

from __future__ import annotations

import time
from datetime import timedelta

import cv2
import numpy as np

from appliance.capture import Frame, FrameSource, SourceError, SourceStall, register
from appliance.models import utcnow

NOT_INSTALLED = (
    "picamera2 is not installed: on Raspberry Pi OS `apt install python3-picamera2` "
    "and make the venv with --system-site-packages"
)


def _down(value: float, multiple: int) -> int:
    return max(multiple, int(value) // multiple * multiple)


def stream_sizes(settings) -> tuple[tuple[int, int], tuple[int, int]]:
    """(main, lores) sizes. lores keeps main's aspect; its width is a multiple of 64 so the YUV
    planes have no row padding, and it is never larger than main (a libcamera rule)."""
    main = (_down(settings.width, 2), _down(settings.height, 2))
    lores_w = min(_down(settings.detect_width, 64), _down(main[0], 64))
    lores_h = _down(lores_w * main[1] / main[0], 2)
    return main, (lores_w, lores_h)


def lores_to_rgb(yuv420: np.ndarray, width: int) -> np.ndarray:
    """picamera2's YUV420 array, planar I420 of shape (h * 3/2, stride), to RGB (h, width, 3).
    Converted at the full stride and the row padding cut off after (picamera2's advice)."""
    rgb = cv2.cvtColor(yuv420, cv2.COLOR_YUV2RGB_I420)
    return rgb if rgb.shape[1] == width else np.ascontiguousarray(rgb[:, :width])


def camera_controls(settings) -> dict:
    frame_us = int(1_000_000 / settings.fps)
    controls: dict[str, tuple[int, int] | int | float | bool] = {"FrameDurationLimits": (frame_us, frame_us)}
    if settings.exposure_time_us > 0:
        controls["ExposureTime"] = int(settings.exposure_time_us)
    if settings.analogue_gain > 0:
        controls["AnalogueGain"] = float(settings.analogue_gain)
    if settings.exposure_time_us > 0 and settings.analogue_gain > 0:
        controls["AeEnable"] = False
    return controls


@register
class PiCamera2Source(FrameSource):
    """capture.source may name the camera number ("0", "1") on a Pi with two cameras."""

    type = "picamera2"
    live = True

    def __init__(self, settings):
        super().__init__(settings)
        self._cam = None
        self._read = 0

    @property
    def camera_num(self) -> int:
        return int(self.settings.source) if self.settings.source.strip().isdigit() else 0

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # noqa: PLC0415 (optional dependency: Raspberry Pi OS's python3-picamera2)
        except ImportError as exc:
            raise SourceError(NOT_INSTALLED) from exc
        except ValueError as exc:  # raspberrypi/picamera2#1088: apt simplejpeg vs a pip numpy 2
            raise SourceError(
                f"picamera2 failed to import ({exc}): keep numpy<2 in a venv that uses the system picamera2"
            ) from exc
        main, lores = stream_sizes(self.settings)
        try:
            cam = Picamera2(self.camera_num)
        except Exception as exc:  # noqa: BLE001 - libcamera raises plain errors (IndexError, RuntimeError)
            raise SourceError(
                f"no camera {self.camera_num} found by libcamera ({type(exc).__name__}: {exc}); "
                "check the ribbon cable and `rpicam-hello --list-cameras`"
            ) from exc
        try:
            config = cam.create_video_configuration(
                main={"size": main, "format": "RGB888"},
                lores={"size": lores, "format": "YUV420"},
                buffer_count=4,
                controls=camera_controls(self.settings),
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:  # noqa: BLE001
            cam.close()
            raise SourceError(
                f"camera {self.camera_num} refused main {main[0]}x{main[1]} + lores "
                f"{lores[0]}x{lores[1]} ({type(exc).__name__}: {exc})"
            ) from exc
        self._cam = cam
        self._read = 0

    def read(self) -> Frame:
        try:
            # capture_request() alone waits forever when libcamera stalls: ask for the request as a
            # job and wait for it with a bound, so the stall surfaces here as an error (the capture's
            # supervisor would notice it too, but could only abandon the blocked thread).
            job = self._cam.capture_request(wait=False)
            request = self._cam.wait(job, timeout=self.settings.stall_timeout_s)
            try:
                main = request.make_array("main")
                lores = request.make_array("lores")
            finally:
                request.release()
        except TimeoutError as exc:
            timeout = self.settings.stall_timeout_s
            raise SourceStall(
                f"camera {self.camera_num} delivered no frame for {timeout:g} s (capture.stall_timeout_s) "
                f"after {self._read} frames: libcamera stalled",
                since=utcnow() - timedelta(seconds=timeout),
                since_mono=time.monotonic() - timeout,
            ) from exc
        except Exception as exc:  # noqa: BLE001 - a lost camera surfaces as whatever libcamera raises
            raise SourceError(
                f"camera {self.camera_num} stopped delivering frames after {self._read} ({type(exc).__name__}: {exc})"
            ) from exc
        self._read += 1
        lores_w = stream_sizes(self.settings)[1][0]
        # picamera2's "RGB888" is B, G, R in memory.
        hires = np.ascontiguousarray(main[..., 2::-1])
        return Frame(
            image=lores_to_rgb(lores, lores_w),
            hires=hires,
            captured_at=utcnow(),
            mono=time.monotonic(),
            index=self._next_index(),
            source=self.name,
        )

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
            finally:
                self._cam.close()
                self._cam = None
