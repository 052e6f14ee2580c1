"""The post's side of sync: build batches from the outbox and the access log, push them to
headquarters, and mark a range sent only once headquarters has acknowledged it.

Where to start is headquarters' word, not the post's: each push first asks headquarters for its
position (the outbox seq and access record it holds up to, with that record's hash) and builds
from there. So a headquarters restored from an old backup gets back what it lost, and the outbox's
sent marks are brought in line with it (unmarked above its position, so retention keeps them).

A built batch is written to <data_dir>/sync/unacked.batch (complete and fsynced, then renamed)
and sent again, byte for byte, until headquarters answers for it: if headquarters stored it but
the answer was lost, the second delivery is acknowledged as a duplicate.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import fcntl
import gzip
import hashlib
import http.client
import io
import json
import logging
import os
import random
import tempfile
import threading
import time
import urllib.parse
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

from appliance import audit, bundle, db, holds, hotlist
from appliance.audit import system_actor
from appliance.config import Settings
from appliance.models import Alert, AlertConfirmation, Evidence, Hotlist, Read, database, utcnow
from appliance.store import EvidenceStore, StoreError
from sync import protocol, tls

log = logging.getLogger(__name__)

MAX_RECORDS_PER_BATCH = 5000
READ_CHUNK = 100
SEND_BLOCK_BYTES = 1024 * 1024


class SyncError(RuntimeError):
    """Headquarters could not be reached or answered oddly: try again later."""


class Diverged(SyncError):
    """Headquarters holds more of this post than this post has: its database was restored from an
    older copy (or replaced). Nothing is marked sent and nothing is sent (README 'Rolling back')."""

    def __init__(self, message: str):
        self.problem = "restored"
        super().__init__(message)


class Refused(SyncError):
    def __init__(self, status: int, answer: dict):
        self.status = status
        self.problem = answer.get("problem", "?")
        self.message = answer.get("message", "")
        self.position = answer.get("position")
        super().__init__(f"headquarters refused ({status} {self.problem}): {self.message}")


@dataclass
class Position:
    last_seq: int
    chain_seq: int
    chain_hash: str
    confirmation_id: int = 0
    # the read headquarters holds under its highest outbox seq (0 and "" from a headquarters that
    # does not say). Not compared: a batch built after a position depends only on the fields above
    last_read_seq: int = field(default=0, compare=False)
    last_read_uuid: str = field(default="", compare=False)
    # the outbox seq up to which headquarters holds the frames sent in the second lane; None from a
    # headquarters that does not say (it takes frames only with their reads: no second lane)
    frame_seq: int | None = None

    @classmethod
    def of(cls, answer) -> Position:
        """From headquarters' answer (a dict, or the pull request's query arguments)."""
        try:
            return cls(
                int(answer["last_seq"]),
                int(answer["chain_seq"]),
                str(answer["chain_hash"]),
                int(answer.get("confirmation_id", 0)),
                int(answer.get("last_read_seq", 0)),
                str(answer.get("last_read_uuid", "")),
                None if answer.get("frame_seq") in (None, "") else int(answer["frame_seq"]),
            )
        except (KeyError, TypeError, ValueError):
            raise SyncError(f"headquarters sent no usable position: {answer!r}") from None


@dataclass
class PushResult:
    batches: int = 0
    duplicates: int = 0
    reads: int = 0
    records: int = 0
    holds: int = 0
    bytes: int = 0
    position: Position | None = None
    notes: list[str] = field(default_factory=list)
    frames: int = 0  # frames sent in the second lane

    def lines(self) -> list[str]:
        pos = self.position
        out = [
            f"sent {self.batches} batch(es): {self.reads} read(s), {self.records} access record(s), "
            f"{self.bytes} bytes; {self.duplicates} acknowledged as already held"
        ]
        if self.holds:
            out.append(f"{self.holds} legal hold event(s) (placed or released here) sent with them")
        if self.frames:
            out.append(f"{self.frames} frame(s) of reads sent before, in the second lane")
        if pos is not None:
            out.append(f"headquarters holds outbox seq up to {pos.last_seq} and access records up to {pos.chain_seq}")
        return out + self.notes


# --- talking to headquarters -------------------------------------------------------------------


@overload
def _request(
    settings: Settings,
    method: str,
    path: str,
    body=None,
    length: int | None = None,
    timeout_s: float = 120,
    raw: Literal[False] = False,
) -> tuple[int, dict]: ...


@overload
def _request(
    settings: Settings,
    method: str,
    path: str,
    body=None,
    length: int | None = None,
    timeout_s: float = 120,
    *,
    raw: Literal[True],
) -> tuple[int, dict | bytes]: ...


def _request(
    settings: Settings,
    method: str,
    path: str,
    body=None,
    length: int | None = None,
    timeout_s: float = 120,
    raw: bool = False,
) -> tuple[int, dict | bytes]:
    """One request to headquarters, signed with the post's key: a GET (post_get_message), or a
    batch `body` (bytes, or a binary file at its start) with its X-Waypost-Push header
    (_push_headers). Returns (status, JSON object) or, with raw, (status, bytes) for a 200."""
    url = urllib.parse.urlsplit(settings.sync.hq_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise SyncError(f"sync.hq_url {settings.sync.hq_url!r} is not an http(s) URL")
    try:
        cls = _hq_trust(settings).connection_for(url.scheme, settings.sync.hq_url)
    except tls.TrustError as exc:
        raise SyncError(str(exc)) from None
    # large send blocks: the body goes out in a few system calls, not one per 8 KiB (each of which
    # would wait for the GIL while the next batch is built in another thread)
    conn = _paced(cls, settings.sync.max_kbps)(url.hostname, url.port, timeout=timeout_s, blocksize=SEND_BLOCK_BYTES)
    full_path = url.path.rstrip("/") + path
    headers = {"Accept": "application/json"}
    try:
        if body is not None:
            headers.update({"Content-Type": protocol.CONTENT_TYPE, "Content-Length": str(length)})
            headers.update(_push_headers(settings, body, length))
        else:
            headers.update(_signed_get_headers(settings, conn, url.path.rstrip("/"), full_path))
        sent = time.time()
        conn.request(method, full_path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        _measure_clock(settings, response.getheader("Date"), sent, time.time())
    except tls.TrustError as exc:  # before OSError: the message says what to set, not "did not answer"
        raise SyncError(str(exc)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise SyncError(
            f"headquarters at {settings.sync.hq_url} did not answer {method} {path}: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        conn.close()
    if raw and response.status == 200:
        return response.status, data
    try:
        answer = json.loads(data) if data else {}
    except ValueError:
        answer = {}
    if response.status >= 500 or not isinstance(answer, dict):
        if isinstance(answer, dict) and answer.get("problem") == "busy":
            raise SyncError(f"headquarters answered {response.status} to {method} {path}: {answer.get('message')}")
        raise SyncError(f"headquarters answered {response.status} to {method} {path}: {data[:200]!r}")
    return response.status, answer


def _hq_trust(settings: Settings) -> tls.Trust:
    pins = (settings.sync.pin_sha256,) if settings.sync.pin_sha256 else ()
    return tls.Trust(settings.sync.ca_file, pins, "sync.ca_file", "sync.pin_sha256")


def _signed_get_headers(settings: Settings, conn, base: str, full_path: str) -> dict[str, str]:
    """The headers of a signed GET: a nonce asked of headquarters on the same connection
    (sync/protocol.py, 'signed GETs'), this post's time, and the post's signature over both with the
    path. Raises SyncError when headquarters gives no nonce."""
    conn.request("GET", base + "/hq/v1/challenge", headers={"Accept": "application/json"})
    response = conn.getresponse()
    data = response.read()
    try:
        nonce = json.loads(data)["nonce"] if response.status == 200 else None
    except (ValueError, KeyError, TypeError):
        nonce = None
    if not isinstance(nonce, str):
        raise SyncError(
            f"headquarters at {settings.sync.hq_url} gave no challenge ({response.status}: {data[:200]!r}); "
            "it may run an older Waypost than this post"
        )
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = bundle.post_key(settings).sign(protocol.post_get_message(settings.post.id, full_path, nonce, date))
    return {
        protocol.NONCE_HEADER: nonce,
        protocol.DATE_HEADER: date,
        "X-Waypost-Signature": base64.b64encode(signature).decode(),
    }


# --- sync.max_kbps: a cap on what this post sends ----------------------------------------------------

PACE_PIECE = 16 * 1024  # bytes written to the socket at a time under a cap


class _Bucket:
    """A token bucket of `rate` bytes per second, a tenth of a second deep (at least a piece): the
    bytes this process sends to headquarters, every connection together."""

    def __init__(self, rate: float):
        self.rate = rate
        self.depth = max(PACE_PIECE, rate / 10)
        self.tokens = self.depth
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n: int) -> None:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.depth, self.tokens + (now - self.at) * self.rate) - n
            self.at = now
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


_buckets: dict[int, _Bucket] = {}
_buckets_lock = threading.Lock()


def _bucket(max_kbps: int) -> _Bucket:
    with _buckets_lock:
        if max_kbps not in _buckets:
            _buckets[max_kbps] = _Bucket(max_kbps * 1000 / 8)
        return _buckets[max_kbps]


def _paced(cls: type[http.client.HTTPConnection], max_kbps: int) -> type[http.client.HTTPConnection]:
    """`cls`, or with sync.max_kbps set a subclass whose socket writes (the request line, its headers
    and its body, counted before TLS adds its few percent) wait for the token bucket."""
    if max_kbps <= 0:
        return cls
    bucket = _bucket(max_kbps)

    class Paced(cls):  # type: ignore[valid-type, misc]  # a subclass of whichever connection class
        def send(self, data) -> None:
            if hasattr(data, "read"):
                while block := data.read(self.blocksize):
                    self.send(block)
                return
            if not isinstance(data, bytes | bytearray | memoryview):
                for part in data:  # an iterable body
                    self.send(part)
                return
            view = memoryview(data)
            for start in range(0, len(view), PACE_PIECE):
                piece = view[start : start + PACE_PIECE]
                bucket.take(len(piece))
                super().send(piece)

    return Paced


def _push_headers(settings: Settings, body, length: int | None) -> dict[str, str]:
    """The signed X-Waypost-Push header of a batch body (bytes, or a binary file at its start, left
    there): this post, the batch and its range from the body's own header line, the body's length
    and sha256, and this clock. Headquarters checks it before it reads the body (sync/hq/ingest.py
    authenticate); the trailer inside the batch still proves its content."""
    stream = io.BytesIO(body) if isinstance(body, bytes | bytearray) else body
    start = stream.tell()
    digest, size = hashlib.sha256(), 0
    while block := stream.read(SEND_BLOCK_BYTES):
        digest.update(block)
        size += len(block)
    stream.seek(start)
    try:
        with gzip.GzipFile(fileobj=stream, mode="rb") as gz:
            header = protocol.header_fields(json.loads(gz.readline(1 << 16)))
    except (OSError, EOFError, ValueError, TypeError, AttributeError, protocol.ProtocolError) as exc:
        raise SyncError(f"the batch to send has no readable header line ({exc}); it was not sent") from None
    finally:
        stream.seek(start)
    if length is not None and length != size:
        raise SyncError(f"the batch to send is {size} bytes, not {length} as given; it was not sent")
    push = protocol.Push(
        settings.post.id,
        header["batch"],
        header["first_seq"],
        header["last_seq"],
        size,
        digest.hexdigest(),
        dt.datetime.now(dt.UTC).strftime(protocol.PUSH_DATE_FORMAT),
    )
    return protocol.push_headers(push, bundle.post_key(settings))


def fetch_position(settings: Settings) -> Position:
    status, answer = _request(
        settings, "GET", f"/hq/v1/posts/{urllib.parse.quote(settings.post.id)}/position", timeout_s=30
    )
    if status != 200:
        raise Refused(status, answer)
    return Position.of(answer)


def fetch_hotlists(settings: Settings) -> list[str]:
    """Import each list headquarters publishes that is new or changed here (a state list is
    replaced whole, all or nothing, with its own access record). Returns one line per list."""

    quoted = urllib.parse.quote(settings.post.id)
    status, answer = _request(settings, "GET", f"/hq/v1/posts/{quoted}/hotlists", timeout_s=60)
    if status != 200:
        raise Refused(status, answer)
    lines = []
    for item in answer.get("hotlists") or []:
        name, sha = str(item.get("name", "")), str(item.get("sha256", ""))
        local = Hotlist.get_or_none(Hotlist.name == name)
        if local is not None and local.source_sha256 == sha:
            continue
        status, data = _request(
            settings, "GET", f"/hq/v1/posts/{quoted}/hotlists/{urllib.parse.quote(name)}", timeout_s=300, raw=True
        )
        if status != 200 or not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != sha:
            lines.append(
                f"hotlist {name}: not fetched (headquarters answered {status} or the file did not match its sha256)"
            )
            continue
        with tempfile.TemporaryDirectory(dir=_spool(settings)) as tmp:
            path = Path(tmp) / f"{name}.csv"
            path.write_bytes(data)
            try:
                result = hotlist.import_csv(settings, path, name, system_actor(settings))
            except hotlist.HotlistError as exc:
                lines.append(f"hotlist {name}: not imported: {exc}")
                continue
        lines.append(f"hotlist {name}: {result.entries} entries from headquarters")
    return lines


# --- the outbox marks --------------------------------------------------------------------------


def divergence(pos: Position) -> str | None:
    """Why headquarters' position cannot be this post's history, or None when it can (see
    _divergence: the message only).

    Headquarters may hold less than the post (it was restored: the post sends it again), never
    more. If it holds an outbox seq the post never issued, an access record past the post's log,
    a different record under the same seq, or a read under a seq the post gave to another read or
    event, the post's database was restored from an older copy (README 'Rolling back'): its seqs
    were issued again to other reads and records. Marking by seq would then mark reads
    headquarters never got as sent (and retention would purge them), and the post's log would no
    longer link to headquarters' copy."""
    found = _divergence(pos)
    return None if found is None else found[1]


