"""Two lanes (issue 18, finding 6): reads, crops, access records and the frames of reads with an
alert go first; the other frames follow in batches of their own, which headquarters checks against
the sha256 each read's signed line named. A real post pushes over HTTP to a real headquarters
(SQLite and PostgreSQL); a real post process is killed between the lanes; the cap on the post's
sending rate is measured at a real socket (a counting relay between the post and headquarters)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import os
import subprocess
import sys

import pytest
from PIL import Image

from appliance import bundle, config, users
from appliance import db as dbmod
from appliance.audit import system_actor
from appliance.bench.relay import Relay
from appliance.bootstrap import bootstrap
from appliance.models import Evidence, utcnow
from sync import hq, post, protocol
from tests.conftest import make_settings, operator_env
from tests.sync.conftest import HQServer, _public, add_reads, alert_on, free_port, push_headers, send_push
from tests.sync.hq import test_retention as rt
from tests.sync.test_push import assert_hq_holds_the_post
from tests.web.conftest import PASSWORD, sign_in, state_purpose
from web.hq import create_hq_app


def frames_of(reads) -> dict[str, str]:
    """uuid -> the sha256 of the read's frame, on the post."""
    return {r.uuid: Evidence.get((Evidence.read == r.id) & (Evidence.kind == "frame")).sha256 for r in reads}


def held_images() -> set[str]:
    with hq.hq_database.connection_context():
        return {i.sha256 for i in hq.HQImage.select(hq.HQImage.sha256)}


def to_come(post_id: str) -> int:
    with hq.hq_database.connection_context():
        return hq.posts.frames_to_come(post_id)


def test_a_read_reaches_headquarters_before_its_frame_when_both_lanes_wait(settings, db, hq_server):
    reads = add_reads(settings, 3)  # two batches of reads (sync.batch_max_reads = 2), then the frames
    frames = frames_of(reads)
    first = post.push(settings, max_batches=1)
    assert first.reads == 2
    with hq.hq_database.connection_context():
        held = {r.uuid: r for r in hq.HQRead.select()}
    assert set(held) == {r.uuid for r in reads[:2]}
    images = held_images()
    for read in reads[:2]:
        named = {im["kind"]: im["sha256"] for im in held[read.uuid].data["images"]}
        assert named["frame"] == frames[read.uuid]  # named by the read's signed line...
        assert named["crop"] in images and named["frame"] not in images  # ...the frame still to come
    assert to_come(settings.post.id) == 2

    rest = post.push(settings)
    assert (rest.reads, rest.frames) == (1, 3)
    assert "3 frame(s) of reads sent before, in the second lane" in rest.lines()
    assert set(frames.values()) <= held_images() and to_come(settings.post.id) == 0
    assert_hq_holds_the_post(settings)
    # the third read went before any frame: every batch with reads was stored before the first of frames
    with hq.hq_database.connection_context():
        kinds = [b.reads > 0 for b in hq.HQBatch.select().where(hq.HQBatch.status == "stored").order_by(hq.HQBatch.id)]
    assert kinds[:2] == [True, True] and not any(kinds[2:]) and len(kinds) > 2


def test_a_read_with_an_alert_carries_its_frame_in_the_main_lane(settings, db, hq_server):
    hit, quiet = add_reads(settings, 2)
    alert_on(hit)
    frames = frames_of([hit, quiet])
    assert post.push(settings, max_batches=1).reads == 2
    images = held_images()
    assert frames[hit.uuid] in images  # with its read, for the officer at headquarters
    assert frames[quiet.uuid] not in images
    assert to_come(settings.post.id) == 1
    post.push(settings)
    assert frames[quiet.uuid] in held_images() and to_come(settings.post.id) == 0


def _other_jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def test_a_frame_other_than_the_one_its_read_named_is_refused(settings, db, hq_server):
    (read,) = add_reads(settings, 1)
    post.push(settings, max_batches=1)
    key = bundle.post_key(settings)
    plan = post.plan_batch(settings, key, post.fetch_position(settings))
    assert plan is not None and plan.frames is not None  # the second lane's batch
    lines = list(post._lines(settings, plan, {"reads": 0, "chain_hash": plan.pos.chain_hash}))
    (frame,) = [obj for obj in lines if obj["t"] == "frame"]
    image = frame["image"]
    # a genuine JPEG of the same size, signed by the post's own key: not the frame the read named
    other = _other_jpeg(image["width"], image["height"])
    image.update(data=base64.b64encode(other).decode(), sha256=hashlib.sha256(other).hexdigest(), bytes=len(other))
    buf = io.BytesIO()
    writer = protocol.Writer(buf)
    for obj in lines:
        writer.line(obj)
    writer.finish(key)
    body = buf.getvalue()
    status, answer = send_push(hq_server.port, body, push_headers(settings, body))
    assert status == 400 and answer["problem"] == "malformed", answer
    assert f"the frame of read {read.uuid}" in answer["message"]
    assert "not the one the read's signed line named" in answer["message"]
    assert hashlib.sha256(other).hexdigest() not in held_images()
    assert to_come(settings.post.id) == 1
    with hq.hq_database.connection_context():
        assert hq.HQPost.get_by_id(settings.post.id).frame_seq == 0
    # the post's own frame is then taken
    post.push(settings)
    assert to_come(settings.post.id) == 0 and frames_of([read])[read.uuid] in held_images()


