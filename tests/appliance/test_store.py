import os
import shutil

import numpy as np
import pytest
from peewee import IntegrityError

from appliance import audit, store
from appliance.models import AccessRecord, Evidence, Outbox, Read, utcnow
from tests.conftest import make_settings


def new_read(**kw):
    base = dict(
        plate_raw="7ABC 123",
        plate="7ABC123",
        confidence=0.91,
        captured_at=utcnow(),
        char_confidences=[0.9, 0.95, 0.9, 0.92, 0.88, 0.97, 0.9],
        alternatives=[
            {"text": "7A8C123", "score": 0.05},
            {"text": "7ABC12", "score": 0.02},
            {"text": "TABC123", "score": 0.01},
        ],
        box=(310, 420, 120, 60),
        region="ca",
        region_confidence=0.8,
    )
    base.update(kw)
    return store.NewRead(**base)


def images(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (60, 120, 3), dtype=np.uint8), rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)


@pytest.fixture
def evidence(settings, db):
    return store.EvidenceStore(settings)


def test_save_read_writes_rows_files_and_outbox_together(settings, evidence):
    crop, frame = images()
    read = store.save_read(settings, evidence, new_read(), crop, frame)
    row = Read.get(Read.uuid == read.uuid)
    assert row.plate == "7ABC123" and row.post_id == settings.post.id and row.camera_id == settings.post.camera_id
    assert row.alternatives[0]["text"] == "7A8C123" and row.box_w == 120 and not row.low_confidence
    kinds = {e.kind: e for e in Evidence.select().where(Evidence.read == row)}
    assert set(kinds) == {"crop", "frame"}
    assert (kinds["frame"].width, kinds["frame"].height) == (320, 240)
    for ev in kinds.values():
        data = evidence.read_bytes(ev.sha256)
        assert data[:2] == b"\xff\xd8" and len(data) == ev.bytes
        assert evidence.path_for(ev.sha256).stat().st_mode & 0o777 != 0
    assert [o.object_id for o in Outbox.select()] == [read.uuid]
    assert not evidence.tmp.exists() or not any(evidence.tmp.iterdir())
    assert store.check(settings, evidence) == []


def test_low_confidence_reads_are_kept_and_marked(settings, evidence):
    crop, frame = images()
    read = store.save_read(settings, evidence, new_read(confidence=0.2), crop, None)
    assert Read.get_by_id(read.id).low_confidence


def test_person_storing_a_read_is_recorded_in_the_same_transaction(settings, evidence):
    crop, frame = images()
    actor = audit.Actor("officer.lee", "PD", "10.0.0.9")
    read = store.save_read(settings, evidence, new_read(), crop, frame, actor=actor)
    rec = AccessRecord.get(AccessRecord.action == "read.store")
    assert read.uuid in rec.object_ids and audit.verify().ok


def test_same_image_is_stored_once(settings, evidence):
    crop, frame = images()
    a = store.save_read(settings, evidence, new_read(), crop, frame)
    b = store.save_read(settings, evidence, new_read(), crop, frame)
    assert a.uuid != b.uuid
    assert len(list(evidence.iter_files())) == 2
    assert store.check(settings, evidence) == []


def test_corrupt_jpeg_is_refused_and_nothing_is_stored(settings, evidence):
    crop, frame = images()
    with pytest.raises(store.StoreError, match="context frame: not a readable JPEG"):
        store.save_read(settings, evidence, new_read(), crop, b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(store.StoreError, match="uint8"):
        store.save_read(settings, evidence, new_read(), crop.astype(np.float32), None)
    with pytest.raises(store.StoreError, match="not normalised"):
        store.save_read(settings, evidence, new_read(plate="7abc-123"), crop, None)
    assert Read.select().count() == 0 and not list(evidence.iter_files())


def test_full_disk_is_refused_before_writing(tmp_path, db):
    settings = make_settings(tmp_path / "data", storage__min_free_mb=10**6)
    evidence = store.EvidenceStore(settings)
    crop, frame = images()
    with pytest.raises(store.DiskFull, match="min_free_mb"):
        store.save_read(settings, evidence, new_read(), crop, frame)
    assert Read.select().count() == 0 and not list(evidence.iter_files())


def test_failure_inside_the_transaction_leaves_no_files(settings, evidence):
    crop, frame = images()
    first = store.save_read(settings, evidence, new_read(), crop, frame)
    crop2, frame2 = images(1)
    with pytest.raises(IntegrityError):
        store.save_read(settings, evidence, new_read(uuid=first.uuid), crop2, frame2)  # duplicate uuid
    assert Read.select().count() == 1
    assert len(list(evidence.iter_files())) == 2
    assert not any(evidence.tmp.iterdir())
    assert store.check(settings, evidence) == []


def test_recover_settles_what_a_crash_left(settings, evidence):
    crop, frame = images()
    kept = store.save_read(settings, evidence, new_read(), crop, frame)
    kept_sha = Evidence.get(Evidence.read == kept.id, Evidence.kind == "crop").sha256
    # Killed after the commit, before publishing: the committed read's file is still staged.
    final = evidence.path_for(kept_sha)
    evidence.tmp.mkdir(exist_ok=True)
    final.rename(evidence.tmp / f"{kept_sha}.123.abcd.part")
    # Killed before the commit: a staged file nobody references, and a half-written one.
    blob = store.encode_jpeg(images(5)[0], 90, "crop")
    assert evidence.stage(blob) is not None
    (evidence.tmp / f"{'e' * 64}.9.ffff.part").write_bytes(b"\xff\xd8")
    assert evidence.read_bytes(kept_sha)  # still served from tmp before recovery
    assert store.check(settings, evidence)  # problems before recovery
    assert evidence.recover() == {"rolled_forward": 1, "removed": 2}
    assert final.exists() and not evidence.path_for(blob.sha256).exists()
    assert store.check(settings, evidence) == []


def test_damaged_evidence_file_is_reported(settings, evidence):
    crop, frame = images()
    read = store.save_read(settings, evidence, new_read(), crop, frame)
    sha = Evidence.get(Evidence.read == read.id, Evidence.kind == "crop").sha256
    path = evidence.path_for(sha)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(store.StoreError, match="does not match its hash"):
        evidence.read_bytes(sha)
    with pytest.raises(store.StoreError, match="not a sha256"):
        evidence.path_for("../../etc/passwd")


def test_low_disk_between_half_and_all_of_the_floor_still_takes_crops(tmp_path, db):
    """room() says "crop" there, so the pipeline hands over a crop without its frame: it must be stored."""

    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    settings = make_settings(tmp_path / "data", storage__min_free_mb=int(free_mb * 1.5))
    evidence = store.EvidenceStore(settings)
    assert evidence.room() == "crop"
    crop, _ = images()
    read = store.save_read(
        settings, evidence, new_read(evidence_note="context frame not stored: low disk space"), crop, None
    )
    assert [e.kind for e in Evidence.select().where(Evidence.read == read.id)] == ["crop"]
    assert store.check(settings, evidence) == []
