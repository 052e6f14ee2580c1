"""The site-wide banner names a stale hotlist's last refresh in the post's time zone, with the zone's
abbreviation, like every other time on the pages (web/clock.py), not in UTC."""

import datetime as dt

import pytest

from appliance import audit, hotlist
from appliance.models import Hotlist
from tests.conftest import make_settings
from tests.web.conftest import sign_in

ADMIN = audit.Actor("admin.chen", "Demo PD", "10.0.0.2")


@pytest.fixture
def settings(tmp_path, request):
    """The shared fixtures' settings, in the zone the test names."""
    return make_settings(tmp_path / "data", post__timezone=request.param)


def _banner(html: str) -> str:
    return html[html.index('id="site-warnings"') : html.index("<main>")]


@pytest.mark.parametrize(
    ("settings", "refreshed_utc", "shown"),
    [
        # the evening before, in California: the date is the local one too
        ("America/Los_Angeles", dt.datetime(2026, 11, 29, 5, 30), "last refreshed 2026-11-28 21:30 PST"),
        ("America/Los_Angeles", dt.datetime(2026, 7, 4, 19, 45), "last refreshed 2026-07-04 12:45 PDT"),
        ("America/New_York", dt.datetime(2026, 11, 29, 5, 30), "last refreshed 2026-11-29 00:30 EST"),
    ],
    indirect=["settings"],
)
def test_a_stale_hotlist_is_named_with_its_last_refresh_in_the_posts_zone(
    app, settings, account, tmp_path, refreshed_utc, shown
):
    path = tmp_path / "SVS.csv"
    path.write_text("plate,state,reason,entry_date,source_ref\n7ABC123,ca,STOLEN,2026-11-20,S1\n")
    hotlist.import_csv(settings, path, "SVS", ADMIN)
    Hotlist.update(refreshed_at=refreshed_utc).where(Hotlist.name == "SVS").execute()
    account("tech.ortiz", "technician")
    client = app.test_client()
    sign_in(client, "tech.ortiz")
    banner = _banner(client.get("/").get_data(as_text=True))
    assert "Hotlist SVS is stale" in banner and shown in banner, banner
    assert "UTC" not in banner and refreshed_utc.strftime("%H:%M") not in banner
