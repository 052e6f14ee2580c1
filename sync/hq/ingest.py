"""The ingest of one batch, in one transaction: either the whole batch is stored and the post's
position moves to its end, or nothing is stored and the refusal goes to the batch log (in a
transaction of its own) with the problem named. A batch headquarters already holds (the same batch
id, or the same range with the same contents) is acknowledged again without being stored twice.
Every line is checked by sync/protocol.py; this module decides what a checked line means for what
headquarters holds (gaps, overlaps, the chain of access records). Legal holds placed and released
at a post come in its batches and are stored in the batch's transaction (sync/hq/holds.py).

A push proves who sends it before any of this: `authenticate` checks its signed X-Waypost-Push
header without the write lock and without reading the body, `spool` holds the body in a temporary
file and hashes it as it comes, and `ingest` compares the body with the header before a byte of it
is unpacked. Every body is unpacked within a size and a ratio cap (protocol.unpacked_limit).
Refusals go to the batch log through a RefusalLog, which folds repeats into one row.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import logging
import os
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from peewee import Field, OperationalError

from appliance import audit, bundle
from appliance.models import utcnow
from sync import protocol
from sync.hq import holds
from sync.hq.models import (
    HQAccessRecord,
    HQAlert,
    HQBatch,
    HQPost,
    HQPostAlias,
    HQRead,
    SqliteDatabase,
    hq_database,
    insert_rows,
    integrity_errors,
    lock_images,
    locked_post,
    write,
)
from sync.hq.posts import position, renamed_request
from sync.protocol import RECORD_COLUMNS, ProtocolError

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_BYTES = 64 * 1024 * 1024

FLUSH_BYTES = 8 * 1024 * 1024

RECORD_FLUSH = 1000  # access records held before they are inserted


@dataclass
class Outcome:
    status: str  # stored | duplicate
    batch_id: str
    post_id: str
    reads: int
    records: int
    position: dict
    holds: int = 0  # legal holds placed or released at the post that this batch changed here
    # the post's clock minus headquarters' when it signed its push header (None: pulled), for the
    # posts whose clock is off (issue 18); never a reason to refuse
    clock_offset_s: int | None = None
    frames: int = 0  # frames of the second lane stored

    def as_json(self) -> dict:
        return {
            "status": self.status,
            "batch": self.batch_id,
            "reads": self.reads,
            "records": self.records,
            "holds": self.holds,
            "frames": self.frames,
            "position": self.position,
        }


class Refused(Exception):
    """A refusal as the sender is told it (the batch log may say more: see authenticate)."""

    def __init__(self, error: ProtocolError, position: dict | None = None, clock_offset_s: int | None = None):
        super().__init__(str(error))
        self.problem = error.problem
        self.message = error.message
        self.http_status = error.http_status
        self.position = position
        self.clock_offset_s = clock_offset_s  # as on Outcome

    def as_json(self) -> dict:
        return {"status": "refused", "problem": self.problem, "message": self.message, "position": self.position}


class _Batch:
    """What one ingest learns as it goes, for the batch log."""

    def __init__(self) -> None:
        self.header: dict = {}
        self.post: HQPost | None = None
        self.reads = 0
        self.records = 0
        self.holds = 0
        self.frames = 0  # frames of the second lane stored
        self.signature_ok = False
        self.first_bad_seq: int | None = None
        # the sender has shown itself: a push whose header verified and whose body is the one it
        # signed, or a batch headquarters pulled from the post it asked (see RefusalLog)
        self.proven = False
        self.sender = ""  # the post a verified push header names
        self.clock_offset_s: int | None = None
        self.unpack_limit: int | None = None


def ingest(
    body,
    length: int | None,
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    remote_addr: str = "",
    after_store=None,
    pushed: Spooled | None = None,
    refusals: RefusalLog | None = None,
) -> Outcome:
    """Store one batch read from the binary stream `body` (`length` bytes, if known). Raises
    Refused (nothing stored, the refusal logged). `after_store()` runs after the commit and before
    the answer (fault tests).

    `pushed`: a push's body as spooled (its header verified by authenticate): the body is compared
    with the header (length and sha256) before a byte of it is unpacked, and the batch's own header
    with the header's post, batch and range. Without it (a batch headquarters pulled from the post
    it asked, over a connection it opened), the body is unpacked within the same caps and its
    signed trailer checked at its end, as before."""
    seen = _Batch()
    seen.proven = pushed is None
    if pushed is not None:
        body, length = pushed.file, pushed.size
        seen.header, seen.sender = _claimed(pushed.push), pushed.push.post
        seen.clock_offset_s = clock_offset_s(pushed.push)
    compressed = length if length is not None else _size_of(body)
    try:
        if pushed is not None:
            _check_body(pushed)
            seen.proven = True
        if length is not None and length > max_bytes:
            raise ProtocolError(
                "oversized", f"the batch is {length} bytes; this headquarters takes at most {max_bytes}"
            )
        seen.unpack_limit = protocol.unpacked_limit(compressed, max_bytes)
        with write():
            outcome = _ingest(body, max_bytes, remote_addr, seen, pushed.push if pushed is not None else None)
    except ProtocolError as exc:
        if exc.problem == "oversized" and seen.unpack_limit is not None and seen.unpack_limit < 4 * max_bytes:
            exc = ProtocolError(
                "oversized",
                f"{exc.message}: more than {protocol.MAX_RATIO} times its {compressed} bytes, packed tighter than "
                "any post packs a batch (a decompression bomb); unpacking stopped there and nothing was stored",
            )
        _refuse(exc, seen, remote_addr, length, refusals)
    if after_store is not None:
        after_store()
    outcome.clock_offset_s = seen.clock_offset_s
    return outcome


def _check_body(pushed: Spooled) -> None:
    """The body is the one the push header was signed for, checked before anything unpacks it."""
    push = pushed.push
    if pushed.size != push.length or pushed.sha256 != push.sha256:
        got = f"{pushed.size} bytes" + (f" or more (read up to {pushed.size})" if pushed.size > push.length else "")
        raise ProtocolError(
            "bad_signature",
            f"the body ({got}, sha256 {pushed.sha256[:16]}...) is not the one its signed {protocol.PUSH_HEADER} "
            f"header names ({push.length} bytes, sha256 {push.sha256[:16]}...): altered or cut in transit. "
            "Nothing of it was read; the post sends it again",
        )


def _claimed(push: protocol.Push) -> dict:
    """What a push header says of its batch, for the batch log until the batch's own header is read."""
    return {"post": push.post, "batch": push.batch, "first_seq": push.first_seq, "last_seq": push.last_seq}


