"""Headquarters' side of its posts: enrolment, what it holds of each (its position), their status
and access-log copies, the signed GETs a post makes, and the hotlists published to them."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature

from appliance import audit, bundle
from appliance.models import utcnow
from sync import protocol
from sync.hq.models import (
    GENESIS,
    HQAccessRecord,
    HQBatch,
    HQError,
    HQHotlist,
    HQPost,
    HQRead,
    locked_post,
    write,
)

# What a post's configuration allows for post.id (appliance/config.py): an id no post can have
# could only be an impostor's, or a typing error that would never match a post's batches.
POST_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")

# Headquarters' access log (its accounts database): every enrolment, key replacement and change.
for _action in ("posts.enroll", "posts.update", "posts.replace_key"):
    audit.register_action(_action, False)


def enroll(
    post_id: str,
    name: str,
    public_key_text: bytes,
    pull_url: str | None = None,
    *,
    replace_reason: str | None = None,
    record: Callable[[str, HQPost, dict], object] | None = None,
) -> HQPost:
    """Enrol a post. The key is PEM or base64 of the raw 32 bytes; it is the post's identity, so
    it is refused when another post holds it, and an enrolled post's key is replaced only with
    `replace_reason` (the same key again only updates the name and pull URL). `record(action,
    post, details)` runs inside the enrolment's transaction (the caller's access record: if it
    cannot be written, nothing is enrolled)."""
    post_id = post_id.strip()
    if not POST_ID.fullmatch(post_id):
        raise HQError(
            f"post id {post_id!r}: use lower-case letters, digits and dashes, at most 40, starting with a letter "
            "or a digit (the post's own post.id)"
        )
    if pull_url:
        problem = pull_url_problem(pull_url)
        if problem:
            raise HQError(problem)
    try:
        key = bundle.load_public_key(public_key_text, f"the public key for post {post_id}")
    except bundle.BundleError as exc:
        raise HQError(str(exc)) from None
    raw = base64.b64encode(bundle.raw_public(key)).decode()
    key_id = bundle.key_id(key)
    with write():
        holder = HQPost.select(HQPost.id).where((HQPost.public_key == raw) & (HQPost.id != post_id)).first()
        if holder is not None:
            raise HQError(
                f"this key (key id {key_id}) is already enrolled for post {holder.id}: one key under two ids would "
                f"let one post send as the other. Each post has its own key (`waypost sync keygen` on it)."
            )
        post = locked_post(post_id)
        details: dict = {"post": post_id, "key_id": key_id}
        if post is None:
            post = HQPost.create(
                id=post_id, name=name or post_id, public_key=raw, key_id=key_id, pull_url=pull_url or ""
            )
            action = "posts.enroll"
            details.update(name=post.name, pull_url=post.pull_url)
        else:
            if post.public_key != raw and not (replace_reason or "").strip():
                raise HQError(
                    f"post {post_id} is enrolled with key id {post.key_id}: replacing its key changes who may send as "
                    f"{post_id}. If its key really changed, give --replace --reason saying why."
                )
            action = "posts.update" if post.public_key == raw else "posts.replace_key"
            if action == "posts.replace_key":
                details.update(old_key_id=post.key_id, reason=(replace_reason or "").strip())
            # the key, name and address only: never the position (last_seq, chain_seq, chain_hash, ...)
            details.update(old_name=post.name, name=name or post.name)
            post.name, post.public_key, post.key_id = name or post.name, raw, key_id
            changed = [HQPost.name, HQPost.public_key, HQPost.key_id]
            if pull_url is not None:
                details.update(old_pull_url=post.pull_url, pull_url=pull_url)
                post.pull_url = pull_url
                changed.append(HQPost.pull_url)
            post.save(only=changed)
        if record is not None:
            record(action, post, details)
    return post


def pull_url_problem(url: str) -> str | None:
    """Why headquarters could not pull from `url` (the post's web address), or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as exc:
        return f"pull URL {url!r}: {exc} (the port must be a number, e.g. http://post-1:8080)"
    if parts.scheme not in ("http", "https") or re.search(r"\s", url):
        return f"pull URL {url!r} is not an http(s) URL (e.g. https://post-1.example:8443)"
    if not parts.hostname:
        return f"pull URL {url!r} names no host (e.g. http://post-1:8080)"
    if parts.query or parts.fragment:
        return f"pull URL {url!r} has a query or fragment: give the post's base address only"
    return None


def position(post: HQPost) -> dict:
    """What headquarters holds of `post`. last_read_seq and last_read_uuid name the read it holds
    under the highest outbox seq (absent while it holds none): a post restored from an older copy
    that has issued that seq again, to another read, sees it even when its access log shows
    nothing. A read, not whatever sits at last_seq, because headquarters keeps no seq for a legal
    hold event."""
    held = {
        "post": post.id,
        "last_seq": post.last_seq,
        "chain_seq": post.chain_seq,
        "chain_hash": post.chain_hash,
        "confirmation_id": post.confirmation_id,
    }
    read = (
        HQRead.select(HQRead.seq, HQRead.uuid)
        .where(HQRead.post_id == post.id)
        .order_by(HQRead.seq.desc())
        .limit(1)
        .first()
    )
    if read is not None:
        held.update(last_read_seq=read.seq, last_read_uuid=read.uuid)
    return held


def publish_hotlist(name: str, data: bytes) -> HQHotlist:
    """Publish (or replace) a state list; posts fetch it on their next contact."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}", name):
        raise HQError(f"list name {name!r}: use 1-40 letters, digits, spaces, '.', '_' or '-'")
    if not data.strip():
        raise HQError(f"the file for list {name!r} is empty")
    digest = hashlib.sha256(data).hexdigest()
    with write():
        HQHotlist.insert(name=name, sha256=digest, size=len(data), data=data, published_at=utcnow()).on_conflict(
            conflict_target=[HQHotlist.name],
            update={
                HQHotlist.sha256: digest,
                HQHotlist.size: len(data),
                HQHotlist.data: data,
                HQHotlist.published_at: utcnow(),
            },
        ).execute()
    return HQHotlist.get_by_id(name)


def check_post_request(post_id: str, path: str, date: str, signature: str) -> str | None:
    """None when a post's GET is signed with its enrolled key within the allowed skew, else why not."""
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


def status() -> list[dict]:
    rows = []
    for post in HQPost.select().order_by(HQPost.id):
        reads = HQRead.select().where(HQRead.post_id == post.id).count()
        last_refusal = (
            HQBatch.select()
            .where((HQBatch.post_id == post.id) & (HQBatch.status == "refused"))
            .order_by(HQBatch.id.desc())
            .first()
        )
        rows.append(
            {
                "post": post.id,
                "name": post.name,
                "key_id": post.key_id,
                "last_contact_at": post.last_contact_at,
                "last_seq": post.last_seq,
                "reads": reads,
                "chain_seq": post.chain_seq,
                "chain_status": post.chain_status,
                "chain_problem": post.chain_problem,
                "first_bad_seq": post.first_bad_seq,
                "backlog": post.backlog,
                "last_refusal": None
                if last_refusal is None
                else {"problem": last_refusal.problem, "message": last_refusal.message, "at": last_refusal.received_at},
            }
        )
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
