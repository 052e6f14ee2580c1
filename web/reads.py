"""Search, one read, its images. Plate data: every view needs a stated purpose and writes an
access record (who, when, the data used to query, the purpose) in the transaction that reads.

A search is a POST (CSRF-protected; the case number never lands in a URL, a proxy log or the
browser history). Its purpose stays with the session (web/purpose.py), so opening a result and its
images is recorded under the same purpose and case. The images are found by the read's id in the
database, never by a path or a name from the request.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, abort, redirect, render_template, request, url_for
from wtforms import BooleanField, DecimalField, HiddenField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional

from appliance import audit, search
from appliance.db import write
from appliance.models import Alert, Camera, Evidence, Read
from web import evidence
from web import purpose as purposes
from web.access import actor, requires
from web.clock import LocalDateTimeField, window_record

bp = Blueprint("reads", __name__, url_prefix="/reads")

PAGE = 25
MODES = [
    SelectChoice("exact", "Exact plate"),
    SelectChoice("wildcard", "Wildcard (* any run, ? one character)"),
    SelectChoice("partial", "Contains"),
    SelectChoice("similar", "Similar (misread characters, one edit)"),
]


class SearchForm(purposes.PurposeForm):
    plate = StringField("Plate", validators=[InputRequired(), Length(max=16)])
    mode = SelectField("Match", choices=MODES, default="exact")
    since = LocalDateTimeField("From", validators=[Optional()])
    until = LocalDateTimeField("To", validators=[Optional()], latest=True)
    camera = SelectField("Camera", validators=[Optional()])
    min_confidence = DecimalField("Minimum confidence", places=2, validators=[Optional(), NumberRange(0, 1)])
    alerts_only = BooleanField("Only reads with a hotlist alert")
    before = IntegerField(validators=[Optional(), NumberRange(min=0)])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.camera.choices = [SelectChoice("", "All cameras")] + [
            SelectChoice(c.id, f"{c.name} ({c.id})") for c in Camera.select().order_by(Camera.id)
        ]

    def query(self) -> search.Query:
        return search.Query(
            text=self.plate.data or "",
            mode=self.mode.data,
            since=self.since.utc,
            until=self.until.utc,
            camera_id=self.camera.data or None,
            min_confidence=float(self.min_confidence.data) if self.min_confidence.data is not None else None,
            alerts_only=bool(self.alerts_only.data),
        )


def checked_search(form, template: str):
    """A submitted search form's stated purpose and query, as (purpose, query, None); or, when the
    form, the purpose or the time range is wrong, (None, None, the form back with its reasons and
    no data, 400). Used by the post's search and headquarters' search alike."""

    def refused():
        return None, None, (render_template(template, form=form, page=None), 400)

    if not form.validate_on_submit():
        return refused()
    stated = form.checked()
    if stated is None:  # no purpose, no data: the form comes back with the reason
        return refused()
    query = form.query()
    if query.since and query.until and query.since > query.until:
        form.until.errors = ["'To' is before 'From'."]
        return refused()
    return stated, query, None


def recorded(query, form) -> dict:
    """The query (anything with as_record(): a search or the access log's filter) as its access
    record keeps it: the window as UTC instants ('Z'), and as typed with its offset and the zone."""
    return {**query.as_record(), **window_record(form.since, form.until)}


class PurposeOnlyForm(purposes.PurposeForm):
    next_read = HiddenField()


@bp.get("/search")
@requires("reads.search")
def search_form():
    return render_template("reads/search.html", form=SearchForm(), page=None)


@bp.post("/search")
@requires("reads.search")
def search_results():
    form = SearchForm()
    stated, query, refusal = checked_search(form, "reads/search.html")
    if refusal:
        return refusal
    try:
        with write():
            page = search.search(query, limit=PAGE, before=form.before.data)
            audit.record(
                "read.search",
                actor(),
                query={**recorded(query, form), "plates": sorted({h.read.plate for h in page.hits})},
                purpose=stated,
                objects=[f"read:{h.read.uuid}" for h in page.hits],
                result_count=len(page.hits),
                details={"before": form.before.data} if form.before.data else None,
            )
    except search.SearchError as exc:
        form.plate.errors = [str(exc)[0].upper() + str(exc)[1:] + "."]
        return render_template("reads/search.html", form=form, page=None), 400
    purposes.remember(stated)
    alerted = _alerted({h.read.id for h in page.hits})
    return render_template(
        "reads/search.html",
        form=form,
        page=page,
        query=query,
        alerted=alerted,
        thumbs=_with_crop({h.read.id for h in page.hits}),
    )


@bp.route("/<int:read_id>", methods=["GET", "POST"])
@requires("reads.view")
def detail(read_id: int):
    stated = purposes.current()
    if request.method == "POST":
        form = PurposeOnlyForm()
        if form.validate_on_submit() and (stated := form.checked()) is not None:
            purposes.remember(stated)
            return redirect(url_for("reads.detail", read_id=read_id))
        return render_template(
            "shared/purpose_required.html", form=form, what="this read", action=url_for("reads.detail", read_id=read_id)
        ), 400
    if stated is None:  # allowed, but not before saying why: the form, and no data
        return render_template(
            "shared/purpose_required.html",
            form=PurposeOnlyForm(),
            what="this read",
            action=url_for("reads.detail", read_id=read_id),
        )
    with write():  # what the page shows is read in the transaction that records it
        read = Read.get_or_none(Read.id == read_id) or abort(404)
        kinds = {e.kind: e for e in Evidence.select().where(Evidence.read == read)}
        alerts = list(Alert.select().where(Alert.read == read).order_by(Alert.created_at))
        shown: dict[str, str | list[str]] = {"read": read.uuid, "plate": read.plate}
        if alerts:  # the page shows each alert's listed plate beside the read's
            shown["listed"] = sorted({a.entry_plate for a in alerts})
        audit.record(
            "read.view",
            actor(),
            query=shown,
            purpose=stated,
            objects=[f"read:{read.uuid}"],
            result_count=1,
        )
    return render_template(
        "reads/detail.html", read=read, kinds=kinds, alerts=alerts, purpose=stated, seen_for=_seen_for(read)
    )


@bp.get("/<int:read_id>/image/<kind>")
@requires("reads.view")
def image(read_id: int, kind: str):
    stated = purposes.current()
    if stated is None:  # 428: allowed, but a purpose must be stated first (403 means "not you")
        abort(428, "state a purpose (search, or open the read) before viewing its images")

    def find():
        read = Read.get_or_none(Read.id == read_id) or abort(404)
        return read, {"read": read.uuid, "plate": read.plate}

    return evidence.image_response(find, kind, stated)


def _alerted(ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return {a.read_id for a in Alert.select(Alert.read).where(Alert.read.in_(list(ids)))}  # type: ignore[attr-defined]  # peewee: <fk>_id attribute


def _with_crop(ids: set[int]) -> set[int]:
    if not ids:
        return set()
    return {
        e.read_id  # type: ignore[attr-defined]  # peewee: <fk>_id attribute
        for e in Evidence.select(Evidence.read).where(Evidence.read.in_(list(ids)) & (Evidence.kind == "crop"))
    }


def _seen_for(read: Read) -> str | None:
    if read.first_seen_at and read.last_seen_at:
        seconds = (read.last_seen_at - read.first_seen_at) / dt.timedelta(seconds=1)
        return f"{seconds:.1f} s"
    return None
