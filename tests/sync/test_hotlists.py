"""Hotlists flow from headquarters to the posts: fetched on each contact when new or changed,
only by enrolled posts (signed requests)."""

from __future__ import annotations

import urllib.error
import urllib.request

from click.testing import CliRunner

from appliance.cli import main
from appliance.models import AccessRecord, Hotlist, HotlistEntry
from sync import hq, post
from tests.conftest import operator_env
from tests.sync.conftest import add_reads

HEADER = "plate,state,reason,entry_date,source_ref\n"


def test_a_push_fetches_new_and_changed_lists(settings, db, hq_server, hq_target, tmp_path):
    with hq.hq_database.connection_context():
        hq.publish_hotlist("SVS", (HEADER + "7ABC123,ca,STOLEN VEHICLE,2026-11-20,SVS-1\n").encode())
    result = post.push(settings)
    assert "hotlist SVS: 1 entries from headquarters" in result.notes
    assert [e.plate for e in HotlistEntry.select()] == ["7ABC123"]
    assert Hotlist.get(Hotlist.name == "SVS").refreshed_at is not None
    imports = AccessRecord.select().where(AccessRecord.action == "hotlist.import").count()
    assert not [n for n in post.push(settings).notes if n.startswith("hotlist")]  # unchanged: not again
    csv = tmp_path / "svs.csv"
    csv.write_text(HEADER + "8XYZ999,ca,WANTED,2026-11-21,SVS-2\n5LMN432,ca,AMBER,2026-11-21,SVS-3\n")
    out = CliRunner().invoke(
        main,
        ["hq", "hotlist", "add", "SVS", str(csv), "--database", hq_target],
        env={
            "WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir),
            "WAYPOST_CONFIG": "",
            **operator_env(settings, "hq.admin", "admin"),  # headquarters' administrator publishes it
        },
    )
    assert out.exit_code == 0, out.output
    assert "hotlist SVS: 2 entries from headquarters" in post.push(settings).notes
    assert sorted(e.plate for e in HotlistEntry.select()) == ["5LMN432", "8XYZ999"]
    assert AccessRecord.select().where(AccessRecord.action == "hotlist.import").count() == imports + 1


def test_a_bad_list_is_reported_and_the_push_still_delivers(settings, db, hq_server):
    with hq.hq_database.connection_context():
        hq.publish_hotlist("SVS", b"no,plate,column\n1,2,3\n")
    add_reads(settings, 1)
    result = post.push(settings)
    assert result.reads == 1 and any(n.startswith("hotlist SVS: not imported") for n in result.notes)
    assert HotlistEntry.select().count() == 0


def test_only_enrolled_posts_signing_their_requests_may_read(settings, db, hq_server):
    for path in (f"/hq/v1/posts/{settings.post.id}/hotlists", f"/hq/v1/posts/{settings.post.id}/position"):
        try:
            urllib.request.urlopen(hq_server.url + path)
            raise AssertionError(f"{path} answered an unsigned request")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    try:
        urllib.request.urlopen(hq_server.url + "/hq/v1/posts/post-99/hotlists")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
    assert post.fetch_position(settings).last_seq == 0  # signed: answered
