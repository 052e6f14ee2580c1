import datetime as dt

import numpy as np
import pytest

from appliance import alerts, audit, hotlist, store
from appliance.models import AccessRecord, Alert, Hotlist, Read, utcnow

ADMIN = audit.Actor("admin.chen", "Demo PD", "10.0.0.2")
OFFICER = audit.Actor("officer.lee", "Demo PD", "10.0.0.7")
PURPOSE = audit.Purpose("HIT-VERIFY", "26-004512")


@pytest.fixture
def lists(settings, db, tmp_path):
    path = tmp_path / "svs.csv"
    path.write_text("plate,state,reason,entry_date,source_ref\n"
                    "7ABC123,ca,STOLEN VEHICLE,2026-11-20,SVS-1\n"
                    "8BOS250,ca,WANTED PERSON,2026-11-20,SVS-2\n"
                    "4KQD771,ca,STOLEN PLATE,2026-11-20,SVS-3\n")
    hotlist.import_csv(settings, path, "SVS", ADMIN)
    hotlist.add_custom(ADMIN, "6TR*9", "ROBBERY SUSPECT", approved_by="Capt. R. Alvarez",
                       narrative="Case 26-004512: partial plate from a witness, grey sedan.")


def store_read(settings, plate, confidence=0.93, alternatives=()):
    raised = []
    rng = np.random.default_rng(len(plate))
    new = store.NewRead(plate_raw=plate, plate=plate, confidence=confidence, captured_at=utcnow(),
                        alternatives=[{"text": t, "score": s} for t, s in alternatives])
    read = store.save_read(settings, store.EvidenceStore(settings), new,
                           rng.integers(0, 255, (40, 120, 3), dtype=np.uint8), None,
                           on_stored=lambda r: raised.extend(alerts.raise_alerts(settings, r)))
    return read, raised


def test_exact_match(settings, lists):
    read, raised = store_read(settings, "7ABC123")
    assert [(a.entry_plate, a.match_kind, a.score, a.status) for a in raised] == [
        ("7ABC123", "exact", 1.0, "unconfirmed")]
    a = raised[0]
    assert a.hotlist_name == "SVS" and a.hotlist_refreshed_at is not None and a.entry_reason == "STOLEN VEHICLE"


def test_match_on_an_alternative_reading(settings, lists):
    read, raised = store_read(settings, "7ABC128", confidence=0.6, alternatives=[("7ABC123", 0.3), ("7A8C128", 0.1)])
    assert [(a.entry_plate, a.match_kind) for a in raised] == [("7ABC123", "alternative")]
    assert 0.55 < raised[0].score < 0.9


@pytest.mark.parametrize("read_as,listed", [("8B0S250", "8BOS250"), ("88OS25O", "8BOS250"), ("4KQ0771", "4KQD771"),
                                            ("4K00771", "4KQD771")])
def test_confusable_characters(settings, lists, read_as, listed):
    read, raised = store_read(settings, read_as)
    assert [(a.entry_plate, a.match_kind) for a in raised] == [(listed, "confusable")]
    assert raised[0].score < 1.0


def test_partial_custom_entry(settings, lists):
    read, raised = store_read(settings, "6TRX449")
    assert [(a.entry_plate, a.match_kind, a.score) for a in raised] == [("6TR*9", "pattern", 0.75)]


def test_no_alert_for_other_plates_or_weak_evidence(settings, lists):
    assert store_read(settings, "5ZZZ000")[1] == []
    assert store_read(settings, "7ABC124")[1] == []     # one real character off is not a confusable
    assert store_read(settings, "1XYZ111", confidence=0.9, alternatives=[("7ABC123", 0.01)])[1] == []


def test_stale_list_produces_no_alerts(settings, lists):
    Hotlist.update(refreshed_at=utcnow() - dt.timedelta(hours=80)).where(Hotlist.name == "SVS").execute()
    assert store_read(settings, "7ABC123")[1] == []
    assert [a.match_kind for a in store_read(settings, "6TRA119")[1]] == ["pattern"]   # custom list stays live


def test_removed_entry_no_longer_matches(settings, lists):
    entry = hotlist.HotlistEntry.get(hotlist.HotlistEntry.plate == "7ABC123")
    hotlist.remove_entry(OFFICER, entry.id, "vehicle recovered")
    assert store_read(settings, "7ABC123")[1] == []


