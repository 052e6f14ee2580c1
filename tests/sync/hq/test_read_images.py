"""Which reads use which image at headquarters (hq_read_image, schema 8): filled for the reads a
headquarters already held when it is upgraded, from each read's own JSON, whatever that JSON holds."""

from __future__ import annotations

import json

from sync import hq
from sync.hq.models import utcnow


def _insert_read(uuid: str, images) -> None:
    p = hq.hq_database.param
    data = {"uuid": uuid, "post_id": "post-a", "plate": "7ABC123", "images": images}
    hq.hq_database.execute_sql(
        "INSERT INTO hq_read (post_id, uuid, seq, captured_at, plate, content_hash, data) "
        f"VALUES ({', '.join([p] * 7)})",
        ("post-a", uuid, 1, utcnow().isoformat(), "7ABC123", "0" * 64, json.dumps(data)),
    )


def test_schema_8_fills_the_image_references_of_the_reads_already_held(hq_target, monkeypatch):
    monkeypatch.setattr(hq.models, "SCHEMA", [s for s in hq.models.SCHEMA if s[0] <= 7])
    hq.open_hq(hq_target)
    crop, frame, shared = "a" * 64, "b" * 64, "c" * 64
    with hq.hq_database.connection_context():
        _insert_read("r-1", [{"sha256": crop, "kind": "crop"}, {"sha256": frame, "kind": "frame"}])
        _insert_read("r-2", [{"sha256": shared, "kind": "crop"}])
        _insert_read("r-3", [{"sha256": shared, "kind": "crop"}, {"sha256": shared, "kind": "crop"}])
        # what a read's JSON may hold besides: none, not a list, not objects, no or a non-text hash
        _insert_read("r-4", None)
        _insert_read("r-5", {"sha256": "d" * 64})
        _insert_read("r-6", ["e" * 64, 7, None, {"kind": "crop"}, {"sha256": 12}])
        ids = {uuid: i for i, uuid in hq.hq_database.execute_sql("SELECT id, uuid FROM hq_read")}
    monkeypatch.undo()
    hq.open_hq(hq_target)
    with hq.hq_database.connection_context():
        assert 8 in {r[0] for r in hq.hq_database.execute_sql("SELECT version FROM hq_schema")}
        rows = set(hq.hq_database.execute_sql("SELECT read_id, sha256 FROM hq_read_image"))
    assert rows == {(ids["r-1"], crop), (ids["r-1"], frame), (ids["r-2"], shared), (ids["r-3"], shared)}
