"""The post's pull endpoint: headquarters fetches the next batch with a request signed by its key
(sync.hq_public_key). Each request is signed over a nonce this post issued at /sync/challenge
(sync/protocol.py, 'signed GETs'). The query is headquarters' position; what it holds is marked sent here
(that is its acknowledgement of the previous batch), and the next batch is built after it and
streamed as it is built."""

from __future__ import annotations

import base64
import fcntl

from cryptography.exceptions import InvalidSignature
from flask import Blueprint, Response, current_app, g, jsonify, request

from appliance import bundle, db
from appliance.memory import return_free_memory
from sync import post, protocol
from web.access import public

bp = Blueprint("sync", __name__, url_prefix="/sync")


def _refuse(status: int, problem: str, message: str):
    return jsonify({"status": "refused", "problem": problem, "message": message}), status


def _nonces() -> protocol.Nonces:
    """The challenges this post's app issued (sync/protocol.py, 'signed GETs')."""
    return current_app.extensions.setdefault("waypost_pull_nonces", protocol.Nonces())


def _check_signature(settings) -> tuple[str, str] | None:
    """None when the request is signed by headquarters' key over a nonce this post issued and has
    not taken yet, else (problem, why not). Headquarters' signed time is never a reason to refuse:
    its offset from this clock is recorded (sync/post.py record_state)."""
    nonce = request.headers.get(protocol.NONCE_HEADER, "")
    date, signature = request.headers.get(protocol.DATE_HEADER, ""), request.headers.get("X-Waypost-Signature", "")
    if not nonce or not date or not signature:
        return "bad_signature", (
            f"the request carries no {protocol.NONCE_HEADER}, {protocol.DATE_HEADER} and X-Waypost-Signature "
            "(headquarters runs an older Waypost than this post: update it)"
        )
    key = bundle.load_public_key(settings.sync.hq_public_key.encode(), "sync.hq_public_key")
    path = request.full_path if request.query_string else request.path
    try:
        key.verify(
            base64.b64decode(signature, validate=True), protocol.pull_message(settings.post.id, path, nonce, date)
        )
    except (InvalidSignature, ValueError):
        return "bad_signature", "the signature does not verify with sync.hq_public_key"
    if not _nonces().take(nonce):
        return "replay", protocol.REPLAY.format(ttl=int(protocol.NONCE_TTL_S))
    offset = protocol.offset_s(date)
    if offset is not None:
        post.note_clock(settings, -offset)  # this clock minus headquarters'
    return None


@bp.get("/challenge")
@public  # a nonce for headquarters' next signed request; it tells nothing
def challenge():
    if not g.settings.sync.hq_public_key:
        return _refuse(404, "pull_disabled", "pull is off on this post: set sync.hq_public_key to enable it")
    return jsonify({"nonce": _nonces().issue()})


@bp.get("/batch")
@public  # authenticated by headquarters' signature, not by a session
def batch():
    settings = g.settings
    if not settings.sync.hq_public_key:
        return _refuse(404, "pull_disabled", "pull is off on this post: set sync.hq_public_key to enable it")
    refused = _check_signature(settings)
    if refused:
        return _refuse(401, *refused)
    try:
        pos = post.Position.of(request.args)
    except post.SyncError:
        return _refuse(400, "malformed", "give last_seq, chain_seq and chain_hash (headquarters' position)")
    spool = post._spool(settings)
    lock = open(spool / "push.lock", "a")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return _refuse(503, "busy", "a push to headquarters is running on this post; ask again shortly")
        try:
            post.reconcile(pos)
        except post.Diverged as exc:
            lock.close()
            return _refuse(409, exc.problem, str(exc))
        key = bundle.post_key(settings)
        plan = post.plan_batch(settings, key, pos)
    except BaseException:
        lock.close()
        raise
    post.record_pull(settings)
    if plan is None:
        lock.close()
        return Response(status=204)

    def body():
        # streamed as it is built (chunked): headquarters ingests while the post still reads, and
        # no copy of the batch is kept here. The request's connection is closed by the time the
        # server iterates this, so it opens its own. A failure half-way cuts the stream, which
        # headquarters refuses as an incomplete batch (nothing stored, nothing marked here).
        with db.connection():
            yield from post.stream_batch(settings, key, plan)

    response = Response(body(), mimetype=protocol.CONTENT_TYPE)
    response.call_on_close(lock.close)  # the lock is held until the last byte has gone
    # Each of the server's threads builds in its own malloc arena (SQLite's page cache, the JSON of
    # a thousand reads), and glibc keeps what a finished batch freed: over a catch-up the post
    # would grow by a batch's working set for every thread that served one. Hand it back.
    response.call_on_close(return_free_memory)
    response.headers["X-Waypost-Batch"] = plan.header["batch"]
    current_app.logger.info(
        "pull: batch %s (%s..%s) to %s",
        plan.header["batch"],
        plan.header["first_seq"],
        plan.header["last_seq"],
        request.remote_addr,
    )
    return response
