"""Alerts: the live list, one alert with its images, acknowledgement and confirmation.

Viewing an alert shows plate data, so it is an access record like any other. Its purpose is
fixed (HIT-VERIFY) and its reference is the alert itself: watching for and verifying hits is
what the hotlist function is for; the confirmation adds the officer's own case or incident
number when there is one. Every record names the plates shown: the listed plate and the plate read.

Every list, card and page shows an alert as a person checks it (templates/alerts/_lead.html,
live.js): the plate crop, the read with the reader's own confidence (in words when it is below
`recognizer.min_confidence`: read.low_confidence, set when the read is stored) and the listed plate,
side by side; the match score is labelled as the match's, not the read's.
"""

from __future__ import annotations

import json

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional

from appliance import alerts as alerting
from appliance import audit
from appliance.db import connection, write
from appliance.models import Alert, AlertConfirmation, Evidence, Read
from appliance.roles import allowed
from web import clock, events, evidence
from web.access import actor, requires

bp = Blueprint("alerts", __name__, url_prefix="/alerts")


def alert_purpose(alert_id) -> audit.Purpose:
    return audit.Purpose("HIT-VERIFY", f"ALERT-{alert_id}")


class AcknowledgeForm(FlaskForm):
    pass


class ConfirmForm(FlaskForm):
    visual_compared = BooleanField(alerting.CHECKS["visual_compared"])
    clets_verified = BooleanField(alerting.CHECKS["clets_verified"])
    # Starts on no outcome: a hit stays unconfirmed until a person chooses what they verified.
    outcome = SelectField(
        "Outcome",
        validators=[InputRequired(message=("Choose the outcome of your verification; nothing was recorded"))],
        choices=[SelectChoice("", "— choose the outcome —")]
        + [SelectChoice(k, v) for k, v in alerting.OUTCOMES.items()],
    )
    case_number = StringField("Case or incident number (optional)", validators=[Optional(), Length(max=40)])
    note = TextAreaField("Note", validators=[Length(max=1000)])
    # shown once an outcome is on file; alerting.confirm() refuses a different outcome without it
    change_reason = TextAreaField("Reason for the change", validators=[Length(max=1000)])


def crops_of(shown: list[Alert]) -> set[int]:
    """The ids of the shown alerts' reads that have a plate crop stored."""
    reads = {a.read_id for a in shown}  # type: ignore[attr-defined]  # peewee: <fk>_id attribute
    if not reads:
        return set()
    rows = Evidence.select(Evidence.read).where(Evidence.read.in_(list(reads)) & (Evidence.kind == "crop"))
    return {row.read_id for row in rows}  # type: ignore[attr-defined]  # peewee: <fk>_id attribute


def plates_shown(shown: list[Alert]) -> dict:
    """What a record of a list of alerts names: every listed plate and every plate read on it."""
    return {"plates": sorted({p for a in shown for p in (a.entry_plate, a.read.plate)})}


def outcome_label(status: str) -> str:
    """An alert's status as the pages name it: UNCONFIRMED, CONFIRMED, NOT WANTED..."""
    return status.replace("_", " ").upper()


def live_card(alert: Alert, has_crop: bool) -> dict:
    """An alert as live.js draws its card: what the lists show, read from the alert as stored
    (the bus only says which alert is new)."""
    read = alert.read
    return {
        "id": alert.id,
        "read_id": read.id,
        "plate": read.plate,
        "read_confidence": read.confidence,
        "low_confidence": read.low_confidence,
        "crop_url": url_for("alerts.image", alert_id=alert.id, kind="crop") if has_crop else None,
        "evidence_note": read.evidence_note,
        "entry_plate": alert.entry_plate,
        "entry_state": alert.entry_state.upper(),
        "entry_ori": alert.entry_ori,
        "entry_nic": alert.entry_source_ref,
        "reason": alert.entry_reason,
        "hotlist": alert.hotlist_name,
        "match_kind": alert.match_kind,
        "matched_text": alert.matched_text,
        "score": alert.score,
        "status": alert.status,
        "created_at": clock.localtime(alert.created_at, "time"),
        "url": url_for("alerts.detail", alert_id=alert.id),
    }


def streamed_alert(who: audit.Actor, alert_id: int, via: str) -> dict | None:
    """The card of an alert sent over a stream, recorded (with the plates it shows) in the
    transaction that reads it; None for an alert no longer stored."""
    with connection(), write():
        alert = Alert.get_or_none(Alert.id == alert_id)
        if alert is None:
            return None
        audit.record(
            "alert.view",
            who,
            query=alerting.alert_query(alert),
            purpose=alert_purpose(alert.id),
            objects=[f"alert:{alert.id}", f"read:{alert.read.uuid}"],
            result_count=1,
            details={"via": via},
        )
        return live_card(alert, bool(crops_of([alert])))


def repeats_of(shown: list[Alert]) -> dict[int, tuple[int, int]]:
    """alert id -> (the alert it repeats, minutes between their reads), for the repeats shown."""
    wanted = {a.repeat_of_id for a in shown if a.repeat_of_id is not None}  # type: ignore[attr-defined]  # peewee: <fk>_id attribute
    if not wanted:
        return {}
    seen_at = {
        row.id: row.read.captured_at
        for row in Alert.select(Alert.id, Read.captured_at).join(Read).where(Alert.id.in_(list(wanted)))
    }
    return {
        a.id: (a.repeat_of_id, round(abs((a.read.captured_at - seen_at[a.repeat_of_id]).total_seconds()) / 60))  # type: ignore[attr-defined]  # peewee: <fk>_id attribute
        for a in shown
        if a.repeat_of_id in seen_at  # type: ignore[attr-defined]  # peewee: <fk>_id attribute
    }


