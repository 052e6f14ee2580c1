"""Matching reads against hotlists, raising alerts, and the confirmation workflow.

A hit is an unverified lead (Green v. City and County of San Francisco: a misread 3 for 7). An
alert is UNCONFIRMED until a person records that they compared the plate's characters with the
image and verified the entry through the state system (CLETS). Dispatchers acknowledge; officers
confirm. An outcome is recorded only with the check that tells it (what the image shows: the visual
comparison; what CLETS shows: the CLETS check); changing it needs a reason, and every outcome
stays on file, in order.

Scores: a match on the read text is 1.0; on one of the OCR's alternative readings, 0.55 plus up to
0.35 by how close the alternative's score is to the read's; on OCR-confusable characters
(0/O/D/Q, 1/I/L, 8/B, 5/S, 2/Z, 6/G), 0.9 less 0.1 per substituted character; a partial custom
entry (`*`, `?`), 0.75, and on confusable characters of such an entry ("pattern-confusable"),
0.7 less 0.05 per substituted character. Alerts are raised from `alerts.min_score` up; the score is
shown with the alert so a person knows how strong the lead is. A read raises at most one alert per
list, for its best match (a pass that matches two entries of one list is one lead, not two).
Retired lists, stale state lists and custom entries past their review date raise none.

Repeats: one car is often read twice within minutes (a pass split by a short dropout, a car
circling the block). An alert for the same entry (list and listed plate) whose read is within
`alerts.repeat_window_s` of the read of the last alert SENT for that entry is stored as a repeat of
it: it is evidence and stays unconfirmed, but it is not sent out (command, webhook, GPIO, live
list) and writes no alert.notify record. The window runs from the last alert sent, not from the
last repeat, so a car that keeps circling is sent again once per window.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import logging
import re
import string
import subprocess
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass

from appliance import audit
from appliance.audit import system_actor
from appliance.config import Settings
from appliance.db import write
from appliance.hotlist import is_stale, local_today, past_review, skeleton
from appliance.models import Alert, AlertConfirmation, Hotlist, HotlistEntry, Read, utcnow

log = logging.getLogger("waypost.alerts")

# alert.notify: the alert's plate data handed to the configured command or webhook (someone else's
# system), recorded with the alert, before it is sent.
for _name, _data in (
    ("alert.acknowledge", True),
    ("alert.confirm", True),
    ("alert.view", True),
    ("alert.notify", True),
):
    audit.register_action(_name, _data)

OUTCOMES = {
    "confirmed": "Confirmed: plate and entry verified",
    "misread": "Misread: the plate in the image is not the listed plate",
    "not_wanted": "No longer wanted (CLETS shows the entry cleared)",
    "other": "Other (explain in the note)",
}

# The two checks as the confirmation form labels its boxes (web/alerts.py uses these labels), so
# a refusal names the box to tick.
CHECKS = {
    "visual_compared": "I compared every character of the plate in the image with the listed plate",
    "clets_verified": "I checked the entry's current status through CLETS",
}

# An outcome states what the image shows, what CLETS shows, or both; it is recorded only with the
# check that tells it. 'other' states neither and is explained in the note.
OUTCOME_CHECKS: dict[str, tuple[str, ...]] = {
    "confirmed": ("visual_compared", "clets_verified"),
    "misread": ("visual_compared",),
    "not_wanted": ("clets_verified",),
    "other": (),
}
_UNCHECKED = {
    "confirmed": "a hit can be confirmed only after comparing the plate's characters with the image "
    "AND verifying the entry through CLETS",
    "misread": "a misread is recorded after comparing the plate's characters with the image",
    "not_wanted": "'no longer wanted' says what CLETS shows, so it is recorded only after checking the entry "
    "through CLETS",
}
MIN_EXPLANATION = 5  # characters of a note for 'other' or of the reason for a changed outcome


class AlertError(ValueError):
    pass


@dataclass(frozen=True)
class Match:
    entry: HotlistEntry
    hotlist: Hotlist
    matched_text: str
    kind: str
    score: float


def _candidates(read: Read) -> list[tuple[str, str, float]]:
    """(text, kind, score) for the read's text and each alternative reading."""
    out = [(read.plate, "exact", 1.0)]
    top = max(read.confidence, 1e-6)
    for alt in read.alternatives or []:
        text = alt.get("text", "")
        if text and text != read.plate:
            out.append((text, "alternative", 0.55 + 0.35 * min(1.0, float(alt.get("score", 0.0)) / top)))
    return out


