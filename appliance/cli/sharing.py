"""`waypost sharing ...` (requests from other California public agencies) and `waypost evidence
...` (the ZIP of an approved request or an active hold, and its offline check)."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import click

from appliance import audit, db, export, sharing
from appliance.cli.context import runs_as, stated_purpose, unattended
from appliance.cli.types import ROW_ID
from appliance.holds import HoldError


def _when(value: str, name: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)", param_hint=name
        ) from None


def _act(ctx, action, *args, **kwargs):
    """Run one domain action on the post's database; a refusal becomes a clean error (exit 1)."""
    ctx.open()
    with db.connection():
        try:
            return action(*args, **kwargs)
        except (sharing.SharingError, audit.PurposeError, HoldError) as exc:
            where = f" ({exc.field})" if getattr(exc, "field", None) else ""
            raise click.ClickException(f"{exc}{where}") from None


@click.group(name="sharing")
def sharing_group():
    """Data-sharing requests from other California public agencies (Civil Code 1798.90.55)."""


@unattended("prints the recipient types")
@sharing_group.command("types")
def sharing_types():
    """The agency types a request can name, and which are refused."""
    for key, label in sharing.AGENCY_TYPES.items():
        click.echo(f"{key:22} {label}")
    click.echo(
        f"Whatever the type, the agency's name and ORI are checked against the list of refused recipients "
        f"(appliance/{sharing.REFUSED_LIST}, {len(sharing.refused_list().entries)} entries)."
    )


@runs_as("sharing.request")
@sharing_group.command("request")
@click.option("--agency", "agency_name", required=True, help="Name of the requesting agency.")
@click.option("--agency-type", required=True, help="One of `waypost sharing types`.")
@click.option("--state", "agency_state", required=True, help="The agency's state, two letters (CA).")
@click.option(
    "--ori", "agency_ori", required=True, help="The agency's ORI (NCIC originating agency identifier), e.g. CA0190000."
)
@click.option("--requester", "requester_name", required=True, help="Name of the person requesting.")
@click.option("--title", "requester_title", required=True, help="Their title or rank.")
@click.option("--contact", "requester_contact", required=True, help="Their telephone or e-mail.")
@click.option("--intended-purpose", required=True, help="The purpose in the request's own words.")
@click.option(
    "--authority", "legal_authority", required=True, help="Legal authority or the requesting agency's case number."
)
@click.option(
    "--assurance",
    required=True,
    help="The agency's written assurance that the data goes to no one but California state or local public "
    "agencies (AG bulletin 2023-DLE-06), as they wrote it.",
)
@click.option(
    "--plate",
    required=True,
    help="The plate asked for, three known characters in a row at least (wildcards * and ? with --match wildcard).",
)
@click.option("--match", "match_mode", type=click.Choice(["exact", "wildcard"]), default="exact", show_default=True)
@click.option("--from", "since", required=True, help="Start of the period (UTC).")
@click.option("--to", "until", required=True, help="End of the period (UTC).")
@click.option("--purpose", "purpose_code", required=True, help="This department's purpose code, e.g. CRIME-INV.")
@click.option("--case", "case_number", required=True, help="Case or incident number the request is filed under.")
@click.pass_obj
def sharing_request(ctx, purpose_code, case_number, since, until, **fields):
    """Record a written request (pending until another person, the ALPR administrator, decides)."""
    new = sharing.NewRequest(period_start_at=_when(since, "--from"), period_end_at=_when(until, "--to"), **fields)
    req = _act(ctx, sharing.create, ctx.settings, ctx.actor(), new, audit.Purpose(purpose_code, case_number))
    click.echo(f"sharing request {req.id} recorded (pending): {req.agency_name}, plate {req.plate}")


@runs_as("sharing.request")
@sharing_group.command("list")
@click.option("--status", type=click.Choice(["pending", "approved", "denied"]), default=None)
@stated_purpose("SHARING")
@click.pass_obj
def sharing_list(ctx, status, purpose_code, case_number):
    """Requests on file, newest first (the listing is recorded, with its purpose)."""
    purpose = ctx.purpose(purpose_code, case_number)
    for req in _act(ctx, sharing.listing, ctx.actor(), purpose, status):
        click.echo(
            f"{req.id:5}  {req.status:8}  {req.created_at:%Y-%m-%d}  {req.agency_name} ({req.agency_state})  "
            f"plate {req.plate}  case {req.case_number}"
        )


