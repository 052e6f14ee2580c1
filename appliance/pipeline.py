"""From frames to vehicle passes: motion gate, detect and read, track, vote, store one read per pass.

A plate is seen in many frames as its vehicle crosses the view. Each sighting joins the track
whose last box it overlaps (or whose text it repeats); a track that has not been seen for
`pipeline.pass_timeout_s` is a finished pass and becomes ONE read: the text with the most
confidence summed over its sightings, the sharpest crop of that text with its frame as context,
the other readings as alternatives, first/last seen time and the direction of travel. Reads
below `recognizer.min_confidence` are stored all the same, marked low-confidence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
import peewee

from appliance import alerts, store
from appliance.config import Settings
from appliance.models import Read, utcnow
from recognizer.similarity import box_iou, edits_within_one

if TYPE_CHECKING:  # for the annotations of Sighting only: the import graph stays as it is
    from appliance.capture import Frame
    from recognizer import PlateRead

log = logging.getLogger("waypost.pipeline")

# A reading shorter than this is a fragment (an emblem, one character of a far plate), not a plate.
MIN_PLATE_CHARS = 2

# Finished passes held for another try while the database refuses them (another writer holds its
# lock past storage.busy_timeout_ms): about a minute of the busiest traffic. Each holds its evidence
# frame, so the queue is bounded; past it the oldest are dropped, and their plates logged.
MAX_UNSTORED = 16

DISK_FULL_NOTE = "images not stored: disk full"
UNWRITABLE_NOTE = "images not stored: the evidence directory refused the write"


@dataclass
class Sighting:
    at: dt.datetime
    box: tuple[int, int, int, int]
    text: str
    confidence: float
    read: PlateRead
    frame: Frame | None  # let go of (None) once another sighting of the pass holds the better evidence
    mono: float | None = None  # the frame's monotonic stamp (live capture), for pass timeouts


def _evidence_rank(s: Sighting) -> tuple[float, int]:
    """Which sighting of a text gives the pass its evidence: the most confident, then the widest."""
    return s.confidence, s.box[2]


@dataclass
class Track:
    id: int
    sightings: list[Sighting] = field(default_factory=list)
    best_by_text: dict[str, Sighting] = field(default_factory=dict)
    weight: dict[str, float] = field(default_factory=dict)
    refused: bool = False  # finished, and the database has refused to store it at least once

    MAX_FRAMES = 4  # evidence candidates held per pass (each is a whole frame)

    def add(self, s: Sighting) -> None:
        """Append a sighting. Frames are held only by the best sighting of each of the texts with
        the most weight so far: a pass of a slow vehicle is hundreds of frames and only one of
        them becomes evidence."""
        self.sightings.append(s)
        self.weight[s.text] = self.weight.get(s.text, 0.0) + s.confidence
        held = self.best_by_text.get(s.text)
        if held is not None and _evidence_rank(s) <= _evidence_rank(held):
            s.frame = None
        else:
            if held is not None:
                held.frame = None
            self.best_by_text[s.text] = s
        holding = [t for t, h in self.best_by_text.items() if h.frame is not None]
        for text in sorted(holding, key=lambda t: -self.weight[t])[self.MAX_FRAMES :]:
            self.best_by_text[text].frame = None

    @property
    def last(self) -> Sighting:
        return self.sightings[-1]

    def evidence_for(self, text: str) -> Sighting:
        """The sighting whose frame gives the evidence of a pass read as `text`: its best sighting
        of that text, or, when that text never gathered weight enough to keep a frame, the best
        sighting that kept one (the same vehicle in the same pass)."""
        best = self.best_by_text.get(text)
        if best is not None and best.frame is not None:
            return best
        return max((s for s in self.best_by_text.values() if s.frame is not None), key=_evidence_rank)

    def hold_evidence_only(self) -> None:
        """Let go of every frame but the one the finished pass will be stored with (a pass that
        waits to be stored holds one frame, not MAX_FRAMES)."""
        keep = self.evidence_for(vote(self.sightings)[0])
        for s in self.best_by_text.values():
            if s is not keep:
                s.frame = None


def _near(a, b, reach: float = 1.5) -> bool:
    """The next box lies within `reach` plate widths of the last one (vehicles move between frames)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    dx = abs((ax + aw / 2) - (bx + bw / 2))
    dy = abs((ay + ah / 2) - (by + bh / 2))
    return dx <= reach * max(aw, bw) and dy <= reach * 2 * max(ah, bh)


