"""The live view's status strip says how sync is doing (issue 18, finding 3): reads waiting too
long, the last error, a clock off from headquarters'."""

from __future__ import annotations

import pytest

from appliance.models import database
from sync import post
from tests.conftest import make_settings
from tests.sync.conftest import add_reads, free_port
from tests.web.conftest import sign_in


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data", sync__enabled=True, sync__hq_url=f"http://127.0.0.1:{free_port()}")


def _strip(client) -> str:
    html = client.get("/live").get_data(as_text=True)
    return html[html.index('id="post-status"') : html.index("</section>", html.index('id="post-status"'))]


def test_the_strip_says_sync_is_delayed_and_why(settings, db, client, trained):
    trained("officer.lee", "officer")
    add_reads(settings, 2)
    database.execute_sql("UPDATE outbox SET created_at = datetime('now', '-90 minutes')")
    with pytest.raises(post.SyncError):
        post.push(settings)
    post.note_clock(settings, 400)
    post.record_state(settings)
    sign_in(client, "officer.lee")
    strip = _strip(client)
    assert 'id="sync-status"' in strip and "DELAYED" in strip, strip
    assert "2 read(s) waiting, oldest 90 min" in strip and "did not answer" in strip
    assert "clock 400 s ahead of headquarters" in strip


def test_the_strip_says_sync_is_current(settings, db, client, trained):
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    strip = _strip(client)
    assert 'id="sync-status"' in strip and "current" in strip and "DELAYED" not in strip, strip
