"""Liveness for the service manager and technicians: no ALPR data, so no sign-in needed."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify

from appliance import db
from web.access import public

bp = Blueprint("health", __name__, url_prefix="/health")


@bp.get("")
@public
def index():
    ok = db.database.execute_sql("SELECT 1").fetchone()[0] == 1
    service = current_app.config.get("WAYPOST_SERVICE")
    if not ok:
        return jsonify(status="error", post=g.settings.post.id, problems=["database"]), 503
    if service is None:
        return jsonify(status="ok", post=g.settings.post.id)
    return jsonify(service.health())
