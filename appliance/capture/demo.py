"""A built-in synthetic street, so a laptop with no camera shows reads and alerts.

The camera stands on a short post on the centre line of a two-lane street and looks down it
through a narrow lens, like an ALPR camera aimed along a road: oncoming vehicles in the left lane
show their fronts and grow as they come, vehicles in the right lane show their rears and shrink
as they go. Plates are drawn by the OCR's own renderer (`recognizer.plates`), so the
shipped OCR can read them; in the reading zone a plate is about 7-17 % of the frame width wide
(90-220 px at 1280x720). Plates are slightly larger relative to the vehicles than real ones.

A vehicle is in view for about 11 s and at most three are in view at once, so the traffic
saturates at about 16 vehicles a minute whatever `demo_vehicles_per_min` asks for; each plate is
in reading range (at least 5 % of the width, whole, not hidden) for about 2 s.

Everything follows from `demo_seed`: the traffic (times, lanes, speeds, vehicle kinds and
colours, plate designs) and so the frames. Vehicle k carries plate PLATES[(k + 5 * seed) % 100],
and every fifth plate of that fixed sequence is on DEMO_HOTLIST, so every fifth vehicle raises an
alert whatever the seed.

Speed: the street is drawn once; each vehicle's front or rear is drawn once as a sprite (with a
few pre-shrunk copies); a frame is a copy of the street, a few polygons (shadow, side) and one
resize-and-copy per vehicle. `python -m appliance.capture.demo --bench` prints the cost per frame;
`--out DIR` writes a few frames to look at; `--clip PATH` writes a clip with its truth.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import math
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.capture import Frame, FrameSource, register
from appliance.models import utcnow
from recognizer.plates import render_plate

# --- the plates the demo shows and its hotlist ----------------------------------------------
_PLATE_SEED = 20261122
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I, O, Q: California does not issue them
_STATE_PATTERNS = {
    "ca": ["1LLL999"],
    "az": ["LLL9999"],
    "nv": ["99L-999"],
    "or": ["999 LLL"],
    "wa": ["LLL9999"],
    "tx": ["LLL-9999"],
    "ny": ["LLL-9999"],
}
_OUT_OF_STATE = ["az", "nv", "or", "wa", "tx", "ny"]
_REASONS = ["STOLEN VEHICLE", "STOLEN PLATE", "FELONY WARRANT", "MISSING PERSON", "AMBER ALERT"]
POOL_SIZE = 100
HOTLIST_EVERY = 5


def _plate_pool() -> list[tuple[str, str, str]]:
    """(shown text, normalised plate, state) for the fixed sequence of demo plates."""
    rng = np.random.default_rng(_PLATE_SEED)
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    while len(out) < POOL_SIZE:
        state = "ca" if rng.random() < 0.75 else str(rng.choice(_OUT_OF_STATE))
        shown = ""
        for ch in _STATE_PATTERNS[state][0]:
            shown += (
                str(rng.integers(1, 10))
                if ch == "1"
                else str(rng.integers(0, 10))
                if ch == "9"
                else _LETTERS[rng.integers(len(_LETTERS))]
                if ch == "L"
                else ch
            )
        plate = "".join(c for c in shown if c.isalnum())
        if plate not in seen:
            seen.add(plate)
            out.append((shown, plate, state))
    return out


PLATES = _plate_pool()

DEMO_HOTLIST: list[dict] = [
    {
        "plate": plate,
        "state": state.upper(),
        "reason": _REASONS[(i // HOTLIST_EVERY) % len(_REASONS)],
        "entry_date": (date(2026, 9, 1) + timedelta(days=3 * i)).isoformat(),
        "source_ref": f"DEMO-{i:04d}",
    }
    for i, (_, plate, state) in enumerate(PLATES)
    if i % HOTLIST_EVERY == 0
]


def demo_hotlist_csv(path) -> Path:
    """Write DEMO_HOTLIST as the CSV the hotlist importer reads by default."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["plate", "state", "reason", "entry_date", "source_ref"])
        writer.writeheader()
        writer.writerows(DEMO_HOTLIST)
    return path


# --- the street -------------------------------------------------------------------------------
# World in metres: X right, Y up, Z away from the camera. The camera looks along +Z.
PLATE_M = 0.42  # plate width (real: 0.305; larger here so plates read at street scale)
CAMERA_H = 1.35  # camera height
FOCAL = 3.2  # focal length in frame widths (a narrow ALPR lens)
VANISH = (0.60, 0.30)  # vanishing point as fractions of width, height
LANE_X = {"oncoming": -1.25, "outgoing": 1.25}
ROAD_HALF = 2.6
Z_FAR = 85.0  # vehicles appear/disappear here, fading into the haze from Z_FADE
Z_FADE = 60.0
Z_CLIP = 1.0  # nothing nearer than this is drawn
MIN_TRUTH_PLATE = 0.05  # plates narrower than this fraction of the width are not in `truth`
MAX_IN_VIEW = 3
HEADWAY_S = 3.0
HAZE = (196, 206, 214)  # colour of the air at the end of the street


@dataclass
class _Kind:
    name: str
    width: float
    length: float
    roof: float
    waist: float
    weight: float


