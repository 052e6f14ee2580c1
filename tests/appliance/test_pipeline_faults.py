"""The pipeline when storing fails: a full evidence disk and a database locked by another writer.
Neither may lose a vehicle pass."""

import dataclasses
import datetime as dt
import json
import logging
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import db as dbmod
from appliance import pipeline as pipeline_mod
from appliance.bootstrap import bootstrap
from appliance.capture import Frame
from appliance.capture.demo import DemoStreet
from appliance.models import Alert, Evidence, Read
from appliance.pipeline import DISK_FULL_NOTE, UNWRITABLE_NOTE, Pipeline, vote
from appliance.store import EvidenceStore, check
from recognizer import Recognizer
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
FPS = 10.0
T0 = dt.datetime(2026, 11, 22, 8, 0, 0)


@pytest.fixture(scope="module")
def recognizer():
    return Recognizer(threads=1)


def frame_at(street, index, seconds_later=0.0):
    image, _ = street.render(index)
    return Frame(
        image=image, captured_at=T0 + dt.timedelta(seconds=index / FPS + seconds_later), index=index, source="test"
    )


def drive_until(pipe, street, tracks: int) -> int:
    """Feed the demo street until `tracks` passes are open with three sightings each; the last index."""
    for index in range(600):
        pipe.process(frame_at(street, index))
        if len([t for t in pipe.tracks if len(t.sightings) >= 3]) >= tracks:
            return index
    raise AssertionError(f"the demo street gave no {tracks} passes in 60 s")


def road_after_timeout(pipe, street, index: int, extra_s: float = 0.0) -> Frame:
    """The empty road, later than the pass timeout after every open pass's last sighting."""
    last = max(t.last.at for t in pipe.tracks)
    at = last + dt.timedelta(seconds=pipe.settings.pipeline.pass_timeout_s + 0.1 + extra_s)
    return Frame(image=street.background, captured_at=at, index=index, source="test")


class Locked:
    """Another process's write transaction on the database file (BEGIN IMMEDIATE) until closed."""

    def __init__(self, path):
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self):
        self.conn.execute("ROLLBACK")
        self.conn.close()


@pytest.fixture
def locking_settings(tmp_path):
    settings = make_settings(tmp_path / "data", storage__busy_timeout_ms=150)
    bootstrap(settings, create_admin=False)
    return settings


def later(frame: Frame, seconds: float = 0.1) -> Frame:
    return dataclasses.replace(
        frame, captured_at=frame.captured_at + dt.timedelta(seconds=seconds), index=frame.index + 1
    )


def test_a_pass_refused_by_a_locked_database_is_stored_on_the_next_frame(locking_settings, recognizer, caplog):
    settings = locking_settings
    street = DemoStreet(1280, 720, FPS, 20.0, 3)
    with dbmod.connection():
        pipe = Pipeline(settings, recognizer, EvidenceStore(settings))
        index = drive_until(pipe, street, 1)
        plates = sorted(vote(t.sightings)[0] for t in pipe.tracks)
        road = road_after_timeout(pipe, street, index + 1)
        lock = Locked(settings.db_path)
        try:
            with caplog.at_level(logging.INFO, logger="waypost.pipeline"):
                refused = pipe.process(road)
        finally:
            lock.release()
        assert refused == [] and Read.select().count() == 0
        assert pipe.status()["unstored_passes"] == len(plates) and pipe.tracks == []
        assert any("database is locked" in r.getMessage() and plates[0] in r.getMessage() for r in caplog.records)

        stored = pipe.process(later(road))
        assert sorted(r.plate for r in stored) == plates
        assert sorted(r.plate for r in Read.select()) == plates
        assert pipe.status()["unstored_passes"] == 0
        for read in stored:
            assert {e.kind for e in Evidence.select().where(Evidence.read == read.id)} == {"crop", "frame"}
            assert read.first_seen_at <= read.captured_at <= read.last_seen_at < road.captured_at
        assert check(settings, EvidenceStore(settings)) == []


def test_passes_past_the_bound_are_dropped_with_their_plates_logged(locking_settings, recognizer, caplog, monkeypatch):
    settings = locking_settings
    monkeypatch.setattr(pipeline_mod, "MAX_UNSTORED", 1)  # the bound, small enough to reach with two passes
    street = DemoStreet(1280, 720, FPS, 20.0, 3)
    with dbmod.connection():
        pipe = Pipeline(settings, recognizer, EvidenceStore(settings))
        index = drive_until(pipe, street, 2)
        passes = sorted(pipe.tracks, key=lambda t: t.id)
        oldest, newest = (vote(t.sightings)[0] for t in passes[:1] + passes[-1:])
        road = road_after_timeout(pipe, street, index + 1)
        lock = Locked(settings.db_path)
        try:
            with caplog.at_level(logging.INFO, logger="waypost.pipeline"):
                assert pipe.process(road) == []
        finally:
            lock.release()
        dropped = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
        assert len(dropped) == 1 and oldest in dropped[0], dropped
        assert pipe.stats.passes_dropped == len(passes) - 1
        stored = pipe.process(later(road))
        assert [r.plate for r in stored] == [newest]
        assert [r.plate for r in Read.select()] == [newest]


