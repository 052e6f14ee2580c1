"""Hostile reads signed with the post's own key (a stolen key, or a post that was broken into),
posted over HTTP to a real headquarters (SQLite and PostgreSQL): every field headquarters stores or
shows is checked at ingest, an image must be a JPEG by its bytes, and a line nested too deep to
parse is refused like any malformed line. Each refusal names the line and the field, stores nothing
and writes a row in the batch log. An image headquarters holds under another declared type (stored
before these checks) is still served as a JPEG that no browser runs."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import gzip
import hashlib
import io

import pytest
from PIL import Image

from appliance import bundle, users
from appliance import db as dbmod
from appliance.audit import system_actor
from appliance.bootstrap import bootstrap
from appliance.models import AccessRecord
from sync import hq, post, protocol
from tests.conftest import make_settings
from tests.sync.conftest import add_reads
from tests.sync.hq.test_hostile_batches import header, logged, send
from tests.web.conftest import PASSWORD, sign_in, state_purpose
from web.hq import create_hq_app


def jpeg(width=80, height=30) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def with_data(image: dict, data: bytes) -> None:
    """Replace an image's bytes and keep its sha256 and size true: only the JPEG check can refuse it."""
    image.update(data=base64.b64encode(data).decode(), sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def signed_batch(settings, change) -> bytes:
    """The post's next batch (one read with its crop and frame, then its access records), its read
    line changed by `change(line)` and the whole batch signed with the post's own key."""
    key = bundle.post_key(settings)
    # as to a headquarters without the second lane (frame_seq None): the frame goes with its read
    plan = post.plan_batch(settings, key, dataclasses.replace(post.fetch_position(settings), frame_seq=None))
    assert plan is not None  # a read waits
    lines = list(post._lines(settings, plan, {"reads": 0, "chain_hash": plan.pos.chain_hash}))
    (read_line,) = [obj for obj in lines if obj["t"] == "read"]
    assert [im["kind"] for im in read_line["images"]] == ["crop", "frame"]
    change(read_line)
    buf = io.BytesIO()
    writer = protocol.Writer(buf)
    for obj in lines:
        writer.line(obj)
    writer.finish(key)
    return buf.getvalue()


def read_field(name, value):
    return lambda line: line["read"].__setitem__(name, value)


def image_field(name, value, which=0):
    return lambda line: line["images"][which].__setitem__(name, value)


def two_crops(line):
    line["images"][1]["kind"] = "crop"


QUOTE = "'"
BAD_READS = [
    ("read field 'uuid'", read_field("uuid", "../../etc/passwd")),
    ("read field 'captured_at'", read_field("captured_at", "not-a-date")),
    ("read field 'captured_at'", read_field("captured_at", "9999-99-99T99:99:99")),
    ("read field 'captured_at'", read_field("captured_at", "2026-01-02 03:04:05")),  # not the form the post writes
    ("read field 'plate'", read_field("plate", "<b>X</b>")),
    ("read field 'plate'", read_field("plate", "7abc123")),
    ("read field 'plate'", read_field("plate", "7" * 101)),
    ("read field 'plate_raw'", read_field("plate_raw", "<script>")),
    ("read field 'alternatives'", read_field("alternatives", [{"text": "<i>7ABC</i>", "score": 0.1}])),
    ("read field 'alternatives'", read_field("alternatives", [{"text": "7ABC123", "score": 7}])),
    ("read field 'alternatives'", read_field("alternatives", "7ABC123")),
    ("read field 'confidence'", read_field("confidence", 1.5)),
    ("read field 'confidence'", read_field("confidence", "0.9")),
    ("read field 'confidence'", read_field("confidence", float("nan"))),
    ("read field 'char_confidences'", read_field("char_confidences", ["high"])),
    ("read field 'region_confidence'", read_field("region_confidence", -0.5)),
    ("read field 'camera_id'", read_field("camera_id", "<img src=x onerror=alert(1)>")),
    ("read field 'camera_id'", read_field("camera_id", "cam/1")),
    ("read field 'box_w'", read_field("box_w", "wide")),
    ("read field 'box_x'", lambda line: line["read"].update(box_x=None, box_y=10, box_w=80, box_h=30)),
    ("read field 'corners'", read_field("corners", [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])),
    ("read field 'corners'", read_field("corners", [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], ["x", 8.0]])),
    ("read field 'first_seen_at'", read_field("first_seen_at", "yesterday")),
    ("read field 'direction'", read_field("direction", {"toward": True})),
    ("read field 'low_confidence'", read_field("low_confidence", "no")),
    ("read field 'evidence_note'", read_field("evidence_note", "x" * 5000)),
    ("read field 'region'", read_field("region", "<b>CA</b>")),
    ("read field 'injected'", read_field("injected", "<script>alert(1)</script>")),  # a field the post never sends
    ("image kind", image_field("kind", "thumbnail")),
    ("image kind", two_crops),
    ("image content_type", image_field("content_type", "text/html")),
    ("image width", image_field("width", 81)),
    ("image height", image_field("height", 0, which=1)),
    ("image bytes", image_field("bytes", 1)),
    ("image data", lambda line: with_data(line["images"][0], b"<html><script>alert(document.cookie)</script></html>")),
    ("image data", lambda line: with_data(line["images"][0], jpeg()[:-2])),  # no end-of-image marker
    ("image data", lambda line: with_data(line["images"][1], b"\xff\xd8\xff<script>alert(1)</script>\xff\xd9")),
    ("field 'hotlist_name'", lambda line: line["alerts"].append({"id": 1, "hotlist_name": ["<b>", "SVS"]})),
]