_PLATE_CHARS = string.ascii_uppercase + string.digits


def _folded_pattern(pattern: str) -> re.Pattern:
    """A custom entry's pattern with each listed character widened to the characters the OCR
    confuses it with; each listed character is a group, to count the substitutions."""
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            alike = sorted({c for c in _PLATE_CHARS if skeleton(c) == skeleton(ch)} | {ch})
            parts.append("([" + re.escape("".join(alike)) + "])")
    return re.compile("".join(parts))


def find_matches(settings: Settings, read: Read) -> list[Match]:
    """Best match per active entry of every fresh list in use (not retired), best first; a custom
    entry past its review date is not active."""
    now = utcnow()
    fresh = {h.id: h for h in Hotlist.select() if h.retired_at is None and not is_stale(h, settings, now)}
    if not fresh:
        return []
    active = HotlistEntry.removed_at.is_null() & HotlistEntry.hotlist.in_(list(fresh))
    today = local_today(settings, now)
    best: dict[int, Match] = {}

    def offer(entry, text, kind, score):
        if past_review(entry, fresh[entry.hotlist_id], settings, today):
            return
        if entry.id not in best or score > best[entry.id].score:
            best[entry.id] = Match(entry, fresh[entry.hotlist_id], text, kind, round(score, 3))

    candidates = _candidates(read)
    texts = {c[0] for c in candidates}
    for entry in HotlistEntry.select().where(active & ~HotlistEntry.pattern & HotlistEntry.plate.in_(list(texts))):
        for text, kind, score in candidates:
            if entry.plate == text:
                offer(entry, text, kind, score)
    folded = skeleton(read.plate)
    for entry in HotlistEntry.select().where(
        active & ~HotlistEntry.pattern & (HotlistEntry.skeleton == folded) & (HotlistEntry.plate != read.plate)
    ):
        subs = sum(a != b for a, b in zip(entry.plate, read.plate))
        offer(entry, read.plate, "confusable", 0.9 - 0.1 * subs)
    patterns = list(HotlistEntry.select().where(active & HotlistEntry.pattern))
    for entry in patterns:
        rx = re.compile(fnmatch.translate(entry.plate))
        for text, kind, score in candidates:
            if rx.match(text):
                offer(entry, text, "pattern", 0.75 if kind == "exact" else min(0.7, score))
        if entry.id not in best:
            # as for full plates, look-alike characters only on the read text itself
            found = _folded_pattern(entry.plate).fullmatch(read.plate)
            if found:
                listed = [c for c in entry.plate if c not in "*?"]
                subs = sum(g != c for g, c in zip(found.groups(), listed))
                offer(entry, read.plate, "pattern-confusable", 0.7 - 0.05 * subs)
    return sorted(
        (m for m in best.values() if m.score >= settings.alerts.min_score), key=lambda m: (-m.score, m.entry.id)
    )


def raise_alerts(settings: Settings, read: Read) -> list[Alert]:
    """Create the alerts for a stored read. Call inside the read's own transaction
    (store.save_read(..., on_stored=...)) so a read and its alerts commit together. One alert per
    list: its best match."""
    out = []
    lists: set[int] = set()
    for m in find_matches(settings, read):
        if m.hotlist.id in lists:
            continue
        lists.add(m.hotlist.id)
        out.append(
            Alert.create(
                read=read,
                entry=m.entry,
                hotlist_name=m.hotlist.name,
                hotlist_refreshed_at=m.hotlist.refreshed_at,
                entry_plate=m.entry.plate,
                entry_state=m.entry.state,
                entry_reason=m.entry.reason,
                entry_source_ref=m.entry.source_ref,
                entry_ori=m.entry.ori,
                matched_text=m.matched_text,
                match_kind=m.kind,
                score=m.score,
                repeat_of=_sent_alert_within_window(settings, read, m),
            )
        )
    recipients = notify_recipients(settings)
    if out and recipients:
        for alert in out:
            if not is_sent(alert):
                continue  # a repeat: nothing handed to anyone else's system
            audit.record(
                "alert.notify",
                system_actor(settings),
                query={"plate": alert.entry_plate},
                purpose=audit.Purpose("HIT-VERIFY", f"ALERT-{alert.id}"),
                objects=[f"alert:{alert.id}", f"read:{read.uuid}"],
                result_count=1,
                details={"to": recipients, "hotlist": alert.hotlist_name},
            )
    return out


