"""Headquarters' sync API (/hq/v1/...): the batch endpoint posts push to, and the position and the
hotlists a post asks for. Every request authenticates itself with its post's enrolled key (a signed
batch, or a signed GET), so the API has no session and no CSRF token."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from flask import Blueprint, Response, jsonify, request
from peewee import OperationalError

from sync import hq, protocol
from web import RETRY_AFTER_S, is_busy
from web.access import public
from web.server import BODY_TOO_LARGE

log = logging.getLogger(__name__)


def api_blueprint(
    max_batch_bytes: int, after_store: Callable[[], None] | None = None, refusals: hq.RefusalLog | None = None
) -> Blueprint:
    """The sync API: signed by the posts, no session. `after_store` runs between storing a batch
    and answering for it (hq.ingest); `refusals` logs refused batches (hq.RefusalLog)."""
    bp = Blueprint("hq_api", __name__, url_prefix="/hq/v1")

    @bp.after_request
    def _pending_refusals(response):
        # refusals whose row found SQLite's write lock taken (hq.RefusalLog) are written once an
        # answer is out, if the lock is free then: nobody waits for them
        if refusals is not None and refusals.pending():
            response.call_on_close(_write_refusals)
        return response

    def _write_refusals() -> None:
        assert refusals is not None
        try:
            with hq.hq_database.connection_context():
                refusals.flush()
        except Exception:  # after the answer: nobody to tell but the log; tried again after the next one
            log.exception("writing refusals to the batch log")

    @bp.errorhandler(OperationalError)
    @bp.errorhandler(sqlite3.OperationalError)
    def _busy(exc):
        """The database stayed locked past its busy timeout (another long write): nothing was stored.
        The post gets JSON it can quote, not the pages' HTML busy page, and sends the batch again."""
        if not is_busy(exc):
            raise exc
        return (
            jsonify(
                {
                    "status": "busy",
                    "problem": "busy",
                    "message": f"headquarters' database is busy with another write; nothing was stored: "
                    f"try again in {RETRY_AFTER_S} s",
                }
            ),
            503,
            {"Retry-After": str(RETRY_AFTER_S)},
        )

    @bp.post("/batches")
    @public
    def batches():
        """A push, checked in the order of what each check costs: who sends it (its signed
        X-Waypost-Push header, before the body is read and without the write lock), its size, then
        its body, spooled to a temporary file and hashed on the way, compared with the header, and
        only then unpacked and stored (hq.ingest)."""
        # The pages' 2 MiB form limit is not the batches' limit: the size is checked here, so that
        # an oversized batch gets its named, logged refusal.
        request.max_content_length = 1 << 62
        remote, length = request.remote_addr or "", request.content_length
        try:
            push = hq.authenticate(
                request.headers.get(protocol.PUSH_HEADER),
                request.headers.get(protocol.SIGNATURE_HEADER),
                remote,
                length,
                refusals,
            )
            size = length if length is not None else push.length
            if BODY_TOO_LARGE in request.environ or size > max_batch_bytes:
                hq.refuse_push(
                    push,
                    protocol.ProtocolError(
                        "oversized",
                        f"the batch is {size} bytes; this headquarters takes at most {max_batch_bytes} "
                        "(`waypost hq serve --max-batch-mb`): lower sync.batch_max_reads on the post",
                    ),
                    remote,
                    length,
                    refusals,
                )
            with hq.spool(request.stream, push, max_batch_bytes) as body:
                outcome = hq.ingest(
                    body.file,
                    body.size,
                    max_batch_bytes,
                    remote,
                    after_store=after_store,
                    pushed=body,
                    refusals=refusals,
                )
        except hq.Refused as refused:
            return jsonify(refused.as_json()), refused.http_status
        except hq.SpoolError as exc:
            log.error("a batch from %s could not be held: %s", remote, exc)
            return (
                jsonify(
                    {
                        "status": "busy",
                        "problem": "no_space",
                        "message": f"headquarters could not hold the batch on its disk ({exc}); nothing was "
                        f"stored: try again in {RETRY_AFTER_S} s",
                    }
                ),
                503,
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        return jsonify(outcome.as_json())

    nonces = protocol.Nonces()

    @bp.get("/challenge")
    @public
    def challenge():
        """A nonce for a post's next signed GET (sync/protocol.py, 'signed GETs'): it tells nothing."""
        return jsonify({"nonce": nonces.issue()})

    def signed_by(post_id):
        """None when the request is the post's own (signed GET), else a refusal to return. A refusal
        goes to the batch log (folded by `refusals`), so `waypost hq status` and the Posts page show
        it; an unknown post is answered 404 and logged as such."""
        path = request.full_path if request.query_string else request.path
        date = request.headers.get(protocol.DATE_HEADER, "")
        refused = hq.check_post_request(
            post_id,
            path,
            request.headers.get(protocol.NONCE_HEADER, ""),
            date,
            request.headers.get(protocol.SIGNATURE_HEADER, ""),
            nonces,
        )
        if refused is None:
            hq.note_contact(post_id, protocol.offset_s(date))
            return None
        problem, message = refused
        hq.log_refused_request(
            post_id, f"GET {request.path}", problem, message, request.remote_addr or "", refusals, proven=False
        )
        status = {"unknown_post": 404, "renamed": protocol.PROBLEMS["renamed"]}.get(problem, 401)
        return jsonify({"status": "refused", "problem": problem, "message": message}), status

    @bp.get("/posts/<post_id>/position")
    @public
    def post_position(post_id):
        refused = signed_by(post_id)
        if refused:
            return refused
        return jsonify(hq.position(hq.HQPost.get_by_id(post_id)))

    @bp.get("/posts/<post_id>/hotlists")
    @public
    def hotlists(post_id):
        refused = signed_by(post_id)
        if refused:
            return refused
        return jsonify(
            {
                "hotlists": [
                    {
                        "name": h.name,
                        "sha256": h.sha256,
                        "size": h.size,
                        "published_at": h.published_at.isoformat() + "Z",
                    }
                    for h in hq.HQHotlist.select(
                        hq.HQHotlist.name, hq.HQHotlist.sha256, hq.HQHotlist.size, hq.HQHotlist.published_at
                    ).order_by(hq.HQHotlist.name)
                ]
            }
        )

    @bp.get("/posts/<post_id>/hotlists/<name>")
    @public
    def hotlist_file(post_id, name):
        refused = signed_by(post_id)
        if refused:
            return refused
        hotlist = hq.HQHotlist.get_or_none(hq.HQHotlist.name == name)
        if hotlist is None:
            return jsonify({"status": "refused", "problem": "unknown_hotlist", "message": f"no list {name!r}"}), 404
        return Response(bytes(hotlist.data), mimetype="text/csv", headers={"X-Waypost-Sha256": hotlist.sha256})

    return bp