def clock_offset_s(push: protocol.Push) -> int | None:
    """The post's clock minus headquarters' when the post signed `push` (whole seconds), measured
    as every other exchange measures it (protocol.offset_s)."""
    return protocol.offset_s(push.date)


def _size_of(body) -> int | None:
    """The bytes left in a file-backed body (a pulled batch spooled without a Content-Length)."""
    try:
        return os.fstat(body.fileno()).st_size - body.tell()
    except (OSError, ValueError, AttributeError):
        return None


def _refuse(
    exc: ProtocolError,
    seen: _Batch,
    remote_addr: str,
    length: int | None,
    refusals: RefusalLog | None,
    told: ProtocolError | None = None,
) -> NoReturn:
    """Log the refusal (RefusalLog) and raise Refused, telling the sender `told` if given, else `exc`."""
    header = seen.header
    chain = header["chain"] if isinstance(header.get("chain"), dict) else {}
    row = {
        "batch_id": _text(header.get("batch", ""), 100),
        "post_id": _text(seen.sender or header.get("post", ""), 100),
        "first_seq": _int_or_none(header.get("first_seq")),
        "last_seq": _int_or_none(header.get("last_seq")),
        "chain_first": _int_or_none(chain.get("first_seq")),
        "chain_last": _int_or_none(chain.get("last_seq")),
        "size": _int_or_none(length) or 0,
        "status": "refused",
        "problem": exc.problem,
        "message": _text(exc.message),
        "remote_addr": _text(remote_addr, 200),
    }
    book = refusals if refusals is not None else RefusalLog.unfolded()
    post = None
    if seen.post is not None and seen.signature_ok:
        with write():
            book.record(row, proven=True)
            post = locked_post(seen.post.id)
            if post is not None:
                post.last_contact_at = utcnow()
                changed: list[Field] = [HQPost.last_contact_at]
                if seen.clock_offset_s is not None:  # the post's clock, shown at headquarters (issue 18)
                    post.clock_offset_s, post.clock_checked_at = seen.clock_offset_s, post.last_contact_at
                    changed += [HQPost.clock_offset_s, HQPost.clock_checked_at]
                if exc.problem == "broken_chain" and post.chain_status != "broken":
                    post.chain_status, post.chain_problem, post.first_bad_seq = (
                        "broken",
                        exc.message,
                        seen.first_bad_seq,
                    )
                    changed += [HQPost.chain_status, HQPost.chain_problem, HQPost.first_bad_seq]
                post.save(only=changed)
    else:
        book.record(row, proven=seen.proven)
    # The position only to the post itself: a batch whose signature checked out. Anyone else (a
    # refusal before the signature, which is checked at the end) learns nothing of it; the post
    # asks for it with a signed GET (sync/post.py).
    raise Refused(told or exc, position(post) if post is not None else None, seen.clock_offset_s)


def _int_or_none(value):
    """What a BIGINT column of the batch log can hold: the refusal row must always be written."""
    return value if protocol.is_whole(value) else None


def _text(value, limit: int | None = None) -> str:
    """Text the database takes whatever the batch held (a lone surrogate becomes '?')."""
    text = str(value)[:limit] if limit is not None else str(value)
    return text.encode("utf-8", "replace").decode("utf-8")