def test_confirmation_workflow_and_its_records(settings, lists):
    read, raised = store_read(settings, "7ABC123")
    alert_id = raised[0].id
    alerts.acknowledge(audit.Actor("dispatch.ray", "Demo PD"), alert_id, PURPOSE)
    assert Alert.get_by_id(alert_id).status == "unconfirmed"
    with pytest.raises(alerts.AlertError, match="AND verifying the entry through CLETS"):
        alerts.confirm(OFFICER, alert_id, outcome="confirmed", visual_compared=True, clets_verified=False,
                       note="", purpose=PURPOSE)
    with pytest.raises(alerts.AlertError, match="comparing the plate's characters"):
        alerts.confirm(OFFICER, alert_id, outcome="misread", visual_compared=False, clets_verified=False,
                       note="", purpose=PURPOSE)
    with pytest.raises(audit.PurposeError):
        alerts.confirm(OFFICER, alert_id, outcome="confirmed", visual_compared=True, clets_verified=True,
                       note="", purpose=None)
    record = alerts.confirm(OFFICER, alert_id, outcome="confirmed", visual_compared=True, clets_verified=True,
                            note="Stopped at 5th & Main.", purpose=PURPOSE)
    assert record.username == "officer.lee" and record.visual_compared and record.clets_verified
    assert Alert.get_by_id(alert_id).status == "confirmed"
    recs = list(AccessRecord.select().where(AccessRecord.action.in_(["alert.acknowledge", "alert.confirm"]))
                .order_by(AccessRecord.seq))
    assert [(r.action, r.username, r.purpose_code, r.case_number) for r in recs] == [
        ("alert.acknowledge", "dispatch.ray", "HIT-VERIFY", "26-004512"),
        ("alert.confirm", "officer.lee", "HIT-VERIFY", "26-004512")]
    assert read.uuid in recs[1].object_ids and '"plate":"7ABC123"' in recs[1].query
    assert audit.verify().ok


def test_read_and_alerts_commit_together(settings, lists):
    def explode(read):
        alerts.raise_alerts(settings, read)
        raise RuntimeError("power cut")
    with pytest.raises(RuntimeError):
        store.save_read(settings, store.EvidenceStore(settings),
                        store.NewRead(plate_raw="7ABC123", plate="7ABC123", confidence=0.9, captured_at=utcnow()),
                        np.zeros((20, 60, 3), np.uint8), None, on_stored=explode)
    assert Read.select().count() == 0 and Alert.select().count() == 0


def test_an_alert_sent_out_is_recorded_with_the_alert(settings, lists):
    """The command and the webhook hand the alert's plate data to someone else's system: each alert
    writes an alert.notify access record in the read's transaction, naming where it goes (not the
    webhook's path or credentials). With no outside channel, nothing is recorded."""
    from tests.conftest import make_settings
    noisy = make_settings(settings.data_dir, alerts__command="/usr/local/bin/page-dispatch --urgent",
                          alerts__webhook_url="https://cad:s3cret@cad.example.gov/hooks/alpr?k=1")
    read, raised = store_read(noisy, "7ABC123")
    [rec] = AccessRecord.select().where(AccessRecord.action == "alert.notify")
    assert rec.username == "system" and rec.purpose_code == "HIT-VERIFY" and rec.case_number == f"ALERT-{raised[0].id}"
    assert "7ABC123" in rec.query and read.uuid in rec.object_ids
    assert "command /usr/local/bin/page-dispatch" in rec.details and "webhook cad.example.gov" in rec.details
    assert "s3cret" not in rec.details and "hooks" not in rec.details and "--urgent" not in rec.details
    assert audit.verify().ok

    store_read(settings, "8BOS250")      # no command, no webhook
    assert AccessRecord.select().where(AccessRecord.action == "alert.notify").count() == 1


def test_notifier_runs_the_local_command(settings, lists, tmp_path):
    from tests.conftest import make_settings
    out = tmp_path / "alert.json"
    noisy = make_settings(settings.data_dir, alerts__command=f"cat > {out}")
    read, raised = store_read(settings, "7ABC123")
    notifier = alerts.Notifier(noisy)
    notifier._command(notifier.payload(raised[0]))
    body = out.read_text()
    assert '"entry_plate": "7ABC123"' in body and "UNCONFIRMED" in body
