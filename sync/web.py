"""The headquarters web application: the batch endpoint posts push to, the position a post asks
for before it builds batches, and a status page of the posts.

Batches authenticate themselves (each is signed with its post's enrolled key), so the API needs no
session. The status page shows no plate data (post names, sequence numbers, chain status).
"""
from __future__ import annotations

import os
import signal

from flask import Flask, Response, abort, jsonify, render_template_string, request

from sync import hq

STATUS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Waypost headquarters</title></head>
<body><h1>Waypost headquarters: posts</h1>
{% if not posts %}<p>No post is enrolled yet: <code>waypost hq enroll</code>.</p>{% else %}
<table>
<thead><tr><th>Post</th><th>Name</th><th>Key id</th><th>Last contact (UTC)</th><th>Reads held</th>
<th>Outbox seq held</th><th>Backlog on the post</th><th>Access log</th><th>Last refusal</th></tr></thead>
<tbody>{% for p in posts %}<tr>
<td>{{ p.post }}</td><td>{{ p.name }}</td><td>{{ p.key_id }}</td>
<td>{{ p.last_contact_at.strftime('%Y-%m-%d %H:%M:%S') if p.last_contact_at else 'never' }}</td>
<td>{{ p.reads }}</td><td>{{ p.last_seq }}</td><td>{{ p.backlog }}</td>
<td>{% if p.chain_status == 'verified' %}verified up to record {{ p.chain_seq }}{% else %}BROKEN
 (first bad record {{ p.first_bad_seq }}): {{ p.chain_problem }}{% endif %}</td>
<td>{% if p.last_refusal %}{{ p.last_refusal.problem }}: {{ p.last_refusal.message }}{% endif %}</td>
</tr>{% endfor %}</tbody></table>{% endif %}
</body></html>"""


def create_hq_app(database: str, max_batch_bytes: int = hq.DEFAULT_MAX_BATCH_BYTES) -> Flask:
    app = Flask("waypost_hq")
    hq.open_hq(database)
    # Fault tests only: die between storing a batch and answering for it, as a power cut would.
    kill_after_store = os.environ.get("WAYPOST_HQ_FAULT") == "kill-after-store"

    @app.before_request
    def _connect():
        hq.hq_database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(exc):
        if not hq.hq_database.is_closed():
            hq.hq_database.close()

    @app.post("/hq/v1/batches")
    def batches():
        after = (lambda: os.kill(os.getpid(), signal.SIGKILL)) if kill_after_store else None
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

    @app.get("/hq/v1/posts/<post_id>/position")
    def post_position(post_id):
        refused = signed_by(post_id)
        if refused:
            return refused
        return jsonify(hq.position(hq.HQPost.get_by_id(post_id)))

    @app.get("/hq/v1/posts/<post_id>/hotlists")
    def hotlists(post_id):
        refused = signed_by(post_id)
        if refused:
            return refused
        return jsonify({"hotlists": [{"name": h.name, "sha256": h.sha256, "size": h.size,
                                      "published_at": h.published_at.isoformat() + "Z"}
                                     for h in hq.HQHotlist.select(hq.HQHotlist.name, hq.HQHotlist.sha256,
                                                                  hq.HQHotlist.size, hq.HQHotlist.published_at)
                                     .order_by(hq.HQHotlist.name)]})

    @app.get("/hq/v1/posts/<post_id>/hotlists/<name>")
    def hotlist_file(post_id, name):
        refused = signed_by(post_id)
        if refused:
            return refused
        hotlist = hq.HQHotlist.get_or_none(hq.HQHotlist.name == name)
        if hotlist is None:
            return jsonify({"status": "refused", "problem": "unknown_hotlist", "message": f"no list {name!r}"}), 404
        return Response(bytes(hotlist.data), mimetype="text/csv",
                        headers={"X-Waypost-Sha256": hotlist.sha256})

    @app.get("/hq/v1/status")
    def status_json():
        return jsonify({"posts": [dict(p, last_contact_at=p["last_contact_at"].isoformat() + "Z"
                                       if p["last_contact_at"] else None,
                                       last_refusal=None if p["last_refusal"] is None else
                                       dict(p["last_refusal"], at=p["last_refusal"]["at"].isoformat() + "Z"))
                                  for p in hq.status()]})

    @app.get("/hq")
    def status_page():
        return render_template_string(STATUS_PAGE, posts=hq.status())

    @app.get("/")
    def root():
        abort(404)

    return app
