"""`waypost eval` / `waypost recognize` (the click commands in recognizer.cli), on folders the test renders."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from recognizer.cli import eval_command, recognize_command
from recognizer.plates import render_plate
from recognizer.training.scenes import render_scene


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    """Four rendered frames with one plate each, plus one frame whose plate is not there."""
    d = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(21)
    rows = []
    while len(rows) < 4:
        sc = render_scene(
            rng,
            size=(1280, 720),
            n_plates=1,
            degrade=False,
            plate_px=(110, 220),
            plate_args={"state": "ca", "kind": "standard"},
        )
        if len(sc.plates) != 1:
            continue
        name = f"scene{len(rows)}.jpg"
        Image.fromarray(sc.image).save(d / name, quality=92)
        x, y, w, h = sc.plates[0].box
        rows.append([name, round(x), round(y), round(w), round(h), sc.plates[0].text])
    Image.fromarray(np.full((720, 1280, 3), 90, np.uint8)).save(d / "empty.jpg")
    rows.append(["empty.jpg", 600, 300, 80, 40, "ABC123"])
    with open(d / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file", "x", "y", "w", "h", "plate"]] + rows)
    return d


@pytest.fixture(scope="module")
def crops_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(22)
    rows = [["file", "state", "plate"]]
    for i in range(4):
        img, text, state = render_plate(rng, state="ca", kind="standard")
        img.convert("RGB").save(d / f"ca{i}.png")
        rows.append([f"ca{i}.png", state, text])
    with open(d / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return d


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_eval_scenes_prints_the_figures_as_the_last_line(scenes_dir, tmp_path):
    out = tmp_path / "rows.csv"
    res = CliRunner().invoke(eval_command, [str(scenes_dir), "--out", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    figures = last_json(res.stdout)
    assert figures["kind"] == "scenes" and figures["n"] == 5
    for key in ("exact_match", "char_error_rate", "detection_recall", "ms_median", "ms_p95"):
        assert key in figures
    # 4 of 5 labelled plates exist; the empty frame can be neither detected nor read
    assert 0.6 <= figures["detection_recall"] <= 0.8
    assert 0.6 <= figures["exact_match"] <= 0.8
    assert 0 < figures["ms_median"] <= figures["ms_p95"] < 1000
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows][-1] == "empty.jpg" and rows[-1]["read"] == ""
    assert {"file", "truth", "read", "confidence", "ms"} <= set(rows[0])


def test_eval_crops(crops_dir):
    res = CliRunner().invoke(eval_command, [str(crops_dir)])
    assert res.exit_code == 0, res.output
    figures = last_json(res.stdout)
    assert figures["kind"] == "crops" and figures["n"] == 4
    assert figures["exact_match"] >= 0.75
    assert "state_accuracy" in figures and figures["ms_median"] > 0


def test_eval_rejects_a_folder_without_labels(tmp_path):
    res = CliRunner().invoke(eval_command, [str(tmp_path)])
    assert res.exit_code != 0 and "labels.csv" in res.output


def test_eval_counts_a_corrupt_image_as_unread(scenes_dir, tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "bad.jpg").write_bytes((scenes_dir / "scene0.jpg").read_bytes()[:500])
    (d / "labels.csv").write_text("file,x,y,w,h,plate\nbad.jpg,1,1,10,5,AB12\n")
    res = CliRunner().invoke(eval_command, [str(d)])
    assert res.exit_code == 0, res.output
    figures = last_json(res.stdout)
    assert figures["n"] == 1 and figures["exact_match"] == 0 and figures["errors"] == 1


def test_recognize_prints_reads_and_names_bad_files(scenes_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    labels = {r["file"]: r["plate"] for r in csv.DictReader(open(scenes_dir / "labels.csv"))}
    res = CliRunner().invoke(recognize_command, [str(scenes_dir / "scene0.jpg"), str(bad)])
    assert res.exit_code == 1
    assert labels["scene0.jpg"] in res.stdout
    assert "bad.png" in res.stderr


def test_python_m_recognizer_eval_runs(scenes_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "recognizer", "eval", str(scenes_dir), "--limit", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert last_json(proc.stdout)["n"] == 2