def _divergence(pos: Position) -> tuple[bool, str] | None:
    """(restored, message) when headquarters' position is not this post's history: restored is
    True when headquarters holds seqs this post never had or another read under a seq this post
    still has (only a restore does that: the log may show nothing if no access record was written
    since the copy), False when only the access record at its position differs (a restore, or this
    post's log rewritten: headquarters is told, by sending, and records a broken chain)."""
    issued = database.execute_sql(
        "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0), "
        "coalesce((SELECT max(seq) FROM outbox), 0))"
    ).fetchone()[0]
    head_seq, _head_hash = audit.head()
    problems = []
    if pos.last_seq > issued:
        problems.append(
            f"headquarters holds this post's outbox up to seq {pos.last_seq}, but this post has "
            f"issued seqs only up to {issued}"
        )
    if pos.chain_seq > head_seq:
        problems.append(
            f"headquarters holds this post's access log up to record {pos.chain_seq}, but this "
            f"post's log ends at record {head_seq}"
        )
    elif pos.chain_seq > 0:
        row = database.execute_sql("SELECT hash FROM access_record WHERE seq = ?", (pos.chain_seq,)).fetchone()
        if row is None or row[0] != pos.chain_hash:
            problems.append(
                f"access record {pos.chain_seq} at headquarters (hash {pos.chain_hash[:12]}...) is not "
                f"this post's record {pos.chain_seq} (hash {(row[0] if row else 'none')[:12]}...)"
            )
    reissued = False
    if pos.last_read_seq > 0 and pos.last_read_uuid:
        # a row gone (retention deletes it once sent) or never issued says nothing: the checks above
        row = database.execute_sql("SELECT kind, object_id FROM outbox WHERE seq = ?", (pos.last_read_seq,)).fetchone()
        if row is not None and (row[0] != "read" or row[1] != pos.last_read_uuid):
            reissued = True
            problems.append(
                f"headquarters holds read {pos.last_read_uuid} under outbox seq {pos.last_read_seq}, "
                f"but this post's outbox seq {pos.last_read_seq} is {row[0]} {row[1]}"
            )
    if not problems:
        return None
    if pos.last_seq > issued or pos.chain_seq > head_seq or reissued:
        return True, (
            "this post's database was restored from an older copy (or replaced) after it had sent "
            "more to headquarters: " + "; ".join(problems) + ". Nothing was marked sent and nothing "
            "was sent. Do not push from this post; see README 'Rolling back' for what to do "
            "(headquarters keeps what it holds). If this post was re-imaged (a fresh data directory and a "
            "new key), headquarters opens a new segment for it: `waypost hq rebase POST --public-key FILE "
            "--reason TEXT`."
        )
    return False, (
        "this post's access log is not the one headquarters holds: "
        + "; ".join(problems)
        + ". Its database was restored from an older copy, or its log was rewritten; nothing is "
        "marked sent here, and headquarters refuses its batches as a broken chain. See README "
        "'Rolling back'."
    )


