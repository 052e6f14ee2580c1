import datetime as dt
import json
import threading

import numpy as np
import pytest

from appliance import alerts, audit, hotlist, store
from appliance.audit import system_actor
from appliance.capture import Frame
from appliance.capture.demo import DemoStreet
from appliance.events import EventBus
from appliance.models import AccessRecord, Alert, AlertConfirmation, Hotlist, Read, utcnow
from appliance.pipeline import Pipeline
from recognizer import Recognizer
from tests.conftest import make_settings

ADMIN = audit.Actor("admin.chen", "Demo PD", "10.0.0.2")
OFFICER = audit.Actor("officer.lee", "Demo PD", "10.0.0.7")
PURPOSE = audit.Purpose("HIT-VERIFY", "26-004512")


@pytest.fixture
def lists(settings, db, tmp_path):
    path = tmp_path / "svs.csv"
    path.write_text(
        "plate,state,reason,entry_date,source_ref\n"
        "7ABC123,ca,STOLEN VEHICLE,2026-11-20,SVS-1\n"
        "8BOS250,ca,WANTED PERSON,2026-11-20,SVS-2\n"
        "4KQD771,ca,STOLEN PLATE,2026-11-20,SVS-3\n"
    )
    hotlist.import_csv(settings, path, "SVS", ADMIN)
    hotlist.add_custom(
        settings,
        ADMIN,
        "6TR*9",
        "ROBBERY SUSPECT",
        approved_by="Capt. R. Alvarez",
        narrative="Case 26-004512: partial plate from a witness, grey sedan.",
    )


def store_read(settings, plate, confidence=0.93, alternatives=(), captured_at=None):
    raised = []
    rng = np.random.default_rng(len(plate))
    new = store.NewRead(
        plate_raw=plate,
        plate=plate,
        confidence=confidence,
        captured_at=captured_at or utcnow(),
        alternatives=[{"text": t, "score": s} for t, s in alternatives],
    )
    read = store.save_read(
        settings,
        store.EvidenceStore(settings),
        new,
        rng.integers(0, 255, (40, 120, 3), dtype=np.uint8),
        None,
        on_stored=lambda r: raised.extend(alerts.raise_alerts(settings, r)),
    )
    return read, raised


def test_exact_match(settings, lists):
    read, raised = store_read(settings, "7ABC123")
    assert [(a.entry_plate, a.match_kind, a.score, a.status) for a in raised] == [
        ("7ABC123", "exact", 1.0, "unconfirmed")
    ]
    a = raised[0]
    assert a.hotlist_name == "SVS" and a.hotlist_refreshed_at is not None and a.entry_reason == "STOLEN VEHICLE"


def test_match_on_an_alternative_reading(settings, lists):
    read, raised = store_read(settings, "7ABC128", confidence=0.6, alternatives=[("7ABC123", 0.3), ("7A8C128", 0.1)])
    assert [(a.entry_plate, a.match_kind) for a in raised] == [("7ABC123", "alternative")]
    assert 0.55 < raised[0].score < 0.9


@pytest.mark.parametrize(
    "read_as,listed", [("8B0S250", "8BOS250"), ("88OS25O", "8BOS250"), ("4KQ0771", "4KQD771"), ("4K00771", "4KQD771")]
)
def test_confusable_characters(settings, lists, read_as, listed):
    read, raised = store_read(settings, read_as)
    assert [(a.entry_plate, a.match_kind) for a in raised] == [(listed, "confusable")]
    assert raised[0].score < 1.0


def test_partial_custom_entry(settings, lists):
    read, raised = store_read(settings, "6TRX449")
    assert [(a.entry_plate, a.match_kind, a.score) for a in raised] == [("6TR*9", "pattern", 0.75)]


