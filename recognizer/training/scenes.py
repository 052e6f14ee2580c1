"""Synthetic road scenes for training the plate detector.

A scene is what a fixed post sees: a road, sky, buildings and trees, one to three vehicles seen
from behind or in front, each with a plate (or none), plate-like distractors (signs, bumper
stickers, truck lettering, a timestamp overlay), and the degradations of a roadside camera:
perspective and skew, motion blur, defocus, low light, infrared grayscale at night, headlight
glare, rain, sensor noise, low resolution and JPEG artifacts.

Plates come from `plates.render_plate` (the OCR's renderer) so the detector sees the same plate
designs the OCR learns; a plain fallback is used only if that module cannot be imported.
PIL/numpy/OpenCV only, no TensorFlow: the detector training imports this in worker processes.

    python -m recognizer.training.scenes --out /tmp/scenes.png   # contact sheet to look at
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

try:  # the OCR's plate renderer; optional so this module works on its own
    from recognizer import plates as _plates
except Exception:  # pragma: no cover - fallback path
    _plates = None  # type: ignore[assignment]  # optional import: None stands for the missing renderer


@dataclass(eq=False)
class ScenePlate:
    corners: np.ndarray  # (4, 2) float32, frame px, clockwise from top-left
    text: str
    state: str | None = None

    @property
    def box(self) -> tuple[float, float, float, float]:
        x0, y0 = self.corners.min(axis=0)
        x1, y1 = self.corners.max(axis=0)
        return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


@dataclass
class Scene:
    image: np.ndarray  # HxWx3 uint8 RGB
    plates: list[ScenePlate] = field(default_factory=list)
    conditions: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# plates

_FALLBACK_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def _fallback_plate(rng: np.random.Generator) -> tuple[np.ndarray, str, str | None]:
    """A plain US-style plate: used only when the OCR's renderer is not importable."""
    h, w = 150, 300
    bg = rng.integers(200, 256, 3) if rng.random() < 0.8 else rng.integers(0, 256, 3)
    img = np.full((h, w, 3), bg, np.uint8)
    ink = (20, 20, 120) if rng.random() < 0.5 else (10, 10, 10)
    if bg.mean() < 120:
        ink = (240, 240, 240)
    n = int(rng.integers(5, 8))
    text = "".join(rng.choice(list(_FALLBACK_CHARS), n))
    cv2.rectangle(img, (3, 3), (w - 4, h - 4), ink, 3)
    cv2.putText(img, "CALIFORNIA", (80, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (160, 20, 20), 2)
    scale = 2.6 if n <= 6 else 2.2
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 6)
    cv2.putText(img, text, ((w - tw) // 2, 75 + th // 2), cv2.FONT_HERSHEY_DUPLEX, scale, ink, 6)
    return img, text, "ca"


def _plate(rng: np.random.Generator, **plate_args) -> tuple[np.ndarray, str, str | None]:
    """(RGBA plate image, text, state) from the OCR renderer, else the fallback."""
    if _plates is not None and hasattr(_plates, "render_plate"):
        out = _plates.render_plate(rng, **plate_args)
        img = getattr(out, "image", None)
        text = getattr(out, "text", None)
        state = getattr(out, "state", None)
        if img is None:  # a tuple (image, text, state, ...)
            img, text = out[0], out[1]
            state = out[2] if len(out) > 2 else None
        img = np.asarray(img.convert("RGBA") if hasattr(img, "convert") else img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        return np.ascontiguousarray(img).astype(np.uint8), str(text), state
    return _fallback_plate(rng)


# --------------------------------------------------------------------------------------------
# small drawing helpers


def _noise_texture(rng, h, w, scale, amp):
    """Low-frequency noise: a small random field upsampled (cheap stand-in for Perlin)."""
    sh, sw = max(2, h // scale), max(2, w // scale)
    small = rng.normal(0, amp, (sh, sw)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _gauss(rng, shape, sigma):
    """Gaussian noise, float32; cv2.randn is ~10x faster than numpy's normal for frame-sized arrays."""
    cv2.setRNGSeed(int(rng.integers(1 << 30)))
    out = np.empty(shape, np.float32)
    cv2.randn(out, 0.0, float(sigma))
    return out


def _rand_color(rng, lo=0, hi=255):
    return tuple(int(v) for v in rng.integers(lo, hi + 1, 3))


_CAR_COLORS = [
    (235, 235, 235),
    (200, 200, 205),
    (150, 150, 155),
    (90, 90, 95),
    (25, 25, 28),
    (15, 15, 20),
    (140, 20, 20),
    (30, 50, 120),
    (20, 70, 40),
    (180, 170, 150),
    (90, 60, 40),
    (200, 180, 60),
]

_SIGN_WORDS = [
    "STOP",
    "ONE WAY",
    "NO PARKING",
    "SPEED LIMIT 25",
    "EXIT",
    "YIELD",
    "BUS ONLY",
    "MAIN ST",
    "5TH AVE",
    "ELM ST",
    "OAK AVE",
    "NO U TURN",
    "SCHOOL",
    "PED XING",
    "LOADING ZONE",
    "TOW AWAY",
    "RIGHT LANE",
    "KEEP RIGHT",
    "DO NOT ENTER",
    "PARK",
    "ENTRANCE",
    "VISITOR",
    "2HR PARKING",
]
_STICKER_WORDS = [
    "HONOR STUDENT",
    "COEXIST",
    "I BRAKE 4 DONUTS",
    "26.2",
    "BABY ON BOARD",
    "GO BEARS",
    "SURF CITY",
    "OBX",
    "USMC",
    "NRA",
    "SAVE THE BAY",
    "MY KID ROCKS",
    "ZERO EMISSION",
    "HYBRID",
    "STUDENT DRIVER",
    "4X4",
    "TOYOTA",
    "FORD",
    "HONDA",
    "CHEVROLET",
    "DEALER",
    "ACME MOTORS",
]
_FONTS = [
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
]


def _random_text(rng, words, plate_like=0.3):
    if rng.random() < plate_like:  # things that look like plate strings: phone numbers, unit ids
        n = int(rng.integers(3, 8))
        return "".join(rng.choice(list(_FALLBACK_CHARS + "-- "), n)).strip() or "A1"
    return str(rng.choice(words))


def _put_text_fit(img, text, x, y, w, h, color, rng, thickness=None):
    """Draw text scaled to fit the box (x, y, w, h)."""
    if w < 6 or h < 4:
        return
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    th = thickness or max(1, int(h / 10))
    (tw, tht), _ = cv2.getTextSize(text, font, 1.0, th)
    scale = min(w * 0.9 / max(tw, 1), h * 0.7 / max(tht, 1))
    if scale <= 0.05:
        return
    (tw, tht), _ = cv2.getTextSize(text, font, scale, th)
    org = (int(x + (w - tw) / 2), int(y + (h + tht) / 2))
    cv2.putText(img, text, org, font, scale, color, th, cv2.LINE_AA)


def _label_rect(img, rng, x, y, w, h, words, plate_like=0.3):
    """A rectangle with lettering: a sign, a sticker, a plate-like distractor."""
    x, y, w, h = int(x), int(y), int(w), int(h)
    bg = _rand_color(rng)
    if rng.random() < 0.4:
        bg = (240, 240, 235)
    fg = (15, 15, 15) if sum(bg) > 380 else (245, 245, 245)
    if rng.random() < 0.3:
        fg = _rand_color(rng)
    cv2.rectangle(img, (x, y), (x + w, y + h), bg, -1)
    if rng.random() < 0.5:
        cv2.rectangle(img, (x, y), (x + w, y + h), fg, max(1, h // 15))
    _put_text_fit(img, _random_text(rng, words, plate_like), x, y, w, h, fg, rng)


# --------------------------------------------------------------------------------------------
# background


def _background(rng, h, w, night):
    img = np.zeros((h, w, 3), np.float32)
    horizon = int(h * rng.uniform(-0.2, 0.55))  # negative: camera looks down at the road only
    ys = np.arange(h, dtype=np.float32)[:, None]
    if horizon > 0:
        top = np.array(_rand_color(rng, 90, 200), np.float32)
        if rng.random() < 0.6:
            top = np.array([110, 160, 225], np.float32) + rng.normal(0, 20, 3)
        bottom = np.clip(top + rng.uniform(20, 60), 0, 255)
        t = np.clip(ys / max(horizon, 1), 0, 1)[..., None]
        img[:horizon] = (top * (1 - t) + bottom * t)[:horizon]
    # ground: asphalt, concrete or grass patches
    base = rng.uniform(60, 190)
    tint = rng.normal(0, 6, 3)
    g = max(horizon, 0)
    ground = (
        base
        + tint
        + _noise_texture(rng, h - g, w, 40, 12)[..., None]
        + _gauss(rng, (h - g, w), rng.uniform(2, 10))[..., None]
    )
    img[g:] = ground
    # grass strips
    for _ in range(int(rng.integers(0, 3))):
        y0 = int(rng.uniform(g, h))
        hh = int(rng.uniform(0.05, 0.3) * h)
        col = np.array([rng.uniform(40, 90), rng.uniform(90, 150), rng.uniform(30, 70)], np.float32)
        patch = col + _noise_texture(rng, min(hh, h - y0), w, 6, 25)[..., None]
        img[y0 : y0 + patch.shape[0]] = patch
    # buildings and trees along the horizon
    if horizon > 10:
        x = int(rng.uniform(-50, 0))
        while x < w:
            bw = int(rng.uniform(0.08, 0.35) * w)
            bh = int(rng.uniform(0.2, 1.0) * horizon)
            col = _rand_color(rng, 60, 220)
            y0 = horizon - bh
            cv2.rectangle(img, (x, y0), (x + bw, horizon), col, -1)
            if rng.random() < 0.7:  # windows
                ww = max(2, int(bw * rng.uniform(0.05, 0.12)))
                wc = _rand_color(rng, 20, 120) if not night else (200, 190, 120)
                for wy in range(y0 + ww, horizon - ww, ww * 2):
                    for wx in range(x + ww, x + bw - ww, ww * 2):
                        cv2.rectangle(img, (wx, wy), (wx + ww, wy + int(ww * 1.3)), wc, -1)
            if rng.random() < 0.3:  # shop sign: lettering on a board (plate-like distractor)
                sw = int(bw * rng.uniform(0.4, 0.9))
                sh = max(6, int(sw * rng.uniform(0.15, 0.35)))
                _label_rect(img, rng, x + (bw - sw) / 2, y0 + 4, sw, sh, _SIGN_WORDS + _STICKER_WORDS)
            x += bw + int(rng.uniform(0, 0.1) * w)
        for _ in range(int(rng.integers(0, 6))):  # trees: clusters of green circles
            cx, cy = rng.uniform(0, w), horizon - rng.uniform(0, 0.6) * horizon
            r = rng.uniform(0.03, 0.12) * w
            for _ in range(12):
                col = (int(rng.uniform(20, 70)), int(rng.uniform(60, 130)), int(rng.uniform(20, 60)))
                cv2.circle(
                    img,
                    (int(cx + rng.normal(0, r / 2)), int(cy + rng.normal(0, r / 2))),
                    int(r * rng.uniform(0.3, 0.7)),
                    col,
                    -1,
                )
    # lane markings, parking lines, cracks, speed bumps
    for _ in range(int(rng.integers(0, 5))):
        col = (235, 235, 230) if rng.random() < 0.6 else (220, 190, 40)
        p0 = (int(rng.uniform(0, w)), int(rng.uniform(g, h)))
        p1 = (int(p0[0] + rng.normal(0, w / 3)), int(p0[1] + rng.normal(0, h / 4)))
        cv2.line(img, p0, p1, col, int(rng.uniform(2, max(3, w / 100))))
    for _ in range(int(rng.integers(0, 8))):
        pts = np.cumsum(rng.normal(0, w / 40, (6, 2)), axis=0) + [rng.uniform(0, w), rng.uniform(g, h)]
        cv2.polylines(img, [pts.astype(np.int32)], False, (float(base) * 0.5,) * 3, 1)
    if rng.random() < 0.25:  # fence or gate: vertical bars
        x0 = int(rng.uniform(0, w * 0.8))
        x1 = x0 + int(rng.uniform(0.1, 0.4) * w)
        y0, y1 = int(rng.uniform(0, h * 0.4)), int(rng.uniform(h * 0.4, h))
        step = max(4, int(rng.uniform(0.005, 0.02) * w))
        for xx in range(x0, x1, step):
            cv2.line(img, (xx, y0), (xx, y1), (25, 25, 25), max(1, step // 4))
        cv2.line(img, (x0, y0), (x1, y0), (25, 25, 25), max(2, step // 2))
    return img, max(horizon, 0)


def _signs(img, rng, horizon):
    h, w = img.shape[:2]
    for _ in range(int(rng.poisson(1.2))):
        sw = rng.uniform(0.04, 0.2) * w
        sh = sw * rng.uniform(0.25, 1.0)
        x = rng.uniform(0, w - sw)
        y = rng.uniform(0, max(1, h * 0.7 - sh))
        pole = (int(x + sw / 2), int(y + sh))
        cv2.line(
            img, pole, (pole[0], int(min(h, y + sh + rng.uniform(0.1, 0.5) * h))), (90, 90, 90), max(2, int(sw / 20))
        )
        _label_rect(img, rng, x, y, sw, sh, _SIGN_WORDS)


def _timestamp(img, rng):
    """Camera overlay text, as in many real fixed-camera frames."""
    h, w = img.shape[:2]
    s = rng.uniform(0.012, 0.03) * h
    text = (
        f"20{rng.integers(10, 27)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d} "
        f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}"
    )
    if rng.random() < 0.4:
        text = f"CAM{rng.integers(1, 99)} " + text
    y = int(s * 1.6) if rng.random() < 0.7 else int(h - s * 0.6)
    x = int(rng.uniform(2, w * 0.5))
    if rng.random() < 0.6:
        cv2.rectangle(img, (0, y - int(s * 1.5)), (w, y + int(s * 0.5)), (20, 20, 20), -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, s / 22, (235, 235, 235), max(1, int(s / 10)), cv2.LINE_AA)


# --------------------------------------------------------------------------------------------
# vehicles


def _homography(rng, cx, cy, scale, yaw_max=0.45, roll_max=0.08, pitch_max=0.25):
    """Vehicle-local (unit = plate width, origin = plate centre) to frame px, with a mild
    3D-looking yaw (keystone), roll and pitch."""
    yaw = rng.uniform(-yaw_max, yaw_max)
    roll = rng.normal(0, roll_max / 2)
    pitch = rng.uniform(0, pitch_max)
    c, s = math.cos(roll), math.sin(roll)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float64)
    # keystone: horizontal foreshortening plus a perspective term that makes one side taller
    persp = np.array(
        [[math.cos(yaw), 0, 0], [0, math.cos(pitch), 0], [math.sin(yaw) * 0.12, rng.normal(0, 0.02), 1]], np.float64
    )
    shear = np.array([[1, rng.normal(0, 0.05), 0], [rng.normal(0, 0.04), 1, 0], [0, 0, 1]])
    place = np.array([[scale, 0, cx], [0, scale, cy], [0, 0, 1]], np.float64)
    return place @ rot @ shear @ persp


def _apply(H, pts):
    pts = np.asarray(pts, np.float64)
    p = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ H.T
    return p[:, :2] / p[:, 2:3]


def _poly(img, H, pts, color):
    cv2.fillPoly(img, [np.round(_apply(H, pts) * 4).astype(np.int32)], color, cv2.LINE_AA, shift=2)


def _rect(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _warp_into(img, src, dst_corners, alpha=1.0):
    """Paste `src` (RGB or RGBA) into `img` so its corners land on dst_corners (TL, TR, BR, BL)."""
    h, w = img.shape[:2]
    x0, y0 = np.floor(dst_corners.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(dst_corners.max(axis=0)).astype(int) + 2
    x0c, y0c, x1c, y1c = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1c <= x0c or y1c <= y0c:
        return
    sh, sw = src.shape[:2]
    srcq = np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]])
    M = cv2.getPerspectiveTransform(srcq, (dst_corners - [x0c, y0c]).astype(np.float32))
    size = (x1c - x0c, y1c - y0c)
    # area-average first when shrinking a lot, so small plates alias like a real camera
    a = src[..., 3].astype(np.float32) / 255.0 if src.shape[2] == 4 else np.ones((sh, sw), np.float32)
    warped = cv2.warpPerspective(
        src[..., :3].astype(np.float32), M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    mask = cv2.warpPerspective(a, M, size, flags=cv2.INTER_LINEAR)[..., None]
    roi = img[y0c:y1c, x0c:x1c]
    roi[:] = roi * (1 - mask * alpha) + warped * mask * alpha


def _vehicle(img, rng, plate_cx, plate_cy, plate_w, has_plate, front, kind, plate_mask, plate_args=None):
    """Draw one vehicle whose plate centre is at (plate_cx, plate_cy) and plate width plate_w px.
    Returns the ScenePlate (or None) and the vehicle's frame bbox."""
    H = _homography(rng, plate_cx, plate_cy, plate_w)
    body = np.array(_CAR_COLORS[int(rng.integers(len(_CAR_COLORS)))], np.float64)
    body = tuple(float(v) for v in np.clip(body + rng.normal(0, 12, 3), 0, 255))
    dark = tuple(v * 0.35 for v in body)
    hw = rng.uniform(2.6, 3.2) if kind != "truck" else rng.uniform(3.0, 3.6)  # half width, plate widths
    py = rng.uniform(0.6, 1.6)  # plate centre to bottom of bumper
    top = -rng.uniform(2.6, 3.6) if kind != "truck" else -rng.uniform(3.5, 5.0)
    bumper_y = rng.uniform(0.0, 0.5)
    # wheels and shadow
    _poly(img, H, _rect(-hw * 0.95, py - 0.2, -hw * 0.55, py + 0.55), (18, 18, 18))
    _poly(img, H, _rect(hw * 0.55, py - 0.2, hw * 0.95, py + 0.55), (18, 18, 18))
    _poly(img, H, _rect(-hw, py + 0.3, hw, py + 0.6), (30, 30, 30))
    # lower body and cabin
    waist = top * rng.uniform(0.35, 0.55)
    r = 0.25
    body_pts = [(-hw, py), (-hw, waist + r), (-hw + r, waist), (hw - r, waist), (hw, waist + r), (hw, py)]
    _poly(img, H, body_pts, body)
    if kind == "truck":
        _poly(img, H, _rect(-hw * 0.98, top, hw * 0.98, waist), tuple(min(255, v * 1.1 + 20) for v in body))
        if rng.random() < 0.8:  # company lettering on the box/tailgate
            for i in range(int(rng.integers(1, 4))):
                yy = top + (waist - top) * (0.15 + 0.25 * i)
                corners = _apply(H, _rect(-hw * 0.8, yy, hw * 0.8, yy + (waist - top) * 0.18))
                bb = corners.min(0), corners.max(0)
                _put_text_fit(
                    img,
                    _random_text(rng, _STICKER_WORDS + _SIGN_WORDS, 0.5),
                    bb[0][0],
                    bb[0][1],
                    bb[1][0] - bb[0][0],
                    bb[1][1] - bb[0][1],
                    _rand_color(rng),
                    rng,
                )
    else:
        cab = [(-hw * 0.85, waist), (-hw * 0.62, top), (hw * 0.62, top), (hw * 0.85, waist)]
        _poly(img, H, cab, body)
        glass = tuple(float(v) for v in rng.uniform(20, 70, 3))
        win = [(-hw * 0.75, waist - 0.1), (-hw * 0.56, top + 0.2), (hw * 0.56, top + 0.2), (hw * 0.75, waist - 0.1)]
        _poly(img, H, win, glass)
        if rng.random() < 0.4:  # reflections on the glass
            _poly(
                img,
                H,
                [(-hw * 0.3, waist - 0.1), (-hw * 0.1, top + 0.2), (hw * 0.05, top + 0.2), (-hw * 0.15, waist - 0.1)],
                tuple(min(255, v + 60) for v in glass),
            )
    # bumper band
    _poly(img, H, _rect(-hw * 1.01, bumper_y, hw * 1.01, py), dark if rng.random() < 0.5 else body)
    _poly(img, H, _rect(-hw * 1.01, bumper_y - 0.04, hw * 1.01, bumper_y + 0.02), dark)
    # lights
    ly = rng.uniform(-1.4, -0.5)
    lw, lh = rng.uniform(0.4, 0.9), rng.uniform(0.2, 0.5)
    if front:
        lc = (240, 240, 225) if rng.random() < 0.7 else (250, 220, 150)
        gy0 = ly - lh * 0.3
        _poly(img, H, _rect(-hw * 0.55, gy0, hw * 0.55, gy0 + rng.uniform(0.3, 0.7)), (25, 25, 25))  # grille
        for k in range(int(rng.integers(2, 7))):
            yy = gy0 + 0.08 + k * 0.09
            _poly(img, H, _rect(-hw * 0.53, yy, hw * 0.53, yy + 0.025), (120, 120, 120))
    else:
        lc = (200, 25, 25) if rng.random() < 0.8 else (220, 60, 40)
    _poly(img, H, _rect(-hw + 0.05, ly, -hw + 0.05 + lw, ly + lh), lc)
    _poly(img, H, _rect(hw - 0.05 - lw, ly, hw - 0.05, ly + lh), lc)
    if rng.random() < 0.5:  # badge
        c = _apply(H, [(0, ly + lh / 2)])[0]
        cv2.ellipse(
            img,
            (int(c[0]), int(c[1])),
            (max(1, int(plate_w * 0.12)), max(1, int(plate_w * 0.07))),
            0,
            0,
            360,
            (200, 200, 205),
            -1,
        )
    if rng.random() < 0.35:  # bumper sticker: a small lettered rectangle near the plate
        sx = rng.choice([-1, 1]) * rng.uniform(0.9, hw - 0.8)
        sw_, sh_ = rng.uniform(0.5, 1.3), rng.uniform(0.18, 0.45)
        corners = _apply(H, _rect(sx - sw_ / 2, bumper_y + 0.05, sx + sw_ / 2, bumper_y + 0.05 + sh_))
        bb = corners.min(0), corners.max(0)
        _label_rect(img, rng, bb[0][0], bb[0][1], bb[1][0] - bb[0][0], bb[1][1] - bb[0][1], _STICKER_WORDS, 0.4)
    if rng.random() < 0.25:  # dealer / model lettering on the trunk
        corners = _apply(H, _rect(rng.uniform(0.6, 1.4), ly + lh + 0.05, rng.uniform(1.6, 2.4), ly + lh + 0.3))
        bb = corners.min(0), corners.max(0)
        _put_text_fit(
            img,
            _random_text(rng, _STICKER_WORDS, 0.5),
            bb[0][0],
            bb[0][1],
            bb[1][0] - bb[0][0],
            bb[1][1] - bb[0][1],
            (210, 210, 215),
            rng,
        )

    plate = None
    if has_plate:
        pimg, text, state = _plate(rng, **(plate_args or {}))
        ph, pw = pimg.shape[:2]
        aspect = ph / pw  # plate height in plate widths
        # recess and frame around the plate
        m = rng.uniform(0.04, 0.12)
        _poly(
            img,
            H,
            _rect(-0.5 - m, -aspect / 2 - m, 0.5 + m, aspect / 2 + m),
            (15, 15, 15) if rng.random() < 0.6 else tuple(v * 0.6 for v in body),
        )
        local = np.array(_rect(-0.5, -aspect / 2, 0.5, aspect / 2))
        corners = _apply(H, local).astype(np.float32)
        _warp_into(img, pimg, corners)
        if rng.random() < 0.3:  # plate frame with dealer text at the bottom edge
            fcol = (20, 20, 20) if rng.random() < 0.6 else (190, 190, 190)
            fr = rng.uniform(0.02, 0.05)
            for seg in (
                [(-0.5, -aspect / 2), (0.5, -aspect / 2 + fr)],
                [(-0.5, aspect / 2 - fr * 2.5), (0.5, aspect / 2)],
                [(-0.5, -aspect / 2), (-0.5 + fr, aspect / 2)],
                [(0.5 - fr, -aspect / 2), (0.5, aspect / 2)],
            ):
                _poly(img, H, _rect(seg[0][0], seg[0][1], seg[1][0], seg[1][1]), fcol)
        if plate_mask is not None:
            cv2.fillPoly(plate_mask, [np.round(corners).astype(np.int32)], 1.0)
        plate = ScenePlate(corners=corners, text=text, state=state)
    elif rng.random() < 0.5:  # empty plate recess / dealer placeholder
        _poly(img, H, _rect(-0.55, -0.3, 0.55, 0.3), tuple(v * 0.5 for v in body))
        if rng.random() < 0.5:
            corners = _apply(H, _rect(-0.5, -0.25, 0.5, 0.25))
            bb = corners.min(0), corners.max(0)
            _label_rect(img, rng, bb[0][0], bb[0][1], bb[1][0] - bb[0][0], bb[1][1] - bb[0][1], _STICKER_WORDS, 0.0)
    extent = _apply(H, _rect(-hw, top, hw, py + 0.6))
    return plate, (extent.min(0), extent.max(0)), H


# --------------------------------------------------------------------------------------------
# degradations


def _motion_blur(img, rng, length):
    k = np.zeros((length, length), np.float32)
    k[length // 2] = 1.0
    M = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.normal(0, 25), 1.0)
    k = cv2.warpAffine(k, M, (length, length))
    return cv2.filter2D(img, -1, k / max(k.sum(), 1e-6))


def _degrade(img, rng, plate_mask, headlights, cond):
    h, w = img.shape[:2]
    light = rng.choice(["day", "day", "day", "overcast", "dusk", "night", "ir"], p=None)
    cond["light"] = str(light)
    if light == "overcast":
        img = img * rng.uniform(0.6, 0.9) + rng.uniform(10, 40)
    elif light == "dusk":
        img = img * rng.uniform(0.3, 0.6) * np.array([1.0, 0.9, 0.8], np.float32)
    elif light in ("night", "ir"):
        lit = (
            plate_mask[..., None] * rng.uniform(0.6, 1.0)
            if light == "ir"
            else plate_mask[..., None] * rng.uniform(0.1, 0.5)
        )
        img = img * (rng.uniform(0.08, 0.3) + lit)
        if light == "ir":
            g = img @ np.array([0.3, 0.5, 0.2], np.float32)
            img = np.repeat(g[..., None], 3, axis=2)
    if light in ("night", "dusk", "ir") or rng.random() < 0.1:  # headlight glare
        for x, y, r in headlights:
            if rng.random() < 0.7:
                x0, x1 = int(max(0, x - 3 * r)), int(min(w, x + 3 * r))
                y0, y1 = int(max(0, y - 3 * r)), int(min(h, y + 3 * r))
                if x1 <= x0 or y1 <= y0:
                    continue
                yy, xx = np.ogrid[y0:y1, x0:x1]
                d2 = (((xx - x) ** 2 + (yy - y) ** 2) / (r * r)).astype(np.float32)
                img[y0:y1, x0:x1] += (255 * rng.uniform(0.6, 1.5) * np.exp(-d2))[..., None]
    if rng.random() < 0.12:  # rain: streaks plus lowered contrast
        cond["rain"] = True
        streaks = np.zeros((h, w), np.float32)
        n = int(rng.uniform(200, 900) * w * h / 1e6)
        ang = rng.normal(0, 0.3)
        L = rng.uniform(0.01, 0.04) * h
        for _ in range(n):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            cv2.line(streaks, (int(x), int(y)), (int(x + L * math.sin(ang)), int(y + L * math.cos(ang))), 1.0, 1)
        img = img * rng.uniform(0.7, 0.9) + 40 + streaks[..., None] * rng.uniform(40, 90)
    img = np.clip(img, 0, 255).astype(np.float32)
    if rng.random() < 0.3:
        n = int(rng.integers(3, max(4, int(0.012 * w))))
        img = _motion_blur(img, rng, n)
        cond["motion"] = n
    if rng.random() < 0.3:
        s = rng.uniform(0.5, 0.0025 * w)
        img = cv2.GaussianBlur(img, (0, 0), s)
        cond["defocus"] = round(float(s), 2)
    # sensor noise, stronger in the dark
    sigma = rng.uniform(1, 6) * (2.5 if light in ("night", "ir", "dusk") else 1)
    img = img + _gauss(rng, img.shape[:2], sigma)[..., None]
    if light not in ("ir",):  # colour cast and gamma
        img = img * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    lut = (255 * (np.arange(256) / 255) ** rng.uniform(0.7, 1.4)).astype(np.uint8)
    img = cv2.LUT(img, lut)
    if rng.random() < 0.3:  # low resolution camera, upsampled back
        f = rng.uniform(0.35, 0.8)
        small = cv2.resize(img, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        cond["lowres"] = round(float(f), 2)
    q = int(rng.uniform(15, 95))
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    cond["jpeg"] = q
    return np.ascontiguousarray(img)


# --------------------------------------------------------------------------------------------

_SIZES = [
    (1280, 720),
    (1280, 720),
    (1280, 720),
    (1024, 640),
    (1280, 960),
    (800, 600),
    (720, 480),
    (960, 540),
    (1280, 1280),
    (640, 480),
    (1920, 1080),
]


def render_scene(
    rng: np.random.Generator,
    size: tuple[int, int] | None = None,
    n_plates: int | None = None,
    degrade: bool = True,
    plate_px: tuple[float, float] | None = None,
    plate_args: dict | None = None,
) -> Scene:
    """One synthetic frame. `size` is (width, height); plates are 1-3 (sometimes 0) unless given;
    `plate_px` bounds the plate widths in px (default: 60 px up to about a quarter of the width);
    `plate_args` go to plates.render_plate (e.g. state="ca", kind="standard")."""
    if size is None:
        size = _SIZES[int(rng.integers(len(_SIZES)))]
    w, h = size
    night_hint = rng.random() < 0.3
    img, horizon = _background(rng, h, w, night_hint)
    _signs(img, rng, horizon)
    if n_plates is None:
        n_plates = int(rng.choice([0, 1, 1, 1, 1, 2, 2, 3]))
    n_vehicles = n_plates + int(rng.random() < 0.3)
    plate_mask = np.zeros((h, w), np.float32)
    plates: list[ScenePlate] = []
    boxes: list[tuple[float, float, float, float]] = []
    headlights = []
    # far (small) first, so nearer vehicles are drawn over them
    widths = []
    for _ in range(n_vehicles):
        u = rng.random()
        if plate_px is not None:
            pw = rng.uniform(*plate_px)
        elif u < 0.9:  # 60 px up to ~25-30% of the frame width, log-uniform
            pw = math.exp(rng.uniform(math.log(max(45, 0.035 * w)), math.log(0.3 * w)))
        else:  # close-ups
            pw = rng.uniform(0.3, 0.55) * w
        widths.append(pw)
    widths.sort()
    remaining_plates = n_plates
    for i, pw in enumerate(widths):
        has_plate = (
            remaining_plates > 0
            and (n_vehicles - i) <= remaining_plates
            or (remaining_plates > 0 and rng.random() < 0.7)
        )
        for _attempt in range(10):
            cx = rng.uniform(0.6 * pw, w - 0.6 * pw)
            lo, hi = max(horizon, 0.5 * pw) + 0.3 * pw, h - 0.4 * pw
            cy = rng.uniform(min(lo, hi - 1), hi)
            vb = (cx - 3.3 * pw, cy - 3.5 * pw, cx + 3.3 * pw, cy + pw)
            if all(_overlap(vb, b) < 0.15 for b in boxes):
                break
        else:
            continue
        front = rng.random() < 0.3
        kind = "truck" if rng.random() < 0.15 else "car"
        before = [_plate_pixels(img, p) for p in plates]
        plate, ext, H = _vehicle(img, rng, cx, cy, pw, has_plate, front, kind, plate_mask, plate_args)
        boxes.append((ext[0][0], ext[0][1], ext[1][0], ext[1][1]))
        # a nearer vehicle may hide an earlier plate: keep only plates still (almost) intact
        plates = [p for p, b in zip(plates, before) if _changed(b, _plate_pixels(img, p)) < 0.03]
        if plate is not None:
            remaining_plates -= 1
            if _inside(plate.corners, w, h):
                plates.append(plate)
        hl = _apply(H, [(-2.3, -1.0), (2.3, -1.0)])
        for x, y in hl:
            headlights.append((x, y, pw * rng.uniform(0.3, 1.0)))
    if rng.random() < 0.5:
        _timestamp(img, rng)
    cond: dict[str, object] = {}
    if degrade:
        out = _degrade(img, rng, plate_mask, headlights if True else [], cond)
    else:
        out = np.clip(img, 0, 255).astype(np.uint8)
    return Scene(image=out, plates=plates, conditions=cond)


def _overlap(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / max(area, 1e-6)


def _plate_pixels(img, plate: ScenePlate) -> np.ndarray:
    x0, y0 = np.floor(plate.corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(plate.corners.max(axis=0)).astype(int)
    return img[max(y0, 0) : y1, max(x0, 0) : x1].copy()


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0:
        return 1.0
    return float((np.abs(a - b).max(axis=2) > 1).mean())


def _inside(corners, w, h, margin=1):
    return bool(
        (corners[:, 0] >= margin).all()
        and (corners[:, 0] <= w - margin).all()
        and (corners[:, 1] >= margin).all()
        and (corners[:, 1] <= h - margin).all()
    )


def contact_sheet(
    scenes: list[Scene], path: str, cols: int = 4, cell: tuple[int, int] = (480, 270), boxes: bool = True
) -> None:
    """Tile scenes (letterboxed into cells) with their plate quads drawn in green."""
    cw, ch = cell
    rows = math.ceil(len(scenes) / cols)
    sheet = np.full((rows * ch, cols * cw, 3), 40, np.uint8)
    for i, sc in enumerate(scenes):
        h, w = sc.image.shape[:2]
        s = min(cw / w, ch / h)
        im = cv2.resize(sc.image, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA).copy()
        if boxes:
            for p in sc.plates:
                cv2.polylines(im, [np.round(p.corners * s).astype(np.int32)], True, (0, 255, 0), 1)
        y0, x0 = (i // cols) * ch, (i % cols) * cw
        sheet[y0 : y0 + im.shape[0], x0 : x0 + im.shape[1]] = im
    cv2.imwrite(path, sheet[..., ::-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/scenes.png")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-boxes", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    scenes = [render_scene(rng) for _ in range(args.n)]
    contact_sheet(scenes, args.out, boxes=not args.no_boxes)
    for s in scenes:
        print(s.image.shape, [(p.text, tuple(round(v) for v in p.box)) for p in s.plates], s.conditions)


if __name__ == "__main__":
    main()
