"""The pipeline's own logic on hand-made sightings: voting, direction, association, motion."""

import datetime as dt

import numpy as np

from appliance.pipeline import MotionGate, Sighting, Track, _one_edit, direction, vote
from recognizer.result import Alternative, PlateRead

T0 = dt.datetime(2026, 11, 22, 8, 0, 0)


def sighting(text, conf, box=(100, 100, 80, 40), alts=(), t=0.0):
    read = PlateRead(
        text=text,
        confidence=conf,
        char_confidences=(conf,) * len(text),
        alternatives=tuple(Alternative(a, s) for a, s in alts),
        box=box,
    )
    return Sighting(T0 + dt.timedelta(seconds=t), box, text, conf, read, None)


def test_vote_takes_the_reading_with_most_evidence():
    ss = [sighting("7ABC123", 0.9), sighting("7ABC123", 0.8), sighting("7A8C123", 0.95), sighting("7ABC123", 0.7)]
    text, conf, alts = vote(ss)
    assert text == "7ABC123"
    assert 0.6 < conf < 0.9  # disagreement costs confidence
    assert alts[0]["text"] == "7A8C123"


def test_vote_of_a_single_clean_sighting_keeps_its_confidence():
    text, conf, alts = vote([sighting("5LMN432", 0.97)])
    assert (text, conf, alts) == ("5LMN432", 0.97, [])


def test_vote_never_picks_a_text_only_seen_as_an_alternative():
    ss = [sighting("8XYZ999", 0.5, alts=[("8XYZ990", 0.45)]), sighting("8XYZ998", 0.5, alts=[("8XYZ990", 0.45)])]
    text, _, alts = vote(ss)
    assert text in ("8XYZ999", "8XYZ998")
    assert "8XYZ990" in [a["text"] for a in alts]


def test_direction():
    grow = Track(1, [sighting("A", 0.9, (500, 300, 60, 30), t=0), sighting("A", 0.9, (480, 420, 120, 60), t=1)])
    shrink = Track(2, [sighting("A", 0.9, (480, 420, 120, 60), t=0), sighting("A", 0.9, (500, 300, 60, 30), t=1)])
    across = Track(3, [sighting("A", 0.9, (100, 300, 80, 40), t=0), sighting("A", 0.9, (600, 310, 82, 41), t=1)])
    still = Track(4, [sighting("A", 0.9, (100, 300, 80, 40), t=0)])
    assert direction(grow) == "toward camera"
    assert direction(shrink) == "away from camera"
    assert direction(across) == "left to right"
    assert direction(still) is None


def test_one_edit():
    assert _one_edit("7ABC123", "7ABC123") and _one_edit("7ABC123", "7ABC128") and _one_edit("7ABC123", "7ABC12")
    assert not _one_edit("7ABC123", "7ABD128") and not _one_edit("7ABC123", "7AB")


def test_motion_gate(settings):
    gate = MotionGate(settings)
    road = np.full((360, 640, 3), 90, np.uint8)
    assert gate.moving(road)  # first frame: nothing to compare with
    noisy = road.copy()
    noisy[::7, ::5] += 3  # sensor noise
    assert not gate.moving(noisy)
    car = noisy.copy()
    car[150:260, 200:380] = 200
    assert gate.moving(car)


def test_a_long_pass_holds_few_frames_and_keeps_the_winners_best():
    """Memory stays bounded on a slow vehicle: only the best sighting of the heaviest texts keeps
    its frame, and the voted text's evidence is its own sharpest, most confident sighting."""
    track = Track(1)
    frames = []
    for i in range(300):
        text = "7ABC123" if i % 3 else f"7ABC1{i % 50:02d}"  # noise: 50 different misreads
        conf = 0.6 + 0.3 * ((i * 37) % 100) / 100
        s = sighting(text, conf, box=(100 + i, 100, 80 + i // 10, 40), t=i / 20)
        s.frame = object()
        frames.append(s)
        track.add(s)
        assert sum(x.frame is not None for x in track.sightings) <= Track.MAX_FRAMES
    text, _, _ = vote(track.sightings)
    assert text == "7ABC123"
    shown = track.evidence_for(text)
    agreeing = [s for s in frames if s.text == text]
    assert shown is max(agreeing, key=lambda s: (s.confidence, s.box[2]))
    assert shown.frame is not None
