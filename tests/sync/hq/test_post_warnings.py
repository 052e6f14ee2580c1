"""Headquarters tells its operator about a post (issue 18, finding 3): a refused signed GET is
logged (last_refusal), a post whose clock is off is named with its offset, and a post that has not
been in contact for longer than sync.late_after_minutes is late: in `waypost hq status` and on the
Posts page, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from click.testing import CliRunner

from appliance import audit, users
from appliance import db as dbmod
from appliance.audit import system_actor
from appliance.bootstrap import bootstrap
from appliance.cli import main
from sync import hq, post
from tests.conftest import make_settings
from tests.sync.conftest import add_reads
from tests.sync.hq.test_replay import shifted
from tests.web.conftest import PASSWORD, sign_in
from web.hq import create_hq_app


def hq_status(settings, target) -> str:
    env = {"WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir), "WAYPOST_CONFIG": ""}
    out = CliRunner().invoke(main, ["hq", "status", "--database", target], env=env)
    assert out.exit_code == 0, out.output
    return out.output


def posts_page(tmp_path, target) -> str:
    """Headquarters' Posts page over `target`, as its administrator sees it."""
    settings = make_settings(tmp_path / "hq-data", post__id="hq", post__name="Headquarters")
    bootstrap(settings, create_admin=False)
    with dbmod.connection():
        users.add(
            system_actor(settings),
            username="admin.ray",
            display_name="Ray",
            organization="PD",
            role="admin",
            password=PASSWORD,
            must_change_password=False,
        )
        users.set_training(
            audit.Actor("admin", "PD"),
            "admin.ray",
            dt.date.today() - dt.timedelta(days=30),
            "ALPR 101",
            dt.date.today() + dt.timedelta(days=335),
        )
    app = create_hq_app(target, settings=settings)
    app.config["TESTING"] = True
    client = app.test_client()
    sign_in(client, "admin.ray")
    return client.get("/hq").get_data(as_text=True)


def test_a_refused_signed_get_is_logged_and_shown(settings, db, hq_server, hq_target, tmp_path):
    other = settings.model_copy(update={"sync": settings.sync.model_copy(update={"key_file": "another_key"})})
    with pytest.raises(post.Refused) as refused:
        post.fetch_position(other)  # the post's key changed (re-imaged) and headquarters was not told
    assert refused.value.status == 401 and refused.value.problem == "bad_signature"
    out = hq_status(settings, hq_target)
    assert "last refusal: bad_signature" in out, out
    assert f"WARNING {settings.post.id}'s last request was refused (bad_signature)" in out, out
    page = posts_page(tmp_path, hq_target)
    assert 'id="post-warnings"' in page and f"{settings.post.id}&#39;s last request was refused" in page


@pytest.mark.parametrize("skew_s,word", [(400, "ahead"), (-400, "behind")])
def test_a_post_whose_clock_is_off_is_named_with_its_offset(
    settings, db, hq_server, hq_target, tmp_path, monkeypatch, skew_s, word
):
    add_reads(settings, 1)
    monkeypatch.setattr(post, "dt", shifted(skew_s))
    post.push(settings)
    out = hq_status(settings, hq_target)
    # whole seconds of two clocks: 400 give or take one
    assert re.search(rf"WARNING {settings.post.id}'s clock is (399|400|401) s {word}", out), out
    page = posts_page(tmp_path, hq_target)
    assert f"{settings.post.id}&#39;s clock is" in page and f"s {word}" in page, page


def test_a_post_out_of_contact_for_longer_than_the_configured_age_is_late(settings, db, hq_server, hq_target):
    post.fetch_position(settings)
    assert "is late" not in hq_status(settings, hq_target)
    with hq.hq_database.connection_context(), hq.write():
        hq.HQPost.update(
            last_contact_at=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=90)
        ).execute()
    out = hq_status(settings, hq_target)
    assert f"WARNING {settings.post.id} is late: no contact for 90 minutes (more than 60)" in out, out
