"""Accuracy and speed of the recognizer on a labelled folder (the plates-dev label formats).

A folder holds images and a `labels.csv` whose header says what it is:
  scenes: `file,x,y,w,h,plate`   (one labelled plate box per row)
  crops:  `file,state,plate`     (a tight plate image per row; state may be empty)
Plates are compared as uppercase A-Z/0-9 only. `evaluate_crops` is the OCR half; the scenes half
(detector + OCR) lives beside it. `waypost eval` calls these and prints the dict as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .formats import normalise
from .image import ImageError, load_image
from .ocr import PlateOCR
from .similarity import box_iou, edit_distance

SCENE_COLUMNS = ("file", "x", "y", "w", "h", "plate")
CROP_COLUMNS = ("file", "state", "plate")


class LabelError(ValueError):
    pass


def char_error_rate(truths, reads) -> float:
    """Total edit distance over total truth length (character error rate over a set of plates)."""
    truths, reads = [normalise(t) for t in truths], [normalise(r) for r in reads]
    total = sum(len(t) for t in truths)
    edits = sum(edit_distance(t, r) for t, r in zip(truths, reads))
    return edits / total if total else 0.0


def load_labels(directory) -> tuple[str, list[dict]]:
    """Return ("scenes" | "crops", rows) for DIR/labels.csv, detecting the kind by its header."""
    path = Path(directory) / "labels.csv"
    if not path.is_file():
        raise LabelError(f"no labels.csv in {directory}: expected a header `file,x,y,w,h,plate` or `file,state,plate`")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = tuple(h.strip() for h in (reader.fieldnames or ()))
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if set(SCENE_COLUMNS) <= set(header):
        kind = "scenes"
        for r in rows:
            for k in ("x", "y", "w", "h"):
                r[k] = int(float(r[k]))
    elif set(CROP_COLUMNS) <= set(header):
        kind = "crops"
    else:
        raise LabelError(
            f"{path}: header {','.join(header)!r} is neither `{','.join(SCENE_COLUMNS)}` nor `{','.join(CROP_COLUMNS)}`"
        )
    for r in rows:
        r["plate"] = normalise(r["plate"])
    return kind, rows


def _ms_stats(ms):
    if not ms:
        return None, None
    return round(float(np.median(ms)), 3), round(float(np.percentile(ms, 95)), 3)


def evaluate_crops(directory, ocr, limit: int | None = None, only=None) -> dict:
    """Read every crop in DIR with `ocr` (a PlateOCR). Returns the summary figures and, under
    "rows", one dict per item (file, truth, read, confidence, ms, state, region, error).
    `only` restricts the run to a set of file names (as written in labels.csv).
    ms is the time of `ocr.read` (preprocess, inference, decoding), not of decoding the file."""

    kind, labels = load_labels(directory)
    if kind != "crops":
        raise LabelError(f"{directory} holds scenes; evaluate_crops needs a `file,state,plate` folder")
    if only is not None:  # a subset by file name, e.g. a held-out fold
        labels = [lab for lab in labels if lab["file"] in only]
    if limit:
        labels = labels[:limit]
    ocr.read(np.full((40, 128), 128, np.uint8))  # warm-up: first invoke allocates
    rows, ms = [], []
    for lab in labels:
        row = {
            "file": lab["file"],
            "truth": lab["plate"],
            "read": "",
            "confidence": 0.0,
            "ms": None,
            "state": lab.get("state", "").lower(),
            "region": None,
            "error": "",
        }
        try:
            with Image.open(Path(directory) / lab["file"]) as im:
                im.load()
                arr = np.asarray(im.convert("RGB"))
        except (FileNotFoundError, UnidentifiedImageError, OSError, SyntaxError) as exc:
            row["error"] = f"cannot decode: {exc}"
            rows.append(row)
            continue
        t = time.perf_counter()
        read = ocr.read(arr)
        row["ms"] = (time.perf_counter() - t) * 1000.0
        ms.append(row["ms"])
        row.update(
            read=read.text,
            confidence=round(read.confidence, 4),
            region=read.region,
            alternatives=" ".join(a.text for a in read.alternatives[:3]),
        )
        rows.append(row)
    n = len(rows)
    with_state = [r for r in rows if r["state"]]
    med, p95 = _ms_stats(ms)
    return {
        "kind": "crops",
        "n": n,
        "exact_match": round(sum(r["read"] == r["truth"] for r in rows) / n, 4) if n else None,
        "char_error_rate": round(char_error_rate([r["truth"] for r in rows], [r["read"] for r in rows]), 4)
        if n
        else None,
        "state_accuracy": round(sum(r["region"] == r["state"] for r in with_state) / len(with_state), 4)
        if with_state
        else None,
        "ms_median": med,
        "ms_p95": p95,
        "errors": sum(bool(r["error"]) for r in rows),
        "rows": rows,
    }


# --- scenes: detector + OCR on full frames ------------------------------------------------------

DETECTION_IOU = 0.3


def evaluate_scenes(directory, recognizer, limit: int | None = None, progress=None) -> dict:
    """Run `recognizer` (a recognizer.Recognizer) on every labelled frame in DIR.

    A labelled plate is detected when some detection has IoU >= 0.3 with its box, and read when a
    read whose box overlaps the labelled box has exactly its text (other plates in the frame, which
    the labels leave out, are neither credited nor punished). ms is detection + OCR for the frame,
    not decoding the file. Returns the figures and, under "rows", one dict per labelled plate."""

    kind, labels = load_labels(directory)
    if kind != "scenes":
        raise LabelError(f"{directory} holds crops; evaluate_scenes needs a `file,x,y,w,h,plate` folder")
    if limit:
        labels = labels[:limit]
    recognizer.read(np.full((288, 512, 3), 114, np.uint8))  # warm-up: first invoke allocates
    rows, ms, cache = [], [], {}
    for i, lab in enumerate(labels):
        truth_box = (lab["x"], lab["y"], lab["w"], lab["h"])
        row = {
            "file": lab["file"],
            "truth": lab["plate"],
            "read": "",
            "confidence": 0.0,
            "ms": None,
            "detected": False,
            "iou": 0.0,
            "box": "",
            "error": "",
        }
        try:
            frame = load_image(Path(directory) / lab["file"])
        except ImageError as exc:
            row["error"] = str(exc)
            rows.append(row)
            continue
        if lab["file"] not in cache:  # a frame listed twice (two labelled plates) is read once
            t = time.perf_counter()
            dets = recognizer.detect(frame)
            reads = recognizer.read(frame, detections=dets)
            cache[lab["file"]] = (dets, reads, (time.perf_counter() - t) * 1000.0)
            ms.append(cache[lab["file"]][2])
        dets, reads, row["ms"] = cache[lab["file"]]
        best_det = max((box_iou(d.box, truth_box) for d in dets), default=0.0)
        row["detected"] = best_det >= DETECTION_IOU
        row["iou"] = round(best_det, 3)
        overlapping = [(box_iou(r.box, truth_box), r) for r in reads if box_iou(r.box, truth_box) > 0]
        if overlapping:
            exact = [r for _, r in overlapping if r.text == lab["plate"]]
            read = exact[0] if exact else max(overlapping, key=lambda t: t[0])[1]
            row.update(read=read.text, confidence=round(read.confidence, 4), box=" ".join(map(str, read.box)))
        rows.append(row)
        if progress:
            progress(i, row)
    n = len(rows)
    med, p95 = _ms_stats(ms)
    return {
        "kind": "scenes",
        "n": n,
        "exact_match": round(sum(r["read"] == r["truth"] for r in rows) / n, 4) if n else None,
        "char_error_rate": round(char_error_rate([r["truth"] for r in rows], [r["read"] for r in rows]), 4)
        if n
        else None,
        "detection_recall": round(sum(r["detected"] for r in rows) / n, 4) if n else None,
        "ms_median": med,
        "ms_p95": p95,
        "errors": sum(bool(r["error"]) for r in rows),
        "rows": rows,
    }


def main(argv=None):
    """python -m recognizer.evaluate DIR [--model PATH] [--runtime NAME]: OCR figures for a crops folder."""

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("directory")
    ap.add_argument("--model", default=None)
    ap.add_argument("--runtime", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--errors", action="store_true", help="print the misread rows first")
    args = ap.parse_args(argv)
    res = evaluate_crops(args.directory, PlateOCR(args.model, threads=args.threads, runtime=args.runtime))
    if args.errors:
        for r in res["rows"]:
            if r["read"] != r["truth"]:
                print(f"{r['file']}\t{r['truth']}\t{r['read']}\t{r['confidence']}\t{r.get('alternatives', '')}")
    res.pop("rows")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
