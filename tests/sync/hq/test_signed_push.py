"""A push proves who sends it before headquarters reads a byte of its body (issue 17, finding 1):
the X-Waypost-Push header (post, batch, range, the body's length and sha256, the post's clock)
signed with the post's key is checked first, over real HTTP to a real headquarters (SQLite and
PostgreSQL). A forged batch is answered without the write lock and without being unpacked; an
unknown post and a wrong key get one answer; a push without the header (a post older than
headquarters) is refused asking for the post to be updated; a body that is not the one signed is
refused unread; a batch packed tighter than a post packs one is refused before it is unpacked;
a body over the limit gets JSON and a row in the batch log; repeated refusals fold into one row."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import tracemalloc
import zlib
from contextlib import contextmanager

import psycopg2
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance import audit, bundle
from appliance.cli import main
from sync import hq, post, protocol
from tests.sync.conftest import _public, add_reads, free_port, push_headers, send_push
from web.hq import create_hq_app
from web.server import WebServer

LOCK_WAIT_S = 5  # well under SQLite's busy timeout (10 s): an answer within it did not wait for the lock


def _line(obj) -> bytes:
    return protocol.canonical_line(obj)


def forged_bomb(post_id: str, unpacked_mib: int = 64) -> bytes:
    """The attacker's batch: a header naming an enrolled post and one read line whose image data
    unpacks to `unpacked_mib` MiB, packed by LZ to a few dozen KB; its trailer signed by no one."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = {
        "t": "header",
        "format": protocol.FORMAT,
        "post": post_id,
        "batch": "forged-1",
        "first_seq": 1,
        "last_seq": 1,
        "chain": {"first_seq": 1, "last_seq": 0, "prev_hash": audit.GENESIS},
    }
    out = [z.compress(_line(head))]
    out.append(z.compress(b'{"alerts":[],"images":[{"kind":"crop","sha256":"00","data":"'))
    block = b"A" * (1 << 20)
    out.extend(z.compress(block) for _ in range(unpacked_mib))
    out.append(
        z.compress(
            b'"}],"read":{"captured_at":"2026-01-01T00:00:00Z","plate":"7ABC123","uuid":"u"},"seq":1,"t":"read"}\n'
        )
    )
    out.append(z.compress(_line({"t": "end", "sha256": "0" * 64, "signature": ""})))
    out.append(z.flush())
    return b"".join(out)


def built(settings, pos=None) -> bytes:
    buf = io.BytesIO()
    header = post.build_batch(settings, bundle.post_key(settings), pos or post.fetch_position(settings), buf)
    assert header is not None
    return buf.getvalue()


def refusals() -> list[tuple]:
    with hq.hq_database.connection_context():
        return [
            (b.problem, b.post_id, b.message)
            for b in hq.HQBatch.select().where(hq.HQBatch.status == "refused").order_by(hq.HQBatch.id)
        ]


def held(post_id: str) -> tuple:
    with hq.hq_database.connection_context():
        p = hq.HQPost.get_by_id(post_id)
        return (
            p.last_seq,
            p.chain_seq,
            hq.HQRead.select().count(),
            hq.HQAccessRecord.select().count(),
            hq.HQBatch.select().where(hq.HQBatch.status != "refused").count(),
        )


@contextmanager
def write_lock_held(target: str, post_id: str):
    """Another writer holds what a batch being stored holds: SQLite's write lock (BEGIN IMMEDIATE)
    or, on PostgreSQL, the post's row (FOR UPDATE)."""
    if "://" not in target:
        conn = sqlite3.connect(target, isolation_level=None, timeout=0)
        conn.execute("BEGIN IMMEDIATE")
    else:
        conn = psycopg2.connect(target)
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM hq_post WHERE id = %s FOR UPDATE", (post_id,))
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


def test_a_forged_bomb_is_refused_without_the_write_lock_and_unpacked(settings, db, hq_server, hq_target):
    """The attack as reported: 64 MiB unpacked from a few dozen KB, the post's id, a random key. It
    is answered while another writer holds the lock (before, it waited for it: 10 s, then 503 on
    SQLite; on PostgreSQL until the lock was released), and nothing is stored."""
    body = forged_bomb(settings.post.id)
    assert len(body) < 256 * 1024
    headers = push_headers(settings, body, key=Ed25519PrivateKey.generate())
    before = held(settings.post.id)
    with write_lock_held(hq_target, settings.post.id):
        started = time.monotonic()
        status, answer = send_push(hq_server.port, body, headers, timeout_s=LOCK_WAIT_S)
        waited = time.monotonic() - started
    assert (status, answer["status"], answer["problem"], answer["position"]) == (403, "refused", "bad_signature", None)
    assert waited < LOCK_WAIT_S
    assert held(settings.post.id) == before


