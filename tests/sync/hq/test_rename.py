"""A renamed or re-enrolled post is stored once, under its own id (issue 18, finding 1). Enrolling
post-f2 with post-f's key and setting post.id = post-f2 made the post resend everything, stored
under both ids. Headquarters now refuses a batch whose lines name another post, refuses one key
under two ids on every path, and `waypost hq rename` moves a post's history (recorded), never
copies it. A real post pushes real signed batches to headquarters (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from appliance import config
from appliance import db as dbmod
from appliance.bootstrap import bootstrap
from appliance.cli import main
from appliance.models import AccessRecord
from sync import hq, post
from sync.hq import search as hq_search
from tests.conftest import OPERATOR_PASSWORD, make_settings, operator_env
from tests.sync.conftest import HQServer, _public, add_reads, push_headers, send_push
from tests.sync.hq.test_signed_push import built
from tests.web.conftest import sign_in
from web.hq import create_hq_app


@pytest.fixture
def settings(tmp_path, hq_port):
    return make_settings(
        tmp_path / "data", post__id="post-f", sync__hq_url=f"http://127.0.0.1:{hq_port}", sync__batch_max_reads=50
    )


def as_post(settings, post_id: str):
    """The same post (its data directory, database and key) configured with post.id = `post_id`."""
    return make_settings(
        settings.data_dir, post__id=post_id, sync__hq_url=settings.sync.hq_url, sync__batch_max_reads=50
    )


@pytest.fixture
def hq_cli(tmp_path, hq_target, settings, db):
    """`waypost hq ARGS --database TARGET` as headquarters' administrator (its own accounts database)."""
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(tmp_path / "hq-data"),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CONFIG": "",
    }
    hq_settings = config.load(None, environ=env)
    bootstrap(hq_settings, create_admin=False)
    named = operator_env(hq_settings, "capt.ruiz", "admin")

    def run(*args, code: int = 0):
        command, *rest = args
        result = CliRunner().invoke(main, ["hq", command, "--database", hq_target, *rest], env={**env, **named})
        assert result.exit_code == code, result.output
        return result.output

    run.settings = hq_settings
    dbmod.open_database(settings)  # the post's database is the one bound between steps
    return run


def push(settings) -> post.PushResult:
    dbmod.open_database(settings)
    with dbmod.connection():
        return post.push(settings)


def held() -> dict:
    with hq.hq_database.connection_context():
        return {
            "posts": sorted(p.id for p in hq.HQPost.select()),
            "reads": sorted((r.post_id, r.uuid) for r in hq.HQRead.select()),
            "records": sorted((r.post_id, r.seq) for r in hq.HQAccessRecord.select()),
            "stored": hq.HQBatch.select().where(hq.HQBatch.status == "stored").count(),
        }


def test_a_batch_whose_reads_name_another_post_is_refused_whole(settings, db, hq_target, hq_port):
    """The reported case: the post's reads say post-f; it is configured and enrolled as post-f2
    with the same key. Its genuine, signed batch is refused as wrong_post and nothing is stored
    (before: stored, every read under post-f2 saying post_id post-f inside)."""
    add_reads(settings, 3)
    server = HQServer(hq_target, hq_port).start()
    try:
        renamed = as_post(settings, "post-f2")
        with hq.hq_database.connection_context():
            hq.enroll("post-f2", "Post F (re-enrolled)", _public(renamed))
        with pytest.raises(post.Refused) as refused:
            push(renamed)
        assert refused.value.problem == "wrong_post" and refused.value.status == 409, refused.value
        assert "post-f" in refused.value.message and "waypost hq rename" in refused.value.message
        assert held() == {"posts": ["post-f2"], "reads": [], "records": [], "stored": 0}
        with hq.hq_database.connection_context():
            (row,) = hq.HQBatch.select().where(hq.HQBatch.status == "refused")
        assert (row.post_id, row.problem) == ("post-f2", "wrong_post")
    finally:
        server.stop()


def test_provision_refuses_a_key_another_post_holds(settings, db, hq_server, hq_cli, hq_target):
    """One key under two ids, through the provisioning's own command (Ansible)."""
    key = settings.data_dir / "post-f-key.pub"
    key.write_bytes(_public(settings))
    out = hq_cli("provision", "--post", "post-f2", "--public-key", str(key), code=1)
    assert "already enrolled for post post-f" in out
    assert held()["posts"] == ["post-f"]


