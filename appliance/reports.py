"""The quarterly audit and the annual report to the chief (Barstow 466: quarterly audits, an annual
report with query purposes; Civil Code 1798.90.51(b)(C): how use is monitored).

Everything is counted by the database (GROUP BY over the access log, the reads and the alerts);
Python only arranges the grouped rows. Periods are calendar quarters and years in the post's time
zone; the access log stores UTC, so a period is turned into a UTC range first.

A period's records are found through the `at` index as a seq range, and the counting queries then
walk that range of the table by seq. `at` is checked again inside the range because a post's clock
can step back (a Pi without a clock battery boots in the past), so time order and seq order may
differ at the edges.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from appliance import audit
from appliance.models import database

# Families of actions the quarterly audit lists record by record (an action is "family.verb").
FAMILIES = (
    ("hotlist", "Hotlist changes"),
    ("sharing", "Data sharing"),
    ("hold", "Legal holds"),
    ("retention", "Purges and retention"),
)
LIST_LIMIT = 500  # records listed per section; the counts always cover all of them
# Looking at the file of sharing requests: the quarterly audit counts and lists these with the
# rest of the family (who looked is part of monitoring), but the annual report's sharing figure
# is about requests and what was done with them, which a page view must not inflate.
SHARING_VIEWING = ("sharing.list", "sharing.view")


class ReportError(ValueError):
    pass


@dataclass(frozen=True)
class Period:
    kind: str  # "quarter" or "year"
    label: str  # "2025-Q1", "2025"
    start: dt.datetime  # local, aware
    end: dt.datetime  # local, aware, exclusive

    @property
    def start_utc(self) -> dt.datetime:
        return self.start.astimezone(dt.UTC).replace(tzinfo=None)

    @property
    def end_utc(self) -> dt.datetime:
        return self.end.astimezone(dt.UTC).replace(tzinfo=None)

    def months(self) -> list[tuple[str, dt.datetime, dt.datetime]]:
        """(label, start UTC, end UTC) of each calendar month in the period, local months."""
        out, cur = [], self.start
        while cur < self.end:
            nxt = cur.replace(year=cur.year + (cur.month == 12), month=cur.month % 12 + 1)
            out.append((cur.strftime("%b"), _utc(cur), _utc(nxt)))
            cur = nxt
        return out


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def quarter(label: str, tz: str) -> Period:
    """'2025-Q1' (or '2025Q1', '2025-1') in the time zone `tz`."""
    match = re.fullmatch(r"\s*(\d{4})\s*-?\s*[Qq]?([1-4])\s*", label or "")
    if not match:
        raise ReportError(f"{label!r} is not a quarter: write it as YEAR-QN, e.g. 2025-Q1")
    year, q = int(match.group(1)), int(match.group(2))
    zone = ZoneInfo(tz)
    start = dt.datetime(year, 3 * q - 2, 1, tzinfo=zone)
    end = dt.datetime(year + (q == 4), (3 * q) % 12 + 1, 1, tzinfo=zone)
    return Period("quarter", f"{year}-Q{q}", start, end)


def year(label: str | int, tz: str) -> Period:
    text = str(label).strip()
    if not re.fullmatch(r"\d{4}", text):
        raise ReportError(f"{label!r} is not a year: write it as YYYY, e.g. 2025")
    zone = ZoneInfo(tz)
    return Period(
        "year", text, dt.datetime(int(text), 1, 1, tzinfo=zone), dt.datetime(int(text) + 1, 1, 1, tzinfo=zone)
    )


def current_quarter(tz: str, today: dt.date | None = None) -> str:
    today = today or dt.datetime.now(ZoneInfo(tz)).date()
    return f"{today.year}-Q{(today.month - 1) // 3 + 1}"


def previous_quarter(tz: str, today: dt.date | None = None) -> str:
    today = today or dt.datetime.now(ZoneInfo(tz)).date()
    q = (today.month - 1) // 3
    return f"{today.year - 1}-Q4" if q == 0 else f"{today.year}-Q{q}"


# --- the period's slice of the access log ------------------------------------------------------


@dataclass
class _Slice:
    """SQL that selects the period's records: a seq range plus the time test."""

    lo: int | None
    hi: int | None
    since: str
    until: str

    def where(self, extra: str = "") -> tuple[str, list]:
        if self.lo is None:
            return "WHERE 0", []
        # `+at`: test the time on the rows of the seq range; do not let the planner use the at index.
        sql = "WHERE seq BETWEEN ? AND ? AND +at >= ? AND +at < ?"
        return (sql + (f" AND {extra}" if extra else "")), [self.lo, self.hi, self.since, self.until]