def test_no_alert_for_other_plates_or_weak_evidence(settings, lists):
    assert store_read(settings, "5ZZZ000")[1] == []
    assert store_read(settings, "7ABC124")[1] == []  # one real character off is not a confusable
    assert store_read(settings, "1XYZ111", confidence=0.9, alternatives=[("7ABC123", 0.01)])[1] == []


def test_stale_list_produces_no_alerts(settings, lists):
    Hotlist.update(refreshed_at=utcnow() - dt.timedelta(hours=80)).where(Hotlist.name == "SVS").execute()
    assert store_read(settings, "7ABC123")[1] == []
    assert [a.match_kind for a in store_read(settings, "6TRA119")[1]] == ["pattern"]  # custom list stays live


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
        alerts.confirm(
            OFFICER, alert_id, outcome="confirmed", visual_compared=True, clets_verified=False, note="", purpose=PURPOSE
        )
    with pytest.raises(alerts.AlertError, match="comparing the plate's characters"):
        alerts.confirm(
            OFFICER, alert_id, outcome="misread", visual_compared=False, clets_verified=False, note="", purpose=PURPOSE
        )
    with pytest.raises(audit.PurposeError):
        alerts.confirm(
            OFFICER, alert_id, outcome="confirmed", visual_compared=True, clets_verified=True, note="", purpose=None
        )
    record = alerts.confirm(
        OFFICER,
        alert_id,
        outcome="confirmed",
        visual_compared=True,
        clets_verified=True,
        note="Stopped at 5th & Main.",
        purpose=PURPOSE,
    )
    assert record.username == "officer.lee" and record.visual_compared and record.clets_verified
    assert Alert.get_by_id(alert_id).status == "confirmed"
    recs = list(
        AccessRecord.select()
        .where(AccessRecord.action.in_(["alert.acknowledge", "alert.confirm"]))
        .order_by(AccessRecord.seq)
    )
    assert [(r.action, r.username, r.purpose_code, r.case_number) for r in recs] == [
        ("alert.acknowledge", "dispatch.ray", "HIT-VERIFY", "26-004512"),
        ("alert.confirm", "officer.lee", "HIT-VERIFY", "26-004512"),
    ]
    assert read.uuid in recs[1].object_ids and '"plate":"7ABC123"' in recs[1].query
    assert audit.verify().ok


def test_read_and_alerts_commit_together(settings, lists):
    def explode(read):
        alerts.raise_alerts(settings, read)
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        store.save_read(
            settings,
            store.EvidenceStore(settings),
            store.NewRead(plate_raw="7ABC123", plate="7ABC123", confidence=0.9, captured_at=utcnow()),
            np.zeros((20, 60, 3), np.uint8),
            None,
            on_stored=explode,
        )
    assert Read.select().count() == 0 and Alert.select().count() == 0


def test_an_alert_sent_out_is_recorded_with_the_alert(settings, lists):
    """The command and the webhook hand the alert's plate data to someone else's system: each alert
    writes an alert.notify access record in the read's transaction, naming where it goes (not the
    webhook's path or credentials). With no outside channel, nothing is recorded."""

    noisy = make_settings(
        settings.data_dir,
        alerts__command="/usr/local/bin/page-dispatch --urgent",
        alerts__webhook_url="https://cad:s3cret@cad.example.gov/hooks/alpr?k=1",
    )
    read, raised = store_read(noisy, "7ABC123")
    [rec] = AccessRecord.select().where(AccessRecord.action == "alert.notify")
    assert rec.username == "system" and rec.purpose_code == "HIT-VERIFY" and rec.case_number == f"ALERT-{raised[0].id}"
    assert "7ABC123" in rec.query and read.uuid in rec.object_ids
    assert "command /usr/local/bin/page-dispatch" in rec.details and "webhook cad.example.gov" in rec.details
    assert "s3cret" not in rec.details and "hooks" not in rec.details and "--urgent" not in rec.details
    assert audit.verify().ok

    store_read(settings, "8BOS250")  # no command, no webhook
    assert AccessRecord.select().where(AccessRecord.action == "alert.notify").count() == 1


