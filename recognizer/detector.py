"""Find licence plates in a full camera frame.

The model (`models/detector.tflite`) is a small anchor-free CenterNet-style network: the frame is
letterboxed (scaled to fit, top-left aligned, grey padding) into a 512x288 input, and the model
returns one stride-4 map with 13 channels per cell:

    0      plate-centre heatmap (sigmoid)
    1-2    sub-cell offset of the centre (x, y), in cells
    3-4    ln(width / 16), ln(height / 16) of the plate's axis-aligned box, in input px
    5-12   the four plate corners (TL, TR, BR, BL; x, y) relative to the centre, in box widths/heights

Decoding (peak picking, boxes, corners) is numpy here, so the model holds only builtin ops.
Small plates: when a plate is found small (under `zoom_below_px` wide in the input), the same model
is run again on a zoomed window of the full-resolution frame around it, which gives a tighter box
and better corners for the OCR crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from recognizer.runtime import Model, load_model

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "detector.tflite"
STRIDE = 4
SIZE_UNIT = 16.0
PAD_VALUE = 114
# Second look (see PlateDetector.detect): corner windows of this share of the frame's width and
# height, searched when the first pass found nothing in a frame shrunk below this scale.
WINDOW = 0.6
SECOND_LOOK_BELOW = 0.55


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, w, h in frame px
    score: float
    corners: tuple[tuple[float, float], ...] | None  # TL, TR, BR, BL in frame px


@dataclass(frozen=True)
class Letterbox:
    scale: float  # input px per frame px
    width: int  # frame px placed in the input
    height: int


def letterbox(frame: np.ndarray, in_w: int, in_h: int) -> tuple[np.ndarray, Letterbox]:
    """Scale `frame` to fit (in_w, in_h), top-left aligned, padding grey."""
    h, w = frame.shape[:2]
    s = min(in_w / w, in_h / h)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    small = frame
    # halve with area averaging (OpenCV's fast integer path) while more than 2x too big, then a
    # bilinear step: close to a full INTER_AREA resize at a fraction of its cost
    while small.shape[1] >= 2 * nw and small.shape[0] >= 2 * nh:
        small = cv2.resize(small, (small.shape[1] // 2, small.shape[0] // 2), interpolation=cv2.INTER_AREA)
    out = np.full((in_h, in_w, 3), PAD_VALUE, np.uint8)
    out[:nh, :nw] = cv2.resize(small, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, Letterbox(scale=s, width=nw, height=nh)


def decode(out: np.ndarray, threshold: float = 0.3, max_det: int = 10) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(score, box (x0, y0, x1, y1), corners (4, 2)) in input px for each heatmap peak >= threshold.

    `out` is the model output without the batch axis: (H/4, W/4, 13). The box comes from the
    size head (trained on real photos too); the corners from the corner head (trained on rendered
    scenes, where the true corners are known), used to level the plate for the OCR.
    """
    heat = np.ascontiguousarray(out[..., 0], dtype=np.float32)
    peaks = (heat >= threshold) & (heat >= cv2.dilate(heat, np.ones((3, 3), np.uint8)))
    ys, xs = np.nonzero(peaks)
    if len(ys) == 0:
        return []
    order = np.argsort(-heat[ys, xs])[:max_det]
    results = []
    for y, x in zip(ys[order], xs[order]):
        v = out[y, x].astype(np.float32)
        cx, cy = (x + v[1]) * STRIDE, (y + v[2]) * STRIDE
        bw, bh = SIZE_UNIT * np.exp(np.clip(v[3:5], -4, 4))
        box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], np.float32)
        corners = np.array([cx, cy], np.float32) + v[5:13].reshape(4, 2) * np.array([bw, bh], np.float32)
        results.append((float(heat[y, x]), box, corners.astype(np.float32)))
    return results


def _box_of(corners: np.ndarray) -> np.ndarray:
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _nms(dets, iou: float = 0.4):
    keep: list[tuple[Any, ...]] = []
    for d in sorted(dets, key=lambda d: -d[0]):
        if all(_iou(d[1], k[1]) < iou for k in keep):
            keep.append(d)
    return keep


