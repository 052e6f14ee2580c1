"""Decode camera frames and image files into the RGB arrays the recognizer reads."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageError(ValueError):
    """An image could not be decoded (missing, corrupt, truncated or of an unsupported kind)."""


def load_image(source: str | Path | bytes | bytearray | memoryview, name: str | None = None) -> np.ndarray:
    """Decode a file path or encoded bytes (JPEG, PNG, BMP, ...) into HxWx3 uint8 RGB.

    Raises ImageError naming the file (or `name`, for bytes) when the image is missing, corrupt,
    truncated or not an image. EXIF orientation is applied, as a phone or camera would show it.
    """

    fp: io.BytesIO | Path
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or f"<{len(source)} bytes>"
        if len(source) == 0:
            raise ImageError(f"cannot decode image {label}: no data")
        fp = io.BytesIO(bytes(source))
    else:
        label = name or str(source)
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"cannot read image {label}: no such file")
        fp = path
    try:
        with Image.open(fp) as im:
            im.load()  # decodes now, so a truncated file fails here and not later
            upright = ImageOps.exif_transpose(im)
            arr = np.asarray(upright.convert("RGB"))
    except UnidentifiedImageError as exc:
        raise ImageError(f"cannot decode image {label}: not a supported image format ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode image {label}: corrupt or truncated ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"cannot decode image {label}: too large ({exc})") from exc
    if arr.ndim != 3 or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ImageError(f"cannot use image {label}: shape {arr.shape} is not a picture")
    return np.ascontiguousarray(arr)


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """Check a frame array and return it as HxWx3 uint8 RGB (gray and RGBA are converted)."""
    if not isinstance(frame, np.ndarray):
        raise ImageError(f"a frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ImageError(f"a frame must be uint8 (0-255), got dtype {frame.dtype}")
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    elif frame.ndim == 3 and frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[..., :3]
    elif not (frame.ndim == 3 and frame.shape[2] == 3):
        raise ImageError(f"a frame must be HxW, HxWx3 or HxWx4, got shape {frame.shape}")
    if frame.shape[0] < 8 or frame.shape[1] < 8:
        raise ImageError(f"frame of {frame.shape[1]}x{frame.shape[0]} px is too small")
    return np.ascontiguousarray(frame)
