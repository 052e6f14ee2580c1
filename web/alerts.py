"""Alerts: the live list, one alert with its images, acknowledgement and confirmation.

Viewing an alert shows plate data, so it is an access record like any other. Its purpose is
fixed (HIT-VERIFY) and its reference is the alert itself: watching for and verifying hits is
what the hotlist function is for; the confirmation adds the officer's own case or incident
number when there is one.
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
from web import events, evidence
from web.access import actor, requires

bp = Blueprint("alerts", __name__, url_prefix="/alerts")


def alert_purpose(alert_id) -> audit.Purpose:
    return audit.Purpose("HIT-VERIFY", f"ALERT-{alert_id}")


class AcknowledgeForm(FlaskForm):
    pass


class ConfirmForm(FlaskForm):
    visual_compared = BooleanField("I compared every character of the plate in the image with the listed plate")
    clets_verified = BooleanField("I verified the entry is still active through CLETS")
    # Starts on no outcome: a hit stays unconfirmed until a person chooses what they verified.
    outcome = SelectField(
        "Outcome",
        validators=[InputRequired(message=("Choose the outcome of your verification; nothing was recorded"))],
        choices=[SelectChoice("", "— choose the outcome —")]
        + [SelectChoice(k, v) for k, v in alerting.OUTCOMES.items()],
    )
    case_number = StringField("Case or incident number (optional)", validators=[Optional(), Length(max=40)])
    note = TextAreaField("Note", validators=[Length(max=1000)])


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
            purpose=audit.Purpose("HIT-VERIFY", "ALERT-LIST"),
            objects=[f"alert:{a.id}" for a in open_alerts + recent],
            result_count=len(open_alerts) + len(recent),
        )
        repeats = repeats_of(open_alerts + recent)
    return render_template("alerts/index.html", open_alerts=open_alerts, recent=recent, repeats=repeats)


@bp.get("/<int:alert_id>")
@requires("alerts.view")
def detail(alert_id: int):
    with write():  # what the page shows is read in the transaction that records it
        alert = Alert.get_or_none(Alert.id == alert_id) or abort(404)
        read = alert.read
        audit.record(
            "alert.view",
            actor(),
            query={"plate": alert.entry_plate},
            purpose=alert_purpose(alert.id),
            objects=[f"alert:{alert.id}", f"read:{read.uuid}"],
            result_count=1,
        )
        kinds = {e.kind for e in Evidence.select(Evidence.kind).where(Evidence.read == read)}
        confirmations = list(
            AlertConfirmation.select().where(AlertConfirmation.alert == alert).order_by(AlertConfirmation.confirmed_at)
        )
        repeat = repeats_of([alert]).get(alert.id)
    return render_template(
        "alerts/detail.html",
        alert=alert,
        read=read,
        kinds=kinds,
        confirmations=confirmations,
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
        return alert.read, {"plate": alert.entry_plate}

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
        data = event["data"]
        with connection(), write():
            audit.record(
                "alert.view",
                who,
                query={"plate": data["entry_plate"]},
                purpose=alert_purpose(data["id"]),
                objects=[f"alert:{data['id']}"],
                result_count=1,
                details={"via": "live stream"},
            )
        return events.sse(event["id"], "alert", json.dumps(data))

    return events.stream("alerts.view", render)
