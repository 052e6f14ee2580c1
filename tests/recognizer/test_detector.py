"""The shipped plate detector, run for real on scenes the project renders at test time."""

from __future__ import annotations

import numpy as np
import pytest

from recognizer.detector import DEFAULT_MODEL, PlateDetector, decode, letterbox
from recognizer.runtime import available_runtimes
from recognizer.training.scenes import render_scene


def _iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def rendered_scenes(n, seed, **kw):
    """n frames with exactly one visible plate each (the renderer sometimes hides a plate)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        sc = render_scene(rng, n_plates=1, **kw)
        if len(sc.plates) == 1:
            out.append(sc)
    return out


@pytest.fixture(scope="module")
def detector():
    return PlateDetector(threads=1)


def test_model_is_small_with_the_documented_io():
    assert DEFAULT_MODEL.stat().st_size < 1_000_000
    det = PlateDetector()
    assert det.model.input_shape == (1, 288, 512, 3)
    out = det.model.run(np.zeros((1, 288, 512, 3), np.float32))[0]
    assert out.shape == (1, 72, 128, 13)


def test_finds_the_plate_in_rendered_scenes(detector):
    scenes = rendered_scenes(6, seed=101, size=(1280, 720), degrade=False, plate_px=(80, 220))
    found = 0
    for sc in scenes:
        truth = sc.plates[0].box
        dets = detector.detect(sc.image)
        found += any(_iou(d.box, truth) >= 0.5 for d in dets)
    assert found >= 5, f"found {found} of 6 rendered plates"


def test_finds_small_degraded_plates(detector):
    # the hard end of what a post sees: 60-90 px plates in a 1280 px frame, with degradations
    scenes = rendered_scenes(8, seed=202, size=(1280, 720), degrade=True, plate_px=(60, 90))
    found = sum(any(_iou(d.box, sc.plates[0].box) >= 0.3 for d in detector.detect(sc.image)) for sc in scenes)
    assert found >= 5, f"found {found} of 8 small plates"


def test_second_look_finds_distant_plates_the_whole_frame_misses(detector):
    # 30-40 px plates in a 1920x1080 frame are 8-11 px in the whole-frame input; the corner
    # windows see them at 14-18 px
    scenes = rendered_scenes(10, seed=505, size=(1920, 1080), degrade=False, plate_px=(30, 40))
    first_pass_only = PlateDetector(threads=1, second_look=False)

    def found(det):
        return sum(any(_iou(d.box, sc.plates[0].box) >= 0.3 for d in det.detect(sc.image)) for sc in scenes)

    without, with_second_look = found(first_pass_only), found(detector)
    assert with_second_look >= 8, f"found {with_second_look} of 10 distant plates"
    assert with_second_look > without + 2, (without, with_second_look)


def test_corners_lie_on_the_plate(detector):
    sc = rendered_scenes(1, seed=303, size=(1280, 720), degrade=False, plate_px=(150, 220))[0]
    dets = detector.detect(sc.image)
    best = max(dets, key=lambda d: _iou(d.box, sc.plates[0].box))
    assert best.corners is not None
    err = np.abs(np.array(best.corners) - sc.plates[0].corners).max()
    assert err < 0.2 * sc.plates[0].box[2], f"corner error {err:.1f} px"


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((720, 1280, 3), np.uint8),
        np.full((480, 640, 3), 200, np.uint8),
        np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8),
    ],
)
def test_blank_or_noise_frame_gives_no_detection(detector, frame):
    assert detector.detect(frame) == []


def test_gray_frame_is_accepted(detector):
    sc = rendered_scenes(1, seed=404, size=(1024, 640), degrade=False, plate_px=(120, 200))[0]
    gray = sc.image.mean(axis=2).astype(np.uint8)
    dets = detector.detect(gray)
    assert any(_iou(d.box, sc.plates[0].box) >= 0.3 for d in dets)


def test_letterbox_and_decode_map_back_to_frame_pixels():
    frame = np.zeros((720, 1280, 3), np.uint8)
    x, lb = letterbox(frame, 512, 288)
    assert x.shape == (288, 512, 3) and lb.scale == pytest.approx(0.4)
    out = np.zeros((72, 128, 13), np.float32)
    out[20, 30, 0] = 0.9  # a peak at cell (30, 20)
    out[20, 30, 1:3] = 0.5  # centre at (30.5, 20.5) cells = (122, 82) input px
    out[20, 30, 3:5] = np.log([32 / 16, 16 / 16])
    out[20, 30, 5:13] = [-0.5, -0.5, 0.5, -0.5, 0.5, 0.5, -0.5, 0.5]
    ((score, box, corners),) = decode(out)
    assert score == pytest.approx(0.9)
    np.testing.assert_allclose(box, [106, 74, 138, 90], atol=1e-4)
    np.testing.assert_allclose(corners, [[106, 74], [138, 74], [138, 90], [106, 90]], atol=1e-4)
    out[10, 10, 0] = 0.2  # below the threshold: not a plate
    assert len(decode(out)) == 1


@pytest.mark.skipif(len(available_runtimes()) < 2, reason="needs both ai_edge_litert and tflite_runtime")
def test_both_runtimes_give_the_same_detections():
    scenes = rendered_scenes(3, seed=505, size=(1280, 720), degrade=True, plate_px=(70, 200))
    a = PlateDetector(runtime="ai_edge_litert")
    b = PlateDetector(runtime="tflite_runtime")
    for sc in scenes:
        da, db = a.detect(sc.image), b.detect(sc.image)
        assert len(da) == len(db)
        for x, y in zip(da, db):
            assert np.abs(np.array(x.box) - np.array(y.box)).max() <= 1
            assert x.score == pytest.approx(y.score, abs=1e-3)