@pytest.mark.parametrize(
    "named,change", BAD_READS, ids=[f"{n}-{f.split()[-1].strip(QUOTE)}" for n, (f, _) in enumerate(BAD_READS)]
)
def test_a_signed_read_with_a_bad_field_is_refused_naming_the_line_and_field(settings, hq_server, named, change):
    add_reads(settings, 1)
    status, answer = send(hq_server, signed_batch(settings, change))
    assert (status, answer.get("status"), answer.get("problem")) == (400, "refused", "malformed"), answer
    assert answer["message"].startswith("line 2 (read)") and f"{named} " in answer["message"], answer["message"]
    [row] = logged()
    assert row[:3] == ("refused", "malformed", settings.post.id) and row[5] == answer["message"]
    with hq.hq_database.connection_context():
        assert hq.HQRead.select().count() == 0 and hq.HQImage.select().count() == 0
        assert hq.HQAccessRecord.select().count() == 0 and hq.HQAlert.select().count() == 0
        assert hq.HQPost.get_by_id(settings.post.id).last_seq == 0


def test_the_same_batch_unchanged_is_stored_with_its_jpegs(settings, hq_server):
    """The checks above refuse only what they name: the post's own batch, signed the same way, is stored."""
    add_reads(settings, 1)
    status, answer = send(hq_server, signed_batch(settings, lambda line: None))
    assert (status, answer["status"], answer["reads"]) == (200, "stored", 1), answer
    with hq.hq_database.connection_context():
        images = list(hq.HQImage.select())
    assert len(images) == 2 and {im.content_type for im in images} == {"image/jpeg"}
    assert all(bytes(im.data)[:3] == b"\xff\xd8\xff" for im in images)


def test_a_line_nested_200000_deep_is_refused_as_malformed_and_logged(settings, hq_server):
    """It raised RecursionError: an HTML 500 page and no row in the batch log."""
    deep = b"[" * 200_000 + b"\n"
    data = gzip.compress(protocol.canonical_line(header(settings, last_seq=1)) + deep)
    status, answer = send(hq_server, data)
    assert (status, answer.get("status"), answer.get("problem")) == (400, "refused", "malformed"), answer
    assert answer["message"].startswith("line 2 ") and "nested" in answer["message"], answer["message"]
    [row] = logged()
    assert row[:4] == ("refused", "malformed", settings.post.id, "hostile-1") and row[5] == answer["message"]


