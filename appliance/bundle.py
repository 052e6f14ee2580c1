"""Signed bundles of the access log, for someone who does not trust the post to check offline.

A bundle is one JSON document:

    {"bundle": "waypost-audit", "version": 1,
     "records": [ {seq, at, username, ... prev_hash, hash}, ... ],   # a contiguous run of the chain
     "signed": {post, period, created_at, created_by, first_seq, last_seq, count,
                prev_hash,            # the chain link before the first record
                last_hash,            # the hash of the last record (prev_hash when empty)
                head: {seq, hash},    # the log's head when the bundle was made (its own export record)
                public_key, key_id},
     "signature": base64 Ed25519 signature over the canonical JSON of "signed"}

The signature covers the chain's two ends; every record's hash covers its fields and the hash of
the record before it, so together they cover every field of every record without signing a
document the size of a quarter's log in one piece. `verify()` recomputes each record's hash and
each link, and checks the ends against the signed ones.

The post's key is an Ed25519 private key in PEM (PKCS8) at settings.data_dir / sync.key_file, made
with mode 0600 when missing, and its public key in PEM beside it as <key_file>.pub (the file to
hand to whoever verifies bundles, and to headquarters).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from appliance import audit, untrusted_json
from appliance.db import write
from appliance.models import database

FORMAT = "waypost-audit"
VERSION = 1


class BundleError(ValueError):
    pass


# --- the post's key ----------------------------------------------------------------------------


def key_path(settings) -> Path:
    return settings.data_dir / settings.sync.key_file


def post_key(settings) -> Ed25519PrivateKey:
    """The post's signing key, made on first use (0600, created exclusively so that two processes
    starting together cannot both write one); <key_file>.pub is (re)written when missing."""
    path = key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = _load_private(path)
    else:
        key = Ed25519PrivateKey.generate()
        with os.fdopen(fd, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            f.flush()
            os.fsync(f.fileno())
    pub = public_key_file(settings)
    if not pub.exists():
        tmp = pub.with_name(pub.name + ".part")
        tmp.write_bytes(public_pem(key.public_key()))
        tmp.replace(pub)
    return key


def public_key_file(settings) -> Path:
    path = key_path(settings)
    return path.with_name(path.name + ".pub")


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path} is not a PEM private key ({exc}); move it away to have a new key made") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint to read out over the phone: sha256 of the raw key, first 16 hex digits."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def load_public_key(data: bytes, where: str = "public key") -> Ed25519PublicKey:
    """A public key as PEM, or as the base64 of the raw 32 bytes (as in a bundle's public_key)."""
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{where} is not an Ed25519 public key in PEM or base64 ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{where} is a {type(key).__name__}, not an Ed25519 public key")
    return key


def _canonical_bytes(value) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


# --- making a bundle ---------------------------------------------------------------------------


@dataclass
class Made:
    path: Path
    count: int
    first_seq: int | None
    last_seq: int | None
    head: tuple[int, str]
    key_id: str


def _period_range(start: dt.datetime | None, end: dt.datetime | None, upto: int) -> tuple[int | None, int | None]:
    clauses: list[str] = ["seq <= ?"]
    params: list[int | str] = [upto]
    if start:
        clauses.append("at >= ?")
        params.append(audit.stamp(start))
    if end:
        clauses.append("at < ?")
        params.append(audit.stamp(end))
    return database.execute_sql(
        f"SELECT min(seq), max(seq) FROM access_record WHERE {' AND '.join(clauses)}", params
    ).fetchone()


def write_bundle(
    settings,
    out: Path,
    actor: audit.Actor,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    via: str = "cli",
    *,
    purpose: audit.Purpose,
) -> Made:
    """Write the records of [start, end) (naive UTC; None = open) as a signed bundle at `out`.

    The records form a contiguous run from the first to the last record of the period, so the
    chain inside the bundle can be checked. They are copied to the file before the write lock is
    taken (records never change, and a long export must not hold up the camera's writes); the
    export's access record is then appended and the signed part written in one transaction, and the
    file only takes its name once that commits."""

    key = post_key(settings)
    public = key.public_key()
    upto = audit.head()[0]
    lo, hi = _period_range(start, end, upto)
    out = Path(out)
    fd, tmp_name = tempfile.mkstemp(prefix=out.name + ".", suffix=".part", dir=out.parent or Path("."))
    tmp = Path(tmp_name)
    count, prev_hash, last_hash = 0, None, None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f'{{"bundle":"{FORMAT}","version":{VERSION:d},"records":[')
            if lo is not None:
                cursor = database.execute_sql(
                    f"SELECT {', '.join(audit.COLUMNS)} FROM access_record WHERE seq BETWEEN ? AND ? ORDER BY seq",
                    (lo, hi),
                )
                while rows := cursor.fetchmany(5000):
                    for row in rows:
                        entry = dict(zip(audit.COLUMNS, row))
                        if prev_hash is None:
                            prev_hash = entry["prev_hash"]
                        f.write(("," if count else "\n") + json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
                        last_hash = entry["hash"]
                        count += 1
            if prev_hash is None:  # an empty period: the link is the last record before it
                row = database.execute_sql(
                    "SELECT hash FROM access_record WHERE seq <= ? AND at < ? ORDER BY seq DESC LIMIT 1",
                    (upto, audit.stamp(start) if start else ""),
                ).fetchone()
                prev_hash = last_hash = row[0] if row else audit.GENESIS
            with write():
                rec = audit.record(
                    "audit.export",
                    actor,
                    purpose=purpose,
                    result_count=count,
                    query={"from": audit.stamp(start) if start else None, "to": audit.stamp(end) if end else None},
                    details={
                        "format": "bundle",
                        "file": out.name,
                        "first_seq": lo,
                        "last_seq": hi,
                        "key_id": key_id(public),
                        "via": via,
                    },
                )
                signed = {
                    "post": {"id": settings.post.id, "name": settings.post.name, "agency": settings.post.agency},
                    "period": {"from": audit.stamp(start) if start else None, "to": audit.stamp(end) if end else None},
                    "created_at": rec.at,
                    "created_by": actor.username,
                    "first_seq": lo,
                    "last_seq": hi,
                    "count": count,
                    "prev_hash": prev_hash,
                    "last_hash": last_hash,
                    "head": {"seq": rec.seq, "hash": rec.hash},
                    "public_key": base64.b64encode(raw_public(public)).decode("ascii"),
                    "key_id": key_id(public),
                }
                signature = key.sign(_canonical_bytes(signed))
                f.write(
                    '],\n"signed":'
                    + json.dumps(signed, ensure_ascii=False, sort_keys=True)
                    + ',\n"signature":"'
                    + base64.b64encode(signature).decode("ascii")
                    + '"}\n'
                )
                f.flush()
                os.fsync(f.fileno())
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Made(out, count, lo, hi, (rec.seq, rec.hash), key_id(public))


# --- checking one ------------------------------------------------------------------------------


@dataclass
class Checked:
    ok: bool
    count: int = 0
    bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    signed: dict = field(default_factory=dict)
    key_id: str = ""
    key_source: str = ""

    def summary(self) -> str:
        s = self.signed
        if self.ok:
            return (
                f"bundle verified: {self.count} records (seq {s.get('first_seq')}..{s.get('last_seq')}) from post "
                f"{s.get('post', {}).get('id')}, made {s.get('created_at')} by {s.get('created_by')}; "
                f"signature by key {self.key_id} ({self.key_source}); head {s['head']['seq']} {s['head']['hash']}"
            )
        where = f" at record {self.bad_seq}" if self.bad_seq is not None else ""
        return f"bundle BROKEN{where}:\n" + "\n".join(f"  - {p}" for p in self.problems)


def verify(data: bytes, public_key: Ed25519PublicKey | None = None) -> Checked:
    """Check a bundle: every record's hash, every link, the signed ends and count, and the signature
    (with `public_key` if given, else with the key the bundle names, which says only that the bundle
    is intact: compare its key_id with the post's)."""
    try:
        doc = untrusted_json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return Checked(False, problems=[f"not a JSON document: {exc}"])
    if not isinstance(doc, dict) or doc.get("bundle") != FORMAT:
        return Checked(False, problems=[f'not a Waypost audit bundle (no "bundle": "{FORMAT}")'])
    if doc.get("version") != VERSION:
        return Checked(False, problems=[f"bundle version {doc.get('version')!r}; this program reads version {VERSION}"])
    signed, records, sig = doc.get("signed"), doc.get("records"), doc.get("signature")
    if not isinstance(signed, dict) or not isinstance(records, list) or not isinstance(sig, str):
        return Checked(False, problems=["the bundle lacks its records, its signed part or its signature"])
    result = Checked(True, signed=signed)
    problems = result.problems

    def bad(seq, text):
        if result.bad_seq is None and seq is not None:
            result.bad_seq = seq
        # a value quoted from the file may hold a lone surrogate (a JSON escape): shown escaped
        problems.append(text.encode("utf-8", "backslashreplace").decode("utf-8"))

    # 1. The records: each hash, each link, contiguous seq.
    link, expect = signed.get("prev_hash"), signed.get("first_seq")
    for i, rec in enumerate(records):
        seq = rec.get("seq") if isinstance(rec, dict) else None
        if not isinstance(rec, dict) or set(rec) != set(audit.COLUMNS):
            bad(seq, f"record #{i + 1} in the file is not an access record (wrong fields)")
            break
        if expect is not None and seq != expect:
            kind = "missing record(s)" if isinstance(seq, int) and seq > expect else "sequence out of order"
            bad(seq, f"record {seq}: {kind}: expected seq {expect}, found {seq}")
            break
        if rec["prev_hash"] != link:
            bad(
                seq,
                f"record {seq}: previous-hash link does not match the record before it "
                "(a record was deleted, inserted or reordered)",
            )
            break
        if audit.digest(rec) != rec["hash"]:
            bad(seq, f"record {seq}: contents do not match the record's hash (a field was modified)")
            break
        link, expect = rec["hash"], (seq + 1 if isinstance(seq, int) else None)
        result.count += 1
    else:
        # 2. The signed ends: nothing cut off either end, the count as signed.
        if len(records) != signed.get("count"):
            bad(None, f"the bundle holds {len(records)} records but its signed part says {signed.get('count')}")
        elif records and records[-1]["seq"] != signed.get("last_seq"):
            bad(
                records[-1]["seq"],
                f"the last record is {records[-1]['seq']}, the signed part says {signed.get('last_seq')}",
            )
        elif link != signed.get("last_hash"):
            bad(
                records[-1]["seq"] if records else None,
                "the last record's hash differs from the signed one (records were removed from the end or rewritten)",
            )

    # 3. The signature, whatever the records said, so that every problem is named.
    try:
        named = load_public_key(str(signed.get("public_key", "")).encode("utf-8", "replace"), "the bundle's public_key")
    except BundleError as exc:
        named = None
        bad(None, str(exc))
    key = public_key or named
    if key is not None:
        result.key_id = key_id(key)
        result.key_source = (
            "the given public key" if public_key else "the key named in the bundle: compare it with the post's"
        )
        if public_key is not None and named is not None and raw_public(named) != raw_public(public_key):
            bad(
                None,
                f"the bundle names key {key_id(named)}, not the given public key {key_id(public_key)} "
                "(signed by another key, or the key was replaced)",
            )
        try:
            key.verify(base64.b64decode(sig, validate=True), _canonical_bytes(signed))
        except UnicodeEncodeError:
            bad(
                None,
                "the signed part holds a lone UTF-16 surrogate escape, which is not text: it is not what "
                "the post signed (the signed part was changed)",
            )
        except (InvalidSignature, ValueError):
            bad(
                None,
                f"the signature does not verify with {result.key_source.split(':')[0]} {result.key_id} "
                "(the signed part or the signature was changed, or another key signed it)",
            )
    result.ok = not problems
    return result
