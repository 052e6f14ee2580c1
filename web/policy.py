"""The public usage and privacy policy (Civil Code 1798.90.51 and .53), generated from what the post
actually enforces: the configured purposes and retention periods, the roles table, the hotlist
freshness rule, plus live transparency figures.

No sign-in and no access record: the page shows only aggregates (counts and dates), never a plate,
a read or a name. Each figure is one indexed query, so a busy post answers it cheaply.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from flask import Blueprint, g, render_template

from appliance.models import Alert, User, database, utcnow
from appliance.roles import PLATE_DATA, ROLES
from web.access import public
from web.admin import PERMISSION_LABELS

bp = Blueprint("policy", __name__, url_prefix="/policy")

# Columns a sharing request may keep its decision time in, most specific first (sharing is built
# elsewhere; this page only counts what it finds).
DECISION_COLUMNS = ("decided_at", "approved_at", "reviewed_at", "updated_at", "created_at")


@dataclass
class Figures:
    reads: int
    oldest_read: dt.date | None
    hits_30d: int
    confirmed_30d: int
    searches_last_month: int
    last_month: str
    searches_30d: int
    sharing_granted_12m: int


def _audit_stamp(at: dt.datetime) -> str:
    """The access log's own time format (audit._now()), so text comparison orders by time."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _first_seq_from(at: dt.datetime) -> int:
    """The first access record at or after `at`. Records are appended in time order, so a binary
    search over seq finds it in a few primary-key lookups (no index on `at` needed)."""
    stamp = _audit_stamp(at)
    # min() and max() in separate queries: together they would scan the table instead of seeking
    lo = database.execute_sql("SELECT coalesce(min(seq), 1) FROM access_record").fetchone()[0]
    hi = database.execute_sql("SELECT coalesce(max(seq), 0) FROM access_record").fetchone()[0] + 1  # one past the end
    while lo < hi:
        mid = (lo + hi) // 2
        row = database.execute_sql(
            "SELECT at FROM access_record WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)
        ).fetchone()
        if row is None or row[0] >= stamp:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _searches(start: dt.datetime, end: dt.datetime) -> int:
    lo, hi = _first_seq_from(start), _first_seq_from(end)
    return database.execute_sql(
        "SELECT count(*) FROM access_record WHERE action = 'read.search' AND seq >= ? AND seq < ?", (lo, hi)
    ).fetchone()[0]


def _sharing_granted(since: dt.datetime) -> int:
    """Approved sharing requests since `since`, or 0 while the post has no sharing table."""
    if (
        database.execute_sql("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sharing_request'").fetchone()
        is None
    ):
        return 0
    columns = {row[1] for row in database.execute_sql("PRAGMA table_info(sharing_request)")}
    if "status" not in columns:
        return 0
    when = next((c for c in DECISION_COLUMNS if c in columns), None)
    if when is None:
        return database.execute_sql("SELECT count(*) FROM sharing_request WHERE status = 'approved'").fetchone()[0]
    return database.execute_sql(
        f"SELECT count(*) FROM sharing_request WHERE status = 'approved' AND {when} >= ?", (str(since),)
    ).fetchone()[0]


def figures(now: dt.datetime | None = None) -> Figures:
    now = now or utcnow()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month_start = (month_start - dt.timedelta(days=1)).replace(day=1)
    day30 = now - dt.timedelta(days=30)
    reads = database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
    oldest = database.execute_sql("SELECT min(captured_at) FROM read").fetchone()[0]  # apart: an index seek
    hits = Alert.select().where(Alert.created_at >= day30)
    return Figures(
        reads=reads,
        oldest_read=dt.datetime.fromisoformat(str(oldest)).date() if oldest else None,
        hits_30d=hits.count(),
        confirmed_30d=hits.where(Alert.status == "confirmed").count(),
        searches_last_month=_searches(last_month_start, month_start),
        last_month=last_month_start.strftime("%B %Y"),
        searches_30d=_searches(day30, now + dt.timedelta(seconds=1)),
        sharing_granted_12m=_sharing_granted(now - dt.timedelta(days=365)),
    )


def _job_titles() -> dict[str, list[str]]:
    """The job titles of the active accounts holding each role (titles only, never names)."""
    titles: dict[str, set[str]] = {}
    query = User.select(User.role, User.job_title).where(User.active == True).tuples()  # noqa: E712
    rows: Iterable[tuple[str, str]] = query  # type: ignore[assignment]  # peewee stubs: .tuples() yields tuples
    for role, title in rows:
        if title.strip():
            titles.setdefault(role, set()).add(title.strip())
    return {role: sorted(found, key=str.lower) for role, found in titles.items()}


@bp.get("")
@public
def index():
    settings = g.settings
    now = utcnow()
    roles = [
        {
            "key": key,
            "label": role["label"],
            "plate_data": bool(role["permissions"] & PLATE_DATA),
            "permissions": [
                PERMISSION_LABELS.get(p, p) for p in sorted(role["permissions"], key=lambda p: (p not in PLATE_DATA, p))
            ],
        }
        for key, role in ROLES.items()
    ]
    return render_template(
        "policy/index.html",
        s=settings,
        roles=roles,
        titles=_job_titles(),
        figures=figures(now),
        now=now,
        admin_label=ROLES["admin"]["label"],
    )
