"""The headquarters web application.

- The sync API (/hq/v1/...): the batch endpoint posts push to, the position and the hotlists a
  post asks for. Every request authenticates itself with its post's enrolled key (a signed batch,
  or a signed GET), so the API has no session and no CSRF token.
- With `settings` (as `waypost hq serve` runs it): the people's side, on the post's own machinery
  (web.base_app: sign-in, roles, training, CSRF, the hash-chained access log in headquarters'
  accounts database under settings.data_dir): the posts page, the officers' search across every
  post (web/hq/pages.py), account administration and the access log pages.

Without settings the app is the API alone: tests that run a post in the same process use it, as
the accounts database of the post and of headquarters would otherwise share one binding.
"""
from __future__ import annotations

import os
import signal
import sqlite3

from flask import Blueprint, Flask, Response, abort, jsonify, request
from peewee import OperationalError

from appliance.config import Settings
from sync import hq
from web import RETRY_AFTER_S, is_busy
from web.access import public


def create_hq_app(database: str, max_batch_bytes: int = hq.DEFAULT_MAX_BATCH_BYTES,
                  settings: Settings | None = None) -> Flask:
    """`database`: headquarters' SQLite file or postgresql:// URL. `settings`: the configuration
    whose data_dir holds the accounts database (made by `waypost init` or `waypost hq serve`)."""
    if settings is None:
        app = Flask("waypost_hq")
    else:
        from web import admin as admin_pages
        from web import audit as audit_pages
        from web import auth, base_app, csrf, health, home, policy
        from web.hq import pages as hq_pages
        app = base_app(settings)
        for blueprint in (auth.bp, admin_pages.bp, audit_pages.bp, health.bp, home.bp, policy.bp, hq_pages.bp):
            app.register_blueprint(blueprint)
    hq.open_hq(database)

    @app.before_request
    def _connect_hq():
        hq.hq_database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close_hq(exc):
        if not hq.hq_database.is_closed():
            hq.hq_database.close()

    api = api_blueprint(max_batch_bytes)
    if settings is not None:
        csrf.exempt(api)
    app.register_blueprint(api)

    @app.get("/")
    @public
    def root():
        if settings is None:
            abort(404)
        from flask import redirect, url_for
        return redirect(url_for("home.index"))

    return app


def api_blueprint(max_batch_bytes: int) -> Blueprint:
    """The sync API: signed by the posts, no session."""
    bp = Blueprint("hq_api", __name__, url_prefix="/hq/v1")
    # Fault tests only: die between storing a batch and answering for it, as a power cut would.
    kill_after_store = os.environ.get("WAYPOST_HQ_FAULT") == "kill-after-store"

    @bp.errorhandler(OperationalError)
    @bp.errorhandler(sqlite3.OperationalError)
    def _busy(exc):
        """The database stayed locked past its busy timeout (another long write): nothing was stored.
        The post gets JSON it can quote, not the pages' HTML busy page, and sends the batch again."""
        if not is_busy(exc):
            raise exc
        return jsonify({"status": "busy", "problem": "busy",
                        "message": f"headquarters' database is busy with another write; nothing was stored: "
                                   f"try again in {RETRY_AFTER_S} s"}), 503, {"Retry-After": str(RETRY_AFTER_S)}

    @bp.post("/batches")
    @public
    def batches():
        after = (lambda: os.kill(os.getpid(), signal.SIGKILL)) if kill_after_store else None
        # The pages' 2 MiB form limit is not the batches' limit: ingest checks the size itself, so
        # that an oversized batch gets its named, logged refusal.
        request.max_content_length = 1 << 62
        try:
            outcome = hq.ingest(request.stream, request.content_length, max_batch_bytes,
                                request.remote_addr or "", after_store=after)
        except hq.Refused as refused:
            return jsonify(refused.as_json()), refused.http_status
        return jsonify(outcome.as_json())

    def signed_by(post_id):
        """None when the request is the post's own (signed GET), else a refusal to return."""
        post = hq.HQPost.get_or_none(hq.HQPost.id == post_id)
        if post is None:
            return jsonify({"status": "refused", "problem": "unknown_post",
                            "message": f"post {post_id!r} is not enrolled here: enrol it with `waypost hq enroll`"}), 404
        path = request.full_path if request.query_string else request.path
        problem = hq.check_post_request(post_id, path, request.headers.get("X-Waypost-Date", ""),
                                        request.headers.get("X-Waypost-Signature", ""))
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
        return jsonify({"hotlists": [{"name": h.name, "sha256": h.sha256, "size": h.size,
                                      "published_at": h.published_at.isoformat() + "Z"}
                                     for h in hq.HQHotlist.select(hq.HQHotlist.name, hq.HQHotlist.sha256,
                                                                  hq.HQHotlist.size, hq.HQHotlist.published_at)
                                     .order_by(hq.HQHotlist.name)]})

    @bp.get("/posts/<post_id>/hotlists/<name>")
    @public
    def hotlist_file(post_id, name):
        refused = signed_by(post_id)
        if refused:
            return refused
        hotlist = hq.HQHotlist.get_or_none(hq.HQHotlist.name == name)
        if hotlist is None:
            return jsonify({"status": "refused", "problem": "unknown_hotlist", "message": f"no list {name!r}"}), 404
        return Response(bytes(hotlist.data), mimetype="text/csv",
                        headers={"X-Waypost-Sha256": hotlist.sha256})

    return bp