def test_rename_moves_the_history_and_the_post_continues_under_its_new_id(settings, db, hq_server, hq_cli, hq_target):
    add_reads(settings, 4)
    assert push(settings).reads == 4
    with hq.hq_database.connection_context():
        hq_search.catch_up(full=True)
        before = hq.position(hq.HQPost.get_by_id("post-f"))
    records = len(held()["records"])
    add_reads(settings, 3, seed=1)  # signed under post-f, not sent yet

    out = hq_cli("rename", "post-f", "post-f2", "--reason", "site renumbered (work order 118)")
    assert "renamed post post-f to post-f2" in out and "post.id = post-f2" in out
    after = held()
    assert after["posts"] == ["post-f2"] and len(after["reads"]) == 4 and len(after["records"]) == records
    assert {p for p, _ in after["reads"]} == {p for p, _ in after["records"]} == {"post-f2"}
    with hq.hq_database.connection_context():
        moved = hq.position(hq.HQPost.get_by_id("post-f2"))
        assert {k: v for k, v in moved.items() if k != "post"} == {k: v for k, v in before.items() if k != "post"}
        assert {t.post_id for t in hq.models.HQReadText.select()} == {"post-f2"}
        assert {c.post_id for c in hq.models.HQCamera.select()} == {"post-f2"}
        assert {b.post_id for b in hq.HQBatch.select()} == {"post-f2"}

    dbmod.open_database(hq_cli.settings)
    with dbmod.connection():
        (record,) = AccessRecord.select().where(AccessRecord.action == "posts.rename")
    dbmod.open_database(settings)
    details = json.loads(record.details)
    assert record.username == "capt.ruiz" and details["old_post"] == "post-f" and details["post"] == "post-f2"
    assert details["reason"] == "site renumbered (work order 118)"
    assert details["moved"]["hq_read"] == 4 and details["moved"]["hq_access_record"] == records

    # still configured as post-f: told what to do, nothing stored
    with pytest.raises(post.Refused) as refused:
        push(settings)
    assert refused.value.problem == "renamed" and "post.id = post-f2" in refused.value.message
    # and a batch pushed under the old id (the signed X-Waypost-Push header names post-f)
    dbmod.open_database(settings)
    with dbmod.connection():
        body = built(settings, post.Position(0, 0, hq.GENESIS))
    status, answer = send_push(hq_server.port, body, push_headers(settings, body))
    assert (status, answer["problem"]) == (409, "renamed") and "post.id = post-f2" in answer["message"], answer
    assert held() == after

    # post.id = post-f2: continues where it was; its lines signed as post-f verify, nothing twice
    renamed = as_post(settings, "post-f2")
    assert push(renamed).reads == 3
    final = held()
    assert len(final["reads"]) == len(set(final["reads"])) == 7 and {p for p, _ in final["reads"]} == {"post-f2"}
    with hq.hq_database.connection_context():
        p = hq.HQPost.get_by_id("post-f2")
        ok, _, message = hq.verify_chain("post-f2")
        assert ok and p.chain_status == "verified" and p.chain_seq > before["chain_seq"], message
        hits = hq_search.search(hq_search.Query("7ABC000")).hits
    assert [h.read.post_id for h in hits] == ["post-f2"]
    assert push(renamed).reads == 0

    # the old id cannot be enrolled again beside it
    key = settings.data_dir / "other.pub"
    key.write_bytes(_public(make_settings(settings.data_dir.parent / "other")))
    out = hq_cli("enroll", "--post", "post-f", "--public-key", str(key), code=1)
    assert "renamed post-f2" in out

    # the Posts page names the post once, with its old id
    client = create_hq_app(hq_target, settings=hq_cli.settings).test_client()
    sign_in(client, "capt.ruiz", password=OPERATOR_PASSWORD)
    page = client.get("/hq").get_data(as_text=True)
    assert 'id="post-post-f2"' in page and 'id="post-post-f"' not in page and "formerly post-f" in page