@runs_as("sharing.request")
@sharing_group.command("show")
@click.argument("request_id", type=ROW_ID)
@stated_purpose("SHARING")
@click.pass_obj
def sharing_show(ctx, request_id, purpose_code, case_number):
    """One request, what an export would hold now, its decision and its exports (the viewing is
    recorded, with its purpose)."""
    purpose = ctx.purpose(purpose_code, case_number)

    def show():
        req, exports, covers = sharing.view(ctx.actor(), request_id, purpose)
        click.echo(f"Status:            {req.status}")
        for line in sharing.request_lines(req) + sharing.coverage_lines(covers):
            click.echo(line)
        if req.status == "pending" and sharing.missing_for_approval(req):
            click.echo(
                f"Cannot be approved: recorded without {' and '.join(sharing.missing_for_approval(req))}; "
                "deny it and record the request again with both."
            )
        if req.decided_by:
            click.echo(
                f"Decision:          {req.status} by {req.decided_by} on {req.decided_at:%Y-%m-%d %H:%M} UTC: "
                f"{req.decision_note}"
            )
        for e in exports:
            click.echo(
                f"Export:            {e.exported_at:%Y-%m-%d %H:%M} UTC by {e.exported_by}, {e.read_count} read(s), "
                f"access record {e.record_seq}"
            )

    _act(ctx, show)


def _decide(ctx, request_id, approve, note):
    req = _act(ctx, sharing.decide, ctx.settings, ctx.actor(), request_id, approve, note)
    click.echo(f"sharing request {req.id} {req.status}")


@runs_as("sharing.approve")
@sharing_group.command("approve")
@click.argument("request_id", type=ROW_ID)
@click.option("--note", required=True, help="Why, and on whose authority.")
@click.pass_obj
def sharing_approve(ctx, request_id, note):
    """Approve a pending request (the ALPR administrator's decision; not the person who recorded it)."""
    _decide(ctx, request_id, True, note)


@runs_as("sharing.approve")
@sharing_group.command("deny")
@click.argument("request_id", type=ROW_ID)
@click.option("--note", required=True, help="Why.")
@click.pass_obj
def sharing_deny(ctx, request_id, note):
    """Deny a pending request (not the person who recorded it)."""
    _decide(ctx, request_id, False, note)


@click.group(name="evidence")
def evidence_group():
    """Evidence ZIPs: make one for an approved request, check one offline."""


@runs_as("holds.request")
@evidence_group.command("export")
@click.option("--request", "request_id", type=ROW_ID, default=None, help="An approved sharing request.")
@click.option("--hold", "hold_id", type=ROW_ID, default=None, help="Or an active legal hold.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The ZIP to write (default: waypost-evidence-request-ID-TIME.zip or ...-hold-ID-... here).",
)
@click.pass_obj
def evidence_export(ctx, request_id, hold_id, out):
    """Write the evidence ZIP of an approved sharing request (--request; needs sharing.approve too)
    or an active legal hold (--hold)."""
    if (request_id is None) == (hold_id is None):
        raise click.UsageError("give either --request ID or --hold ID")
    kind, ref = ("request", request_id) if request_id is not None else ("hold", hold_id)
    out = out or Path(f"waypost-evidence-{kind}-{ref}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.zip")
    if out.exists():
        raise click.ClickException(f"{out} already exists; give another --out")
    _writable(out)
    try:
        if request_id is not None:
            ctx.require("sharing.approve")  # a disclosure to another agency: the ALPR administrator's
            summary = _act(ctx, sharing.export, ctx.settings, ctx.actor(), request_id, out)
        else:
            summary = _act(ctx, export.for_hold, ctx.settings, ctx.actor(), hold_id, out)
    except OSError as exc:
        # after the check above: the disk filled or the directory changed while the ZIP was written
        raise click.ClickException(
            f"writing {out} failed: {exc.strerror or exc}. The file was not made; if `waypost audit` shows an "
            "export record for it, the export was recorded before the file could be finished."
        ) from None
    click.echo(
        f"wrote {summary.path}: {summary.read_count} read(s), {summary.image_count} image(s), "
        f"{summary.bytes} bytes; access record {summary.record['seq']} {summary.record['hash']}"
    )


def _writable(out: Path) -> None:
    """Refuse an --out where no file can be made, before anything is exported or recorded: its
    directory is made if missing (as the export would) and a scratch file is created in it."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            return
    except FileExistsError as exc:  # mkdir's answer to a file where the directory should be
        why = f"{exc.filename} is a file, not a directory"
    except OSError as exc:
        why = f"{exc.strerror or exc} ({exc.filename or out.parent})"
    raise click.ClickException(
        f"cannot write {out}: {why}. Nothing was exported; give an --out in a directory this account can write to."
    )


@unattended("checks a ZIP file offline")
@evidence_group.command("verify")
@click.argument("zip_path", type=click.Path(dir_okay=False, path_type=Path))
def evidence_verify(zip_path):
    """Check an evidence ZIP offline (no database needed); exit 1 naming the first problem."""
    report = export.verify(zip_path)
    if not report.ok:
        raise click.ClickException(f"{zip_path}: {report.problem}")
    click.echo(f"{zip_path}: OK")
    for fact in report.facts:
        click.echo(f"  {fact}")
