"""The purpose of the signed-in person's current work: a code from the configured list and a case
or incident number (Civil Code 1798.90.52: every access is logged with its purpose).

A search states it with the query; it then stays with the session so that opening a read, its
images, or the live view of reads is recorded with the same purpose. It is forgotten at sign-out,
when the session ends, and after `web.session_idle_minutes` like the session itself. Nothing here
shows data: callers check `current()` and refuse (with the form) when it is None.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from flask import Blueprint, g, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length

from appliance import audit
from web.access import signed_in

KEY = "waypost_purpose"

bp = Blueprint("purpose", __name__, url_prefix="/purpose")


def current() -> audit.Purpose | None:
    """The purpose stated in this session, if it is still valid under the current configuration."""
    held = session.get(KEY)
    if not held:
        return None
    try:
        return audit.check_purpose(g.settings, held.get("code"), held.get("case_number"))
    except audit.PurposeError:
        session.pop(KEY, None)
        return None


def remember(purpose: audit.Purpose) -> None:
    session[KEY] = {
        "code": purpose.code,
        "case_number": purpose.case_number,
        "stated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def forget() -> None:
    session.pop(KEY, None)


def choices() -> list[SelectChoice]:
    return [SelectChoice("", "— choose the purpose —")] + [
        SelectChoice(p.code, f"{p.code}: {p.label}") for p in g.settings.audit.purposes
    ]


class PurposeForm(FlaskForm):
    """The two statutory fields. Validated with audit.check_purpose, the same rule the CLI and
    the log use, so a placeholder like "N/A" or "123" is refused here too."""

    purpose = SelectField("Purpose", validators=[InputRequired()])
    case_number = StringField("Case or incident number", validators=[InputRequired(), Length(max=40)])

    def __init__(self, *args, suggested: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.purpose.choices = choices()
        held = current()
        if held is not None and not self.is_submitted():
            self.purpose.data = self.purpose.data or held.code
            self.case_number.data = self.case_number.data or held.case_number
        elif suggested and not self.is_submitted():
            self.purpose.data = self.purpose.data or suggested

    def checked(self) -> audit.Purpose | None:
        """The valid Purpose, or None with the reason attached to the form's fields."""
        try:
            return audit.check_purpose(g.settings, self.purpose.data, self.case_number.data)
        except audit.PurposeError as exc:
            self.case_number.errors = list(self.case_number.errors or []) + [str(exc)]
            return None


# --- asking for it before a page shows data ------------------------------------------------------


def _local(target: str | None) -> str:
    """A path on this site to go back to (never another site's address)."""
    path = target or ""
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//"):
        return url_for("home.index")
    return path


def ask(what: str, suggested: str | None = None):
    """The purpose form instead of a page's data (no record is written: nothing is shown). It
    posts to /purpose/ and comes back to this page, now recorded under the stated purpose."""
    here = request.full_path if request.query_string else request.path
    return render_template(
        "shared/purpose_required.html",
        form=PurposeForm(suggested=suggested),
        what=what,
        action=url_for("purpose.state", next=here, what=what),
    )


@bp.post("/")
@signed_in  # stating why shows nothing; the page it returns to checks who may see it
def state():
    target, what = _local(request.args.get("next")), (request.args.get("what") or "this page")[:60]
    form = PurposeForm()
    if form.validate_on_submit() and (stated := form.checked()) is not None:
        remember(stated)
        return redirect(target)
    action = url_for("purpose.state", next=target, what=what)
    return render_template("shared/purpose_required.html", form=form, what=what, action=action), 400
