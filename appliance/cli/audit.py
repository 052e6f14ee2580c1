"""`waypost audit ...` (the access log: verify, head, export, signed bundles) and `waypost report
...` (the quarterly audit and the annual report)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import click

from appliance import audit, bundle, db, reports, spreadsheet
from appliance.cli.context import parse_date, parse_period, pass_ctx, runs_as, stated_purpose, unattended


@click.group(name="audit")
def audit_group():
    """Verify and export the hash-chained access log."""


@unattended("checks the chain and names a broken record by its number; shows no record")
@audit_group.command("verify")
@click.option(
    "--head", "head_text", default=None, help="A head saved earlier ('SEQ HASH') to detect truncation or rewriting."
)
@click.option(
    "--head-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A file holding a saved head.",
)
@click.option(
    "--bundle",
    "bundle_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Check a signed bundle file offline instead of this post's log (no database needed).",
)
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --bundle: the post's public key (PEM, e.g. the post_key.pub file) the bundle must be signed with.",
)
@pass_ctx
def audit_verify(ctx, head_text, head_file, bundle_file, public_key):
    """Walk the chain; exit 1 naming the first broken record. With --bundle, check a signed bundle:
    its signature, every record's hash and the chain inside it."""
    if bundle_file:
        _verify_bundle(bundle_file, public_key)
        return
    if public_key:
        raise click.BadParameter("only with --bundle", param_hint="--public-key")
    ctx.open()
    expected = None
    try:
        if head_file:
            head_text = head_file.read_text()
        if head_text:
            expected = audit.parse_head(head_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--head") from exc
    with db.connection():
        result = audit.verify(expected)
    click.echo(result.summary())
    for note in result.notes:
        click.echo(note)
    sys.exit(0 if result.ok else 1)


@unattended("prints the last record number and hash")
@audit_group.command("head")
@pass_ctx
def audit_head(ctx):
    """Print the last record's 'SEQ HASH', to keep somewhere else for `verify --head`."""
    ctx.open()
    with db.connection():
        seq, digest = audit.head()
    click.echo(f"{seq} {digest}")


@runs_as("audit.view")
@audit_group.command("export")
@click.option("--from", "start", default=None, help="First day (YYYY-MM-DD, UTC), inclusive.")
@click.option("--to", "end", default=None, help="Last day (YYYY-MM-DD, UTC), inclusive.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@stated_purpose("AUDIT")
@pass_ctx
def audit_export(ctx, start, end, fmt, out, purpose_code, case_number):
    """Export access records of a period. The export itself is recorded, with its purpose."""
    purpose = ctx.purpose(purpose_code, case_number)
    ctx.open()
    first = parse_date(start, "--from")
    last = parse_date(end, "--to")
    lo = dt.datetime.combine(first, dt.time()) if first else None
    hi = dt.datetime.combine(last + dt.timedelta(days=1), dt.time()) if last else None
    count = 0
    with db.connection():
        with db.write():
            tmp = out.with_name(out.name + ".part")
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                if fmt == "csv":
                    writer = spreadsheet.DictWriter(f, fieldnames=audit.COLUMNS)
                    writer.writeheader()
                for row in audit.export_rows(lo, hi):
                    if fmt == "csv":
                        writer.writerow(row)
                    else:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    count += 1
            tmp.replace(out)
            audit.record(
                "audit.export",
                ctx.actor(),
                result_count=count,
                query={"from": start, "to": end},
                purpose=purpose,
                details={"format": fmt, "file": out.name},
            )
    click.echo(f"exported {count} access records to {out}")


def _verify_bundle(path: Path, public_key: Path | None) -> None:
    key = None
    if public_key:
        try:
            key = bundle.load_public_key(public_key.read_bytes(), str(public_key))
        except bundle.BundleError as exc:
            raise click.BadParameter(str(exc), param_hint="--public-key") from exc
    result = bundle.verify(path.read_bytes(), key)
    click.echo(result.summary())
    if result.ok and key is None:
        click.echo(
            "no --public-key given: the signature only shows the bundle is intact; check that key id "
            f"{result.key_id} is the post's (`waypost audit key` on the post)."
        )
    sys.exit(0 if result.ok else 1)


@runs_as("audit.view")
@audit_group.command("bundle")
@click.option("--from", "start", default=None, help="First day (YYYY-MM-DD, UTC), inclusive.")
@click.option("--to", "end", default=None, help="Last day (YYYY-MM-DD, UTC), inclusive.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@stated_purpose("AUDIT")
@pass_ctx
def audit_bundle(ctx, start, end, out, purpose_code, case_number):
    """Export the records of a period as a JSON bundle signed with the post's Ed25519 key, for
    `waypost audit verify --bundle FILE --public-key post_key.pub` anywhere. The export is recorded."""
    lo, hi = parse_period(start, end)
    purpose = ctx.purpose(purpose_code, case_number)
    ctx.open()
    with db.connection():
        try:
            made = bundle.write_bundle(ctx.settings, out, ctx.actor(), lo, hi, purpose=purpose)
        except bundle.BundleError as exc:
            raise click.ClickException(str(exc)) from exc
    span = f"records {made.first_seq}..{made.last_seq}" if made.count else "no records"
    click.echo(f"wrote {made.count} access records ({span}) to {out}, signed by key {made.key_id}")
    click.echo(f"public key: {bundle.public_key_file(ctx.settings)}")


@unattended("prints the public key")
@audit_group.command("key")
@pass_ctx
def audit_key(ctx):
    """Print the post's public key (PEM) and its key id; the key is made on first use."""
    try:
        key = bundle.post_key(ctx.settings).public_key()
    except bundle.BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(bundle.public_pem(key).decode(), nl=False)
    click.echo(f"key id {bundle.key_id(key)}  ({bundle.public_key_file(ctx.settings)})")


@click.group(name="report")
def report_group():
    """The quarterly audit and the annual report (the same figures as the web pages)."""


def _report(ctx, kind, label, fmt, out, purpose):
    ctx.open()
    with db.connection():
        try:
            report = (
                reports.quarterly(ctx.settings, label) if kind == "quarterly" else reports.annual(ctx.settings, label)
            )
        except reports.ReportError as exc:
            raise click.BadParameter(str(exc), param_hint="PERIOD") from exc
        with db.write():
            reports.record_viewed(ctx.actor(), report, "cli", purpose)
    text = (
        json.dumps(reports.as_dict(report), indent=2, ensure_ascii=False) if fmt == "json" else reports.as_text(report)
    )
    if out:
        out.write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote the {kind} report for {report.period.label} to {out}")
    else:
        click.echo(text)
    if not report.chain.ok:
        sys.exit(1)


@runs_as("audit.view")
@report_group.command("quarterly")
@click.argument("period", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@stated_purpose("AUDIT")
@pass_ctx
def report_quarterly(ctx, period, fmt, out, purpose_code, case_number):
    """The quarterly audit for PERIOD (YEAR-QN, e.g. 2025-Q1; default: the last full quarter).
    Exits 1 when the access log's chain is broken."""
    label = period or reports.previous_quarter(ctx.settings.post.timezone)
    _report(ctx, "quarterly", label, fmt, out, ctx.purpose(purpose_code, case_number))


@runs_as("audit.view")
@report_group.command("annual")
@click.argument("year", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@stated_purpose("AUDIT")
@pass_ctx
def report_annual(ctx, year, fmt, out, purpose_code, case_number):
    """The annual report to the chief for YEAR (default: last year)."""
    _report(ctx, "annual", year or str(dt.date.today().year - 1), fmt, out, ctx.purpose(purpose_code, case_number))
