"""Training data for the plate detector: rendered scene shards, real dev folds, and targets.

No TensorFlow here, so the renderer can run in its own process while the model trains:

    python -m recognizer.training.det_data render --shards 0:24     # into $WAYPOST_TRAIN_DIR/scenes

Real photos from shared/data/plates-dev are used for fine-tuning with a fold held out of every
folder: `fold_of(plate)` hashes the plate text, so the same plate in two photos (the README lists
those pairs) always lands on the same side. Only one plate per real image is labelled; `is_real`
tells the loss not to punish confident detections away from the label (they are often real,
unlabelled plates).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from recognizer.detector import PAD_VALUE, SIZE_UNIT, STRIDE, letterbox
from recognizer.training.scenes import render_scene

IN_W, IN_H = 512, 288
HOLDOUT_FOLD = 0
N_FOLDS = 3
DEV_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "plates-dev"
DEV_FOLDERS = {"us": "openalpr-us/scenes", "eu": "openalpr-eu/scenes", "br": "openalpr-br/scenes"}
SHARD_SIZE = 250
N_CH = 14  # target channels: heat, reg weight, offset(2), log size(2), corners(8)


def train_dir() -> Path:
    """Checkpoints and rendered shards (outside the repo); WAYPOST_TRAIN_DIR overrides."""
    return Path(os.environ.get("WAYPOST_TRAIN_DIR") or Path.home() / ".cache" / "waypost-training" / "detector")


def dev_root() -> Path:
    return Path(os.environ.get("WAYPOST_DEV_DATA", DEV_ROOT))


def fold_of(plate: str) -> int:
    """Deterministic fold of a plate text; fold HOLDOUT_FOLD is never trained on."""
    key = "".join(ch for ch in plate.upper() if ch.isalnum())
    return hashlib.sha1(key.encode()).digest()[0] % N_FOLDS


@dataclass
class Sample:
    image: np.ndarray  # letterboxed IN_H x IN_W x 3 uint8
    corners: np.ndarray  # (n, 4, 2) float32 in input px
    is_real: bool = False


def read_labels(folder: Path) -> list[dict]:
    with open(folder / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def real_samples(region: str, holdout: bool) -> list[Sample]:
    """Letterboxed dev scenes of one region, either the training folds or the held-out fold."""
    folder = dev_root() / DEV_FOLDERS[region]
    out = []
    for row in read_labels(folder):
        if (fold_of(row["plate"]) == HOLDOUT_FOLD) != holdout:
            continue
        img = cv2.imread(str(folder / row["file"]), cv2.IMREAD_COLOR)
        if img is None:
            continue
        lb_img, lb = letterbox(img[..., ::-1], IN_W, IN_H)
        x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
        c = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32) * lb.scale
        out.append(Sample(lb_img, c[None], is_real=True))
    return out


# ------------------------------------------------------------------------------------------
# rendered shards


def render_shard(index: int, n: int = SHARD_SIZE) -> dict:
    rng = np.random.default_rng(10_000 + index)
    jpgs, corners, owner = [], [], []
    for i in range(n):
        sc = render_scene(rng)
        lb_img, lb = letterbox(sc.image, IN_W, IN_H)
        ok, buf = cv2.imencode(".jpg", lb_img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 93])
        jpgs.append(buf.tobytes())
        for p in sc.plates:
            corners.append(p.corners * lb.scale)
            owner.append(i)
    return {
        "jpgs": np.array(jpgs, dtype=object),
        "corners": np.array(corners, np.float32).reshape(-1, 4, 2),
        "owner": np.array(owner, np.int32),
    }


def shard_path(index: int) -> Path:
    return train_dir() / "scenes" / f"shard_{index:04d}.npz"


def render_shards(indices: range) -> None:
    for i in indices:
        path = shard_path(i)
        if path.exists():
            continue
        t = time.time()
        d = render_shard(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **d)
        tmp.rename(path)
        print(f"shard {i}: {len(d['jpgs'])} scenes, {len(d['corners'])} plates, {time.time() - t:.0f}s", flush=True)


def load_shards() -> list[Sample]:
    out = []
    for path in sorted((train_dir() / "scenes").glob("shard_*.npz")):
        if ".tmp" in path.name:
            continue
        try:
            d = np.load(path, allow_pickle=True)
            jpgs, corners, owner = d["jpgs"], d["corners"], d["owner"]
        except Exception as exc:  # a shard being written or cut short: skip it this time
            print(f"skip {path.name}: {exc}")
            continue
        for i, buf in enumerate(jpgs):
            out.append(Sample(np.frombuffer(buf, np.uint8), corners[owner == i]))  # decoded lazily
    return out


def decoded(s: Sample) -> np.ndarray:
    if s.image.ndim == 1:
        return cv2.imdecode(s.image, cv2.IMREAD_COLOR)[..., ::-1]
    return s.image


# ------------------------------------------------------------------------------------------
# augmentation and targets


def augment(rng: np.random.Generator, s: Sample, out_w: int, out_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Random scale and crop of one letterboxed sample to (out_h, out_w); returns image, corners."""
    img = decoded(s)
    corners = s.corners.copy()
    scale = float(np.exp(rng.uniform(np.log(0.7), np.log(1.6 if not s.is_real else 1.4))))
    if s.is_real:
        # real plates: also show them at the small sizes a far camera gives
        bw = float(corners[0, :, 0].max() - corners[0, :, 0].min())
        if rng.random() < 0.4 and bw > 20:
            scale = float(rng.uniform(14, min(60, bw)) / bw)
    if len(corners) and rng.random() < 0.7:
        c = corners[int(rng.integers(len(corners)))].mean(axis=0) * scale
        cx = c[0] + rng.uniform(-0.45, 0.45) * out_w
        cy = c[1] + rng.uniform(-0.45, 0.45) * out_h
    else:
        cx = rng.uniform(0, IN_W * scale)
        cy = rng.uniform(0, IN_H * scale)
    tx, ty = out_w / 2 - cx, out_h / 2 - cy
    M = np.array([[scale, 0, tx], [0, scale, ty]], np.float32)
    out = cv2.warpAffine(
        img,
        M,
        (out_w, out_h),
        flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(PAD_VALUE,) * 3,
    )
    if len(corners):
        corners = corners * scale + np.array([tx, ty], np.float32)
    if s.is_real:
        out = out.astype(np.float32)
        out = out * rng.uniform(0.6, 1.3) + rng.uniform(-25, 25)
        if rng.random() < 0.15:
            g = out.mean(axis=2, keepdims=True)
            out = np.repeat(g, 3, axis=2)
        if rng.random() < 0.25:
            out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.2))
        out = np.clip(out, 0, 255).astype(np.uint8)
    return out, corners