@bp.get("")
@requires("alerts.view")
def index():
    with write():  # the lists are read in the transaction that records them
        open_alerts = list(
            Alert.select(Alert, Read)
            .join(Read)
            .where(Alert.status == "unconfirmed")
            .order_by(Alert.created_at.desc())
            .limit(100)
        )
        recent = list(
            Alert.select(Alert, Read)
            .join(Read)
            .where(Alert.status != "unconfirmed")
            .order_by(Alert.created_at.desc())
            .limit(20)
        )
        audit.record(
            "alert.view",
            actor(),
            query=plates_shown(open_alerts + recent),
            purpose=audit.Purpose("HIT-VERIFY", "ALERT-LIST"),
            objects=[f"alert:{a.id}" for a in open_alerts + recent],
            result_count=len(open_alerts) + len(recent),
        )
        repeats = repeats_of(open_alerts + recent)
        crops = crops_of(open_alerts + recent)
        history = alerting.outcome_history([a.id for a in recent])
    changed = {a_id: alerting.changed_from(outcomes) for a_id, outcomes in history.items()}
    return render_template(
        "alerts/index.html",
        open_alerts=open_alerts,
        recent=recent,
        repeats=repeats,
        crops=crops,
        changed=changed,
        outcome_label=outcome_label,
    )


@bp.get("/<int:alert_id>")
@requires("alerts.view")
def detail(alert_id: int):
    with write():  # what the page shows is read in the transaction that records it
        alert = Alert.get_or_none(Alert.id == alert_id) or abort(404)
        read = alert.read
        audit.record(
            "alert.view",
            actor(),
            query=alerting.alert_query(alert),
            purpose=alert_purpose(alert.id),
            objects=[f"alert:{alert.id}", f"read:{read.uuid}"],
            result_count=1,
        )
        kinds = {e.kind for e in Evidence.select(Evidence.kind).where(Evidence.read == read)}
        confirmations = list(
            AlertConfirmation.select()
            .where(AlertConfirmation.alert == alert)
            .order_by(AlertConfirmation.confirmed_at, AlertConfirmation.id)
        )
        repeat = repeats_of([alert]).get(alert.id)
    return render_template(
        "alerts/detail.html",
        alert=alert,
        read=read,
        kinds=kinds,
        confirmations=confirmations,
        changed_from=alerting.changed_from([c.outcome for c in confirmations]) if confirmations else None,
        outcomes=alerting.OUTCOMES,
        outcome_label=outcome_label,
        repeat=repeat,
        ack_form=AcknowledgeForm(),
        confirm_form=ConfirmForm(),
        can_confirm=allowed(current_user.user, "alerts.confirm"),
        can_acknowledge=allowed(current_user.user, "alerts.acknowledge"),
    )


@bp.get("/<int:alert_id>/image/<kind>")
@requires("alerts.view")
def image(alert_id: int, kind: str):
    def find():
        alert = Alert.get_or_none(Alert.id == alert_id) or abort(404)
        return alert.read, alerting.alert_query(alert)

    return evidence.image_response(find, kind, alert_purpose(alert_id))


@bp.post("/<int:alert_id>/acknowledge")
@requires("alerts.acknowledge")
def acknowledge(alert_id: int):
    if not AcknowledgeForm().validate_on_submit():
        abort(400)
    try:
        alerting.acknowledge(actor(), alert_id, alert_purpose(alert_id))
    except alerting.AlertError:
        abort(404)
    flash("Acknowledged. The alert stays UNCONFIRMED until an officer verifies it.", "info")
    return redirect(url_for("alerts.detail", alert_id=alert_id))


@bp.post("/<int:alert_id>/confirm")
@requires("alerts.confirm")
def confirm(alert_id: int):
    form = ConfirmForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors or not form.is_submitted():
            abort(400)
        for field in form:
            for error in field.errors:
                flash(
                    f"{field.label.text}: {error[:1].lower() + error[1:]}{'' if error.endswith('.') else '.'}", "error"
                )
        return redirect(url_for("alerts.detail", alert_id=alert_id))
    case = (form.case_number.data or "").strip()
    try:
        purpose = audit.check_purpose(g.settings, "HIT-VERIFY", case) if case else alert_purpose(alert_id)
        alerting.confirm(
            actor(),
            alert_id,
            outcome=form.outcome.data,
            visual_compared=form.visual_compared.data,
            clets_verified=form.clets_verified.data,
            note=form.note.data or "",
            purpose=purpose,
            change_reason=form.change_reason.data or "",
        )
    except (alerting.AlertError, audit.PurposeError) as exc:
        flash(str(exc)[0].upper() + str(exc)[1:] + ".", "error")
    else:
        flash(f"Recorded: {alerting.OUTCOMES[form.outcome.data]}.", "info")
    return redirect(url_for("alerts.detail", alert_id=alert_id))


@bp.get("/stream")
@requires("alerts.view")
def stream():
    """Server-sent events: each new alert, recorded as an access before it is sent."""
    who = actor()

    def render(event) -> str | None:
        if event["type"] != "alert":
            return None
        card = streamed_alert(who, event["data"]["id"], "live stream")
        return events.sse(event["id"], "alert", json.dumps(card)) if card else None

    return events.stream("alerts.view", render)