def check_position(pos: Position) -> bool:
    """Raise Diverged when headquarters holds more than this post ever had (see divergence).
    False (mark nothing) when only the access record at its position differs: the post then
    sends as usual, and headquarters, which cannot tell a restored post from a rewritten log,
    refuses the batch as a broken chain and keeps that on record."""
    found = _divergence(pos)
    if found is None:
        return True
    restored, problem = found
    if restored:
        raise Diverged(problem)
    log.warning("%s", problem)
    return False


def reconcile(pos: Position) -> tuple[int, int]:
    """Bring the outbox's sent marks in line with headquarters' position: rows it holds are sent,
    rows above it are not (headquarters may have been restored from an older backup). Returns
    (marked, unmarked). Raises Diverged, marking nothing, when headquarters holds more than this
    post ever had (this post was restored from an older copy)."""
    with db.write():
        if not check_position(pos):
            return 0, 0
        marked = database.execute_sql(
            "UPDATE outbox SET sent_at = ? WHERE seq <= ? AND sent_at IS NULL", (utcnow(), pos.last_seq)
        ).rowcount
        unmarked = database.execute_sql(
            "UPDATE outbox SET sent_at = NULL, batch_id = NULL WHERE seq > ? AND sent_at IS NOT NULL", (pos.last_seq,)
        ).rowcount
    return marked, unmarked


