"""Headquarters' side of its posts: enrolment, what it holds of each (its position), their status
and access-log copies, the signed GETs a post makes, and the hotlists published to them; a post's
rename (its history moved to a new id, the old one kept as an alias) and re-base (a re-imaged
post's new key opens a new segment of its chain; the closed one is kept and verified on its own)."""

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
    HQPostAlias,
    HQPostSegment,
    HQRead,
    hq_database,
    locked_post,
    write,
)

# What a post's configuration allows for post.id (appliance/config.py): an id no post can have
# could only be an impostor's, or a typing error that would never match a post's batches.
POST_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")

# Headquarters' access log (its accounts database): every enrolment, key replacement and change.
for _action in ("posts.enroll", "posts.update", "posts.replace_key", "posts.rename", "posts.rebase"):
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
        _refuse_key_of_another(raw, key_id, post_id)
        alias = HQPostAlias.get_or_none(HQPostAlias.old_id == post_id)
        if alias is not None:
            raise HQError(
                f"post id {post_id} was renamed {alias.post_id} on {alias.renamed_at:%Y-%m-%d %H:%M} UTC "
                f"({alias.reason}); its history is under {alias.post_id}. Set post.id = {alias.post_id} on the post "
                "rather than enrolling the old id again"
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
        # where the frames of the second lane stand (sync/post.py): a post that sees it may send them there
        "frame_seq": post.frame_seq,
    }
    read = (
        HQRead.select(HQRead.seq, HQRead.uuid)
        .where((HQRead.post_id == post.id) & (HQRead.segment == post.segment))
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


def check_post_request(
    post_id: str, path: str, nonce: str, date: str, signature: str, nonces: protocol.Nonces
) -> tuple[str, str] | None:
    """None when a post's GET is signed with its enrolled key over a nonce headquarters issued and
    has not taken yet (sync/protocol.py, 'signed GETs'), else (problem, why not): unknown_post,
    bad_signature or replay. The post's signed time is never a reason to refuse."""
    post = HQPost.get_or_none(HQPost.id == post_id)
    if post is None:
        # a renamed post still asking under its old id (signed with its key) is told its new id
        renamed = renamed_request(post_id, protocol.post_get_message(post_id, path, nonce, date), signature)
        if renamed is not None:
            return "renamed", renamed
        return "unknown_post", f"post {post_id!r} is not enrolled here: enrol it with `waypost hq enroll`"
    if not nonce or not date or not signature:
        return "bad_signature", (
            f"the request carries no {protocol.NONCE_HEADER}, {protocol.DATE_HEADER} and X-Waypost-Signature "
            "(the post runs an older Waypost than headquarters: update it)"
        )
    try:
        key = bundle.load_public_key(post.public_key.encode())
        key.verify(base64.b64decode(signature, validate=True), protocol.post_get_message(post_id, path, nonce, date))
    except (InvalidSignature, ValueError, bundle.BundleError):
        return "bad_signature", (
            "the signature does not verify with the post's enrolled key: check post.id and sync.key_file on "
            "the post, and that headquarters enrolled its current public key. A re-imaged post (a fresh data "
            "directory and a new key) rejoins with `waypost hq rebase POST --public-key FILE --reason TEXT` at "
            "headquarters"
        )
    if not nonces.take(nonce):
        return "replay", protocol.REPLAY.format(ttl=int(protocol.NONCE_TTL_S))
    return None


def note_contact(post_id: str, clock_offset_s: int | None) -> None:
    """A post's signed GET or a pull answered: its last contact and its clock's offset (the post's
    minus headquarters', None: not measured). Written only when either has moved (a minute, two
    seconds), so a post's few GETs a minute do not each take the write lock."""
    post = HQPost.get_or_none(HQPost.id == post_id)
    if post is None:
        return
    now = utcnow()
    stale = post.last_contact_at is None or (now - post.last_contact_at).total_seconds() >= 60
    moved = clock_offset_s is not None and (
        post.clock_offset_s is None or abs(clock_offset_s - post.clock_offset_s) >= 2
    )
    if not stale and not moved:
        return
    with write():
        changes: dict = {HQPost.last_contact_at: now}
        if clock_offset_s is not None:
            changes.update({HQPost.clock_offset_s: clock_offset_s, HQPost.clock_checked_at: now})
        HQPost.update(changes).where(HQPost.id == post_id).execute()


def log_refused_request(
    post_id: str, what: str, problem: str, message: str, remote_addr: str, refusals=None, proven: bool = True
) -> None:
    """A signed GET or a pull refused (bad signature, unknown post, replay) into the batch log as a
    refused row, `what` ("GET /hq/v1/...", "pull") in its batch column: folded and bounded by
    `refusals` (a RefusalLog, sync/hq/ingest.py) when given, else a row of its own."""
    row = {
        "batch_id": what[:100],
        "post_id": str(post_id)[:100].encode("utf-8", "replace").decode("utf-8"),
        "first_seq": None,
        "last_seq": None,
        "chain_first": None,
        "chain_last": None,
        "size": 0,
        "status": "refused",
        "problem": problem,
        "message": message,
        "remote_addr": remote_addr[:200],
    }
    if refusals is not None:
        refusals.record(row, proven=proven)
        return
    with write():
        HQBatch.insert(**row).execute()


def status(late_after_minutes: int | None = None, clock_warn_s: int | None = None) -> list[dict]:
    """Each post's row; its "warnings" say (in sentences) when it is late (no contact for more than
    `late_after_minutes`), when its last request was refused, and when its clock is off from
    headquarters' by more than `clock_warn_s` (either None: not checked)."""
    rows = []
    now = utcnow()
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
                "clock_offset_s": post.clock_offset_s,
                "clock_checked_at": post.clock_checked_at,
                "frames_to_come": frames_to_come(post.id),
                "last_refusal": None
                if last_refusal is None
                else {"problem": last_refusal.problem, "message": last_refusal.message, "at": last_refusal.received_at},
            }
        )
        rows[-1]["warnings"] = _warnings(rows[-1], now, late_after_minutes, clock_warn_s)  # type: ignore[assignment]
    return rows