class PlateDetector:
    """Loads the detector once; `detect(frame)` returns plates in frame coordinates, best first."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        threads: int = 1,
        runtime: str | None = None,
        threshold: float = 0.3,
        zoom_below_px: float = 40.0,
        max_zoom: int = 3,
        second_look: bool = True,
    ):
        self.model: Model = load_model(model_path or DEFAULT_MODEL, threads=threads, runtime=runtime)
        _, self.in_h, self.in_w, _ = self.model.input_shape
        self.threshold = threshold
        self.zoom_below_px = zoom_below_px
        self.max_zoom = max_zoom  # each zoomed pass costs one more model run
        self.second_look = second_look

    def _run(self, image: np.ndarray) -> tuple[list, Letterbox]:
        x, lb = letterbox(image, self.in_w, self.in_h)
        out = self.model.run(x[None].astype(np.float32) * (1.0 / 255.0))[0][0]
        return decode(out, self.threshold), lb

    def _zoom(self, frame: np.ndarray, box: np.ndarray):
        """Re-detect inside a window of the full-resolution frame around a small plate.
        Returns (box, corners) in frame px, or None when the zoomed pass does not confirm it."""
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = box
        cx, cy, bw = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 8.0)
        # a window in which the plate is about 2.5x the zoom threshold wide in the input
        win_w = min(bw * self.in_w / (self.zoom_below_px * 2.5), w)
        win_h = min(win_w * self.in_h / self.in_w, h)
        wx0 = int(np.clip(cx - win_w / 2, 0, max(0, w - win_w)))
        wy0 = int(np.clip(cy - win_h / 2, 0, max(0, h - win_h)))
        crop = frame[wy0 : wy0 + int(win_h), wx0 : wx0 + int(win_w)]
        if crop.shape[0] < 8 or crop.shape[1] < 8:
            return None
        dets, lb = self._run(crop)
        best, best_iou = None, 0.2
        off = np.array([wx0, wy0], np.float32)
        for _score, b, c in dets:
            b = b / lb.scale + np.tile(off, 2)
            o = _iou(b, box)
            if o > best_iou:
                best, best_iou = (b, c / lb.scale + off), o
        return best

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Plates in an RGB (or gray) uint8 frame, most confident first, in frame px.

        Second look: when the whole frame, shrunk into the model's input, shows no plate and the
        shrinking was strong (SECOND_LOOK_BELOW), the four overlapping corner windows of the frame
        (each WINDOW of its width and height) are searched at about twice the resolution. A plate
        60 px wide in a 1920 px frame is 16 px in the whole-frame input, below what the model finds
        reliably; in a window it is 27 px. It costs four more model runs, only on frames where the
        first pass found nothing.
        """
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        dets, lb = self._run(frame)
        found = [
            (score, box / lb.scale, corners / lb.scale, (box[2] - box[0]) < self.zoom_below_px, lb.scale)
            for score, box, corners in _nms(dets)
        ]
        if not found and self.second_look and lb.scale < SECOND_LOOK_BELOW:
            found = self._windows(frame)
        return [self._finish(frame, rank, *f) for rank, f in enumerate(found)]

    def _windows(self, frame: np.ndarray) -> list:
        h, w = frame.shape[:2]
        ww, wh = int(w * WINDOW), int(h * WINDOW)
        found = []
        for x0 in (0, w - ww):
            for y0 in (0, h - wh):
                dets, lb = self._run(frame[y0 : y0 + wh, x0 : x0 + ww])
                off = np.array([x0, y0], np.float32)
                for score, box, corners in dets:
                    found.append(
                        (
                            score,
                            box / lb.scale + np.tile(off, 2),
                            corners / lb.scale + off,
                            (box[2] - box[0]) < self.zoom_below_px,
                            lb.scale,
                        )
                    )
        # a plate where two windows overlap is found twice: keep the surer one
        kept = _nms([(f[0], f[1], f) for f in found])
        return [k[2] for k in kept]

    def _finish(self, frame, rank, score, box, corners, small, scale) -> Detection:
        """A detection in frame px: small ones re-detected zoomed in, clipped, corners checked."""
        h, w = frame.shape[:2]
        if small and rank < self.max_zoom and self.zoom_below_px > 0 and scale < 0.9:
            refined = self._zoom(frame, box)
            if refined is not None:
                box, corners = refined
        box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
        corners[:, 0] = np.clip(corners[:, 0], 0, w - 1)
        corners[:, 1] = np.clip(corners[:, 1], 0, h - 1)
        # corners that disagree with the box are not trusted for levelling the crop
        trusted = _iou(_box_of(corners), box) >= 0.5
        x0, y0, x1, y1 = box
        return Detection(
            box=(int(round(x0)), int(round(y0)), max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0)))),
            score=score,
            corners=tuple((float(x), float(y)) for x, y in corners) if trusted else None,
        )
