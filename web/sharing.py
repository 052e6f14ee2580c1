"""Data-sharing requests: the list, a new written request, its review and its evidence export.

The web layer only collects and shows; appliance/sharing.py decides. So the recipient rule
(California state and local public agencies only: the type, the state, the ORI and the name against
the list of refused recipients) is enforced there, and the form merely offers the refused kinds of
agency so that choosing one gets the refusal and its reason on the page. The ORI and the written
assurance are checked there too (the form does not require them itself, so that the domain's
message, which says what is expected, is the one shown beside the field).

Recording a request needs sharing.request (officers and administrators with current training);
approving, denying and exporting need sharing.approve (the ALPR administrator), and the person who
recorded a request cannot decide it (the page says so instead of offering the buttons; the domain
refuses a forced POST with 409). The review shows how many reads and images the export would hold. The export is a
POST (CSRF-protected, never triggered by a link or a prefetch) and answers 409 with the reason,
having written nothing, for a request that is not approved.

Every page that shows requests records it (sharing.list, sharing.view) through the domain's
listing() and view(), in the transaction of the lookup.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional

from appliance import audit, sharing
from appliance.roles import allowed
from web import evidence
from web import purpose as purposes
from web.access import actor, requires
from web.clock import LocalDateTimeField

bp = Blueprint("sharing", __name__, url_prefix="/sharing")

FIELDS = (
    "agency_name",
    "agency_type",
    "agency_state",
    "agency_ori",
    "requester_name",
    "requester_title",
    "requester_contact",
    "intended_purpose",
    "legal_authority",
    "plate",
    "match_mode",
    "period_start_at",
    "period_end_at",
    "assurance",
)


class RequestForm(purposes.PurposeForm):
    agency_name = StringField("Agency name", validators=[InputRequired(), Length(max=120)])
    agency_type = SelectField("Agency type", validators=[InputRequired()])
    agency_state = StringField("Agency state", default="CA", validators=[InputRequired(), Length(max=8)])
    agency_ori = StringField("Agency ORI (9 characters, CA...)", validators=[Length(max=16)])
    requester_name = StringField("Name of the person requesting", validators=[InputRequired(), Length(max=120)])
    requester_title = StringField("Their title or rank", validators=[InputRequired(), Length(max=120)])
    requester_contact = StringField("Their telephone or e-mail", validators=[InputRequired(), Length(max=160)])
    intended_purpose = TextAreaField(
        "Intended purpose (as the request states it)", validators=[InputRequired(), Length(max=2000)]
    )
    legal_authority = StringField("Legal authority or their case number", validators=[InputRequired(), Length(max=200)])
    assurance = TextAreaField(
        "Their written assurance: no sharing beyond California state and local public agencies",
        validators=[Length(max=2000)],
    )
    plate = StringField("Plate", validators=[InputRequired(), Length(max=16)])
    match_mode = SelectField(
        "Match",
        choices=[
            SelectChoice("exact", "Exact plate"),
            SelectChoice("wildcard", "Wildcard (* any run, ? one character)"),
        ],
        default="exact",
    )
    period_start_at = LocalDateTimeField("From", validators=[Optional()])
    period_end_at = LocalDateTimeField("To", validators=[Optional()], latest=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.agency_type.choices = [SelectChoice("", "— choose the kind of agency —")] + [
            SelectChoice(key, label) for key, label in sharing.AGENCY_TYPES.items()
        ]

    def new_request(self) -> sharing.NewRequest:
        fields = {name: getattr(self, name).data for name in FIELDS}
        return sharing.NewRequest(
            **dict(
                fields,
                period_start_at=self.period_start_at.utc,  # typed local, kept UTC
                period_end_at=self.period_end_at.utc,
            )
        )


class DecisionForm(FlaskForm):
    note = TextAreaField("Note (recorded with the decision)", validators=[InputRequired(), Length(max=2000)])


class ExportForm(FlaskForm):
    pass


@bp.get("/")
@requires("sharing.request")
def index():
    status = request.args.get("status") or None
    if status not in (None, *sharing.STATUSES):
        abort(404)
    stated = purposes.current()
    if stated is None:  # the requests name plates and periods: a purpose first
        return purposes.ask("the data-sharing requests", suggested="SHARING")
    requests = sharing.listing(actor(), stated, status)
    return render_template("sharing/index.html", requests=requests, status=status, statuses=sharing.STATUSES)


@bp.route("/new", methods=["GET", "POST"])
@requires("sharing.request")
def new():
    form = RequestForm()
    if request.method == "GET":
        return render_template("sharing/new.html", form=form, refused=None)
    if not form.validate_on_submit():
        return render_template("sharing/new.html", form=form, refused=None), 400
    stated = form.checked()
    if stated is None:
        return render_template("sharing/new.html", form=form, refused=None), 400
    try:
        req = sharing.create(g.settings, actor(), form.new_request(), stated)
    except sharing.RecipientRefused as exc:
        return render_template("sharing/new.html", form=form, refused=str(exc)), 400
    except sharing.SharingError as exc:
        field = getattr(form, exc.field or "", None) or form.agency_name
        field.errors = list(field.errors or []) + [str(exc)[0].upper() + str(exc)[1:] + "."]
        return render_template("sharing/new.html", form=form, refused=None), 400
    flash(
        f"Request {req.id} from {req.agency_name} recorded. It is pending until another person, the ALPR "
        "administrator or designee, approves or denies it.",
        "info",
    )
    return redirect(url_for("sharing.detail", request_id=req.id))


def _detail(request_id: int, decision=None, problem=None, status=200):
    """The request's page; showing it is recorded (sharing.view), with the purpose stated for it."""
    stated = purposes.current()
    if stated is None:
        return purposes.ask(f"data-sharing request {request_id}", suggested="SHARING")
    try:
        req, exports, covers = sharing.view(actor(), request_id, stated)
    except sharing.SharingError:
        abort(404)
    may_decide = allowed(current_user.user, "sharing.approve")
    return render_template(
        "sharing/detail.html",
        req=req,
        exports=exports,
        covers=covers,
        may_decide=may_decide,
        recorded_by_me=req.created_by == current_user.user.username,
        missing=sharing.missing_for_approval(req),
        decision=decision or DecisionForm(),
        export_form=ExportForm(),
        problem=problem,
    ), status


