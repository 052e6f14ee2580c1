"""How sightings become passes, with the real recognizer on rendered demo frames: two plates in one
frame are two passes, passes time out by the monotonic clock when frames carry it (an NTP step of
the wall clock neither holds a pass open nor splits one), and a stalled source still ends its
last pass, stores it and raises its alert."""

import datetime as dt
import threading
import time

import pytest

from appliance import hotlist
from appliance.audit import system_actor
from appliance.capture import Capture, Frame, FrameSource
from appliance.capture.demo import DemoStreet
from appliance.models import Alert, Read, utcnow
from appliance.pipeline import Pipeline
from appliance.service import PostService
from appliance.store import EvidenceStore
from recognizer import Recognizer

T0 = dt.datetime(2026, 11, 22, 8, 0, 0)
M0 = 1000.0  # an arbitrary monotonic clock reading


@pytest.fixture(scope="module")
def recognizer():
    return Recognizer(threads=1)


@pytest.fixture(scope="module")
def scene():
    """Two single-car frames of the demo street (each plate read exactly), and the empty road."""
    street = DemoStreet(1280, 720, 10.0, 6.0, 3)
    a, truth_a = street.render(84)
    b, truth_b = street.render(189)
    run = [street.render(i)[0] for i in range(74, 94)]  # car A moving through the view
    return {"a": a, "b": b, "road": street.background.copy(), "truth_a": truth_a[0], "truth_b": truth_b[0], "run": run}


@pytest.fixture
def pipe(settings, db, recognizer, scene, tmp_path):
    csv = tmp_path / "hl.csv"
    csv.write_text(f"plate,reason\n{scene['truth_a'][0]},STOLEN\n{scene['truth_b'][0]},STOLEN\n")
    hotlist.import_csv(settings, csv, "HL", system_actor(settings))
    return Pipeline(settings, recognizer, EvidenceStore(settings))


class Feed:
    """Frames with a wall clock and (optionally) a monotonic clock that can be stepped apart."""

    def __init__(self, mono: bool = True):
        self.at, self.mono, self.index, self.with_mono = T0, M0, 0, mono

    def frame(self, image, step_s: float = 0.1) -> Frame:
        self.index += 1
        f = Frame(
            image=image,
            captured_at=self.at,
            index=self.index,
            source="test",
            mono=self.mono if self.with_mono else None,
        )
        self.at += dt.timedelta(seconds=step_s)
        self.mono += step_s
        return f


def reads():
    return sorted((r.plate, r.first_seen_at, r.last_seen_at) for r in Read.select())


def test_two_plates_in_one_frame_are_two_passes(pipe, recognizer, scene):
    # the car behind, its plate seen over the lead car's roof 2.5 plate heights above the lead's plate
    (x, y, _, h), (bx, by, bw, bh) = scene["truth_a"][1], scene["truth_b"][1]
    image, m = scene["a"].copy(), 12
    patch = scene["b"][by - m : by + bh + m, bx - m : bx + bw + m]
    ny, nx = int(y - 2.5 * h), x + 5
    image[ny - m : ny - m + patch.shape[0], nx - m : nx - m + patch.shape[1]] = patch
    plate_a, plate_b = scene["truth_a"][0], scene["truth_b"][0]
    assert sorted(r.text for r in recognizer.read(image)) == sorted([plate_a, plate_b])  # the scene holds
    feed = Feed()
    for _ in range(10):
        pipe.process(feed.frame(image))
        assert len(pipe.tracks) == 2, [[s.text for s in t.sightings] for t in pipe.tracks]
    assert sorted({s.text for s in t.sightings} == {t.sightings[0].text} for t in pipe.tracks) == [True, True]
    pipe.flush()
    assert sorted(r.plate for r in Read.select()) == sorted([plate_a, plate_b])
    assert sorted(a.entry_plate for a in Alert.select()) == sorted([plate_a, plate_b])