def _ingest(body, max_bytes: int, remote_addr: str, seen: _Batch, claim: protocol.Push | None) -> Outcome:
    reader = protocol.Reader(body, seen.unpack_limit or max_bytes * 4)
    items = iter(reader)
    first_line = next(items)
    seen.header = first_line  # the batch log names the post and batch even when the header is refused
    header = protocol.header_fields(first_line)
    if claim is not None and (header["post"], header["batch"], header["first_seq"], header["last_seq"]) != (
        claim.post,
        claim.batch,
        claim.first_seq,
        claim.last_seq,
    ):
        raise ProtocolError(
            "malformed",
            f"the batch's header (post {header['post']!r}, batch {header['batch']!r}, outbox seqs "
            f"{header['first_seq']}..{header['last_seq']}) is not what its signed {protocol.PUSH_HEADER} header "
            f"names (post {claim.post!r}, batch {claim.batch!r}, {claim.first_seq}..{claim.last_seq}): a fault "
            "of the post's software; nothing was stored",
        )
    post = locked_post(header["post"])  # one batch per post at a time
    if post is None:
        raise ProtocolError(
            "unknown_post",
            f"post {header['post']!r} is not enrolled here: enrol its public key with `waypost hq enroll`",
        )
    seen.post = post
    public_key = bundle.load_public_key(post.public_key.encode())
    # the ids a line may name: the post's, and those it had before `waypost hq rename` (its lines
    # signed then still say so)
    own_ids = {post.id, *(a.old_id for a in HQPostAlias.select().where(HQPostAlias.post_id == post.id))}
    first, last, chain = header["first_seq"], header["last_seq"], header["chain"]
    confirmations = header.get("confirmations")  # checked by header_fields
    mode = _mode(post, header)

    deferred: ProtocolError | None = None  # a content fault, raised once the signature is known good
    next_seq, want_record = first, chain["first_seq"]
    prev_hash = post.chain_hash if mode == "new" else chain["prev_hash"]
    read_rows: list[dict] = []
    images: dict[str, tuple[dict, bytes]] = {}  # by sha256
    alerts: list[dict] = []
    records: list[dict] = []
    hold_events: list[tuple[str, dict]] = []  # applied once the whole batch is read and its signature checked
    pending_bytes = 0  # image bytes held for the next insert (memory stays bounded)
    frames_due: list[tuple] = []  # frames the batch's reads name, to come in the second lane
    frames, next_frame, reads_held = header.get("frames"), 0, post.last_seq
    if frames is not None:
        next_frame = frames["after"] + 1
        if frames["upto"] > reads_held:
            raise ProtocolError(
                "malformed",
                f"the header's frames reach outbox seq {frames['upto']}, past the reads headquarters holds "
                f"(up to {reads_held}): a frame comes after its read",
            )
    for item in items:
        kind = item["t"]
        if kind == "read":
            where = f"line {reader.lines} (read)"
            line = protocol.read_line(item, where, next_seq, last)
            next_seq, read = line.seq + 1, line.read
            if read.get("post_id", post.id) not in own_ids and deferred is None:
                deferred = ProtocolError(
                    "wrong_post",
                    f"{where}: read {read['uuid']} says post_id {read['post_id']!r}, but the batch is post "
                    f"{post.id!r}'s: a post sends only its own reads. If this post was renamed or enrolled "
                    f"under a new id, rename it at headquarters (`waypost hq rename`) instead of enrolling "
                    f"its key again; nothing of the batch was stored",
                )
            if mode == "new":
                for im, data in line.decoded:
                    images[im["sha256"]] = (im, data)
                    pending_bytes += len(data)
            digest = protocol.content_hash(read, line.images)
            if mode == "new":
                read_rows.append(
                    {
                        "post_id": post.id,
                        "segment": post.segment,
                        "uuid": read["uuid"],
                        "seq": line.seq,
                        "captured_at": read["captured_at"],
                        "plate": read["plate"],
                        "content_hash": digest,
                        "data": dict(read, images=[{k: v for k, v in im.items() if k != "data"} for im in line.images]),
                    }
                )
                for alert in protocol.read_alerts(item, where):
                    alerts.append(
                        {
                            "post_id": post.id,
                            "segment": post.segment,
                            "alert_id": alert["id"],
                            "read_uuid": read["uuid"],
                            "data": alert,
                        }
                    )
                frames_due.extend((post.id, read["uuid"], line.seq, im["sha256"]) for im in line.to_follow or [])
                if len(read_rows) >= 500 or pending_bytes > FLUSH_BYTES:
                    _flush(read_rows, images, alerts, records)
                    pending_bytes = 0
            elif deferred is None:
                held = HQRead.get_or_none((HQRead.post_id == post.id) & (HQRead.uuid == read["uuid"]))
                if held is None or held.content_hash != digest:
                    deferred = ProtocolError(
                        "overlap",
                        f"{where}: read {read['uuid']} (seq {line.seq}) is in a range "
                        "headquarters already holds, but differs from what it holds",
                    )
            seen.reads += 1
        elif kind == "hold":
            where = f"batch {header['batch']}, line {reader.lines} (hold)"
            seq, event = protocol.hold_line(item, where, next_seq, last)
            next_seq = seq + 1
            hold_events.append((where, event))
        elif kind == "frame":
            where = f"line {reader.lines} (frame)"
            if frames is None:
                raise ProtocolError("malformed", f"{where}: a frame line in a batch whose header announces no frames")
            frame = protocol.frame_line(item, where, next_frame, frames)
            next_frame = frame.seq + 1
            if mode == "new" and _store_frame(post.id, frame, where):
                seen.frames += 1
        elif kind == "confirmation":
            alert = protocol.confirmation_line(item, reader.lines)
            if mode == "new":
                alerts.append(
                    {
                        "post_id": post.id,
                        "segment": post.segment,
                        "alert_id": alert["id"],
                        "read_uuid": alert["read_uuid"],
                        "data": alert,
                    }
                )
        elif kind == "access":
            where = f"line {reader.lines} (access record)"
            rec = protocol.access_line(item, where, want_record, chain)
            want_record += 1
            if deferred is None:
                if rec["prev_hash"] != prev_hash:
                    seen.first_bad_seq = rec["seq"]
                    deferred = ProtocolError(
                        "broken_chain",
                        f"access record {rec['seq']}: its prev_hash does not "
                        f"link to record {rec['seq'] - 1} as headquarters holds it"
                        if rec["seq"] == chain["first_seq"]
                        else f"access record {rec['seq']}: its prev_hash does not link to record {rec['seq'] - 1}",
                    )
                elif audit.digest(rec) != rec["hash"]:
                    seen.first_bad_seq = rec["seq"]
                    deferred = ProtocolError(
                        "broken_chain",
                        f"access record {rec['seq']}: its hash does not match its fields (altered on the post)",
                    )
                elif mode == "held":
                    held_record = HQAccessRecord.get_or_none(
                        (HQAccessRecord.post_id == post.id)
                        & (HQAccessRecord.segment == post.segment)
                        & (HQAccessRecord.seq == rec["seq"])
                    )
                    if held_record is None or held_record.hash != rec["hash"]:
                        seen.first_bad_seq = rec["seq"]
                        deferred = ProtocolError(
                            "broken_chain",
                            f"access record {rec['seq']} differs from the copy "
                            "headquarters holds (the post's log was rewritten)",
                        )
            prev_hash = rec["hash"]
            if mode == "new":
                records.append(dict({c: rec[c] for c in RECORD_COLUMNS}, post_id=post.id, segment=post.segment))
                if len(records) >= RECORD_FLUSH:
                    # inserted as they come, like reads (the transaction still rolls back on a
                    # refusal): a batch's records are never all held in memory
                    _flush(read_rows, images, alerts, records)
                    pending_bytes = 0
            seen.records += 1
        else:
            raise ProtocolError("malformed", f"line {reader.lines}: unknown line type {kind!r}")
    if want_record != chain["last_seq"] + 1:
        raise ProtocolError(
            "malformed",
            f"the header announces access records up to {chain['last_seq']}, "
            f"the batch carries them up to {want_record - 1}",
        )
    reader.verify(public_key)
    seen.signature_ok = True
    if deferred is not None:
        raise deferred
    if mode == "new":
        _flush(read_rows, images, alerts, records)
        seen.holds = holds.store_from_post(post.id, hold_events, post.segment)
        post.last_seq = max(post.last_seq, last)
        _frames_to_come(post, frames_due, frames)
        if chain["last_seq"] >= chain["first_seq"]:
            post.chain_seq, post.chain_hash = chain["last_seq"], prev_hash
        if confirmations is not None:
            post.confirmation_id = max(post.confirmation_id, confirmations["upto"])
    post.last_contact_at = utcnow()
    if seen.clock_offset_s is not None:  # the post's clock, shown at headquarters (issue 18)
        post.clock_offset_s, post.clock_checked_at = seen.clock_offset_s, post.last_contact_at
    if header.get("backlog") is not None:
        post.backlog = header["backlog"]
    post.save()
    status = "stored" if mode == "new" else "duplicate"
    HQBatch.create(
        batch_id=header["batch"],
        post_id=post.id,
        first_seq=first,
        last_seq=last,
        chain_first=chain["first_seq"],
        chain_last=chain["last_seq"],
        reads=seen.reads,
        records=seen.records,
        size=reader.bytes,
        status=status,
        remote_addr=remote_addr,
    )
    return Outcome(
        status, header["batch"], post.id, seen.reads, seen.records, position(post), seen.holds, frames=seen.frames
    )


