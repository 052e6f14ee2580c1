"""Headquarters' database: every post's reads, images, alerts, a copy of each post's access log,
the batch log, the published hotlists, legal holds, retention runs and the search index; its
schema (versioned, like the post's migrations) and the transaction every change is made in.

The database is a SQLite file by default; a URL (postgresql://...) selects PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from peewee import (
    AutoField,
    BigIntegerField,
    BlobField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    DateTimeField,
    IntegerField,
    IntegrityError,
    Model,
    SqliteDatabase,
    TextField,
)
from playhouse.db_url import connect

from appliance import audit
from appliance.models import JSONField, utcnow

hq_database = DatabaseProxy()

GENESIS = audit.GENESIS


class HQModel(Model):
    class Meta:
        database = hq_database
        legacy_table_names = False


class HQPost(HQModel):
    id = CharField(primary_key=True)
    name = CharField()
    public_key = CharField()  # base64 of the raw Ed25519 key
    key_id = CharField()
    enrolled_at = DateTimeField(default=utcnow)
    last_contact_at = DateTimeField(null=True)
    last_seq = IntegerField(default=0)  # the post's outbox sequence held up to here
    chain_seq = IntegerField(default=0)  # the post's access log held up to here
    chain_hash = CharField(default=GENESIS)
    chain_status = CharField(default="verified")  # verified | broken
    chain_problem = TextField(default="")
    first_bad_seq = IntegerField(null=True)
    backlog = IntegerField(default=0)  # reads the post said were still waiting
    pull_url = CharField(default="")  # the post's web address, for `waypost hq pull`
    confirmation_id = IntegerField(default=0)  # the post's alert confirmations held up to here
    frame_seq = IntegerField(default=0)  # the frames sent in the second lane, up to this outbox seq

    # the post's clock minus headquarters' (s), measured on its last push, signed GET or pull (schema 10)
    clock_offset_s = IntegerField(null=True)
    clock_checked_at = DateTimeField(null=True)

    # the post's current chain copy: 1, then one more per `waypost hq rebase` (a re-imaged post's
    # new key, log and outbox); the closed ones are in hq_post_segment
    segment = IntegerField(default=1)

    class Meta:
        table_name = "hq_post"


class HQPostAlias(HQModel):
    """An id a post had before `waypost hq rename`: the lines it signed under it still verify."""

    old_id = CharField(primary_key=True)
    post_id = CharField()
    renamed_at = DateTimeField(default=utcnow)
    reason = TextField()

    class Meta:
        table_name = "hq_post_alias"


class HQPostSegment(HQModel):
    """A closed copy of a post's chain (`waypost hq rebase`): its key, what it held, its status."""

    post_id = CharField()
    segment = IntegerField()
    key_id = CharField()
    public_key = CharField()
    last_seq = IntegerField()
    chain_seq = IntegerField()
    chain_hash = CharField()
    chain_status = CharField()
    chain_problem = TextField()
    confirmation_id = IntegerField()
    opened_at = DateTimeField()
    closed_at = DateTimeField(default=utcnow)
    reason = TextField()

    class Meta:
        table_name = "hq_post_segment"
        primary_key = CompositeKey("post_id", "segment")


class HQRead(HQModel):
    id = AutoField()
    post_id = CharField()
    uuid = CharField()
    seq = IntegerField()
    captured_at = CharField()
    plate = CharField()
    content_hash = CharField()
    data = JSONField()
    segment = IntegerField(default=1)  # of the post's chain copies (HQPost.segment)

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
    segment = IntegerField(default=1)  # of the post's chain copies (HQPost.segment)

    class Meta:
        table_name = "hq_access_record"


class HQAlert(HQModel):
    id = AutoField()
    post_id = CharField()
    alert_id = IntegerField()
    read_uuid = CharField()
    data = JSONField()
    segment = IntegerField(default=1)  # of the post's chain copies (HQPost.segment)

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
    status = CharField()  # stored | duplicate | refused
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