def test_notifier_runs_the_local_command(settings, lists, tmp_path):

    out = tmp_path / "alert.json"
    noisy = make_settings(settings.data_dir, alerts__command=f"cat > {out}")
    read, raised = store_read(settings, "7ABC123")
    notifier = alerts.Notifier(noisy)
    notifier._command(notifier.payload(raised[0]))
    body = out.read_text()
    assert '"entry_plate": "7ABC123"' in body and "UNCONFIRMED" in body


def test_partial_custom_entry_matches_look_alike_characters(settings, lists):
    """`8DDU4*` is a witness's partial plate; the reader saw the second D as 0. As for full plates,
    the look-alike match is weaker than a plain pattern match."""
    hotlist.add_custom(
        settings,
        ADMIN,
        "8DDU4*",
        "ASSAULT SUSPECT",
        approved_by="Capt. R. Alvarez",
        narrative="Case 26-004513: partial plate from a witness, white van.",
    )
    raised = store_read(settings, "8D0U467")[1]
    assert [(a.entry_plate, a.match_kind, a.matched_text, a.score) for a in raised] == [
        ("8DDU4*", "pattern-confusable", "8D0U467", 0.65)
    ]
    # two look-alikes score lower; a plain pattern match keeps its own kind and score
    assert [(a.match_kind, a.score) for a in store_read(settings, "BD0U467")[1]] == [("pattern-confusable", 0.6)]
    assert [(a.match_kind, a.score) for a in store_read(settings, "8DDU499")[1]] == [("pattern", 0.75)]
    assert store_read(settings, "8D0X467")[1] == []  # X is no look-alike of U


def noisy_settings(settings, out, **extra):
    return make_settings(settings.data_dir, alerts__command=f"cat >> {out}; echo >> {out}", **extra)


def wait_for_notifier_threads():
    for t in threading.enumerate():
        if t is not threading.current_thread() and t.daemon:
            t.join(timeout=15)


def notify_records():
    return AccessRecord.select().where(AccessRecord.action == "alert.notify").count()


def test_a_repeat_within_the_window_is_stored_but_not_sent(settings, lists, tmp_path):
    out = tmp_path / "sent.jsonl"
    noisy = noisy_settings(settings, out)
    t0 = dt.datetime(2026, 11, 22, 8, 0, 0)
    first = store_read(noisy, "7ABC123", captured_at=t0)[1][0]
    again = store_read(noisy, "7ABC123", captured_at=t0 + dt.timedelta(minutes=2))[1][0]
    assert first.repeat_of_id is None and again.repeat_of_id == first.id
    assert again.status == "unconfirmed" and again.match_kind == "exact"
    assert notify_records() == 1
    notifier = alerts.Notifier(noisy)
    for a in (first, again):
        notifier.notify(Alert.get_by_id(a.id))
    wait_for_notifier_threads()
    assert [json.loads(line)["alert_id"] for line in out.read_text().splitlines() if line] == [first.id]
    # the window runs from the alert sent: 4 and 6 min after it, the second is sent again
    later = store_read(noisy, "7ABC123", captured_at=t0 + dt.timedelta(minutes=4))[1][0]
    assert later.repeat_of_id == first.id
    sent = store_read(noisy, "7ABC123", captured_at=t0 + dt.timedelta(minutes=6))[1][0]
    assert sent.repeat_of_id is None and notify_records() == 2
    # another entry is its own alert
    assert store_read(noisy, "8BOS250", captured_at=t0 + dt.timedelta(minutes=2))[1][0].repeat_of_id is None
    assert audit.verify().ok


def test_reads_ten_minutes_apart_are_both_sent(settings, lists, tmp_path):
    noisy = noisy_settings(settings, tmp_path / "sent.jsonl")
    t0 = dt.datetime(2026, 11, 22, 8, 0, 0)
    alerts_ = [store_read(noisy, "7ABC123", captured_at=t0 + dt.timedelta(minutes=m))[1][0] for m in (0, 10)]
    assert [a.repeat_of_id for a in alerts_] == [None, None] and notify_records() == 2