def _mode(post: HQPost, header: dict) -> str:
    """ "new" (the batch continues what headquarters holds), "held" (headquarters holds its whole
    range already: compare, acknowledge, store nothing), or a ProtocolError."""
    first, last, chain = header["first_seq"], header["last_seq"], header["chain"]
    stored = (
        HQBatch.select()
        .where((HQBatch.post_id == post.id) & (HQBatch.batch_id == header["batch"]) & (HQBatch.status == "stored"))
        .first()
    )
    if stored is not None:
        latest = (
            HQBatch.select(HQBatch.id)
            .where((HQBatch.post_id == post.id) & (HQBatch.status == "stored"))
            .order_by(HQBatch.id.desc())
            .first()
        )
        if latest.id != stored.id:
            raise ProtocolError(
                "replay",
                f"batch {header['batch']} was stored on {stored.received_at:%Y-%m-%d %H:%M:%S} "
                "UTC and later batches have been stored since: an old batch sent again",
            )
        return "held"
    reads_held = last <= post.last_seq
    chain_held = chain["last_seq"] <= post.chain_seq
    confirmations = header.get("confirmations") or {"after": 0, "upto": 0}
    frames = header.get("frames") or {"after": 0, "upto": 0}
    frames_held = frames["upto"] <= post.frame_seq
    if reads_held and chain_held and confirmations["upto"] <= post.confirmation_id and frames_held:
        return "held"
    if frames["after"] > post.frame_seq:
        raise ProtocolError(
            "gap",
            f"the batch's frames start after outbox seq {frames['after']}; headquarters holds them up to "
            f"{post.frame_seq}",
        )
    if confirmations["after"] > post.confirmation_id:
        raise ProtocolError(
            "gap",
            f"the batch's alert confirmations start after {confirmations['after']}; "
            f"headquarters holds them up to {post.confirmation_id}",
        )
    if first > post.last_seq + 1:
        raise ProtocolError(
            "gap",
            f"the batch starts at outbox seq {first}; headquarters holds up to "
            f"{post.last_seq}, so {post.last_seq + 1}..{first - 1} would be missing",
        )
    if chain["first_seq"] > post.chain_seq + 1:
        raise ProtocolError(
            "gap",
            f"the batch's access records start at {chain['first_seq']}; headquarters "
            f"holds the log up to {post.chain_seq}",
        )
    if first != post.last_seq + 1:
        raise ProtocolError(
            "overlap", f"the batch's range {first}..{last} overlaps what headquarters holds (up to {post.last_seq})"
        )
    if chain["first_seq"] != post.chain_seq + 1:
        raise ProtocolError(
            "overlap",
            f"the batch's access records {chain['first_seq']}..{chain['last_seq']} "
            f"overlap what headquarters holds (up to {post.chain_seq})",
        )
    # A first record that does not link to headquarters' copy is found (and reported as a broken
    # chain, once the signature is known good) when the records are read.
    return "new"


