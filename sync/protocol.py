"""The batch format, used by both ends (the post writes it, headquarters reads it).

A batch is gzip'd JSON lines, one object per line, canonical JSON (sorted keys, no spaces):

    {"t": "header", "format": "waypost-batch/1", "post": ID, "batch": UUID,
     "first_seq": N, "last_seq": M,          # a contiguous range of the post's outbox sequence
                                             # (last_seq = first_seq - 1: no reads, records only)
     "chain": {"first_seq": A, "last_seq": B, "prev_hash": H},   # the access records carried;
                                             # H is the hash of record A - 1 (what HQ already holds)
     "confirmations": {"after": C, "upto": D},  # alert confirmations (by id) this batch accounts for
     "created_at": ISO, "key_id": ..., "backlog": reads still waiting after this batch}
    {"t": "read", "seq": S, "read": {...}, "images": [{kind, sha256, content_type, width, height,
                                                        bytes, data (base64)}], "alerts": [...]}
    ...
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
import gzip
import hashlib
import json
import re
import zlib

from cryptography.exceptions import InvalidSignature

FORMAT = "waypost-batch/1"
MAGIC = FORMAT.encode() + b"\n"
CONTENT_TYPE = "application/x-waypost-batch+gzip"
MAX_LINE_BYTES = 32 * 1024 * 1024
# Every whole number a batch carries ends up in a BIGINT column (or is compared with one): a larger
# one is refused as malformed rather than overflowing the database driver.
MAX_INT = 2 ** 63 - 1
# JSON may escape a UTF-16 surrogate on its own ("\ud800"), which parses to a str no UTF-8 encoder
# (hashing, SQLite, PostgreSQL) accepts. Lines that contain such an escape are checked in full.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

# problem -> HTTP status headquarters answers with. Every refusal names one of these.
PROBLEMS = {
    "malformed": 400,
    "bad_signature": 403,
    "unknown_post": 404,
    "gap": 409,
    "overlap": 409,
    "broken_chain": 409,
    "replay": 409,
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
        self._out.write(self._z.compress(canonical_line({"t": "end", "sha256": digest.hex(),
                                                         "signature": base64.b64encode(signature).decode()})))
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
                raise ProtocolError("malformed", f"the body is not a complete gzip stream "
                                                 f"(after line {self.lines}): {exc}") from None
            if not data:
                raise ProtocolError("malformed", f"the batch ends after line {self.lines} without its signed trailer")
            self.lines += 1
            self.bytes += len(data)
            if self.bytes > self.max_bytes:
                raise ProtocolError("oversized", f"the batch unpacks to more than {self.max_bytes} bytes "
                                                 f"(at line {self.lines})")
            if not data.endswith(b"\n"):
                raise ProtocolError("malformed", f"line {self.lines} is longer than {MAX_LINE_BYTES} bytes "
                                                 "or not terminated")
            try:
                obj = json.loads(data)
            except ValueError as exc:
                raise ProtocolError("malformed", f"line {self.lines} is not JSON: {exc}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
                raise ProtocolError("malformed", f"line {self.lines} is not an object with a type \"t\"")
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
            raise ProtocolError("bad_signature", "the trailer's sha256 does not match the batch's lines "
                                                 "(altered or truncated in transit)")
        try:
            signature = base64.b64decode(self.trailer.get("signature") or "", validate=True)
            public_key.verify(signature, signed_message(digest))
        except (InvalidSignature, ValueError, TypeError):
            raise ProtocolError("bad_signature", "the signature does not verify with the post's enrolled public key")


def header_fields(header: dict) -> dict:
    """The header's fields, checked for type and range; raises ProtocolError naming the bad one."""
    if header.get("format") != FORMAT:
        raise ProtocolError("malformed", f"unsupported format {header.get('format')!r}; this headquarters reads {FORMAT}")
    for name in ("post", "batch"):
        if not isinstance(header.get(name), str) or not header[name] or len(header[name]) > 100:
            raise ProtocolError("malformed", f"header field {name!r} must be a non-empty string")
    for name in ("first_seq", "last_seq"):
        if not is_whole(header.get(name)):
            raise ProtocolError("malformed", f"header field {name!r} must be a whole number 0..{MAX_INT}")
    if header["last_seq"] < header["first_seq"] - 1 or header["first_seq"] < 1:
        raise ProtocolError("malformed", f"header range [{header['first_seq']}, {header['last_seq']}] is not a range")
    chain = header.get("chain")
    if (not isinstance(chain, dict) or not is_whole(chain.get("first_seq")) or not is_whole(chain.get("last_seq"))
            or not isinstance(chain.get("prev_hash"), str) or chain["first_seq"] < 1
            or chain["last_seq"] < chain["first_seq"] - 1):
        raise ProtocolError("malformed", f"header field 'chain' must be {{first_seq, last_seq, prev_hash}} with a "
                                         f"range of whole numbers 0..{MAX_INT}")
    confirmations = header.get("confirmations")
    if confirmations is not None and (not isinstance(confirmations, dict)
                                      or not is_whole(confirmations.get("after"))
                                      or not is_whole(confirmations.get("upto"))
                                      or confirmations["upto"] < confirmations["after"]):
        raise ProtocolError("malformed", f"header field 'confirmations' must be {{after, upto}} with after <= upto, "
                                         f"whole numbers 0..{MAX_INT}")
    if header.get("backlog") is not None and not is_whole(header["backlog"]):
        raise ProtocolError("malformed", f"header field 'backlog' must be a whole number 0..{MAX_INT}")
    return header


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_whole(value, top: int = MAX_INT) -> bool:
    """A whole number 0..top (by default what a BIGINT column holds)."""
    return _is_int(value) and 0 <= value <= top


