"""Liveness for the service manager and technicians: no ALPR data, so no sign-in needed.

The `sync` section (sync/post.py health) is added here, whether the service runs or not: a post
whose reads wait for headquarters is degraded, and says why (issue 18). So is `clock`: whether
chrony or timedatectl says the clock is synchronised (appliance/clock.py; false degrades, null
when neither can tell). The service's `camera` (stalls) and `disk` (full in N days at the
current rate) come from appliance/service.py health() (issue 19)."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify

from appliance import clock, db
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
    synced = clock.sync_watch.get()
    answer["clock"] = synced.as_dict()
    if synced.synchronised is False:
        answer["problems"].append(
            f"clock not synchronised ({synced.source}: {synced.detail}): reads may be stamped wrong"
        )
    if answer["problems"] and answer.get("status") == "ok":
        answer["status"] = "degraded"
    return jsonify(answer)