def test_window_zero_sends_every_alert(settings, lists, tmp_path):
    noisy = noisy_settings(settings, tmp_path / "sent.jsonl", alerts__repeat_window_s=0)
    t0 = dt.datetime(2026, 11, 22, 8, 0, 0)
    alerts_ = [store_read(noisy, "7ABC123", captured_at=t0 + dt.timedelta(seconds=s))[1][0] for s in (0, 3)]
    assert [a.repeat_of_id for a in alerts_] == [None, None] and notify_records() == 2


def test_pipeline_sends_one_alert_for_a_car_seen_twice(settings, db, tmp_path):
    """The demo street's car seen 1 s, gone, and seen again 2 min later: two reads, two alerts, one
    sent (command run once, one live event, one alert.notify record)."""

    street = DemoStreet(1280, 720, 10.0, 6.0, 3)
    car, truth = street.render(84)
    road = street.background.copy()
    (tmp_path / "hl.csv").write_text(f"plate,reason\n{truth[0][0]},STOLEN\n")
    out = tmp_path / "sent.jsonl"
    noisy = noisy_settings(settings, out)
    hotlist.import_csv(noisy, tmp_path / "hl.csv", "HL", system_actor(noisy))
    bus = EventBus()
    events = bus.subscribe()
    pipe = Pipeline(noisy, Recognizer(threads=1), store.EvidenceStore(noisy), bus=bus, notifier=alerts.Notifier(noisy))
    t0, index = dt.datetime(2026, 11, 22, 8, 0, 0), 0
    for start in (t0, t0 + dt.timedelta(minutes=2)):
        for k, image in enumerate([car] * 10 + [road] * 30):
            index += 1
            pipe.process(
                Frame(image=image, captured_at=start + dt.timedelta(seconds=k / 10), index=index, source="test")
            )
    pipe.flush()
    wait_for_notifier_threads()
    assert Read.select().count() == 2
    first, again = Alert.select().order_by(Alert.id)
    assert again.repeat_of_id == first.id and again.status == "unconfirmed"
    assert notify_records() == 1
    assert [json.loads(line)["alert_id"] for line in out.read_text().splitlines() if line] == [first.id]
    published = []
    while not events.empty():
        published.append(events.get_nowait())
    assert [e["data"]["id"] for e in published if e["type"] == "alert"] == [first.id]


def confirm(alert_id, outcome, *, visual=False, clets=False, note="", reason=None, actor=OFFICER):
    given = {} if reason is None else {"change_reason": reason}
    return alerts.confirm(
        actor,
        alert_id,
        outcome=outcome,
        visual_compared=visual,
        clets_verified=clets,
        note=note,
        purpose=PURPOSE,
        **given,
    )


CLETS_BOX = 'the box "I checked the entry\'s current status through CLETS"'
VISUAL_BOX = 'the box "I compared every character of the plate in the image with the listed plate"'


