"""Headquarters: its own database (every post's reads, images and a copy of each post's access
log) and the ingest of one batch.

Ingest is one transaction: either the whole batch is stored and the post's position moves to
its end, or nothing is stored and the refusal goes to the batch log (in a transaction of its
own) with the problem named. A batch headquarters already holds (the same batch id, or the same
range with the same contents) is acknowledged again without being stored twice. Legal holds
placed and released at a post come in its batches and are stored in the batch's transaction
(sync/hq/holds.py).

The database is a SQLite file by default; a URL (postgresql://...) selects PostgreSQL.
"""
from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from peewee import (
    AutoField, BlobField, CharField, DatabaseProxy, DateTimeField, IntegerField, IntegrityError, Model,
    SqliteDatabase, TextField,
)

from appliance import audit, bundle
from appliance.models import JSONField, utcnow
from sync import protocol
from sync.protocol import ProtocolError

log = logging.getLogger(__name__)

hq_database = DatabaseProxy()

GENESIS = audit.GENESIS
DEFAULT_MAX_BATCH_BYTES = 64 * 1024 * 1024
FLUSH_BYTES = 8 * 1024 * 1024
RECORD_FLUSH = 1000                    # access records held before they are inserted
RECORD_COLUMNS = audit.COLUMNS
MAX_INT32 = 2 ** 31 - 1                # INTEGER columns (image sizes, result_count) on PostgreSQL


class HQModel(Model):
    class Meta:
        database = hq_database
        legacy_table_names = False


class HQPost(HQModel):
    id = CharField(primary_key=True)
    name = CharField()
    public_key = CharField()               # base64 of the raw Ed25519 key
    key_id = CharField()
    enrolled_at = DateTimeField(default=utcnow)
    last_contact_at = DateTimeField(null=True)
    last_seq = IntegerField(default=0)      # the post's outbox sequence held up to here
    chain_seq = IntegerField(default=0)     # the post's access log held up to here
    chain_hash = CharField(default=GENESIS)
    chain_status = CharField(default="verified")   # verified | broken
    chain_problem = TextField(default="")
    first_bad_seq = IntegerField(null=True)
    backlog = IntegerField(default=0)       # reads the post said were still waiting
    pull_url = CharField(default="")        # the post's web address, for `waypost hq pull`
    confirmation_id = IntegerField(default=0)   # the post's alert confirmations held up to here

    class Meta:
        table_name = "hq_post"


class HQRead(HQModel):
    id = AutoField()
    post_id = CharField()
    uuid = CharField()
    seq = IntegerField()
    captured_at = CharField()
    plate = CharField()
    content_hash = CharField()
    data = JSONField()

    class Meta:
        table_name = "hq_read"


class HQImage(HQModel):
    sha256 = CharField(primary_key=True)
    content_type = CharField()
    width = IntegerField()
    height = IntegerField()
    size = IntegerField()
    data = BlobField()

    class Meta:
        table_name = "hq_image"


class HQAccessRecord(HQModel):
    id = AutoField()
    post_id = CharField()
    seq = IntegerField()
    at = CharField()
    username = CharField()
    organization = CharField()
    action = CharField()
    query = TextField()
    purpose_code = CharField()
    case_number = CharField()
    object_ids = TextField()
    result_count = IntegerField(null=True)
    client_addr = CharField()
    details = TextField()
    prev_hash = CharField()
    hash = CharField()

    class Meta:
        table_name = "hq_access_record"


class HQAlert(HQModel):
    id = AutoField()
    post_id = CharField()
    alert_id = IntegerField()
    read_uuid = CharField()
    data = JSONField()

    class Meta:
        table_name = "hq_alert"


class HQBatch(HQModel):
    id = AutoField()
    batch_id = CharField()
    post_id = CharField()
    first_seq = IntegerField(null=True)
    last_seq = IntegerField(null=True)
    chain_first = IntegerField(null=True)
    chain_last = IntegerField(null=True)
    reads = IntegerField(default=0)
    records = IntegerField(default=0)
    size = IntegerField(default=0)
    status = CharField()                    # stored | duplicate | refused
    problem = CharField(default="")
    message = TextField(default="")
    remote_addr = CharField(default="")
    received_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "hq_batch"


class HQHotlist(HQModel):
    """A state list as published to the posts: the file itself, fetched by each post on contact."""
    name = CharField(primary_key=True)
    sha256 = CharField()
    size = IntegerField()
    data = BlobField()
    published_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "hq_hotlist"


MODELS = (HQPost, HQRead, HQImage, HQAccessRecord, HQAlert, HQBatch, HQHotlist)

DIALECT = {"sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "bytewise": "TEXT"},
           "postgres": {"serial": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "bytewise": 'TEXT COLLATE "C"'}}