class HQLegalHold(HQModel):
    id = AutoField()
    post_id = CharField(null=True)  # None: every post
    plate = CharField()  # as typed, normalised
    mode = CharField()  # exact | wildcard
    pattern = CharField()  # the plate as a LIKE pattern
    since = CharField()  # captured-at window, UTC, as hq_read.captured_at is written
    until = CharField()
    reason = TextField()
    purpose_code = CharField()
    case_number = CharField()
    placed_by = CharField()
    placed_org = CharField()
    placed_at = DateTimeField(default=utcnow)
    released_by = CharField(null=True)
    released_at = DateTimeField(null=True)
    release_reason = TextField(null=True)
    origin_hold_id = IntegerField(null=True)  # placed at post `post_id` as its hold of this id; None: here
    segment = IntegerField(default=1)  # of the post's chain copies, for origin_hold_id

    class Meta:
        table_name = "hq_legal_hold"

    @property
    def active(self) -> bool:
        return self.released_at is None

    @property
    def origin(self) -> str:
        return "headquarters" if self.origin_hold_id is None else f"post {self.post_id}"

    def describe(self) -> str:
        where = f"post {self.post_id}" if self.post_id else "every post"
        text = f"{self.mode} {self.plate} at {where}, captured {self.since} to {self.until} UTC"
        if self.origin_hold_id is not None:
            text += f", placed at post {self.post_id} (its hold {self.origin_hold_id}; released there only)"
        return text


class HQLegalHoldRead(HQModel):
    """A read a post's hold froze, by its uuid (the read may not have reached headquarters yet)."""

    hold_id = IntegerField()
    post_id = CharField()
    read_uuid = CharField()

    class Meta:
        table_name = "hq_legal_hold_read"
        primary_key = CompositeKey("hold_id", "read_uuid")


class HQRetentionRun(HQModel):
    id = AutoField()
    started_at = DateTimeField(default=utcnow)
    finished_at = DateTimeField(null=True)
    read_cutoff = CharField()
    hit_cutoff = CharField()
    reads = IntegerField(default=0)
    hit_reads = IntegerField(default=0)
    alerts = IntegerField(default=0)
    images = IntegerField(default=0)
    texts = IntegerField(default=0)
    oldest_at = CharField(null=True)
    newest_at = CharField(null=True)

    class Meta:
        table_name = "hq_retention_run"


class HQReadText(HQModel):
    read_id = BigIntegerField()
    alt = IntegerField()  # 0: the plate; 1..: its alternatives, best first
    post_id = CharField()
    camera_id = CharField()
    captured_at = CharField()
    text = CharField()
    folded = CharField()
    reversed = CharField()

    class Meta:
        table_name = "hq_read_text"
        primary_key = CompositeKey("read_id", "alt")


class HQCamera(HQModel):
    post_id = CharField()
    camera_id = CharField()

    class Meta:
        table_name = "hq_camera"
        primary_key = CompositeKey("post_id", "camera_id")


MODELS = (HQPost, HQRead, HQImage, HQAccessRecord, HQAlert, HQBatch, HQHotlist)

DIALECT = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "bytewise": "TEXT"},
    "postgres": {"serial": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "bytewise": 'TEXT COLLATE "C"'},
}
# Filling hq_read_image (version 8) from the reads already held: the images each read's JSON names.
DIALECT["sqlite"]["read_images_from_json"] = """INSERT OR IGNORE INTO hq_read_image (read_id, sha256)
    SELECT r.id, json_extract(image.value, '$.sha256') FROM hq_read r, json_each(r.data, '$.images') image
    WHERE image.type = 'object' AND json_type(image.value, '$.sha256') = 'text'"""
DIALECT["postgres"]["read_images_from_json"] = """INSERT INTO hq_read_image (read_id, sha256)
    SELECT r.id, image->>'sha256' FROM hq_read r CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(r.data::jsonb->'images') = 'array' THEN r.data::jsonb->'images' ELSE '[]'::jsonb END
    ) image
    WHERE jsonb_typeof(image) = 'object' AND jsonb_typeof(image->'sha256') = 'string'
    ON CONFLICT DO NOTHING"""

