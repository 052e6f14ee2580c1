"""Damaged files handed to the offline checkers: an evidence ZIP whose reads files are not UTF-8 or
hold a row that is not a read, and an audit bundle with a lone surrogate escape. Each is reported
as a problem naming the file and line (or the record), never as a traceback."""

import json
import zipfile

import pytest
from click.testing import CliRunner

from appliance import bundle, export
from appliance.cli import main
from tests.appliance.test_bundle import edit, made, pub  # noqa: F401 (fixture)
from tests.appliance.test_export import evidence, rewrite, sha  # noqa: F401 (fixture)
from tests.appliance.test_sharing import stored  # noqa: F401 (fixture)


def replaced(src, dst, name, change):
    """A copy of the ZIP with member `name` changed and the manifest re-hashed to match, so that only
    the checks of the member's content can catch it."""
    with zipfile.ZipFile(src) as zf:
        new = change(zf.read(name))

    def swap(member, data):
        if member == name:
            return new
        if member == export.MANIFEST:
            manifest = json.loads(data)
            manifest["files"][name] = {"sha256": sha(new), "bytes": len(new)}
            return json.dumps(manifest).encode()
        return data

    return rewrite(src, dst, swap)


@pytest.mark.parametrize(
    "member,line_end,old,new",
    [
        (export.READS_CSV, b"\r\n", b",", b",\xe9t\xe9"),  # a Latin-1 byte in the first read's row
        (export.READS_JSON, b"\n", b'"', b'"\xff'),
    ],
)
def test_a_reads_file_that_is_not_utf8_is_named_by_line(evidence, tmp_path, member, line_end, old, new):  # noqa: F811
    def damage(data):
        lines = data.split(line_end)
        lines[1] = lines[1].replace(old, new, 1)
        return line_end.join(lines)

    report = export.verify(replaced(evidence, tmp_path / "bad.zip", member, damage))
    assert not report.ok
    assert report.problem.startswith(f"{member} line 2: not UTF-8 text"), report.problem


def test_a_reads_json_row_that_is_not_an_object_is_named(evidence, tmp_path):  # noqa: F811
    def as_list(data):
        lines = data.split(b"\n")
        lines[1] = b"[1, 2]"
        return b"\n".join(lines)

    bad = replaced(evidence, tmp_path / "bad.zip", export.READS_JSON, as_list)
    report = export.verify(bad)
    assert not report.ok
    assert report.problem == f"{export.READS_JSON} line 2: item 1 is a list, not a read (an object)"
    run = CliRunner().invoke(main, ["evidence", "verify", str(bad)])
    assert run.exit_code == 1 and report.problem in run.output, run.output


def test_a_lone_surrogate_in_a_bundle_record_is_a_mismatch_naming_the_record(settings, made):  # noqa: F811
    out, result = made
    seq = result.first_seq + 4
    data = edit(out, lambda d: d["records"][4].update(username="\ud800"))
    assert b'"\\ud800"' in data  # the file holds the JSON escape, as a hostile editor would write it
    checked = bundle.verify(data, pub(settings))
    assert not checked.ok and checked.bad_seq == seq
    assert f"record {seq}: contents do not match" in checked.summary()
    run = CliRunner().invoke(
        main, ["audit", "verify", "--bundle", str(out), "--public-key", str(bundle.public_key_file(settings))]
    )
    assert run.exit_code == 1 and f"BROKEN at record {seq}" in run.output, run.output


def test_a_lone_surrogate_in_a_bundles_signed_part_is_named(settings, made):  # noqa: F811
    out, _ = made
    data = edit(out, lambda d: d["signed"].update(created_by="\udfff"))
    checked = bundle.verify(data, pub(settings))
    assert not checked.ok
    assert any("signed part holds a lone UTF-16 surrogate" in p for p in checked.problems), checked.problems
    checked.summary().encode("utf-8")  # printable as it is
