"""Headquarters' pages: the posts (last contact, backlog, access-log chain) and the officers'
search across every post, with the post's rules: sign-in, role, current training, a stated
purpose and case number, and an access record for every search, read and image.

The reads live in headquarters' database (SQLite or PostgreSQL, sync/hq.py); the accounts and
the access log of the people using headquarters live in its own accounts database (the post's
schema, appliance/db.py), so the same users, roles, audit and admin code run here. The two are
different databases, so a view cannot read and record in one transaction: it reads, then commits
the access record, and only then returns anything; if the record cannot be written the request
fails and nothing is shown. A search is recorded as the post's is (web.reads.recorded_search):
asked before it reads, then the plates shown, or refused and why.
"""

from __future__ import annotations

import datetime as dt

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional, ValidationError

from appliance import audit
from appliance.db import write
from sync import hq
from sync.hq import posts as hq_posts
from sync.hq import search as hq_search
from sync.protocol import MAX_INT
from web import evidence
from web import purpose as purposes
from web.access import actor, requires
from web.clock import LocalDateTimeField
from web.reads import MODES, PAGE_POSITION, checked_search, recorded, recorded_search, refused_search

bp = Blueprint("hq", __name__, url_prefix="/hq")

PAGE = 25


class SearchForm(purposes.PurposeForm):
    plate = StringField("Plate", validators=[InputRequired(), Length(max=16)])
    mode = SelectField("Match", choices=MODES, default="exact")
    post = SelectField("Post", validators=[Optional()])
    camera = SelectField("Camera", validators=[Optional()])
    since = LocalDateTimeField("From", validators=[Optional()])
    until = LocalDateTimeField("To", validators=[Optional()], latest=True)
    cursor = HiddenField()

    def validate_cursor(self, field) -> None:
        """The cursor ends in a read id (a similar search's is an offset): past a BIGINT it is no
        page this search made. sync/hq/search.py refuses a cursor of any other form."""
        number = (field.data or "").rpartition("|")[2]
        if number.isascii() and number.isdigit() and (len(number) > 4000 or int(number) > MAX_INT):
            raise ValidationError(PAGE_POSITION)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.post.choices = [SelectChoice("", "All posts")] + [
            SelectChoice(pid, f"{name} ({pid})") for pid, name in hq_search.posts().items()
        ]
        self.camera.choices = [SelectChoice("", "All cameras")] + [
            SelectChoice(f"{pid}/{cam}", f"{cam} at {pid}") for pid, cam in hq_search.cameras()
        ]

    def query(self) -> hq_search.Query:
        post_id, _, camera = (self.camera.data or "").partition("/")
        return hq_search.Query(
            text=self.plate.data or "",
            mode=self.mode.data,
            post_id=self.post.data or (post_id if camera else None) or None,
            camera_id=camera or None,
            since=self.since.utc,
            until=self.until.utc,
        )


class VerifyForm(FlaskForm):
    post = HiddenField(validators=[InputRequired()])


# --- posts -----------------------------------------------------------------------------------------


def _posts() -> list[dict]:
    sync = g.settings.sync
    rows = hq.status(sync.late_after_minutes, sync.clock_warn_s)
    for row in rows:
        latest = (
            hq.HQBatch.select(hq.HQBatch.status, hq.HQBatch.problem, hq.HQBatch.message)
            .where(hq.HQBatch.post_id == row["post"])
            .order_by(hq.HQBatch.id.desc())
            .first()
        )
        if row["chain_status"] == "broken":
            row["chain"] = "broken"
        elif latest is not None and latest.status == "refused" and latest.problem == "gap":
            row["chain"] = "gap"
            row["gap"] = latest.message
        else:
            row["chain"] = "verified"
        # a re-based post's closed chain copies, and the ids it had before a rename
        row["segments"] = hq_posts.segments(row["post"])
        row["old_ids"] = hq_posts.old_ids(row["post"])
    return rows


def _since(when) -> str:
    if when is None:
        return "never"
    seconds = (dt.datetime.now(dt.UTC).replace(tzinfo=None) - when).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'' if n == 1 else 's'} ago"
    return "just now"


@bp.get("")
@requires("health.view")
def posts():
    return render_template("hq/posts.html", posts=_posts(), since=_since, form=VerifyForm(), checked=None)


@bp.post("/verify")
@requires("health.view")
def verify():
    """Walk headquarters' copy of one post's access log now (the page shows what ingest found)."""
    form = VerifyForm()
    if not form.validate_on_submit() or hq.HQPost.get_or_none(hq.HQPost.id == form.post.data) is None:
        abort(400)
    ok, bad_seq, message = hq.verify_chain(form.post.data)
    with write():
        audit.record(
            "audit.verify",
            actor(),
            query={"post": form.post.data, "at": "headquarters"},
            details={"ok": ok, "bad_seq": bad_seq, "problem": "" if ok else message},
        )
    return render_template(
        "hq/posts.html",
        posts=_posts(),
        since=_since,
        form=VerifyForm(),
        checked={"post": form.post.data, "ok": ok, "bad_seq": bad_seq, "message": message},
    )


