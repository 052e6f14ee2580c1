"""The purpose of the signed-in person's current work: a code from the configured list and a case
or incident number (Civil Code 1798.90.52: every access is logged with its purpose).

A search states it with the query; it then stays with the session so that opening a read, its
images, or the live view of reads is recorded with the same purpose. It is forgotten at sign-out,
when the session ends, and after `web.session_idle_minutes` like the session itself. Nothing here
shows data: callers check `current()` and refuse (with the form) when it is None.
"""

from __future__ import annotations

import datetime as dt

from flask import g, session
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length

from appliance import audit

KEY = "waypost_purpose"


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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.purpose.choices = choices()
        held = current()
        if held is not None and not self.is_submitted():
            self.purpose.data = self.purpose.data or held.code
            self.case_number.data = self.case_number.data or held.case_number

    def checked(self) -> audit.Purpose | None:
        """The valid Purpose, or None with the reason attached to the form's fields."""
        try:
            return audit.check_purpose(g.settings, self.purpose.data, self.case_number.data)
        except audit.PurposeError as exc:
            self.case_number.errors = list(self.case_number.errors or []) + [str(exc)]
            return None