def mark_acked(header: dict, pos: Position) -> None:
    upto = min(header["last_seq"], pos.last_seq)
    with db.write():
        database.execute_sql(
            "UPDATE outbox SET sent_at = ?, batch_id = ? WHERE seq >= ? AND seq <= ? AND sent_at IS NULL",
            (utcnow(), header["batch"], header["first_seq"], upto),
        )


# --- building a batch --------------------------------------------------------------------------


def _iso(value):
    return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else value


def _plain_dict(row: dict, skip=()) -> dict:
    return {k: _iso(v) for k, v in row.items() if k not in skip}


def _alert_dict(alert: dict) -> dict:
    """An alert as headquarters keeps it: its fields, its read's uuid and every confirmation."""
    read_uuid = Read.select(Read.uuid).where(Read.id == alert["read"]).scalar()
    confirmations = [
        _plain_dict(c, skip=("alert",))  # type: ignore[arg-type]  # peewee stubs: .dicts() yields dicts
        for c in AlertConfirmation.select()
        .where(AlertConfirmation.alert == alert["id"])
        .order_by(AlertConfirmation.id)
        .dicts()
    ]
    return dict(_plain_dict(alert, skip=("read", "entry")), read_uuid=read_uuid, confirmations=confirmations)


@dataclass
class Plan:
    """What the next batch after `pos` holds, decided before a byte of it is written (so that the
    pull endpoint can answer 204 or start streaming)."""

    pos: Position
    header: dict
    rows: list
    chain_last: int
    conf_upto: int
    # a batch of the second lane: (seq, read uuid, sha256, content_type, width, height, bytes) of
    # each frame it carries, and the outbox seq its frames reach (plan_frames)
    frames: list | None = None
    frames_upto: int = 0


def plan_batch(settings: Settings, key, pos: Position, max_reads: int | None = None) -> Plan | None:
    """The next batch after `pos`, or None when nothing waits."""
    max_reads = max_reads or settings.sync.batch_max_reads
    rows = database.execute_sql(
        "SELECT seq, kind, object_id FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (pos.last_seq, max_reads)
    ).fetchall()
    records_last = database.execute_sql("SELECT max(seq) FROM access_record").fetchone()[0] or 0
    chain_last = min(records_last, pos.chain_seq + MAX_RECORDS_PER_BATCH)
    conf_upto = database.execute_sql("SELECT coalesce(max(id), 0) FROM alert_confirmation").fetchone()[0]
    if not rows and chain_last <= pos.chain_seq and conf_upto <= pos.confirmation_id:
        return plan_frames(settings, key, pos)  # the second lane yields to the first
    first_seq = pos.last_seq + 1
    last_seq = rows[-1][0] if rows else pos.last_seq
    # counted in the (sent_at, seq) index, not the table: a third of the time, every batch
    backlog = database.execute_sql(
        "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND seq > ?", (last_seq,)
    ).fetchone()[0]
    header = {
        "t": "header",
        "format": protocol.FORMAT,
        "post": settings.post.id,
        "batch": str(uuidlib.uuid4()),
        "first_seq": first_seq,
        "last_seq": last_seq,
        "chain": {"first_seq": pos.chain_seq + 1, "last_seq": chain_last, "prev_hash": pos.chain_hash},
        "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "key_id": bundle.key_id(key.public_key()),
        "backlog": backlog,
        "confirmations": {"after": pos.confirmation_id, "upto": max(conf_upto, pos.confirmation_id)},
    }
    return Plan(pos, header, rows, chain_last, conf_upto)