@pytest.mark.parametrize(
    "outcome, visual, clets, boxes",
    [
        ("not_wanted", False, False, [CLETS_BOX]),  # the auditor's case: neither box ticked
        ("not_wanted", True, False, [CLETS_BOX]),
        ("misread", False, True, [VISUAL_BOX]),
        ("confirmed", False, False, [VISUAL_BOX, CLETS_BOX]),
        ("confirmed", True, False, [CLETS_BOX]),
        ("confirmed", False, True, [VISUAL_BOX]),
    ],
)
def test_an_outcome_is_refused_without_the_check_that_tells_it(settings, lists, outcome, visual, clets, boxes):
    """An outcome that says what CLETS shows needs the CLETS check; one that says what the image
    shows, the visual comparison. The refusal names every box left unticked."""
    [alert] = store_read(settings, "7ABC123")[1]
    with pytest.raises(alerts.AlertError) as refused:
        confirm(alert.id, outcome, visual=visual, clets=clets)
    message = str(refused.value)
    assert all(box in message for box in boxes) and "nothing was recorded" in message
    if len(boxes) == 1:
        assert (CLETS_BOX in message) != (VISUAL_BOX in message)
    assert Alert.get_by_id(alert.id).status == "unconfirmed"
    assert AccessRecord.select().where(AccessRecord.action == "alert.confirm").count() == 0
    # with the boxes named ticked, it is recorded
    confirm(alert.id, outcome, visual=visual or VISUAL_BOX in boxes, clets=clets or CLETS_BOX in boxes)
    assert Alert.get_by_id(alert.id).status == outcome


def test_a_changed_outcome_needs_a_reason_and_every_outcome_stays_on_file(settings, lists):
    [alert] = store_read(settings, "7ABC123")[1]
    confirm(alert.id, "confirmed", visual=True, clets=True, note="Stopped at 5th & Main.")
    sgt = audit.Actor("sgt.diaz", "Demo PD", "10.0.0.9")
    for reason in (None, "", "   ", "no"):
        with pytest.raises(alerts.AlertError) as refused:
            confirm(alert.id, "misread", visual=True, reason=reason, actor=sgt)
        message = str(refused.value)
        assert "CONFIRMED by officer.lee" in message and "MISREAD" in message
        assert '"Reason for the change"' in message and "nothing was recorded" in message
    assert Alert.get_by_id(alert.id).status == "confirmed"
    # the same outcome again (a second officer's check) changes nothing and needs no reason
    confirm(alert.id, "confirmed", visual=True, clets=True, actor=sgt)
    confirm(alert.id, "misread", visual=True, note="Crop shows 7ABC128.", reason="Compared the crop again: 3 is 8.")
    assert Alert.get_by_id(alert.id).status == "misread"
    rows = list(AlertConfirmation.select().where(AlertConfirmation.alert == alert.id).order_by(AlertConfirmation.id))
    assert [(r.username, r.outcome, r.change_reason) for r in rows] == [
        ("officer.lee", "confirmed", ""),
        ("sgt.diaz", "confirmed", ""),
        ("officer.lee", "misread", "Compared the crop again: 3 is 8."),
    ]
    rec = list(AccessRecord.select().where(AccessRecord.action == "alert.confirm").order_by(AccessRecord.seq))[-1]
    details = json.loads(rec.details)
    assert details["changed_from"] == "confirmed" and details["change_reason"] == "Compared the crop again: 3 is 8."
    assert alerts.outcome_history([alert.id]) == {alert.id: ["confirmed", "confirmed", "misread"]}
    # a reason with the first outcome would be a reason for nothing: refused, not dropped
    [other] = store_read(settings, "8BOS250")[1]
    with pytest.raises(alerts.AlertError, match="no outcome on file to change"):
        confirm(other.id, "confirmed", visual=True, clets=True, reason="typed by mistake")
    assert audit.verify().ok


def test_acknowledge_and_confirm_name_the_listed_plate_and_the_plate_read(settings, lists):
    """Matched on an alternative reading: the page shows the read (7ABC128) and the listed plate
    (7ABC123), so the records name both."""
    read, [alert] = store_read(settings, "7ABC128", confidence=0.6, alternatives=[("7ABC123", 0.3)])
    alerts.acknowledge(audit.Actor("dispatch.ray", "Demo PD"), alert.id, PURPOSE)
    confirm(alert.id, "misread", visual=True)
    recs = AccessRecord.select().where(AccessRecord.action.in_(["alert.acknowledge", "alert.confirm"]))
    assert [json.loads(r.query) for r in recs] == [{"plate": "7ABC123", "read_plate": "7ABC128"}] * 2
