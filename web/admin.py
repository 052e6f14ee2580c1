"""Administration pages: the roles table (as it is in appliance/roles.py), accounts and their
training records, and the account review.

Every change goes through appliance/users.py, which writes the access record in the transaction of
the change, so the web and the CLI leave the same trail. A one-time password is shown once, in the
response to the POST that made it: it never goes into a flash message (the session cookie is
signed, not encrypted), a URL or the log.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import DateField, HiddenField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import AnyOf, InputRequired, Length, Optional

from appliance import users
from appliance.models import User, utcnow
from appliance.roles import PLATE_DATA, ROLES
from web.access import actor, requires

bp = Blueprint("admin", __name__, url_prefix="/admin")

PERMISSION_LABELS = {
    "reads.search": "Search reads by plate",
    "reads.view": "View reads, their images and the live view",
    "alerts.view": "See hotlist alerts",
    "alerts.acknowledge": "Acknowledge alerts (relay as unconfirmed)",
    "alerts.confirm": "Record the verification of an alert",
    "holds.request": "Place a legal hold",
    "holds.release": "Release a legal hold",
    "accounts.manage": "Accounts and training records",
    "settings.manage": "Settings",
    "audit.view": "Access log, audits and reports",
    "sharing.request": "Record data-sharing requests from other agencies",
    "sharing.approve": "Approve data-sharing requests",
    "retention.manage": "Retention and purges",
    "hotlists.manage": "Hotlists and custom entries",
    "health.view": "Post health and maintenance",
}

# Where a deactivation or reactivation returns to: a name from this table, never a URL from the form.
BACK = {"account": "admin.account", "review": "admin.review", "accounts": "admin.accounts"}


def sentence(message: str | Exception) -> str:
    message = str(message)
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


class AccountForm(FlaskForm):
    username = StringField("Username", validators=[InputRequired(), Length(max=40)])
    display_name = StringField("Full name", validators=[InputRequired(), Length(max=120)])
    job_title = StringField("Job title", validators=[InputRequired(), Length(max=80)])
    organization = StringField("Organization", validators=[InputRequired(), Length(max=120)])
    # Starts on no role, so an account is never made with a role nobody chose (the first in ROLES is
    # the most powerful).
    role = SelectField(
        "Role",
        validators=[InputRequired(message="Choose a role for the account.")],
        choices=[SelectChoice("", "— choose a role —")]
        + [SelectChoice(key, f"{role['label']} ({key})") for key, role in ROLES.items()],
    )


class TrainingForm(FlaskForm):
    completed_on = DateField(
        "Completed on", validators=[InputRequired(message="Give the date the course was completed.")]
    )
    course = StringField(
        "Course", validators=[InputRequired(message="Give the course name as in the training record."), Length(max=120)]
    )
    expires_on = DateField("Expires on", validators=[Optional()])


class AccountActionForm(FlaskForm):
    back = HiddenField(validators=[Optional(), AnyOf(list(BACK))])


def _account(user_id: int) -> User:
    return User.get_or_none(User.id == user_id) or abort(404)


def _back(form: AccountActionForm, user: User):
    endpoint = BACK.get(form.back.data or "account", "admin.account")
    return redirect(url_for(endpoint, user_id=user.id) if endpoint == "admin.account" else url_for(endpoint))


def _is_self(user: User) -> bool:
    return user.id == current_user.user.id


@bp.get("/roles")
@requires("accounts.manage")
def roles():
    every = sorted({p for r in ROLES.values() for p in r["permissions"]}, key=lambda p: (p not in PLATE_DATA, p))
    return render_template(
        "admin/roles.html", roles=ROLES, permissions=every, labels=PERMISSION_LABELS, plate_data=PLATE_DATA
    )


@bp.get("/accounts")
@requires("accounts.manage")
def accounts():
    rows = list(User.select().order_by(User.active.desc(), User.username))
    return render_template(
        "admin/accounts.html",
        accounts=rows,
        roles=ROLES,
        now=utcnow(),
        today=utcnow().date(),
        training_state=users.training_state,
        form=AccountActionForm(),
    )


@bp.route("/accounts/new", methods=["GET", "POST"])
@requires("accounts.manage")
def new_account():
    form = AccountForm()
    if not form.is_submitted():
        form.organization.data = g.settings.post.agency
    if form.validate_on_submit():
        try:
            user, password = users.create(
                actor(),
                username=form.username.data.strip().lower(),
                display_name=form.display_name.data.strip(),
                job_title=form.job_title.data.strip(),
                organization=form.organization.data.strip(),
                role=form.role.data,
                min_password_length=g.settings.web.min_password_length,
            )
        except users.UserError as exc:
            form.username.errors = [sentence(exc)]
        else:
            return render_template("admin/password_issued.html", user=user, password=password, created=True)
    status = 400 if form.is_submitted() else 200
    return render_template("admin/account_new.html", form=form, roles=ROLES), status


@bp.get("/accounts/<int:user_id>")
@requires("accounts.manage")
def account(user_id: int):
    user = _account(user_id)
    return render_template("admin/account.html", user=user, **_account_page(user, TrainingForm()))


def _account_page(user: User, training: TrainingForm) -> dict:
    return {
        "role": ROLES.get(user.role, {}),
        "training": training,
        "action": AccountActionForm(),
        "state": users.training_state(user),
        "is_self": _is_self(user),
        "now": utcnow(),
    }


@bp.post("/accounts/<int:user_id>/training")
@requires("accounts.manage")
def training(user_id: int):
    user = _account(user_id)
    form = TrainingForm()
    if form.validate_on_submit():
        completed = form.completed_on.data
        expires = form.expires_on.data or _one_year_after(completed)
        try:
            users.set_training(actor(), user.username, completed, form.course.data.strip(), expires)
        except users.UserError as exc:
            target = {"course": form.course, "completed_on": form.completed_on}.get(exc.field or "", form.expires_on)
            target.errors = [sentence(exc)]
        else:
            flash(
                f"Training recorded for {user.username}: {form.course.data.strip()}, completed {completed}, "
                f"expires {expires}.",
                "info",
            )
            return redirect(url_for("admin.account", user_id=user.id))
    return render_template("admin/account.html", user=user, **_account_page(user, form)), 400


def _one_year_after(day: dt.date) -> dt.date:
    """The CLI's default expiry (appliance/cli.py user set-training) when none is given."""
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day + dt.timedelta(days=365)


