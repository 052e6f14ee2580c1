"""The batch format, used by both ends (the post writes it, headquarters reads it).

A batch is gzip'd JSON lines, one object per line, canonical JSON (sorted keys, no spaces):

    {"t": "header", "format": "waypost-batch/1", "post": ID, "batch": UUID,
     "first_seq": N, "last_seq": M,          # a contiguous range of the post's outbox sequence
                                             # (last_seq = first_seq - 1: no reads, records only)
     "chain": {"first_seq": A, "last_seq": B, "prev_hash": H},   # the access records carried;
                                             # H is the hash of record A - 1 (what HQ already holds)
     "confirmations": {"after": C, "upto": D},  # alert confirmations (by id) this batch accounts for
     "created_at": ISO, "key_id": ..., "backlog": reads still waiting after this batch,
     "frames": {"after": F, "upto": G}}     # optional: the frame lines carried (below)
    {"t": "read", "seq": S, "read": {...}, "images": [{kind, sha256, content_type, width, height,
                                                        bytes, data (base64)}], "alerts": [...]}
    ...                                      # a frame may come without its data: it follows in the
                                             # second lane, and its sha256 here is what it must match
    {"t": "frame", "seq": S, "read": UUID, "image": {kind: "frame", sha256, ..., data (base64)}}
    ...                                      # the second lane (sync/post.py): frames of reads
                                             # headquarters holds, seq in F+1..G, in seq order; a
                                             # batch of frames carries no read (first_seq = last_seq + 1)
    {"t": "hold", "seq": S, "event": "place", "hold": {id, kind, plate, mode, since, until, case_number,
                                                       purpose_code, reason, placed_by, placed_org,
                                                       placed_at, reads: [uuid, ...]}}
    {"t": "hold", "seq": S, "event": "release", "hold": {id, released_at, released_by, release_reason}}
    ...                                      # a legal hold placed or released at the post: an outbox
                                             # event like a read, in seq order among the reads
    {"t": "confirmation", "alert": {id, read_uuid, status, ..., "confirmations": [...]}}
    ...                                      # alerts confirmed after their read was sent
    {"t": "access", "record": {seq, at, ... prev_hash, hash}}
    ...
    {"t": "end", "sha256": hex, "signature": base64}

The trailer is not hashed: its sha256 is over the uncompressed bytes of every line before it and
its signature is the post's Ed25519 signature over MAGIC + that digest. So a batch is written and
read in one pass with bounded memory, whatever its size.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import json
import math
import os
import re
import threading
import time
import uuid as uuidlib
import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import TypeGuard

from cryptography.exceptions import InvalidSignature
from PIL import Image, UnidentifiedImageError

from appliance import untrusted_json
from appliance.audit import COLUMNS as RECORD_COLUMNS
from appliance.search import SearchError, normalise

FORMAT = "waypost-batch/1"
MAGIC = FORMAT.encode() + b"\n"
CONTENT_TYPE = "application/x-waypost-batch+gzip"
MAX_LINE_BYTES = 32 * 1024 * 1024
# Every whole number a batch carries ends up in a BIGINT column (or is compared with one): a larger
# one is refused as malformed rather than overflowing the database driver.
MAX_INT = 2**63 - 1
MAX_INT32 = 2**31 - 1  # INTEGER columns (image sizes, result_count) on PostgreSQL
# JSON may escape a UTF-16 surrogate on its own ("\ud800"), which parses to a str no UTF-8 encoder
# (hashing, SQLite, PostgreSQL) accepts. Lines that contain such an escape are checked in full.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

# problem -> HTTP status headquarters answers with. Every refusal names one of these.
PROBLEMS = {
    "malformed": 400,
    "unsigned": 401,  # a push without the signed X-Waypost-Push header (a post older than headquarters)
    "bad_signature": 403,
    # logged as such at headquarters, answered as bad_signature: whoever asks is not told which
    # post ids are enrolled (sync/hq/ingest.py authenticate)
    "unknown_post": 403,
    "gap": 409,
    "overlap": 409,
    "broken_chain": 409,
    "replay": 409,
    # a line naming another post than the batch's (issue 18): one post's reads never stored as another's
    "wrong_post": 409,
    # a post renamed at headquarters (`waypost hq rename`) still sending under its old id
    "renamed": 409,
    "oversized": 413,
}


class ProtocolError(ValueError):
    """A batch headquarters refuses: `problem` is a key of PROBLEMS, `message` says what and where."""

    def __init__(self, problem: str, message: str):
        super().__init__(f"{problem}: {message}")
        self.problem = problem
        self.message = message

    @property
    def http_status(self) -> int:
        return PROBLEMS[self.problem]


def canonical_line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"


def signed_message(digest: bytes) -> bytes:
    return MAGIC + digest


class Writer:
    """Writes one batch to a binary file object (anything with write()); call `finish(key)` once,
    at the end.

    The gzip stream is deflate's Huffman-only strategy: the bulk of a batch is the base64 of JPEG
    crops, which LZ matching cannot shorten but Huffman coding takes back to about 6 bits a
    character. That keeps 96% of what level 1 saves for a quarter of its time (the building post
    was spending a third of its time in deflate). Any gzip reader reads it."""

    def __init__(self, fileobj):
        self._out = fileobj
        self._z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 8, zlib.Z_HUFFMAN_ONLY)
        self._sha = hashlib.sha256()
        self.bytes = 0

    def line(self, obj) -> None:
        data = canonical_line(obj)
        self._sha.update(data)
        self._out.write(self._z.compress(data))
        self.bytes += len(data)

    def finish(self, private_key) -> str:
        digest = self._sha.digest()
        signature = private_key.sign(signed_message(digest))
        self._out.write(
            self._z.compress(
                canonical_line({"t": "end", "sha256": digest.hex(), "signature": base64.b64encode(signature).decode()})
            )
        )
        self._out.write(self._z.flush())
        return digest.hex()


class Reader:
    """Iterates the objects of a batch (header first, trailer excluded). After the iteration,
    `verify(public_key)` checks the signature. Every fault raises ProtocolError."""

    def __init__(self, fileobj, max_bytes: int):
        self._gz = gzip.GzipFile(fileobj=fileobj, mode="rb")
        self._sha = hashlib.sha256()
        self.max_bytes = max_bytes
        self.bytes = 0
        self.lines = 0
        self.trailer: dict | None = None

    def __iter__(self):
        while True:
            try:
                data = self._gz.readline(MAX_LINE_BYTES + 1)
            except (OSError, EOFError, zlib.error) as exc:
                raise ProtocolError(
                    "malformed", f"the body is not a complete gzip stream (after line {self.lines}): {exc}"
                ) from None
            if not data:
                raise ProtocolError("malformed", f"the batch ends after line {self.lines} without its signed trailer")
            self.lines += 1
            self.bytes += len(data)
            if self.bytes > self.max_bytes:
                raise ProtocolError(
                    "oversized", f"the batch unpacks to more than {self.max_bytes} bytes (at line {self.lines})"
                )
            if not data.endswith(b"\n"):
                raise ProtocolError(
                    "malformed", f"line {self.lines} is longer than {MAX_LINE_BYTES} bytes or not terminated"
                )
            try:
                obj = untrusted_json.loads(data)
            except untrusted_json.TooDeep as exc:
                raise ProtocolError("malformed", f"line {self.lines} holds {exc}") from None
            except ValueError as exc:
                raise ProtocolError("malformed", f"line {self.lines} is not JSON: {exc}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
                raise ProtocolError("malformed", f'line {self.lines} is not an object with a type "t"')
            if _SURROGATE_ESCAPE.search(data):
                _check_text(obj, self.lines)
            if self.lines == 1 and obj["t"] != "header":
                raise ProtocolError("malformed", "the first line is not the batch header")
            if obj["t"] == "end":
                self.trailer = obj
                try:
                    rest = self._gz.read(1)
                except (OSError, EOFError, zlib.error) as exc:
                    raise ProtocolError("malformed", f"the body is not a complete gzip stream: {exc}") from None
                if rest:
                    raise ProtocolError("malformed", f"data follows the trailer (line {self.lines})")
                return
            self._sha.update(data)
            yield obj

    def verify(self, public_key) -> None:
        if self.trailer is None:
            raise ProtocolError("malformed", "the batch has no trailer")
        digest = self._sha.digest()
        if self.trailer.get("sha256") != digest.hex():
            raise ProtocolError(
                "bad_signature",
                "the trailer's sha256 does not match the batch's lines (altered or truncated in transit)",
            )
        try:
            signature = base64.b64decode(self.trailer.get("signature") or "", validate=True)
            public_key.verify(signature, signed_message(digest))
        except (InvalidSignature, ValueError, TypeError):
            raise ProtocolError(
                "bad_signature", "the signature does not verify with the post's enrolled public key"
            ) from None


def header_fields(header: dict) -> dict:
    """The header's fields, checked for type and range; raises ProtocolError naming the bad one."""
    if header.get("format") != FORMAT:
        raise ProtocolError(
            "malformed", f"unsupported format {header.get('format')!r}; this headquarters reads {FORMAT}"
        )
    for name in ("post", "batch"):
        if not isinstance(header.get(name), str) or not header[name] or len(header[name]) > 100:
            raise ProtocolError("malformed", f"header field {name!r} must be a non-empty string")
    for name in ("first_seq", "last_seq"):
        if not is_whole(header.get(name)):
            raise ProtocolError("malformed", f"header field {name!r} must be a whole number 0..{MAX_INT}")
    if header["last_seq"] < header["first_seq"] - 1 or header["first_seq"] < 1:
        raise ProtocolError("malformed", f"header range [{header['first_seq']}, {header['last_seq']}] is not a range")
    chain = header.get("chain")
    if (
        not isinstance(chain, dict)
        or not is_whole(chain.get("first_seq"))
        or not is_whole(chain.get("last_seq"))
        or not isinstance(chain.get("prev_hash"), str)
        or chain["first_seq"] < 1
        or chain["last_seq"] < chain["first_seq"] - 1
    ):
        raise ProtocolError(
            "malformed",
            f"header field 'chain' must be {{first_seq, last_seq, prev_hash}} with a "
            f"range of whole numbers 0..{MAX_INT}",
        )
    confirmations = header.get("confirmations")
    if confirmations is not None and (
        not isinstance(confirmations, dict)
        or not is_whole(confirmations.get("after"))
        or not is_whole(confirmations.get("upto"))
        or confirmations["upto"] < confirmations["after"]
    ):
        raise ProtocolError(
            "malformed",
            f"header field 'confirmations' must be {{after, upto}} with after <= upto, whole numbers 0..{MAX_INT}",
        )
    if header.get("backlog") is not None and not is_whole(header["backlog"]):
        raise ProtocolError("malformed", f"header field 'backlog' must be a whole number 0..{MAX_INT}")
    frames = header.get("frames")
    if frames is not None and (
        not isinstance(frames, dict)
        or not is_whole(frames.get("after"))
        or not is_whole(frames.get("upto"))
        or not frames["after"] <= frames["upto"] <= header["last_seq"]
    ):
        raise ProtocolError(
            "malformed",
            f"header field 'frames' must be {{after, upto}} with after <= upto <= last_seq, whole numbers 0..{MAX_INT}",
        )
    return header


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def is_whole(value, top: int = MAX_INT) -> bool:
    """A whole number 0..top (by default what a BIGINT column holds)."""
    return is_int(value) and 0 <= value <= top