def _warnings(row: dict, now, late_after_minutes: int | None, clock_warn_s: int | None) -> list[str]:
    out = []
    contact, refusal, offset = row["last_contact_at"], row["last_refusal"], row["clock_offset_s"]
    if late_after_minutes is not None:
        minutes = None if contact is None else int((now - contact).total_seconds() // 60)
        if minutes is None or minutes > late_after_minutes:
            out.append(
                f"{row['post']} is late: "
                + ("never in contact" if minutes is None else f"no contact for {minutes} minutes")
                + f" (more than {late_after_minutes}): check its network and `waypost sync status` on it"
            )
    # refused after its last contact (a refused push from the post itself counts as contact, a
    # moment after its refusal row: a couple of seconds' grace)
    if refusal is not None and (contact is None or (refusal["at"] - contact).total_seconds() >= -2):
        out.append(f"{row['post']}'s last request was refused ({refusal['problem']}): {refusal['message']}")
    if clock_warn_s is not None and offset is not None and abs(offset) > clock_warn_s:
        out.append(
            f"{row['post']}'s clock is {abs(offset)} s {'ahead' if offset > 0 else 'behind'} "
            f"(more than {clock_warn_s}): its reads are stamped with it; check its time source (NTP)"
        )
    return out


def frames_to_come(post_id: str) -> int:
    """Frames that reads of the post held here named and that have not come yet (the second lane)."""
    p = hq_database.param
    return hq_database.execute_sql(
        f"SELECT count(*) FROM hq_frame_due d JOIN hq_read r ON r.post_id = d.post_id AND r.uuid = d.read_uuid "
        f"WHERE d.post_id = {p}",
        (post_id,),
    ).fetchone()[0]


def verify_chain(post_id: str) -> tuple[bool, int | None, str]:
    """Walk the copies of a post's access log, each segment on its own (a re-based post's new log
    starts at genesis again: `waypost hq rebase`): (ok, first bad seq, message). The message
    names each segment when there is more than one."""
    post = HQPost.get_or_none(HQPost.id == post_id)
    segments = sorted(
        {s.segment for s in HQPostSegment.select(HQPostSegment.segment).where(HQPostSegment.post_id == post_id)}
        | ({post.segment} if post is not None else {1})
    )
    if len(segments) == 1:
        return verify_segment(post_id, segments[0])
    ok, first_bad, said = True, None, []
    for segment in segments:
        good, bad, message = verify_segment(post_id, segment)
        said.append(f"segment {segment}: {message}")
        if not good and ok:
            ok, first_bad = False, bad
    return ok, first_bad, "; ".join(said)


def verify_segment(post_id: str, segment: int) -> tuple[bool, int | None, str]:
    """Walk one segment's copy of a post's access log from genesis: (ok, first bad seq, message)."""
    prev, want = GENESIS, 1
    query = (
        HQAccessRecord.select()
        .where((HQAccessRecord.post_id == post_id) & (HQAccessRecord.segment == segment))
        .order_by(HQAccessRecord.seq)
    )
    for rec in query.dicts().iterator():
        if rec["seq"] != want:
            return False, want, f"record {want} is missing"
        if rec["prev_hash"] != prev or audit.digest(rec) != rec["hash"]:
            return False, rec["seq"], f"record {rec['seq']} does not verify"
        prev, want = rec["hash"], want + 1
    return True, None, f"{want - 1} record(s) verify"


def _refuse_key_of_another(raw: str, key_id: str, post_id: str) -> None:
    """One key under two ids would let one post send as the other: refused, whoever enrols it."""
    holder = HQPost.select(HQPost.id).where((HQPost.public_key == raw) & (HQPost.id != post_id)).first()
    if holder is not None:
        raise HQError(
            f"this key (key id {key_id}) is already enrolled for post {holder.id}: one key under two ids would "
            f"let one post send as the other. Each post has its own key (`waypost sync keygen` on it)."
        )


# --- rename and re-base: a post's history moved, never copied ------------------------------------

# Every table that names a post (hq_post's own id apart), moved whole by a rename. hq_read_image
# names reads, not posts; hq_frame_due exists from schema 11 (frames in a second lane).
POST_TABLES = (
    "hq_read",
    "hq_access_record",
    "hq_alert",
    "hq_batch",
    "hq_camera",
    "hq_read_text",
    "hq_legal_hold",
    "hq_legal_hold_read",
    "hq_post_segment",
    "hq_post_alias",
    "hq_frame_due",
)


def alias_of(post_id: str) -> HQPostAlias | None:
    """The rename that made `post_id` an old id of another post, or None."""
    return HQPostAlias.get_or_none(HQPostAlias.old_id == post_id)


def old_ids(post_id: str) -> list[str]:
    """The ids post `post_id` had before `waypost hq rename`, oldest rename first."""
    query = HQPostAlias.select(HQPostAlias.old_id).where(HQPostAlias.post_id == post_id)
    return [a.old_id for a in query.order_by(HQPostAlias.renamed_at)]


def renamed_message(alias: HQPostAlias) -> str:
    """What a post still sending under its old id is told (once it has shown it is that post)."""
    return (
        f"post {alias.old_id} was renamed {alias.post_id} at headquarters on {alias.renamed_at:%Y-%m-%d %H:%M} UTC: "
        f"set post.id = {alias.post_id} in the post's configuration and restart it; it then continues where it "
        "was (nothing is sent again)"
    )


def renamed_request(post_id: str, message: bytes, signature: str) -> str | None:
    """renamed_message when `post_id` is an old id and `message` is signed with its post's key
    (whoever else asks learns nothing of which ids are enrolled), else None."""
    alias = alias_of(post_id)
    post = None if alias is None else HQPost.get_or_none(HQPost.id == alias.post_id)
    if alias is None or post is None:
        return None
    try:
        key = bundle.load_public_key(post.public_key.encode())
        key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, ValueError, bundle.BundleError):
        return None
    return renamed_message(alias)