def _get(request_id: int) -> sharing.SharingRequest:
    return sharing.SharingRequest.get_or_none(sharing.SharingRequest.id == request_id) or abort(404)


@bp.get("/<int:request_id>")
@requires("sharing.request")
def detail(request_id: int):
    return _detail(request_id)


@bp.post("/<int:request_id>/decide")
@requires("sharing.approve")
def decide(request_id: int):
    req = _get(request_id)
    form = DecisionForm()
    choice = request.form.get("decision")
    if not form.validate_on_submit() or choice not in ("approve", "deny"):
        if choice not in ("approve", "deny"):
            form.note.errors = list(form.note.errors or []) + ["Choose Approve or Deny."]
        return _detail(req.id, form, status=400)
    try:
        req = sharing.decide(g.settings, actor(), req.id, choice == "approve", form.note.data)
    except sharing.SharingError as exc:
        return _detail(request_id, form, problem=str(exc), status=409 if exc.field == "decision" else 400)
    flash(f"Request {req.id} {req.status}.", "info")
    return redirect(url_for("sharing.detail", request_id=req.id))


@bp.post("/<int:request_id>/export")
@requires("sharing.approve")
def export(request_id: int):
    req = _get(request_id)
    if not ExportForm().validate_on_submit():
        abort(400)
    if req.status != "approved":  # refused before anything is read, written or logged
        return _detail(
            req.id,
            problem=f"Request {req.id} is {req.status}, not approved: only an approved request can "
            "produce an export. Nothing was exported.",
            status=409,
        )
    name = f"waypost-evidence-request-{req.id}-{sharing.utcnow():%Y%m%dT%H%M%SZ}.zip"
    try:
        return evidence.zip_download(name, lambda path: sharing.export(g.settings, actor(), req.id, path).path)
    except (sharing.SharingError, audit.PurposeError) as exc:
        return _detail(request_id, problem=str(exc), status=409)