READ_INSERT = ("hq_read", ("post_id", "segment", "uuid", "seq", "captured_at", "plate", "content_hash", "data"))

IMAGE_INSERT = ("hq_image", ("sha256", "content_type", "width", "height", "size", "data"))

RECORD_INSERT = ("hq_access_record", ("post_id", "segment", *RECORD_COLUMNS))

READ_IMAGE_INSERT = ("hq_read_image", ("read_id", "sha256"))


FRAME_DUE_INSERT = ("hq_frame_due", ("post_id", "read_uuid", "seq", "sha256"))


def _store_frame(post_id: str, frame: protocol.FrameLine, where: str) -> bool:
    """A frame of the second lane, stored if it is the one its read named (its sha256, size, width
    and height); False when headquarters no longer holds the read (its retention purged it). Raises
    ProtocolError (malformed) for any other frame: nothing of the batch is stored."""
    row = (
        HQRead.select(HQRead.id, HQRead.data)
        .where((HQRead.post_id == post_id) & (HQRead.uuid == frame.read_uuid))
        .first()
    )
    p = hq_database.param
    came = (f"DELETE FROM hq_frame_due WHERE post_id = {p} AND read_uuid = {p}", (post_id, frame.read_uuid))
    if row is None:
        hq_database.execute_sql(*came)
        return False
    named = next((im for im in row.data.get("images") or [] if im.get("kind") == "frame"), None)
    image = frame.image
    if named is None or any(named.get(k) != image.get(k) for k in ("sha256", "bytes", "width", "height")):
        what = "no frame" if named is None else f"frame sha256 {str(named.get('sha256'))[:16]}..."
        raise ProtocolError(
            "malformed",
            f"{where}: the frame of read {frame.read_uuid} (sha256 {image['sha256'][:16]}..., {image['bytes']} bytes) "
            f"is not the one the read's signed line named ({what}): refused, nothing of the batch stored",
        )
    lock_images([image["sha256"]])  # against a concurrent purge (models.lock_images)
    insert_rows(
        IMAGE_INSERT,
        [(image["sha256"], protocol.IMAGE_TYPE, image["width"], image["height"], len(frame.data), frame.data)],
        on_conflict="ON CONFLICT (sha256) DO NOTHING",
    )
    insert_rows(READ_IMAGE_INSERT, [(row.id, image["sha256"])], on_conflict="ON CONFLICT DO NOTHING")
    hq_database.execute_sql(*came)
    return True