def rename(
    old: str, new: str, reason: str, *, record: Callable[[str, HQPost, dict], object] | None = None
) -> tuple[HQPost, dict[str, int]]:
    """Move post `old`'s whole history at headquarters to the id `new` in one transaction: its row
    (key, position, chain), reads, access records, alerts, holds, batch log, cameras, search
    texts, segments, aliases. `old` stays as an alias of `new`, so the lines the post signed
    under it still verify. Returns the post and the rows moved per table. `record(action, post,
    details)` runs in the transaction (the caller's access record)."""
    old, new, reason = old.strip(), new.strip(), (reason or "").strip()
    if not reason:
        raise HQError("a rename needs a reason (recorded): why the post's id changes")
    if not POST_ID.fullmatch(new):
        raise HQError(
            f"post id {new!r}: use lower-case letters, digits and dashes, at most 40, starting with a letter "
            "or a digit (the post's own post.id)"
        )
    db = hq_database.obj
    with write():
        post = locked_post(old)
        if post is None:
            alias = alias_of(old)
            if alias is not None:
                raise HQError(f"post {old} was already renamed {alias.post_id}: nothing to move")
            raise HQError(f"post {old!r} is not enrolled here (`waypost hq status` lists the posts)")
        if old == new:
            raise HQError(f"post {old} already has the id {new}")
        if HQPost.get_or_none(HQPost.id == new) is not None:
            raise HQError(
                f"post {new} is enrolled already: a rename moves {old}'s history to an id no post has. Two "
                "posts' histories are never merged"
            )
        taken = alias_of(new)
        if taken is not None and taken.post_id != old:
            raise HQError(f"{new} is an old id of post {taken.post_id} (renamed): choose another id")
        p = hq_database.param
        moved: dict[str, int] = {}
        for table in POST_TABLES:
            if not db.table_exists(table):
                continue
            moved[table] = db.execute_sql(f"UPDATE {table} SET post_id = {p} WHERE post_id = {p}", (new, old)).rowcount
        db.execute_sql(f"UPDATE hq_post SET id = {p} WHERE id = {p}", (new, old))
        HQPostAlias.delete().where(HQPostAlias.old_id == new).execute()  # renamed back: no longer an old id
        HQPostAlias.create(old_id=old, post_id=new, renamed_at=utcnow(), reason=reason)
        post = HQPost.get_by_id(new)
        if record is not None:
            record(
                "posts.rename",
                post,
                {"post": new, "old_post": old, "reason": reason, "moved": {k: v for k, v in moved.items() if v}},
            )
    return post, moved


