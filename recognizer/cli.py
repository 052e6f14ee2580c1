"""`waypost eval` and `waypost recognize`: the recognizer's commands (registered in the waypost CLI).

Also runnable before that wiring as `python -m recognizer eval DIR` / `python -m recognizer recognize IMG`.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import click

from . import Recognizer
from .evaluate import LabelError, evaluate_crops, evaluate_scenes, load_labels
from .image import ImageError, load_image
from .runtime import ModelError, RuntimeMissing

OUT_COLUMNS = ("file", "truth", "read", "confidence", "ms")


def _recognizer(models_dir, threads, runtime):
    try:
        return Recognizer(models_dir=models_dir, threads=threads, runtime=runtime)
    except (ModelError, RuntimeMissing, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(f"cannot load the recognizer models: {exc}") from exc


@click.command("eval")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one CSV row per item: file, truth, read, confidence, ms.",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, 8),
    help="TFLite threads (the targets are measured with 1).",
)
@click.option(
    "--runtime",
    type=click.Choice(["ai_edge_litert", "tflite_runtime"]),
    default=None,
    help="TFLite runtime to use (default: the first installed).",
)
@click.option(
    "--models-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder with detector.tflite and ocr.tflite (default: the shipped models).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N items.")
def eval_command(directory, out_path, threads, runtime, models_dir, limit):
    """Measure accuracy and speed on a labelled folder.

    DIRECTORY holds images and a labels.csv: `file,x,y,w,h,plate` for scenes (full frames, one
    labelled plate per row) or `file,state,plate` for plate crops. The last line printed is one
    JSON object with the figures (kind, n, exact_match, char_error_rate, detection_recall or
    state_accuracy, ms_median, ms_p95).
    """

    try:
        kind, labels = load_labels(directory)
    except LabelError as exc:
        raise click.ClickException(str(exc)) from exc
    n = min(len(labels), limit) if limit else len(labels)
    rec = _recognizer(models_dir, threads, runtime)
    click.echo(f"{kind}: {n} labelled items in {directory} ({rec.runtime}, {threads} thread(s))", err=True)

    def progress(i, row):
        if (i + 1) % 25 == 0 or i + 1 == n:
            click.echo(f"  {i + 1}/{n}", err=True)

    t0 = time.perf_counter()
    if kind == "scenes":
        res = evaluate_scenes(directory, rec, limit=limit, progress=progress)
    else:
        res = evaluate_crops(directory, rec.ocr, limit=limit)
    rows = res.pop("rows")
    if out_path:
        with open(out_path, "w", newline="") as f:
            w = csv.DictWriter(
                f, fieldnames=list(OUT_COLUMNS) + [k for k in ("error",) if k not in OUT_COLUMNS], extrasaction="ignore"
            )
            w.writeheader()
            for r in rows:
                w.writerow({**r, "ms": "" if r.get("ms") is None else round(r["ms"], 3)})
        click.echo(f"wrote {len(rows)} rows to {out_path}", err=True)
    wrong = [r for r in rows if r["read"] != r["truth"]]
    for r in wrong[:10]:
        click.echo(f"  miss {r['file']}: truth {r['truth']} read {r['read'] or '-'}", err=True)
    if len(wrong) > 10:
        click.echo(f"  ... and {len(wrong) - 10} more misses", err=True)
    click.echo(
        f"{kind}: exact {res.get('exact_match')}, CER {res.get('char_error_rate')}"
        + (f", detection recall {res.get('detection_recall')}" if kind == "scenes" else "")
        + f", median {res.get('ms_median')} ms, p95 {res.get('ms_p95')} ms"
        + f" ({time.perf_counter() - t0:.1f} s in all)"
    )
    click.echo(json.dumps(res))


@click.command("recognize")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 8))
@click.option("--runtime", type=click.Choice(["ai_edge_litert", "tflite_runtime"]), default=None)
@click.option("--models-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None)
@click.option("--crop", is_flag=True, help="The images are plate crops: OCR only, no detection.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image instead of text.")
def recognize_command(images, threads, runtime, models_dir, crop, as_json):
    """Read the plates in one or more image files and print them."""

    rec = _recognizer(models_dir, threads, runtime)
    failed = 0
    for path in images:
        try:
            frame = load_image(path)
        except ImageError as exc:
            click.echo(f"{path}: error: {exc}", err=True)
            failed += 1
            continue
        t = time.perf_counter()
        reads = [rec.read_crop(frame)] if crop else rec.read(frame)
        ms = (time.perf_counter() - t) * 1000
        if as_json:
            click.echo(json.dumps({"file": str(path), "ms": round(ms, 2), "reads": [_read_dict(r) for r in reads]}))
            continue
        if not reads:
            click.echo(f"{path}: no plate ({ms:.1f} ms)")
        for r in reads:
            alts = ", ".join(f"{a.text} {a.score:.2f}" for a in r.alternatives[:3])
            where = f" at {r.box}" if r.box else ""
            region = f" [{r.region} {r.region_confidence:.2f}]" if r.region else ""
            click.echo(
                f"{path}: {r.text or '-'} {r.confidence:.2f}{region}{where} "
                f"(alternatives: {alts or 'none'}; {ms:.1f} ms)"
            )
    if failed:
        sys.exit(1)


def _read_dict(r) -> dict:
    return {
        "text": r.text,
        "confidence": round(r.confidence, 4),
        "char_confidences": list(r.char_confidences),
        "alternatives": [{"text": a.text, "score": a.score} for a in r.alternatives],
        "box": list(r.box) if r.box else None,
        "corners": [list(p) for p in r.corners] if r.corners else None,
        "detection_score": r.detection_score,
        "region": r.region,
        "region_confidence": r.region_confidence,
    }


@click.group()
def main():
    """Waypost recognizer commands (the same ones `waypost` registers)."""


main.add_command(eval_command)
main.add_command(recognize_command)