def _frames_to_come(post: HQPost, due: list[tuple], frames: dict | None) -> None:
    """List the frames this batch's reads named without their data, and move post.frame_seq: to the
    end of a batch of frames, and to post.last_seq when no frame past it is still to come."""
    if due:
        insert_rows(FRAME_DUE_INSERT, due, on_conflict="ON CONFLICT DO NOTHING")
    if frames is not None:
        post.frame_seq = max(post.frame_seq, frames["upto"])
    p = hq_database.param
    waiting = hq_database.execute_sql(
        f"SELECT 1 FROM hq_frame_due WHERE post_id = {p} AND seq > {p} LIMIT 1", (post.id, post.frame_seq)
    ).fetchone()
    if waiting is None:
        post.frame_seq = max(post.frame_seq, post.last_seq)


def _flush(read_rows, images, alerts, records) -> None:
    # the images these reads name, held against a concurrent purge until the batch commits
    lock_images({im["sha256"] for r in read_rows for im in r["data"]["images"]} | set(images))
    if read_rows:
        try:
            insert_rows(
                READ_INSERT,
                [
                    (
                        r["post_id"],
                        r["segment"],
                        r["uuid"],
                        r["seq"],
                        r["captured_at"],
                        r["plate"],
                        r["content_hash"],
                        HQRead.data.db_value(r["data"]),
                    )
                    for r in read_rows
                ],
            )
        except integrity_errors() as exc:
            raise ProtocolError("overlap", f"a read of the batch is already held under another seq: {exc}") from None
        _insert_read_images(read_rows)
        read_rows.clear()
    if images:
        # the same crop from another post or an earlier batch is held once
        insert_rows(
            IMAGE_INSERT,
            [
                # read_line checked the bytes are a JPEG of this width and height
                (sha, protocol.IMAGE_TYPE, im["width"], im["height"], len(data), data)
                for sha, (im, data) in images.items()
            ],
            on_conflict="ON CONFLICT (sha256) DO NOTHING",
        )
        images.clear()
    if alerts:
        for row in alerts:
            (
                HQAlert.insert(**row)
                .on_conflict(
                    conflict_target=[HQAlert.post_id, HQAlert.segment, HQAlert.alert_id],
                    update={HQAlert.data: row["data"]},
                )
                .execute()
            )
        alerts.clear()
    if records:
        try:
            fields = [HQAccessRecord._meta.columns[c] for c in RECORD_COLUMNS]  # their types, as the ORM would
            insert_rows(
                RECORD_INSERT,
                [(r["post_id"], r["segment"], *(f.db_value(r[f.column_name]) for f in fields)) for r in records],
            )
        except integrity_errors() as exc:
            raise ProtocolError("overlap", f"an access record of the batch is already held: {exc}") from None
        records.clear()


def _insert_read_images(read_rows: list[dict]) -> None:
    """Which image each read just inserted uses (hq_read_image), in the batch's transaction:
    retention deletes an image only when no remaining read names it (sync/hq/retention.py)."""
    by_uuid = {r["uuid"]: {im["sha256"] for im in r["data"]["images"]} for r in read_rows}
    post_id = read_rows[0]["post_id"]  # a batch is one post's
    p = hq_database.param
    refs = [
        (read_id, sha)
        for read_id, uuid in hq_database.execute_sql(
            f"SELECT id, uuid FROM hq_read WHERE post_id = {p} AND uuid IN ({', '.join([p] * len(by_uuid))})",
            [post_id, *by_uuid],
        )
        for sha in sorted(by_uuid[uuid])
    ]
    if refs:
        insert_rows(READ_IMAGE_INSERT, refs)


def refuse_oversized(received: int, max_bytes: int, remote_addr: str) -> NoReturn:
    """Refuse (and log) a pulled batch that was larger than headquarters takes, as ingest would
    refuse it: raises Refused."""
    seen = _Batch()
    seen.proven = True  # from the post headquarters asked
    _refuse(
        ProtocolError(
            "oversized", f"the batch is more than {max_bytes} bytes; this headquarters takes at most {max_bytes}"
        ),
        seen,
        remote_addr,
        received,
        None,
    )


# --- a push: who sends it, checked before its body is read -------------------------------------------

UNSIGNED = (
    f"this push carries no {protocol.PUSH_HEADER} header: the post runs a Waypost older than this "
    "headquarters, which takes only pushes that prove who sends them before their body is read. Update the "
    "post's software (deploy/ansible/README.md, 'Updating the software'); it then sends what waits by "
    "itself, nothing is lost"
)

# One answer whether the post is unknown or the signature does not verify (the batch log says which).
NOT_PROVEN = ProtocolError(
    "bad_signature",
    f"the {protocol.PUSH_HEADER} header is not signed with a key enrolled here for the post it names: check "
    "post.id and sync.key_file on the post, and that headquarters enrolled its current public key "
    "(`waypost hq enroll`). Nothing of the body was read",
)