KINDS = [
    _Kind("car", 1.80, 4.5, 1.45, 0.95, 0.50),
    _Kind("suv", 1.90, 4.7, 1.75, 1.08, 0.25),
    _Kind("van", 1.95, 5.2, 2.00, 1.05, 0.12),
    _Kind("truck", 2.30, 7.0, 3.05, 1.45, 0.13),
]

_BODY_COLOURS = [
    ((236, 236, 232), 22),
    ((24, 24, 27), 18),
    ((118, 120, 124), 14),
    ((178, 180, 184), 14),
    ((30, 44, 86), 7),
    ((150, 22, 28), 7),
    ((44, 86, 150), 6),
    ((192, 178, 150), 4),
    ((40, 72, 54), 3),
    ((62, 64, 68), 5),
]


@dataclass
class Vehicle:
    k: int
    t0: float
    lane: str  # "oncoming" (front view) or "outgoing" (rear view)
    speed: float
    kind: _Kind
    plate: str
    shown: str
    state: str
    duration: float

    @property
    def front(self) -> bool:
        return self.lane == "oncoming"

    def z(self, t: float) -> float:
        """Depth of the face the camera sees (front when oncoming, rear when outgoing)."""
        d = (t - self.t0) * self.speed
        return Z_FAR - d if self.front else Z_CLIP + 0.5 - self.kind.length + d


@dataclass
class _Sprite:
    levels: list[tuple[np.ndarray, np.ndarray]]  # (RGB, mask) pairs, each half the size of the one before
    scales: list[float]  # px per metre of each level
    plate_rect: tuple[float, float, float, float]  # x0, y0 (top), x1, y1 (bottom) in metres, y up
    body: tuple[int, int, int]