def targets(corners: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """(out_h/4, out_w/4, N_CH) target map for plates given as (n, 4, 2) input-px corners."""
    gh, gw = out_h // STRIDE, out_w // STRIDE
    t = np.zeros((gh, gw, N_CH), np.float32)
    best = np.zeros((gh, gw), np.float32)
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    for c in corners:
        x0, y0 = c.min(axis=0)
        x1, y1 = c.max(axis=0)
        bw, bh = x1 - x0, y1 - y0
        if bw < 4 or bh < 2:
            continue
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        if not (0 <= cx < gw and 0 <= cy < gh):
            continue  # centre outside the crop: not a target (its pixels stay unpenalised below)
        sx = max(0.6, bw / STRIDE * 0.09)
        sy = max(0.6, bh / STRIDE * 0.09)
        ix, iy = int(cx), int(cy)
        g = np.exp(-((xs - ix) ** 2 / (2 * sx * sx) + (ys - iy) ** 2 / (2 * sy * sy)))
        t[..., 0] = np.maximum(t[..., 0], g)
        t[iy, ix, 0] = 1.0
        sel = (g > 0.3) & (g > best)
        best[sel] = g[sel]
        t[..., 1][sel] = g[sel]
        t[..., 2][sel] = cx - xs[sel]
        t[..., 3][sel] = cy - ys[sel]
        t[..., 4][sel] = np.log(bw / SIZE_UNIT)
        t[..., 5][sel] = np.log(bh / SIZE_UNIT)
        rel = (c - np.array([cx * STRIDE, cy * STRIDE])) / np.array([bw, bh])
        t[..., 6:14][sel] = rel.reshape(-1).astype(np.float32)
    return t


def batches(
    rng: np.random.Generator,
    synth: list[Sample],
    real: list[Sample],
    batch: int,
    out_w: int,
    out_h: int,
    real_frac: float = 0.25,
):
    """Endless (images float32 0..1, targets, is_real) batches."""
    while True:
        xs, ts, flags = [], [], []
        for _ in range(batch):
            use_real = real and rng.random() < real_frac
            s = real[int(rng.integers(len(real)))] if use_real else synth[int(rng.integers(len(synth)))]
            img, c = augment(rng, s, out_w, out_h)
            xs.append(img)
            ts.append(targets(c, out_w, out_h))
            flags.append(1.0 if s.is_real else 0.0)
        yield (np.stack(xs).astype(np.float32) / 255.0, np.stack(ts), np.array(flags, np.float32))


def main():
    ap = argparse.ArgumentParser(description="render detector training shards")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("--shards", default="0:40", help="start:stop shard indices")
    args = ap.parse_args()
    if args.cmd == "render":
        a, b = (int(v) for v in args.shards.split(":"))
        render_shards(range(a, b))


if __name__ == "__main__":
    main()