def test_an_evidence_directory_refusing_writes_loses_no_pass(locking_settings, recognizer, caplog):
    """Not a full disk but a broken one (here: a file where the evidence staging directory should
    be, so every write fails with ENOTDIR): each pass is stored without images, with the reason,
    and said once in the log; when the directory takes writes again, images are stored again."""
    settings = locking_settings
    street = DemoStreet(1280, 720, FPS, 20.0, 3)
    staging = settings.evidence_path / "tmp"
    shutil.rmtree(staging, ignore_errors=True)
    settings.evidence_path.mkdir(parents=True, exist_ok=True)
    staging.write_text("not a directory")
    with dbmod.connection():
        pipe = Pipeline(settings, recognizer, EvidenceStore(settings))
        index = drive_until(pipe, street, 1)
        plates = sorted(vote(t.sightings)[0] for t in pipe.tracks)
        with caplog.at_level(logging.INFO, logger="waypost.pipeline"):
            stored = pipe.process(road_after_timeout(pipe, street, index + 1))
        assert sorted(r.plate for r in stored) == plates and plates
        assert [r.evidence_note for r in Read.select()] == [UNWRITABLE_NOTE] * len(plates)
        assert Evidence.select().count() == 0
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "cannot write evidence file" in errors[0], errors

        staging.unlink()  # the disk is mended: the street's next vehicles
        start = index + 2
        for i in range(start, start + 600):
            pipe.process(frame_at(street, i))
            if any(len(t.sightings) >= 3 for t in pipe.tracks):
                break
        again = pipe.process(road_after_timeout(pipe, street, i + 1))
        assert again
        for read in again:
            assert read.evidence_note is None
            assert {e.kind for e in Evidence.select().where(Evidence.read == read.id)} == {"crop", "frame"}
        assert check(settings, EvidenceStore(settings)) == []


def namespaces_can_mount() -> str | None:
    """Why a tmpfs cannot be mounted in a new user and mount namespace here, or None."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare(1) or mount(8) is not installed"
    probe = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k waypost-probe /mnt",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


@pytest.mark.parametrize("how", ["bytes", "inodes"])
def test_a_full_evidence_disk_stores_reads_without_images_and_still_alerts(tmp_path, how):
    why_not = namespaces_can_mount()
    if why_not:
        pytest.skip(why_not)
    data_dir = tmp_path / "data"
    settings = make_settings(data_dir)
    bootstrap(settings, create_admin=False)
    settings.evidence_path.mkdir(parents=True, exist_ok=True)
    # the tmpfs exists only in the child's mount namespace: it goes when the child does
    script = (
        'mount -t tmpfs -o size=1m,nr_inodes=64 waypost-full "$1" '
        '&& exec "$2" -m tests.appliance.full_disk_post "$3" "$4"'
    )
    proc = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            script,
            "sh",
            str(settings.evidence_path),
            sys.executable,
            str(data_dir),
            how,
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    with dbmod.connection():
        reads = list(Read.select().order_by(Read.captured_at))
        assert len(reads) >= 2, (reads, proc.stderr)
        assert run["status"]["reads_stored"] == len(reads) and run["status"]["errors"] == 0
        assert run["status"]["low_disk"] == "none"
        assert Evidence.select().count() == 0
        for read in reads:
            assert read.evidence_note == DISK_FULL_NOTE
            assert read.camera_id == settings.post.camera_id and read.post_id == settings.post.id
            assert dt.datetime.fromisoformat(run["t0"]) <= read.first_seen_at <= read.captured_at <= read.last_seen_at
        hot = [r for r in reads if r.plate == run["hot"]]
        assert len(hot) == 1, ([r.plate for r in reads], run["hot"])
        assert [a.read_id for a in Alert.select()] == [hot[0].id]
        assert check(settings, EvidenceStore(settings)) == []
    # one line for the episode, not one per read
    said = [line for line in proc.stderr.splitlines() if "storing reads without images" in line]
    assert len(said) == 1, said
    assert not [line for line in proc.stderr.splitlines() if line.startswith(("ERROR", "CRITICAL"))], proc.stderr