def authenticate(
    value: str | None,
    signature: str | None,
    remote_addr: str,
    length: int | None = None,
    refusals: RefusalLog | None = None,
) -> protocol.Push:
    """Who sends a push, checked before a byte of its body is read and without the write lock: the
    X-Waypost-Push header `value`, signed (`signature`, base64) with the key enrolled for the post
    it names. Returns the header's claim; raises Refused (logged). An unknown post and a signature
    that does not verify get one answer (NOT_PROVEN), after the same work.

    The header's time is carried, never checked. The signature binds the header to one body (its
    length and sha256) and one batch range, so a request replayed by someone who saw it can only
    deliver that same batch of the post's again: stored if headquarters lacks it (what the post sent
    it for), else acknowledged as a duplicate (_mode) or refused as a replay or an overlap, nothing
    stored twice. Refusing by time would stop a post whose clock is off (issue 18); its offset is
    kept on the outcome and the refusal instead."""
    seen = _Batch()
    try:
        if not value:
            raise ProtocolError("unsigned", UNSIGNED)
        push = protocol.parse_push(value)
        seen.header, seen.clock_offset_s = _claimed(push), clock_offset_s(push)
        post = HQPost.get_or_none(HQPost.id == push.post)
        message = protocol.push_message(value)
        verified = _verifies(_key_of(post), signature or "", message)
        renamed = None if post is not None else renamed_request(push.post, message, signature or "")
        if renamed is not None:  # the post itself, still under its old id (`waypost hq rename`)
            raise ProtocolError("renamed", renamed)
        if post is None:
            raise ProtocolError(
                "unknown_post", f"post {push.post!r} is not enrolled here; its push was answered as a bad signature"
            )
        if not verified:
            raise ProtocolError(
                "bad_signature",
                f"the {protocol.PUSH_HEADER} signature does not verify with post {push.post!r}'s enrolled key",
            )
    except ProtocolError as exc:
        _refuse(
            exc,
            seen,
            remote_addr,
            length,
            refusals,
            NOT_PROVEN if exc.problem in ("unknown_post", "bad_signature") else None,
        )
    return push


def _key_of(post: HQPost | None) -> Ed25519PublicKey:
    """The post's enrolled key, or (no such post, or a key that does not load) one nobody holds:
    the signature is checked either way, so an unknown post takes as long as a wrong key."""
    if post is not None:
        try:
            return bundle.load_public_key(post.public_key.encode())
        except bundle.BundleError:
            pass
    return _nobodys_key()


@functools.cache
def _nobodys_key() -> Ed25519PublicKey:
    return Ed25519PrivateKey.generate().public_key()