def _slice(period: Period) -> _Slice:
    since, until = audit.stamp(period.start_utc), audit.stamp(period.end_utc)
    lo, hi = database.execute_sql(
        "SELECT min(seq), max(seq) FROM access_record WHERE at >= ? AND at < ?", (since, until)
    ).fetchone()
    return _Slice(lo, hi, since, until)


def _rows(sql: str, params) -> list[tuple]:
    return database.execute_sql(sql, params).fetchall()


def _family_range(name: str) -> tuple[str, str]:
    return f"{name}.", f"{name}/"  # '/' sorts right after '.': every "name.*" action is in between


@dataclass
class Section:
    title: str
    counts: list[tuple[str, int]]  # action -> count
    records: list[dict]
    total: int

    @property
    def truncated(self) -> bool:
        return self.total > len(self.records)


def _family(sl: _Slice, name: str, title: str, limit: int, without: tuple[str, ...] = ()) -> Section:
    lo_action, hi_action = _family_range(name)
    if sl.lo is None:  # no record in the period (sl.where() then binds no parameters)
        return Section(title, [], [], 0)
    where, params = sl.where(
        "action >= ? AND action < ?" + (f" AND action NOT IN ({', '.join('?' * len(without))})" if without else "")
    )
    params = params + [lo_action, hi_action, *without]
    counts = _rows(f"SELECT action, count(*) FROM access_record {where} GROUP BY action ORDER BY action", params)
    records = _rows(
        f"SELECT {', '.join(audit.COLUMNS)} FROM access_record {where} ORDER BY seq LIMIT ?", params + [limit]
    )
    return Section(
        title, [(a, n) for a, n in counts], [dict(zip(audit.COLUMNS, r)) for r in records], sum(n for _, n in counts)
    )


# --- the quarterly audit -----------------------------------------------------------------------


@dataclass
class UserActivity:
    username: str
    organization: str
    records: int
    data_accesses: int  # records with a purpose: searches, views, images, live, alerts
    searches: int
    searches_without_hit: int


@dataclass
class Quarterly:
    period: Period
    post: dict
    generated_at: str
    records: int
    first_seq: int | None
    last_seq: int | None
    by_action: list[tuple[str, int]]
    users: list[UserActivity]
    searches: int
    searches_without_hit: int
    empty_searches: list[dict]  # the latest searches that found nothing
    purposes: list[dict]  # code, label, accesses, cases, users
    sections: list[Section]
    sign_in_failures: list[dict]  # username, failed, lockouts
    failed_total: int
    lockouts_total: int
    chain: audit.VerifyResult
    notes: list[str] = field(default_factory=list)


@contextmanager
def _groups(sl: _Slice):
    """The period's records counted per (username, organization, action, purpose, searched without a
    hit), in a temporary table. SQLite's GROUP BY sorts every row of the period; an upsert into a
    table keyed by the group keeps only the groups (a few thousand) and took two thirds of the time
    on a million records. The report then sums these groups with small GROUP BYs."""
    database.execute_sql("DROP TABLE IF EXISTS temp.report_group")
    database.execute_sql(
        "CREATE TEMP TABLE report_group (username TEXT, organization TEXT, action TEXT, purpose_code TEXT, "
        "empty INTEGER, n INTEGER, PRIMARY KEY (username, organization, action, purpose_code, empty)) WITHOUT ROWID"
    )
    try:
        where, params = sl.where()
        # "AND true" keeps the parser from reading ON CONFLICT as a join constraint (SQLite's upsert rule).
        database.execute_sql(
            "INSERT INTO temp.report_group SELECT username, organization, action, purpose_code, "
            "coalesce(action = 'read.search' AND result_count = 0, 0), 1 "
            f"FROM access_record {where} AND true ON CONFLICT DO UPDATE SET n = n + 1",
            params,
        )
        yield "temp.report_group"
    finally:
        database.execute_sql("DROP TABLE IF EXISTS temp.report_group")


