"""Held-out figures for the detector (and the whole recognizer) on the plates-dev scene folders.

    python -m recognizer.training.det_eval                    # detector only, held-out folds
    python -m recognizer.training.det_eval --folders /tmp/waypost-holdout   # also write folders
                                                              # for `waypost eval` to read

The held-out fold of each region (see det_data.fold_of) is never trained on; the folders written
here hold symlinks to those images plus a labels.csv, so `waypost eval /tmp/waypost-holdout/us`
reports exactly the held-out figures. Runs with the runtime venv (no TensorFlow).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from recognizer.detector import PlateDetector
from recognizer.image import load_image
from recognizer.training import det_data


def holdout_rows(region: str, holdout: bool = True) -> list[dict]:
    folder = det_data.dev_root() / det_data.DEV_FOLDERS[region]
    return [
        r for r in det_data.read_labels(folder) if (det_data.fold_of(r["plate"]) == det_data.HOLDOUT_FOLD) == holdout
    ]


def write_folder(region: str, out: Path, holdout: bool = True) -> Path:
    """A folder of symlinks + labels.csv for one region's held-out (or training) fold."""
    src = det_data.dev_root() / det_data.DEV_FOLDERS[region]
    dst = out / (region if holdout else f"{region}-train")
    dst.mkdir(parents=True, exist_ok=True)
    rows = holdout_rows(region, holdout)
    with open(dst / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "x", "y", "w", "h", "plate"])
        w.writeheader()
        for r in rows:
            link = dst / r["file"]
            if not link.exists():
                link.symlink_to(src / r["file"])
            w.writerow({k: r[k] for k in ("file", "x", "y", "w", "h", "plate")})
    return dst


def iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = a[2] * a[3] + b[2] * b[3] - inter
    return inter / u if u > 0 else 0.0


def detector_figures(det: PlateDetector, region: str, holdout: bool = True, verbose: bool = False) -> dict:
    folder = det_data.dev_root() / det_data.DEV_FOLDERS[region]
    rows = holdout_rows(region, holdout)
    det.detect(np.full((288, 512, 3), 114, np.uint8))
    hits, ious, ms, n_dets = 0, [], [], []
    for r in rows:
        frame = load_image(folder / r["file"])
        t = time.perf_counter()
        dets = det.detect(frame)
        ms.append((time.perf_counter() - t) * 1000)
        truth = tuple(float(r[k]) for k in ("x", "y", "w", "h"))
        best = max((iou(d.box, truth) for d in dets), default=0.0)
        ious.append(best)
        hits += best >= 0.3
        n_dets.append(len(dets))
        if verbose and best < 0.5:
            print(
                f"  {region} {r['file']} truth {truth} best IoU {best:.2f} dets "
                f"{[(d.box, round(d.score, 2)) for d in dets[:4]]}"
            )
    return {
        "region": region,
        "fold": "holdout" if holdout else "train",
        "n": len(rows),
        "detection_recall": round(hits / max(len(rows), 1), 4),
        "iou_median": round(float(np.median(ious)), 3) if ious else None,
        "iou_ge_0.5": round(float(np.mean(np.array(ious) >= 0.5)), 4) if ious else None,
        "dets_per_frame": round(float(np.mean(n_dets)), 2) if n_dets else None,
        "ms_median": round(float(np.median(ms)), 2) if ms else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--runtime", default=None)
    ap.add_argument("--regions", default="us,eu,br")
    ap.add_argument("--train-fold", action="store_true", help="the training folds instead (not a fair figure)")
    ap.add_argument("--folders", type=Path, default=None, help="also write eval folders here")
    ap.add_argument("--zoom-below", type=float, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    kw = {} if args.zoom_below is None else {"zoom_below_px": args.zoom_below}
    det = PlateDetector(args.model, threads=1, runtime=args.runtime, **kw)
    for region in args.regions.split(","):
        if args.folders:
            print(f"wrote {write_folder(region, args.folders, holdout=not args.train_fold)}")
        print(json.dumps(detector_figures(det, region, holdout=not args.train_fold, verbose=args.verbose)))


if __name__ == "__main__":
    main()
