"""What a hotlist entry makes of a read (issue 16, finding 6): the alert names the entry's ORI
beside its NIC, one vehicle pass raises one alert per list, and a retired list or a custom entry
past its review date raises none. Real database file, reads stored as the pipeline stores them."""

import datetime as dt

from appliance import hotlist
from appliance.models import Alert, HotlistEntry, utcnow
from tests.appliance.test_alerts import ADMIN, store_read
from tests.conftest import make_settings

NCIC = {
    "hotlist__plate_column": "LIC",
    "hotlist__state_column": "LIS",
    "hotlist__plate_type_column": "LIT",
    "hotlist__plate_year_column": "LIY",
    "hotlist__vehicle_make_column": "MKE",
    "hotlist__source_ref_column": "NIC",
    "hotlist__ori_column": "ORI",
    "hotlist__entry_date_column": "DTE",
    "hotlist__reason_column": "CAT",
    "hotlist__date_format": "%Y%m%d",
}


def import_list(settings, tmp_path, name, body, header="plate,state,reason,entry_date,source_ref\n"):
    path = tmp_path / f"{name}.csv"
    path.write_text(header + body)
    return hotlist.import_csv(settings, path, name, ADMIN)


def add_custom(settings, plate="6TR*9"):
    return hotlist.add_custom(
        settings,
        ADMIN,
        plate,
        "ROBBERY SUSPECT",
        approved_by="Capt. R. Alvarez",
        narrative="Case 26-004512: partial plate from a witness, grey sedan.",
    )


def test_the_alert_names_the_entry_ori_beside_its_nic(tmp_path, db):
    settings = make_settings(tmp_path / "data", **NCIC)
    import_list(
        settings,
        tmp_path,
        "NCIC",
        "7ABC123,CA,PC,2027,TOYT,V123456789,CA0360100,20261120,STOLEN VEHICLE\n",
        header="LIC,LIS,LIT,LIY,MKE,NIC,ORI,DTE,CAT\n",
    )
    [alert] = store_read(settings, "7ABC123")[1]
    assert (alert.entry_source_ref, alert.entry_ori) == ("V123456789", "CA0360100")
    assert Alert.get_by_id(alert.id).entry_ori == "CA0360100"
    assert (alert.entry.vehicle_make, alert.entry.plate_type, alert.entry.plate_year) == ("TOYT", "PC", "2027")


def test_one_vehicle_pass_raises_one_alert_per_list(settings, db, tmp_path):
    import_list(
        settings,
        tmp_path,
        "SVS",
        "7A8C123,ca,STOLEN PLATE,2026-11-20,V1\n"  # look-alike of the read: a weaker match
        "7ABC123,ca,STOLEN VEHICLE,2026-11-20,V2\n"
        "7ABC123,ca,WANTED PERSON,2026-11-20,V3\n",
    )
    import_list(settings, tmp_path, "NCIC", "7ABC123,ca,FELONY VEHICLE,2026-11-20,V9\n")
    raised = store_read(settings, "7ABC123")[1]
    # one per list, each its list's best match (the exact one; of two exact, the one listed first)
    assert sorted((a.hotlist_name, a.entry_reason, a.match_kind) for a in raised) == [
        ("NCIC", "FELONY VEHICLE", "exact"),
        ("SVS", "STOLEN VEHICLE", "exact"),
    ]
    assert Alert.select().count() == 2


def test_a_retired_list_raises_no_alerts_and_its_alerts_stay(settings, db, tmp_path):
    import_list(settings, tmp_path, "SVS", "7ABC123,ca,STOLEN VEHICLE,2026-11-20,V1\n")
    [before] = store_read(settings, "7ABC123")[1]
    hotlist.retire(ADMIN, "SVS", "replaced by the DOJ extract")
    assert store_read(settings, "7ABC123")[1] == []
    kept = Alert.get_by_id(before.id)
    assert kept.hotlist_name == "SVS" and kept.entry_id == before.entry_id
    # an import of the name starts the list again
    import_list(settings, tmp_path, "SVS", "7ABC123,ca,STOLEN VEHICLE,2026-11-20,V1\n")
    assert [a.hotlist_name for a in store_read(settings, "7ABC123")[1]] == ["SVS"]
    assert Alert.get_by_id(before.id).entry_reason == "STOLEN VEHICLE"  # the alert outlives the old entries


def test_a_custom_entry_past_its_review_date_raises_no_alert_until_renewed(settings, db):
    entry = add_custom(settings)
    assert [a.entry_plate for a in store_read(settings, "6TRX449")[1]] == ["6TR*9"]
    today = hotlist.local_today(settings)
    HotlistEntry.update(review_on=today).where(HotlistEntry.id == entry.id).execute()
    assert len(store_read(settings, "6TRX449")[1]) == 1  # the review day itself still alerts
    HotlistEntry.update(review_on=today - dt.timedelta(days=1)).where(HotlistEntry.id == entry.id).execute()
    assert store_read(settings, "6TRX449")[1] == []
    hotlist.renew_entry(settings, ADMIN, entry.id, "witness re-interviewed, suspect still at large")
    assert len(store_read(settings, "6TRX449")[1]) == 1
    # an entry made before review dates: due custom_review_days (30) after it was made
    full = add_custom(settings, "8DDU467")
    HotlistEntry.update(review_on=None, created_at=utcnow() - dt.timedelta(days=31)).where(
        HotlistEntry.id == full.id
    ).execute()
    assert store_read(settings, "8DDU467")[1] == []