def _cases(sl: _Slice) -> dict[str, int]:
    """Distinct case numbers per purpose (DISTINCT keeps only the pairs; no sort of every row)."""
    where, params = sl.where("purpose_code != ''")
    return dict(
        _rows(
            "SELECT purpose_code, count(*) FROM (SELECT DISTINCT purpose_code, case_number "
            f"FROM access_record {where}) GROUP BY purpose_code",
            params,
        )
    )


def quarterly(settings, label: str, *, verify_chain: bool = True, limit: int = LIST_LIMIT) -> Quarterly:
    period = quarter(label, settings.post.timezone)
    sl = _slice(period)
    labels = {p.code: p.label for p in settings.audit.purposes}
    with _groups(sl) as g:
        by_action = _rows(f"SELECT action, sum(n) FROM {g} GROUP BY action ORDER BY sum(n) DESC, action", ())
        users = [
            UserActivity(*row)
            for row in _rows(
                "SELECT username, organization, sum(n), coalesce(sum(CASE WHEN purpose_code != '' THEN n END), 0), "
                "coalesce(sum(CASE WHEN action = 'read.search' THEN n END), 0), coalesce(sum(empty * n), 0) "
                f"FROM {g} GROUP BY username, organization ORDER BY sum(n) DESC, username",
                (),
            )
        ]
        searches, empty = _rows(
            f"SELECT coalesce(sum(n), 0), coalesce(sum(empty * n), 0) FROM {g} WHERE action = 'read.search'", ()
        )[0]
        purpose_rows = _rows(
            "SELECT purpose_code, sum(n), count(DISTINCT username) "
            f"FROM {g} WHERE purpose_code != '' GROUP BY purpose_code "
            "ORDER BY sum(n) DESC, purpose_code",
            (),
        )
        failures = [
            {"username": u, "failed": f, "lockouts": k}
            for u, f, k in _rows(
                "SELECT username, coalesce(sum(CASE WHEN action = 'auth.login_failed' THEN n END), 0), "
                "coalesce(sum(CASE WHEN action = 'auth.lockout' THEN n END), 0) "
                f"FROM {g} WHERE action IN ('auth.login_failed', 'auth.lockout') "
                "GROUP BY username ORDER BY 2 DESC, 3 DESC, username",
                (),
            )
        ]
    cases = _cases(sl)
    purposes = [
        {
            "code": code,
            "label": labels.get(code, "(no longer configured)"),
            "accesses": n,
            "cases": cases.get(code, 0),
            "users": people,
        }
        for code, n, people in purpose_rows
    ]

    e_where, e_params = sl.where("action = 'read.search' AND result_count = 0")
    empty_searches = [
        dict(zip(audit.COLUMNS, r))
        for r in _rows(
            f"SELECT {', '.join(audit.COLUMNS)} FROM access_record {e_where} ORDER BY seq DESC LIMIT ?",
            e_params + [limit],
        )
    ]
    sections = [_family(sl, name, title, limit) for name, title in FAMILIES]

    chain = audit.verify() if verify_chain else audit.VerifyResult(True, notes=["not verified"])
    total = sum(n for _, n in by_action)
    notes = []
    if sl.lo is not None and sl.hi is not None and (sl.hi - sl.lo + 1) != total:  # min(seq), max(seq): both or neither
        notes.append(
            f"{sl.hi - sl.lo + 1 - total} record(s) between seq {sl.lo} and {sl.hi} carry times outside "
            "the quarter (the post's clock was stepped); they are counted in the period of their time"
        )
    return Quarterly(
        period=period,
        post=_post(settings),
        generated_at=audit.stamp(dt.datetime.now(dt.UTC)),
        records=total,
        first_seq=sl.lo,
        last_seq=sl.hi,
        by_action=[(a, n) for a, n in by_action],
        users=users,
        searches=searches,
        searches_without_hit=empty,
        empty_searches=empty_searches,
        purposes=purposes,
        sections=sections,
        sign_in_failures=failures,
        failed_total=sum(f["failed"] for f in failures),
        lockouts_total=sum(f["lockouts"] for f in failures),
        chain=chain,
        notes=notes,
    )


