"""Frame sources on media generated here (no committed images), run through the real Capture."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import random
import time
from datetime import datetime

import cv2
import numpy as np
import pytest

from appliance.capture import Capture, CorruptFrame, Frame, SourceError, backoff_delays, create_source, demo
from appliance.capture.picamera2 import camera_controls, lores_to_rgb, stream_sizes
from tests.conftest import make_settings


def capture_settings(tmp_path, **capture):
    return make_settings(tmp_path / "data", **{f"capture__{k}": v for k, v in capture.items()}).capture


def drain(capture: Capture, limit: int = 1000, timeout: float = 5.0) -> list[Frame]:
    frames: list[Frame] = []
    while len(frames) < limit:
        frame = capture.get(timeout)
        if frame is None:
            break
        frames.append(frame)
    return frames


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


# Distinct colours, written by OpenCV as BGR: the frames must come back as RGB.
COLOURS_RGB = [(220, 30, 30), (30, 200, 40), (40, 50, 210), (230, 230, 40), (200, 40, 200)]


def write_video(path, n: int = 12, size=(320, 240), fourcc="MJPG", fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)  # type: ignore[attr-defined]  # OpenCV's stubs declare only VideoWriter.fourcc
    assert writer.isOpened()
    for i in range(n):
        img = np.full((size[1], size[0], 3), 10 + i * 240 // max(n - 1, 1), np.uint8)  # 10 .. 250
        img[:40, :40] = (0, 0, 255)  # BGR red corner
        writer.write(img)
    writer.release()
    return path


def grey(frame: Frame) -> int:
    return int(np.median(frame.image[100:, 100:]))


# --- folder ------------------------------------------------------------------------------------
@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    # Written out of order; read back in name order.
    for i in (3, 0, 4, 1, 2):
        r, g, b = COLOURS_RGB[i]
        cv2.imwrite(str(folder / f"img_{i:02d}.jpg"), np.full((120, 160, 3), (b, g, r), np.uint8))
    good = (folder / "img_01.jpg").read_bytes()
    (folder / "img_01b.jpg").write_bytes(good[: len(good) // 2])  # cut short
    (folder / "img_02b.txt").write_text("not an image\n")
    return folder


def test_folder_in_name_order_skipping_corrupt_and_non_image_files(tmp_path, image_folder, caplog):
    settings = capture_settings(tmp_path, type="folder", source=image_folder, loop="false")
    caplog.set_level(logging.ERROR, logger="waypost.capture")
    capture = Capture(settings, paced=False).start()
    frames = drain(capture)
    capture.stop()

    got = [int(c) for f in frames for c in f.image[60, 80]]
    assert got == pytest.approx([c for rgb in COLOURS_RGB for c in rgb], abs=6)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert all(f.image.dtype == np.uint8 and f.image.shape == (120, 160, 3) and f.hires is None for f in frames)
    assert all(f.truth == [] and f.source == f"folder:{image_folder}" for f in frames)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("img_01b.jpg" in m for m in errors) and any("img_02b.txt" in m for m in errors)
    status = capture.status()
    assert status["state"] == "ended" and status["errors"] == 2 and status["frames_delivered"] == 5
    assert "img_02b.txt" in status["last_error"]


def test_folder_source_raises_corrupt_frame_and_reads_on(tmp_path, image_folder):
    with create_source(capture_settings(tmp_path, type="folder", source=image_folder, loop="false")) as source:
        source.read(), source.read()  # img_00, img_01
        with pytest.raises(CorruptFrame, match="img_01b.jpg"):
            source.read()
        assert source.read().image[60, 80, 2] > 150  # img_02 (blue) comes next


def test_folder_loop_starts_again_with_increasing_index(tmp_path, image_folder):
    capture = Capture(capture_settings(tmp_path, type="folder", source=image_folder), paced=False).start()
    frames = drain(capture, limit=12)
    capture.stop()
    assert [f.index for f in frames] == list(range(12))
    reds = [int(f.image[60, 80, 0]) for f in frames]
    assert reds[:5] == reds[5:10]


def test_folder_without_any_readable_image_is_retried_not_spun(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8 not really")
    capture = Capture(
        capture_settings(tmp_path, type="folder", source=folder, reconnect_max_s=1), backoff_initial_s=0.05
    ).start()
    wait_for(lambda: capture.status()["state"] == "reconnecting")
    capture.stop()
    assert "none of its 1 files is a readable image" in capture.status()["last_error"]


# --- video -------------------------------------------------------------------------------------
def test_video_frames_in_order_as_rgb_then_end(tmp_path):
    path = write_video(tmp_path / "clip.avi")
    with create_source(capture_settings(tmp_path, type="video", source=path, loop="false")) as source:
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        assert source.read() is None
    assert len(frames) == 12
    greys = [grey(f) for f in frames]
    assert greys == sorted(greys) and greys[-1] - greys[0] > 180
    red = frames[0].image[20, 20]
    assert red[0] > 200 and red[2] < 60  # BGR from OpenCV became RGB
    assert isinstance(frames[0].captured_at, datetime) and frames[0].captured_at.tzinfo is None


def test_video_loop_starts_again(tmp_path):
    path = write_video(tmp_path / "clip.mp4", n=6, fourcc="mp4v")
    with create_source(capture_settings(tmp_path, type="video", source=path, loop="true")) as source:
        frames = [source.read() for _ in range(15)]
    assert [f.index for f in frames] == list(range(15))
    greys = [grey(f) for f in frames]
    assert greys[:6] == pytest.approx(greys[6:12], abs=3) and greys[5] > greys[6] + 60


def test_truncated_video_ends_with_a_logged_error(tmp_path, caplog):
    whole = write_video(tmp_path / "clip.avi", n=20).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) // 2])
    caplog.set_level(logging.ERROR, logger="waypost.capture")
    capture = Capture(capture_settings(tmp_path, type="video", source=cut, loop="false"), paced=False).start()
    frames = drain(capture)
    capture.stop()
    assert 0 < len(frames) < 20
    status = capture.status()
    assert status["state"] == "ended" and status["errors"] == 1
    assert str(cut) in status["last_error"] and "cut short" in status["last_error"]
    assert any(str(cut) in r.getMessage() for r in caplog.records)


def test_truncated_video_loops_cleanly(tmp_path):
    whole = write_video(tmp_path / "clip.avi", n=20).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) // 2])
    capture = Capture(capture_settings(tmp_path, type="video", source=cut, loop="true"), paced=False).start()
    frames = drain(capture, limit=40)
    capture.stop()
    assert len(frames) == 40 and [f.index for f in frames] == list(range(40))
    assert capture.status()["errors"] >= 2 and capture.status()["state"] == "stopped"


def test_unopenable_video_is_retried_with_its_name_in_the_status(tmp_path):
    whole = write_video(tmp_path / "clip.mp4", fourcc="mp4v").read_bytes()
    cut = tmp_path / "cut.mp4"  # mp4v keeps its index at the end: cut, it cannot be opened
    cut.write_bytes(whole[: len(whole) // 2])
    capture = Capture(
        capture_settings(tmp_path, type="video", source=cut, reconnect_max_s=1), backoff_initial_s=0.05
    ).start()
    status = wait_for(lambda: (s := capture.status())["state"] == "reconnecting" and s)
    capture.stop()
    assert str(cut) in status["last_error"] and status["frames_delivered"] == 0


# --- stream, reconnection and backoff ------------------------------------------------------------
def test_backoff_doubles_with_jitter_and_is_capped():
    delays = backoff_delays(1.0, 8.0, random.Random(1))
    got = [next(delays) for _ in range(8)]
    for n, d in enumerate(got):
        nominal = min(8.0, 2.0**n)
        assert 0.8 * nominal <= d <= nominal
    assert max(got) <= 8.0 and got[3] > got[1] > got[0]


def test_failing_stream_reconnects_with_growing_capped_backoff(tmp_path):
    settings = capture_settings(tmp_path, type="stream", source=tmp_path / "no-such-camera.mjpg", reconnect_max_s=1)
    capture = Capture(settings, backoff_initial_s=0.1).start()
    seen = []
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline and len(seen) < 6:
        status = capture.status()
        if status["retry_in_s"] is not None and (not seen or status["reconnects"] != seen[-1][0]):
            seen.append((status["reconnects"], status["retry_in_s"]))
        time.sleep(0.01)
    capture.stop()
    assert status["state"] == "reconnecting" and "no-such-camera.mjpg" in status["last_error"]
    delays = [d for _, d in seen]
    assert len(delays) >= 5
    assert delays[0] <= 0.1 and max(delays) <= 1.0 and delays[-1] >= 0.8 and delays[3] > delays[0]
    assert capture.status()["state"] == "stopped"


def test_stream_that_drops_is_reopened(tmp_path):
    # A file played as a stream ends like a dropped connection; the capture reopens it.
    path = write_video(tmp_path / "clip.avi", n=8)
    capture = Capture(
        capture_settings(tmp_path, type="stream", source=path, reconnect_max_s=1),
        paced=False,
        queue_size=100,
        backoff_initial_s=0.05,
    ).start()
    wait_for(lambda: capture.status()["frames_delivered"] >= 20)
    capture.stop()
    status = capture.status()
    assert status["reconnects"] >= 2 and "stopped delivering frames after 8 frames" in status["last_error"]
    frames = drain(capture)
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + len(frames)))


def test_stream_url_credentials_are_not_shown(tmp_path):
    source = create_source(capture_settings(tmp_path, type="stream", source="rtsp://admin:hunter2@10.0.0.9/live"))
    assert "hunter2" not in source.name and "admin" in source.name


def test_picamera2_missing_gives_the_install_instructions(tmp_path):
    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("picamera2 is installed here")
    source = create_source(capture_settings(tmp_path, type="picamera2"))
    with pytest.raises(SourceError, match=r"apt install python3-picamera2.*--system-site-packages"):
        source.open()


# --- queue and stop --------------------------------------------------------------------------------
def test_full_queue_drops_the_oldest_frames(tmp_path):
    settings = capture_settings(tmp_path, type="demo", width=320, height=240, fps=60)
    capture = Capture(settings, queue_size=2).start()
    wait_for(lambda: capture.status()["frames_delivered"] >= 12)
    capture.stop()
    status = capture.status()
    delivered = status["frames_delivered"]
    assert status["frames_dropped"] == delivered - 2 and status["queue_depth"] == 2
    assert [f.index for f in drain(capture)] == [delivered - 2, delivered - 1]
    assert capture.get(0.01) is None and capture.finished


def test_stop_returns_promptly_while_pacing_and_while_backing_off(tmp_path):
    slow = Capture(capture_settings(tmp_path, type="demo", width=320, height=240, fps=0.2)).start()
    assert slow.get(5) is not None
    failing = Capture(
        capture_settings(tmp_path, type="video", source=tmp_path / "missing.avi", reconnect_max_s=60),
        backoff_initial_s=30,
    ).start()
    wait_for(lambda: failing.status()["state"] == "reconnecting")
    for capture in (slow, failing):
        started = time.monotonic()
        capture.stop()
        assert time.monotonic() - started < 0.5
        assert capture.status()["state"] == "stopped"


def test_paced_capture_keeps_to_fps(tmp_path):
    capture = Capture(capture_settings(tmp_path, type="demo", width=320, height=240, fps=20)).start()
    first = capture.get(5)
    frames = drain(capture, limit=10)
    capture.stop()
    assert len(frames) == 10 and frames[-1].index - first.index == 10
    elapsed = (frames[-1].captured_at - first.captured_at).total_seconds()
    assert 0.35 < elapsed < 0.9  # 10 frames at 20 fps: 0.5 s
    assert 14 < capture.status()["fps"] < 26


def test_status_is_json_ready(tmp_path):
    capture = Capture(capture_settings(tmp_path, type="demo", width=320, height=240)).start()
    capture.get(5)
    status = capture.status()
    capture.stop()
    json.dumps(status)
    assert status["state"] == "ok" and status["type"] == "demo" and status["last_frame_at"].endswith("Z")


# --- demo ---------------------------------------------------------------------------------------
def test_demo_minute_of_traffic_has_plates_in_truth_including_hotlisted_ones():
    street = demo.DemoStreet(1280, 720, fps=5, vehicles_per_min=12, seed=0)
    empty = street.background
    plates, hotlisted = set(), {e["plate"] for e in demo.DEMO_HOTLIST}
    in_view = []
    for index in range(0, 300):
        image, truth = street.render(index)
        in_view.append(len(street.vehicles_at(index / 5)))
        for plate, (x, y, w, h) in truth:
            plates.add(plate)
            assert 0 <= x and 0 <= y and x + w <= 1280 and y + h <= 720
            assert 64 <= w <= 0.2 * 1280 and 1.6 <= w / h <= 2.4
            crop = image[y : y + h, x : x + w].astype(np.float32)
            # A plate: not the empty street, and lettering on a plain ground (strong contrast).
            assert np.abs(crop - empty[y : y + h, x : x + w]).mean() > 15
            assert crop.mean(axis=2).std() > 25
    assert len(plates) >= 8
    assert len(plates & hotlisted) >= 2
    assert max(in_view) <= demo.MAX_IN_VIEW and np.mean([n >= 1 for n in in_view]) > 0.9


def test_demo_is_deterministic_by_seed():
    a, b, c = (demo.DemoStreet(640, 360, 10, 20, seed) for seed in (3, 3, 4))
    for index in (0, 37, 121):
        image_a, truth_a = a.render(index)
        image_b, truth_b = b.render(index)
        assert np.array_equal(image_a, image_b) and truth_a == truth_b
    assert not np.array_equal(a.render(200)[0], c.render(200)[0])


def test_demo_source_frames(tmp_path):
    settings = capture_settings(tmp_path, type="demo", width=640, height=360, demo_seed=2)
    with create_source(settings) as source:
        frames = [source.read() for _ in range(3)]
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[0].image.shape == (360, 640, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].hires is None and frames[0].source == "demo:seed=2"


def test_demo_hotlist_csv(tmp_path):
    path = demo.demo_hotlist_csv(tmp_path / "lists" / "demo.csv")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["plate", "state", "reason", "entry_date", "source_ref"]
    assert rows == [{k: str(v) for k, v in e.items()} for e in demo.DEMO_HOTLIST]
    assert len(rows) == len(demo.PLATES) // 5
    for row in rows:
        datetime.strptime(row["entry_date"], "%Y-%m-%d")
        assert row["plate"].isalnum() and row["plate"].isupper()
    # Every fifth vehicle, whatever the seed.
    for seed in (0, 7):
        street = demo.DemoStreet(640, 360, 10, 30, seed)
        hot = {e["plate"] for e in demo.DEMO_HOTLIST}
        assert [v.plate in hot for v in street.passes(60)][:15] == [k % 5 == 0 for k in range(15)]


def test_write_clip_with_truth_reads_back(tmp_path):
    path = tmp_path / "street.avi"
    truth = demo.write_clip(path, seconds=4, fps=10, width=640, height=360, seed=1, vehicles_per_min=30)
    saved = json.loads((tmp_path / "street.avi.truth.json").read_text())
    assert saved["frames"].keys() == {str(i) for i in range(40)} and len(saved["passes"]) == len(truth["passes"])
    for p in saved["passes"]:
        assert p["first_frame"] <= p["last_frame"] and any(
            b["plate"] == p["plate"] for b in saved["frames"][str(p["first_frame"])]
        )
    with create_source(capture_settings(tmp_path, type="video", source=path, loop="false")) as source:
        count = 0
        while source.read() is not None:
            count += 1
    assert count == 40
    empty = demo.write_clip(tmp_path / "empty.mp4", seconds=1, fps=10, width=640, height=360, empty=True)
    assert empty["passes"] == [] and all(v == [] for v in empty["frames"].values())


def test_picamera2_stream_sizes_controls_and_lores_conversion(tmp_path):
    settings = capture_settings(
        tmp_path,
        type="picamera2",
        width=2028,
        height=1520,
        detect_width=1000,
        exposure_time_us=800,
        analogue_gain=4,
        fps=12.5,
    )
    main, lores = stream_sizes(settings)
    assert main == (2028, 1520) and lores[0] % 64 == 0 and lores[0] <= 1000
    assert abs(lores[1] / lores[0] - 1520 / 2028) < 0.01 and lores[1] % 2 == 0
    assert camera_controls(settings) == {
        "FrameDurationLimits": (80000, 80000),
        "ExposureTime": 800,
        "AnalogueGain": 4.0,
        "AeEnable": False,
    }
    auto = capture_settings(tmp_path, type="picamera2", exposure_time_us=0, analogue_gain=0)
    assert set(camera_controls(auto)) == {"FrameDurationLimits"}

    # An I420 buffer laid out at a padded stride, as picamera2 hands it over.
    h, w, stride = 64, 96, 128
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, :48] = (200, 40, 40)
    rgb[:, 48:] = (40, 60, 210)
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    y, u, v = yuv[:h], yuv[h : h + h // 4].reshape(h // 2, w // 2), yuv[h + h // 4 :].reshape(h // 2, w // 2)
    pad = np.zeros((h * 3 // 2, stride), np.uint8)
    pad[:h, :w] = y
    for plane, row0 in ((u, h), (v, h + h // 4)):
        padded = np.zeros((h // 2, stride // 2), np.uint8)
        padded[:, : w // 2] = plane
        pad[row0 : row0 + h // 4] = padded.reshape(h // 4, stride)
    out = lores_to_rgb(pad, w)
    assert out.shape == (h, w, 3)
    assert np.abs(out[:, 4:44].astype(int) - (200, 40, 40)).max() < 12
    assert np.abs(out[:, 52:92].astype(int) - (40, 60, 210)).max() < 12


def test_damaged_frames_inside_a_video_are_skipped_and_counted(tmp_path):
    data = bytearray(write_video(tmp_path / "clip.avi", n=20).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 1500] = bytes(1500)  # a frame or two
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(bytes(data))
    capture = Capture(capture_settings(tmp_path, type="video", source=damaged, loop="false"), paced=False).start()
    frames = drain(capture)
    capture.stop()
    greys = [grey(f) for f in frames]
    assert 10 < len(frames) < 19 and greys == sorted(greys) and greys[-1] > 240  # read on to the last
    status = capture.status()
    assert status["state"] == "ended" and status["errors"] == 1 and str(damaged) in status["last_error"]