# Headquarters' schema, versioned like the post's (a change is a new entry, never an edit).
SCHEMA = [
    (1, [
        """CREATE TABLE hq_post (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, public_key TEXT NOT NULL, key_id TEXT NOT NULL,
            enrolled_at TIMESTAMP NOT NULL, last_contact_at TIMESTAMP,
            last_seq BIGINT NOT NULL DEFAULT 0, chain_seq BIGINT NOT NULL DEFAULT 0,
            chain_hash TEXT NOT NULL, chain_status TEXT NOT NULL DEFAULT 'verified',
            chain_problem TEXT NOT NULL DEFAULT '', first_bad_seq BIGINT, backlog BIGINT NOT NULL DEFAULT 0)""",
        """CREATE TABLE hq_read (
            id {serial}, post_id TEXT NOT NULL, uuid TEXT NOT NULL, seq BIGINT NOT NULL,
            captured_at TEXT NOT NULL, plate TEXT NOT NULL, content_hash TEXT NOT NULL, data TEXT NOT NULL)""",
        "CREATE UNIQUE INDEX hq_read_post_uuid ON hq_read (post_id, uuid)",
        "CREATE INDEX hq_read_post_seq ON hq_read (post_id, seq)",
        "CREATE INDEX hq_read_plate ON hq_read (plate)",
        """CREATE TABLE hq_image (
            sha256 TEXT PRIMARY KEY, content_type TEXT NOT NULL, width INTEGER NOT NULL,
            height INTEGER NOT NULL, size INTEGER NOT NULL, data {blob} NOT NULL)""",
        """CREATE TABLE hq_access_record (
            id {serial}, post_id TEXT NOT NULL, seq BIGINT NOT NULL, at TEXT NOT NULL, username TEXT NOT NULL,
            organization TEXT NOT NULL, action TEXT NOT NULL, query TEXT NOT NULL, purpose_code TEXT NOT NULL,
            case_number TEXT NOT NULL, object_ids TEXT NOT NULL, result_count INTEGER, client_addr TEXT NOT NULL,
            details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
        "CREATE UNIQUE INDEX hq_access_record_post_seq ON hq_access_record (post_id, seq)",
        """CREATE TABLE hq_alert (
            id {serial}, post_id TEXT NOT NULL, alert_id BIGINT NOT NULL, read_uuid TEXT NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE UNIQUE INDEX hq_alert_post_alert ON hq_alert (post_id, alert_id)",
        """CREATE TABLE hq_batch (
            id {serial}, batch_id TEXT NOT NULL, post_id TEXT NOT NULL, first_seq BIGINT, last_seq BIGINT,
            chain_first BIGINT, chain_last BIGINT, reads INTEGER NOT NULL DEFAULT 0,
            records INTEGER NOT NULL DEFAULT 0, size BIGINT NOT NULL DEFAULT 0, status TEXT NOT NULL,
            problem TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '',
            remote_addr TEXT NOT NULL DEFAULT '', received_at TIMESTAMP NOT NULL)""",
        "CREATE INDEX hq_batch_batch_id ON hq_batch (batch_id)",
        "CREATE INDEX hq_batch_post ON hq_batch (post_id, id)",
    ]),
    (2, ["ALTER TABLE hq_post ADD COLUMN pull_url TEXT NOT NULL DEFAULT ''"]),
    (3, ["ALTER TABLE hq_post ADD COLUMN confirmation_id BIGINT NOT NULL DEFAULT 0"]),
    (4, ["""CREATE TABLE hq_hotlist (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size BIGINT NOT NULL,
            data {blob} NOT NULL, published_at TIMESTAMP NOT NULL)"""]),
    # The officers' search (sync/hq/search.py): one row per text of a read (its plate, then its
    # alternatives), filled from hq_read after ingest, never by it. Byte order (COLLATE "C" on
    # PostgreSQL) so that a plate prefix is an index range on either database.
    (5, ["""CREATE TABLE hq_read_text (
            read_id BIGINT NOT NULL, alt INTEGER NOT NULL, post_id TEXT NOT NULL, camera_id TEXT NOT NULL,
            captured_at {bytewise} NOT NULL, text {bytewise} NOT NULL, folded {bytewise} NOT NULL,
            reversed {bytewise} NOT NULL, PRIMARY KEY (read_id, alt))""",
         "CREATE INDEX hq_read_text_text ON hq_read_text (text, captured_at)",
         "CREATE INDEX hq_read_text_folded ON hq_read_text (folded)",
         "CREATE INDEX hq_read_text_reversed ON hq_read_text (reversed, captured_at)",
         "CREATE INDEX hq_read_text_captured ON hq_read_text (captured_at, read_id)",
         "CREATE TABLE hq_camera (post_id TEXT NOT NULL, camera_id TEXT NOT NULL, PRIMARY KEY (post_id, camera_id))",
         "CREATE INDEX hq_alert_read ON hq_alert (post_id, read_uuid)"]),
    # Retention at headquarters (sync/hq/retention.py): legal holds (sync/hq/holds.py), one row per
    # purge run, and the capture-time index the purge walks (oldest first, keyset on id).
    (6, ["""CREATE TABLE hq_legal_hold (
            id {serial}, post_id TEXT, plate TEXT NOT NULL, mode TEXT NOT NULL, pattern TEXT NOT NULL,
            since TEXT NOT NULL, until TEXT NOT NULL, reason TEXT NOT NULL, purpose_code TEXT NOT NULL,
            case_number TEXT NOT NULL, placed_by TEXT NOT NULL, placed_org TEXT NOT NULL,
            placed_at TIMESTAMP NOT NULL, released_by TEXT, released_at TIMESTAMP, release_reason TEXT)""",
         """CREATE TABLE hq_retention_run (
            id {serial}, started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, read_cutoff TEXT NOT NULL,
            hit_cutoff TEXT NOT NULL, reads BIGINT NOT NULL DEFAULT 0, hit_reads BIGINT NOT NULL DEFAULT 0,
            alerts BIGINT NOT NULL DEFAULT 0, images BIGINT NOT NULL DEFAULT 0, texts BIGINT NOT NULL DEFAULT 0,
            oldest_at TEXT, newest_at TEXT)""",
         "CREATE INDEX hq_read_captured ON hq_read (captured_at, id)"]),
    # Legal holds placed at a post, arriving with its batches (sync/hq/holds.py): the post's id of
    # each (one copy per post and hold, however often a batch is delivered) and the reads it froze.
    (7, ["ALTER TABLE hq_legal_hold ADD COLUMN origin_hold_id BIGINT",
         "CREATE UNIQUE INDEX hq_legal_hold_origin ON hq_legal_hold (post_id, origin_hold_id)",
         """CREATE TABLE hq_legal_hold_read (
            hold_id BIGINT NOT NULL, post_id TEXT NOT NULL, read_uuid TEXT NOT NULL,
            PRIMARY KEY (hold_id, read_uuid))""",
         "CREATE INDEX hq_legal_hold_read_uuid ON hq_legal_hold_read (post_id, read_uuid)"]),
]


class HQError(RuntimeError):
    pass


# --- the database ------------------------------------------------------------------------------

def open_hq(target: str | Path):
    """Bind the headquarters models to `target` (a SQLite file path, or a postgresql:// URL) and
    bring its schema up to date. Returns the database."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        from playhouse.db_url import connect
        db = connect(text)
        dialect = "postgres"
    else:
        path = Path(text).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = SqliteDatabase(str(path), pragmas={"journal_mode": "wal", "foreign_keys": 1, "synchronous": "FULL",
                                                "busy_timeout": 10000, "cache_size": -16384})
        dialect = "sqlite"
    hq_database.initialize(db)
    with db.connection_context():
        db.execute_sql("CREATE TABLE IF NOT EXISTS hq_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
        done = {row[0] for row in db.execute_sql("SELECT version FROM hq_schema")}
        for version, statements in SCHEMA:
            if version in done:
                continue
            with db.atomic():
                for sql in statements:
                    db.execute_sql(sql.format(**DIALECT[dialect]))
                db.execute_sql(f"INSERT INTO hq_schema (version, applied_at) VALUES ({db.param}, {db.param})",
                               (version, utcnow()))
    return db


def _write():
    db = hq_database.obj
    return db.atomic(lock_type="IMMEDIATE") if isinstance(db, SqliteDatabase) else db.atomic()


def _locked_post(post_id: str) -> HQPost | None:
    """The post's row, inside _write(): locked until the transaction ends (PostgreSQL: FOR UPDATE;
    SQLite: BEGIN IMMEDIATE already holds the database's write lock). Whoever changes the row saves
    only the fields it changes, so that the position an ingest wrote is never written back stale."""
    query = HQPost.select().where(HQPost.id == post_id)
    if not isinstance(hq_database.obj, SqliteDatabase):
        query = query.for_update()
    return query.first()


def enroll(post_id: str, name: str, public_key_text: bytes, pull_url: str | None = None) -> HQPost:
    """Enrol a post (or replace its key). The key is PEM or base64 of the raw 32 bytes."""
    post_id = post_id.strip()
    if not post_id:
        raise HQError("a post id is required")
    if pull_url and not re.match(r"^https?://[^\s/]+", pull_url):
        raise HQError(f"pull URL {pull_url!r} is not an http(s) URL")
    try:
        key = bundle.load_public_key(public_key_text, f"the public key for post {post_id}")
    except bundle.BundleError as exc:
        raise HQError(str(exc)) from None
    raw = base64.b64encode(bundle.raw_public(key)).decode()
    with _write():
        post = _locked_post(post_id)
        if post is None:
            post = HQPost.create(id=post_id, name=name or post_id, public_key=raw, key_id=bundle.key_id(key),
                                 pull_url=pull_url or "")
        else:
            # the key and name only: never the position (last_seq, chain_seq, chain_hash, ...)
            post.name, post.public_key, post.key_id = name or post.name, raw, bundle.key_id(key)
            changed = [HQPost.name, HQPost.public_key, HQPost.key_id]
            if pull_url is not None:
                post.pull_url = pull_url
                changed.append(HQPost.pull_url)
            post.save(only=changed)
    return post


def position(post: HQPost) -> dict:
    """What headquarters holds of `post`. last_read_seq and last_read_uuid name the read it holds
    under the highest outbox seq (absent while it holds none): a post restored from an older copy
    that has issued that seq again, to another read, sees it even when its access log shows
    nothing. A read, not whatever sits at last_seq, because headquarters keeps no seq for a legal
    hold event."""
    held = {"post": post.id, "last_seq": post.last_seq, "chain_seq": post.chain_seq, "chain_hash": post.chain_hash,
            "confirmation_id": post.confirmation_id}
    read = (HQRead.select(HQRead.seq, HQRead.uuid).where(HQRead.post_id == post.id)
            .order_by(HQRead.seq.desc()).limit(1).first())
    if read is not None:
        held.update(last_read_seq=read.seq, last_read_uuid=read.uuid)
    return held


# --- ingest ------------------------------------------------------------------------------------

@dataclass
class Outcome:
    status: str                  # stored | duplicate
    batch_id: str
    post_id: str
    reads: int
    records: int
    position: dict
    holds: int = 0               # legal holds placed or released at the post that this batch changed here

    def as_json(self) -> dict:
        return {"status": self.status, "batch": self.batch_id, "reads": self.reads, "records": self.records,
                "holds": self.holds, "position": self.position}


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

    def __init__(self):
        self.header: dict = {}
        self.post: HQPost | None = None
        self.reads = 0
        self.records = 0
        self.holds = 0
        self.signature_ok = False
        self.first_bad_seq: int | None = None


def ingest(body, length: int | None, max_bytes: int = DEFAULT_MAX_BATCH_BYTES, remote_addr: str = "",
           after_store=None) -> Outcome:
    """Store one batch read from the binary stream `body`. Raises Refused (nothing stored, the
    refusal logged). `after_store()` runs after the commit and before the answer (fault tests)."""
    seen = _Batch()
    try:
        if length is not None and length > max_bytes:
            raise ProtocolError("oversized", f"the batch is {length} bytes; this headquarters takes at most {max_bytes}")
        with _write():
            outcome = _ingest(body, max_bytes, remote_addr, seen)
    except ProtocolError as exc:
        return _refuse(exc, seen, remote_addr, length)
    if after_store is not None:
        after_store()
    return outcome


def _refuse(exc: ProtocolError, seen: _Batch, remote_addr: str, length: int | None):
    header = seen.header
    chain = header.get("chain") if isinstance(header.get("chain"), dict) else {}
    with _write():
        HQBatch.create(batch_id=_text(header.get("batch", ""), 100), post_id=_text(header.get("post", ""), 100),
                       first_seq=_int_or_none(header.get("first_seq")), last_seq=_int_or_none(header.get("last_seq")),
                       chain_first=_int_or_none(chain.get("first_seq")), chain_last=_int_or_none(chain.get("last_seq")),
                       size=_int_or_none(length) or 0, status="refused", problem=exc.problem,
                       message=_text(exc.message), remote_addr=_text(remote_addr, 200))
        post = None
        if seen.post is not None and seen.signature_ok:
            post = _locked_post(seen.post.id)
        if post is not None:
            post.last_contact_at = utcnow()
            changed = [HQPost.last_contact_at]
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
    from sync.hq import holds as hq_holds  # it builds on this module's models
    reader = protocol.Reader(body, max_bytes * 4)
    items = iter(reader)
    first_line = next(items)
    seen.header = first_line        # the batch log names the post and batch even when the header is refused
    header = protocol.header_fields(first_line)
    post = _locked_post(header["post"])     # one batch per post at a time
    if post is None:
        raise ProtocolError("unknown_post", f"post {header['post']!r} is not enrolled here: "
                                            "enrol its public key with `waypost hq enroll`")
    seen.post = post
    public_key = bundle.load_public_key(post.public_key.encode())
    first, last, chain = header["first_seq"], header["last_seq"], header["chain"]
    confirmations = header.get("confirmations")    # checked by header_fields
    mode = _mode(post, header)

    deferred: ProtocolError | None = None     # a content fault, raised once the signature is known good
    next_seq, want_record = first, chain["first_seq"]
    prev_hash = post.chain_hash if mode == "new" else chain["prev_hash"]
    read_rows, images, alerts, records = [], {}, [], []
    hold_events: list[tuple[str, dict]] = []  # applied once the whole batch is read and its signature checked
    pending_bytes = 0                         # image bytes held for the next insert (memory stays bounded)
    for item in items:
        kind = item["t"]
        if kind == "read":
            where = f"line {reader.lines} (read)"
            read, imgs, seq = item.get("read"), item.get("images", []), item.get("seq")
            if not isinstance(read, dict) or not isinstance(imgs, list) or not protocol._is_int(seq):
                raise ProtocolError("malformed", f"{where}: needs seq, read and images")
            if not next_seq <= seq <= last:
                raise ProtocolError("malformed", f"{where}: seq {seq} is outside the batch's range or out of order")
            next_seq = seq + 1
            for name in ("uuid", "captured_at", "plate"):
                if not isinstance(read.get(name), str) or not read[name]:
                    raise ProtocolError("malformed", f"{where}: read field {name!r} must be a non-empty string")
            for im in imgs:
                if not isinstance(im, dict):
                    raise ProtocolError("malformed", f"{where}: an image is not an object")
                for name in ("width", "height"):
                    if im.get(name) is not None and not protocol.is_whole(im[name], MAX_INT32):
                        raise ProtocolError("malformed", f"{where}: image {name} must be a whole number "
                                                         f"0..{MAX_INT32}")
                data = protocol.decode_image(im, f"{where}, read {read['uuid']}")
                if mode == "new":
                    images[im["sha256"]] = (im, data)
                    pending_bytes += len(data)
            digest = protocol.content_hash(read, imgs)
            if mode == "new":
                read_rows.append({"post_id": post.id, "uuid": read["uuid"], "seq": seq,
                                  "captured_at": read["captured_at"], "plate": read["plate"],
                                  "content_hash": digest,
                                  "data": dict(read, images=[{k: v for k, v in im.items() if k != "data"}
                                                             for im in imgs])})
                for alert in item.get("alerts") or []:
                    if not isinstance(alert, dict) or not protocol.is_whole(alert.get("id")):
                        raise ProtocolError("malformed", f"{where}: an alert needs an id (a whole number "
                                                         f"0..{protocol.MAX_INT})")
                    alerts.append({"post_id": post.id, "alert_id": alert["id"], "read_uuid": read["uuid"],
                                   "data": alert})
                if len(read_rows) >= 500 or pending_bytes > FLUSH_BYTES:
                    _flush(read_rows, images, alerts, records)
                    pending_bytes = 0
            elif deferred is None:
                held = HQRead.get_or_none((HQRead.post_id == post.id) & (HQRead.uuid == read["uuid"]))
                if held is None or held.content_hash != digest:
                    deferred = ProtocolError("overlap", f"{where}: read {read['uuid']} (seq {seq}) is in a range "
                                                        "headquarters already holds, but differs from what it holds")
            seen.reads += 1
        elif kind == "hold":
            where = f"batch {header['batch']}, line {reader.lines} (hold)"
            seq = item.get("seq")
            if not protocol._is_int(seq) or not next_seq <= seq <= last:
                raise ProtocolError("malformed", f"{where}: seq {str(seq)[:20]} is outside the batch's range "
                                                 "or out of order")
            next_seq = seq + 1
            hold_events.append((where, hq_holds.from_post(item, where)))
        elif kind == "confirmation":
            alert = item.get("alert")
            if (not isinstance(alert, dict) or not protocol.is_whole(alert.get("id"))
                    or not isinstance(alert.get("read_uuid"), str)):
                raise ProtocolError("malformed", f"line {reader.lines} (confirmation): needs the alert with its id "
                                                 f"(a whole number 0..{protocol.MAX_INT}) and read_uuid")
            if mode == "new":
                alerts.append({"post_id": post.id, "alert_id": alert["id"], "read_uuid": alert["read_uuid"],
                               "data": alert})
        elif kind == "access":
            rec = item.get("record")
            where = f"line {reader.lines} (access record)"
            if not isinstance(rec, dict) or any(c not in rec for c in RECORD_COLUMNS):
                raise ProtocolError("malformed", f"{where}: needs every column of an access record")
            if not protocol._is_int(rec["seq"]) or rec["seq"] != want_record or rec["seq"] > chain["last_seq"]:
                raise ProtocolError("malformed", f"{where}: seq {str(rec['seq'])[:30]} where {want_record} was due "
                                                 f"(the header says {chain['first_seq']}..{chain['last_seq']})")
            if rec["result_count"] is not None and not protocol.is_whole(rec["result_count"], MAX_INT32):
                raise ProtocolError("malformed", f"{where}: result_count must be empty or a whole number "
                                                 f"0..{MAX_INT32}")
            for name in RECORD_COLUMNS:
                if name not in ("seq", "result_count") and not isinstance(rec[name], str):
                    raise ProtocolError("malformed", f"{where}: field {name!r} must be text")
            want_record += 1
            if deferred is None:
                if rec["prev_hash"] != prev_hash:
                    seen.first_bad_seq = rec["seq"]
                    deferred = ProtocolError("broken_chain", f"access record {rec['seq']}: its prev_hash does not "
                                                             f"link to record {rec['seq'] - 1} as headquarters holds it"
                                             if rec["seq"] == chain["first_seq"] else
                                             f"access record {rec['seq']}: its prev_hash does not link to record "
                                             f"{rec['seq'] - 1}")
                elif audit.digest(rec) != rec["hash"]:
                    seen.first_bad_seq = rec["seq"]
                    deferred = ProtocolError("broken_chain", f"access record {rec['seq']}: its hash does not match "
                                                             "its fields (altered on the post)")
                elif mode == "held":
                    held = HQAccessRecord.get_or_none((HQAccessRecord.post_id == post.id)
                                                      & (HQAccessRecord.seq == rec["seq"]))
                    if held is None or held.hash != rec["hash"]:
                        seen.first_bad_seq = rec["seq"]
                        deferred = ProtocolError("broken_chain", f"access record {rec['seq']} differs from the copy "
                                                                 "headquarters holds (the post's log was rewritten)")
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
        raise ProtocolError("malformed", f"the header announces access records up to {chain['last_seq']}, "
                                         f"the batch carries them up to {want_record - 1}")
    reader.verify(public_key)
    seen.signature_ok = True
    if deferred is not None:
        raise deferred
    if mode == "new":
        _flush(read_rows, images, alerts, records)
        seen.holds = hq_holds.store_from_post(post.id, hold_events)
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
    HQBatch.create(batch_id=header["batch"], post_id=post.id, first_seq=first, last_seq=last,
                   chain_first=chain["first_seq"], chain_last=chain["last_seq"], reads=seen.reads,
                   records=seen.records, size=reader.bytes, status=status, remote_addr=remote_addr)
    return Outcome(status, header["batch"], post.id, seen.reads, seen.records, position(post), seen.holds)


def _mode(post: HQPost, header: dict) -> str:
    """"new" (the batch continues what headquarters holds), "held" (headquarters holds its whole
    range already: compare, acknowledge, store nothing), or a ProtocolError."""
    first, last, chain = header["first_seq"], header["last_seq"], header["chain"]
    stored = (HQBatch.select().where((HQBatch.post_id == post.id) & (HQBatch.batch_id == header["batch"])
                                     & (HQBatch.status == "stored")).first())
    if stored is not None:
        latest = (HQBatch.select(HQBatch.id).where((HQBatch.post_id == post.id) & (HQBatch.status == "stored"))
                  .order_by(HQBatch.id.desc()).first())
        if latest.id != stored.id:
            raise ProtocolError("replay", f"batch {header['batch']} was stored on {stored.received_at:%Y-%m-%d %H:%M:%S} "
                                          "UTC and later batches have been stored since: an old batch sent again")
        return "held"
    reads_held = last <= post.last_seq
    chain_held = chain["last_seq"] <= post.chain_seq
    confirmations = header.get("confirmations") or {"after": 0, "upto": 0}
    if reads_held and chain_held and confirmations["upto"] <= post.confirmation_id:
        return "held"
    if confirmations["after"] > post.confirmation_id:
        raise ProtocolError("gap", f"the batch's alert confirmations start after {confirmations['after']}; "
                                   f"headquarters holds them up to {post.confirmation_id}")
    if first > post.last_seq + 1:
        raise ProtocolError("gap", f"the batch starts at outbox seq {first}; headquarters holds up to "
                                   f"{post.last_seq}, so {post.last_seq + 1}..{first - 1} would be missing")
    if chain["first_seq"] > post.chain_seq + 1:
        raise ProtocolError("gap", f"the batch's access records start at {chain['first_seq']}; headquarters "
                                   f"holds the log up to {post.chain_seq}")
    if first != post.last_seq + 1:
        raise ProtocolError("overlap", f"the batch's range {first}..{last} overlaps what headquarters holds "
                                       f"(up to {post.last_seq})")
    if chain["first_seq"] != post.chain_seq + 1:
        raise ProtocolError("overlap", f"the batch's access records {chain['first_seq']}..{chain['last_seq']} "
                                       f"overlap what headquarters holds (up to {post.chain_seq})")
    # A first record that does not link to headquarters' copy is found (and reported as a broken
    # chain, once the signature is known good) when the records are read.
    return "new"


READ_INSERT = ("hq_read", ("post_id", "uuid", "seq", "captured_at", "plate", "content_hash", "data"))
IMAGE_INSERT = ("hq_image", ("sha256", "content_type", "width", "height", "size", "data"))
RECORD_INSERT = ("hq_access_record", ("post_id", *RECORD_COLUMNS))


def _insert(table_columns: tuple[str, tuple[str, ...]], rows: list[tuple], on_conflict: str = "") -> None:
    """Insert `rows` in one statement per page, straight to the driver (sqlite3's executemany;
    psycopg2's execute_values, a few multi-row INSERTs rather than a round trip per row). Building
    the same INSERT through the ORM cost headquarters more than reading the batch."""
    table, columns = table_columns
    db = hq_database.obj
    names = ", ".join(columns)
    cursor = db.cursor()
    if isinstance(db, SqliteDatabase):
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))}) {on_conflict}",
                           rows)
    else:
        from psycopg2.extras import execute_values
        execute_values(cursor, f"INSERT INTO {table} ({names}) VALUES %s {on_conflict}", rows, page_size=500)


def _integrity_errors() -> tuple[type[Exception], ...]:
    errors: tuple[type[Exception], ...] = (IntegrityError, sqlite3.IntegrityError)
    try:
        import psycopg2
    except ImportError:
        return errors
    return (*errors, psycopg2.IntegrityError)


def _flush(read_rows, images, alerts, records) -> None:
    if read_rows:
        try:
            _insert(READ_INSERT, [(r["post_id"], r["uuid"], r["seq"], r["captured_at"], r["plate"], r["content_hash"],
                                   HQRead.data.db_value(r["data"])) for r in read_rows])
        except _integrity_errors() as exc:
            raise ProtocolError("overlap", f"a read of the batch is already held under another seq: {exc}") from None
        read_rows.clear()
    if images:
        # the same crop from another post or an earlier batch is held once
        _insert(IMAGE_INSERT, [(sha, str(im.get("content_type", "image/jpeg")), int(im.get("width") or 0),
                                int(im.get("height") or 0), len(data), data) for sha, (im, data) in images.items()],
                on_conflict="ON CONFLICT (sha256) DO NOTHING")
        images.clear()
    if alerts:
        for row in alerts:
            (HQAlert.insert(**row).on_conflict(conflict_target=[HQAlert.post_id, HQAlert.alert_id],
                                               update={HQAlert.data: row["data"]}).execute())
        alerts.clear()
    if records:
        try:
            fields = [HQAccessRecord._meta.columns[c] for c in RECORD_COLUMNS]     # their types, as the ORM would
            _insert(RECORD_INSERT, [(r["post_id"], *(f.db_value(r[f.column_name]) for f in fields)) for r in records])
        except _integrity_errors() as exc:
            raise ProtocolError("overlap", f"an access record of the batch is already held: {exc}") from None
        records.clear()


# --- hotlists, headquarters to posts ----------------------------------------------------------

def publish_hotlist(name: str, data: bytes) -> HQHotlist:
    """Publish (or replace) a state list; posts fetch it on their next contact."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}", name):
        raise HQError(f"list name {name!r}: use 1-40 letters, digits, spaces, '.', '_' or '-'")
    if not data.strip():
        raise HQError(f"the file for list {name!r} is empty")
    import hashlib
    digest = hashlib.sha256(data).hexdigest()
    with _write():
        HQHotlist.insert(name=name, sha256=digest, size=len(data), data=data, published_at=utcnow()).on_conflict(
            conflict_target=[HQHotlist.name],
            update={HQHotlist.sha256: digest, HQHotlist.size: len(data), HQHotlist.data: data,
                    HQHotlist.published_at: utcnow()}).execute()
    return HQHotlist.get_by_id(name)


def check_post_request(post_id: str, path: str, date: str, signature: str) -> str | None:
    """None when a post's GET is signed with its enrolled key within the allowed skew, else why not."""
    from cryptography.exceptions import InvalidSignature
    post = HQPost.get_or_none(HQPost.id == post_id)
    if post is None:
        return f"post {post_id!r} is not enrolled here"
    problem = protocol.check_date(date)
    if problem:
        return problem
    try:
        key = bundle.load_public_key(post.public_key.encode())
        key.verify(base64.b64decode(signature, validate=True), protocol.post_get_message(post_id, path, date))
    except (InvalidSignature, ValueError, bundle.BundleError):
        return "the signature does not verify with the post's enrolled key"
    return None


# --- status ------------------------------------------------------------------------------------

def status() -> list[dict]:
    rows = []
    for post in HQPost.select().order_by(HQPost.id):
        reads = HQRead.select().where(HQRead.post_id == post.id).count()
        last_refusal = (HQBatch.select().where((HQBatch.post_id == post.id) & (HQBatch.status == "refused"))
                        .order_by(HQBatch.id.desc()).first())
        rows.append({"post": post.id, "name": post.name, "key_id": post.key_id,
                     "last_contact_at": post.last_contact_at, "last_seq": post.last_seq, "reads": reads,
                     "chain_seq": post.chain_seq, "chain_status": post.chain_status,
                     "chain_problem": post.chain_problem, "first_bad_seq": post.first_bad_seq,
                     "backlog": post.backlog,
                     "last_refusal": None if last_refusal is None else
                     {"problem": last_refusal.problem, "message": last_refusal.message,
                      "at": last_refusal.received_at}})
    return rows


def verify_chain(post_id: str) -> tuple[bool, int | None, str]:
    """Walk the copy of a post's access log: (ok, first bad seq, message)."""
    prev, want = GENESIS, 1
    query = HQAccessRecord.select().where(HQAccessRecord.post_id == post_id).order_by(HQAccessRecord.seq)
    for rec in query.dicts().iterator():
        if rec["seq"] != want:
            return False, want, f"record {want} is missing"
        if rec["prev_hash"] != prev or audit.digest(rec) != rec["hash"]:
            return False, rec["seq"], f"record {rec['seq']} does not verify"
        prev, want = rec["hash"], want + 1
    return True, None, f"{want - 1} record(s) verify"



# --- pull --------------------------------------------------------------------------------------

def hq_key(target: str | Path, key_dir: Path | None = None):
    """Headquarters' own signing key (for pull requests), made on first use: <dir>/hq_key and
    hq_key.pub, in key_dir, else beside a SQLite database (a database URL needs key_dir)."""
    from types import SimpleNamespace
    text = str(target)
    if key_dir is None and "://" in text:
        raise HQError("with a database URL, say where headquarters' key lives (key_dir)")
    where = Path(key_dir) if key_dir is not None else Path(text).expanduser().resolve().parent
    return bundle.post_key(SimpleNamespace(data_dir=where, sync=SimpleNamespace(key_file="hq_key")))


@dataclass
class Pulled:
    post_id: str
    batches: int = 0
    duplicates: int = 0
    reads: int = 0
    records: int = 0
    holds: int = 0
    problem: str = ""

    def line(self) -> str:
        text = (f"{self.post_id}: pulled {self.batches} batch(es), {self.reads} read(s), {self.records} access "
                f"record(s); {self.duplicates} already held")
        if self.holds:
            text += f"; {self.holds} legal hold event(s) from the post"
        return text + (f"; stopped: {self.problem}" if self.problem else "")


def pull(post_id: str, key, max_batches: int | None = None, timeout_s: float = 120,
         max_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> Pulled:
    """Fetch batches from one post until it has nothing more. Each batch is received into a
    temporary file and ingested from there: ingest holds the database's write lock (SQLite) or the
    post's row (PostgreSQL) from its first byte, which must not last as long as a slow link takes."""
    import http.client
    import urllib.parse
    result = Pulled(post_id)
    while max_batches is None or result.batches + result.duplicates < max_batches:
        with hq_database.connection_context():
            post = HQPost.get_or_none(HQPost.id == post_id)
            held = position(post) if post is not None else {}
        if post is None:
            result.problem = f"post {post_id!r} is not enrolled"
            return result
        if not post.pull_url:
            result.problem = "no pull URL enrolled for this post (waypost hq enroll --pull-url)"
            return result
        url = urllib.parse.urlsplit(post.pull_url)
        path = url.path.rstrip("/") + "/sync/batch?" + urllib.parse.urlencode(
            {k: v for k, v in held.items() if k != "post"})
        date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        signature = base64.b64encode(key.sign(protocol.pull_message(post_id, path, date))).decode()
        cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = cls(url.hostname, url.port, timeout=timeout_s)
        try:
            conn.request("GET", path, headers={"X-Waypost-Date": date, "X-Waypost-Signature": signature})
            response = conn.getresponse()
            if response.status == 204:
                return result
            if response.status != 200:
                result.problem = f"the post answered {response.status}: {response.read(500).decode(errors='replace')}"
                return result
            length = response.getheader("Content-Length")
            length = int(length) if length else None
            # unlinked at once (and closed on every way out): nothing is left behind, even by a crash
            with _spool_file() as body:
                received = 0 if length is not None and length > max_bytes else _receive(response, body, max_bytes)
                body.seek(0)
                with hq_database.connection_context():
                    try:
                        if received > max_bytes:    # refused and recorded as ingest refuses (raises Refused)
                            _refuse(ProtocolError("oversized", f"the batch is more than {max_bytes} bytes; this "
                                                               f"headquarters takes at most {max_bytes}"),
                                    _Batch(), post.pull_url, received)
                        outcome = ingest(body, length, max_bytes, remote_addr=post.pull_url)
                    except Refused as refused:
                        result.problem = f"{refused.problem}: {refused.message}"
                        return result
        except _SpoolError as exc:
            result.problem = str(exc)
            return result
        except (OSError, http.client.HTTPException) as exc:
            result.problem = f"the post at {post.pull_url} did not answer: {type(exc).__name__}: {exc}"
            return result
        finally:
            conn.close()
        if outcome.status == "duplicate":
            result.duplicates += 1      # the post pushed the same range meanwhile: its next batch comes next time
            return result
        else:
            result.batches += 1
            result.reads += outcome.reads
            result.records += outcome.records
            result.holds += outcome.holds
    return result


class _SpoolError(Exception):
    """Headquarters could not hold a pulled batch on its own disk (not the post's fault)."""


def _spool_file():
    """An anonymous temporary file for one pulled batch: beside a SQLite database, else in the
    system's temp dir."""
    import tempfile
    db = hq_database.obj
    where = str(Path(db.database).parent) if isinstance(db, SqliteDatabase) else tempfile.gettempdir()
    try:
        return tempfile.TemporaryFile(dir=where, prefix="pull-")
    except OSError as exc:
        raise _SpoolError(f"could not make a temporary file for the batch in {where}: {exc}") from None


def _receive(response, body, max_bytes: int, chunk: int = 64 * 1024) -> int:
    """Copy the response into `body`, stopping one byte past max_bytes. Returns the bytes copied."""
    received = 0
    while received <= max_bytes:
        data = response.read(min(chunk, max_bytes + 1 - received))
        if not data:
            break
        try:
            body.write(data)
        except OSError as exc:
            raise _SpoolError(f"could not hold the batch in a temporary file ({received} bytes in): {exc}") from None
        received += len(data)
    return received