def _post(settings) -> dict:
    return {
        "id": settings.post.id,
        "name": settings.post.name,
        "agency": settings.post.agency,
        "timezone": settings.post.timezone,
    }


# --- the annual report to the chief ------------------------------------------------------------


def _monthly(table: str, column: str, period: Period, extra: str = "") -> list[tuple[str, int]]:
    """Counts per local calendar month of `table`.`column` (a naive UTC datetime), one query."""
    months = period.months()
    fmt = "%Y-%m-%d %H:%M:%S"
    cases = " ".join(f"WHEN {column} < ? THEN {i}" for i in range(len(months)))
    params = [end.strftime(fmt) for _, _, end in months]
    sql = (
        f"SELECT CASE {cases} END AS m, count(*) FROM {table} WHERE {column} >= ? AND {column} < ?"
        f"{' AND ' + extra if extra else ''} GROUP BY m"
    )
    found = dict(_rows(sql, params + [period.start_utc.strftime(fmt), period.end_utc.strftime(fmt)]))
    return [(label, found.get(i, 0)) for i, (label, _, _) in enumerate(months)]


@dataclass
class Annual:
    period: Period
    post: dict
    generated_at: str
    reads_by_month: list[tuple[str, int]]
    reads: int
    hits_by_month: list[tuple[str, int]]
    hits: int
    hit_status: list[tuple[str, int]]
    confirmed: int
    misreads: int
    queries_by_purpose: list[dict]
    data_accesses: int
    searches: int
    searches_without_hit: int
    sharing: Section
    retention: Section
    records: int
    chain: audit.VerifyResult


def annual(settings, label: str | int, *, verify_chain: bool = True, limit: int = LIST_LIMIT) -> Annual:
    period = year(label, settings.post.timezone)
    reads_by_month = _monthly("read", "captured_at", period)
    hits_by_month = _monthly("alert", "created_at", period)
    fmt = "%Y-%m-%d %H:%M:%S"
    span = [period.start_utc.strftime(fmt), period.end_utc.strftime(fmt)]
    status = _rows(
        "SELECT status, count(*) FROM alert WHERE created_at >= ? AND created_at < ? "
        "GROUP BY status ORDER BY count(*) DESC, status",
        span,
    )
    counts = dict(status)

    sl = _slice(period)
    labels = {p.code: p.label for p in settings.audit.purposes}
    with _groups(sl) as g:
        purpose_rows = _rows(
            "SELECT purpose_code, sum(n), coalesce(sum(CASE WHEN action = 'read.search' THEN n END), 0) "
            f"FROM {g} WHERE purpose_code != '' GROUP BY purpose_code "
            "ORDER BY sum(n) DESC, purpose_code",
            (),
        )
        records, searches, empty = _rows(
            "SELECT coalesce(sum(n), 0), coalesce(sum(CASE WHEN action = 'read.search' THEN n END), 0), "
            f"coalesce(sum(empty * n), 0) FROM {g}",
            (),
        )[0]
    cases = _cases(sl)
    purposes = [
        {
            "code": code,
            "label": labels.get(code, "(no longer configured)"),
            "accesses": n,
            "searches": searched,
            "cases": cases.get(code, 0),
        }
        for code, n, searched in purpose_rows
    ]
    chain = audit.verify() if verify_chain else audit.VerifyResult(True, notes=["not verified"])
    return Annual(
        period=period,
        post=_post(settings),
        generated_at=audit.stamp(dt.datetime.now(dt.UTC)),
        reads_by_month=reads_by_month,
        reads=sum(n for _, n in reads_by_month),
        hits_by_month=hits_by_month,
        hits=sum(n for _, n in hits_by_month),
        hit_status=status,
        confirmed=counts.get("confirmed", 0),
        misreads=counts.get("misread", 0),
        queries_by_purpose=purposes,
        data_accesses=sum(p["accesses"] for p in purposes),
        searches=searches,
        searches_without_hit=empty,
        sharing=_family(sl, "sharing", "Data-sharing requests", limit, without=SHARING_VIEWING),
        retention=_family(sl, "retention", "Retention actions", limit),
        records=records,
        chain=chain,
    )