def _lines(settings: Settings, plan: Plan, tally: dict):
    """The batch's lines before its trailer, one object at a time; `tally` gets "reads" and
    "chain_hash" (the hash of the last access record carried)."""
    pos, header, rows, chain_last, conf_upto = plan.pos, plan.header, plan.rows, plan.chain_last, plan.conf_upto
    last_seq = header["last_seq"]
    yield header
    store = EvidenceStore(settings)
    if plan.frames is not None:
        yield from _frame_lines(store, plan, tally)
        return
    kinds = ("crop", "frame") if settings.sync.include_frames else ("crop",)
    lanes = second_lane(settings, pos)
    reads = 0
    for start in range(0, len(rows), READ_CHUNK):
        chunk = rows[start : start + READ_CHUNK]
        # plain rows (the same values a model's __data__ holds) rather than model instances
        by_uuid: dict[str, dict] = {
            r["uuid"]: r  # type: ignore[index, misc]  # peewee stubs: .dicts() yields dicts
            for r in Read.select().where(Read.uuid.in_([c[2] for c in chunk if c[1] == "read"])).dicts()
        }
        ids = [r["id"] for r in by_uuid.values()]
        evidence: dict[int, list] = {}
        for ev in (
            Evidence.select(
                Evidence.read,
                Evidence.kind,
                Evidence.sha256,
                Evidence.content_type,
                Evidence.width,
                Evidence.height,
                Evidence.bytes,
            )
            .where(Evidence.read.in_(ids) & Evidence.kind.in_(kinds))
            .order_by(Evidence.kind)
            .tuples()
        ):
            evidence.setdefault(ev[0], []).append(ev)  # type: ignore[index]  # peewee stubs: .tuples() yields tuples
        alerts: dict[int, list] = {}
        for alert in Alert.select().where(Alert.read.in_(ids)).dicts():
            alerts.setdefault(alert["read"], []).append(_alert_dict(alert))  # type: ignore[index, arg-type]  # peewee stubs: .dicts() yields dicts
        for seq, kind, object_id in chunk:
            if kind in (holds.PLACED, holds.RELEASED):
                # in outbox order with the reads: a hold's release never overtakes its placing
                hold = holds.for_headquarters(kind, int(object_id))
                if hold is not None:
                    yield {
                        "t": "hold",
                        "seq": seq,
                        "event": "place" if kind == holds.PLACED else "release",
                        "hold": _plain_dict(hold),
                    }
                continue
            if kind != "read":
                continue
            read = by_uuid.get(object_id)
            if read is None:
                continue  # purged since (retention): the range stays contiguous without it
            images, missing = [], []
            for _read_id, kind, sha256, content_type, width, height, size in evidence.get(read["id"], []):
                if kind == "frame" and lanes and not alerts.get(read["id"]):
                    # named here, sent in the second lane: headquarters holds it to this sha256
                    images.append(
                        {
                            "kind": kind,
                            "sha256": sha256,
                            "content_type": content_type,
                            "width": width,
                            "height": height,
                            "bytes": size,
                        }
                    )
                    tally["deferred"] = tally.get("deferred", 0) + 1
                    continue
                try:
                    data = store.read_bytes(sha256)
                except StoreError as exc:
                    missing.append({"kind": kind, "sha256": sha256, "problem": str(exc)})
                    continue
                images.append(
                    {
                        "kind": kind,
                        "sha256": sha256,
                        "content_type": content_type,
                        "width": width,
                        "height": height,
                        "bytes": size,
                        "data": base64.b64encode(data).decode(),
                    }
                )
            item = {
                "t": "read",
                "seq": seq,
                "read": _plain_dict(read, skip=("id",)),
                "images": images,
                "alerts": alerts.get(read["id"], []),
            }
            if missing:
                item["missing_images"] = missing
            yield item
            reads += 1
            tally["reads"] = reads
    if conf_upto > pos.confirmation_id:
        # alerts confirmed since headquarters last heard, whose read it holds or gets now (an alert
        # whose read is still to come travels with its read, confirmations and all)
        confirmed = database.execute_sql(
            "SELECT DISTINCT a.id FROM alert_confirmation c JOIN alert a ON a.id = c.alert_id "
            "JOIN read r ON r.id = a.read_id JOIN outbox o ON o.object_id = r.uuid AND o.kind = 'read' "
            "WHERE c.id > ? AND c.id <= ? AND o.seq <= ? ORDER BY a.id",
            (pos.confirmation_id, conf_upto, last_seq),
        ).fetchall()
        for (alert_id,) in confirmed:
            alert = Alert.select().where(Alert.id == alert_id).dicts().get()
            yield {"t": "confirmation", "alert": _alert_dict(alert)}  # type: ignore[arg-type]  # peewee stubs: .dicts() yields dicts
    if chain_last > pos.chain_seq:
        cursor = database.execute_sql(
            f"SELECT {', '.join(audit.COLUMNS)} FROM access_record WHERE seq > ? AND seq <= ? ORDER BY seq",
            (pos.chain_seq, chain_last),
        )
        while batch := cursor.fetchmany(1000):
            for row in batch:
                record = dict(zip(audit.COLUMNS, row))
                yield {"t": "access", "record": record}
                tally["chain_hash"] = record["hash"]


def _written(plan: Plan, tally: dict) -> dict:
    """The header of a written batch with two entries that are not sent: "reads" (how many it
    carries) and "next" (headquarters' position once it has stored it: where the next batch starts)."""
    pos = plan.pos
    return dict(
        plan.header,
        reads=tally["reads"],
        next=Position(
            plan.header["last_seq"],
            max(plan.chain_last, pos.chain_seq),
            tally["chain_hash"],
            max(plan.conf_upto, pos.confirmation_id),
            frame_seq=_next_frame_seq(plan, tally),
        ),
    )


# --- the second lane: frames of reads headquarters holds -----------------------------------------
#
# A read's frame (about 200 KB, forty times its crop) is what fills a slow link. With the second lane
# (sync.frame_lane, and a headquarters that says where its frames stand: Position.frame_seq) a read
# line names its frame (sha256, size) without its data, unless the read raised an alert: what an
# officer needs first goes first. The frames follow in batches of their own, built only when the
# first lane has nothing waiting (plan_batch), of about sync.frame_batch_kb each so that a read
# arriving meanwhile waits for one of them at most. Headquarters keeps the read and lists its frame
# as still to come until a frame with the named sha256 arrives. Nothing is marked on the post: where
# the frames stand is headquarters' word (frame_seq), asked on every push like the rest.

FRAME_SCAN_ROWS = 2000  # outbox rows looked at per frame batch planned


def second_lane(settings: Settings, pos: Position) -> bool:
    """Whether the frames of reads without an alert go in the second lane for headquarters at `pos`."""
    return settings.sync.include_frames and settings.sync.frame_lane and pos.frame_seq is not None


def plan_frames(settings: Settings, key, pos: Position) -> Plan | None:
    """The next batch of the second lane after `pos`: the frames of reads headquarters holds (outbox
    seq up to pos.last_seq) past pos.frame_seq, of reads without an alert (theirs went with them), up
    to about sync.frame_batch_kb; None when none waits."""
    if pos.frame_seq is None or not settings.sync.include_frames or pos.frame_seq >= pos.last_seq:
        return None
    budget = settings.sync.frame_batch_kb * 1024
    rows = database.execute_sql(
        "SELECT o.seq, r.uuid, e.sha256, e.content_type, e.width, e.height, e.bytes FROM outbox o "
        "JOIN read r ON r.uuid = o.object_id JOIN evidence e ON e.read_id = r.id AND e.kind = 'frame' "
        "WHERE o.kind = 'read' AND o.seq > ? AND o.seq <= ? "
        "AND NOT EXISTS (SELECT 1 FROM alert a WHERE a.read_id = r.id) ORDER BY o.seq LIMIT ?",
        (pos.frame_seq, pos.last_seq, FRAME_SCAN_ROWS),
    ).fetchall()
    if not rows:
        return None
    frames: list[tuple] = []
    size = 0
    for row in rows:
        if frames and size + row[6] > budget:
            break
        frames.append(row)
        size += row[6]
    # every frame up to the last row looked at, or (the scan reached the end) to headquarters' reads
    upto = frames[-1][0] if len(frames) < len(rows) or len(rows) == FRAME_SCAN_ROWS else pos.last_seq
    header = {
        "t": "header",
        "format": protocol.FORMAT,
        "post": settings.post.id,
        "batch": str(uuidlib.uuid4()),
        "first_seq": pos.last_seq + 1,
        "last_seq": pos.last_seq,
        "chain": {"first_seq": pos.chain_seq + 1, "last_seq": pos.chain_seq, "prev_hash": pos.chain_hash},
        "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "key_id": bundle.key_id(key.public_key()),
        "backlog": 0,
        "confirmations": {"after": pos.confirmation_id, "upto": pos.confirmation_id},
        "frames": {"after": pos.frame_seq, "upto": upto},
    }
    return Plan(pos, header, [], pos.chain_seq, pos.confirmation_id, frames=frames, frames_upto=upto)


