"""The live view: the latest reads and the open alerts, updated as the post stores them, with the
post's status (camera, hotlist freshness, disk, sync) beside them.

Seeing a read is an access to ALPR data like a search result (Civil Code 1798.90.52), so the
reads panel stays empty until the officer has stated a purpose and case number (web.purpose), and
every listing and every read sent over the stream is recorded with that purpose. Alerts carry the
fixed hit-verification purpose of web.alerts.

The site-wide warning banner (stale hotlist, low disk) is computed here too, because it is the
same status the live view shows in full.
"""

from __future__ import annotations

import json
import shutil

from flask import Blueprint, abort, current_app, g, redirect, render_template, url_for
from flask_login import current_user

from appliance import audit
from appliance import clock as appliance_clock
from appliance import hotlist as hotlists
from appliance.db import connection, write
from appliance.models import Alert, Camera, Read
from appliance.roles import allowed
from sync import post as sync_post
from web import clock, events
from web import purpose as stated
from web.access import actor, requires
from web.alerts import crops_of, plates_shown, streamed_alert

bp = Blueprint("live", __name__, url_prefix="/live")

LATEST_READS = 25
OPEN_ALERTS = 50
ALERT_LIST_PURPOSE = audit.Purpose("HIT-VERIFY", "ALERT-LIST")  # the same as the alerts page's list


def read_url(read_id: int) -> str | None:
    """The read's detail page, once the reads blueprint provides one."""
    if "reads.detail" not in current_app.view_functions:
        return None
    return url_for("reads.detail", read_id=read_id)


def post_status() -> dict:
    """Camera, hotlists and disk as the running service sees them; hotlists alone without one.
    Computed once per request: the banner and the live view's status strip share it."""
    if "post_status" not in g:
        g.post_status = _post_status()
    return g.post_status


def _post_status() -> dict:
    service = current_app.config.get("WAYPOST_SERVICE")
    settings = g.settings
    synced = appliance_clock.sync_watch.get().as_dict()
    if service is None:
        return {"camera": None, "hotlists": hotlists.status(settings), "disk": None, "low_disk": None, "clock": synced}
    health = service.health()
    disk = health["disk"]
    pipeline = health.get("pipeline") or {}
    low = pipeline.get("low_disk") or (disk["free_mb"] < disk["min_free_mb"] and "floor") or None
    return {"camera": health["camera"], "hotlists": health["hotlists"], "disk": disk, "low_disk": low, "clock": synced}


def disk_text(status: dict) -> str:
    disk = status["disk"]
    if disk is None:
        return f"{shutil.disk_usage(g.settings.data_dir).free // 2**20} MB free"
    text = f"{disk['free_mb']} MB free (minimum {disk['min_free_mb']} MB)"
    if disk.get("full_in_days") is not None:
        text += f"; disk full in {disk['full_in_days']:g} days at the current rate"
        if disk.get("fills_before_retention"):
            text += f", before retention ({disk['retention_days']} days) frees space"
    return text


def warnings(status: dict) -> list[str]:
    """Plain sentences for the banner: what is wrong and what it means for the officer."""
    out = []
    for h in status["hotlists"]:
        if h["stale"]:
            # In the post's zone, as every time on the pages: an officer reading "05:30 UTC" at
            # 21:30 local would misjudge how old the list is.
            when = (
                f"last refreshed {clock.localtime(h['refreshed_at'], 'minutes')}"
                if h["refreshed_at"]
                else "never refreshed"
            )
            out.append(
                f"Hotlist {h['name']} is stale ({when}): do not rely on it; alerts may be missing "
                f"or out of date until it is refreshed."
            )
        if h.get("past_review"):
            n = len(h["past_review"])
            out.append(
                f"{n} {'entry' if n == 1 else 'entries'} of the {h['name']} hotlist "
                f"({', '.join(str(i) for i in h['past_review'])}) "
                f"{'passed its review date and raises' if n == 1 else 'passed their review dates and raise'} "
                "no alerts until renewed with a reason or removed."
            )
    if status["low_disk"]:
        what = {
            "crop": "reads are stored with plate crops only, without context frames",
            "none": "reads are stored without images",
        }.get(status["low_disk"], "the post is short of space")
        out.append(f"Low disk space on the post: {what}. Tell the technician.")
    if status.get("clock", {}).get("synchronised") is False:
        out.append(
            "The post's clock is not synchronised: reads are stamped with a time that may be wrong. "
            "Tell the technician."
        )
    return out


@bp.app_context_processor
def _banner():
    def site_warnings() -> list[str]:
        # Called by base.html only for signed-in pages, so the login page costs nothing.
        try:
            return warnings(post_status())
        except Exception:  # the banner must never take a page down with it
            current_app.logger.exception("status for the warning banner")
            return ["The post's status could not be read. Check the health page."]

    return {"site_warnings": site_warnings}