def record_viewed(actor: audit.Actor, report, where: str, purpose: audit.Purpose) -> None:
    """The access record of a report being produced, with its purpose and the plates the access
    records it lists name (call inside write())."""
    audit.record(
        "audit.report",
        actor,
        purpose=purpose,
        query={"report": report.period.kind, "period": report.period.label, "plates": sorted(_plates_listed(report))},
        result_count=getattr(report, "records", None),
        details={"via": where},
    )


def _plates_listed(value) -> set[str]:
    """The plates named by the access records a report lists (each a dict with its query)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return set().union(*(_plates_listed(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, dict):
        found = audit.plates_named(value["query"]) if isinstance(value.get("query"), str) else set()
        return found.union(*(_plates_listed(v) for v in value.values() if isinstance(v, (list, dict))))
    if isinstance(value, (list, tuple)):
        return set().union(*(_plates_listed(v) for v in value))
    return set()


def as_dict(report) -> dict:
    """The report as plain data (JSON-ready)."""

    def plain(value):
        if isinstance(value, Period):
            return {
                "kind": value.kind,
                "label": value.label,
                "from": value.start.isoformat(),
                "to": value.end.isoformat(),
            }
        if dataclasses.is_dataclass(value):
            out = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            if isinstance(value, audit.VerifyResult):
                out["summary"] = value.summary()
            return out
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(report)


def as_text(report) -> str:
    """A plain-text summary for the terminal; the web page is the full report."""
    p = report.period
    last_day = p.end - dt.timedelta(days=1)  # the period's end is exclusive: midnight after it
    lines = [
        f"{'Quarterly audit' if p.kind == 'quarter' else 'Annual report'} {p.label} "
        f"({p.start:%Y-%m-%d} to {last_day:%Y-%m-%d}, {report.post['timezone']}), post {report.post['id']}, "
        f"{report.post['agency']}",
        report.chain.summary(),
    ]
    if isinstance(report, Quarterly):
        lines += [
            f"access records in the quarter: {report.records}",
            f"searches: {report.searches}, without a hit: {report.searches_without_hit}",
            f"failed sign-ins: {report.failed_total}, lock-outs: {report.lockouts_total}",
            "",
            "accesses per user (records / data accesses / searches / without a hit):",
        ]
        lines += [
            f"  {u.username:<24} {u.records:>9} {u.data_accesses:>9} {u.searches:>9} {u.searches_without_hit:>9}"
            for u in report.users
        ]
        lines += ["", "purposes (accesses / case numbers / users):"]
        lines += [f"  {x['code']:<12} {x['accesses']:>9} {x['cases']:>9} {x['users']:>6}" for x in report.purposes]
        for section in report.sections:
            lines += ["", f"{section.title}: {section.total}"]
            lines += [f"  {a:<28} {n:>9}" for a, n in section.counts]
        lines += report.notes
    else:
        lines += [
            f"reads: {report.reads}",
            f"hits (alerts): {report.hits}, confirmed: {report.confirmed}, misreads: {report.misreads}",
            f"data accesses: {report.data_accesses}, searches: {report.searches} "
            f"({report.searches_without_hit} without a hit)",
            "",
            "reads per month:",
        ]
        lines += [f"  {m:<4} {n:>10}" for m, n in report.reads_by_month]
        lines += ["", "queries by purpose (accesses / searches / case numbers):"]
        lines += [
            f"  {x['code']:<12} {x['accesses']:>9} {x['searches']:>9} {x['cases']:>9}"
            for x in report.queries_by_purpose
        ]
        for section in (report.sharing, report.retention):
            lines += ["", f"{section.title}: {section.total}"]
            lines += [f"  {a:<28} {n:>9}" for a, n in section.counts]
    return "\n".join(lines)