def _frame_lines(store: EvidenceStore, plan: Plan, tally: dict):
    """The frame lines of a second-lane batch. A frame file missing or damaged here is left out (its
    read's page at headquarters keeps saying it has not come) and logged."""
    for seq, read_uuid, sha256, content_type, width, height, size in plan.frames or []:
        try:
            data = store.read_bytes(sha256)
        except StoreError as exc:
            log.warning("frame of read %s not sent: %s", read_uuid, exc)
            continue
        image = {
            "kind": "frame",
            "sha256": sha256,
            "content_type": content_type,
            "width": width,
            "height": height,
            "bytes": size,
            "data": base64.b64encode(data).decode(),
        }
        yield {"t": "frame", "seq": seq, "read": read_uuid, "image": image}
        tally["frames"] = tally.get("frames", 0) + 1


def _next_frame_seq(plan: Plan, tally: dict) -> int | None:
    """headquarters' frame_seq once it has stored the planned batch (sync/hq/ingest.py): a batch of
    frames moves it to its end; a batch of reads naming no frame to come, when none was due, to its
    last seq."""
    pos = plan.pos
    if pos.frame_seq is None:
        return None
    if plan.frames is not None:
        return plan.frames_upto
    if pos.frame_seq >= pos.last_seq and not tally.get("deferred"):
        return max(pos.frame_seq, plan.header["last_seq"])
    return pos.frame_seq


def write_batch(settings: Settings, key, plan: Plan, fileobj) -> dict:
    """Write the planned batch to `fileobj` (anything with write()); its header (see _written)."""
    tally = {"reads": 0, "chain_hash": plan.pos.chain_hash}
    writer = protocol.Writer(fileobj)
    for obj in _lines(settings, plan, tally):
        writer.line(obj)
    writer.finish(key)
    return _written(plan, tally)


def build_batch(settings: Settings, key, pos: Position, fileobj, max_reads: int | None = None) -> dict | None:
    """Write the next batch after `pos` to `fileobj`; its header (see write_batch), or None when
    nothing waits."""
    plan = plan_batch(settings, key, pos, max_reads)
    return None if plan is None else write_batch(settings, key, plan, fileobj)


class _Chunks:
    """A file object for Writer that hands what it was given to a generator in pieces."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        if data:
            self.parts.append(data)
            self.size += len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return data


def stream_batch(settings: Settings, key, plan: Plan, chunk_bytes: int = 256 * 1024):
    """The planned batch as gzip pieces of about `chunk_bytes`, made as they are sent (the pull
    endpoint): headquarters checks and stores the first reads while the post is still reading the
    last ones from its disk, and the post never holds more than a piece of it."""
    tally = {"reads": 0, "chain_hash": plan.pos.chain_hash}
    out = _Chunks()
    writer = protocol.Writer(out)
    for obj in _lines(settings, plan, tally):
        writer.line(obj)
        if out.size >= chunk_bytes:
            yield out.take()
    writer.finish(key)
    yield out.take()


# --- pushing -----------------------------------------------------------------------------------


def _spool(settings: Settings) -> Path:
    path = settings.data_dir / "sync"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _header_of(path: Path) -> dict | None:
    try:
        with gzip.open(path, "rb") as f:
            header = json.loads(f.readline())
        return protocol.header_fields(header)
    except (OSError, EOFError, ValueError, protocol.ProtocolError):
        return None


def _send(settings: Settings, path: Path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        return _request(settings, "POST", "/hq/v1/batches", body=f, length=os.fstat(f.fileno()).st_size)


def push(settings: Settings, max_batches: int | None = None, stop: threading.Event | None = None) -> PushResult:
    """Send everything waiting, oldest first. Raises SyncError when headquarters cannot be reached
    (what was acknowledged so far stays marked) and Refused when it refuses a batch."""
    spool = _spool(settings)
    with open(spool / "push.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SyncError(
                "another push is running on this post (the service's pusher or another "
                "`waypost sync push`); try again when it has finished"
            ) from None
        try:
            result = _push(settings, spool, max_batches, stop)
        except Exception as exc:
            _record_attempt(settings, error=str(exc))
            raise
        _record_attempt(settings, position=result.position)
        return result


def _build_file(settings: Settings, key, pos: Position, path: Path) -> dict | None:
    """build_batch into the file `path`, on disk before it returns (a batch is sent only from a
    file that survives a crash); its header, or None when nothing waits."""
    with open(path, "wb") as f:
        header = build_batch(settings, key, pos, f)
        f.flush()
        os.fsync(f.fileno())
    return header


class _Ahead:
    """The next batch, built in a thread from the position headquarters will hold once it has
    stored the batch being sent, so that the post reads and packs while headquarters checks and
    stores. It is used only if headquarters answers with exactly that position; otherwise it is
    thrown away and the next batch is built from what headquarters said. It is never sent before
    it has been renamed to unacked.batch, so the guarantees of one spooled batch hold."""

    def __init__(self, settings: Settings, key, pos: Position, path: Path):
        self.pos, self.path = pos, path
        self.header: dict | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._build, args=(settings, key), name="sync-build-ahead", daemon=True)
        self.thread.start()

    def _build(self, settings: Settings, key) -> None:
        try:
            with db.connection():
                self.header = _build_file(settings, key, self.pos, self.path)
        except BaseException as exc:  # reported by building again in the pushing thread
            self.error = exc

    def take(self, pos: Position, unacked: Path) -> dict | None:
        """The batch's header, its file now `unacked`, if it was built from `pos`; else None."""
        self.thread.join()
        if self.error is None and self.header is not None and pos == self.pos:
            os.replace(self.path, unacked)
            return self.header
        if self.error is not None:
            log.warning("building the next batch ahead failed (built again now): %s", self.error)
        self.path.unlink(missing_ok=True)
        return None

    def discard(self) -> None:
        self.thread.join()
        self.path.unlink(missing_ok=True)


