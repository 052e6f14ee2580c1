"""The ingest of one batch, in one transaction: either the whole batch is stored and the post's
position moves to its end, or nothing is stored and the refusal goes to the batch log (in a
transaction of its own) with the problem named. A batch headquarters already holds (the same batch
id, or the same range with the same contents) is acknowledged again without being stored twice.
Every line is checked by sync/protocol.py; this module decides what a checked line means for what
headquarters holds (gaps, overlaps, the chain of access records). Legal holds placed and released
at a post come in its batches and are stored in the batch's transaction (sync/hq/holds.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from peewee import Field

from appliance import audit, bundle
from appliance.models import utcnow
from sync import protocol
from sync.hq import holds
from sync.hq.models import (
    HQAccessRecord,
    HQAlert,
    HQBatch,
    HQPost,
    HQRead,
    insert_rows,
    integrity_errors,
    locked_post,
    write,
)
from sync.hq.posts import position
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

    def as_json(self) -> dict:
        return {
            "status": self.status,
            "batch": self.batch_id,
            "reads": self.reads,
            "records": self.records,
            "holds": self.holds,
            "position": self.position,
        }


class Refused(Exception):
    def __init__(self, error: ProtocolError, position: dict | None = None):
        super().__init__(str(error))
        self.problem = error.problem
        self.message = error.message
        self.http_status = error.http_status
        self.position = position

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
        self.signature_ok = False
        self.first_bad_seq: int | None = None


def ingest(
    body, length: int | None, max_bytes: int = DEFAULT_MAX_BATCH_BYTES, remote_addr: str = "", after_store=None
) -> Outcome:
    """Store one batch read from the binary stream `body`. Raises Refused (nothing stored, the
    refusal logged). `after_store()` runs after the commit and before the answer (fault tests)."""
    seen = _Batch()
    try:
        if length is not None and length > max_bytes:
            raise ProtocolError(
                "oversized", f"the batch is {length} bytes; this headquarters takes at most {max_bytes}"
            )
        with write():
            outcome = _ingest(body, max_bytes, remote_addr, seen)
    except ProtocolError as exc:
        return _refuse(exc, seen, remote_addr, length)
    if after_store is not None:
        after_store()
    return outcome


def _refuse(exc: ProtocolError, seen: _Batch, remote_addr: str, length: int | None):
    header = seen.header
    chain = header["chain"] if isinstance(header.get("chain"), dict) else {}
    with write():
        HQBatch.create(
            batch_id=_text(header.get("batch", ""), 100),
            post_id=_text(header.get("post", ""), 100),
            first_seq=_int_or_none(header.get("first_seq")),
            last_seq=_int_or_none(header.get("last_seq")),
            chain_first=_int_or_none(chain.get("first_seq")),
            chain_last=_int_or_none(chain.get("last_seq")),
            size=_int_or_none(length) or 0,
            status="refused",
            problem=exc.problem,
            message=_text(exc.message),
            remote_addr=_text(remote_addr, 200),
        )
        post = None
        if seen.post is not None and seen.signature_ok:
            post = locked_post(seen.post.id)
        if post is not None:
            post.last_contact_at = utcnow()
            changed: list[Field] = [HQPost.last_contact_at]
            if exc.problem == "broken_chain" and post.chain_status != "broken":
                post.chain_status, post.chain_problem, post.first_bad_seq = "broken", exc.message, seen.first_bad_seq
                changed += [HQPost.chain_status, HQPost.chain_problem, HQPost.first_bad_seq]
            post.save(only=changed)
    log.warning("refused a batch from %s (%s): %s", header.get("post", "?"), remote_addr, exc)
    # The position only to the post itself: a batch whose signature checked out. Anyone else (a
    # refusal before the signature, which is checked at the end) learns nothing of it; the post
    # asks for it with a signed GET (sync/post.py).
    raise Refused(exc, position(post) if post is not None else None)


def _int_or_none(value):
    """What a BIGINT column of the batch log can hold: the refusal row must always be written."""
    return value if protocol.is_whole(value) else None


def _text(value, limit: int | None = None) -> str:
    """Text the database takes whatever the batch held (a lone surrogate becomes '?')."""
    text = str(value)[:limit] if limit is not None else str(value)
    return text.encode("utf-8", "replace").decode("utf-8")


def _ingest(body, max_bytes: int, remote_addr: str, seen: _Batch) -> Outcome:
    reader = protocol.Reader(body, max_bytes * 4)
    items = iter(reader)
    first_line = next(items)
    seen.header = first_line  # the batch log names the post and batch even when the header is refused
    header = protocol.header_fields(first_line)
    post = locked_post(header["post"])  # one batch per post at a time
    if post is None:
        raise ProtocolError(
            "unknown_post",
            f"post {header['post']!r} is not enrolled here: enrol its public key with `waypost hq enroll`",
        )
    seen.post = post
    public_key = bundle.load_public_key(post.public_key.encode())
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
    for item in items:
        kind = item["t"]
        if kind == "read":
            where = f"line {reader.lines} (read)"
            line = protocol.read_line(item, where, next_seq, last)
            next_seq, read = line.seq + 1, line.read
            if mode == "new":
                for im, data in line.decoded:
                    images[im["sha256"]] = (im, data)
                    pending_bytes += len(data)
            digest = protocol.content_hash(read, line.images)
            if mode == "new":
                read_rows.append(
                    {
                        "post_id": post.id,
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
                        {"post_id": post.id, "alert_id": alert["id"], "read_uuid": read["uuid"], "data": alert}
                    )
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
        elif kind == "confirmation":
            alert = protocol.confirmation_line(item, reader.lines)
            if mode == "new":
                alerts.append(
                    {"post_id": post.id, "alert_id": alert["id"], "read_uuid": alert["read_uuid"], "data": alert}
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
                        (HQAccessRecord.post_id == post.id) & (HQAccessRecord.seq == rec["seq"])
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
                records.append(dict({c: rec[c] for c in RECORD_COLUMNS}, post_id=post.id))
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
        seen.holds = holds.store_from_post(post.id, hold_events)
        post.last_seq = max(post.last_seq, last)
        if chain["last_seq"] >= chain["first_seq"]:
            post.chain_seq, post.chain_hash = chain["last_seq"], prev_hash
        if confirmations is not None:
            post.confirmation_id = max(post.confirmation_id, confirmations["upto"])
    post.last_contact_at = utcnow()
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
    return Outcome(status, header["batch"], post.id, seen.reads, seen.records, position(post), seen.holds)


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
    if reads_held and chain_held and confirmations["upto"] <= post.confirmation_id:
        return "held"
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


READ_INSERT = ("hq_read", ("post_id", "uuid", "seq", "captured_at", "plate", "content_hash", "data"))

IMAGE_INSERT = ("hq_image", ("sha256", "content_type", "width", "height", "size", "data"))

RECORD_INSERT = ("hq_access_record", ("post_id", *RECORD_COLUMNS))


def _flush(read_rows, images, alerts, records) -> None:
    if read_rows:
        try:
            insert_rows(
                READ_INSERT,
                [
                    (
                        r["post_id"],
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
        read_rows.clear()
    if images:
        # the same crop from another post or an earlier batch is held once
        insert_rows(
            IMAGE_INSERT,
            [
                (
                    sha,
                    str(im.get("content_type", "image/jpeg")),
                    int(im.get("width") or 0),
                    int(im.get("height") or 0),
                    len(data),
                    data,
                )
                for sha, (im, data) in images.items()
            ],
            on_conflict="ON CONFLICT (sha256) DO NOTHING",
        )
        images.clear()
    if alerts:
        for row in alerts:
            (
                HQAlert.insert(**row)
                .on_conflict(conflict_target=[HQAlert.post_id, HQAlert.alert_id], update={HQAlert.data: row["data"]})
                .execute()
            )
        alerts.clear()
    if records:
        try:
            fields = [HQAccessRecord._meta.columns[c] for c in RECORD_COLUMNS]  # their types, as the ORM would
            insert_rows(
                RECORD_INSERT, [(r["post_id"], *(f.db_value(r[f.column_name]) for f in fields)) for r in records]
            )
        except integrity_errors() as exc:
            raise ProtocolError("overlap", f"an access record of the batch is already held: {exc}") from None
        records.clear()


def refuse_oversized(received: int, max_bytes: int, remote_addr: str) -> None:
    """Refuse (and log) a pulled batch that was larger than headquarters takes, as ingest would
    refuse it: raises Refused."""
    _refuse(
        ProtocolError(
            "oversized", f"the batch is more than {max_bytes} bytes; this headquarters takes at most {max_bytes}"
        ),
        _Batch(),
        remote_addr,
        received,
    )
