"""Waypost's plate recognizer: runtime inference only (TensorFlow is never imported here).

    from recognizer import Recognizer, load_image
    rec = Recognizer()                        # loads recognizer/models/{detector,ocr}.tflite once
    for read in rec.read(load_image("frame.jpg")):
        print(read.text, read.confidence, read.box)

`read(frame)` finds plates with the detector, cuts each one out (rectified by its corners, with a
margin) and reads it with the OCR. `read_crop(image)` reads an image that is already a plate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from .detector import Detection, PlateDetector
from .image import ImageError, as_rgb, load_image
from .ocr import PlateOCR
from .result import Alternative, PlateRead

MODELS_DIR = Path(__file__).resolve().parent / "models"

# Margins around the plate in the crop handed to the OCR, as fractions of the plate's width and
# height on each side; the OCR is trained on crops from tight to about this loose.
CROP_MARGIN_X = 0.07
CROP_MARGIN_Y = 0.14
MAX_CROP_W = 400
# The detector's box follows the 2:1 shape of the US plates it was mostly trained on, so on a long
# one-line plate (EU 520x110 mm, Mercosur 400x130 mm) it covers only the middle characters. Each
# plate is therefore also read from a crop widened to this width:height about the same centre; the
# wider read is kept only when it extends the box's read (contains it) and is at least half as
# confident, so a US plate whose box is right keeps its read (no US dev scene changed when this
# was added; the EU and Brazilian scenes' exact match went from 0.06 to 0.68 and 0.46 to 0.75).
WIDE_ASPECT = 4.0
# The views of a detected plate the OCR reads together (PlateOCR.decode_views): the crop with the
# usual margins, a tight one and a loose one, as (margin_x, margin_y) fractions of the plate.
SCENE_VIEWS = ((CROP_MARGIN_X, CROP_MARGIN_Y), (0.03, 0.06), (0.12, 0.22))
# read_crop reads a given crop and the crop padded (ocr.crop_views): a third view would take a
# crop's read past the 2 ms it may cost on this project's reference machine.
CROP_VIEWS = 2


def _plate_size(c: np.ndarray) -> tuple[float, float]:
    w = (np.linalg.norm(c[1] - c[0]) + np.linalg.norm(c[2] - c[3])) / 2
    h = (np.linalg.norm(c[3] - c[0]) + np.linalg.norm(c[2] - c[1])) / 2
    return float(w), float(h)


def _is_convex(c: np.ndarray) -> bool:
    signs = []
    for i in range(4):
        a, b, d = c[i], c[(i + 1) % 4], c[(i + 2) % 4]
        signs.append(np.sign((b[0] - a[0]) * (d[1] - b[1]) - (b[1] - a[1]) * (d[0] - b[0])))
    return all(s > 0 for s in signs) or all(s < 0 for s in signs)


def plate_crop(
    frame: np.ndarray, det: Detection, margin_x: float = CROP_MARGIN_X, margin_y: float = CROP_MARGIN_Y
) -> np.ndarray:
    """Cut the plate out of the frame: a perspective warp of its corners (so a skewed plate comes
    out level) when the detector gave usable corners, else the box; with a margin either way."""

    h, w = frame.shape[:2]
    if det.corners is not None:
        c = np.asarray(det.corners, np.float32)
        pw, ph = _plate_size(c)
        if _is_convex(c) and pw >= 6 and ph >= 3:
            scale = min(1.0, MAX_CROP_W / (pw * (1 + 2 * margin_x)))
            iw, ih = pw * scale, ph * scale
            mx, my = iw * margin_x, ih * margin_y
            out_w, out_h = int(round(iw + 2 * mx)), int(round(ih + 2 * my))
            dst = np.array([[mx, my], [mx + iw, my], [mx + iw, my + ih], [mx, my + ih]], np.float32)
            M = cv2.getPerspectiveTransform(c, dst)
            return cv2.warpPerspective(
                frame, M, (max(out_w, 8), max(out_h, 4)), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
    x, y, bw, bh = det.box
    mx, my = bw * margin_x, bh * margin_y
    x0, y0 = int(max(0, x - mx)), int(max(0, y - my))
    x1, y1 = int(min(w, x + bw + mx)), int(min(h, y + bh + my))
    return np.ascontiguousarray(frame[y0 : max(y1, y0 + 4), x0 : max(x1, x0 + 8)])


class Recognizer:
    """Detector + OCR, each interpreter built once. Not thread-safe: one per worker thread."""

    def __init__(
        self,
        models_dir: str | Path | None = None,
        threads: int = 1,
        runtime: str | None = None,
        min_detection_score: float = 0.3,
        second_look: bool = True,
        ocr_views: int = len(SCENE_VIEWS),
        crop_views: int = CROP_VIEWS,
    ):
        if not 1 <= ocr_views <= len(SCENE_VIEWS):
            raise ValueError(f"ocr_views must be 1 to {len(SCENE_VIEWS)}, got {ocr_views}")
        d = Path(models_dir) if models_dir else MODELS_DIR
        self.detector = PlateDetector(
            d / "detector.tflite",
            threads=threads,
            runtime=runtime,
            threshold=min_detection_score,
            second_look=second_look,
        )
        self.ocr = PlateOCR(d / "ocr.tflite", threads=threads, runtime=runtime, views=crop_views)
        self.ocr_views = ocr_views
        self.runtime = self.detector.model.runtime

    def detect(self, frame: np.ndarray) -> list[Detection]:
        return self.detector.detect(as_rgb(frame))

    def read(self, frame: np.ndarray, detections: list[Detection] | None = None) -> list[PlateRead]:
        """All plates read in one RGB frame (HxWx3 uint8), most confident detection first.
        Detections whose crop reads as no characters are dropped."""
        frame = as_rgb(frame)
        if detections is None:
            detections = self.detector.detect(frame)
        reads = []
        for det in detections:
            read = self._read_detection(frame, det)
            if not read.text:
                continue
            reads.append(
                dataclasses.replace(read, box=det.box, corners=det.corners, detection_score=round(det.score, 4))
            )
        return reads

    def _read_detection(self, frame: np.ndarray, det: Detection) -> PlateRead:
        """The OCR's read of one detection: its crops with the margins of SCENE_VIEWS read together,
        or the box widened to WIDE_ASPECT when that reads the same characters and more (a long
        plate the box cut short)."""
        read = self.ocr.read_views([plate_crop(frame, det, mx, my) for mx, my in SCENE_VIEWS[: self.ocr_views]])
        x, y, bw, bh = det.box
        if not read.text or bw >= WIDE_ASPECT * bh:
            return read
        w = frame.shape[1]
        x0 = int(max(0, x + bw / 2 - WIDE_ASPECT * bh / 2))
        x1 = int(min(w, x + bw / 2 + WIDE_ASPECT * bh / 2))
        wide = self.ocr.read_views(
            [plate_crop(frame, Detection(box=(x0, y, x1 - x0, bh), score=det.score, corners=None))]
        )
        if len(wide.text) > len(read.text) and read.text in wide.text and wide.confidence >= 0.5 * read.confidence:
            return wide
        return read

    def read_crop(self, image: np.ndarray) -> PlateRead:
        """Read an image that is already a plate crop (no detection)."""
        return self.ocr.read(as_rgb(image))

    def read_file(self, path_or_bytes, name: str | None = None) -> list[PlateRead]:
        return self.read(load_image(path_or_bytes, name=name))


__all__ = ["Recognizer", "PlateRead", "Alternative", "Detection", "ImageError", "load_image", "plate_crop"]
