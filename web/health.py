"""Liveness for the service manager and technicians: no ALPR data, so no sign-in needed."""
from __future__ import annotations

from flask import Blueprint, g, jsonify

from appliance import db

bp = Blueprint("health", __name__, url_prefix="/health")


@bp.get("")
def index():
    ok = db.database.execute_sql("SELECT 1").fetchone()[0] == 1
    return jsonify(status="ok" if ok else "error", post=g.settings.post.id), (200 if ok else 503)