def _sent_alert_within_window(settings: Settings, read: Read, m: Match) -> Alert | None:
    """The alert last sent for the same entry whose read is within the repeat window of this read
    (either side: a clock stepped back must not turn a repeat into a new alert)."""
    window = settings.alerts.repeat_window_s
    if not window:
        return None
    span = dt.timedelta(seconds=window)
    return (
        Alert.select(Alert)
        .join(Read, on=(Alert.read == Read.id))
        .where(
            (Alert.hotlist_name == m.hotlist.name)
            & (Alert.entry_plate == m.entry.plate)
            & Alert.repeat_of.is_null()
            & (Alert.read != read.id)
            & Read.captured_at.between(read.captured_at - span, read.captured_at + span)
        )
        .order_by(Read.captured_at.desc(), Alert.id.desc())
        .first()
    )


def is_sent(alert: Alert) -> bool:
    """Whether an alert is sent out (notifier, live list): every alert but a repeat."""
    return alert.repeat_of_id is None  # type: ignore[attr-defined]  # peewee adds repeat_of_id


def notify_recipients(settings: Settings) -> list[str]:
    """Where Notifier sends an alert's plate data, as the access record names them: the command
    (its program, not its arguments) and the webhook's host (not its path or any credentials).
    The GPIO pin only lights a lamp: no data leaves."""
    cfg = settings.alerts
    out = []
    if cfg.command:
        out.append(f"command {cfg.command.split()[0]}")
    if cfg.webhook_url:
        out.append(f"webhook {urllib.parse.urlsplit(cfg.webhook_url).hostname}")
    return out


def _shout(outcome: str) -> str:
    return outcome.replace("_", " ").upper()


def alert_query(alert: Alert) -> dict:
    """What a record of an alert names: the listed plate and the plate read (they differ on a match
    on an alternative reading or on look-alike characters); the person saw both."""
    return {"plate": alert.entry_plate, "read_plate": alert.read.plate}


def acknowledge(actor: audit.Actor, alert_id: int, purpose: audit.Purpose) -> Alert:
    """A dispatcher has seen the alert and is relaying it; it stays unconfirmed."""
    with write():
        alert = Alert.get_or_none(Alert.id == alert_id)
        if alert is None:
            raise AlertError(f"no alert {alert_id}")
        if alert.acknowledged_at is None:
            alert.acknowledged_at, alert.acknowledged_by = utcnow(), actor.username
            alert.save()
        audit.record(
            "alert.acknowledge",
            actor,
            query=alert_query(alert),
            purpose=purpose,
            objects=[f"alert:{alert.id}", f"read:{alert.read.uuid}"],
            result_count=1,
        )
    return alert


def confirm(
    actor: audit.Actor,
    alert_id: int,
    *,
    outcome: str,
    visual_compared: bool,
    clets_verified: bool,
    note: str,
    purpose: audit.Purpose,
    change_reason: str = "",
) -> AlertConfirmation:
    """Record a person's verification of an alert. An outcome needs the checks that tell it
    (OUTCOME_CHECKS); 'other' needs a note. Every outcome recorded stays on file, in order: one
    that differs from the outcome on file needs the reason for the change; the same outcome again
    (a second person's check) does not."""
    if outcome not in OUTCOMES:
        raise AlertError(f"outcome must be one of {', '.join(OUTCOMES)}")
    ticked = {"visual_compared": visual_compared, "clets_verified": clets_verified}
    unticked = [check for check in OUTCOME_CHECKS[outcome] if not ticked[check]]
    if unticked:
        boxes = " and ".join(f'the box "{CHECKS[check]}"' for check in unticked)
        raise AlertError(f"{_UNCHECKED[outcome]}: tick {boxes} once done, then record again; nothing was recorded")
    if outcome == "other" and len(note.strip()) < MIN_EXPLANATION:
        raise AlertError("explain the outcome in the note")
    reason = change_reason.strip()
    with write():
        alert = Alert.get_or_none(Alert.id == alert_id)
        if alert is None:
            raise AlertError(f"no alert {alert_id}")
        # read in the write transaction: two people recording at once see each other's outcome
        on_file = (
            AlertConfirmation.select()
            .where(AlertConfirmation.alert == alert)
            .order_by(AlertConfirmation.confirmed_at.desc(), AlertConfirmation.id.desc())
            .first()
        )
        if on_file is None and reason:
            raise AlertError(
                f'alert {alert.id} has no outcome on file to change: leave "Reason for the change" empty; '
                "nothing was recorded"
            )
        changed_from = on_file.outcome if on_file is not None and on_file.outcome != outcome else None
        if changed_from is not None and len(reason) < MIN_EXPLANATION:
            raise AlertError(
                f"alert {alert.id} is recorded as {_shout(changed_from)} by {on_file.username}; changing it to "
                f'{_shout(outcome)} needs the reason for the change: write why in "Reason for the change" '
                f"(at least {MIN_EXPLANATION} characters); nothing was recorded"
            )
        record = AlertConfirmation.create(
            alert=alert,
            username=actor.username,
            organization=actor.organization,
            visual_compared=visual_compared,
            clets_verified=clets_verified,
            outcome=outcome,
            note=note.strip(),
            change_reason=reason,
        )
        alert.status = outcome
        alert.save()
        details: dict = {"outcome": outcome, "visual_compared": visual_compared, "clets_verified": clets_verified}
        if changed_from is not None:
            details.update(changed_from=changed_from, change_reason=reason)
        audit.record(
            "alert.confirm",
            actor,
            query=alert_query(alert),
            purpose=purpose,
            objects=[f"alert:{alert.id}", f"read:{alert.read.uuid}"],
            result_count=1,
            details=details,
        )
    return record