def test_an_unknown_post_and_a_wrong_key_get_one_answer(settings, db, hq_server):
    """Which post ids are enrolled is not told to whoever asks: the enrolled post with a wrong key,
    an unknown post with a random key and an unknown post with a real post's key are answered
    alike (before: 403 bad_signature against 404 unknown_post). The batch log tells them apart."""
    add_reads(settings, 1)
    body = built(settings)
    answers = [
        send_push(hq_server.port, body, push_headers(settings, body, key=Ed25519PrivateKey.generate())),
        send_push(hq_server.port, body, push_headers(settings, body, key=Ed25519PrivateKey.generate(), post="post-99")),
        send_push(hq_server.port, body, push_headers(settings, body, post="post-99")),
    ]
    assert answers[0] == answers[1] == answers[2], answers
    status, answer = answers[0]
    assert (status, answer["problem"], answer["position"]) == (403, "bad_signature", None)
    assert "post-99" not in answer["message"] and settings.post.id not in answer["message"]
    logged = refusals()
    assert {(problem, post_id) for problem, post_id, _ in logged} == {
        ("bad_signature", settings.post.id),
        ("unknown_post", "post-99"),
    }
    assert held(settings.post.id)[2] == 0


def test_a_push_without_the_signed_header_is_refused_asking_to_update_the_post(settings, db, hq_server):
    """A post older than headquarters pushes its batch (signed inside) without the header: that is
    what the attack does, so it is refused, telling the operator what to do; nothing is stored."""
    add_reads(settings, 2)
    body = built(settings)
    status, answer = send_push(hq_server.port, body)
    assert (status, answer["status"], answer["problem"]) == (401, "refused", "unsigned"), answer
    assert "X-Waypost-Push" in answer["message"] and "update" in answer["message"].lower()
    assert held(settings.post.id)[:3] == (0, 0, 0)
    assert [row[0] for row in refusals()] == ["unsigned"]
    # the post's own client signs, and the same reads arrive
    assert post.push(settings).reads == 2


def test_a_body_other_than_the_signed_one_is_refused_unread(settings, db, hq_server):
    """A header the post signed for one body, sent with another (the post's own next batch, which
    it would store): refused by its sha256 before a byte is unpacked."""
    add_reads(settings, 2)
    first = built(settings)
    add_reads(settings, 2, seed=1)
    other = built(settings)  # the same position: a batch headquarters would store
    status, answer = send_push(hq_server.port, other, push_headers(settings, first, length=len(other)))
    assert (status, answer["problem"]) == (403, "bad_signature"), answer
    assert "sha256" in answer["message"] and "X-Waypost-Push" in answer["message"]
    assert held(settings.post.id)[:3] == (0, 0, 0)
    # and a body longer than the header says
    status, answer = send_push(hq_server.port, first + b"\0", push_headers(settings, first))
    assert (status, answer["problem"]) == (403, "bad_signature") and str(len(first)) in answer["message"]
    assert held(settings.post.id)[:3] == (0, 0, 0)


@pytest.mark.parametrize(
    "value,named",
    [
        ("not json", "X-Waypost-Push"),
        ('{"post":"x"}', "'batch'"),
        ("x" * 5000, "X-Waypost-Push"),
    ],
)
def test_a_malformed_push_header_is_refused_naming_it(settings, db, hq_server, value, named):
    add_reads(settings, 1)
    body = built(settings)
    good = push_headers(settings, body)
    status, answer = send_push(hq_server.port, body, dict(good, **{protocol.PUSH_HEADER: value}))
    assert (status, answer["problem"]) == (400, "malformed"), answer
    assert named in answer["message"]
    assert held(settings.post.id)[:3] == (0, 0, 0) and [row[0] for row in refusals()] == ["malformed"]


