"""The access log for administrators and auditors: browse and filter it, verify its chain, export
a period (CSV or a signed bundle), and the quarterly and annual reports.

Auditors see no plate data elsewhere, but the log itself is what they audit, so it is shown whole.
Looking at it is an access too: every page of the log, every verification, export and report
writes an access record. The filter is a POST (CSRF-protected) like the plate search, so plates
typed into it do not land in URLs, proxy logs or the browser history.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

from flask import Blueprint, abort, after_this_request, g, redirect, render_template, request, send_file, url_for
from flask_wtf import FlaskForm
from wtforms import DateField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional

from appliance import audit, bundle, reports, spreadsheet
from appliance.db import write
from appliance.models import database
from web import purpose as purposes
from web.access import actor, requires
from web.clock import LocalDateTimeField
from web.reads import recorded

bp = Blueprint("audit", __name__, url_prefix="/audit")

PAGE = 50


class LogFilterForm(FlaskForm):
    username = StringField("Username", validators=[Optional(), Length(max=80)])
    action = SelectField("Action", validators=[Optional()])
    since = LocalDateTimeField("From", validators=[Optional()])
    until = LocalDateTimeField("To", validators=[Optional()], latest=True)
    query = StringField("Plate or data queried (contains)", validators=[Optional(), Length(max=80)])
    purpose = SelectField("Purpose", validators=[Optional()])
    before = IntegerField(validators=[Optional(), NumberRange(min=1)])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        families = sorted({name.split(".")[0] for name in audit.ACTIONS})
        self.action.choices = (
            [SelectChoice("", "Any action")]
            + [SelectChoice(f"{f}.*", f"{f}.* (all)") for f in families]
            + [SelectChoice(a, a) for a in sorted(audit.ACTIONS)]
        )
        self.purpose.choices = [SelectChoice("", "Any purpose")] + [
            SelectChoice(p.code, f"{p.code}: {p.label}") for p in g.settings.audit.purposes
        ]

    def filter(self) -> audit.Filter:
        return audit.Filter(
            username=(self.username.data or "").strip(),
            action=self.action.data or "",
            since=self.since.utc,
            until=self.until.utc,
            query=(self.query.data or "").strip(),
            purpose_code=self.purpose.data or "",
        )


class VerifyForm(FlaskForm):
    pass


class ExportForm(FlaskForm):
    start = DateField("From (UTC date, inclusive)", validators=[InputRequired()])
    end = DateField("To (UTC date, inclusive)", validators=[InputRequired()])
    fmt = SelectField(
        "Format",
        choices=[
            SelectChoice("csv", "CSV (spreadsheet)"),
            SelectChoice("bundle", "Signed JSON bundle (verifiable offline)"),
        ],
        default="csv",
    )


def _show(form: LogFilterForm, status: int = 200):
    stated = purposes.current()
    if stated is None:  # the records hold the plates searched: a purpose first, as for a search
        return purposes.ask("the access log", suggested="AUDIT")
    flt = form.filter()
    with write():
        page = audit.browse(flt, before=form.before.data, limit=PAGE)
        shown = sorted(set().union(*(audit.plates_named(r["query"]) for r in page.records)))
        audit.record(
            "audit.view",
            actor(),
            query={**recorded(flt, form), "plates": shown},
            purpose=stated,
            result_count=len(page.records),
            details={"before": form.before.data} if form.before.data else None,
        )
    return render_template(
        "audit/index.html", form=form, page=page, filtered=bool(flt.as_record()), verify_form=VerifyForm()
    ), status


@bp.get("/")
@requires("audit.view")
def index():
    return _show(LogFilterForm(formdata=None))


@bp.post("/")
@requires("audit.view")
def search():
    form = LogFilterForm()
    if not form.validate_on_submit():
        return render_template("audit/index.html", form=form, page=None, filtered=True, verify_form=VerifyForm()), 400
    if form.since.data and form.until.data and form.since.utc > form.until.utc:
        form.until.errors = ["'To' is before 'From'."]
        return render_template("audit/index.html", form=form, page=None, filtered=True, verify_form=VerifyForm()), 400
    return _show(form)


@bp.post("/verify")
@requires("audit.view")
def verify():
    if not VerifyForm().validate_on_submit():
        abort(400)
    stated = purposes.current()
    if stated is None:  # a broken record is shown as found, plates and all
        return purposes.ask("the access log", suggested="AUDIT")
    result = audit.verify()
    with write():
        audit.record(
            "audit.verify",
            actor(),
            purpose=stated,
            result_count=result.checked,
            details={
                "ok": result.ok,
                "bad_seq": result.bad_seq,
                "problem": result.problem,
                "head_seq": result.head_seq,
            },
        )
    bad = None
    if result.bad_seq is not None:
        row = database.execute_sql(
            f"SELECT {', '.join(audit.COLUMNS)} FROM access_record WHERE seq = ?", (result.bad_seq,)
        ).fetchone()
        bad = dict(zip(audit.COLUMNS, row)) if row else None
    return render_template("audit/verify.html", result=result, bad=bad)


# --- exports -----------------------------------------------------------------------------------


@bp.get("/export")
@requires("audit.view")
def export_form():
    form = ExportForm(formdata=None)
    today = dt.datetime.now(dt.UTC).date()
    form.start.data, form.end.data = today.replace(day=1), today
    return render_template("audit/export.html", form=form, key_id=_key_id())


def _key_id() -> str:
    try:
        return bundle.key_id(bundle.post_key(g.settings).public_key())
    except bundle.BundleError as exc:
        return f"unavailable: {exc}"


@bp.post("/export")
@requires("audit.view")
def export():
    stated = purposes.current()
    if stated is None:
        return purposes.ask("the access log", suggested="AUDIT")
    form = ExportForm()
    if not form.validate_on_submit():
        return render_template("audit/export.html", form=form, key_id=_key_id()), 400
    if form.end.data < form.start.data:
        form.end.errors = ["'To' is before 'From'."]
        return render_template("audit/export.html", form=form, key_id=_key_id()), 400
    start = dt.datetime.combine(form.start.data, dt.time())
    end = dt.datetime.combine(form.end.data + dt.timedelta(days=1), dt.time())
    stem = f"access-log-{g.settings.post.id}-{form.start.data}-to-{form.end.data}"
    fd, name = tempfile.mkstemp(prefix="waypost-export-", dir=g.settings.data_dir)
    os.close(fd)
    path = Path(name)

    @after_this_request
    def _remove(resp):
        # send_file has opened the file by now; the name can go (the data stays until it is sent).
        path.unlink(missing_ok=True)
        return resp

    if form.fmt.data == "bundle":
        try:
            bundle.write_bundle(g.settings, path, actor(), start, end, via="web", purpose=stated)
        except bundle.BundleError as exc:
            form.fmt.errors = [str(exc)]
            return render_template("audit/export.html", form=form, key_id=_key_id()), 500
        return send_file(path, mimetype="application/json", as_attachment=True, download_name=stem + ".json")
    upto = audit.head()[0]
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = spreadsheet.DictWriter(f, fieldnames=audit.COLUMNS)
        writer.writeheader()
        for row in audit.export_rows(start, end):
            if row["seq"] > upto:  # records appended while exporting belong to the next export
                break
            writer.writerow(row)
            count += 1
    with write():
        audit.record(
            "audit.export",
            actor(),
            result_count=count,
            query={"from": audit.stamp(start), "to": audit.stamp(end)},
            purpose=stated,
            details={"format": "csv", "file": stem + ".csv", "via": "web"},
        )
    return send_file(path, mimetype="text/csv", as_attachment=True, download_name=stem + ".csv")


# --- reports -----------------------------------------------------------------------------------


@bp.get("/reports")
@requires("audit.view")
def reports_index():
    tz = g.settings.post.timezone
    this_year = dt.datetime.now(dt.UTC).year
    quarters = []
    label = reports.current_quarter(tz)
    for _ in range(8):
        quarters.append(label)
        label = reports.previous_quarter(tz, reports.quarter(label, tz).start.date())
    return render_template("audit/reports.html", quarters=quarters, years=list(range(this_year, this_year - 5, -1)))


def _report_page(kind: str, label: str):
    stated = purposes.current()
    if stated is None:  # a report names the people and purposes of the period's accesses
        return purposes.ask(f"the {kind} report {label}", suggested="AUDIT")
    try:
        report = reports.quarterly(g.settings, label) if kind == "quarterly" else reports.annual(g.settings, label)
    except reports.ReportError as exc:
        abort(404, str(exc))
    with write():
        reports.record_viewed(actor(), report, "web", stated)
    if kind == "quarterly":
        assert isinstance(report, reports.Quarterly)  # made for kind above
        charts = {
            "users": [(u.username, u.data_accesses) for u in report.users[:25]],
            "purposes": [(p["code"], p["accesses"]) for p in report.purposes],
        }
    else:
        assert isinstance(report, reports.Annual)  # made for kind above
        charts = {"purposes": [(p["code"], p["accesses"]) for p in report.queries_by_purpose]}
    template = "audit/print.html" if request.args.get("print") == "1" else "audit/report.html"
    return render_template(
        template, kind=kind, r=report, charts=charts, last_day=report.period.end - dt.timedelta(days=1)
    )


@bp.get("/reports/quarterly/<label>")
@requires("audit.view")
def quarterly(label: str):
    return _report_page("quarterly", label)


@bp.get("/reports/annual/<label>")
@requires("audit.view")
def annual(label: str):
    return _report_page("annual", label)


@bp.get("/reports/go")
@requires("audit.view")
def reports_go():
    """The period picker's target (a GET form: a period is not sensitive)."""
    kind = request.args.get("kind", "quarterly")
    label = request.args.get("period", "")
    if kind not in ("quarterly", "annual"):
        abort(404)
    return redirect(url_for(f"audit.{kind}", label=label))
