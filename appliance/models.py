"""The post's tables. The schema itself is made by the numbered migrations in
appliance/migrations/; these classes must match it (tests/appliance/test_db.py checks)."""

from __future__ import annotations

import datetime as dt
import json

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    DatabaseProxy,
    DateField,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

database = DatabaseProxy()


def utcnow() -> dt.datetime:
    """Naive UTC: every datetime column holds UTC, converted for display only."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class JSONField(TextField):
    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Post(BaseModel):
    id = CharField(primary_key=True)
    name = CharField()
    agency = CharField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "post"


class Camera(BaseModel):
    id = CharField(primary_key=True)
    post = ForeignKeyField(Post, backref="cameras", on_delete="RESTRICT")
    name = CharField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "camera"


class User(BaseModel):
    id = AutoField()
    username = CharField(unique=True)
    display_name = CharField()
    organization = CharField()
    job_title = CharField(default="")
    role = CharField()
    password_hash = CharField()
    must_change_password = BooleanField(default=True)
    active = BooleanField(default=True)
    training_course = CharField(default="")
    training_completed_on = DateField(null=True)
    training_expires_on = DateField(null=True)
    failed_logins = IntegerField(default=0)
    locked_until = DateTimeField(null=True)
    last_login_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    # Raised to end every session of the account (sign-out, password change or reset, deactivation):
    # a session signed in under another version is refused. Migration 0009.
    session_version = IntegerField(default=0)

    class Meta:
        table_name = "user"

    def training_current(self, today: dt.date | None = None) -> bool:
        today = today or utcnow().date()
        return (
            self.training_completed_on is not None
            and self.training_completed_on <= today
            and (self.training_expires_on is None or self.training_expires_on >= today)
        )


class Read(BaseModel):
    id = AutoField()
    uuid = CharField(unique=True)
    post_id = CharField()
    camera_id = CharField()
    captured_at = DateTimeField(index=True)
    first_seen_at = DateTimeField(null=True)
    last_seen_at = DateTimeField(null=True)
    plate_raw = CharField()
    plate = CharField(index=True)
    region = CharField(null=True)
    region_confidence = FloatField(null=True)
    confidence = FloatField()
    char_confidences = JSONField(default=list)
    alternatives = JSONField(default=list)  # [{"text": ..., "score": ...}], best first
    box_x = IntegerField(null=True)
    box_y = IntegerField(null=True)
    box_w = IntegerField(null=True)
    box_h = IntegerField(null=True)
    corners = JSONField(null=True)
    direction = CharField(null=True)
    low_confidence = BooleanField(default=False)
    created_at = DateTimeField(default=utcnow)
    evidence_note = CharField(null=True)  # why images are missing, e.g. low disk space
    clock_synced = BooleanField(null=True)  # the clock when it was stamped; None: unknown (m0012)

    class Meta:
        table_name = "read"


class Evidence(BaseModel):
    id = AutoField()
    read = ForeignKeyField(Read, backref="evidence", on_delete="CASCADE")
    kind = CharField()  # "crop" or "frame"
    sha256 = CharField(index=True)
    bytes = IntegerField()
    width = IntegerField()
    height = IntegerField()
    content_type = CharField(default="image/jpeg")

    class Meta:
        table_name = "evidence"
        indexes = ((("read", "kind"), True),)


class AccessRecord(BaseModel):
    seq = IntegerField(primary_key=True)
    at = CharField()  # ISO 8601 UTC with microseconds and Z, as hashed
    username = CharField()
    organization = CharField()
    action = CharField(index=True)
    query = TextField()  # canonical JSON of the plate or data elements used to query
    purpose_code = CharField()
    case_number = CharField()
    object_ids = TextField()  # canonical JSON list
    result_count = IntegerField(null=True)
    client_addr = CharField()
    details = TextField()  # canonical JSON object
    prev_hash = CharField()
    hash = CharField()

    class Meta:
        table_name = "access_record"


class Outbox(BaseModel):
    seq = AutoField()
    kind = CharField()  # "read", ...
    object_id = CharField()
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)
    batch_id = CharField(null=True)

    class Meta:
        table_name = "outbox"


class Hotlist(BaseModel):
    id = AutoField()
    name = CharField(unique=True)
    kind = CharField()  # "state" (imported files, must stay fresh) or "custom"
    source = CharField(default="")  # file name of the last import
    source_sha256 = CharField(default="")
    refreshed_at = DateTimeField(null=True)
    entry_count = IntegerField(default=0)
    stale_recorded_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    retired_at = DateTimeField(null=True)  # retired lists raise no alerts; their alerts stay
    retired_by = CharField(null=True)
    retired_reason = CharField(null=True)

    class Meta:
        table_name = "hotlist"


class HotlistEntry(BaseModel):
    id = AutoField()
    hotlist = ForeignKeyField(Hotlist, backref="entries", on_delete="CASCADE")
    plate = CharField()  # normalised; custom entries may hold * and ?
    pattern = BooleanField(default=False)
    skeleton = CharField()  # OCR-confusable characters folded, for indexed matching
    state = CharField(default="")
    reason = CharField()
    entry_date = DateField(null=True)
    source_ref = CharField(default="")
    approved_by = CharField(default="")
    narrative = TextField(default="")
    created_by = CharField(default="")
    created_at = DateTimeField(default=utcnow)
    removed_at = DateTimeField(null=True)
    removed_by = CharField(null=True)
    removed_reason = CharField(null=True)
    plate_type = CharField(default="")  # NCIC LIT (PC passenger car, ...)
    plate_year = CharField(default="")  # NCIC LIY
    vehicle_make = CharField(default="")  # NCIC MKE
    ori = CharField(default="")  # the entering agency's ORI
    review_on = DateField(null=True)  # custom entries: alerts stop after this day unless renewed
    renewed_at = DateTimeField(null=True)
    renewed_by = CharField(null=True)
    renew_reason = CharField(null=True)

    class Meta:
        table_name = "hotlist_entry"


class Alert(BaseModel):
    """A read that matched a hotlist entry. The entry's fields are copied: a state list is
    replaced whole on every refresh, and the alert must still say what it matched."""

    id = AutoField()
    read = ForeignKeyField(Read, backref="alerts", on_delete="CASCADE")
    entry = ForeignKeyField(HotlistEntry, null=True, on_delete="SET NULL")
    hotlist_name = CharField()
    hotlist_refreshed_at = DateTimeField(null=True)
    entry_plate = CharField()
    entry_state = CharField()
    entry_reason = CharField()
    entry_source_ref = CharField()  # the entry's NIC (NCIC number) for a state list
    entry_ori = CharField(default="")
    matched_text = CharField()
    match_kind = CharField()  # exact | alternative | confusable | pattern
    score = FloatField()
    status = CharField(default="unconfirmed")  # unconfirmed | confirmed | misread | not_wanted | other
    acknowledged_at = DateTimeField(null=True)
    acknowledged_by = CharField(null=True)
    created_at = DateTimeField(default=utcnow)
    # the alert sent for the same entry shortly before (alerts.repeat_window_s): this one was not sent
    repeat_of = ForeignKeyField("self", null=True, backref="repeats", on_delete="SET NULL")

    class Meta:
        table_name = "alert"


class AlertConfirmation(BaseModel):
    id = AutoField()
    alert = ForeignKeyField(Alert, backref="confirmations", on_delete="CASCADE")
    username = CharField()
    organization = CharField()
    confirmed_at = DateTimeField(default=utcnow)
    visual_compared = BooleanField()
    clets_verified = BooleanField()
    outcome = CharField()
    note = TextField(default="")
    change_reason = TextField(default="")  # why an earlier outcome was changed ("" for the first)

    class Meta:
        table_name = "alert_confirmation"


ALL = (Post, Camera, User, Read, Evidence, AccessRecord, Outbox, Hotlist, HotlistEntry, Alert, AlertConfirmation)