def _check_text(obj, line: int) -> None:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError(
            "malformed",
            f"line {line} holds a lone UTF-16 surrogate escape "
            f"({exc.object[exc.start : exc.end]!r}), which is not text",
        ) from None


def decode_image(image: dict, where: str) -> bytes:
    """An image's bytes, checked: base64, its sha256, its declared length, and a JPEG by its bytes
    (whatever type it declares) of the width and height it declares. Headquarters serves what it
    stores from its own origin, so anything else (a page, a script) is refused here."""
    try:
        data = base64.b64decode(image["data"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("malformed", f"{where}: image data is missing or not base64") from None
    if hashlib.sha256(data).hexdigest() != image.get("sha256"):
        raise ProtocolError("malformed", f"{where}: image {image.get('kind')!r} does not match its sha256")
    if image.get("bytes") != len(data):
        raise ProtocolError(
            "malformed", f"{where}: image bytes {_shown(image.get('bytes'))} is not its data's length ({len(data)})"
        )
    size = _jpeg_size(data)
    if isinstance(size, str):
        raise ProtocolError("malformed", f"{where}: image data ({image.get('kind')}) is not a JPEG: {size}")
    for name, real in zip(("width", "height"), size):
        if image.get(name) != real:
            raise ProtocolError(
                "malformed", f"{where}: image {name} {_shown(image.get(name))} is not the JPEG's ({real})"
            )
    return data


def _jpeg_size(data: bytes) -> tuple[int, int] | str:
    """(width, height) of a JPEG, checked as appliance/store.py's encode_jpeg checks the post's,
    after its start and end markers; else why it is not one."""
    if not (data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")):
        return "it does not start and end with JPEG's markers (SOI FFD8, EOI FFD9)"
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG":
                return f"it reads as {img.format}"
            img.verify()
            return img.size
    except UnidentifiedImageError:
        return "it is not an image Pillow recognises"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"it cannot be opened as an image ({str(exc)[:100]})"


def content_hash(read: dict, images: list[dict]) -> str:
    """What headquarters compares to tell 'the same read again' from 'a different read'."""
    meta = sorted(({k: v for k, v in im.items() if k != "data"} for im in images), key=lambda m: m.get("kind", ""))
    return hashlib.sha256(canonical_line({"read": read, "images": meta})).hexdigest()


# --- the lines of a batch, checked one by one ------------------------------------------------------


@dataclass
class ReadLine:
    seq: int
    read: dict
    images: list[dict]  # as sent, each with its base64 data (a frame to follow without)
    decoded: list[tuple[dict, bytes]]  # each image with its bytes, checked against its sha256
    to_follow: list[dict] | None = None  # a frame named without its data: it comes in the second lane


def read_line(item: dict, where: str, next_seq: int, last: int) -> ReadLine:
    """A read line: its seq in next_seq..last, every field of the read (READ_FIELDS) and every
    image (IMAGE_FIELDS, decode_image). Headquarters stores the read as sent and shows its fields,
    so a field it does not know is refused too. Raises ProtocolError (malformed) naming `where`
    and the field."""
    read, imgs, seq = item.get("read"), item.get("images", []), item.get("seq")
    if not isinstance(read, dict) or not isinstance(imgs, list) or not is_int(seq):
        raise ProtocolError("malformed", f"{where}: needs seq, read and images")
    if not next_seq <= seq <= last:
        raise ProtocolError("malformed", f"{where}: seq {seq} is outside the batch's range or out of order")
    for name in READ_REQUIRED:
        if name not in read:
            raise ProtocolError("malformed", f"{where}: read field {name!r} is missing")
    for name, value in read.items():
        check = READ_FIELDS.get(name)
        if check is None:
            raise ProtocolError("malformed", f"{where}: read field {name[:40]!r} is not a field of a read in {FORMAT}")
        ok, what = check
        if not ok(value):
            raise ProtocolError("malformed", f"{where}: read field {name!r} {what}, not {_shown(value)}")
    box = [read.get(name) for name in BOX_FIELDS]
    if None in box and any(v is not None for v in box):
        empty = BOX_FIELDS[box.index(None)]
        raise ProtocolError(
            "malformed", f"{where}: read field {empty!r} is empty but not the rest of the box (all four or none)"
        )
    where = f"{where}, read {read['uuid']}"
    kinds: set[str] = set()
    decoded = []
    to_follow: list[dict] = []
    for im in imgs:
        if not isinstance(im, dict):
            raise ProtocolError("malformed", f"{where}: an image is not an object")
        for name in im:
            if name not in IMAGE_FIELDS:
                raise ProtocolError("malformed", f"{where}: image field {name[:40]!r} is not a field of an image")
        kind = im.get("kind")
        if kind not in IMAGE_KINDS:
            raise ProtocolError("malformed", f"{where}: image kind {_shown(kind)} is neither crop nor frame")
        if kind in kinds:
            raise ProtocolError(
                "malformed", f"{where}: image kind {kind!r} comes twice (a read has at most one of each)"
            )
        kinds.add(kind)
        if im.get("content_type") != IMAGE_TYPE:
            raise ProtocolError(
                "malformed",
                f"{where}: image content_type {_shown(im.get('content_type'))} is not {IMAGE_TYPE} "
                "(a post stores JPEG only)",
            )
        for name in ("width", "height"):
            if not is_whole(im.get(name), MAX_INT32) or im[name] < 1:
                raise ProtocolError("malformed", f"{where}: image {name} must be a whole number 1..{MAX_INT32}")
        if "data" not in im and kind == "frame":
            to_follow.append(_named_frame(im, where))
            continue
        decoded.append((im, decode_image(im, where)))
    return ReadLine(seq, read, imgs, decoded, to_follow)


def _named_frame(im: dict, where: str) -> dict:
    """A frame a read line names without its data (it follows in the second lane): its sha256 and
    length, which the frame must match when it comes."""
    if not isinstance(im.get("sha256"), str) or not _SHA256_HEX.fullmatch(im["sha256"]):
        raise ProtocolError("malformed", f"{where}: a frame to follow needs its sha256 (64 lower-case hex digits)")
    if not is_whole(im.get("bytes"), MAX_INT32) or im["bytes"] < 1:
        raise ProtocolError("malformed", f"{where}: a frame to follow needs its bytes (a whole number 1..{MAX_INT32})")
    return im


@dataclass
class FrameLine:
    seq: int
    read_uuid: str
    image: dict  # as sent, with its base64 data
    data: bytes  # checked against the image's sha256, length, width and height


def frame_line(item: dict, where: str, next_seq: int, frames: dict) -> FrameLine:
    """A frame line of the second lane: its seq in next_seq..frames["upto"] (seq order), the read's
    uuid and the frame (decode_image). Whether it is the frame its read named is headquarters' to
    judge (sync/hq/ingest.py). Raises ProtocolError (malformed) naming `where`."""
    seq, read_uuid, image = item.get("seq"), item.get("read"), item.get("image")
    if not is_int(seq) or not next_seq <= seq <= frames["upto"]:
        raise ProtocolError(
            "malformed",
            f"{where}: seq {str(seq)[:20]} is outside the header's frames {frames['after'] + 1}..{frames['upto']} "
            "or out of order",
        )
    if not isinstance(read_uuid, str) or not 0 < len(read_uuid) <= 100:
        raise ProtocolError("malformed", f"{where}: needs the read's uuid (text of 1 to 100 characters)")
    if not isinstance(image, dict) or image.get("kind") != "frame" or any(n not in IMAGE_FIELDS for n in image):
        raise ProtocolError("malformed", f"{where}: needs the image, of kind frame, with the fields of an image")
    if image.get("content_type") != IMAGE_TYPE:
        raise ProtocolError(
            "malformed", f"{where}: image content_type {_shown(image.get('content_type'))} is not {IMAGE_TYPE}"
        )
    return FrameLine(seq, read_uuid, image, decode_image(image, f"{where}, read {read_uuid[:100]}"))


def read_alerts(item: dict, where: str) -> list[dict]:
    """The alerts a read line carries, each with its id, and text in every field headquarters shows."""
    alerts = item.get("alerts") or []
    if not isinstance(alerts, list) or any(not isinstance(a, dict) or not is_whole(a.get("id")) for a in alerts):
        raise ProtocolError("malformed", f"{where}: an alert needs an id (a whole number 0..{MAX_INT})")
    for alert in alerts:
        for name in ALERT_SHOWN:
            value = alert.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > 500):
                raise ProtocolError(
                    "malformed",
                    f"{where}: alert {alert['id']} field {name!r} must be text of at most 500 characters, "
                    f"not {_shown(value)}",
                )
    return alerts


# --- a read's fields, as the post writes them --------------------------------------------------------

IMAGE_TYPE = "image/jpeg"
IMAGE_KINDS = ("crop", "frame")
IMAGE_FIELDS = frozenset({"kind", "sha256", "content_type", "width", "height", "bytes", "data"})
BOX_FIELDS = ("box_x", "box_y", "box_w", "box_h")
ALERT_SHOWN = ("hotlist_name", "entry_plate", "entry_reason", "match_kind", "status")  # web/templates/hq/read.html

# A naive UTC datetime's isoformat() (sync/post.py): seconds always, microseconds when it has any,
# no zone. Headquarters' search compares these as text, so no other form of the same instant.
_POST_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?")
# What store.save_read takes (A-Z and 0-9), at most as long as a hold line's read plate.
_PLATE = re.compile(r"[A-Z0-9]{1,100}")
_CAMERA = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")  # appliance/config.py, post.camera_id
_REGION = re.compile(r"[A-Za-z0-9_-]{1,20}")  # the recognizer's state codes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shown(value: object) -> str:
    """A value from a batch, short enough for a refusal message and the batch log."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return repr(value[:40] if isinstance(value, str) else value)[:60]


def _post_time(value: object) -> bool:
    if not isinstance(value, str) or not _POST_TIME.fullmatch(value):
        return False
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _uuid(value: object) -> bool:
    try:
        return isinstance(value, str) and str(uuidlib.UUID(value)) == value
    except ValueError:
        return False


def _fraction(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _coordinate(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(most: int):
    return lambda value: isinstance(value, str) and 0 < len(value) <= most and not _CONTROL.search(value)


def _or_none(ok):
    return lambda value: value is None or ok(value)


def _alternative(value: object) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"text", "score"}
        and isinstance(value["text"], str)
        and bool(_PLATE.fullmatch(value["text"]))
        and _fraction(value["score"])
    )


_TIME = "must be a UTC time as the post writes it (YYYY-MM-DDTHH:MM:SS, then .ffffff if it has microseconds)"
_PLATE_TEXT = "must be a plate as the post stores it (A-Z and 0-9, 1 to 100 characters)"

# name -> (check, what it must be). Every column of the post's read (appliance/models.py, Read)
# but its id; a column added there is refused here until headquarters is taught to check it.
READ_FIELDS: dict[str, tuple] = {
    "uuid": (_uuid, "must be the read's UUID (lower-case, hyphenated)"),
    "post_id": (_text(100), "must be text of 1 to 100 characters"),
    "camera_id": (
        lambda v: isinstance(v, str) and bool(_CAMERA.fullmatch(v)),
        "must be a camera id (a-z, 0-9 and '-', at most 40, as post.camera_id)",
    ),
    "captured_at": (_post_time, _TIME),
    "first_seen_at": (_or_none(_post_time), _TIME),
    "last_seen_at": (_or_none(_post_time), _TIME),
    "created_at": (_or_none(_post_time), _TIME),
    "plate_raw": (lambda v: isinstance(v, str) and bool(_PLATE.fullmatch(v)), _PLATE_TEXT),
    "plate": (lambda v: isinstance(v, str) and bool(_PLATE.fullmatch(v)), _PLATE_TEXT),
    "region": (
        _or_none(lambda v: isinstance(v, str) and bool(_REGION.fullmatch(v))),
        "must be empty or a state code (letters, digits, '_' and '-', at most 20)",
    ),
    "region_confidence": (_or_none(_fraction), "must be empty or a number 0..1"),
    "confidence": (_fraction, "must be a number 0..1"),
    "char_confidences": (
        lambda v: isinstance(v, list) and len(v) <= 100 and all(_fraction(c) for c in v),
        "must be a list of at most 100 numbers 0..1",
    ),
    "alternatives": (
        lambda v: isinstance(v, list) and len(v) <= 50 and all(_alternative(a) for a in v),
        "must be a list of at most 50 {text, score}: a plate (A-Z and 0-9, 1 to 100) and a number 0..1",
    ),
    **{
        name: (
            _or_none(lambda v, lo=lo: is_int(v) and lo <= v <= MAX_INT32),
            f"must be empty or a whole number {lo}..{MAX_INT32}",
        )
        for name, lo in (("box_x", -MAX_INT32), ("box_y", -MAX_INT32), ("box_w", 0), ("box_h", 0))
    },
    "corners": (
        _or_none(
            lambda v: (
                isinstance(v, list)
                and len(v) == 4
                and all(isinstance(c, list) and len(c) == 2 and all(_coordinate(x) for x in c) for c in v)
            )
        ),
        "must be empty or four [x, y] pairs of numbers",
    ),
    "direction": (_or_none(_text(40)), "must be empty or text of 1 to 40 characters"),
    "low_confidence": (lambda v: isinstance(v, bool), "must be true or false"),
    "evidence_note": (_or_none(_text(1000)), "must be empty or text of 1 to 1000 characters"),
    # optional (posts before issue 19 send no such field); headquarters keeps it in the read's data
    "clock_synced": (_or_none(lambda v: isinstance(v, bool)), "must be empty, true or false"),
}
READ_REQUIRED = ("uuid", "captured_at", "plate", "camera_id", "confidence")


def confirmation_line(item: dict, line: int) -> dict:
    """A confirmation line: the alert, with its id and its read's uuid."""
    alert = item.get("alert")
    if not isinstance(alert, dict) or not is_whole(alert.get("id")) or not isinstance(alert.get("read_uuid"), str):
        raise ProtocolError(
            "malformed",
            f"line {line} (confirmation): needs the alert with its id (a whole number 0..{MAX_INT}) and read_uuid",
        )
    return alert


def access_line(item: dict, where: str, want_record: int, chain: dict) -> dict:
    """An access-record line: every column, the seq due next (`want_record`, within the header's
    chain range), a result count that fits, text everywhere else. Whether it links to the chain
    is headquarters' to judge (sync/hq/ingest.py)."""
    rec = item.get("record")
    if not isinstance(rec, dict) or any(c not in rec for c in RECORD_COLUMNS):
        raise ProtocolError("malformed", f"{where}: needs every column of an access record")
    if not is_int(rec["seq"]) or rec["seq"] != want_record or rec["seq"] > chain["last_seq"]:
        raise ProtocolError(
            "malformed",
            f"{where}: seq {str(rec['seq'])[:30]} where {want_record} was due "
            f"(the header says {chain['first_seq']}..{chain['last_seq']})",
        )
    if rec["result_count"] is not None and not is_whole(rec["result_count"], MAX_INT32):
        raise ProtocolError("malformed", f"{where}: result_count must be empty or a whole number 0..{MAX_INT32}")
    for name in RECORD_COLUMNS:
        if name not in ("seq", "result_count") and not isinstance(rec[name], str):
            raise ProtocolError("malformed", f"{where}: field {name!r} must be text")
    return rec


# A hold placed at a post is on one of the post's searches.
HOLD_MODES = ("exact", "wildcard", "partial", "similar")


def hold_line(item: dict, where: str, next_seq: int, last: int) -> tuple[int, dict]:
    """A legal-hold line: its seq in next_seq..last and the event (hold_event)."""
    seq = item.get("seq")
    if not is_int(seq) or not next_seq <= seq <= last:
        raise ProtocolError("malformed", f"{where}: seq {str(seq)[:20]} is outside the batch's range or out of order")
    return seq, hold_event(item, where)


def _bad(where: str, field: str, what: str) -> ProtocolError:
    return ProtocolError("malformed", f"{where}: hold field {field!r} {what}")


def _text_field(hold: dict, name: str, where: str, empty: bool = False, most: int = 500) -> str:
    value = hold.get(name)
    if not isinstance(value, str) or (not empty and not value.strip()) or len(value) > most:
        raise _bad(where, name, f"must be a {'' if empty else 'non-empty '}string of at most {most} characters")
    return value


def _time_field(hold: dict, name: str, where: str) -> dt.datetime:
    value = hold.get(name)
    try:
        when = dt.datetime.fromisoformat(str(value).removesuffix("Z")) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None:
        raise _bad(where, name, f"must be an ISO date and time (UTC), not {str(value)[:40]!r}")
    return when.replace(tzinfo=None) if when.tzinfo is None else when.astimezone(dt.UTC).replace(tzinfo=None)


def hold_event(item: dict, where: str) -> dict:
    """A batch's hold line, checked: the event ("place" or "release") and the hold's fields (its
    capture period as naive UTC datetimes). Raises ProtocolError (malformed) naming `where` and the field."""
    event, hold = item.get("event"), item.get("hold")
    if event not in ("place", "release"):
        raise ProtocolError("malformed", f"{where}: hold event {str(event)[:20]!r} is neither place nor release")
    if not isinstance(hold, dict):
        raise ProtocolError("malformed", f"{where}: the hold is not an object")
    if not isinstance(hold.get("id"), int) or isinstance(hold.get("id"), bool) or hold["id"] < 1:
        raise _bad(where, "id", "must be the post's hold id (a whole number >= 1)")
    if event == "release":
        return {
            "event": event,
            "id": hold["id"],
            "released_at": _time_field(hold, "released_at", where),
            "released_by": _text_field(hold, "released_by", where, most=200),
            "release_reason": _text_field(hold, "release_reason", where),
        }
    kind = hold.get("kind")
    if kind not in ("read", "query"):
        raise _bad(where, "kind", "must be read or query")
    mode = hold.get("mode")
    if mode not in HOLD_MODES:
        raise _bad(where, "mode", f"must be one of {', '.join(HOLD_MODES)}")
    plate = hold.get("plate")
    if kind == "read":
        # the held read's plate as the post stores it (A-Z and 0-9, no longest: it may be longer
        # than a search takes); "" when the read's row was gone at the post. Its uuid holds it.
        if (
            not isinstance(plate, str)
            or len(plate) > 100
            or (plate and not (plate.isalnum() and plate == plate.upper()))
        ):
            raise _bad(
                where,
                "plate",
                f"{str(plate)[:20]!r} is not a read's plate (upper-case letters and digits, at most 100)",
            )
        text = pattern = plate
    else:
        try:
            text = normalise(plate if isinstance(plate, str) else "", mode)
        except SearchError as exc:
            raise _bad(
                where,
                "plate",
                f"{str(plate)[:20]!r} is not a plate for {'an' if mode == 'exact' else 'a'} {mode} search: {exc}",
            ) from None
        pattern = {"wildcard": text.replace("*", "%").replace("?", "_"), "partial": f"%{text}%"}.get(mode, text)
    since, until = _time_field(hold, "since", where), _time_field(hold, "until", where)
    if since > until:
        raise _bad(where, "until", "is before its since")
    reads = hold.get("reads")
    if not isinstance(reads, list) or any(not isinstance(u, str) or not u or len(u) > 100 for u in reads):
        raise _bad(where, "reads", "must be a list of read uuids")
    return {
        "event": event,
        "id": hold["id"],
        "kind": kind,
        "plate": text,
        "mode": mode,
        "pattern": pattern,
        "since": since,
        "until": until,
        "case_number": _text_field(hold, "case_number", where, most=100),
        "purpose_code": _text_field(hold, "purpose_code", where, most=100),
        "reason": _text_field(hold, "reason", where),
        "placed_by": _text_field(hold, "placed_by", where, most=200),
        "placed_org": _text_field(hold, "placed_org", where, empty=True, most=200),
        "placed_at": _time_field(hold, "placed_at", where),
        "reads": sorted(set(reads)),
    }


# --- signed GETs: headquarters' pulls from a post, a post's GETs to headquarters ---------------
#
# Replay protection is a challenge, not a date window: before a signed GET the signer asks the
# receiver for a nonce (GET /sync/challenge on the post, GET /hq/v1/challenge at headquarters: 128
# random bits, base64url) and signs it with the path. The receiver takes each nonce it issued once,
# within NONCE_TTL_S by its own monotonic clock, and refuses any other as a replay. Chosen over a
# nonce the signer makes (remembered per signer with an expiry) and over a counter per signer:
#  - no wall clock is compared anywhere, so a post whose clock is hours off (no RTC, NTP failing:
#    the post that most needs to sync) is never refused for it; the signer's time is carried
#    (X-Waypost-Date) only to measure its clock's offset;
#  - nothing is persisted on either side: a receiver that restarts has forgotten the nonces it
#    issued, so a captured request is refused after a restart as before it (the nonce is unknown),
#    and the signer just asks for a new one; a counter would have to survive a post re-imaged or
#    restored from an older copy, which then could not sign at all;
#  - the store is bounded (NONCE_MOST, oldest forgotten first), so a flood of challenges costs
#    memory once; it can only make a genuine signer ask again.
# It costs one more round trip per GET, on the same connection. One headquarters process (waitress,
# any number of threads) holds its nonces; several processes behind one address would each need
# the same store.

PULL_MAGIC = b"waypost-pull/2\n"
POST_GET_MAGIC = b"waypost-post-get/2\n"
NONCE_HEADER = "X-Waypost-Nonce"
DATE_HEADER = "X-Waypost-Date"
NONCE_TTL_S = 300.0
NONCE_MOST = 10_000
_NONCE = re.compile(r"[A-Za-z0-9_-]{22}")


def new_nonce() -> str:
    """128 random bits, base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def pull_message(post_id: str, path_and_query: str, nonce: str, date: str) -> bytes:
    """What headquarters signs (and the post checks) for GET /sync/batch: the post, the exact path
    with its query (headquarters' position), the post's nonce and headquarters' time (carried, not
    checked), so a request is good for one post, one position and once."""
    return PULL_MAGIC + "\n".join((post_id, path_and_query, nonce, date)).encode("utf-8")


def post_get_message(post_id: str, path_and_query: str, nonce: str, date: str) -> bytes:
    """What a post signs for a GET to headquarters (its position, the hotlists): the post, the exact
    path, headquarters' nonce and the post's time. Hotlists are law-enforcement data: only enrolled
    posts may fetch them, and a captured request cannot fetch them again."""
    return POST_GET_MAGIC + "\n".join((post_id, path_and_query, nonce, date)).encode("utf-8")


def signed_time(date) -> dt.datetime | None:
    """The signer's time (YYYY-MM-DDTHH:MM:SSZ) as an aware datetime, or None when it is not one."""
    try:
        return dt.datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        return None


def offset_s(date: str) -> int | None:
    """The signer's clock minus this one (whole seconds) from its signed time, or None. The signed
    time is truncated to the second: half a second is added."""
    when = signed_time(date)
    return None if when is None else round((when - dt.datetime.now(dt.UTC)).total_seconds() + 0.5)


class Nonces:
    """The nonces a receiver issued and has not yet taken: each is good once, for `ttl_s` seconds
    of this process's monotonic clock; at most `most` are held (the oldest forgotten first)."""

    def __init__(self, ttl_s: float = NONCE_TTL_S, most: int = NONCE_MOST):
        self.ttl_s, self.most = ttl_s, most
        self._issued: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self) -> str:
        nonce = new_nonce()
        now = time.monotonic()
        with self._lock:
            self._issued[nonce] = now
            while self._issued and (
                len(self._issued) > self.most or now - next(iter(self._issued.values())) > self.ttl_s
            ):
                self._issued.popitem(last=False)
        return nonce

    def take(self, nonce: str) -> bool:
        """True once for a nonce issued within ttl_s; False for any other (a replay, or unknown)."""
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            return False
        with self._lock:
            issued = self._issued.pop(nonce, None)
        return issued is not None and time.monotonic() - issued <= self.ttl_s


REPLAY = (
    "the nonce of this request was not issued here or was used already (a replayed request, or one whose "
    "challenge is more than {ttl} s old or from before a restart): ask for a new challenge and sign again"
)


# --- a push: the post proves who sends a batch before headquarters reads a byte of it ----------------

PUSH_MAGIC = b"waypost-push/1\n"
PUSH_HEADER = "X-Waypost-Push"
SIGNATURE_HEADER = "X-Waypost-Signature"
MAX_PUSH_HEADER_CHARS = 2048
PUSH_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Deflate's Huffman-only coding (Writer) packs at most 8 characters into a byte, and a post's batch
# is mostly base64 (about 1.3); LZ-packed batches (a post's spooled batch from before Writer used
# Huffman-only) reach about 10 on access records. A body that unpacks further is not a post's batch
# but a decompression bomb: headquarters stops unpacking it there (sync/hq/ingest.py).
MAX_RATIO = 20
MIN_UNPACKED_LIMIT = 1024 * 1024  # a small batch (a header and a few records) may unpack to this much


def unpacked_limit(compressed: int | None, max_bytes: int) -> int:
    """The most a body of `compressed` bytes may unpack to: MAX_RATIO times its size (at least
    MIN_UNPACKED_LIMIT), and never more than four times the largest body headquarters takes."""
    most = 4 * max_bytes
    if compressed is None:
        return most
    return min(most, max(MIN_UNPACKED_LIMIT, MAX_RATIO * compressed))


@dataclass(frozen=True)
class Push:
    """What a post's X-Waypost-Push header says of the batch body it sends: the post, the batch and
    its outbox range (as in the batch's own header line), the body's length and sha256, and the
    post's clock when it signed (YYYY-MM-DDTHH:MM:SSZ).

    The header is canonical JSON (sorted keys, ASCII) signed as PUSH_MAGIC + its exact value, so
    headquarters checks who sends a body, and that the body is the one signed, before it unpacks
    or parses any of it. The time is carried, never checked: a replay is harmless (see
    sync/hq/ingest.py authenticate) and a post whose clock is off must still sync."""

    post: str
    batch: str
    first_seq: int
    last_seq: int
    length: int
    sha256: str
    date: str

    def value(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def push_message(value: str) -> bytes:
    """What the post signs for a push: the exact header value headquarters receives."""
    return PUSH_MAGIC + value.encode("ascii")


def push_headers(push: Push, private_key) -> dict[str, str]:
    """The request headers of a push: the claim and the post's Ed25519 signature over it."""
    value = push.value()
    return {PUSH_HEADER: value, SIGNATURE_HEADER: base64.b64encode(private_key.sign(push_message(value))).decode()}


def parse_push(value: str) -> Push:
    """The X-Waypost-Push header checked for form (its signature is headquarters' to check, with
    the key of the post it names). Raises ProtocolError (malformed) naming the field."""
    if len(value) > MAX_PUSH_HEADER_CHARS or not value.isascii():
        raise ProtocolError(
            "malformed", f"the {PUSH_HEADER} header is not ASCII of at most {MAX_PUSH_HEADER_CHARS} characters"
        )
    try:
        fields = json.loads(value)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise ProtocolError("malformed", f"the {PUSH_HEADER} header is not a JSON object: {value[:60]!r}")
    for name in ("post", "batch"):
        text = fields.get(name)
        # printable (no control character, no lone surrogate): the names go to the logs as they are
        if not isinstance(text, str) or not 0 < len(text) <= 100 or not text.isprintable():
            raise ProtocolError(
                "malformed", f"{PUSH_HEADER} field {name!r} must be printable text of 1 to 100 characters"
            )
    for name in ("first_seq", "last_seq", "length"):
        if not is_whole(fields.get(name)):
            raise ProtocolError("malformed", f"{PUSH_HEADER} field {name!r} must be a whole number 0..{MAX_INT}")
    if fields["first_seq"] < 1 or fields["last_seq"] < fields["first_seq"] - 1:
        raise ProtocolError(
            "malformed", f"{PUSH_HEADER} range [{fields['first_seq']}, {fields['last_seq']}] is not a range"
        )
    if not isinstance(fields.get("sha256"), str) or not _SHA256_HEX.fullmatch(fields["sha256"]):
        raise ProtocolError("malformed", f"{PUSH_HEADER} field 'sha256' must be 64 lower-case hex digits")
    if signed_time(fields.get("date")) is None:
        raise ProtocolError("malformed", f"{PUSH_HEADER} field 'date' must be YYYY-MM-DDTHH:MM:SSZ (UTC)")
    # fields a later version may add are signed with the rest and ignored here
    return Push(
        fields["post"],
        fields["batch"],
        fields["first_seq"],
        fields["last_seq"],
        fields["length"],
        fields["sha256"],
        fields["date"],
    )
