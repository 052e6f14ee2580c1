"""The evidence store: reads with their plate crop and context frame.

`save_read()` is the only way a read enters the database. Its order makes a crash at any point
harmless:

1. the images are encoded and the disk is checked for room (nothing written yet);
2. each new file is written to evidence/tmp/<sha256>.*.part and fsynced, then the tmp
   directory is fsynced: the bytes are durable before anything refers to them;
3. ONE transaction inserts the read, its evidence rows, its search index entry, its outbox row and its access record
   (when a person stored it);
4. the files are renamed to evidence/ab/cd/<sha256>.jpg (content-addressed: the same bytes are
   stored once).

`recover()`, run at every start before any writer, settles whatever a crash or power cut left in
evidence/tmp/: a file whose sha256 a committed read references is moved into place (roll
forward), any other is deleted. So no step leaves a half-stored read or an orphan file, and a
read costs three fsyncs (two files and one directory) plus its commit.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import io
import os
import re
import shutil
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from peewee import fn
from PIL import Image, UnidentifiedImageError

from appliance import audit, clock, search
from appliance.config import Settings
from appliance.db import write
from appliance.models import Evidence, Outbox, Read

SHA256_NAME = re.compile(r"[0-9a-f]{64}")


class StoreError(RuntimeError):
    pass


class EvidenceUnwritable(StoreError):
    """The evidence directory refuses writes for another reason than space (read-only, I/O
    error, a file where a directory should be): the read can still be stored, without images."""


class DiskFull(StoreError):
    pass


@dataclass
class NewRead:
    """A read as the pipeline hands it over, before it has an id."""

    plate_raw: str
    plate: str
    confidence: float
    captured_at: dt.datetime  # naive UTC
    char_confidences: list[float] = field(default_factory=list)
    alternatives: list[dict] = field(default_factory=list)  # [{"text": str, "score": float}]
    region: str | None = None
    region_confidence: float | None = None
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in the frame
    corners: list | None = None
    first_seen_at: dt.datetime | None = None
    last_seen_at: dt.datetime | None = None
    direction: str | None = None
    uuid: str | None = None
    camera_id: str | None = None
    evidence_note: str | None = None


@dataclass(frozen=True)
class Blob:
    data: bytes
    sha256: str
    width: int
    height: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_jpeg(image, quality: int, what: str) -> Blob:
    """An RGB/gray numpy array, a PIL image or JPEG bytes -> JPEG bytes with size and sha256."""
    # imported here, not with the module: a process that only reads evidence back (sync) stays
    # without numpy, PIL and (through search) the recognizer's OpenCV
    if isinstance(image, (bytes, bytearray)):
        data = bytes(image)
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.format != "JPEG":
                    raise StoreError(f"{what}: expected JPEG bytes, got {img.format}")
                img.verify()
                width, height = img.size
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise StoreError(f"{what}: not a readable JPEG image ({exc})") from exc
    else:
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
                raise StoreError(
                    f"{what}: expected a non-empty uint8 HxW or HxWx3 array, got {image.dtype} {image.shape}"
                )
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise StoreError(f"{what}: cannot store an image of type {type(image).__name__}")
        buf = io.BytesIO()
        image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode).save(buf, format="JPEG", quality=quality)
        data = buf.getvalue()
        width, height = image.size
    return Blob(data, hashlib.sha256(data).hexdigest(), width, height)


class EvidenceStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.evidence_path
        self.tmp = self.root / "tmp"

    def path_for(self, sha256: str) -> Path:
        if not SHA256_NAME.fullmatch(sha256):
            raise StoreError(f"not a sha256 evidence name: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / f"{sha256}.jpg"

    def _free_and_floor(self) -> tuple[int, int]:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free, self.settings.storage.min_free_mb * 1024 * 1024

    def room(self) -> str:
        """How much evidence may be written now: "full" (crop and frame), "crop" (below
        storage.min_free_mb: frames are dropped first) or "none" (below half of it: reads are
        stored without images rather than lost)."""
        free, floor = self._free_and_floor()
        return "full" if free >= floor else "crop" if free >= floor // 2 else "none"

    def check_room(self, needed: int) -> None:
        """The hard floor under room(): no image is written that would leave less than half of
        storage.min_free_mb free (between half and all of it, room() already drops frames)."""
        free, floor = self._free_and_floor()
        if free - needed < floor // 2:
            raise DiskFull(
                f"not storing evidence: {free // 2**20} MiB free on {self.root}, "
                f"storage.min_free_mb is {self.settings.storage.min_free_mb} (images stop at half "
                "of it); free space or let retention purge old reads"
            )

    def stage(self, blob: Blob) -> Path | None:
        """Write the bytes to tmp/ and fsync them; None when the store already has them."""
        if self.path_for(blob.sha256).exists():
            return None
        part = self.tmp / f"{blob.sha256}.{os.getpid()}.{uuidlib.uuid4().hex[:8]}.part"
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            with open(part, "wb") as f:
                f.write(blob.data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            try:
                part.unlink(missing_ok=True)
            except OSError:
                pass
            if exc.errno == errno.ENOSPC:
                raise DiskFull(f"disk full while writing evidence to {self.root}: {exc}") from exc
            raise EvidenceUnwritable(f"cannot write evidence file {part}: {exc}") from exc
        return part

    def publish(self, part: Path) -> Path:
        """Move a staged file to its content-addressed place (after its read committed)."""
        final = self.path_for(part.name.split(".", 1)[0])
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        return final

    def read_bytes(self, sha256: str) -> bytes:
        path = self.path_for(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # A read committed a moment ago may not be published yet.
            staged = sorted(self.tmp.glob(f"{sha256}.*.part")) if self.tmp.exists() else []
            if not staged:
                raise StoreError(f"evidence file {sha256} is missing from {self.root}") from None
            data = staged[0].read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"evidence file {sha256} does not match its hash (damaged or altered)")
        return data

    def recover(self) -> dict:
        """Settle evidence/tmp/ after a crash. Call at start, before any writer runs."""
        moved = removed = 0
        if self.tmp.exists():
            for part in sorted(self.tmp.iterdir()):
                sha = part.name.split(".", 1)[0]
                referenced = Evidence.select().where(Evidence.sha256 == sha).exists()
                if referenced and not self.path_for(sha).exists():
                    _fsync_dir(self.publish(part).parent)
                    moved += 1
                else:
                    part.unlink(missing_ok=True)
                    removed += 1
            _fsync_dir(self.tmp)
        return {"rolled_forward": moved, "removed": removed}

    def iter_files(self):
        if not self.root.exists():
            return
        yield from self.root.glob("??/??/*.jpg")


def save_read(
    settings: Settings,
    store: EvidenceStore,
    new: NewRead,
    crop,
    frame,
    actor: audit.Actor | None = None,
    on_stored: Callable[[Read], object] | None = None,
) -> Read:
    """Store one read with its images; see the module docstring for why in this order.
    `on_stored(read)` runs inside the read's transaction (the pipeline raises alerts there, so a
    read and its alerts commit together)."""
    if not new.plate or not new.plate.isalnum() or new.plate != new.plate.upper():
        raise StoreError(f"read plate {new.plate!r} is not normalised (upper-case A-Z and 0-9 only)")
    if not 0.0 <= new.confidence <= 1.0:
        raise StoreError(f"read confidence {new.confidence} is outside 0..1")
    quality = settings.storage.jpeg_quality
    blobs = {}
    if crop is not None:
        blobs["crop"] = encode_jpeg(crop, quality, "plate crop")
    if frame is not None:
        blobs["frame"] = encode_jpeg(frame, quality, "context frame")
    if blobs:
        store.check_room(sum(len(b.data) for b in blobs.values()))

    # asked before the transaction: at most once a minute it runs chronyc (up to 3 s)
    synced = clock.sync_watch.get().synchronised
    staged: list[Path] = []
    try:
        for blob in {b.sha256: b for b in blobs.values()}.values():
            part = store.stage(blob)
            if part is not None:
                staged.append(part)
        if staged:
            _fsync_dir(store.tmp)
        with write():
            box = new.box or (None, None, None, None)
            read = Read.create(
                uuid=new.uuid or str(uuidlib.uuid4()),
                post_id=settings.post.id,
                camera_id=new.camera_id or settings.post.camera_id,
                captured_at=new.captured_at,
                first_seen_at=new.first_seen_at,
                last_seen_at=new.last_seen_at,
                plate_raw=new.plate_raw,
                plate=new.plate,
                region=new.region,
                region_confidence=new.region_confidence,
                confidence=new.confidence,
                char_confidences=list(new.char_confidences),
                alternatives=list(new.alternatives),
                box_x=box[0],
                box_y=box[1],
                box_w=box[2],
                box_h=box[3],
                corners=new.corners,
                direction=new.direction,
                low_confidence=new.confidence < settings.recognizer.min_confidence,
                evidence_note=new.evidence_note,
                clock_synced=synced,
            )
            for kind, blob in blobs.items():
                Evidence.create(
                    read=read, kind=kind, sha256=blob.sha256, bytes=len(blob.data), width=blob.width, height=blob.height
                )
            search.index_read(read.id, read.plate, read.alternatives)
            Outbox.create(kind="read", object_id=read.uuid)
            if actor is not None:
                audit.record("read.store", actor, objects=[f"read:{read.uuid}"], details={"plate": new.plate})
            if on_stored is not None:
                on_stored(read)
    except BaseException:
        for part in staged:
            part.unlink(missing_ok=True)
        raise
    for part in staged:
        store.publish(part)
    return read


def check(settings: Settings, store: EvidenceStore) -> list[str]:
    """Consistency of database and files: every problem as a sentence (empty when all is well)."""
    problems = []
    referenced = set()
    for ev in Evidence.select(Evidence.sha256, Evidence.read):
        referenced.add(ev.sha256)
        if not store.path_for(ev.sha256).exists():
            problems.append(f"read id {ev.read_id}: evidence file {ev.sha256} is missing")  # type: ignore[attr-defined]  # peewee adds read_id
    for path in store.iter_files():
        if path.stem not in referenced:
            problems.append(f"orphan evidence file {path.name} (no read references it)")
    if store.tmp.exists() and any(store.tmp.iterdir()):
        problems.append(f"staged files left in {store.tmp} (run `waypost init` or restart to settle them)")
    stray = Outbox.select().where((Outbox.kind == "read") & ~(Outbox.object_id.in_(Read.select(Read.uuid))))
    for row in stray:
        problems.append(f"outbox seq {row.seq} points at read {row.object_id}, which does not exist")
    no_ev = Read.select().where(
        Read.evidence_note.is_null() & ~(Read.id.in_(Evidence.select(Evidence.read).where(Evidence.kind == "crop")))
    )
    for read in no_ev:
        problems.append(f"read {read.uuid} has no plate crop")
    return problems


RATE_WINDOW_DAYS = 7


def capacity(settings: Settings, now: dt.datetime | None = None) -> dict:
    """When the disk fills at the current rate: the evidence bytes stored per day over the last
    RATE_WINDOW_DAYS days (fewer on a new post, at least one), the free space above
    storage.min_free_mb, and whether that lasts until retention (retention.read_days) frees as
    much as comes in. Byte counts only, no plate data. Needs a database connection."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    since = now - dt.timedelta(days=RATE_WINDOW_DAYS)
    first = Read.select(fn.MIN(Read.created_at)).scalar()
    recent = Evidence.select(fn.COALESCE(fn.SUM(Evidence.bytes), 0)).join(Read).where(Read.created_at >= since).scalar()
    stored = Evidence.select(fn.COALESCE(fn.SUM(Evidence.bytes), 0)).scalar()
    disk = shutil.disk_usage(settings.data_dir)
    reserve = settings.storage.min_free_mb * 1024 * 1024
    free = max(0, disk.free - reserve)
    retention_days = settings.retention.read_days
    out: dict = {
        "free_mb": disk.free // 2**20,
        "min_free_mb": settings.storage.min_free_mb,
        "stored_mb": round(int(stored) / 2**20, 1),
        "bytes_per_day": None,
        "full_in_days": None,
        "retention_days": retention_days,
        "fills_before_retention": False,
    }
    if first is None or not recent:
        return out  # nothing stored lately: no rate to go by
    if isinstance(first, str):  # SQLite hands back text for an aggregate of a datetime column
        first = dt.datetime.fromisoformat(first)
    days = max(1.0, (now - max(first, since)).total_seconds() / 86400)
    per_day = int(recent) / days
    out["bytes_per_day"] = round(per_day)
    out["full_in_days"] = round(free / per_day, 1)
    # Once reads are retention_days old the purge frees a day's worth each day; until then the
    # store grows to per_day x retention_days.
    out["fills_before_retention"] = per_day * retention_days - int(stored) > free
    return out
