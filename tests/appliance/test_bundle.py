"""Signed bundles: made from a real log, checked offline, and every kind of tampering named."""

import base64
import datetime as dt
import json
import stat

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance import audit, bundle
from appliance import db as dbmod
from appliance.cli import main
from appliance.models import AccessRecord
from tests.appliance.test_reports import LOG, put
from tests.conftest import operator_env

AUDIT_PURPOSE = audit.Purpose("AUDIT", "AUD-2025-1")
AUDITOR = audit.Actor("auditor.kim", "Demo Police Department", "10.0.0.5")


@pytest.fixture
def made(settings, db, tmp_path):
    put(LOG)
    out = tmp_path / "q1.json"
    # 2025-02-10 .. 2025-02-11 UTC holds the 17 mid-quarter records of LOG
    result = bundle.write_bundle(
        settings, out, AUDITOR, dt.datetime(2025, 2, 10), dt.datetime(2025, 2, 12), purpose=AUDIT_PURPOSE
    )
    return out, result


def edit(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path.read_bytes()


def pub(settings):
    return bundle.load_public_key(bundle.public_key_file(settings).read_bytes())


def test_key_is_made_private_with_its_public_half(settings, db):
    key = bundle.post_key(settings)
    path = bundle.key_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert bundle.public_key_file(settings).read_bytes() == bundle.public_pem(key.public_key())
    assert bundle.key_id(bundle.post_key(settings).public_key()) == bundle.key_id(key.public_key())  # reused


def test_bundle_verifies_and_is_recorded(settings, made):
    out, result = made
    assert result.count == 17 and result.last_seq - result.first_seq == 16
    checked = bundle.verify(out.read_bytes(), pub(settings))
    assert checked.ok, checked.problems
    assert checked.count == 17 and "the given public key" in checked.summary()
    doc = json.loads(out.read_text())
    first = AccessRecord.get(AccessRecord.seq == result.first_seq)
    before = AccessRecord.get(AccessRecord.seq == result.first_seq - 1)
    assert doc["signed"]["prev_hash"] == first.prev_hash == before.hash
    assert doc["signed"]["post"]["id"] == settings.post.id
    rec = AccessRecord.get(AccessRecord.action == "audit.export")
    assert (rec.seq, rec.hash) == result.head == (doc["signed"]["head"]["seq"], doc["signed"]["head"]["hash"])
    assert rec.username == "auditor.kim" and rec.result_count == 17 and json.loads(rec.details)["format"] == "bundle"
    assert audit.verify().ok


def test_changed_field_is_named(settings, made):
    out, result = made
    seq = result.first_seq + 4
    data = edit(out, lambda d: d["records"][4].update(username="someone.else"))
    checked = bundle.verify(data, pub(settings))
    assert not checked.ok and checked.bad_seq == seq
    assert f"record {seq}: contents do not match" in checked.summary()


def test_changed_field_with_rehashed_chain_fails_the_signature(settings, made):
    out, _ = made

    def rewrite(doc):
        prev = doc["signed"]["prev_hash"]
        for rec in doc["records"]:
            if rec["action"] == "hotlist.entry_add":
                rec["query"] = '{"plate":"0NOT000"}'
            rec["prev_hash"] = prev
            rec["hash"] = prev = audit.digest(rec)

    checked = bundle.verify(edit(out, rewrite), pub(settings))
    assert not checked.ok and "last record's hash differs from the signed one" in checked.summary()

    def and_the_signed_end(doc):
        doc["signed"]["last_hash"] = doc["records"][-1]["hash"]

    checked = bundle.verify(edit(out, and_the_signed_end), pub(settings))
    assert not checked.ok and checked.problems == [checked.problems[0]]
    assert "signature does not verify" in checked.summary()


def test_removed_record_is_named(settings, made):
    out, result = made
    original = out.read_bytes()
    checked = bundle.verify(edit(out, lambda d: d["records"].pop(6)), pub(settings))
    assert not checked.ok and checked.bad_seq == result.first_seq + 7
    assert "missing record(s)" in checked.summary()
    out.write_bytes(original)
    checked = bundle.verify(edit(out, lambda d: d["records"].pop()), pub(settings))  # the last one
    assert not checked.ok and "16 records but its signed part says 17" in checked.summary()


def test_changed_signature_fails(settings, made):
    out, _ = made

    def flip(doc):
        sig = bytearray(base64.b64decode(doc["signature"]))
        sig[10] ^= 1
        doc["signature"] = base64.b64encode(bytes(sig)).decode()

    checked = bundle.verify(edit(out, flip), pub(settings))
    assert not checked.ok and checked.bad_seq is None and "signature does not verify" in checked.summary()


def test_wrong_key_fails(settings, made):
    out, _ = made
    other = Ed25519PrivateKey.generate().public_key()
    checked = bundle.verify(out.read_bytes(), other)
    assert not checked.ok and "not the given public key" in checked.summary()
    # A forger who re-signs with their own key and names it passes only without --public-key.
    forger = Ed25519PrivateKey.generate()

    def resign(doc):
        doc["records"][0]["username"] = "x"
        doc["records"][0]["hash"] = audit.digest(doc["records"][0])
        doc["records"][1]["prev_hash"] = doc["records"][0]["hash"]
        doc["signed"]["public_key"] = base64.b64encode(bundle.raw_public(forger.public_key())).decode()

    data = edit(out, resign)
    assert not bundle.verify(data, pub(settings)).ok


def test_not_a_bundle(settings):
    assert "not a JSON document" in bundle.verify(b"{oops").summary()
    assert "not a Waypost audit bundle" in bundle.verify(b'{"a": 1}').summary()


def test_empty_period_bundle_links_to_the_record_before(settings, db, tmp_path):
    put(LOG)
    out = tmp_path / "empty.json"
    made = bundle.write_bundle(
        settings, out, AUDITOR, dt.datetime(2025, 3, 1), dt.datetime(2025, 3, 2), purpose=AUDIT_PURPOSE
    )
    doc = json.loads(out.read_text())
    assert made.count == 0 and doc["records"] == []
    last_feb = AccessRecord.select().where(AccessRecord.at < "2025-03").order_by(AccessRecord.seq.desc()).get()
    assert doc["signed"]["prev_hash"] == doc["signed"]["last_hash"] == last_feb.hash
    assert bundle.verify(out.read_bytes(), pub(settings)).ok


def test_cli_bundle_and_offline_verify(settings, db, tmp_path, monkeypatch):
    put(LOG)
    monkeypatch.setenv("WAYPOST_STORAGE__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WAYPOST_STORAGE__MIN_FREE_MB", "0")
    for name, value in operator_env(settings, "audit.kim", "auditor").items():
        monkeypatch.setenv(name, value)
    dbmod.database.close()
    out = tmp_path / "b.json"
    run = CliRunner().invoke(
        main,
        ["audit", "bundle", "--from", "2025-02-10", "--to", "2025-02-11", "--out", str(out), "--case", "AUD-2025-2"],
    )
    assert run.exit_code == 0, run.output
    assert "wrote 17 access records" in run.output
    key = str(bundle.public_key_file(settings))
    # offline: no configuration, no database
    monkeypatch.setenv("WAYPOST_STORAGE__DATA_DIR", str(tmp_path / "nowhere"))
    run = CliRunner().invoke(main, ["audit", "verify", "--bundle", str(out), "--public-key", key])
    assert run.exit_code == 0 and "bundle verified: 17 records" in run.output, run.output
    assert not (tmp_path / "nowhere").exists()
    doc = json.loads(out.read_text())
    doc["records"][2]["purpose_code"] = "COURT"
    out.write_text(json.dumps(doc))
    run = CliRunner().invoke(main, ["audit", "verify", "--bundle", str(out), "--public-key", key])
    seq = doc["records"][2]["seq"]
    assert run.exit_code == 1 and f"BROKEN at record {seq}" in run.output and "a field was modified" in run.output
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key")
    run = CliRunner().invoke(main, ["audit", "verify", "--bundle", str(out), "--public-key", str(bad_key)])
    assert run.exit_code == 2 and "not an Ed25519 public key" in run.output