KILL_BETWEEN_LANES = """
import os, signal, sys
from appliance import config, db
from sync import post
settings = config.load(None)
db.open_database(settings)
with db.connection():
    result = post.push(settings, max_batches=int(sys.argv[1]))
print("reads", result.reads, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # killed between the lanes: before a frame is sent
"""


def test_a_post_killed_between_the_lanes_sends_its_frames_later(settings, db, hq_server, hq_target, hq_env):
    reads = add_reads(settings, 4)  # two batches of reads, then the frames
    frames = frames_of(reads)
    env = dict(
        os.environ,
        WAYPOST_CONFIG="",
        WAYPOST_STORAGE__DATA_DIR=str(settings.data_dir),
        WAYPOST_STORAGE__MIN_FREE_MB="0",
        WAYPOST_SYNC__HQ_URL=settings.sync.hq_url,
        WAYPOST_SYNC__BATCH_MAX_READS="2",
    )
    done = subprocess.run(
        [sys.executable, "-c", KILL_BETWEEN_LANES, "2"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -9 and "reads 4" in done.stdout, done.stderr[-2000:]
    assert not set(frames.values()) & held_images()
    status = rt.hq_cli(hq_env, hq_target, "status")
    assert status.exit_code == 0 and "frames to come: 4" in status.output, status.output

    # the outbox marks every read sent; the frames are still on the post and go with the next push
    assert post.local_status(settings)["pending_reads"] == 0
    again = subprocess.run(
        [sys.executable, "-m", "appliance", "sync", "push"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert set(frames.values()) <= held_images() and to_come(settings.post.id) == 0
    assert "frames to come: 0" in rt.hq_cli(hq_env, hq_target, "status").output
    dbmod.open_database(settings)
    with dbmod.connection():
        assert_hq_holds_the_post(settings)


def test_retention_and_holds_keep_working_for_frames_that_come_later(settings, db, hq_server, hq_target, hq_env):
    # 7ABC050 is held, 7ABC051 goes, both 400 days old; 7ABC052 is recent
    reads = rt.aged_reads(settings, [400, 400, 1], seed=5)
    frames = frames_of(reads)
    with dbmod.connection():
        post.push(settings, max_batches=2)  # the reads, not their frames
    assert not set(frames.values()) & held_images() and to_come(settings.post.id) == 3
    window = ["--from", (utcnow() - dt.timedelta(days=500)).strftime("%Y-%m-%d"), "--to", utcnow().strftime("%Y-%m-%d")]
    placed = rt.hq_cli(
        hq_env,
        hq_target,
        "hold",
        "place",
        "--post",
        settings.post.id,
        "--plate",
        reads[0].plate,
        *window,
        *rt.PURPOSE,
        "--reason",
        "Vehicle in the Main St burglary",
    )
    assert placed.exit_code == 0, placed.output
    purged = rt.hq_cli(hq_env, hq_target, "retention")
    assert purged.exit_code == 0 and "purged 1 read(s)" in purged.output, purged.output
    assert rt.held_uuids() == {reads[0].uuid, reads[2].uuid}
    assert to_come(settings.post.id) == 2  # the purged read's frame is no longer awaited

    rt.push(settings)  # the frames follow: the purged read's is not stored
    images = held_images()
    assert frames[reads[0].uuid] in images and frames[reads[2].uuid] in images
    assert frames[reads[1].uuid] not in images
    assert to_come(settings.post.id) == 0
    with hq.hq_database.connection_context():
        refs = set(
            hq.hq_database.execute_sql(
                "SELECT r.uuid, i.sha256 FROM hq_read_image i JOIN hq_read r ON r.id = i.read_id"
            )
        )
    assert (reads[0].uuid, frames[reads[0].uuid]) in refs

    # the held read's frame stays with it; released, both go at the next run
    again = rt.hq_cli(hq_env, hq_target, "retention")
    assert again.exit_code == 0 and "purged 0 read(s)" in again.output, again.output
    assert frames[reads[0].uuid] in held_images()
    released = rt.hq_cli(hq_env, hq_target, "hold", "release", "1", "--reason", "Case closed, no charges filed")
    assert released.exit_code == 0, released.output
    last = rt.hq_cli(hq_env, hq_target, "retention")
    assert last.exit_code == 0 and "purged 1 read(s)" in last.output, last.output
    assert frames[reads[0].uuid] not in held_images() and frames[reads[2].uuid] in held_images()


@pytest.fixture
def hq_env(tmp_path, settings, db):
    """Headquarters' configuration, its administrator running its commands (test_retention.py)."""
    env = rt._hq_env(tmp_path / "hq-data")
    hq_settings = config.load(None, environ=env)
    bootstrap(hq_settings, create_admin=False)
    env = {**env, **operator_env(hq_settings, "hq.admin", "admin")}
    dbmod.open_database(settings)
    return env


def test_max_kbps_bounds_what_the_post_sends(tmp_path, hq_target, hq_port):
    """What crosses a real socket between the post and headquarters, over time: at most about the
    cap (a generous tolerance: the token bucket's first burst, and timing on a shared machine)."""
    relay_port = free_port()
    settings = make_settings(
        tmp_path / "data", sync__hq_url=f"http://127.0.0.1:{relay_port}", sync__batch_max_reads=50, sync__max_kbps=800
    )
    bootstrap(settings, create_admin=False)
    server = HQServer(hq_target, hq_port).start()
    try:
        with hq.hq_database.connection_context():
            hq.enroll(settings.post.id, "Test post", _public(settings))
        with dbmod.connection():
            add_reads(settings, 40, seed=7)
            with Relay(relay_port, hq_port) as relay:
                result = post.push(settings)
        assert result.reads == 40
        sent, seconds = relay.up_bytes, relay.up_last - relay.up_first
        assert sent > 400_000  # enough to measure: crops, frames and access records
        rate_kbps = sent * 8 / 1000 / seconds
        assert rate_kbps < 800 * 1.3, f"{sent} bytes in {seconds:.2f} s: {rate_kbps:.0f} kbit/s"
        assert rate_kbps > 800 * 0.3, f"{sent} bytes in {seconds:.2f} s: {rate_kbps:.0f} kbit/s"
    finally:
        server.stop()


def _hq_person(hq_settings, username: str, role: str) -> None:
    with dbmod.connection():
        users.add(
            system_actor(hq_settings),
            username=username,
            display_name=username,
            organization="PD",
            role=role,
            password=PASSWORD,
            must_change_password=False,
        )
        users.set_training(
            system_actor(hq_settings),
            username,
            dt.date.today() - dt.timedelta(days=30),
            "ALPR 101",
            dt.date.today() + dt.timedelta(days=335),
        )


def test_headquarters_pages_say_a_frame_is_still_to_come(settings, db, hq_server, hq_target, tmp_path):
    (read,) = add_reads(settings, 1)
    post.push(settings, max_batches=1)
    hq_settings = make_settings(tmp_path / "hq-pages", post__id="hq", post__name="Headquarters")
    bootstrap(hq_settings, create_admin=False)
    app = create_hq_app(hq_target, settings=hq_settings)
    app.config["TESTING"] = True
    _hq_person(hq_settings, "officer.lee", "officer")
    _hq_person(hq_settings, "tech.kim", "technician")
    with hq.hq_database.connection_context():
        read_id = hq.HQRead.get(hq.HQRead.uuid == read.uuid).id

    tech = app.test_client()
    sign_in(tech, "tech.kim")
    posts = tech.get("/hq").get_data(as_text=True)
    assert "frames to come: 1" in posts

    officer = app.test_client()
    sign_in(officer, "officer.lee")
    state_purpose(officer, "STOLEN-VEH", "24-001234")
    page = officer.get(f"/hq/reads/{read_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Context frame not yet received" in html and 'id="frame"' not in html
    frame = officer.get(f"/hq/reads/{read_id}/image/frame")
    assert frame.status_code == 404 and "frame not yet received" in frame.get_data(as_text=True)
    assert officer.get(f"/hq/reads/{read_id}/image/crop").status_code == 200

    dbmod.open_database(settings)  # the post's database, then headquarters' accounts again
    with dbmod.connection():
        post.push(settings)  # the frame comes
    dbmod.open_database(hq_settings)
    html = officer.get(f"/hq/reads/{read_id}").get_data(as_text=True)
    assert "Context frame not yet received" not in html and 'id="frame"' in html
    assert officer.get(f"/hq/reads/{read_id}/image/frame").status_code == 200
    assert "frames to come: 0" in tech.get("/hq").get_data(as_text=True)


def test_a_read_stored_while_frames_wait_goes_before_them(settings, db, hq_server):
    add_reads(settings, 3)
    post.push(settings, max_batches=2)  # the two batches of reads
    assert to_come(settings.post.id) == 3
    (late,) = add_reads(settings, 1, seed=1)
    assert post.push(settings, max_batches=1).reads == 1  # the new read, not a batch of frames
    assert late.uuid in {r.uuid for r in hq.HQRead.select()}
    assert to_come(settings.post.id) == 4
    post.push(settings)
    assert to_come(settings.post.id) == 0
    assert_hq_holds_the_post(settings)