def _verifies(key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True


class SpoolError(Exception):
    """Headquarters could not hold a body on its own disk (not the sender's fault)."""


@dataclass
class Spooled:
    """A push's body in an anonymous temporary file, measured and hashed as it was received."""

    push: protocol.Push
    file: IO[bytes]
    size: int
    sha256: str

    def __enter__(self) -> Spooled:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def spool(stream, push: protocol.Push, max_bytes: int = DEFAULT_MAX_BATCH_BYTES, chunk: int = 256 * 1024) -> Spooled:
    """Copy a push's body from `stream` into a temporary file, hashing it on the way: the length its
    verified header gives (never more than max_bytes) and one byte more, which shows a longer body
    without holding it. Nothing is unpacked or parsed here; ingest compares the result with the
    header first. Raises SpoolError when the disk refuses."""
    limit = min(push.length, max_bytes) + 1
    file = spool_file("push-")
    digest, size = hashlib.sha256(), 0
    try:
        while size < limit:
            data = stream.read(min(chunk, limit - size))
            if not data:
                break
            try:
                file.write(data)
            except OSError as exc:
                raise SpoolError(f"could not hold the batch in a temporary file ({size} bytes in): {exc}") from None
            digest.update(data)
            size += len(data)
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return Spooled(push, file, size, digest.hexdigest())


def spool_file(prefix: str) -> IO[bytes]:
    """An anonymous temporary file (gone when closed, even after a crash): beside a SQLite
    database, else in the system's temporary directory. Raises SpoolError."""
    db = hq_database.obj
    where = str(Path(db.database).parent) if isinstance(db, SqliteDatabase) else tempfile.gettempdir()
    try:
        return tempfile.TemporaryFile(dir=where, prefix=prefix)
    except OSError as exc:
        raise SpoolError(f"could not make a temporary file for the batch in {where}: {exc}") from None


def refuse_push(
    push: protocol.Push, error: ProtocolError, remote_addr: str, length: int | None, refusals: RefusalLog | None = None
) -> NoReturn:
    """Refuse (and log) a push whose header verified, for what its request says before its body is
    read (its size): raises Refused."""
    seen = _Batch()
    seen.header, seen.sender, seen.clock_offset_s = _claimed(push), push.post, clock_offset_s(push)
    _refuse(error, seen, remote_addr, length, refusals)


# --- the batch log's refusals, bounded ---------------------------------------------------------------


@dataclass
class _Fold:
    row: dict  # the latest refusal's row (hq_batch's columns)
    proven: bool
    started: float  # time.monotonic()
    first_at: dt.datetime
    last_at: dt.datetime
    count: int = 0  # refusals folded
    written: int = 0  # of them, what the batch log shows
    row_id: int | None = None
    written_at: float = float("-inf")
    writing: bool = False


class RefusalLog:
    """Refusals into the batch log (hq_batch) without letting anyone add rows at will.

    A refusal like one already logged (the same address and problem, and, once the sender has shown
    itself, the same post: see _Batch.proven) within `fold_window_s` is folded into that row: its
    message ends with how many times and since when, its received_at is the last time, and it is
    rewritten at most every `write_every_s`. So a flood of forged pushes costs one row an hour and
    one short write every few seconds per address and problem (a thousand addresses and problems
    are followed; the process log has a line for each row written or rewritten).

    A refusal of a sender that has not shown itself never waits for the database: on SQLite its
    row is written only if the write lock is free at once, else it stays pending, written by the
    next refusal like it or by `flush()` (the sync API calls it after each answer). Forged requests
    so never queue behind a post's batch being stored, nor hold it up. One RefusalLog per
    headquarters process (web/hq); what is pending or counted is not kept over a restart."""

    def __init__(self, fold_window_s: float = 3600.0, write_every_s: float = 5.0, max_folds: int = 1000):
        self.fold_window_s = fold_window_s
        self.write_every_s = write_every_s
        self.max_folds = max_folds
        self._folds: dict[tuple[str, str, str], _Fold] = {}
        self._lock = threading.Lock()

    @classmethod
    def unfolded(cls) -> RefusalLog:
        """A row for every refusal (pull, the CLI, tests calling ingest directly)."""
        return cls(fold_window_s=0.0)

    def record(self, row: dict, proven: bool) -> None:
        """Log the refusal `row` (hq_batch's columns) as its own row or folded into one like it."""
        key = (row["remote_addr"], row["problem"], row["post_id"] if proven else "")
        now, at = time.monotonic(), utcnow()
        with self._lock:
            fold = self._folds.get(key)
            if fold is None or now - fold.started >= self.fold_window_s:
                fold = self._folds[key] = _Fold(row, proven, now, at, at)
                self._forget_oldest()
            fold.count += 1
            fold.row, fold.last_at = row, at
        if fold.count == 1:
            log.warning(
                "refused a batch from %s (%s): %s: %s",
                row["post_id"] or "?",
                row["remote_addr"],
                row["problem"],
                row["message"],
            )
        self._write(fold)

    def pending(self) -> bool:
        """Whether refusals are due to be written: counted (their write found SQLite's write lock
        taken, or came within `write_every_s` of the last) and their row not rewritten since."""
        return bool(self._due())

    def flush(self) -> None:
        """Write the refusals that are due, each if the write lock is free at once."""
        for fold in self._due():
            self._write(fold)

    def _due(self) -> list[_Fold]:
        now = time.monotonic()
        with self._lock:
            return [
                fold
                for fold in self._folds.values()
                if fold.written < fold.count and not fold.writing and now - fold.written_at >= self.write_every_s
            ]

    def _write(self, fold: _Fold) -> None:
        now = time.monotonic()
        with self._lock:
            if fold.writing or fold.written == fold.count or now - fold.written_at < self.write_every_s:
                return  # counted: written by a later refusal like it, or by flush()
            fold.writing = True
            count, row, row_id, first_at, last_at = fold.count, fold.row, fold.row_id, fold.first_at, fold.last_at
        message = row["message"]
        if count > 1:
            message += (
                f" [refused {count} times from {row['remote_addr'] or '?'} since {first_at:%Y-%m-%d %H:%M:%S} UTC]"
            )
        written: int | None = None
        try:
            if row_id is None:
                written = self._change(lambda: HQBatch.insert(**dict(row, message=message)).execute(), fold.proven)
            elif (
                self._change(
                    lambda: HQBatch.update(message=message, received_at=last_at).where(HQBatch.id == row_id).execute(),
                    fold.proven,
                )
                is not None
            ):
                written = row_id
        finally:
            with self._lock:
                fold.writing = False
                if written is not None:
                    fold.row_id, fold.written, fold.written_at = written, count, time.monotonic()
        if written is not None and count > 1:
            log.warning("refused a batch from %s: %s", row["post_id"] or "?", message)

    def _change(self, change, wait: bool):
        """change() in a write transaction; its result, or None when `wait` is false and SQLite's
        write lock is taken (by a batch being stored): nothing waits for it."""
        db = hq_database.obj
        if wait or not isinstance(db, SqliteDatabase):
            # PostgreSQL: a row of the batch log waits for no batch (a batch locks its post's row)
            with write():
                return change()
        busy = db.execute_sql("PRAGMA busy_timeout").fetchone()[0]
        db.execute_sql("PRAGMA busy_timeout = 0")
        try:
            with write():
                return change()
        except (OperationalError, sqlite3.OperationalError) as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            return None
        finally:
            db.execute_sql(f"PRAGMA busy_timeout = {int(busy)}")

    def _forget_oldest(self) -> None:
        while len(self._folds) > self.max_folds:
            fold = self._folds.pop(next(iter(self._folds)))
            if fold.written < fold.count:
                log.warning(
                    "%d refusal(s) from %s (%s) not written to the batch log (too many addresses refused at once)",
                    fold.count - fold.written,
                    fold.row["remote_addr"],
                    fold.row["problem"],
                )