def test_a_wall_clock_step_back_neither_holds_a_pass_open_nor_merges_the_next_car(pipe, scene):
    feed = Feed()
    for _ in range(10):
        pipe.process(feed.frame(scene["a"]))
    feed.at -= dt.timedelta(minutes=5)  # NTP steps the wall clock back; the monotonic clock goes on
    for _ in range(40):  # 4 s of empty road, past the 1.5 s pass timeout
        pipe.process(feed.frame(scene["road"]))
    assert [r[0] for r in reads()] == [scene["truth_a"][0]] and pipe.tracks == []
    for _ in range(10):  # the next car, in the same spot
        pipe.process(feed.frame(scene["b"]))
    pipe.flush()
    assert sorted(r[0] for r in reads()) == sorted([scene["truth_a"][0], scene["truth_b"][0]])
    # what is stored is the wall clock the frames carried
    stored_b = Read.get(Read.plate == scene["truth_b"][0])
    assert stored_b.first_seen_at < T0


def test_a_wall_clock_step_forward_does_not_split_a_pass(pipe, scene):
    feed = Feed()
    for k, image in enumerate(scene["run"]):
        if k == 10:
            feed.at += dt.timedelta(minutes=10)  # NTP steps the wall clock forward mid-pass
        pipe.process(feed.frame(image))
    pipe.flush()
    assert [r[0] for r in reads()] == [scene["truth_a"][0]]
    assert Alert.select().count() == 1


def test_frames_without_a_monotonic_stamp_time_out_by_their_wall_clock(pipe, scene):
    feed = Feed(mono=False)
    for _ in range(10):
        pipe.process(feed.frame(scene["a"]))
    for _ in range(20):
        pipe.process(feed.frame(scene["road"]))
    assert [r[0] for r in reads()] == [scene["truth_a"][0]] and pipe.tracks == []


def test_a_stalled_source_still_ends_the_last_pass_and_raises_its_alert(pipe, scene):
    feed = Feed()
    for _ in range(10):
        pipe.process(feed.frame(scene["a"]))
    last = feed.mono - 0.1
    timeout = pipe.settings.pipeline.pass_timeout_s
    # no frame comes; before the timeout the pass stays open
    assert pipe.close_idle(mono=last + timeout - 0.2) == []
    assert len(pipe.tracks) == 1 and Read.select().count() == 0
    stored = pipe.close_idle(mono=last + timeout + 0.2)
    assert [r.plate for r in stored] == [scene["truth_a"][0]] and pipe.tracks == []
    assert [a.entry_plate for a in Alert.select()] == [scene["truth_a"][0]]
    assert pipe.stats.alerts == 1


def test_a_stalled_source_ends_passes_of_unstamped_frames_by_the_wall_clock(pipe, scene):
    feed = Feed(mono=False)
    for _ in range(10):
        pipe.process(feed.frame(scene["a"]))
    last = feed.at - dt.timedelta(seconds=0.1)
    assert pipe.close_idle(at=last + dt.timedelta(seconds=1.0)) == []
    assert [r.plate for r in pipe.close_idle(at=last + dt.timedelta(seconds=2.0))] == [scene["truth_a"][0]]


class StallingSource(FrameSource):
    """Car A for a second, then a source that delivers nothing more (a hung stream) until closed."""

    type = "stalling"

    def __init__(self, settings, image):
        super().__init__(settings)
        self.image, self.sent, self.closed = image, 0, threading.Event()

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if self.sent >= 10:
            self.closed.wait()
            return None
        self.sent += 1
        return Frame(
            image=self.image, captured_at=utcnow(), mono=time.monotonic(), index=self._next_index(), source=self.name
        )

    def close(self) -> None:
        self.closed.set()


def test_the_service_loop_ends_the_last_pass_of_a_stalled_source(settings, db, pipe, scene):
    service = PostService(settings, with_capture=False)
    source = StallingSource(settings.capture, scene["a"])
    service.capture = Capture(settings, source=source, paced=False)
    service.pipeline = pipe
    service.capture.start()
    worker = threading.Thread(target=service._run_pipeline, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not list(Read.select()):
            time.sleep(0.1)
        assert source.sent == 10 and not service.capture.finished  # the source is stalled, not ended
        assert [r.plate for r in Read.select()] == [scene["truth_a"][0]]
        assert [a.entry_plate for a in Alert.select()] == [scene["truth_a"][0]]
    finally:
        service.stop_event.set()
        service.capture.stop()
        worker.join(5)
