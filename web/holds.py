"""Legal holds in the web UI: place one on a read (from the read's page) or on a search in a
period, list them, open one, export its evidence, and release one (administrators only). Each step
is an access record, written by appliance/holds.py (and appliance/export.py) in the transaction of
the step.

A hold is placed under its own purpose and case number, typed in its form. That does not change
the purpose the session's other work is recorded under: only stating a purpose does (web/purpose.py).
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import InputRequired, Length

from appliance import export, holds, search
from appliance.models import utcnow
from appliance.roles import allowed
from web import evidence
from web import purpose as purposes
from web.access import actor, requires
from web.clock import LocalDateTimeField
from web.reads import MODES

bp = Blueprint("holds", __name__, url_prefix="/holds")


class ReadHoldForm(purposes.PurposeForm):
    reason = TextAreaField("Reason for the hold", validators=[InputRequired(), Length(max=500)])


class QueryHoldForm(ReadHoldForm):
    plate = StringField("Plate", validators=[InputRequired(), Length(max=16)])
    mode = SelectField("Match", choices=MODES, default="exact")
    since = LocalDateTimeField("From", validators=[InputRequired()])
    until = LocalDateTimeField("To", validators=[InputRequired()], latest=True)


class ReleaseForm(FlaskForm):
    reason = TextAreaField("Why the data no longer needs to be kept", validators=[InputRequired(), Length(max=500)])


class PurposeOnlyForm(purposes.PurposeForm):
    pass


class ExportForm(FlaskForm):
    """The button: a POST with its CSRF token (an export is an access, recorded)."""


@bp.app_context_processor
def _hold_panel():
    def hold_panel(read) -> dict | None:
        """For the read page: the active holds on the read and, for those who may, the form."""
        if not current_user.is_authenticated or not allowed(current_user.user, "holds.request"):
            return None
        return {"holds": holds.active_holds_on(read.id), "form": ReadHoldForm()}

    return {"hold_panel": hold_panel}


@bp.get("/")
@requires("holds.request")
def index():
    stated = purposes.current()
    if stated is None:  # the list names the plates held: a purpose first
        return purposes.ask("the legal holds", suggested="AUDIT")
    rows = holds.listing(actor(), stated)
    return render_template("holds/index.html", holds=rows)


@bp.route("/new", methods=["GET", "POST"])
@requires("holds.request")
def new():
    form = QueryHoldForm()
    if not form.is_submitted():
        return render_template("holds/new.html", form=form)
    if not form.validate():
        return render_template("holds/new.html", form=form), 400
    stated = form.checked()
    if stated is None:
        return render_template("holds/new.html", form=form), 400
    query = search.Query(form.plate.data or "", form.mode.data, since=form.since.utc, until=form.until.utc)
    try:
        hold = holds.place_on_query(g.settings, actor(), query, stated.code, stated.case_number, form.reason.data)
    except holds.HoldError as exc:
        form.plate.errors = [str(exc)]
        return render_template("holds/new.html", form=form), 400
    flash(
        f"Hold {hold.id} placed under case {hold.case_number}: {hold.read_count} read(s) kept from the purge.",
        "success",
    )
    return redirect(url_for("holds.detail", hold_id=hold.id))


@bp.post("/read/<int:read_id>")
@requires("holds.request")
def place_on_read(read_id: int):
    form = ReadHoldForm()
    if not form.validate_on_submit() or (stated := form.checked()) is None:
        problems = [e for f in (form.purpose, form.case_number, form.reason) for e in f.errors] or ["the form expired"]
        flash("Hold not placed: " + "; ".join(problems), "error")
        return redirect(url_for("reads.detail", read_id=read_id))
    try:
        hold = holds.place_on_read(g.settings, actor(), read_id, stated.code, stated.case_number, form.reason.data)
    except holds.HoldError as exc:
        flash(str(exc)[0].upper() + str(exc)[1:] + ".", "error")
        return redirect(url_for("reads.detail", read_id=read_id))
    flash(
        f"Hold {hold.id} placed under case {hold.case_number}: this read will not be purged automatically.", "success"
    )
    return redirect(url_for("reads.detail", read_id=read_id))


@bp.route("/<int:hold_id>", methods=["GET", "POST"])
@requires("holds.request")
def detail(hold_id: int):
    if holds.LegalHold.get_or_none(holds.LegalHold.id == hold_id) is None:
        abort(404)
    stated = purposes.current()
    form = PurposeOnlyForm()
    if form.is_submitted():
        if form.validate() and (stated := form.checked()) is not None:
            purposes.remember(stated)
            return redirect(url_for("holds.detail", hold_id=hold_id))
        return render_template(
            "shared/purpose_required.html", form=form, what="this hold", action=url_for("holds.detail", hold_id=hold_id)
        ), 400
    if stated is None:  # the held reads are plate data: a purpose first
        return render_template(
            "shared/purpose_required.html", form=form, what="this hold", action=url_for("holds.detail", hold_id=hold_id)
        )
    hold, reads = holds.held_reads(actor(), stated, hold_id)
    can_release = hold.active and allowed(current_user.user, "holds.release")
    return render_template(
        "holds/detail.html",
        hold=hold,
        reads=reads,
        purpose=stated,
        release_form=ReleaseForm() if can_release else None,
        export_form=ExportForm() if hold.active else None,
        same_case=stated.case_number == hold.case_number,
    )


@bp.post("/<int:hold_id>/export")
@requires("holds.request")
def export_evidence(hold_id: int):
    """The hold's evidence ZIP, recorded (hold.export) under the hold's own purpose and case: so an
    officer exports it while working that case (the purpose stated for the session names the
    hold's case number), not under another case's purpose."""
    if not ExportForm().validate_on_submit():
        abort(400)
    hold = holds.LegalHold.get_or_none(holds.LegalHold.id == hold_id) or abort(404)
    stated = purposes.current()
    if stated is None or stated.case_number != hold.case_number:
        flash(
            f"Evidence not exported: state case {hold.case_number} (the hold's case) as your purpose first, "
            "then export; the export is recorded under the hold's purpose and case.",
            "error",
        )
        return redirect(url_for("holds.detail", hold_id=hold_id))
    name = f"waypost-evidence-hold-{hold.id}-{utcnow():%Y%m%dT%H%M%SZ}.zip"
    try:
        return evidence.zip_download(name, lambda path: export.for_hold(g.settings, actor(), hold.id, path).path)
    except holds.HoldError as exc:
        flash(str(exc)[0].upper() + str(exc)[1:], "error")
        return redirect(url_for("holds.detail", hold_id=hold_id))


@bp.post("/<int:hold_id>/release")
@requires("holds.release")
def release(hold_id: int):
    form = ReleaseForm()
    if not form.validate_on_submit():
        flash("Hold not released: give the reason.", "error")
        return redirect(url_for("holds.detail", hold_id=hold_id))
    try:
        hold = holds.release(actor(), hold_id, form.reason.data)
    except holds.HoldError as exc:
        flash(str(exc)[0].upper() + str(exc)[1:] + ".", "error")
        return redirect(url_for("holds.index"))
    flash(f"Hold {hold.id} (case {hold.case_number}) released: its reads are subject to retention again.", "success")
    return redirect(url_for("holds.index"))