@pytest.mark.parametrize("skew_s", [400, -400, 3600])
def test_a_post_whose_clock_is_off_still_pushes_and_its_offset_is_kept(settings, db, hq_server, skew_s):
    """The header's time is never a reason to refuse (issue 18: a post with a wrong clock must
    still sync); its difference from headquarters' clock is on the outcome and the refusal."""
    add_reads(settings, 2)
    body = built(settings)
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=skew_s)
    headers = push_headers(settings, body, date=when)
    status, answer = send_push(hq_server.port, body, headers)
    assert (status, answer["status"]) == (200, "stored"), answer
    with hq.hq_database.connection_context():
        push = hq.authenticate(headers[protocol.PUSH_HEADER], headers[protocol.SIGNATURE_HEADER], "test")
        with hq.spool(io.BytesIO(body), push) as spooled:
            outcome = hq.ingest(spooled.file, spooled.size, pushed=spooled)
    assert outcome.status == "duplicate" and abs(outcome.clock_offset_s - skew_s) <= 5
    # a refusal carries it too: a batch from a position headquarters has not reached (a gap)
    add_reads(settings, 1, seed=3)
    pos = post.fetch_position(settings)
    gap = built(settings, post.Position(pos.last_seq + 1, pos.chain_seq, pos.chain_hash))
    headers = push_headers(settings, gap, date=when)
    with hq.hq_database.connection_context():
        push = hq.authenticate(headers[protocol.PUSH_HEADER], headers[protocol.SIGNATURE_HEADER], "test")
        with hq.spool(io.BytesIO(gap), push) as spooled, pytest.raises(hq.Refused) as refused:
            hq.ingest(spooled.file, spooled.size, pushed=spooled)
    assert refused.value.problem == "gap" and abs(refused.value.clock_offset_s - skew_s) <= 5


def signed_bomb(settings, records: int = 40, record_mib: int = 1) -> bytes:
    """A batch signed by the post's own key (a post taken over, or its key copied) whose access
    records each carry a 1 MiB field, packed by LZ: every line checks out, the chain links, the
    trailer verifies. Only how tightly it is packed gives it away."""
    sha, z, out = hashlib.sha256(), zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS), []

    def line(obj):
        data = _line(obj)
        sha.update(data)
        out.append(z.compress(data))

    line(
        {
            "t": "header",
            "format": protocol.FORMAT,
            "post": settings.post.id,
            "batch": "bomb-1",
            "first_seq": 1,
            "last_seq": 0,
            "chain": {"first_seq": 1, "last_seq": records, "prev_hash": audit.GENESIS},
        }
    )
    prev = audit.GENESIS
    for seq in range(1, records + 1):
        rec: dict[str, object] = {c: "" for c in protocol.RECORD_COLUMNS}
        rec.update(seq=seq, result_count=None, prev_hash=prev, query="{}", object_ids="[]")
        rec.update(at="2026-01-01T00:00:00Z", details=json.dumps({"note": "x" * (record_mib << 20)}))
        prev = rec["hash"] = audit.digest(rec) or ""
        line({"t": "access", "record": rec})
    digest = sha.digest()
    signature = base64.b64encode(bundle.post_key(settings).sign(protocol.signed_message(digest))).decode()
    out.append(z.compress(_line({"t": "end", "sha256": digest.hex(), "signature": signature})))
    out.append(z.flush())
    return b"".join(out)


def test_a_batch_packed_tighter_than_a_post_packs_one_is_refused_over_http(settings, db, hq_server):
    """40 MiB of valid, signed access records in under 100 KB: refused as oversized (before: stored)."""
    body = signed_bomb(settings)
    assert len(body) < 100 * 1024
    status, answer = send_push(hq_server.port, body, push_headers(settings, body))
    assert (status, answer["problem"]) == (413, "oversized"), answer
    assert f"{protocol.MAX_RATIO} times" in answer["message"]
    assert held(settings.post.id) == (0, 0, 0, 0, 0)


def test_a_pulled_batch_is_unpacked_with_the_same_caps(settings, db, hq_server):
    """The pull's entry (ingest of a spooled body, no push header): refused as oversized after
    about a MiB unpacked, not after 40 (before: stored, holding every record in memory)."""
    body = signed_bomb(settings)
    tracemalloc.start()
    try:
        with hq.hq_database.connection_context(), pytest.raises(hq.Refused) as refused:
            hq.ingest(io.BytesIO(body), len(body), remote_addr="http://post-1:8080")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert refused.value.problem == "oversized"
    assert peak < 16 * 2**20, f"{peak / 2**20:.1f} MiB"
    assert held(settings.post.id) == (0, 0, 0, 0, 0)


def test_repeated_refusals_fold_into_one_row(settings, db, hq_server):
    """30 forged pushes from one address add one row to the batch log, not 30 (finding 7); a post's
    own refusal sent again (a gap, three times) also keeps one row."""
    add_reads(settings, 1)
    body = built(settings)
    for _ in range(30):
        assert send_push(hq_server.port, body, push_headers(settings, body, key=Ed25519PrivateKey.generate()))[0] == 403
    assert [row[:2] for row in refusals()] == [("bad_signature", settings.post.id)]
    add_reads(settings, 1, seed=2)
    pos = post.fetch_position(settings)
    gap = built(settings, post.Position(pos.last_seq + 1, pos.chain_seq, pos.chain_hash))
    for _ in range(3):
        assert send_push(hq_server.port, gap, push_headers(settings, gap))[1]["problem"] == "gap"
    assert [row[0] for row in refusals()] == ["bad_signature", "gap"]
    with hq.hq_database.connection_context():
        assert hq.status()[0]["last_refusal"]["problem"] == "gap"