def test_json_nested_deeper_than_a_batch_ever_is_refused_though_it_parses(settings, hq_server):
    """400 levels parse (under the interpreter's recursion limit), but nothing the post writes nests
    more than a few: such a line is refused before anything downstream walks it."""
    add_reads(settings, 1)
    nested: list = []
    for _ in range(400):
        nested = [nested]

    def deep_alert(line):
        line["alerts"].append({"id": 1, "hotlist_name": "SVS", "confirmations": nested})

    status, answer = send(hq_server, signed_batch(settings, deep_alert))
    assert (status, answer["problem"]) == (400, "malformed"), answer
    assert answer["message"].startswith("line 2 ") and "nested" in answer["message"], answer["message"]
    assert logged()[0][:2] == ("refused", "malformed")
    with hq.hq_database.connection_context():
        assert hq.HQRead.select().count() == 0 and hq.HQAlert.select().count() == 0


# --- serving what headquarters holds --------------------------------------------------------------


@pytest.fixture
def hq_pages(tmp_path, hq_target):
    """Headquarters' full app over `hq_target`, holding one read whose crop was stored (before the
    checks at ingest) with the type the post declared, text/html, and bytes that are a script; and a
    trained officer."""
    settings = make_settings(tmp_path / "hq-data", post__id="hq", post__name="Headquarters")
    bootstrap(settings, create_admin=False)
    app = create_hq_app(hq_target, settings=settings)
    app.config["TESTING"] = True
    payload = b"<html><script>fetch('/admin/accounts')</script></html>"
    sha = hashlib.sha256(payload).hexdigest()
    with hq.hq_database.connection_context():
        hq.HQImage.insert(
            sha256=sha, content_type="text/html", width=80, height=30, size=len(payload), data=payload
        ).execute()
        read = hq.HQRead.create(
            post_id="post-a",
            uuid="0b7c6c1e-3f1a-4a55-9d7e-5b8a2f0c1d23",
            seq=1,
            captured_at="2026-11-29T14:14:03.250000",
            plate="7XYZ101",
            content_hash="0" * 64,
            data={
                "camera_id": "cam-a",
                "plate": "7XYZ101",
                "confidence": 0.9,
                "images": [{"kind": "crop", "sha256": sha, "content_type": "text/html", "width": 80, "height": 30}],
            },
        )
    with dbmod.connection():
        users.add(
            system_actor(settings),
            username="officer.lee",
            display_name="Lee",
            organization="PD",
            role="officer",
            password=PASSWORD,
            must_change_password=False,
        )
        users.set_training(
            system_actor(settings),
            "officer.lee",
            dt.date.today() - dt.timedelta(days=30),
            "ALPR 101",
            dt.date.today() + dt.timedelta(days=335),
        )
    yield app, read.id, payload
    if not hq.hq_database.is_closed():
        hq.hq_database.close()


def test_an_image_held_with_a_non_jpeg_type_is_served_as_a_jpeg_nobody_sniffs(hq_pages):
    app, read_id, payload = hq_pages
    client = app.test_client()
    sign_in(client, "officer.lee")
    state_purpose(client, "STOLEN-VEH", "24-001234")
    resp = client.get(f"/hq/reads/{read_id}/image/crop")
    assert resp.status_code == 200 and resp.data == payload
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Content-Disposition"] == f'inline; filename="read-{read_id}-crop.jpg"'
    with dbmod.connection():  # recorded like any view of an image
        (rec,) = AccessRecord.select().where(AccessRecord.action == "evidence.view")
    assert rec.username == "officer.lee" and "7XYZ101" in rec.query