def _one_edit(a: str, b: str) -> bool:
    return edits_within_one(a, b) is not None


def _match_score(last: Sighting, s: Sighting) -> float:
    """How well a sighting continues a pass whose last sighting is `last` (0: not at all)."""
    score = box_iou(last.box, s.box)
    if score < 0.05 and _near(last.box, s.box):
        score = 0.05
    if _one_edit(last.text, s.text) and _near(last.box, s.box, reach=4.0):
        score += 0.5
    return score


def _distance(a, b) -> float:
    """Between the centres of two boxes, in pixels."""
    return float(np.hypot((a[0] + a[2] / 2) - (b[0] + b[2] / 2), (a[1] + a[3] / 2) - (b[1] + b[3] / 2)))


def _idle_s(last: Sighting, now: dt.datetime, mono: float | None) -> float:
    """Seconds since a pass's last sighting: by the monotonic clock when both carry its stamp
    (live capture: a step of the wall clock by NTP neither holds a pass open nor splits it), else
    by the wall clock (replayed frames, frames made without a stamp)."""
    if mono is not None and last.mono is not None:
        return mono - last.mono
    return (now - last.at).total_seconds()


def vote(sightings: list[Sighting]) -> tuple[str, float, list[dict]]:
    """(text, confidence, alternatives) for a pass. Confidence is the best single-frame confidence
    of the winning text, scaled by the share of the pass's evidence that agrees with it."""
    weight: dict[str, float] = defaultdict(float)
    best: dict[str, float] = defaultdict(float)
    for s in sightings:
        weight[s.text] += s.confidence
        best[s.text] = max(best[s.text], s.confidence)
        for alt in s.read.alternatives:
            weight[alt.text] += alt.score * 0.5  # an alternative is weaker evidence than a top reading
    total = sum(weight.values()) or 1.0
    ranked = sorted(weight, key=lambda t: (-weight[t], -best.get(t, 0.0), t))
    winner = next((t for t in ranked if t in best), ranked[0])
    confidence = best[winner] * (weight[winner] / total) ** 0.5
    alternatives = [{"text": t, "score": round(weight[t] / total, 4)} for t in ranked if t != winner][:5]
    return winner, round(min(1.0, confidence), 4), alternatives


def direction(track: Track) -> str | None:
    """Toward/away from the camera by the plate's growth; else across the view by its motion."""
    if len(track.sightings) < 2:
        return None
    first, last = track.sightings[0].box, track.sightings[-1].box
    growth = last[2] / max(first[2], 1)
    dx = (last[0] + last[2] / 2) - (first[0] + first[2] / 2)
    if growth > 1.15:
        return "toward camera"
    if growth < 0.87:
        return "away from camera"
    if abs(dx) > first[2]:
        return "left to right" if dx > 0 else "right to left"
    return None