# Headquarters' schema, versioned like the post's (a change is a new entry, never an edit).
SCHEMA = [
    (
        1,
        [
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
        ],
    ),
    (2, ["ALTER TABLE hq_post ADD COLUMN pull_url TEXT NOT NULL DEFAULT ''"]),
    (3, ["ALTER TABLE hq_post ADD COLUMN confirmation_id BIGINT NOT NULL DEFAULT 0"]),
    (
        4,
        [
            """CREATE TABLE hq_hotlist (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size BIGINT NOT NULL,
            data {blob} NOT NULL, published_at TIMESTAMP NOT NULL)"""
        ],
    ),
    # The officers' search (sync/hq/search.py): one row per text of a read (its plate, then its
    # alternatives), filled from hq_read after ingest, never by it. Byte order (COLLATE "C" on
    # PostgreSQL) so that a plate prefix is an index range on either database.
    (
        5,
        [
            """CREATE TABLE hq_read_text (
            read_id BIGINT NOT NULL, alt INTEGER NOT NULL, post_id TEXT NOT NULL, camera_id TEXT NOT NULL,
            captured_at {bytewise} NOT NULL, text {bytewise} NOT NULL, folded {bytewise} NOT NULL,
            reversed {bytewise} NOT NULL, PRIMARY KEY (read_id, alt))""",
            "CREATE INDEX hq_read_text_text ON hq_read_text (text, captured_at)",
            "CREATE INDEX hq_read_text_folded ON hq_read_text (folded)",
            "CREATE INDEX hq_read_text_reversed ON hq_read_text (reversed, captured_at)",
            "CREATE INDEX hq_read_text_captured ON hq_read_text (captured_at, read_id)",
            "CREATE TABLE hq_camera (post_id TEXT NOT NULL, camera_id TEXT NOT NULL, PRIMARY KEY (post_id, camera_id))",
            "CREATE INDEX hq_alert_read ON hq_alert (post_id, read_uuid)",
        ],
    ),
    # Retention at headquarters (sync/hq/retention.py): legal holds (sync/hq/holds.py), one row per
    # purge run, and the capture-time index the purge walks (oldest first, keyset on id).
    (
        6,
        [
            """CREATE TABLE hq_legal_hold (
            id {serial}, post_id TEXT, plate TEXT NOT NULL, mode TEXT NOT NULL, pattern TEXT NOT NULL,
            since TEXT NOT NULL, until TEXT NOT NULL, reason TEXT NOT NULL, purpose_code TEXT NOT NULL,
            case_number TEXT NOT NULL, placed_by TEXT NOT NULL, placed_org TEXT NOT NULL,
            placed_at TIMESTAMP NOT NULL, released_by TEXT, released_at TIMESTAMP, release_reason TEXT)""",
            """CREATE TABLE hq_retention_run (
            id {serial}, started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, read_cutoff TEXT NOT NULL,
            hit_cutoff TEXT NOT NULL, reads BIGINT NOT NULL DEFAULT 0, hit_reads BIGINT NOT NULL DEFAULT 0,
            alerts BIGINT NOT NULL DEFAULT 0, images BIGINT NOT NULL DEFAULT 0, texts BIGINT NOT NULL DEFAULT 0,
            oldest_at TEXT, newest_at TEXT)""",
            "CREATE INDEX hq_read_captured ON hq_read (captured_at, id)",
        ],
    ),
    # Legal holds placed at a post, arriving with its batches (sync/hq/holds.py): the post's id of
    # each (one copy per post and hold, however often a batch is delivered) and the reads it froze.
    (
        7,
        [
            "ALTER TABLE hq_legal_hold ADD COLUMN origin_hold_id BIGINT",
            "CREATE UNIQUE INDEX hq_legal_hold_origin ON hq_legal_hold (post_id, origin_hold_id)",
            """CREATE TABLE hq_legal_hold_read (
            hold_id BIGINT NOT NULL, post_id TEXT NOT NULL, read_uuid TEXT NOT NULL,
            PRIMARY KEY (hold_id, read_uuid))""",
            "CREATE INDEX hq_legal_hold_read_uuid ON hq_legal_hold_read (post_id, read_uuid)",
        ],
    ),
    # Which reads use which image (sync/hq/retention.py): an image is deleted when no remaining read
    # names it, counted exactly, not guessed from capture times (a frozen camera or a looping source
    # sends byte-identical crops minutes apart).
    (
        8,
        [
            """CREATE TABLE hq_read_image (
            read_id BIGINT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (read_id, sha256))""",
            "CREATE INDEX hq_read_image_sha256 ON hq_read_image (sha256)",
            "{read_images_from_json}",
        ],
    ),
    # Issue 18: ingest now writes hq_read_image with each read (filled again here for the reads
    # stored since version 8, which it did not yet); renamed posts (their old ids as aliases:
    # the lines they signed under the old id still verify); re-based posts (a re-imaged post's new
    # key starts a new segment whose outbox seqs, access log, alert and hold ids start again, so
    # each of those is unique per post AND segment; closed segments are kept in hq_post_segment).
    (
        9,
        [
            "{read_images_from_json}",
            """CREATE TABLE hq_post_alias (
            old_id TEXT PRIMARY KEY, post_id TEXT NOT NULL, renamed_at TIMESTAMP NOT NULL, reason TEXT NOT NULL)""",
            "CREATE INDEX hq_post_alias_post ON hq_post_alias (post_id)",
            "ALTER TABLE hq_post ADD COLUMN segment INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE hq_read ADD COLUMN segment INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE hq_access_record ADD COLUMN segment INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE hq_alert ADD COLUMN segment INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE hq_legal_hold ADD COLUMN segment INTEGER NOT NULL DEFAULT 1",
            "DROP INDEX hq_access_record_post_seq",
            "CREATE UNIQUE INDEX hq_access_record_post_seq ON hq_access_record (post_id, segment, seq)",
            "DROP INDEX hq_alert_post_alert",
            "CREATE UNIQUE INDEX hq_alert_post_alert ON hq_alert (post_id, segment, alert_id)",
            "DROP INDEX hq_legal_hold_origin",
            "CREATE UNIQUE INDEX hq_legal_hold_origin ON hq_legal_hold (post_id, segment, origin_hold_id)",
            "CREATE INDEX hq_read_post_segment_seq ON hq_read (post_id, segment, seq)",
            """CREATE TABLE hq_post_segment (
            post_id TEXT NOT NULL, segment INTEGER NOT NULL, key_id TEXT NOT NULL, public_key TEXT NOT NULL,
            last_seq BIGINT NOT NULL, chain_seq BIGINT NOT NULL, chain_hash TEXT NOT NULL,
            chain_status TEXT NOT NULL, chain_problem TEXT NOT NULL, confirmation_id BIGINT NOT NULL,
            opened_at TIMESTAMP NOT NULL, closed_at TIMESTAMP NOT NULL, reason TEXT NOT NULL,
            PRIMARY KEY (post_id, segment))""",
        ],
    ),
    # The post's clock offset from headquarters', measured on every exchange (issue 18, finding 3):
    # signed GETs and pulls carry a nonce instead of a date window, so a post whose clock is off
    # still syncs, and headquarters says how far off it is.
    (
        10,
        [
            "ALTER TABLE hq_post ADD COLUMN clock_offset_s INTEGER",
            "ALTER TABLE hq_post ADD COLUMN clock_checked_at TIMESTAMP",
        ],
    ),
    # Frames in a second lane (issue 18, finding 6): a read may name its frame before the frame is
    # sent (sync/post.py). hq_frame_due lists each such frame until it comes; frame_seq is the
    # outbox seq up to which the post has sent the frames of the reads headquarters holds.
    (
        11,
        [
            "ALTER TABLE hq_post ADD COLUMN frame_seq BIGINT NOT NULL DEFAULT 0",
            "UPDATE hq_post SET frame_seq = last_seq",
            """CREATE TABLE hq_frame_due (
            post_id TEXT NOT NULL, read_uuid TEXT NOT NULL, seq BIGINT NOT NULL, sha256 TEXT NOT NULL,
            PRIMARY KEY (post_id, read_uuid))""",
            "CREATE INDEX hq_frame_due_seq ON hq_frame_due (post_id, seq)",
        ],
    ),
]