def _camera_names() -> dict[str, str]:
    return {c.id: c.name for c in Camera.select(Camera.id, Camera.name)}


@bp.app_template_filter("camera_name")
def camera_name(camera_id: str) -> str:
    """A camera as every page names it: its display name (models.Camera.name), else its id.
    The names are read once per request."""
    if "camera_names" not in g:
        g.camera_names = _camera_names()
    return g.camera_names.get(camera_id, camera_id)


@bp.get("")
@requires("reads.view")
def index():
    return _page(stated.PurposeForm())


def _page(form: stated.PurposeForm, status_code: int = 200):
    user = current_user.user
    purpose = stated.current()
    reads = open_alerts = None
    crops: set[int] = set()
    sees_alerts = allowed(user, "alerts.view")
    if purpose is not None or sees_alerts:
        with write():  # the lists are read in the transaction that records them
            if purpose is not None:
                reads = list(Read.select().order_by(Read.captured_at.desc(), Read.id.desc()).limit(LATEST_READS))
                audit.record(
                    "read.live",
                    actor(),
                    query={"latest_reads": LATEST_READS, "plates": sorted({r.plate for r in reads})},
                    purpose=purpose,
                    objects=[f"read:{r.uuid}" for r in reads],
                    result_count=len(reads),
                )
            if sees_alerts:
                open_alerts = list(
                    Alert.select(Alert, Read)
                    .join(Read)
                    .where(Alert.status == "unconfirmed")
                    .order_by(Alert.created_at.desc())
                    .limit(OPEN_ALERTS)
                )
                audit.record(
                    "alert.view",
                    actor(),
                    query=plates_shown(open_alerts),
                    purpose=ALERT_LIST_PURPOSE,
                    objects=[f"alert:{a.id}" for a in open_alerts],
                    result_count=len(open_alerts),
                    details={"via": "live view"},
                )
                crops = crops_of(open_alerts)
    return render_template(
        "live/index.html",
        reads=reads,
        open_alerts=open_alerts,
        crops=crops,
        purpose=purpose,
        form=form,
        status=post_status(),
        disk=disk_text(post_status()),
        # the strip's Sync item; not in post_status: the banner on every page does not count the outbox
        sync=sync_post.health(g.settings),
        read_url=read_url,
        live=current_app.config.get("WAYPOST_SERVICE") is not None,
    ), status_code


@bp.post("/purpose")
@requires("reads.view")
def purpose():
    form = stated.PurposeForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            abort(400)
        return _page(form, 400)
    checked = form.checked()
    if checked is None:
        return _page(form, 400)
    stated.remember(checked)
    return redirect(url_for("live.index"))


@bp.get("/stream")
@requires("reads.view")
def stream():
    """Server-sent events: each new read (only with a stated purpose) and each new alert.

    Every item is recorded as an access before it is sent. The stream ends after the idle time of
    a session (the page then asks for a reload, which is the officer's own act), so a live view left
    open does not keep showing plate data past the idle sign-out.
    """
    who = actor()
    purpose = stated.current()
    with_alerts = allowed(current_user.user, "alerts.view")

    def read_event(event) -> str | None:
        data = event["data"]
        with connection(), write():  # recorded before it is sent, in one transaction with the lookup
            read = Read.get_or_none(Read.id == data["id"])
            if read is None:
                return None
            audit.record(
                "read.live",
                who,
                query={"latest_reads": "live", "plate": read.plate},
                purpose=purpose,
                objects=[f"read:{read.uuid}"],
                result_count=1,
                details={"via": "live stream"},
            )
            camera = Camera.get_or_none(Camera.id == read.camera_id)
        payload = {
            "captured_utc": read.captured_at.isoformat(timespec="microseconds"),  # the rows' order
            "id": read.id,
            "plate": read.plate,
            "confidence": read.confidence,
            "low_confidence": read.low_confidence,
            "captured_at": clock.localtime(read.captured_at),  # shown as is, as the page's rows
            "camera": camera.name if camera else read.camera_id,
            "direction": read.direction,
            "url": read_url(read.id),
        }
        return events.sse(event["id"], "read", json.dumps(payload))

    def alert_event(event) -> str | None:
        card = streamed_alert(who, event["data"]["id"], "live view stream")
        return events.sse(event["id"], "alert", json.dumps(card)) if card else None

    def render(event) -> str | None:
        if event["type"] == "read" and purpose is not None:
            return read_event(event)
        if event["type"] == "alert" and with_alerts:
            return alert_event(event)
        return None

    return events.stream("reads.view", render)
