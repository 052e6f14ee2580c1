"""Figures for the OCR model card: held-out fold, train fold, whole folders, NYC (evaluation only).

    python -m recognizer.training.ocr_report [--model recognizer/models/ocr.tflite] [--nyc DIR]

Runs the shipped runtime (PlateOCR, 1 thread, the crop views `waypost eval` reads:
recognizer.CROP_VIEWS) through recognizer.evaluate.evaluate_crops, so the figures are the ones
`waypost eval` gives. The fold is the deterministic plate-text hash fold of
ocr_data.holdout().
"""

from __future__ import annotations

import argparse
import json

from recognizer import CROP_VIEWS
from recognizer.evaluate import evaluate_crops, load_labels
from recognizer.ocr import PlateOCR
from recognizer.training.ocr_data import DATA, holdout


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--runtime", default=None)
    ap.add_argument("--nyc", default=str(DATA.parent / "plates-extra" / "reported-ocr-nyc"))
    ap.add_argument("--errors", action="store_true", help="list held-out misreads")
    ap.add_argument("--views", type=int, default=CROP_VIEWS, help="views of each crop read together (1-3)")
    args = ap.parse_args(argv)
    ocr = PlateOCR(args.model, threads=1, runtime=args.runtime, views=args.views)
    crops = DATA / "openalpr-us" / "crops"
    _, rows = load_labels(crops)
    held = {r["file"] for r in rows if holdout(r["plate"])}
    out = {}
    for name, only in (
        ("us_crops_holdout", held),
        ("us_crops_trainfold", {r["file"] for r in rows} - held),
        ("us_crops_all", None),
    ):
        res = evaluate_crops(crops, ocr, only=only)
        if args.errors and name == "us_crops_holdout":
            for r in res["rows"]:
                if r["read"] != r["truth"]:
                    print(f"  {r['file']}\t{r['truth']}\t{r['read']}\t{r['confidence']}\t{r.get('alternatives', '')}")
        res.pop("rows")
        out[name] = res
        print(name, json.dumps(res), flush=True)
    if args.nyc:
        res = evaluate_crops(args.nyc, ocr)
        res.pop("rows")
        out["nyc_crops_all"] = res
        print("nyc_crops_all", json.dumps(res), flush=True)
    return out


if __name__ == "__main__":
    main()