def outcome_history(alert_ids: list[int]) -> dict[int, list[str]]:
    """alert id -> the outcomes recorded for it, oldest first (alerts with none are left out)."""
    out: dict[int, list[str]] = {}
    if not alert_ids:
        return out
    rows = (
        AlertConfirmation.select(AlertConfirmation.alert, AlertConfirmation.outcome)
        .where(AlertConfirmation.alert.in_(list(alert_ids)))
        .order_by(AlertConfirmation.confirmed_at, AlertConfirmation.id)
    )
    for row in rows:
        out.setdefault(row.alert_id, []).append(row.outcome)  # type: ignore[attr-defined]  # peewee: <fk>_id attribute
    return out


def changed_from(history: list[str]) -> str | None:
    """The outcome an alert's current one replaced, if it was ever changed."""
    for outcome in reversed(history):
        if outcome != history[-1]:
            return outcome
    return None


class Notifier:
    """Tells the outside world about new alerts: a local command, a webhook, a GPIO pin. Each runs
    in its own short-lived thread so a slow receiver never holds up the pipeline."""

    def __init__(self, settings: Settings):
        self.cfg = settings.alerts
        self.post_id = settings.post.id
        self._led = None

    def payload(self, alert: Alert) -> dict:
        read = alert.read
        return {
            "alert_id": alert.id,
            "post": self.post_id,
            "plate_read": read.plate,
            "matched": alert.matched_text,
            "match_kind": alert.match_kind,
            "score": alert.score,
            "hotlist": alert.hotlist_name,
            "entry_plate": alert.entry_plate,
            "reason": alert.entry_reason,
            "captured_at": read.captured_at.isoformat() + "Z",
            "direction": read.direction,
            "status": "UNCONFIRMED: verify through CLETS and compare the characters with the image",
        }

    def notify(self, alert: Alert) -> None:
        if not is_sent(alert):
            return
        body = self.payload(alert)
        if self.cfg.command:
            threading.Thread(target=self._command, args=(body,), daemon=True).start()
        if self.cfg.webhook_url:
            threading.Thread(target=self._webhook, args=(body,), daemon=True).start()
        if self.cfg.gpio_pin is not None:
            threading.Thread(target=self._gpio, daemon=True).start()

    def _command(self, body):
        try:
            subprocess.run(self.cfg.command, shell=True, input=json.dumps(body), text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("alert command %r failed: %s", self.cfg.command, exc)

    def _webhook(self, body):
        req = urllib.request.Request(
            self.cfg.webhook_url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
        except OSError as exc:
            log.error("alert webhook %s failed: %s", self.cfg.webhook_url, exc)

    def _gpio(self):
        try:
            if self._led is None:
                from gpiozero import LED  # noqa: PLC0415 (optional dependency: Raspberry Pi OS's python3-gpiozero)

                self._led = LED(self.cfg.gpio_pin)
            self._led.blink(on_time=3, off_time=0, n=1, background=False)
        except Exception as exc:  # no GPIO on this machine, pin busy, ...
            log.error("alert GPIO pin %s failed: %s", self.cfg.gpio_pin, exc)