@bp.post("/accounts/<int:user_id>/deactivate")
@requires("accounts.manage")
def deactivate(user_id: int):
    return _set_active(user_id, False)


@bp.post("/accounts/<int:user_id>/reactivate")
@requires("accounts.manage")
def reactivate(user_id: int):
    return _set_active(user_id, True)


def _set_active(user_id: int, active: bool):
    user = _account(user_id)
    form = AccountActionForm()
    if not form.validate_on_submit():
        abort(400)
    reason = "account review" if form.back.data == "review" else ""
    try:
        users.set_active(actor(), user.username, active, reason=reason)
    except users.UserError as exc:
        flash(sentence(exc), "error")
    else:
        flash(f"{user.username} is {'reactivated' if active else 'deactivated'}.", "info")
    return _back(form, user)


@bp.post("/accounts/<int:user_id>/password")
@requires("accounts.manage")
def reset_password(user_id: int):
    user = _account(user_id)
    form = AccountActionForm()
    if not form.validate_on_submit():
        abort(400)
    if _is_self(user):
        flash("Change your own password on the Password page; a reset is for someone else's account.", "error")
        return redirect(url_for("admin.account", user_id=user.id))
    user, password = users.reset_password(actor(), user.username, g.settings.web.min_password_length)
    return render_template("admin/password_issued.html", user=user, password=password, created=False)


@bp.get("/accounts/review")
@requires("accounts.manage")
def review():
    found = users.review(actor())
    return render_template(
        "admin/review.html",
        review=found,
        roles=ROLES,
        now=utcnow(),
        form=AccountActionForm(),
        training_state=users.training_state,
        stale_days=users.STALE_AFTER_DAYS,
        me=current_user.user.id,
    )
