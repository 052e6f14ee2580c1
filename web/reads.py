"""Search, one read, its images. Plate data: every view needs a stated purpose and writes an
access record (who, when, the data used to query, the purpose) in the transaction that reads;
a search, which may read for seconds, is recorded around its read instead (recorded_search).

A search is a POST (CSRF-protected; the case number never lands in a URL, a proxy log or the
browser history). Its purpose stays with the session (web/purpose.py), so opening a result and its
images is recorded under the same purpose and case. The images are found by the read's id in the
database, never by a path or a name from the request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import nullcontext
from typing import TypeVar

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for
from wtforms import BooleanField, DecimalField, HiddenField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional

from appliance import audit, search
from appliance.db import read as read_only
from appliance.db import write
from appliance.models import Alert, Camera, Evidence, Read
from sync.protocol import MAX_INT
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


# The next page starts from a read id the search handed out (`before`, headquarters' cursor): one no
# id column holds was made up, and is a form error, not an OverflowError in the database driver.
PAGE_POSITION = "The page position is out of range: search again from the first page."


class SearchForm(purposes.PurposeForm):
    plate = StringField("Plate", validators=[InputRequired(), Length(max=16)])
    mode = SelectField("Match", choices=MODES, default="exact")
    since = LocalDateTimeField("From", validators=[Optional()])
    until = LocalDateTimeField("To", validators=[Optional()], latest=True)
    camera = SelectField("Camera", validators=[Optional()])
    min_confidence = DecimalField("Minimum confidence", places=2, validators=[Optional(), NumberRange(0, 1)])
    alerts_only = BooleanField("Only reads with a hotlist alert")
    before = IntegerField(validators=[Optional(), NumberRange(0, MAX_INT, PAGE_POSITION)])

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


P = TypeVar("P")


def recorded_search(
    stated: audit.Purpose,
    asked: dict,
    run: Callable[[], P],
    shown: Callable[[P], tuple[list[str], list[str]]],
    details: dict | None = None,
    heavy: Callable[[], bool] | None = None,
) -> P:
    """Run a search and record it without holding the write lock while it reads. Three short
    writes at most, each committed on its own:

    1. "read.search_asked": who, when, the query `asked` and the purpose, before anything is read;
    2. `run()`, the search, in a read transaction (WAL: the pipeline goes on storing reads);
    3. "read.search", naming the plates and the reads the page will show (`shown(page)` gives
       them), committed before the page is returned: no data is shown without its record.

    If the process dies, or the database stays locked, between 1 and 3, the log keeps an asked
    search with no outcome, which is true: nothing was shown. (Completing the first record
    instead is not possible: a record is sealed by the hash of the next.) A search refused, before
    or while it runs (a bad query, `heavy()` over a bound, past the time cap, too broad), gets a
    "read.search_refused" record with the query, the purpose and the reason, and SearchError is
    raised for the page to say why."""
    who = actor()
    first: int | None = None
    try:
        slot = _running().slot(who.username) if heavy is not None and heavy() else nullcontext()
        with slot:
            with write():
                first = audit.record("read.search_asked", who, query=asked, purpose=stated, details=details).seq
            page = run()
            plates, objects = shown(page)
            with write():
                audit.record(
                    "read.search",
                    who,
                    query={**asked, "plates": plates},
                    purpose=stated,
                    objects=objects,
                    result_count=len(objects),
                    details={**(details or {}), "asked": first},
                )
    except search.SearchError as exc:
        with write():
            audit.record(
                "read.search_refused",
                who,
                query=asked,
                purpose=stated,
                result_count=0,
                details={
                    **(details or {}),
                    "reason": exc.reason,
                    "message": str(exc),
                    **({"asked": first} if first is not None else {}),
                },
            )
        raise
    return page


def _running() -> search.Running:
    """The heavy searches running in this app (one per process: the post runs one)."""
    settings = g.settings.search
    return current_app.extensions.setdefault(
        "waypost.searches", search.Running(settings.heavy_per_user, settings.heavy_at_once)
    )


def refused_search(exc: search.SearchError, form, template: str):
    """The form back with why the search was refused, and nothing else: 400 for the query, 429
    (this account's heavy searches) or 503 (the post's) with Retry-After for a bound."""
    message = str(exc)
    form.plate.errors = [message[0].upper() + message[1:] + "."]
    body = render_template(template, form=form, page=None)
    if isinstance(exc, search.SearchLimited):
        return body, 429 if exc.own else 503, {"Retry-After": str(exc.retry_after_s)}
    return body, 400


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
    before = form.before.data
    cap_s = g.settings.search.time_cap_s

    def run() -> search.Page:
        with read_only():
            return search.search(query, limit=PAGE, before=before, time_cap_s=cap_s)

    try:
        page = recorded_search(
            stated,
            recorded(query, form),
            run,
            lambda page: (sorted({h.read.plate for h in page.hits}), [f"read:{h.read.uuid}" for h in page.hits]),
            details={"before": before} if before else None,
            heavy=lambda: search.heavy(query),
        )
    except search.SearchError as exc:
        return refused_search(exc, form, "reads/search.html")
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