class HQError(RuntimeError):
    pass


def open_hq(target: str | Path):
    """Bind the headquarters models to `target` (a SQLite file path, or a postgresql:// URL) and
    bring its schema up to date. Returns the database."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        db = connect(text)
        dialect = "postgres"
    else:
        path = Path(text).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = SqliteDatabase(
            str(path),
            pragmas={
                "journal_mode": "wal",
                "foreign_keys": 1,
                "synchronous": "FULL",
                "busy_timeout": 10000,
                "cache_size": -16384,
            },
        )
        dialect = "sqlite"
    hq_database.initialize(db)
    with db.connection_context():
        db.execute_sql(
            "CREATE TABLE IF NOT EXISTS hq_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
        )
        done = {row[0] for row in db.execute_sql("SELECT version FROM hq_schema")}
        for version, statements in SCHEMA:
            if version in done:
                continue
            with db.atomic():
                for sql in statements:
                    db.execute_sql(sql.format(**DIALECT[dialect]))
                db.execute_sql(
                    f"INSERT INTO hq_schema (version, applied_at) VALUES ({db.param}, {db.param})", (version, utcnow())
                )
    return db


def write():
    db = hq_database.obj
    return db.atomic(lock_type="IMMEDIATE") if isinstance(db, SqliteDatabase) else db.atomic()


def locked_post(post_id: str) -> HQPost | None:
    """The post's row, inside write(): locked until the transaction ends (PostgreSQL: FOR UPDATE;
    SQLite: BEGIN IMMEDIATE already holds the database's write lock). Whoever changes the row saves
    only the fields it changes, so that the position an ingest wrote is never written back stale."""
    query = HQPost.select().where(HQPost.id == post_id)
    if not isinstance(hq_database.obj, SqliteDatabase):
        query = query.for_update()
    return query.first()


def lock_images(shas, exclusive: bool = False) -> None:
    """PostgreSQL: lock the hq_image rows of `shas` until the transaction ends, in one order (by
    sha256) so that two transactions never wait for each other in a circle. Ingest takes them
    shared before it names an image it may not insert (ON CONFLICT DO NOTHING locks nothing);
    retention takes them exclusive, then looks for remaining references in a statement of its own.
    So a read naming an image is either committed before retention looks (and the image kept) or
    waits until the image is gone (and inserts it again). SQLite needs none of this: one writer
    at a time (BEGIN IMMEDIATE)."""
    if isinstance(hq_database.obj, SqliteDatabase):
        return
    ordered = sorted(set(shas))
    p = hq_database.param
    for start in range(0, len(ordered), 500):
        page = ordered[start : start + 500]
        hq_database.execute_sql(
            f"SELECT sha256 FROM hq_image WHERE sha256 IN ({', '.join([p] * len(page))}) ORDER BY sha256 "
            f"FOR {'UPDATE' if exclusive else 'KEY SHARE'}",
            page,
        ).fetchall()


def insert_rows(table_columns: tuple[str, tuple[str, ...]], rows: list[tuple], on_conflict: str = "") -> None:
    """Insert `rows` in one statement per page, straight to the driver (sqlite3's executemany;
    psycopg2's execute_values, a few multi-row INSERTs rather than a round trip per row). Building
    the same INSERT through the ORM cost headquarters more than reading the batch."""
    table, columns = table_columns
    db = hq_database.obj
    names = ", ".join(columns)
    cursor = db.cursor()
    if isinstance(db, SqliteDatabase):
        cursor.executemany(
            f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))}) {on_conflict}", rows
        )
    else:
        from psycopg2.extras import execute_values  # noqa: PLC0415 (optional dependency: PostgreSQL only)

        execute_values(cursor, f"INSERT INTO {table} ({names}) VALUES %s {on_conflict}", rows, page_size=500)


def integrity_errors() -> tuple[type[Exception], ...]:
    errors: tuple[type[Exception], ...] = (IntegrityError, sqlite3.IntegrityError)
    try:
        import psycopg2  # noqa: PLC0415 (optional dependency: PostgreSQL only)
    except ImportError:
        return errors
    return (*errors, psycopg2.IntegrityError)
