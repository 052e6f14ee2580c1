"""One post cannot pose as another (issue 17, finding 2): `waypost hq enroll` on an existing id
silently replaced its key and name (exit 0); one public key could be enrolled under several ids;
ids the post's configuration forbids were accepted; no enrolment was in headquarters' access log.
Real headquarters databases (SQLite and PostgreSQL), the real command."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appliance import config
from appliance import db as dbmod
from appliance.bootstrap import bootstrap
from appliance.cli import main
from appliance.models import AccessRecord, User
from sync import hq
from tests.conftest import operator_env


def _key_file(tmp_path, name: str) -> str:
    pem = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / f"{name}.pub"
    path.write_bytes(pem)
    return str(path)


@pytest.fixture
def hq_cli(tmp_path, hq_target):
    """`waypost hq ARGS --database TARGET` with headquarters' own accounts database; as_ names
    the account that runs it (None: nobody named)."""
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(tmp_path / "hq-data"),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CONFIG": "",
    }
    settings = config.load(None, environ=env)
    bootstrap(settings, create_admin=False)
    named = operator_env(settings, "capt.ruiz", "admin")

    def run(*args, as_: str | None = "capt.ruiz", code: int = 0):
        command, *rest = args
        result = CliRunner().invoke(
            main, ["hq", command, "--database", hq_target, *rest], env={**env, **(named if as_ else {})}
        )
        assert result.exit_code == code, result.output
        return result.output

    run.settings = settings
    return run


def _records(settings, prefix: str) -> list[AccessRecord]:
    dbmod.open_database(settings)
    with dbmod.connection():
        return list(AccessRecord.select().where(AccessRecord.action.startswith(prefix)).order_by(AccessRecord.seq))


def _post(hq_target, post_id):
    hq.open_hq(hq_target)
    with hq.hq_database.connection_context():
        return hq.HQPost.get_or_none(hq.HQPost.id == post_id)


def test_a_second_enrolment_of_an_id_does_not_replace_its_key(hq_cli, hq_target, tmp_path):
    first, other = _key_file(tmp_path, "first"), _key_file(tmp_path, "other")
    hq_cli("enroll", "--post", "post-f", "--name", "Main St", "--public-key", first)
    before = _post(hq_target, "post-f")
    out = hq_cli("enroll", "--post", "post-f", "--name", "Impostor", "--public-key", other, code=1)
    assert "post-f is enrolled" in out and "--replace --reason" in out
    after = _post(hq_target, "post-f")
    assert (after.public_key, after.name) == (before.public_key, "Main St")
    # the same key again only updates the name (a re-run of provisioning): no replacement
    hq_cli("enroll", "--post", "post-f", "--name", "Main St & 3rd", "--public-key", first)
    assert _post(hq_target, "post-f").name == "Main St & 3rd"


def test_a_replacement_says_why_and_is_recorded_naming_the_account(hq_cli, hq_target, tmp_path):
    first, rotated = _key_file(tmp_path, "first"), _key_file(tmp_path, "rotated")
    hq_cli("enroll", "--post", "post-f", "--public-key", first)
    out = hq_cli("enroll", "--post", "post-f", "--public-key", rotated, "--replace", code=2)
    assert "--reason" in out
    hq_cli("enroll", "--post", "post-f", "--public-key", rotated, "--replace", "--reason", "SD card replaced, new key")
    enrolled, replaced = _records(hq_cli.settings, "posts.")
    assert (enrolled.action, enrolled.username) == ("posts.enroll", "capt.ruiz")
    assert (replaced.action, replaced.username) == ("posts.replace_key", "capt.ruiz")
    details = json.loads(replaced.details)
    assert details["reason"] == "SD card replaced, new key" and details["old_key_id"] != details["key_id"]
    assert json.loads(replaced.query) == {"post": "post-f"}


def test_one_key_under_two_ids_is_refused(hq_cli, hq_target, tmp_path):
    key = _key_file(tmp_path, "shared")
    hq_cli("enroll", "--post", "post-f", "--public-key", key)
    out = hq_cli("enroll", "--post", "post-f2", "--public-key", key, code=1)
    assert "already enrolled for post post-f" in out
    assert _post(hq_target, "post-f2") is None


@pytest.mark.parametrize("bad", ["Post-F", "post f", "-post", "p" * 41, "post_f", "../x"])
def test_an_id_a_post_cannot_have_is_refused(hq_cli, hq_target, tmp_path, bad):
    out = hq_cli("enroll", "--post", bad, "--public-key", _key_file(tmp_path, "k"), code=1)
    assert "post id" in out and "lower-case letters, digits and dashes" in out
    assert _post(hq_target, bad) is None


def test_enrolment_needs_a_named_administrator(hq_cli, hq_target, tmp_path):
    out = hq_cli("enroll", "--post", "post-f", "--public-key", _key_file(tmp_path, "k"), as_=None, code=2)
    assert "waypost --as USERNAME hq enroll" in out
    assert _post(hq_target, "post-f") is None


def test_provisioning_enrols_from_the_inventory_as_the_system_and_says_so(hq_cli, hq_target, tmp_path):
    """Ansible enrols the inventory's posts unattended: recorded as the system, naming the
    provisioning; a rotated key in the inventory is a replacement with that reason."""
    first, rotated = _key_file(tmp_path, "first"), _key_file(tmp_path, "rotated")
    out = hq_cli("provision", "--post", "post-f", "--name", "Main St", "--public-key", first, as_=None)
    assert "enrolled post post-f" in out
    hq_cli("provision", "--post", "post-f", "--name", "Main St", "--public-key", rotated, as_=None)
    enrolled, replaced = _records(hq_cli.settings, "posts.")
    assert {enrolled.username, replaced.username} == {"system"}
    assert json.loads(replaced.details)["reason"].startswith("provisioning: the inventory's key")
    assert json.loads(enrolled.details)["via"] == "provisioning"
    hq_cli("provision", "--post", "post-g", "--public-key", rotated, as_=None, code=1)  # post-f's key
    assert _post(hq_target, "post-g") is None


def test_provisioning_a_fresh_headquarters_makes_its_accounts_database_without_an_administrator(hq_target, tmp_path):
    """Ansible enrols the inventory's posts before the service has ever started: the accounts
    database (where the enrolment is recorded) does not exist yet. Provisioning creates it, but no
    administrator: the service's first start creates that and prints the password once."""
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(tmp_path / "fresh"),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CONFIG": "",
    }
    key = _key_file(tmp_path, "first")
    result = CliRunner().invoke(
        main, ["hq", "provision", "--database", hq_target, "--post", "post-f", "--public-key", key], env=env
    )
    assert result.exit_code == 0, result.output
    assert "password" not in result.output
    settings = config.load(None, environ=env)
    (enrolled,) = _records(settings, "posts.")
    assert enrolled.username == "system"
    assert _post(hq_target, "post-f") is not None
    with dbmod.connection():
        assert User.select().count() == 0
