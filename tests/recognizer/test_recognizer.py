"""Recognizer = shipped detector + shipped OCR, on frames rendered at test time (no mocks)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from recognizer import ImageError, Recognizer, load_image, plate_crop
from recognizer.detector import Detection
from recognizer.plates import render_plate
from recognizer.runtime import available_runtimes
from recognizer.training.intl_plates import render_eu_plate
from recognizer.training.scenes import render_scene

CA_STANDARD = {"state": "ca", "kind": "standard"}  # the post's everyday plate


def _iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def clean_scenes(n, seed, plate_px=(110, 220)):
    """Frames with one clearly visible plate: the case a post must never get wrong."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        sc = render_scene(rng, size=(1280, 720), n_plates=1, degrade=False, plate_px=plate_px, plate_args=CA_STANDARD)
        if len(sc.plates) == 1:
            out.append(sc)
    return out


@pytest.fixture(scope="module")
def rec():
    return Recognizer(threads=1)


def test_reads_the_plate_in_rendered_scenes(rec):
    scenes = clean_scenes(8, seed=11)
    right = 0
    for sc in scenes:
        truth = sc.plates[0]
        reads = rec.read(sc.image)
        over = [r for r in reads if _iou(r.box, truth.box) >= 0.3]
        if over and over[0].text == truth.text:
            right += 1
            r = over[0]
            assert 0 < r.confidence <= 1 and 0 < r.detection_score <= 1
            assert len(r.char_confidences) == len(r.text)
            assert r.corners is None or len(r.corners) == 4
    # the bar is the OCR's, not the detector's: every plate must be found (test_detector), and
    # most of the clean ones read exactly
    assert right >= 5, f"read {right} of 8 rendered plates exactly"


def test_blank_frame_gives_no_read(rec):
    assert rec.read(np.zeros((720, 1280, 3), np.uint8)) == []
    assert rec.read(np.full((480, 640, 3), 128, np.uint8)) == []


def test_read_crop_reads_a_plate_without_detection(rec):
    rng = np.random.default_rng(7)
    right = 0
    for _ in range(5):
        img, text, _state = render_plate(rng, state="ca", kind="standard")
        read = rec.read_crop(np.asarray(img.convert("RGB")))
        assert read.box is None
        right += read.text == text
    assert right >= 4


def test_crop_is_rectified_and_keeps_a_margin():
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[100:150, 100:200] = 255
    det = Detection(
        box=(100, 100, 100, 50), score=0.9, corners=((100.0, 100.0), (200.0, 100.0), (200.0, 150.0), (100.0, 150.0))
    )
    crop = plate_crop(frame, det)
    assert 100 < crop.shape[1] < 130 and 50 < crop.shape[0] < 70
    assert crop[crop.shape[0] // 2, crop.shape[1] // 2].min() == 255
    assert crop[1, 1].max() == 0  # the margin is the surroundings, not plate


def test_read_file_and_bytes(rec, tmp_path):
    sc = clean_scenes(1, seed=12)[0]
    path = tmp_path / "frame.jpg"
    Image.fromarray(sc.image).save(path, quality=92)
    by_path = [r.text for r in rec.read_file(path)]
    by_bytes = [r.text for r in rec.read_file(path.read_bytes())]
    assert by_path == by_bytes and sc.plates[0].text in by_path


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "no data"),
        (b"this is not an image at all", "not a supported image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot decode"),
    ],
)
def test_corrupt_bytes_give_image_error(content, message):
    with pytest.raises(ImageError, match=message):
        load_image(content)


