"""Hostile batches posted over HTTP to a real headquarters (SQLite and PostgreSQL): numbers too large
for the database and lone surrogate escapes are refused as malformed, naming the field or line, with
a JSON answer (never a 500 page) and a row in the batch log."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io

import pytest
from PIL import Image

from appliance import audit
from sync import hq, protocol
from tests.sync.conftest import push_headers, send_push

HUGE = 10**30


def header(settings, **changes):
    h = {
        "t": "header",
        "format": protocol.FORMAT,
        "post": settings.post.id,
        "batch": "hostile-1",
        "first_seq": 1,
        "last_seq": 0,
        "chain": {"first_seq": 1, "last_seq": 0, "prev_hash": audit.GENESIS},
    }
    h.update(changes)
    return h


def body(*lines) -> bytes:
    """Unsigned: each of these batches must be refused before its signature would be checked."""
    text = b"".join(line if isinstance(line, bytes) else protocol.canonical_line(line) for line in lines)
    return gzip.compress(text + protocol.canonical_line({"t": "end", "sha256": "0" * 64, "signature": ""}))


def send(server, data: bytes):
    """POST `data` with its X-Waypost-Push header signed by the post enrolled at `server`: the
    checks of a batch's lines are reached only by a push that proved who sends it."""
    return send_push(server.port, data, push_headers(server.post_settings, data))


def logged():
    with hq.hq_database.connection_context():
        return [
            (b.status, b.problem, b.post_id, b.batch_id, b.first_seq, b.message)
            for b in hq.HQBatch.select().order_by(hq.HQBatch.id)
        ]


def assert_refused_malformed(server, data, *named):
    status, answer = send(server, data)
    assert (status, answer["status"], answer["problem"]) == (400, "refused", "malformed"), answer
    for text in named:
        assert text in answer["message"], answer["message"]
    [row] = logged()
    assert row[:2] == ("refused", "malformed") and row[5] == answer["message"]
    with hq.hq_database.connection_context():
        assert hq.HQRead.select().count() == 0 and hq.HQAccessRecord.select().count() == 0
    return row


@pytest.mark.parametrize(
    "field,changes",
    [
        ("first_seq", {"first_seq": HUGE, "last_seq": HUGE}),
        ("last_seq", {"last_seq": HUGE}),
        ("chain", {"chain": {"first_seq": HUGE, "last_seq": HUGE, "prev_hash": audit.GENESIS}}),
        ("confirmations", {"confirmations": {"after": 0, "upto": HUGE}}),
        ("backlog", {"backlog": HUGE}),
    ],
)
def test_a_header_number_beyond_bigint_is_refused_naming_the_field(settings, hq_server, field, changes):
    row = assert_refused_malformed(hq_server, body(header(settings, **changes)), f"header field '{field}'")
    # the log still names the post and the batch; the numbers it cannot hold are left empty
    assert row[2:5] == (settings.post.id, "hostile-1", None if field in ("first_seq",) else row[4])
    assert row[4] is None or row[4] <= protocol.MAX_INT


def test_the_largest_bigint_is_still_a_number_the_log_holds(settings, hq_server):
    top = protocol.MAX_INT
    status, answer = send(hq_server, body(header(settings, first_seq=top, last_seq=top - 1)))
    assert (status, answer["problem"]) == (409, "gap")
    assert logged()[0][:5] == ("refused", "gap", settings.post.id, "hostile-1", top)


def _record(**changes):
    rec = {c: "" for c in protocol.RECORD_COLUMNS}
    rec.update(seq=1, result_count=None, prev_hash=audit.GENESIS, query="{}", object_ids="[]", details="{}")
    rec.update(changes)
    rec["hash"] = audit.digest(rec) or ""
    return {"t": "access", "record": rec}


def _read(**image):
    """A read line as the post writes it (its required fields, a real 80x30 JPEG crop), but for `image`'s changes."""
    buf = io.BytesIO()
    Image.new("RGB", (80, 30)).save(buf, format="JPEG")
    data = buf.getvalue()
    im = {
        "kind": "crop",
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": "image/jpeg",
        "bytes": len(data),
        "data": base64.b64encode(data).decode(),
        "width": 80,
        "height": 30,
    }
    im.update(image)
    return {
        "t": "read",
        "seq": 1,
        "read": {
            "uuid": "5d0b2f4e-8a51-4c3e-9b8f-2f1f8c6a7d10",
            "captured_at": "2025-01-01T00:00:00",
            "plate": "7ABC123",
            "camera_id": "cam-1",
            "confidence": 0.9,
        },
        "images": [im],
        "alerts": [],
    }


@pytest.mark.parametrize(
    "lines,named",
    [
        ([_record(result_count=HUGE)], ["line 2 (access record)", "result_count"]),
        ([_record(result_count=2**31)], ["line 2 (access record)", "result_count"]),  # INTEGER on PostgreSQL
        ([_record(username=["not", "text"])], ["line 2 (access record)", "'username' must be text"]),
        ([_record(seq=True)], ["line 2 (access record)", "seq True"]),
        ("read", ["line 2 (read)", "image width"]),
        ("read-text", ["line 2 (read)", "image height"]),
        ("alert", ["line 2 (read)", "alert needs an id"]),
        ("confirmation", ["line 2 (confirmation)", "alert with its id"]),
    ],
)
def test_a_line_number_out_of_range_is_refused_naming_the_line(settings, hq_server, lines, named):
    chain = {"first_seq": 1, "last_seq": 1, "prev_hash": audit.GENESIS}
    if lines == "read":
        h, lines = header(settings, last_seq=1), [_read(width=HUGE)]
    elif lines == "read-text":
        h, lines = header(settings, last_seq=1), [_read(height="thirty")]
    elif lines == "alert":
        item = _read()
        item["alerts"] = [{"id": HUGE}]
        h, lines = header(settings, last_seq=1), [item]
    elif lines == "confirmation":
        h, lines = header(settings), [{"t": "confirmation", "alert": {"id": -HUGE, "read_uuid": "u1"}}]
    else:
        h = header(settings, chain=chain)
    assert_refused_malformed(hq_server, body(h, *lines), *named)


def test_a_lone_surrogate_in_an_access_record_is_refused_naming_the_line(settings, hq_server):
    line = protocol.canonical_line(_record()).replace(b'"username":""', b'"username":"\\ud800"')
    assert b"\\ud800" in line
    chain = {"first_seq": 1, "last_seq": 1, "prev_hash": audit.GENESIS}
    assert_refused_malformed(
        hq_server, body(header(settings, chain=chain), line), "line 2 holds a lone UTF-16 surrogate escape"
    )


def test_a_lone_surrogate_in_the_header_is_refused_and_logged(settings, hq_server):
    line = protocol.canonical_line(header(settings)).replace(b'"batch":"hostile-1"', b'"batch":"x\\udc80"')
    assert_refused_malformed(hq_server, body(line), "line 1 holds a lone UTF-16 surrogate escape")


def test_an_escaped_surrogate_pair_is_text_and_is_not_refused_for_it(settings, hq_server):
    # a proper pair (an emoji written with ensure_ascii) is valid text: the batch gets as far as its signature
    line = protocol.canonical_line(header(settings)).replace(b'"batch":"hostile-1"', b'"batch":"x\\ud83d\\ude00"')
    status, answer = send(hq_server, body(line))
    assert (status, answer["problem"]) == (403, "bad_signature"), answer
