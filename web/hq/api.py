"""Headquarters' sync API (/hq/v1/...): the batch endpoint posts push to, and the position and the
hotlists a post asks for. Every request authenticates itself with its post's enrolled key (a signed
batch, or a signed GET), so the API has no session and no CSRF token."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from flask import Blueprint, Response, jsonify, request
from peewee import OperationalError

from sync import hq
from web import RETRY_AFTER_S, is_busy
from web.access import public


def api_blueprint(max_batch_bytes: int, after_store: Callable[[], None] | None = None) -> Blueprint:
    """The sync API: signed by the posts, no session. `after_store` runs between storing a batch
    and answering for it (hq.ingest)."""
    bp = Blueprint("hq_api", __name__, url_prefix="/hq/v1")

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
        # The pages' 2 MiB form limit is not the batches' limit: ingest checks the size itself, so
        # that an oversized batch gets its named, logged refusal.
        request.max_content_length = 1 << 62
        try:
            outcome = hq.ingest(
                request.stream,
                request.content_length,
                max_batch_bytes,
                request.remote_addr or "",
                after_store=after_store,
            )
        except hq.Refused as refused:
            return jsonify(refused.as_json()), refused.http_status
        return jsonify(outcome.as_json())

    def signed_by(post_id):
        """None when the request is the post's own (signed GET), else a refusal to return."""
        post = hq.HQPost.get_or_none(hq.HQPost.id == post_id)
        if post is None:
            return jsonify(
                {
                    "status": "refused",
                    "problem": "unknown_post",
                    "message": f"post {post_id!r} is not enrolled here: enrol it with `waypost hq enroll`",
                }
            ), 404
        path = request.full_path if request.query_string else request.path
        problem = hq.check_post_request(
            post_id, path, request.headers.get("X-Waypost-Date", ""), request.headers.get("X-Waypost-Signature", "")
        )
        if problem:
            return jsonify({"status": "refused", "problem": "bad_signature", "message": problem}), 401
        return None

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