class DemoStreet:
    """Deterministic synthetic traffic: render(index) gives the frame and its truth."""

    def __init__(
        self, width: int = 1280, height: int = 720, fps: float = 10.0, vehicles_per_min: float = 12.0, seed: int = 0
    ):
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.vehicles_per_min, self.seed = float(vehicles_per_min), int(seed)
        self.focal = FOCAL * self.width
        self.vx, self.vy = VANISH[0] * self.width, VANISH[1] * self.height
        self._rng = np.random.default_rng([self.seed, 1])
        self._schedule: list[Vehicle] = []
        self._starts: list[float] = []
        self._count = 0  # vehicles scheduled so far (the schedule forgets old ones)
        self._next_t = 0.0
        self._sprites: dict[int, _Sprite] = {}
        self.last_vehicles: list[Vehicle] = []  # the vehicle of each truth entry of the last render
        self.background = self._draw_street()

    # --- projection
    def project(self, x, y, z):
        """World point(s) to frame px."""
        return self.vx + self.focal * np.asarray(x) / z, self.vy + self.focal * (CAMERA_H - np.asarray(y)) / z

    def _quad(self, x0, x1, y0, y1, z0, z1, vertical_x=None):
        """Four corners of a ground quad (vertical_x None: y0 == y1 plane) or a wall at x, cut
        at Z_CLIP; None when nothing of it is in front of the camera."""
        z0, z1 = max(z0, Z_CLIP), max(z1, Z_CLIP)
        if z1 <= z0:
            return None
        if vertical_x is not None:
            pts = np.array([(vertical_x, y0, z0), (vertical_x, y1, z0), (vertical_x, y1, z1), (vertical_x, y0, z1)])
        else:
            pts = np.array([(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)], np.float64)
        xs, ys = self.project(pts[:, 0], pts[:, 1], pts[:, 2])
        return np.stack([xs, ys], axis=1)

    # --- traffic
    def _extend_schedule(self, until: float) -> None:
        rng = self._rng
        mean_gap = 60.0 / self.vehicles_per_min
        while self._next_t <= until:
            k = self._count
            self._count += 1
            t = self._next_t
            lane = "oncoming" if rng.random() < 0.55 else "outgoing"
            kind = KINDS[int(rng.choice(len(KINDS), p=[kd.weight for kd in KINDS]))]
            speed = float(rng.uniform(7.5, 9.0) if kind.name != "truck" else rng.uniform(6.5, 7.5))
            # Same lane: keep a headway; the road: at most MAX_IN_VIEW vehicles at once.
            for v in reversed(self._schedule[-8:]):
                if v.lane == lane:
                    t = max(
                        t,
                        v.t0
                        + max(HEADWAY_S, (v.kind.length + 4) / v.speed)
                        + max(0.0, Z_FAR / v.speed - Z_FAR / speed),
                    )
                    break
            while True:
                ends = sorted(v.t0 + v.duration for v in self._schedule[-8:] if v.t0 + v.duration > t)
                if len(ends) < MAX_IN_VIEW:
                    break
                t = ends[0] + 0.1
            shown, plate, state = PLATES[(k + HOTLIST_EVERY * self.seed) % POOL_SIZE]
            duration = (Z_FAR - Z_CLIP + kind.length) / speed
            self._schedule.append(Vehicle(k, t, lane, speed, kind, plate, shown, state, duration))
            self._starts.append(t)
            self._next_t = t + mean_gap * float(rng.uniform(0.5, 1.5))

    def vehicles_at(self, t: float) -> list[Vehicle]:
        self._extend_schedule(t + 1)
        if len(self._schedule) > 2000:  # a demo running for days: forget vehicles long gone
            keep = bisect.bisect_left(self._starts, t - 600)
            del self._schedule[:keep], self._starts[:keep]
        longest = (Z_FAR + 10) / 6.0
        lo = bisect.bisect_left(self._starts, t - longest)
        hi = bisect.bisect_right(self._starts, t)
        return [v for v in self._schedule[lo:hi] if v.t0 <= t < v.t0 + v.duration]

    def passes(self, t_end: float) -> list[Vehicle]:
        self._extend_schedule(t_end)
        return [v for v in self._schedule if v.t0 < t_end]

    # --- frames
    def render(self, index: int) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int, int]]]]:
        t = index / self.fps
        img = self.background.copy()
        vehicles = self.vehicles_at(t)
        live = {v.k for v in vehicles}
        for k in [k for k in self._sprites if k not in live]:
            del self._sprites[k]
        drawn = []
        # Far to near, so nearer vehicles cover farther ones.
        for v in sorted(vehicles, key=lambda v: -v.z(t)):
            drawn.append((v, self._draw_vehicle(img, v, v.z(t))))
        truth, self.last_vehicles = [], []
        min_w = MIN_TRUTH_PLATE * self.width
        for i, (v, (plate_box, _)) in enumerate(drawn):
            if plate_box is None or plate_box[2] < min_w:
                continue
            x, y, w, h = plate_box
            if x < 0 or y < 0 or x + w > self.width or y + h > self.height:
                continue
            if any(_overlap(plate_box, extent) for _, (_, extent) in drawn[i + 1 :] if extent is not None):
                continue
            truth.append((v.plate, plate_box))
            self.last_vehicles.append(v)
        return img, truth

    def _draw_vehicle(self, img, v: Vehicle, z: float):
        """Shadow, visible side and front/rear of one vehicle. Returns (plate box or None, extent)."""
        kd = v.kind
        lane_x = LANE_X[v.lane]
        fade = 1.0 if z < Z_FADE else max(0.0, (Z_FAR - z) / (Z_FAR - Z_FADE))
        near, far = max(z, Z_CLIP), z + kd.length
        if far <= Z_CLIP or fade <= 0:
            return None, None
        sprite = self._sprite(v)
        # Shadow on the road, then the side toward the camera (the camera is on the centre line).
        half = kd.width / 2
        side_x = lane_x + half if lane_x < 0 else lane_x - half
        shadow = self._quad(lane_x - half - 0.1, lane_x + half + 0.1, 0, 0, near - 0.2, far + 0.3)

        def side(y0, y1, z0, z1):
            return self._quad(0, 0, y0, y1, z0, z1, side_x)

        body = tuple(int(c * 0.72) for c in sprite.body)
        wheel, glass = (18, 18, 18), (38, 42, 50)
        parts = [side(0.28, kd.waist, near, far), body]
        if kd.name == "truck":  # the box is behind the cab: its far end for an oncoming truck
            box0, box1 = (near + 1.9, far) if v.front else (near, far - 1.9)
            parts += [
                side(kd.waist, kd.roof, box0, box1),
                (180, 178, 170),
                side(0.05, 0.55, near + 1.0, near + 1.9),
                wheel,
                side(0.05, 0.55, far - 2.0, far - 0.8),
                wheel,
            ]
        else:
            parts += [
                side(kd.waist, kd.roof - 0.05, near + 0.25, far - 0.3),
                body,
                side(kd.waist + 0.05, kd.roof - 0.12, max(near, z + 1.2), far - 0.9),
                glass,
                side(0.0, 0.62, z + 0.7, z + 1.45),
                wheel,
                side(0.0, 0.62, far - 1.3, far - 0.55),
                wheel,
            ]
        extent = None
        for i, (quad, colour) in enumerate([(shadow, (28, 28, 29))] + list(zip(parts[::2], parts[1::2]))):
            if quad is None:
                continue
            if i:  # the shadow does not hide what is behind the vehicle
                extent = _union(extent, _bbox(quad))
            if fade < 1.0:
                colour = tuple(int(c * fade + h * (1 - fade)) for c, h in zip(colour, HAZE))
            cv2.fillConvexPoly(img, np.round(quad * 16).astype(np.int32), colour, cv2.LINE_8, 4)
        if z < Z_CLIP:
            return None, extent
        # The front or rear face: a sprite scaled to the depth.
        px_per_m = self.focal / z
        level = 0
        while level + 1 < len(sprite.levels) and sprite.scales[level + 1] >= px_per_m:
            level += 1
        (src, mask), s = sprite.levels[level], sprite.scales[level]
        a = px_per_m / s
        ax, ay = self.project(lane_x, 0.0, z)
        sh, sw = src.shape[:2]
        tx, ty = ax - a * sw / 2, ay - a * sh
        extent = _union(extent, (tx, ty, a * sw, a * sh))
        # The part of the sprite that lands in the frame, resized onto it (cheaper than a warp of
        # the whole sprite; cv2.copyTo with the mask is ~50x faster than numpy's masked copy).
        ix0, iy0 = max(0, math.ceil(-tx / a)), max(0, math.ceil(-ty / a))
        ix1, iy1 = min(sw, math.floor((self.width - tx) / a)), min(sh, math.floor((self.height - ty) / a))
        x0, y0 = int(round(tx + ix0 * a)), int(round(ty + iy0 * a))
        x1, y1 = min(self.width, int(round(tx + ix1 * a))), min(self.height, int(round(ty + iy1 * a)))
        if ix1 > ix0 and iy1 > iy0 and x1 > x0 and y1 > y0:
            size = (x1 - x0, y1 - y0)
            rgb = cv2.resize(src[iy0:iy1, ix0:ix1], size, interpolation=cv2.INTER_LINEAR)
            sel = cv2.resize(mask[iy0:iy1, ix0:ix1], size, interpolation=cv2.INTER_NEAREST)
            roi = img[y0:y1, x0:x1]
            if fade < 1.0:
                rgb = cv2.addWeighted(rgb, fade, roi, 1.0 - fade, 0.0)
            cv2.copyTo(rgb, sel, roi)
        px0, py0, px1, py1 = sprite.plate_rect
        bx, by = ax + px0 * px_per_m, ay - py0 * px_per_m
        bw, bh = (px1 - px0) * px_per_m, (py0 - py1) * px_per_m
        box = (int(round(bx)), int(round(by)), int(round(bw)), int(round(bh)))
        return box, extent

    # --- drawing, done once
    def _sprite(self, v: Vehicle) -> _Sprite:
        sprite = self._sprites.get(v.k)
        if sprite is None:
            sprite = self._sprites[v.k] = _draw_sprite(v, self.seed, px_per_m=0.2 * self.width / PLATE_M)
        return sprite

    def _draw_street(self) -> np.ndarray:
        w, h = self.width, self.height
        rng = np.random.default_rng([self.seed, 2])
        img = np.zeros((h, w, 3), np.float32)
        vy = int(self.vy)
        # Sky, brighter and hazier toward the horizon.
        ys = np.linspace(0, 1, max(vy, 1), dtype=np.float32)[:, None]
        img[:vy] = (np.array([118, 160, 210], np.float32) * (1 - ys) + np.array(HAZE, np.float32) * ys)[:, None, :]
        # Ground beyond the street: pavement everywhere, then road, kerbs and buildings on top.
        img[vy:] = (150, 148, 142)
        far = 600.0
        zs = [1.0, far]

        def fill(quad, colour):
            cv2.fillConvexPoly(img, np.round(quad * 16).astype(np.int32), colour, cv2.LINE_AA, 4)

        # Distant skyline at the end of the street.
        x = -w * 0.05
        while x < w * 1.05:
            bw = w * rng.uniform(0.03, 0.08)
            bh = self.height * rng.uniform(0.02, 0.09)
            g = rng.uniform(150, 185)
            cv2.rectangle(img, (int(x), int(self.vy - bh)), (int(x + bw), vy + 2), (g * 0.95, g, g * 1.05), -1)
            x += bw
        # Pavements (sidewalks), a little darker toward the kerb.
        for sgn in (-1, 1):
            fill(self._quad(sgn * ROAD_HALF, sgn * 6.5, 0.0, 0.0, *zs), (166, 163, 156))
            fill(self._quad(sgn * ROAD_HALF, sgn * (ROAD_HALF + 0.25), 0.0, 0.0, *zs), (190, 188, 182))
            for zj in np.arange(4.0, 200.0, 1.8):  # expansion joints
                fill(self._quad(sgn * (ROAD_HALF + 0.3), sgn * 6.5, 0.0, 0.0, zj, zj + 0.03), (128, 126, 120))
        # Asphalt with a faint texture and darker tyre tracks.
        fill(self._quad(-ROAD_HALF, ROAD_HALF, 0.0, 0.0, *zs), (92, 93, 96))
        for lx in LANE_X.values():
            for off in (-0.65, 0.65):
                fill(self._quad(lx + off - 0.25, lx + off + 0.25, 0.0, 0.0, *zs), (82, 83, 86))
        # Centre: double yellow; edges: white.
        for xc in (-0.09, 0.09):
            fill(self._quad(xc - 0.05, xc + 0.05, 0.0, 0.0, *zs), (214, 178, 52))
        for sgn in (-1, 1):
            fill(self._quad(sgn * (ROAD_HALF - 0.35), sgn * (ROAD_HALF - 0.23), 0.0, 0.0, *zs), (228, 228, 222))
        # A crosswalk and a manhole, so the road is not a bare gradient.
        for xs in np.arange(-ROAD_HALF + 0.3, ROAD_HALF - 0.3, 0.9):
            fill(self._quad(xs, xs + 0.5, 0.0, 0.0, 31.0, 33.5), (222, 222, 216))
        fill(self._quad(-0.9, -0.3, 0.0, 0.0, 15.0, 15.6), (70, 70, 72))
        # Buildings along both sides: facades at |x| = 6.5, with windows and shop fronts.
        for sgn in (-1, 1):
            z = 20.0
            while z < 400:
                depth = rng.uniform(8, 22)
                top = rng.uniform(5.5, 9.0) if sgn > 0 else rng.uniform(8.0, 16.0)
                colour = tuple(
                    float(c)
                    for c in rng.choice(
                        [
                            (176, 150, 128),
                            (198, 186, 164),
                            (150, 112, 96),
                            (210, 206, 196),
                            (128, 120, 118),
                            (186, 170, 140),
                        ]
                    )
                )
                fill(self._quad(0, 0, 0.0, top, z, z + depth, sgn * 6.5), colour)
                # Shop front: dark glass with an awning.
                fill(self._quad(0, 0, 0.3, 2.8, z + 0.8, z + depth - 0.8, sgn * 6.5), (58, 66, 74))
                awning = tuple(
                    float(c) for c in rng.choice([(150, 40, 40), (40, 90, 70), (60, 70, 120), (200, 160, 60)])
                )
                fill(self._quad(0, 0, 2.8, 3.3, z + 0.5, z + depth - 0.5, sgn * 6.5), awning)
                for fy in np.arange(4.2, top - 1.0, 3.0):
                    for wz in np.arange(z + 1.0, z + depth - 1.5, 2.2):
                        fill(self._quad(0, 0, fy, fy + 1.5, wz, wz + 1.2, sgn * 6.5), (70, 82, 96))
                z += depth + (rng.uniform(6, 12) if rng.random() < 0.2 else 0.0)  # a side street
        # Trees and lamp posts on the pavements, far to near.
        items = []
        for sgn in (-1, 1):
            for zt in np.arange(24.0 + rng.uniform(0, 8), 300.0, rng.uniform(14, 20)):
                items.append(("tree", sgn * 4.6, zt))
            for zl in np.arange(18.0, 300.0, 30.0):
                items.append(("lamp", sgn * 3.1, zl))
        for what, x, z in sorted(items, key=lambda it: -it[2]):
            if what == "tree":
                bx, by = self.project(x, 0.0, z)
                tx, ty = self.project(x, 3.0, z)
                r = self.focal * 0.14 / z
                cv2.rectangle(img, (int(bx - r), int(ty)), (int(bx + r), int(by)), (74, 58, 44), -1)
                cr = self.focal * 2.0 / z
                for _ in range(14):
                    ox, oy = rng.normal(0, 0.45) * cr, rng.normal(0, 0.35) * cr
                    g = rng.uniform(0.7, 1.15)
                    cv2.circle(
                        img,
                        (int(tx + ox), int(ty - cr * 0.5 + oy)),
                        max(1, int(cr * rng.uniform(0.45, 0.75))),
                        (52 * g, 96 * g, 48 * g),
                        -1,
                        cv2.LINE_AA,
                    )
            else:
                bx, by = self.project(x, 0.0, z)
                tx, ty = self.project(x, 7.0, z)
                r = max(1, int(self.focal * 0.07 / z))
                cv2.rectangle(img, (int(bx - r), int(ty)), (int(bx + r), int(by)), (70, 72, 76), -1)
                ax, _ = self.project(x - np.sign(x) * 1.4, 7.0, z)
                cv2.line(img, (int(bx), int(ty)), (int(ax), int(ty)), (70, 72, 76), max(1, r), cv2.LINE_AA)
                cv2.rectangle(
                    img,
                    (int(min(ax, ax + 3 * r)), int(ty)),
                    (int(max(ax, ax + 3 * r)), int(ty + 2 * r)),
                    (210, 210, 200),
                    -1,
                )
        # Wear on the ground (patches, stains), then sensor grain and a slight vignette, all fixed:
        # the street does not flicker, so an empty road stays still for the motion gate.
        blotches = cv2.resize(rng.normal(0, 1, (24, 40)).astype(np.float32), (w, h - vy), interpolation=cv2.INTER_CUBIC)
        img[vy:] += (blotches * 5.0 + rng.normal(0, 3.0, (h - vy, w)).astype(np.float32))[..., None]
        img += rng.normal(0, 1.5, (h, w, 1)).astype(np.float32)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        d = ((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2
        img *= (1.0 - 0.25 * d)[..., None]
        return np.clip(img, 0, 255).astype(np.uint8)


def _bbox(pts: np.ndarray) -> tuple[float, float, float, float]:
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _union(a, b):
    if a is None:
        return b
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return x0, y0, x1 - x0, y1 - y0


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


# --- vehicle sprites ----------------------------------------------------------------------------
def _draw_sprite(v: Vehicle, seed: int, px_per_m: float) -> _Sprite:
    """The front (oncoming) or rear (outgoing) of one vehicle, with its plate, as RGBA."""

    rng = np.random.default_rng([seed, 3, v.k])
    kd = v.kind
    colours, weights = zip(*_BODY_COLOURS)
    base = np.array(colours[int(rng.choice(len(colours), p=np.array(weights) / sum(weights)))], np.float64)
    rgb = np.clip(base + rng.normal(0, 6, 3), 0, 255)
    body = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    s = px_per_m
    half = kd.width / 2 + 0.15  # room for the mirrors
    cw, ch = int(math.ceil(2 * half * s)), int(math.ceil((kd.roof + 0.02) * s))
    img = np.zeros((ch, cw, 4), np.uint8)

    def P(x, y):
        return (cw / 2 + x * s, ch - y * s)

    def poly(pts, colour):
        arr = np.round(np.array([P(x, y) for x, y in pts]) * 16).astype(np.int32)
        cv2.fillPoly(img, [arr], tuple(int(c) for c in colour) + (255,), cv2.LINE_AA, 4)

    def rect(x0, y0, x1, y1, colour):
        poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour)

    def sym_rect(xa, xb, y0, y1, colour):  # a pair mirrored about the centre
        rect(-xb, y0, -xa, y1, colour)
        rect(xa, y0, xb, y1, colour)

    def shade(colour, f):
        return tuple(min(255, int(c * f)) for c in colour)

    def daylight(top: float, bottom: float):
        """Light from the sky: the top of the body brighter than the bottom (before lamps and plate)."""
        grad = np.zeros((ch, 1, 4), np.float32)
        grad[:, 0, :3] = np.linspace(top, bottom, ch, dtype=np.float32)[:, None] * 200
        grad[:, 0, 3] = 200
        factor = np.repeat(np.clip(grad, 0, 255).astype(np.uint8), cw, axis=1)
        cv2.multiply(img, factor, img, 1.0 / 200)

    hw = kd.width / 2
    tyre, plastic, glass = (20, 20, 22), (34, 34, 37), (40, 46, 56)
    front = v.front
    if kd.name == "truck":
        box_col = tuple(int(c) for c in rng.choice([(232, 230, 222), (222, 224, 226), (236, 232, 214)]))
        if front:
            rect(-hw, 2.3, hw, kd.roof, box_col)  # box behind the cab
            sym_rect(0.35, hw - 0.05, 0.0, 0.62, tyre)
            rect(-hw + 0.1, 0.45, hw - 0.1, 2.45, body)  # cab
            daylight(1.05, 0.82)
            rect(-hw + 0.22, 1.45, hw - 0.22, 2.3, glass)
            poly([(-hw + 0.3, 1.5), (-hw + 0.6, 1.5), (-hw + 0.9, 2.25), (-hw + 0.7, 2.25)], shade(glass, 1.6))
            rect(-0.7, 0.8, 0.7, 1.3, plastic)
            for yy in np.arange(0.86, 1.26, 0.1):
                rect(-0.68, yy, 0.68, yy + 0.03, (150, 150, 152))
            sym_rect(0.78, hw - 0.18, 0.95, 1.2, (226, 230, 236))
            rect(-hw, 0.38, hw, 0.7, (70, 72, 76))  # steel bumper
            sym_rect(hw - 0.02, hw + 0.14, 1.55, 1.95, plastic)  # mirrors
            plate_c, plate_bg = (0.0, 0.54), (70, 72, 76)
        else:
            sym_rect(0.3, hw - 0.05, 0.0, 0.62, tyre)
            rect(-hw, 0.95, hw, kd.roof, box_col)  # box doors
            rect(-0.015, 1.0, 0.015, kd.roof - 0.06, shade(box_col, 0.6))
            for xx in (-0.35, 0.35):
                rect(xx - 0.025, 1.05, xx + 0.025, kd.roof - 0.1, (150, 150, 150))
            rect(-hw, kd.roof - 0.12, hw, kd.roof, shade(box_col, 0.8))
            daylight(1.04, 0.8)
            rect(-hw + 0.1, 0.55, hw - 0.1, 0.95, (52, 52, 55))  # chassis
            rect(-hw + 0.1, 0.32, hw - 0.1, 0.42, (90, 92, 96))  # underride bar
            sym_rect(hw - 0.35, hw - 0.08, 0.62, 0.85, (190, 24, 28))
            plate_c, plate_bg = (0.0, 0.72), (52, 52, 55)
    else:
        roof, waist = kd.roof, kd.waist
        taper = 0.20 if kd.name == "car" else 0.10 if kd.name == "suv" else 0.05
        sym_rect(hw - 0.42, hw - 0.08, 0.0, 0.42, tyre)
        rect(-hw + 0.02, 0.16, hw - 0.02, 0.5, body if rng.random() < 0.6 else plastic)  # bumper
        poly(
            [(-hw, 0.4), (hw, 0.4), (hw, waist - 0.06), (hw - 0.06, waist), (-hw + 0.06, waist), (-hw, waist - 0.06)],
            body,
        )
        t = taper * 1.6
        poly(
            [
                (-hw + 0.08, waist),
                (hw - 0.08, waist),
                (hw - 0.08 - t, roof - 0.04),
                (hw - 0.14 - t, roof),
                (-hw + 0.14 + t, roof),
                (-hw + 0.08 + t, roof - 0.04),
            ],
            body,
        )
        poly(
            [
                (-hw + 0.16, waist + 0.04),
                (hw - 0.16, waist + 0.04),
                (hw - 0.16 - taper * 1.5, roof - 0.08),
                (-hw + 0.16 + taper * 1.5, roof - 0.08),
            ],
            glass,
        )
        gx = rng.uniform(-0.3, 0.2)  # a sky reflection on the glass
        poly(
            [(gx, waist + 0.06), (gx + 0.25, waist + 0.06), (gx + 0.45, roof - 0.1), (gx + 0.3, roof - 0.1)],
            shade(glass, 1.7),
        )
        rect(-hw + 0.05, waist - 0.02, hw - 0.05, waist + 0.01, shade(body, 1.18))  # shoulder highlight
        daylight(1.08, 0.8)
        if front:
            sym_rect(hw - 0.02, hw + 0.13, waist - 0.02, waist + 0.14, body)  # mirrors
            sym_rect(hw - 0.42, hw - 0.06, waist - 0.28, waist - 0.1, (214, 220, 228))  # headlights
            sym_rect(hw - 0.36, hw - 0.2, waist - 0.24, waist - 0.14, (250, 250, 246))
            rect(-0.48, waist - 0.34, 0.48, waist - 0.1, plastic)  # grille
            for yy in np.arange(waist - 0.3, waist - 0.12, 0.06):
                rect(-0.46, yy, 0.46, yy + 0.015, (128, 128, 132))
            cv2.ellipse(
                img,
                tuple(int(c) for c in P(0, waist - 0.22)),
                (int(0.08 * s), int(0.05 * s)),
                0,
                0,
                360,
                (205, 205, 210, 255),
                -1,
                cv2.LINE_AA,
            )
            rect(-0.55, 0.2, 0.55, 0.3, plastic)  # lower intake
            sym_rect(hw - 0.32, hw - 0.2, 0.24, 0.32, (230, 230, 220))  # fog lights
            plate_c = (0.0, 0.42)
        else:
            sym_rect(hw - 0.38, hw - 0.04, waist - 0.3, waist - 0.08, (168, 18, 24))  # tail lights
            sym_rect(hw - 0.34, hw - 0.2, waist - 0.26, waist - 0.16, (220, 60, 56))
            sym_rect(hw - 0.38, hw - 0.26, waist - 0.3, waist - 0.22, (236, 236, 232))  # reversing light
            rect(-0.18, roof - 0.12, 0.18, roof - 0.09, (200, 30, 34))  # third brake light
            rect(-hw + 0.4, waist - 0.36, hw - 0.4, waist - 0.34, shade(body, 0.6))  # boot lid line
            cv2.ellipse(
                img,
                tuple(int(c) for c in P(0, waist - 0.2)),
                (int(0.07 * s), int(0.045 * s)),
                0,
                0,
                360,
                (205, 205, 210, 255),
                -1,
                cv2.LINE_AA,
            )
            cv2.ellipse(
                img,
                tuple(int(c) for c in P(hw - 0.5, 0.2)),
                (int(0.05 * s), int(0.03 * s)),
                0,
                0,
                360,
                (30, 30, 30, 255),
                -1,
                cv2.LINE_AA,
            )  # exhaust
            plate_c = (0.0, 0.6)
        plate_bg = plastic

    # The plate, from the OCR's renderer, in a dark recess.
    kind = "legacy" if (v.state == "ca" and rng.random() < 0.1) else "standard"
    plate_img, _, _ = render_plate(rng, state=v.state, text=v.shown, kind=kind)
    rgba = np.asarray(plate_img.convert("RGBA"))
    pw = PLATE_M * s
    ph = pw * rgba.shape[0] / rgba.shape[1]
    x0, y1 = P(plate_c[0] - PLATE_M / 2, plate_c[1] - ph / s / 2)  # y1: bottom in px
    rect(
        plate_c[0] - PLATE_M / 2 - 0.03,
        plate_c[1] - ph / s / 2 - 0.03,
        plate_c[0] + PLATE_M / 2 + 0.03,
        plate_c[1] + ph / s / 2 + 0.03,
        shade(plate_bg, 0.6),
    )
    pw_px, ph_px = int(round(pw)), int(round(ph))
    plate = cv2.resize(rgba, (pw_px, ph_px), interpolation=cv2.INTER_AREA).astype(np.float32)
    if rng.random() < 0.18:  # mildly degraded: soft focus, dirt, low contrast
        plate[..., :3] = cv2.GaussianBlur(plate[..., :3], (0, 0), pw_px / rng.uniform(110, 160))
        dirt = cv2.resize(rng.random((6, 12)).astype(np.float32), (pw_px, ph_px), interpolation=cv2.INTER_CUBIC)
        plate[..., :3] *= (1.0 - rng.uniform(0.1, 0.3) * np.clip(dirt, 0, 1))[..., None]
        plate[..., :3] = plate[..., :3] * 0.8 + 0.2 * plate[..., :3].mean()
    px, py = int(round(x0)), int(round(y1 - ph_px))
    region = img[py : py + ph_px, px : px + pw_px].astype(np.float32)
    alpha = plate[..., 3:4] / 255.0
    region[..., :3] = plate[..., :3] * alpha + region[..., :3] * (1 - alpha)
    region[..., 3:4] = np.maximum(region[..., 3:4], plate[..., 3:4])
    img[py : py + ph_px, px : px + pw_px] = np.clip(region, 0, 255).astype(np.uint8)
    # The face is anchored at its bottom centre; the truth box is the drawn plate rectangle.
    plate_rect = (-(cw / 2 - px) / s, (ch - py) / s, -(cw / 2 - px - pw_px) / s, (ch - py - ph_px) / s)

    rgbas: list[np.ndarray] = [img]
    scales = [s]
    while min(rgbas[-1].shape[:2]) > 24:
        rgbas.append(cv2.pyrDown(rgbas[-1]))
        scales.append(scales[-1] * rgbas[-1].shape[1] / rgbas[-2].shape[1])
    levels = [
        (cv2.cvtColor(r, cv2.COLOR_RGBA2RGB), cv2.threshold(cv2.extractChannel(r, 3), 127, 1, cv2.THRESH_BINARY)[1])
        for r in rgbas
    ]
    return _Sprite(levels, scales, plate_rect, body)


# --- the source -------------------------------------------------------------------------------
@register
class DemoSource(FrameSource):
    type = "demo"

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.street: DemoStreet | None = None

    @property
    def name(self) -> str:
        return f"demo:seed={self.settings.demo_seed}"

    def open(self) -> None:
        if self.street is None:
            s = self.settings
            self.street = DemoStreet(s.width, s.height, s.fps, s.demo_vehicles_per_min, s.demo_seed)

    def read(self) -> Frame:
        index = self._next_index()
        assert self.street is not None  # made by open(), which a source runs before it reads
        image, truth = self.street.render(index)
        return Frame(
            image=image, captured_at=utcnow(), mono=time.monotonic(), index=index, source=self.name, truth=truth
        )


# --- clips for benchmarks -----------------------------------------------------------------------
def write_clip(
    path,
    seconds: float,
    fps: float = 10.0,
    width: int = 1920,
    height: int = 1080,
    seed: int = 0,
    vehicles_per_min: float = 20.0,
    empty: bool = False,
) -> dict:
    """Write a demo clip (.avi: MJPG, .mp4: mp4v) and `<path>.truth.json` beside it:
    {"fps", "width", "height", "seed", ..., "frames": {index: [{"plate", "box": [x, y, w, h]}]},
    "passes": [{"vehicle", "plate", "state", "kind", "lane", "first_frame", "last_frame", "hotlisted"}]}.
    A pass is one vehicle whose plate was in the truth of at least one frame (a plate seen again
    later is a second pass); lane "oncoming" shows fronts, "outgoing" rears. `empty=True` gives the
    street with no traffic. Returns the same dict."""
    path = Path(path)
    fourcc = {".avi": "MJPG", ".mp4": "mp4v"}.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"write_clip: {path} must end in .avi (MJPG) or .mp4 (mp4v)")
    path.parent.mkdir(parents=True, exist_ok=True)
    street = DemoStreet(width, height, fps, vehicles_per_min, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))  # type: ignore[attr-defined]  # OpenCV's stubs declare only VideoWriter.fourcc
    if not writer.isOpened():
        raise RuntimeError(f"write_clip: OpenCV cannot write {fourcc} to {path}")
    hot = {e["plate"] for e in DEMO_HOTLIST}
    frames: dict[int, list[dict[str, Any]]] = {}
    passes: dict[int, dict[str, Any]] = {}
    truth: list[tuple[str, tuple[int, int, int, int]]]
    try:
        for index in range(int(round(seconds * fps))):
            if empty:
                image, truth = street.background, []
            else:
                image, truth = street.render(index)
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            frames[index] = [{"plate": p, "box": list(b)} for p, b in truth]
            for v in [] if empty else street.last_vehicles:
                entry = passes.setdefault(
                    v.k,
                    {
                        "vehicle": v.k,
                        "plate": v.plate,
                        "state": v.state.upper(),
                        "kind": v.kind.name,
                        "lane": v.lane,
                        "first_frame": index,
                        "hotlisted": v.plate in hot,
                    },
                )
                entry["last_frame"] = index
    finally:
        writer.release()
    result = {
        "fps": fps,
        "width": width,
        "height": height,
        "seed": seed,
        "vehicles_per_min": vehicles_per_min,
        "empty": empty,
        "frames": frames,
        "passes": list(passes.values()),
    }
    Path(str(path) + ".truth.json").write_text(json.dumps(result))
    return result