def _push(settings: Settings, spool: Path, max_batches: int | None, stop: threading.Event | None) -> PushResult:
    key = bundle.post_key(settings)
    unacked, part, ahead_part = spool / "unacked.batch", spool / "unacked.batch.part", spool / "next.batch.part"
    part.unlink(missing_ok=True)  # a build interrupted by a crash: never sent, made again
    ahead_part.unlink(missing_ok=True)
    result = PushResult()
    pos = fetch_position(settings)
    result.position = pos
    marked, unmarked = reconcile(pos)
    if unmarked:
        result.notes.append(
            f"headquarters holds less than it had acknowledged: {unmarked} outbox event(s) "
            "(reads, legal hold events) will be sent again"
        )
    if marked:
        result.notes.append(f"headquarters already held {marked} outbox event(s) not yet marked sent here")
    resets = 0
    ahead: _Ahead | None = None
    try:
        while max_batches is None or result.batches + result.duplicates < max_batches:
            if stop is not None and stop.is_set():
                break
            header = None
            if ahead is not None:
                header = ahead.take(pos, unacked)
                ahead = None
            if header is None and unacked.exists():
                header = _header_of(unacked)
            if header is None:
                unacked.unlink(missing_ok=True)
                header = _build_file(settings, key, pos, part)
                if header is None:
                    part.unlink(missing_ok=True)
                    break
                os.replace(part, unacked)
            last = max_batches is not None and result.batches + result.duplicates + 1 >= max_batches
            if "next" in header and not last:
                ahead = _Ahead(settings, key, header["next"], ahead_part)
            size = unacked.stat().st_size
            status, answer = _send(settings, unacked)
            if status == 200:
                unacked.unlink(missing_ok=True)
                pos = Position.of(answer.get("position") or {})
                mark_acked(header, pos)
                result.position = pos
                if answer.get("status") == "duplicate":
                    result.duplicates += 1
                else:
                    result.batches += 1
                    result.reads += int(answer.get("reads") or 0)
                    result.records += int(answer.get("records") or 0)
                    result.holds += int(answer.get("holds") or 0)
                    result.frames += int(answer.get("frames") or 0)
                    result.bytes += size
                continue
            unacked.unlink(missing_ok=True)  # refused: rebuilt from the current data and position
            refusal = Refused(status, answer)
            if refusal.problem in ("gap", "overlap", "replay") and resets < 3:
                resets += 1
                # headquarters names its position only in answer to a signed batch; a refusal
                # before the signature is checked (the range, at the header) carries none: ask
                pos = Position.of(refusal.position) if refusal.position else fetch_position(settings)
                reconcile(pos)
                result.notes.append(f"headquarters answered {refusal.problem}; rebuilt from its position")
                continue
            raise refusal
    finally:
        if ahead is not None:
            ahead.discard()
    try:
        result.notes.extend(fetch_hotlists(settings))
    except SyncError as exc:  # the batches are delivered; the lists are fetched next time
        result.notes.append(f"hotlists not fetched: {exc}")
    return result


def local_status(settings: Settings) -> dict:
    row = database.execute_sql(
        "SELECT count(*), min(seq), max(seq), sum(kind = 'read') FROM outbox WHERE sent_at IS NULL"
    ).fetchone()
    sent = database.execute_sql("SELECT max(seq), max(sent_at) FROM outbox WHERE sent_at IS NOT NULL").fetchone()
    head = audit.head()
    reads = row[3] or 0
    # "pending" is every outbox event; reads and legal hold events (placed or released here) apart
    return {
        "pending": row[0],
        "pending_reads": reads,
        "pending_holds": row[0] - reads,
        "pending_from": row[1],
        "pending_to": row[2],
        "acked_seq": sent[0] or 0,
        "last_acked_at": sent[1],
        "chain_head": head[0],
        "unacked_batch": (settings.data_dir / "sync" / "unacked.batch").exists(),
    }


# --- what the operator is told: the post's sync state ------------------------------------------

STATE_FILE = "state.json"
_state_lock = threading.Lock()
# the last clock offset measured per data directory (this process): (seconds, when, UTC ISO)
_clocks: dict[Path, tuple[int, str]] = {}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_state(settings: Settings) -> dict:
    """The post's sync state as last recorded: the last success and the last error (UTC ISO times),
    the failed push attempts in a row, and this clock's offset from headquarters'. Recorded by every
    push (the service's pusher and `waypost sync push`) and every pull served (web/sync.py).

    A small JSON file beside the spooled batch, not a table: a failed attempt is recorded without
    waiting for the database's write lock (the pipeline storing reads), and losing it (a power cut
    in the middle of a rename) loses only what the next attempt records again."""
    try:
        state = json.loads((_spool(settings) / STATE_FILE).read_text())
    except (OSError, ValueError):
        state = {}
    return state if isinstance(state, dict) else {}


def record_state(settings: Settings, **changes) -> dict:
    """Merge `changes` (and the last clock offset measured) into the sync state; the new state."""
    with _state_lock:
        state = read_state(settings)
        state.update(changes)
        clock = _clocks.get(settings.data_dir)
        if clock is not None:
            state["clock_offset_s"], state["clock_checked_at"] = clock
        path = _spool(settings) / STATE_FILE
        part = path.with_suffix(".part")
        part.write_text(json.dumps(state, sort_keys=True))
        os.replace(part, path)
        return state


