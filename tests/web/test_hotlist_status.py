"""How the pages show hotlists that raise no alerts for a reason of their own (issue 16, finding
6): a retired list is shown as retired and never as stale, custom entries past their review date
are named in the warning banner and the live view's status strip, and the public policy states
the review period the post enforces. The real app over its test client, a real database file."""

import datetime as dt

from appliance import audit, hotlist
from appliance.models import Hotlist, HotlistEntry, utcnow
from tests.conftest import make_settings
from tests.web.conftest import sign_in
from web import create_app

ADMIN = audit.Actor("admin.chen", "Demo PD", "10.0.0.2")


def banner(client) -> str:
    page = client.get("/", follow_redirects=True).get_data(as_text=True)
    return page[page.index('id="site-warnings"') : page.index("<main>")] if 'id="site-warnings"' in page else ""


def strip(client) -> str:
    page = client.get("/live").get_data(as_text=True)
    return page[page.index('id="hotlist-status"') : page.index('id="disk-state"')]


def test_a_retired_list_is_shown_retired_and_never_stale(client, settings, trained, tmp_path):
    path = tmp_path / "svs.csv"
    path.write_text("plate,state,reason,entry_date,source_ref\n7ABC123,ca,STOLEN,2026-11-20,S1\n")
    hotlist.import_csv(settings, path, "SVS", ADMIN)
    hotlist.retire(ADMIN, "SVS", "replaced by the DOJ extract")
    Hotlist.update(refreshed_at=utcnow() - dt.timedelta(hours=settings.hotlist.stale_after_hours + 1)).execute()
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    assert "Hotlist SVS is stale" not in banner(client)
    shown = strip(client)
    assert "SVS: RETIRED" in shown and "by admin.chen, raises no alerts" in shown and "STALE" not in shown


def test_custom_entries_past_review_are_named_in_the_banner_and_the_strip(client, settings, trained):
    kept = hotlist.add_custom(
        settings, ADMIN, "6TR*9", "ROBBERY", approved_by="Capt. R. Alvarez", narrative="Case 26-004512, a witness."
    )
    due = hotlist.add_custom(
        settings, ADMIN, "7ABC123", "ASSAULT", approved_by="Capt. R. Alvarez", narrative="Case 26-004513, a victim."
    )
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    assert "review date" not in banner(client) and "past review" not in strip(client)
    yesterday = hotlist.local_today(settings) - dt.timedelta(days=1)
    HotlistEntry.update(review_on=yesterday).where(HotlistEntry.id == due.id).execute()
    assert (
        f"1 entry of the custom hotlist ({due.id}) passed its review date and raises no alerts until renewed "
        "with a reason or removed." in banner(client)
    )
    assert "1 past review (no alerts)" in strip(client)
    hotlist.renew_entry(settings, ADMIN, due.id, "victim re-interviewed, case open")
    assert "review date" not in banner(client) and str(kept.id) not in banner(client)


def test_the_policy_states_the_custom_review_period(tmp_path, db):
    settings = make_settings(tmp_path / "data", hotlist__custom_review_days=14)
    html = create_app(settings).test_client().get("/policy").get_data(as_text=True)
    item = html[html.index('id="custom-review"') :]
    assert "raises alerts for\n      14 days" in item[: item.index("</li>")]
