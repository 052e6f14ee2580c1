"""Evidence export: a ZIP of reads that someone else can check offline, and the check itself.

A ZIP holds:

    reads.csv            one row per read: every field, alternatives and box as JSON, image hashes
                         (appliance/spreadsheet.py: text that would run as a formula starts with ')
    reads.json           the same reads, one JSON object per line inside a JSON array
    images/<sha256>.jpg  each plate crop and context frame, named by the sha256 of its bytes
    access_record.json   the access record written for this export (with its hash and prev_hash)
    STATEMENT.txt        who exported what, when, why, and how to verify it
    manifest.json        the sha256 and size of every other file

`build_zip()` is generic: the caller (a sharing request, a legal hold) passes the reads and a
`Reason` (audit action, purpose, the data elements that selected the reads, lines for the
statement, a re-check run inside the export's transaction). The order follows store.save_read:

1. reads and images go into `.NAME.part` next to the target (reads.csv/json are staged as files
   beside it and hashed), one page of reads and one image at a time, so memory stays bounded;
2. ONE transaction re-checks that the export is still allowed and appends the access record,
   whose details carry `data_sha256`, a digest over the names and hashes of the data files;
3. the record, the statement and the manifest are added, the file is fsynced and renamed.

A failure before 2 leaves nothing; after 2 the log says an export was made even if the file
could not be finished (never the reverse).

`verify()` needs nothing but the ZIP: every file against the manifest, nothing missing or extra,
images against their names and rows, the two read lists against each other, the access record's
hash and its `data_sha256`. Anyone can recompute all of that, so a ZIP rewritten together with its
manifest and record passes too: what makes it genuine is that the record's (seq, hash) is the one
in the department's access log, which the statement says how to confirm.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from appliance import audit, spreadsheet, untrusted_json
from appliance.config import Settings
from appliance.db import database, write
from appliance.holds import HoldError, HoldRead, LegalHold
from appliance.models import Camera, Evidence, Read
from appliance.store import EvidenceStore, StoreError

FORMAT = "waypost-evidence/1"
MANIFEST = "manifest.json"
RECORD = "access_record.json"
STATEMENT = "STATEMENT.txt"
READS_CSV = "reads.csv"
READS_JSON = "reads.json"
META = (RECORD, STATEMENT)  # listed in the manifest, but made after the record
EXPORT_ACTIONS = frozenset({"sharing.export", "hold.export"})
_IMAGE = re.compile(r"^images/([0-9a-f]{64})\.jpg$")
_BATCH = 200
_CHUNK = 1 << 16

FIELDS = (
    "uuid",
    "post_id",
    "camera_id",
    "camera_name",
    "captured_at",
    "first_seen_at",
    "last_seen_at",
    "plate_raw",
    "plate",
    "region",
    "region_confidence",
    "confidence",
    "char_confidences",
    "alternatives",
    "box_x",
    "box_y",
    "box_w",
    "box_h",
    "corners",
    "direction",
    "low_confidence",
    "evidence_note",
    "crop_sha256",
    "frame_sha256",
    "images_note",
    "created_at",
)
_JSON_FIELDS = ("char_confidences", "alternatives", "corners")


class ExportError(RuntimeError):
    pass


@dataclasses.dataclass
class Reason:
    """Why these reads leave the post. `still_allowed()` runs inside the export's transaction and
    raises to stop it (e.g. the request is no longer approved); `recorded(record, summary)` runs
    there too, to file the export beside its request or hold."""

    action: str
    purpose: audit.Purpose
    query: dict
    objects: list[str]
    subject: str
    statement: list[str]
    still_allowed: Callable[[], object] = lambda: None  # what it returns is not used
    recorded: Callable[[object, Summary], None] = lambda record, summary: None


@dataclasses.dataclass
class Summary:
    path: Path
    read_count: int
    image_count: int
    data_sha256: str
    record: dict | None = None
    bytes: int = 0


def data_digest(hashes: dict[str, str]) -> str:
    """sha256 over "<sha256>  <name>\\n" lines of the data files (everything but META and the
    manifest), sorted by name: the lines `sha256sum` prints, so it can be redone by hand."""
    text = "".join(f"{hashes[name]}  {name}\n" for name in sorted(hashes))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return value.isoformat(timespec="microseconds") + "Z"


def _row(read: Read, cameras: dict[str, str]) -> dict:
    return {
        "uuid": read.uuid,
        "post_id": read.post_id,
        "camera_id": read.camera_id,
        "camera_name": cameras.get(read.camera_id, ""),
        "captured_at": _iso(read.captured_at),
        "first_seen_at": _iso(read.first_seen_at),
        "last_seen_at": _iso(read.last_seen_at),
        "plate_raw": read.plate_raw,
        "plate": read.plate,
        "region": read.region,
        "region_confidence": read.region_confidence,
        "confidence": read.confidence,
        "char_confidences": read.char_confidences,
        "alternatives": read.alternatives,
        "box_x": read.box_x,
        "box_y": read.box_y,
        "box_w": read.box_w,
        "box_h": read.box_h,
        "corners": read.corners,
        "direction": read.direction,
        "low_confidence": bool(read.low_confidence),
        "evidence_note": read.evidence_note,
        "crop_sha256": None,
        "frame_sha256": None,
        "images_note": "",
        "created_at": _iso(read.created_at),
    }


def _csv_value(key, value):
    if value is None:
        return ""
    if key in _JSON_FIELDS:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _batches(items: Iterable, n: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def _sha_file(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _info(name: str, when: dt.datetime, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = compress
    info.external_attr = 0o644 << 16
    return info


def build_zip(settings: Settings, actor: audit.Actor, reads: Iterable[Read], reason: Reason, *, out: Path) -> Summary:
    """Write the evidence ZIP for `reads` to `out` (see the module docstring). Returns a Summary
    with the access record as stored."""
    if reason.action not in EXPORT_ACTIONS:
        raise ExportError(f"{reason.action!r} is not an export action ({', '.join(sorted(EXPORT_ACTIONS))})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.part")
    staged = [out.with_name(f".{out.name}.{n}.part") for n in (READS_CSV, READS_JSON)]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    store = EvidenceStore(settings)
    cameras = {c.id: c.name for c in Camera.select(Camera.id, Camera.name)}
    hashes: dict[str, str] = {}
    sizes: dict[str, int] = {}
    uuids: list[str] = []
    try:
        with zipfile.ZipFile(part, "w", allowZip64=True) as zf:
            with (
                open(staged[0], "w", newline="", encoding="utf-8") as fcsv,
                open(staged[1], "w", encoding="utf-8") as fjson,
            ):
                writer = spreadsheet.DictWriter(fcsv, fieldnames=FIELDS)
                writer.writeheader()
                fjson.write("[\n")
                for batch in _batches(reads, _BATCH):
                    ids = [r.id for r in batch]
                    evidence = {
                        (e.read_id, e.kind): e.sha256  # type: ignore[attr-defined]  # peewee adds read_id
                        for e in Evidence.select(Evidence.read, Evidence.kind, Evidence.sha256).where(
                            Evidence.read.in_(ids)
                        )
                    }
                    for read in batch:
                        row = _row(read, cameras)
                        notes = []
                        for kind in ("crop", "frame"):
                            sha = evidence.get((read.id, kind))
                            if sha is None:
                                continue
                            name = f"images/{sha}.jpg"
                            if name not in hashes:
                                try:
                                    data = store.read_bytes(sha)
                                except StoreError as exc:
                                    notes.append(f"{kind} not included: {exc}")
                                    continue
                                zf.writestr(_info(name, now, zipfile.ZIP_STORED), data)
                                hashes[name], sizes[name] = sha, len(data)
                            row[f"{kind}_sha256"] = sha
                        row["images_note"] = "; ".join(notes)
                        writer.writerow({k: _csv_value(k, v) for k, v in row.items()})
                        fjson.write(("," if uuids else "") + json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
                        uuids.append(read.uuid)
                fjson.write("]\n")
            for name, path in zip((READS_CSV, READS_JSON), staged):
                hashes[name], sizes[name] = _sha_file(path)
                zf.write(path, name, compress_type=zipfile.ZIP_DEFLATED)
                path.unlink()
            images = sum(1 for n in hashes if n.startswith("images/"))
            summary = Summary(out, len(uuids), images, data_digest(hashes))
            with write():
                reason.still_allowed()
                rec = audit.record(
                    reason.action,
                    actor,
                    query=reason.query,
                    purpose=reason.purpose,
                    objects=list(reason.objects) + [f"read:{u}" for u in uuids],
                    result_count=len(uuids),
                    details={
                        "data_sha256": summary.data_sha256,
                        "images": images,
                        "file": out.name,
                        "for": reason.subject,
                    },
                )
                row = database.execute_sql(
                    f"SELECT {', '.join(audit.COLUMNS)} FROM access_record WHERE seq = ?", (rec.seq,)
                ).fetchone()
                summary.record = dict(zip(audit.COLUMNS, row))
                reason.recorded(rec, summary)
            meta = {
                RECORD: json.dumps(
                    {
                        "records": [summary.record],
                        "hash": "sha256 of the first 13 fields (seq to prev_hash) as text, "
                        "null as empty, joined by U+001F",
                    },
                    ensure_ascii=False,
                    indent=2,
                ).encode("utf-8"),
                STATEMENT: statement(settings, actor, reason, summary).encode("utf-8"),
            }
            for name, data in meta.items():
                zf.writestr(_info(name, now, zipfile.ZIP_DEFLATED), data)
                hashes[name], sizes[name] = hashlib.sha256(data).hexdigest(), len(data)
            manifest = {
                "format": FORMAT,
                "created_at": summary.record["at"],
                "post": settings.post.id,
                "agency": settings.post.agency,
                "for": reason.subject,
                "record_seq": summary.record["seq"],
                "record_hash": summary.record["hash"],
                "data_sha256": summary.data_sha256,
                "files": {n: {"sha256": hashes[n], "bytes": sizes[n]} for n in sorted(hashes)},
            }
            zf.writestr(
                _info(MANIFEST, now, zipfile.ZIP_DEFLATED),
                json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"),
            )
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, out)
        dirfd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except BaseException:
        for path in [part, *staged]:
            path.unlink(missing_ok=True)
        raise
    summary.bytes = out.stat().st_size
    return summary


def statement(settings: Settings, actor: audit.Actor, reason: Reason, summary: Summary) -> str:
    rec = summary.record
    assert rec is not None  # the statement is written once the export is recorded
    lines = [
        "WAYPOST EVIDENCE EXPORT: VERIFICATION STATEMENT",
        "",
        f"Exported by:       {actor.username} ({actor.organization}), from {actor.client_addr}",
        f"Exported at:       {rec['at']} (UTC)",
        f"Post:              {settings.post.name} ({settings.post.id}), {settings.post.agency}",
        f"Exported for:      {reason.subject}",
        *reason.statement,
        f"Purpose recorded:  {reason.purpose.code}, case {reason.purpose.case_number}",
        f"Contents:          {summary.read_count} read(s) in {READS_CSV} and {READS_JSON} (the same reads), "
        f"{summary.image_count} image(s) in images/, {RECORD}, this statement, {MANIFEST}",
        "",
        "The access record of this export (Civil Code 1798.90.52):",
        f"  seq {rec['seq']}, hash {rec['hash']}",
        f"  previous hash {rec['prev_hash']}",
        f"  data_sha256 {summary.data_sha256}",
        "",
        "HOW TO VERIFY",
        "",
        f"1. With Waypost, offline: `waypost evidence verify FILE.zip`. It checks every file against {MANIFEST},",
        "   that no file is missing or added, that each image's sha256 is its name and is the one its read row",
        f"   names, that {READS_CSV} and {READS_JSON} list the same reads, and that the access record's hash and",
        "   its data_sha256 recompute. It exits 0 and prints OK, or exits 1 naming the first problem.",
        "",
        "2. By hand: `sha256sum` each file and compare with manifest.json; an image's name is its sha256.",
        '   data_sha256 is the sha256 of the `sha256sum` lines ("<sha256>  <name>" and a newline) of',
        f"   {READS_CSV}, {READS_JSON} and images/*, sorted by name. The record's hash is the sha256 of its",
        "   fields seq, at, username, organization, action, query, purpose_code, case_number, object_ids,",
        "   result_count, client_addr, details, prev_hash as text (empty for null) joined by the character",
        "   U+001F.",
        "",
        "3. These checks show the files are the ones the record describes. To show the record is genuine,",
        f"   ask the department's ALPR custodian to confirm that access record {rec['seq']} in the post's access",
        f"   log has hash {rec['hash']}; `waypost audit verify` on the post checks the whole chain it belongs to.",
        "",
    ]
    return "\n".join(lines)


# -- verification ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    ok: bool
    problem: str = ""
    facts: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return "OK: " + "; ".join(self.facts)
        return f"FAILED: {self.problem}"


class _Bad(Exception):
    pass


# What the files of an export can be, checked from the ZIP's directory before a byte is unpacked
# (a 1.4 MB ZIP unpacked to a 1 GB manifest, read whole). The reads files have no size of their
# own (an export holds as many reads as it holds); they are read a line at a time, to LINE_BYTES.
MiB = 2**20
MOST_BYTES = {MANIFEST: 64 * MiB, RECORD: MiB, STATEMENT: MiB}  # any other name: IMAGE_BYTES
IMAGE_BYTES = 32 * MiB  # a context frame is well under 1 MiB
LINE_BYTES = MiB  # a read's row is about 1 KB
# Deflate shrinks an export's text files a few times at most; past MAX_RATIO a member is a ZIP
# bomb, not an export. Members under RATIO_FROM unpack to too little to matter, whatever the ratio.
MAX_RATIO = 100
RATIO_FROM = MiB


def _check_sizes(zf: zipfile.ZipFile) -> None:
    for info in zf.infolist():
        name, size, packed = info.filename, info.file_size, max(info.compress_size, 1)
        most = None if name in (READS_CSV, READS_JSON) else MOST_BYTES.get(name, IMAGE_BYTES)
        if most is not None and size > most:
            raise _Bad(
                f"{name}: unpacks to {size} bytes; an evidence export's is at most {most} "
                "(not a Waypost export: refused unread)"
            )
        if size > RATIO_FROM and size > MAX_RATIO * packed:
            raise _Bad(
                f"{name}: compressed {size // packed}:1 ({packed} bytes unpack to {size}); no file of an "
                f"evidence export shrinks more than {MAX_RATIO}:1 (a ZIP bomb: refused unread)"
            )


def _read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    """A member whose size _check_sizes bounded, read to that bound whatever its header said."""
    most = MOST_BYTES.get(name, IMAGE_BYTES)
    with zf.open(name) as f:
        data = f.read(most + 1)
    if len(data) > most:
        raise _Bad(f"{name}: more than {most} bytes; an evidence export's is at most that")
    return data


def verify(path: Path) -> Report:
    """Check an evidence ZIP on its own; the first problem found is reported."""
    try:
        return Report(True, facts=_verify(Path(path)))
    except _Bad as exc:
        return Report(False, str(exc))


def _hash_member(zf: zipfile.ZipFile, name: str) -> str:
    h = hashlib.sha256()
    try:
        with zf.open(name) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _Bad(f"{name}: cannot be read from the ZIP ({exc}): the file is damaged") from None
    return h.hexdigest()


def _text_lines(raw, name: str):
    """The lines of a member as text, each decoded on its own so that bad UTF-8 is named by its line
    (a TextIOWrapper decodes ahead, in chunks, and would raise on an earlier line's read), and each
    read to LINE_BYTES: a line that never ends is not held whole."""
    n = 0
    while line := raw.readline(LINE_BYTES + 1):
        n += 1
        if len(line) > LINE_BYTES:
            raise _Bad(f"{name} line {n}: longer than {LINE_BYTES} bytes, which no read's row is: not a Waypost export")
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Bad(
                f"{name} line {n}: not UTF-8 text (byte {line[exc.start : exc.start + 1]!r} at column "
                f"{exc.start + 1}): the file is damaged"
            ) from None


def _json_rows(zf: zipfile.ZipFile, name: str):
    with zf.open(name) as raw:
        lines = _text_lines(raw, name)
        first = next(lines, "")
        if first.strip() != "[":
            raise _Bad(f"{name}: does not start with '[' on its own line")
        for n, line in enumerate(lines, start=2):
            text = line.strip()
            if text == "]":
                return
            try:
                row = untrusted_json.loads(text[1:] if text.startswith(",") else text)
            except untrusted_json.TooDeep as exc:
                raise _Bad(f"{name} line {n}: {exc}") from None
            except json.JSONDecodeError as exc:
                raise _Bad(f"{name} line {n}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise _Bad(f"{name} line {n}: item {n - 1} is a {type(row).__name__}, not a read (an object)")
            yield row
        raise _Bad(f"{name}: ends without ']'")


def _csv_rows(reader: csv.DictReader):
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _Bad(f"{READS_CSV} line {reader.line_num}: not CSV ({exc})") from None
        yield row


def _verify(path: Path) -> list[str]:
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise _Bad(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise _Bad(f"{path}: not a readable ZIP file ({exc})") from None
    with zf:
        _check_sizes(zf)
        names = [i.filename for i in zf.infolist()]
        dup = sorted(n for n, count in collections.Counter(names).items() if count > 1)
        if dup:
            raise _Bad(f"{dup[0]}: appears more than once in the ZIP")
        if MANIFEST not in names:
            raise _Bad(f"{MANIFEST} is missing")
        try:
            manifest = untrusted_json.loads(_read_member(zf, MANIFEST))
            files = {n: (e["sha256"], int(e["bytes"])) for n, e in manifest["files"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _Bad(f"{MANIFEST}: not a Waypost evidence manifest ({exc})") from None
        if manifest.get("format") != FORMAT:
            raise _Bad(f"{MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        present = set(names) - {MANIFEST}
        for name in sorted(set(files) - present):
            raise _Bad(f"{name}: listed in {MANIFEST} but missing from the ZIP")
        for name in sorted(present - set(files)):
            raise _Bad(f"{name}: in the ZIP but not listed in {MANIFEST} (an extra file)")
        for required in (READS_CSV, READS_JSON, *META):
            if required not in files:
                raise _Bad(f"{required} is missing")
        for name in sorted(files):
            want, size = files[name]
            got = _hash_member(zf, name)
            if got != want:
                raise _Bad(f"{name}: sha256 {got} does not match the manifest ({want}): the file was changed")
            if zf.getinfo(name).file_size != size:
                raise _Bad(f"{name}: {zf.getinfo(name).file_size} bytes, the manifest says {size}")
            if name.startswith("images/"):
                match = _IMAGE.fullmatch(name)
                if not match:
                    raise _Bad(f"{name}: images must be named images/<sha256>.jpg")
                if match.group(1) != got:
                    raise _Bad(f"{name}: its content's sha256 is {got}, not its name")
            elif name not in (READS_CSV, READS_JSON, *META):
                raise _Bad(f"{name}: not a file an evidence export contains")

        images = {n[7:71] for n in files if n.startswith("images/")}
        referenced: set[str] = set()
        uuids: list[str] = []
        with zf.open(READS_CSV) as raw:
            reader = csv.DictReader(_text_lines(raw, READS_CSV))
            try:
                fieldnames = reader.fieldnames
            except csv.Error as exc:
                raise _Bad(f"{READS_CSV} line 1: not CSV ({exc})") from None
            if tuple(fieldnames or ()) != FIELDS:
                raise _Bad(f"{READS_CSV}: unexpected columns {fieldnames}")
            json_rows = _json_rows(zf, READS_JSON)
            for n, row in enumerate(_csv_rows(reader), start=2):
                other = next(json_rows, None)
                if other is None:
                    raise _Bad(f"{READS_JSON} has fewer reads than {READS_CSV} (ends before CSV line {n})")
                for key in ("uuid", "plate", "captured_at", "crop_sha256", "frame_sha256"):
                    if (row[key] or None) != spreadsheet.cell(other.get(key)):
                        raise _Bad(
                            f"{READS_CSV} line {n} and {READS_JSON} disagree on {key} "
                            f"({row[key]!r} vs {other.get(key)!r})"
                        )
                for key in ("crop_sha256", "frame_sha256"):
                    if row[key]:
                        if row[key] not in images:
                            raise _Bad(
                                f"{READS_CSV} line {n}: read {row['uuid']} names image {row[key]}, "
                                "which is not in the ZIP"
                            )
                        referenced.add(row[key])
                uuids.append(row["uuid"])
            if next(json_rows, None) is not None:
                raise _Bad(f"{READS_JSON} has more reads than {READS_CSV}")
        for sha in sorted(images - referenced):
            raise _Bad(f"images/{sha}.jpg: no read in {READS_CSV} refers to it")

        try:
            [rec] = untrusted_json.loads(_read_member(zf, RECORD))["records"]
            row = tuple(rec[c] for c in audit.COLUMNS)
        except (ValueError, KeyError, TypeError) as exc:
            raise _Bad(f"{RECORD}: not one access record with the fields {', '.join(audit.COLUMNS)} ({exc})") from None
        if rec["action"] not in EXPORT_ACTIONS:
            raise _Bad(f"{RECORD}: action {rec['action']!r} is not an export")
        if audit._digest(row) != rec["hash"]:
            raise _Bad(f"{RECORD}: record {rec['seq']} does not match its own hash (a field was changed)")
        try:
            details = untrusted_json.loads(rec["details"])
            objects = untrusted_json.loads(rec["object_ids"])
        except (TypeError, ValueError):
            raise _Bad(f"{RECORD}: details or object_ids are not JSON") from None
        if (
            not isinstance(details, dict)
            or not isinstance(objects, list)
            or not all(isinstance(o, str) for o in objects)
        ):
            raise _Bad(f"{RECORD}: details must be a JSON object and object_ids a list of texts")
        data = {n: files[n][0] for n in files if n not in META}
        if details.get("data_sha256") != data_digest(data):
            raise _Bad(
                f"the data files do not match the export's access record: data_sha256 is "
                f"{data_digest(data)}, the record says {details.get('data_sha256')}"
            )
        if rec["result_count"] != len(uuids):
            raise _Bad(f"{RECORD}: the record counts {rec['result_count']} reads, {READS_CSV} has {len(uuids)}")
        if sorted(o[5:] for o in objects if o.startswith("read:")) != sorted(uuids):
            raise _Bad(f"{RECORD}: the reads it names are not the reads in {READS_CSV}")
        if manifest.get("record_hash") != rec["hash"] or manifest.get("record_seq") != rec["seq"]:
            raise _Bad(f"{MANIFEST}: record_seq/record_hash do not match {RECORD}")
    return [
        f"{len(uuids)} read(s), {len(images)} image(s), {len(files)} file(s) match {MANIFEST}",
        f"access record {rec['seq']} ({rec['action']} by {rec['username']}, {rec['purpose_code']} "
        f"case {rec['case_number']}) hash {rec['hash']} recomputes",
        f"confirm record {rec['seq']} has this hash in the post's access log to show the export is genuine",
    ]


# -- for a legal hold --------------------------------------------------------------------------------

audit.register_action("hold.export", True)


def _held_plates(hold_id: int) -> list[str]:
    """The plates of the reads a hold keeps: what its export releases, named in its record."""
    rows = Read.select(Read.plate).join(HoldRead, on=(HoldRead.read == Read.id)).where(HoldRead.hold == hold_id)
    return sorted({r.plate for r in rows.distinct()})


def _held_reads(hold_id: int, page: int = _BATCH):
    """The reads a hold keeps that still exist, by id in pages (memory stays bounded)."""
    after = 0
    while True:
        batch = list(
            Read.select()
            .join(HoldRead, on=(HoldRead.read == Read.id))
            .where((HoldRead.hold == hold_id) & (Read.id > after))
            .order_by(Read.id)
            .limit(page)
        )
        yield from batch
        if len(batch) < page:
            return
        after = batch[-1].id


def for_hold(settings: Settings, actor: audit.Actor, hold_id: int, out: Path) -> Summary:
    """The evidence ZIP of an active legal hold's reads, recorded under the hold's own purpose and
    case number (hold.export). A released hold is refused: its data is no longer kept as evidence."""

    def active() -> LegalHold:
        hold = LegalHold.get_or_none(LegalHold.id == hold_id)
        if hold is None:
            raise HoldError(f"there is no hold {hold_id}")
        if hold.released_at is not None:
            raise HoldError(
                f"hold {hold.id} was released on {hold.released_at:%Y-%m-%d %H:%M} UTC by "
                f"{hold.released_by}: only an active hold can produce an export. Nothing was exported."
            )
        return hold

    hold = active()
    lines = [
        f"Legal hold:        {hold.id} ({hold.kind}), case {hold.case_number}",
        f"Reason:            {hold.reason}",
        f"Reads selected by: {hold.query}",
        f"Placed by:         {hold.placed_by} ({hold.placed_org}) on {hold.placed_at:%Y-%m-%d %H:%M} UTC",
    ]
    reason = Reason(
        action="hold.export",
        purpose=audit.Purpose(hold.purpose_code, hold.case_number),
        query={"hold": hold.id, **hold.query_record, "plates": _held_plates(hold.id)},
        objects=[f"hold:{hold.id}"],
        subject=f"legal hold {hold.id}",
        statement=lines,
        still_allowed=active,
    )
    return build_zip(settings, actor, _held_reads(hold.id), reason, out=out)