def _check_text(obj, line: int) -> None:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ProtocolError("malformed", f"line {line} holds a lone UTF-16 surrogate escape "
                                         f"({exc.object[exc.start:exc.end]!r}), which is not text") from None


def decode_image(image: dict, where: str) -> bytes:
    try:
        data = base64.b64decode(image["data"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("malformed", f"{where}: image data is missing or not base64") from None
    if hashlib.sha256(data).hexdigest() != image.get("sha256"):
        raise ProtocolError("malformed", f"{where}: image {image.get('kind')!r} does not match its sha256")
    return data


def content_hash(read: dict, images: list[dict]) -> str:
    """What headquarters compares to tell 'the same read again' from 'a different read'."""
    meta = sorted(({k: v for k, v in im.items() if k != "data"} for im in images), key=lambda m: m.get("kind", ""))
    return hashlib.sha256(canonical_line({"read": read, "images": meta})).hexdigest()


# --- pull: headquarters asks a post for its next batch ------------------------------------------

PULL_MAGIC = b"waypost-pull/1\n"
PULL_SKEW_S = 300


def pull_message(post_id: str, path_and_query: str, date: str) -> bytes:
    """What headquarters signs (and the post checks) for GET /sync/batch: the post, the exact
    path with its query (headquarters' position) and the time, so a request is good for one post,
    one position and a few minutes."""
    return PULL_MAGIC + "\n".join((post_id, path_and_query, date)).encode("utf-8")


# --- a post's requests to headquarters (position, hotlists) -------------------------------------

POST_GET_MAGIC = b"waypost-post-get/1\n"


def post_get_message(post_id: str, path_and_query: str, date: str) -> bytes:
    """What a post signs for a GET to headquarters (its position, the hotlists): the post, the exact
    path and the time. Hotlists are law-enforcement data: only enrolled posts may fetch them."""
    return POST_GET_MAGIC + "\n".join((post_id, path_and_query, date)).encode("utf-8")


def check_date(date: str) -> str | None:
    """None when `date` (YYYY-MM-DDTHH:MM:SSZ) is within PULL_SKEW_S of this clock, else why not."""
    import datetime as dt
    try:
        when = dt.datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return f"X-Waypost-Date {date[:40]!r} is not YYYY-MM-DDTHH:MM:SSZ"
    skew = abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds())
    if skew > PULL_SKEW_S:
        return f"X-Waypost-Date is {skew:.0f} s from this clock (at most {PULL_SKEW_S} s)"
    return None
