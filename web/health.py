"""Liveness for the service manager and technicians: no ALPR data, so no sign-in needed.

The `sync` section (sync/post.py health) is added here, whether the service runs or not: a post
whose reads wait for headquarters is degraded, and says why (issue 18)."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify

from appliance import db
from sync import post
from web.access import public

bp = Blueprint("health", __name__, url_prefix="/health")


@bp.get("")
@public
def index():
    ok = db.database.execute_sql("SELECT 1").fetchone()[0] == 1
    service = current_app.config.get("WAYPOST_SERVICE")
    if not ok:
        return jsonify(status="error", post=g.settings.post.id, problems=["database"]), 503
    answer = service.health() if service is not None else {"status": "ok", "problems": [], "post": g.settings.post.id}
    if "hq_api" in current_app.blueprints:  # headquarters: its posts' sync is on its Posts page
        return jsonify(answer)
    sync = post.health(g.settings)
    answer["sync"] = sync
    answer["problems"] = list(answer.get("problems") or []) + sync["problems"]
    if answer["problems"] and answer.get("status") == "ok":
        answer["status"] = "degraded"
    return jsonify(answer)