def test_truncated_file_gives_image_error_naming_it(tmp_path):
    sc = clean_scenes(1, seed=13)[0]
    good = tmp_path / "good.jpg"
    Image.fromarray(sc.image).save(good, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(cut)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_bad_frame_arrays_give_image_error(rec):
    with pytest.raises(ImageError, match="uint8"):
        rec.read(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(ImageError, match="shape"):
        rec.read(np.zeros((100, 100, 5), np.uint8))


@pytest.mark.skipif(len(available_runtimes()) < 2, reason="needs both ai_edge_litert and tflite_runtime")
def test_both_runtimes_read_the_same():
    scenes = clean_scenes(2, seed=14, plate_px=(70, 200))
    a, b = Recognizer(runtime="ai_edge_litert"), Recognizer(runtime="tflite_runtime")
    for sc in scenes:
        ra, rb = a.read(sc.image), b.read(sc.image)
        assert [r.box for r in ra] == [r.box for r in rb]
        # float rounding may flip a coin-toss character of an unsure read, never a confident one
        for x, y in zip(ra, rb):
            assert x.confidence == pytest.approx(y.confidence, abs=0.05)
            if x.confidence > 0.5:
                assert x.text == y.text


def test_importing_the_recognizer_does_not_import_tensorflow():
    code = (
        "import sys, numpy as np; import recognizer; from recognizer import Recognizer;"
        "Recognizer().read(np.zeros((64, 64, 3), np.uint8));"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _long_plate_frames(n, seed):
    """A rendered EU plate (520 x 110 mm) pasted on a plain frame: (frame, text, plate box x, y, w, h)."""

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        plate, text = render_eu_plate(rng)
        plate = plate.resize((plate.width * 60 // plate.height, 60))
        frame = Image.new("RGB", (640, 360), (70, 72, 75))
        x, y = int(rng.integers(40, 640 - plate.width - 40)), int(rng.integers(40, 250))
        frame.paste(plate, (x, y), plate)
        out.append((np.asarray(frame), text, (x, y, plate.width, plate.height)))
    return out


def test_a_box_that_cuts_a_long_plate_short_is_widened(rec):
    """The detector draws US-shaped (2:1) boxes, a little taller than the plate; on a long EU plate
    such a box covers only the middle characters, and the read of a crop widened about its centre
    must win."""
    frames = _long_plate_frames(10, seed=5)
    whole = cut_short = 0
    for frame, text, (x, y, w, h) in frames:
        bh = int(h * 1.2)
        narrow = Detection(box=(x + w // 2 - bh, y - (bh - h) // 2, 2 * bh, bh), score=0.9, corners=None)
        cut = rec.ocr.read(plate_crop(frame, narrow)).text
        [read] = rec.read(frame, detections=[narrow])
        cut_short += cut != text
        whole += read.text == text
        assert read.box == narrow.box  # the read still points at the detection
    assert cut_short >= 6, f"the narrow boxes cut only {cut_short} of 10 plates short"
    assert whole >= 8, f"{whole} of 10 long plates read whole"


def test_a_right_box_keeps_its_read(rec):
    """Widening never replaces a read that the wider crop does not extend."""
    for sc in clean_scenes(4, seed=23):
        truth = sc.plates[0]
        det = Detection(box=truth.box, score=0.9, corners=None)
        [read] = rec.read(sc.image, detections=[det])
        assert read.text == rec.ocr.read(plate_crop(sc.image, det)).text


def test_one_or_three_views_of_each_plate_read_clean_scenes_alike():
    """ocr_views only adds views (tight and loose margins) to the usual crop: clean plates read
    the same either way, and the setting is bounded."""
    one, three = Recognizer(threads=1, ocr_views=1), Recognizer(threads=1, ocr_views=3)
    right = {1: 0, 3: 0}
    for sc in clean_scenes(6, seed=23):
        truth = sc.plates[0]
        for n, r in ((1, one), (3, three)):
            reads = [x for x in r.read(sc.image) if _iou(x.box, truth.box) >= 0.3]
            right[n] += bool(reads) and reads[0].text == truth.text
    assert right[3] >= right[1] >= 4, right
    with pytest.raises(ValueError, match="ocr_views must be 1 to 3"):
        Recognizer(ocr_views=4)
