"""Files built to hurt the offline checkers and the export command: JSON nested too deep to parse (a
RecursionError traceback from `evidence verify` and `audit verify --bundle`), an evidence ZIP whose
members unpack to far more than they could hold (memory spent on them, then "OK"), a reads line
that never ends, and `evidence export --out` where nothing can be written (a raw traceback). Each is
now a problem named on one line, found with bounded memory."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tracemalloc
import zipfile

import pytest
from click.testing import CliRunner

from appliance import export, holds, search
from appliance.cli import main
from appliance.models import AccessRecord
from tests.appliance.test_bundle import made  # noqa: F401 (fixture)
from tests.appliance.test_export import evidence  # noqa: F401 (fixture)
from tests.appliance.test_hostile_files import replaced
from tests.appliance.test_sharing import OFFICER, T0, stored  # noqa: F401 (fixture)
from tests.conftest import operator_env

DEEP = b"[" * 200_000 + b"]" * 200_000
MiB = 2**20


def verified_cli(path):
    run = CliRunner().invoke(main, ["evidence", "verify", str(path)])
    assert isinstance(run.exception, SystemExit) and run.exit_code == 1, (run.exception, run.output)
    return run.output


def measured(fn):
    """fn()'s result and the peak of Python's memory while it ran."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def deflated(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def with_member(src, dst, name, write) -> None:
    """A copy of the ZIP whose member `name` is written by write(file) as a stream (deflated), so that
    a member of hundreds of MiB is made without holding it."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename == name:
                with zout.open(deflated(name), "w", force_zip64=True) as f:
                    write(f, zin.read(name))
            else:
                zout.writestr(info, zin.read(info.filename))


# --- nested too deep to parse ---------------------------------------------------------------------


def test_a_deeply_nested_manifest_is_a_problem_not_a_traceback(evidence, tmp_path):  # noqa: F811
    bad = replaced(evidence, tmp_path / "deep.zip", export.MANIFEST, lambda data: DEEP)
    report = export.verify(bad)
    assert not report.ok and report.problem.startswith(f"{export.MANIFEST}: ") and "nested" in report.problem
    assert report.problem in verified_cli(bad)


def test_a_deeply_nested_reads_json_row_is_named_by_line(evidence, tmp_path):  # noqa: F811
    def deep_row(data):
        lines = data.split(b"\n")
        lines[1] = DEEP
        return b"\n".join(lines)

    bad = replaced(evidence, tmp_path / "deep.zip", export.READS_JSON, deep_row)
    report = export.verify(bad)
    assert not report.ok and report.problem.startswith(f"{export.READS_JSON} line 2: "), report.problem
    assert "nested" in report.problem
    assert report.problem in verified_cli(bad)


def test_a_deeply_nested_access_record_file_is_a_problem(evidence, tmp_path):  # noqa: F811
    bad = replaced(evidence, tmp_path / "deep.zip", export.RECORD, lambda data: DEEP)
    report = export.verify(bad)
    assert not report.ok and report.problem.startswith(f"{export.RECORD}: ") and "nested" in report.problem


def test_a_deeply_nested_bundle_is_reported_broken_not_a_traceback(settings, made, tmp_path):  # noqa: F811
    out, _ = made
    deep = tmp_path / "deep.json"
    deep.write_bytes(b'{"bundle":"waypost-audit","version":1,"records":' + DEEP + b"}")
    run = CliRunner().invoke(main, ["audit", "verify", "--bundle", str(deep)])
    assert isinstance(run.exception, SystemExit) and run.exit_code == 1, (run.exception, run.output)
    assert "bundle BROKEN" in run.output and "nested" in run.output, run.output
    assert "Traceback" not in run.output


# --- members larger than an export's ------------------------------------------------------------


def test_a_manifest_that_unpacks_to_256_mib_is_refused_before_it_is_read(evidence, tmp_path):  # noqa: F811
    """The real manifest padded with 256 MiB of spaces (still valid JSON, a 260 KiB ZIP): it was read
    whole, parsed, and the ZIP said OK."""

    def padded(f, manifest):
        f.write(manifest)
        block = b" " * MiB
        for _ in range(256):
            f.write(block)

    bomb = tmp_path / "bomb.zip"
    with_member(evidence, bomb, export.MANIFEST, padded)
    assert os.path.getsize(bomb) < 2 * MiB
    report, peak = measured(lambda: export.verify(bomb))
    assert not report.ok and report.problem.startswith(f"{export.MANIFEST}: unpacks to "), report.problem
    assert peak < 16 * MiB, f"{peak / MiB:.1f} MiB"
    assert report.problem in verified_cli(bomb)


def test_an_over_compressed_reads_file_is_refused_before_it_is_read(evidence, tmp_path):  # noqa: F811
    """A read row carrying 64 MiB of one letter, listed in the manifest with its true hash (a 300 KiB
    ZIP): it was unpacked, and the line held whole, before any problem was named."""
    with zipfile.ZipFile(evidence) as zf:
        rows = zf.read(export.READS_JSON).split(b"\n")
    first = json.loads(rows[1])
    head = json.dumps(dict(first, pad="")).encode()[:-2]  # ... "pad": "  (the value follows)

    def write(f, _):
        f.write(b"\n".join(rows[:1]) + b"\n" + head)
        for _ in range(64):
            f.write(b"A" * MiB)
        f.write(b'"}\n' + b"\n".join(rows[2:]))

    bomb = tmp_path / "reads-bomb.zip"
    with_member(evidence, bomb, export.READS_JSON, write)
    bomb = rehashed(bomb, tmp_path / "reads-bomb-listed.zip", export.READS_JSON)
    report, peak = measured(lambda: export.verify(bomb))
    assert not report.ok and report.problem.startswith(f"{export.READS_JSON}: compressed "), report.problem
    assert peak < 16 * MiB, f"{peak / MiB:.1f} MiB"


def test_a_reads_line_longer_than_any_read_is_refused_with_bounded_memory(evidence, tmp_path):  # noqa: F811
    """A read row carrying 16 MiB of random hex (no ZIP bomb: it compresses 2:1) was held whole, and
    parsed, before any problem was named."""

    def long_row(data):
        rows = data.split(b"\n")
        first = json.loads(rows[1])
        rows[1] = json.dumps(dict(first, pad=os.urandom(8 * MiB).hex())).encode()
        return b"\n".join(rows)

    bad = replaced(evidence, tmp_path / "long.zip", export.READS_JSON, long_row)
    report, peak = measured(lambda: export.verify(bad))
    assert not report.ok and report.problem.startswith(f"{export.READS_JSON} line 2: longer than "), report.problem
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB"


def rehashed(src, dst, name):
    """The ZIP with the manifest's entry for `name` set to the member's true sha256 and size (read in
    chunks), so that only the size checks can refuse it."""
    h, size = hashlib.sha256(), 0
    with zipfile.ZipFile(src) as zf, zf.open(name) as f:
        while chunk := f.read(MiB):
            h.update(chunk)
            size += len(chunk)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename == export.MANIFEST:
                manifest = json.loads(zin.read(info.filename))
                manifest["files"][name] = {"sha256": h.hexdigest(), "bytes": size}
                zout.writestr(info.filename, json.dumps(manifest))
            else:
                with zin.open(info) as fin, zout.open(deflated(info.filename), "w", force_zip64=True) as fout:
                    while chunk := fin.read(MiB):
                        fout.write(chunk)
    return dst


# --- export to where nothing can be written --------------------------------------------------------


@pytest.fixture
def hold_id(settings, db, stored):  # noqa: F811
    hold = holds.place_on_query(
        settings,
        OFFICER,
        search.Query("7ABC123", "exact", since=T0 - dt.timedelta(hours=1), until=T0 + dt.timedelta(hours=1)),
        "CRIME-INV",
        "2026-004400",
        "Robbery suspect vehicle, court case pending",
    )
    return hold.id


def test_an_export_to_an_unwritable_place_is_a_clean_error_naming_it(settings, hold_id, tmp_path, monkeypatch):
    monkeypatch.setenv("WAYPOST_STORAGE__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WAYPOST_STORAGE__MIN_FREE_MB", "0")
    admin = operator_env(settings, "op.admin", "admin")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the export's directory would be\n")
    out = blocker / "evidence.zip"
    run = CliRunner().invoke(main, ["evidence", "export", "--hold", str(hold_id), "--out", str(out)], env=admin)
    assert isinstance(run.exception, SystemExit) and run.exit_code == 1, (run.exception, run.output)
    assert run.output.startswith("Error: ") and str(out) in run.output and "--out" in run.output, run.output
    assert AccessRecord.select().where(AccessRecord.action == "hold.export").count() == 0  # nothing exported


def test_an_export_that_cannot_finish_its_file_is_a_clean_error(settings, hold_id, tmp_path, monkeypatch):
    """The directory takes files, but the export's own part file cannot be made (a directory of
    that name left behind): the error names the file, no traceback, and nothing was recorded."""
    monkeypatch.setenv("WAYPOST_STORAGE__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WAYPOST_STORAGE__MIN_FREE_MB", "0")
    admin = operator_env(settings, "op.admin", "admin")
    out = tmp_path / "exports" / "evidence.zip"
    (out.parent / f".{out.name}.part").mkdir(parents=True)
    run = CliRunner().invoke(main, ["evidence", "export", "--hold", str(hold_id), "--out", str(out)], env=admin)
    assert isinstance(run.exception, SystemExit) and run.exit_code == 1, (run.exception, run.output)
    assert run.output.startswith(f"Error: writing {out} failed: "), run.output
    assert not out.exists() and AccessRecord.select().where(AccessRecord.action == "hold.export").count() == 0