def test_a_folded_row_counts_the_refusals(settings, db, hq_target):
    hq.open_hq(hq_target)
    with hq.hq_database.connection_context():
        hq.enroll(settings.post.id, "Test post", _public(settings))
    server = WebServer(create_hq_app(hq_target, refusals=hq.RefusalLog(write_every_s=0)), "127.0.0.1", 0).start()
    try:
        add_reads(settings, 1)
        body = built(settings, post.Position(0, 0, audit.GENESIS))
        for _ in range(12):
            send_push(server.port, body, push_headers(settings, body, key=Ed25519PrivateKey.generate()))
    finally:
        server.stop()
    [(problem, post_id, message)] = refusals()
    assert problem == "bad_signature" and "refused 12 times from 127.0.0.1" in message, message


@contextmanager
def serving_hq(settings, target: str, max_batch_mb: int):
    """`waypost hq serve` in a process of its own, as deployed (waitress' body limit included)."""
    port = free_port()
    env = dict(
        os.environ,
        WAYPOST_STORAGE__DATA_DIR=str(settings.data_dir.parent / "hq-data"),
        WAYPOST_STORAGE__MIN_FREE_MB="0",
        WAYPOST_CONFIG="",
    )
    command = [sys.executable, "-m", "appliance", "hq", "serve", "--database", target, "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--max-batch-mb", str(max_batch_mb)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(proc.communicate()[0].decode()) from None
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_body_over_the_limit_gets_json_and_a_row_in_the_batch_log(settings, db, hq_target):
    """waitress refuses a body over `--max-batch-mb` before reading it; the post got its plain-text
    413 and headquarters kept no record. Now the sync API answers it in JSON and logs it."""
    hq.open_hq(hq_target)
    with hq.hq_database.connection_context():
        hq.enroll(settings.post.id, "Test post", _public(settings))
    hq.hq_database.close()
    declared = 3 * 1024 * 1024
    headers = push_headers(settings, b"", length=declared, sha256="ab" * 32, batch="big-1", last_seq=5)
    with serving_hq(settings, hq_target, max_batch_mb=1) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.putrequest("POST", "/hq/v1/batches")
            for name, value in {
                "Content-Type": protocol.CONTENT_TYPE,
                "Content-Length": str(declared),
                **headers,
            }.items():
                conn.putheader(name, value)
            conn.endheaders()
            conn.send(b"\0" * 65536)  # the start of the body: waitress answers without reading the rest
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        assert response.status == 413 and response.getheader("Content-Type", "").startswith("application/json"), raw
        answer = json.loads(raw)
        assert (answer["status"], answer["problem"]) == ("refused", "oversized") and str(declared) in answer["message"]
        # Its row is written at once if the write lock is free, else (headquarters' first retention
        # run or indexing may hold it at start) once a later answer is out, never waiting for it.
        hq.open_hq(hq_target)
        deadline = time.monotonic() + 20
        # (each unsigned GET here is itself refused and logged as bad_signature: issue 18)
        while not [r for r in refusals() if r[0] == "oversized"] and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", f"/hq/v1/posts/{settings.post.id}/position")
            conn.getresponse().read()
            conn.close()
            time.sleep(0.2)
    assert [row[:2] for row in refusals() if row[0] != "bad_signature"] == [("oversized", settings.post.id)]


def test_bench_forged_batch_measures_a_real_headquarters(tmp_path):
    """`waypost bench forged-batch` runs end to end against a headquarters process (figures are
    printed, not judged here: its last line is JSON)."""
    result = CliRunner().invoke(
        main,
        ["bench", "forged-batch", "--forged", "4", "--unpacked-mb", "4", "--reads", "2", "--dir", str(tmp_path / "b")],
        env={"WAYPOST_CONFIG": ""},
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["forged_pushes"] == 4 and figures["forged_statuses"] == [403]
    assert figures["forged_while_write_lock_held"]["statuses"] == [403]
    assert (figures["unsigned_status"], figures["unknown_post_status"], figures["genuine_statuses"]) == (
        401,
        403,
        [200],
    )
    assert 1 <= figures["refusal_rows"] <= 3 and figures["hq_rss_mib_before"] > 0