@bp.app_context_processor
def _banner():
    def site_warnings() -> list[str]:
        """A post whose access log headquarters found broken is named on every page."""
        try:
            return [
                f"Post {p.name} ({p.id}): its access log is BROKEN at record {p.first_bad_seq}. "
                "Tell the ALPR administrator."
                for p in hq.HQPost.select().where(hq.HQPost.chain_status == "broken").order_by(hq.HQPost.id)
            ]
        except Exception:  # the banner must never take a page down with it
            current_app.logger.exception("post status for the warning banner")
            return ["Headquarters' database could not be read."]

    return {"site_warnings": site_warnings}


# --- search ----------------------------------------------------------------------------------------


@bp.get("/reads/search")
@requires("reads.search")
def search_form():
    return render_template("hq/search.html", form=SearchForm(), page=None)


@bp.post("/reads/search")
@requires("reads.search")
def search_results():
    form = SearchForm()
    stated, query, refusal = checked_search(form, "hq/search.html")
    if refusal:
        return refusal
    cursor = form.cursor.data or None
    try:  # recorded as asked, then as shown (naming the plates) or refused: no record, no results
        page = recorded_search(
            stated,
            recorded(query, form),
            lambda: hq_search.search(query, limit=PAGE, cursor=cursor),
            lambda page: (
                sorted({h.read.plate for h in page.hits}),
                [f"read:{h.read.post_id}/{h.read.uuid}" for h in page.hits],
            ),
            details={"cursor": cursor} if cursor else None,
        )
    except hq_search.SearchError as exc:
        return refused_search(exc, form, "hq/search.html")
    purposes.remember(stated)
    alerts = hq_search.alerts_for([h.read for h in page.hits])
    return render_template(
        "hq/search.html", form=form, page=page, query=query, alerts=alerts, post_names=hq_search.posts()
    )


# --- one read and its images ------------------------------------------------------------------------


@bp.route("/reads/<int:read_id>", methods=["GET", "POST"])
@requires("reads.view")
def read(read_id: int):
    stated = purposes.current()
    if request.method == "POST":
        form = purposes.PurposeForm()
        if form.validate_on_submit() and (stated := form.checked()) is not None:
            purposes.remember(stated)
            return redirect(url_for("hq.read", read_id=read_id))
        return render_template(
            "shared/purpose_required.html", form=form, what="this read", action=url_for("hq.read", read_id=read_id)
        ), 400
    if stated is None:  # allowed, but not before saying why: the form, and no data
        return render_template(
            "shared/purpose_required.html",
            form=purposes.PurposeForm(),
            what="this read",
            action=url_for("hq.read", read_id=read_id),
        )
    row = hq_search.read(read_id) or abort(404)
    with write():
        audit.record(
            "read.view",
            actor(),
            query={"read": row.uuid, "plate": row.plate, "post": row.post_id, "at": "headquarters"},
            purpose=stated,
            objects=[f"read:{row.post_id}/{row.uuid}"],
            result_count=1,
        )
    kinds = {im.get("kind") for im in row.data.get("images") or []}
    return render_template(
        "hq/read.html",
        read=row,
        data=row.data,
        kinds=kinds,
        frame_to_come=_frame_to_come(row),
        purpose=stated,
        post_name=hq_search.posts().get(row.post_id, row.post_id),
        alerts=hq_search.alerts_for([row]).get((row.post_id, row.uuid), []),
    )


def _frame_to_come(row) -> bool:
    """Whether the read names a frame headquarters does not hold yet (it follows its read in the
    post's second lane: sync/post.py)."""
    frame = next((im for im in row.data.get("images") or [] if im.get("kind") == "frame"), None)
    return frame is not None and not hq.HQImage.select().where(hq.HQImage.sha256 == frame.get("sha256")).exists()


@bp.get("/reads/<int:read_id>/image/<kind>")
@requires("reads.view")
def image(read_id: int, kind: str):
    stated = purposes.current()
    if stated is None:  # 428: allowed, but a purpose must be stated first (403 means "not you")
        abort(428, "state a purpose (search, or open the read) before viewing its images")
    if kind not in ("crop", "frame"):
        abort(404)
    row = hq_search.read(read_id) or abort(404)
    try:
        found = hq_search.image(row, kind)
    except hq_search.ImageError as exc:
        current_app.logger.error("%s", exc)
        abort(404)
    if found is None:
        abort(404, "frame not yet received" if kind == "frame" and _frame_to_come(row) else None)
    meta, data = found
    with write():
        audit.record(
            "evidence.view",
            actor(),
            query={"read": row.uuid, "plate": row.plate, "post": row.post_id, "at": "headquarters"},
            purpose=stated,
            objects=[f"read:{row.post_id}/{row.uuid}", f"evidence:{meta['sha256']}"],
            result_count=1,
            details={"kind": kind},
        )
    return evidence.jpeg_response(data, f"read-{row.id}-{kind}.jpg")