def note_clock(settings: Settings, offset_s: int) -> None:
    """This clock minus headquarters' (seconds), measured on an exchange; recorded with the next
    state change."""
    _clocks[settings.data_dir] = (offset_s, now_iso())


def measured_clock(settings: Settings) -> int | None:
    """The clock offset last measured by this process (seconds), or None."""
    clock = _clocks.get(settings.data_dir)
    return None if clock is None else clock[0]


def _measure_clock(settings: Settings, date_header: str | None, sent: float, received: float) -> None:
    """This clock minus headquarters', from the HTTP Date of its answer (whole seconds, truncated:
    half a second added) against the middle of the exchange."""
    try:
        theirs = email.utils.parsedate_to_datetime(date_header or "").timestamp() + 0.5
    except (TypeError, ValueError):
        return
    note_clock(settings, round((sent + received) / 2 - theirs))


def _record_attempt(settings: Settings, error: str | None = None, position: Position | None = None) -> None:
    try:
        if error is None:
            changes: dict = {"last_success_at": now_iso(), "failures": 0}
            if position is not None:
                changes["hq_chain_seq"] = position.chain_seq
            record_state(settings, **changes)
        else:
            failures = int(read_state(settings).get("failures") or 0) + 1
            record_state(settings, last_error=error[:500], last_error_at=now_iso(), failures=failures)
    except OSError as exc:  # the attempt's own outcome matters more than its note
        log.warning("could not record the sync state in %s: %s", _spool(settings), exc)


def record_pull(settings: Settings) -> None:
    """A pull served to headquarters (its signed request checked): a success of sync."""
    try:
        record_state(settings, last_success_at=now_iso(), last_pulled_at=now_iso(), failures=0)
    except OSError as exc:
        log.warning("could not record the sync state in %s: %s", _spool(settings), exc)


def _parse_time(value) -> dt.datetime | None:
    if not value:
        return None
    try:
        when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", ""))
    except ValueError:
        return None
    return when.replace(tzinfo=None)


def clock_text(offset_s: int) -> str:
    return f"{abs(offset_s)} s {'ahead of' if offset_s > 0 else 'behind'} headquarters'"


def health(settings: Settings) -> dict:
    """The `sync` section of /health (and the live view's status strip): the last success, the
    backlog, the age of the oldest read not yet at headquarters, the last error, the clock offset,
    and `problems` (each starting "sync:") that make the post's status degraded. Needs a database
    connection."""
    sync = settings.sync
    enabled = bool(sync.enabled or sync.hq_url or sync.hq_public_key)
    state = read_state(settings)
    reads, oldest = database.execute_sql(
        "SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL AND kind = 'read'"
    ).fetchone()
    head = audit.head()[0]
    held = state.get("hq_chain_seq")
    records = max(0, head - int(held)) if isinstance(held, int) else head
    oldest_at = _parse_time(oldest)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    age_min = int((now - oldest_at).total_seconds() // 60) if oldest_at is not None else None
    failures = int(state.get("failures") or 0)
    error, error_at = state.get("last_error"), state.get("last_error_at")
    offset = state.get("clock_offset_s")
    problems = []
    if enabled:
        since = f"; last error at {error_at} UTC: {error}" if error and failures else ""
        if age_min is not None and age_min > sync.stale_after_minutes:
            problems.append(
                f"sync: the oldest read not yet at headquarters is {age_min} minutes old ({reads} read(s) waiting; "
                f"sync.stale_after_minutes is {sync.stale_after_minutes}){since}"
            )
        if failures >= sync.degraded_after_failures:
            problems.append(f"sync: {failures} push attempts in a row failed, the last at {error_at} UTC: {error}")
        if isinstance(offset, int) and abs(offset) > sync.clock_warn_s:
            problems.append(
                f"sync: this post's clock is {clock_text(offset)} (more than sync.clock_warn_s, "
                f"{sync.clock_warn_s} s): check its time source (NTP); reads are stamped with it"
            )
    return {
        "enabled": enabled,
        "last_success_at": state.get("last_success_at"),
        "backlog": {"reads": reads, "records": records},
        "oldest_unsent_read_at": oldest_at.strftime("%Y-%m-%dT%H:%M:%SZ") if oldest_at else None,
        "oldest_unsent_read_minutes": age_min,
        "failures": failures,
        "last_error": error if failures else None,
        "last_error_at": error_at,
        "clock_offset_s": offset,
        "clock_checked_at": state.get("clock_checked_at"),
        "problems": problems,
    }


# --- the background worker ---------------------------------------------------------------------


def backoff_s(failures: int, base_s: float = 5.0, cap_s: float = 60.0, rng=random.random) -> float:
    """Capped exponential backoff with jitter (between half and all of the capped delay). The cap
    (sync.max_backoff_s) is about a minute: an attempt costs one small signed GET, and headquarters
    back after a long outage must not go unnoticed for a quarter of an hour (issue 18)."""
    delay = min(cap_s, base_s * 2 ** max(0, failures - 1))
    return delay * (0.5 + rng() / 2)


class Pusher:
    """Pushes every sync.push_interval_s while headquarters answers; backs off when it does not."""

    def __init__(self, settings: Settings, stop: threading.Event):
        self.settings = settings
        self.stop = stop
        self.failures = 0
        self.last_error: str | None = None
        self.last_result: PushResult | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with db.connection():
                    self.last_result = push(self.settings, stop=self.stop)
                self.failures, self.last_error = 0, None
                wait: float = self.settings.sync.push_interval_s
            except Exception as exc:  # never let the worker die: the next attempt may succeed
                self.failures += 1
                self.last_error = str(exc)
                wait = backoff_s(self.failures, cap_s=self.settings.sync.max_backoff_s)
                log.warning("sync push failed (attempt %d, next in %.0f s): %s", self.failures, wait, exc)
            self.stop.wait(wait)