def rebase(
    post_id: str, public_key_text: bytes, reason: str, *, record: Callable[[str, HQPost, dict], object] | None = None
) -> tuple[HQPost, HQPostSegment, int]:
    """A re-imaged post (a fresh data directory, a new key, the same post.id) rejoins: the post's
    current chain copy is closed as a segment (its key, what headquarters held, whether its log
    verifies, when and why) and a new segment opens for the new key, whose outbox seqs and access
    log start again from genesis. The closed segment's reads and records stay, searchable and
    verifiable; only the list of its frames still to come is dropped (they were on the wiped data
    directory). Returns the post, the closed segment and how many such frames will never come.
    `record(action, post, details)` runs in the transaction (the caller's access record)."""
    reason = (reason or "").strip()
    if not reason:
        raise HQError("a re-base needs a reason (recorded): why the post has a new key and log")
    try:
        key = bundle.load_public_key(public_key_text, f"the public key for post {post_id}")
    except bundle.BundleError as exc:
        raise HQError(str(exc)) from None
    raw = base64.b64encode(bundle.raw_public(key)).decode()
    key_id = bundle.key_id(key)
    with write():
        _refuse_key_of_another(raw, key_id, post_id)
        post = locked_post(post_id)
        if post is None:
            alias = alias_of(post_id)
            raise HQError(renamed_message(alias) if alias is not None else f"post {post_id!r} is not enrolled here")
        closed = HQPostSegment.select().where(HQPostSegment.post_id == post_id)
        if post.public_key == raw or any(s.public_key == raw for s in closed):
            raise HQError(
                f"key id {key_id} is a key post {post_id} already had: a re-imaged post makes a new one "
                "(`waypost sync keygen` on it), and it is re-based before that key is enrolled any other way (not "
                "`hq enroll --replace`, nor the provisioning first). A post restored from an older copy keeps its "
                "key: see README 'Rolling back'"
            )
        previous = max(closed, key=lambda s: s.segment, default=None)
        ok, first_bad, message = verify_segment(post_id, post.segment)
        segment = HQPostSegment.create(
            post_id=post_id,
            segment=post.segment,
            key_id=post.key_id,
            public_key=post.public_key,
            last_seq=post.last_seq,
            chain_seq=post.chain_seq,
            chain_hash=post.chain_hash,
            chain_status="verified" if ok and post.chain_status == "verified" else "broken",
            chain_problem=post.chain_problem or ("" if ok else message),
            confirmation_id=post.confirmation_id,
            opened_at=previous.closed_at if previous is not None else post.enrolled_at,
            closed_at=utcnow(),
            reason=reason,
        )
        # The frames the closed segment's reads named and the post had not sent yet (the second
        # lane waits for the reads) were on the wiped data directory: they can never come.
        never_sent: int = hq_database.execute_sql(
            f"DELETE FROM hq_frame_due WHERE post_id = {hq_database.param}", (post_id,)
        ).rowcount
        post.segment += 1
        post.public_key, post.key_id = raw, key_id
        post.last_seq, post.chain_seq, post.chain_hash, post.confirmation_id = 0, 0, GENESIS, 0
        post.chain_status, post.chain_problem, post.first_bad_seq, post.backlog = "verified", "", None, 0
        changed = [
            HQPost.segment,
            HQPost.public_key,
            HQPost.key_id,
            HQPost.last_seq,
            HQPost.chain_seq,
            HQPost.chain_hash,
            HQPost.confirmation_id,
            HQPost.chain_status,
            HQPost.chain_problem,
            HQPost.first_bad_seq,
            HQPost.backlog,
        ]
        if "frame_seq" in HQPost._meta.fields:  # the second lane's position (schema 11) starts again too
            post.frame_seq = 0
            changed.append(HQPost._meta.fields["frame_seq"])
        post.save(only=changed)
        if record is not None:
            record(
                "posts.rebase",
                post,
                {
                    "post": post_id,
                    "reason": reason,
                    "closed_segment": segment.segment,
                    "segment": post.segment,
                    "old_key_id": segment.key_id,
                    "key_id": key_id,
                    "last_seq": segment.last_seq,
                    "chain_seq": segment.chain_seq,
                    "chain_hash": segment.chain_hash,
                    "chain_status": segment.chain_status,
                    "first_bad_seq": first_bad,
                    "frames_never_sent": never_sent,
                },
            )
    return post, segment, never_sent


def segments(post_id: str) -> list[dict]:
    """A post's closed segments (`waypost hq rebase`), oldest first, each with what it holds."""
    return [
        {
            "segment": s.segment,
            "key_id": s.key_id,
            "last_seq": s.last_seq,
            "chain_seq": s.chain_seq,
            "chain_hash": s.chain_hash,
            "chain_status": s.chain_status,
            "opened_at": s.opened_at,
            "closed_at": s.closed_at,
            "reason": s.reason,
            "reads": HQRead.select().where((HQRead.post_id == post_id) & (HQRead.segment == s.segment)).count(),
        }
        for s in HQPostSegment.select().where(HQPostSegment.post_id == post_id).order_by(HQPostSegment.segment)
    ]