def _bench(sizes=((1280, 720), (1920, 1080)), frames: int = 300) -> None:
    cv2.setNumThreads(1)
    for w, h in sizes:
        street = DemoStreet(w, h, 10.0, 12.0, 0)
        street.render(0)
        times, boxes = [], 0
        for i in range(1, frames + 1):
            t = time.perf_counter()
            _, truth = street.render(i)
            times.append(time.perf_counter() - t)
            boxes += len(truth)
        ms = np.array(times) * 1000
        print(
            f"{w}x{h}: {ms.mean():.2f} ms per frame on average over {frames} frames, median {np.median(ms):.2f} ms, "
            f"worst {ms.max():.1f} ms (the frame that draws a new vehicle's sprite); "
            f"{boxes / frames:.2f} readable plates per frame; one OpenCV thread"
        )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m appliance.capture.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--bench", action="store_true", help="print ms per frame at 1280x720 and 1920x1080")
    parser.add_argument("--out", help="write a few frames as PNG to this directory")
    parser.add_argument("--clip", help="write a clip (.avi or .mp4) and its .truth.json")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--fps", type=float, default=10)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vehicles-per-min", type=float, default=12)
    parser.add_argument("--empty", action="store_true")
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    if args.bench:
        _bench()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        street = DemoStreet(w, h, args.fps, args.vehicles_per_min, args.seed)
        for i in range(0, int(args.seconds * args.fps), max(1, int(args.fps * 2))):
            image, truth = street.render(i)
            for plate, (x, y, bw, bh) in truth:
                cv2.rectangle(image, (x, y), (x + bw, y + bh), (0, 255, 0), 1)
                cv2.putText(image, plate, (x, y - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)
            cv2.imwrite(str(out / f"demo_{i:05d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        print(f"wrote frames to {out}")
    if args.clip:
        written = write_clip(args.clip, args.seconds, args.fps, w, h, args.seed, args.vehicles_per_min, args.empty)
        print(f"wrote {args.clip}: {len(written['frames'])} frames, {len(written['passes'])} passes")


if __name__ == "__main__":
    main()