class MotionGate:
    """Is anything moving in the region of interest? Compares small grey copies of successive
    frames, so an empty road costs a resize and a subtraction."""

    WIDTH = 160

    def __init__(self, settings: Settings):
        self.cfg = settings.pipeline
        self.previous: np.ndarray | None = None

    def moving(self, image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        left, top, right, bottom = self.cfg.roi
        roi = image[int(top * h) : int(bottom * h), int(left * w) : int(right * w)]
        scale = self.WIDTH / roi.shape[1]
        small = cv2.resize(roi, (self.WIDTH, max(1, int(roi.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY) if small.ndim == 3 else small, (5, 5), 0)
        previous, self.previous = self.previous, grey
        if previous is None or previous.shape != grey.shape:
            return True
        changed = np.count_nonzero(cv2.absdiff(grey, previous) > self.cfg.motion_threshold)
        return changed >= self.cfg.min_motion_fraction * grey.size


@dataclass
class Stats:
    frames: int = 0
    frames_read: int = 0
    sightings: int = 0
    passes: int = 0
    reads_stored: int = 0
    passes_dropped: int = 0
    alerts: int = 0
    errors: int = 0


class Pipeline:
    """Not thread-safe: one pipeline per capture, fed from one thread."""

    def __init__(self, settings: Settings, recognizer, evidence: store.EvidenceStore, bus=None, notifier=None):
        self.settings = settings
        self.recognizer = recognizer
        self.evidence = evidence
        self.bus = bus
        self.notifier = notifier
        self.gate = MotionGate(settings)
        self.tracks: list[Track] = []
        self.unstored: list[Track] = []  # finished passes the database refused for now, oldest first
        self._next_id = 1
        self.stats = Stats()
        self.low_disk: str | None = None
        # why the last read was refused its images (store.DiskFull or store.EvidenceUnwritable),
        # until images are stored again: each kind is logged once per episode
        self._images_refused: type | None = None

    # -- per frame --
    def process(self, frame) -> list[Read]:
        self.stats.frames += 1
        mono = getattr(frame, "mono", None)
        stored = self._close_finished(frame.captured_at, mono)
        if not self.gate.moving(frame.image) and not self.tracks:
            return stored
        self.stats.frames_read += 1
        sightings = []
        for plate in self.recognizer.read(frame.image):
            if len(plate.text) < MIN_PLATE_CHARS:
                continue
            self.stats.sightings += 1
            sightings.append(Sighting(frame.captured_at, plate.box, plate.text, plate.confidence, plate, frame, mono))
        self._assign(sightings)
        return stored

    def close_idle(self, at: dt.datetime | None = None, mono: float | None = None) -> list[Read]:
        """Close the passes unseen for longer than the pass timeout when no frame comes (a stalled
        source): stored, and their alerts raised, as process() would on the next frame. `at` is
        the wall clock (naive UTC, default now) for passes of frames without a monotonic stamp,
        `mono` the monotonic clock (default time.monotonic()) for those with one."""
        return self._close_finished(at if at is not None else utcnow(), mono if mono is not None else time.monotonic())

    def flush(self) -> list[Read]:
        """Close every open pass (end of a clip, or the post stopping). A pass the database still
        refuses stays in `unstored` (a later process() or flush() tries it again), and is logged."""
        done, self.tracks = self.tracks, []
        stored = self._store_finished(done, stop_at_refusal=False)
        if self.unstored:
            log.warning(
                "%d finished passes not stored yet (the database refused them): %s",
                len(self.unstored),
                ", ".join(_plate_of(t) for t in self.unstored),
            )
        return stored

    def _assign(self, sightings: list[Sighting]) -> None:
        """Join one frame's sightings to the open passes. Two plates in one frame are two vehicles:
        each pass takes at most one sighting of a frame, the best-matched pairs first (overlap,
        then the same text, then the nearest); a sighting left over starts a pass of its own."""
        pairs = []
        for i, s in enumerate(sightings):
            for j, t in enumerate(self.tracks):
                score = _match_score(t.last, s)
                if score > 0.0:
                    pairs.append((-score, t.last.text != s.text, _distance(t.last.box, s.box), i, j))
        pairs.sort()
        taken_s: set[int] = set()
        taken_t: set[int] = set()
        chosen: dict[int, Track] = {}
        for _, _, _, i, j in pairs:
            if i in taken_s or j in taken_t:
                continue
            taken_s.add(i)
            taken_t.add(j)
            chosen[i] = self.tracks[j]
        for i, s in enumerate(sightings):
            track = chosen.get(i)
            if track is None:
                track = Track(self._next_id)
                self._next_id += 1
                self.tracks.append(track)
            track.add(s)

    def _close_finished(self, now: dt.datetime, mono: float | None = None) -> list[Read]:
        timeout = self.settings.pipeline.pass_timeout_s
        done = [t for t in self.tracks if _idle_s(t.last, now, mono) > timeout]
        if not done and not self.unstored:
            return []
        self.tracks = [t for t in self.tracks if t not in done]
        return self._store_finished(done)

    def _store_finished(self, done: list[Track], stop_at_refusal: bool = True) -> list[Read]:
        """Store the passes held from earlier calls, then `done`. A pass leaves the pipeline only
        once stored (or refused for good: a read the store rejects); when the database refuses
        one (locked past the busy timeout, a disk I/O error) it is kept for the next call, and,
        with `stop_at_refusal`, the rest wait too rather than each waiting out the busy timeout
        again on this frame."""
        queue, self.unstored = self.unstored + done, []
        stored: list[Read] = []
        for i, track in enumerate(queue):
            try:
                read = self._store(track)
            except peewee.OperationalError as exc:
                self.stats.errors += 1
                if not track.refused:
                    track.refused = True
                    log.error(
                        "could not store the read of %s (%d sightings): %s; keeping the pass to try again",
                        _plate_of(track),
                        len(track.sightings),
                        exc,
                    )
                self.unstored.append(track)
                if stop_at_refusal:
                    self.unstored.extend(queue[i + 1 :])
                    break
                continue
            except Exception:
                # not a state of the database that passes: trying again would fail the same way
                self.stats.errors += 1
                log.exception(
                    "could not store the read of %s (%d sightings); the pass is lost",
                    _plate_of(track),
                    len(track.sightings),
                )
                continue
            if track.refused:
                log.info("stored the read of %s after the database had refused it", _plate_of(track))
            if read is not None:
                stored.append(read)
        for track in self.unstored:
            track.hold_evidence_only()
        if len(self.unstored) > MAX_UNSTORED:
            lost = self.unstored[: len(self.unstored) - MAX_UNSTORED]
            self.unstored = self.unstored[len(lost) :]
            self.stats.passes_dropped += len(lost)
            log.error(
                "dropping %d finished passes the database has refused (more than %d waiting): %s",
                len(lost),
                MAX_UNSTORED,
                ", ".join(_plate_of(t) for t in lost),
            )
        return stored

    # -- storing a pass --
    def _evidence_images(self, s: Sighting):
        """The plate crop (with a margin) and the context frame, from the evidence-resolution frame."""
        assert s.frame is not None  # a sighting from Track.evidence_for(): it holds its frame
        image, scale = s.frame.evidence, s.frame.evidence_scale
        x, y, w, h = (v * scale for v in s.box)
        mx, my = int(w * 0.15), int(h * 0.25)
        x0, y0 = max(0, int(x) - mx), max(0, int(y) - my)
        x1, y1 = min(image.shape[1], int(x + w) + mx), min(image.shape[0], int(y + h) + my)
        crop = np.ascontiguousarray(image[y0 : max(y1, y0 + 2), x0 : max(x1, x0 + 2)])
        return crop, image

    def _store(self, track: Track) -> Read | None:
        if len(track.sightings) < self.settings.pipeline.min_frames_per_pass:
            return None
        text, confidence, alternatives = vote(track.sightings)
        reading = track.best_by_text[text]  # the text's own best sighting: its per-character scores
        best = track.evidence_for(text)  # the sighting whose frame is the evidence
        crop, frame_image = self._evidence_images(best)
        mode = self.evidence.room()
        if mode != "full" and mode != self.low_disk:
            log.warning(
                "low disk space on %s: storing %s",
                self.evidence.root,
                "reads and plate crops without context frames" if mode == "crop" else "reads without images",
            )
        new = store.NewRead(
            plate_raw=text,
            plate=text,
            confidence=confidence,
            captured_at=best.at,
            char_confidences=list(reading.read.char_confidences),
            alternatives=alternatives,
            region=reading.read.region,
            region_confidence=reading.read.region_confidence,
            box=(int(best.box[0]), int(best.box[1]), int(best.box[2]), int(best.box[3])),
            corners=[list(map(float, c)) for c in best.read.corners] if best.read.corners else None,
            first_seen_at=track.sightings[0].at,
            last_seen_at=track.sightings[-1].at,
            direction=direction(track),
            evidence_note={
                "full": None,
                "crop": "context frame not stored: low disk space",
                "none": "images not stored: low disk space",
            }[mode],
        )
        raised: list = []

        def save(new, crop, frame):
            raised.clear()
            return store.save_read(
                self.settings,
                self.evidence,
                new,
                crop,
                frame,
                on_stored=lambda r: raised.extend(alerts.raise_alerts(self.settings, r)),
            )

        try:
            try:
                read = save(new, crop if mode in ("full", "crop") else None, frame_image if mode == "full" else None)
            except (store.DiskFull, store.EvidenceUnwritable) as exc:
                # the read itself is a row in the database: it is stored without its images (a full
                # disk, or a read-only or failing one)
                full = isinstance(exc, store.DiskFull)
                if self._images_refused is not type(exc):
                    log.log(
                        logging.WARNING if full else logging.ERROR,
                        "%s; storing reads without images until %s",
                        exc,
                        "there is room" if full else "the evidence directory takes writes",
                    )
                self._images_refused, mode = type(exc), "none"
                read = save(
                    dataclasses.replace(new, evidence_note=DISK_FULL_NOTE if full else UNWRITABLE_NOTE), None, None
                )
            else:
                if mode != "none":
                    self._images_refused = None
        except store.StoreError as exc:
            self.stats.errors += 1
            log.error("could not store the read of %s (%d sightings): %s", text, len(track.sightings), exc)
            return None
        if mode == "full" and self.low_disk is not None:
            log.info("evidence images are stored again on %s", self.evidence.root)
        self.low_disk = None if mode == "full" else mode
        self.stats.passes += 1
        self.stats.reads_stored += 1
        self.stats.alerts += len(raised)
        if self.bus is not None:
            self.bus.publish(
                "read",
                {
                    "id": read.id,
                    "uuid": read.uuid,
                    "plate": read.plate,
                    "confidence": read.confidence,
                    "low_confidence": read.low_confidence,
                    "captured_at": read.captured_at.isoformat() + "Z",
                    "direction": read.direction,
                },
            )
        for alert in raised:
            if not alerts.is_sent(alert):
                continue  # a repeat (alerts.repeat_window_s): stored and listed, not sent again
            if self.bus is not None:
                self.bus.publish(
                    "alert",
                    {
                        "id": alert.id,
                        "read_id": read.id,
                        "plate": read.plate,
                        "entry_plate": alert.entry_plate,
                        "reason": alert.entry_reason,
                        "hotlist": alert.hotlist_name,
                        "score": alert.score,
                        "match_kind": alert.match_kind,
                        "status": alert.status,
                    },
                )
            if self.notifier is not None:
                self.notifier.notify(alert)
        return read

    def status(self) -> dict:
        return {
            **dataclasses.asdict(self.stats),
            "open_passes": len(self.tracks),
            "unstored_passes": len(self.unstored),
            "low_disk": self.low_disk,
        }


def _plate_of(track: Track) -> str:
    """The text a finished pass would be stored as (for log lines about passes not stored)."""
    return vote(track.sightings)[0] if track.sightings else "(no sightings)"
