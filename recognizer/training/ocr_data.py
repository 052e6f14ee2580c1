"""Training samples for the plate OCR: synthetic shards rendered in worker processes, and real
plates-dev crops with a deterministic held-out fold.

Samples are stored already preprocessed (recognizer.ocr.preprocess, the exact runtime code) as
uint8 arrays in shards of SHARD_SIZE under the work dir, so training reuses them across epochs
and a resumed run does not render them again. Shard i is always rendered from seed i.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from recognizer.formats import ALPHABET, normalise
from recognizer.ocr import preprocess
from recognizer.plates import _photometric, degrade_crop, render_plate
from recognizer.training.intl_plates import render_intl_plate

INPUT_H, INPUT_W = 40, 128
MAX_LABEL = 10
SHARD_SIZE = 1024
# Synthetic shards numbered from here hold EU and Brazilian plates (intl_plates.py) instead of US ones.
INTL_BASE = 50_000
DEGRADES_PER_PLATE = 3  # rendering a plate costs more than degrading it: reuse each one
US_STATES = (
    "al ak az ar ca co ct de dc fl ga hi id il in ia ks ky la me md ma mi mn ms mo mt ne nv nh "
    "nj nm ny nc nd oh ok or pa ri sc sd tn tx ut vt va wa wv wi wy"
).split()
STATES = US_STATES + ["other"]
# The shared data sits beside the checkout (../shared/data/plates-dev), as for the detector
# (det_data.DEV_ROOT); WAYPOST_DATA_DIR points elsewhere.
DATA = Path(
    os.environ.get("WAYPOST_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data" / "plates-dev"
)
HOLDOUT_PERCENT = 40


def holdout(text: str) -> bool:
    """Deterministic fold by plate text, so one plate never sits on both sides."""
    return int(hashlib.sha1(normalise(text).encode()).hexdigest()[:8], 16) % 100 < HOLDOUT_PERCENT


def encode(text: str) -> list[int]:
    return [ALPHABET.index(c) + 1 for c in text]


def _pack(images, texts, states):
    x = np.stack([np.round(im * 255).astype(np.uint8) for im in images])
    y = np.zeros((len(texts), MAX_LABEL), np.int32)
    n = np.zeros(len(texts), np.int32)
    for i, t in enumerate(texts):
        t = t[:MAX_LABEL]
        y[i, : len(t)] = encode(t)
        n[i] = len(t)
    s = np.array([STATES.index(st) if st in STATES else -1 for st in states], np.int32)
    return {"x": x, "y": y, "n": n, "s": s}


def synth_shard(index: int, size: int = SHARD_SIZE) -> dict:
    rng = np.random.default_rng(1_000_003 * (index + 1))
    render = render_intl_plate if index >= INTL_BASE else render_plate
    images, texts, states = [], [], []
    while len(images) < size:
        plate, text, state = render(rng)
        for _ in range(DEGRADES_PER_PLATE):
            crop = degrade_crop(rng, plate, max_w=260 if index >= INTL_BASE else 220)
            images.append(preprocess(np.asarray(crop), INPUT_H, INPUT_W))
            texts.append(text)
            states.append(state)
    return _pack(images[:size], texts[:size], states[:size])


# --- real plates-dev crops ------------------------------------------------------------------
def _read_rgb(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_real(fold: str) -> list[dict]:
    """fold: "train" or "holdout". US crops (tight, state known) and plate boxes from the US, EU and
    BR scenes (kept with 40% context each side, so crops can be cut loose or tight)."""
    items = []
    crops = DATA / "openalpr-us" / "crops"
    with open(crops / "labels.csv") as f:
        for row in csv.DictReader(f):
            text = normalise(row["plate"])
            if len(text) < 2:  # five source labels are just "0" (see the data README)
                continue
            if holdout(text) != (fold == "holdout"):
                continue
            items.append(
                {
                    "img": _read_rgb(crops / row["file"]),
                    "box": None,
                    "text": text,
                    "state": row["state"],
                    "file": f"openalpr-us/crops/{row['file']}",
                }
            )
    for region in ("openalpr-us", "openalpr-eu", "openalpr-br"):
        scenes = DATA / region / "scenes"
        with open(scenes / "labels.csv") as f:
            for row in csv.DictReader(f):
                text = normalise(row["plate"])
                if holdout(text) != (fold == "holdout"):
                    continue
                img = _read_rgb(scenes / row["file"])
                x, y, w, h = (int(float(row[k])) for k in ("x", "y", "w", "h"))
                x0, y0 = max(0, int(x - 0.4 * w)), max(0, int(y - 0.4 * h))
                x1, y1 = min(img.shape[1], int(x + 1.4 * w)), min(img.shape[0], int(y + 1.4 * h))
                items.append(
                    {
                        "img": img[y0:y1, x0:x1].copy(),
                        "box": (x - x0, y - y0, w, h),
                        "text": text,
                        "state": None if region != "openalpr-us" else "",
                        "file": f"{region}/scenes/{row['file']}",
                    }
                )
    return items


def real_view(item, rng=None) -> np.ndarray:
    """The RGB crop to read: the scene box as labelled (rng None) or jittered as a detector would cut it."""
    img, box = item["img"], item["box"]
    if box is None:
        if rng is None:
            return img
        h, w = img.shape[:2]
        x, y, bw, bh = 0, 0, w, h
    else:
        x, y, bw, bh = box
        if rng is None:
            return img[max(0, y) : y + bh, max(0, x) : x + bw]

    mx0, mx1 = rng.uniform(-0.04, 0.12, 2) * bw
    my0, my1 = rng.uniform(-0.06, 0.25, 2) * bh
    src = np.float32(
        [[x - mx0, y - my0], [x + bw + mx1, y - my0], [x + bw + mx1, y + bh + my1], [x - mx0, y + bh + my1]]
    )
    src += rng.normal(0, 0.03, (4, 2)).astype(np.float32) * np.float32([bw, bh])
    out_w = int(np.clip(bw * (1 + mx0 / bw + mx1 / bw), 16, 400))
    out_h = int(np.clip(bh * (1 + my0 / bh + my1 / bh), 8, 300))
    dst = np.float32([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]])
    M = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(img, M, (out_w, out_h), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def augment_real(rng, item) -> np.ndarray:
    crop = real_view(item, rng).astype(np.float32)
    target_w = float(rng.uniform(60, max(61, min(crop.shape[1], 240))))
    return np.asarray(_photometric(rng, crop, target_w))


def real_shard(items, index: int, size: int = SHARD_SIZE) -> dict:
    rng = np.random.default_rng(7_000_001 * (index + 1))
    images, texts, states = [], [], []
    order = rng.integers(0, len(items), size)
    for i in order:
        it = items[i]
        images.append(preprocess(augment_real(rng, it), INPUT_H, INPUT_W))
        texts.append(it["text"])
        states.append(it["state"] if it["state"] else None)
    return _pack(images, texts, states)


def save_shard(path: Path, shard: dict):
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **shard)
    os.replace(tmp, path)


def load_shard(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


_REAL_ITEMS = None


def write_shard(job):
    """Worker entry: job = (kind, index, dir). Skips shards that already exist (resume)."""
    kind, index, out = job
    path = Path(out) / f"{kind}_{index:05d}.npz"
    if path.exists():
        return str(path)
    if kind == "synth":
        shard = synth_shard(index)
    else:
        global _REAL_ITEMS
        if _REAL_ITEMS is None:
            _REAL_ITEMS = load_real("train")
        shard = real_shard(_REAL_ITEMS, index)
    save_shard(path, shard)
    return str(path)


def _nice_worker():
    try:
        os.nice(5)
    except OSError:
        pass
