"""The clock's state on /health, the live view's status strip, the banner and the read page
(issue 19), with the replays of chronyc and timedatectl of tests/appliance/test_clock_sync.py."""

from __future__ import annotations

import pytest

from tests.appliance.test_clock_sync import CHRONY_SYNCED, CHRONY_UNSYNCED, replay_tools, save
from tests.web.conftest import sign_in, state_purpose
from tests.web.test_bounded_ids import PURPOSE


@pytest.fixture
def tools(tmp_path, monkeypatch):
    yield from replay_tools(tmp_path, monkeypatch)


def test_health_carries_the_clock_and_degrades_when_not_synchronised(client, tools):
    tools(chronyc=CHRONY_SYNCED)
    answer = client.get("/health").get_json()
    assert answer["clock"]["synchronised"] is True and answer["clock"]["source"] == "chrony"
    assert not any("clock" in p for p in answer["problems"])
    tools(chronyc=CHRONY_UNSYNCED)
    answer = client.get("/health").get_json()
    assert answer["status"] == "degraded" and answer["clock"]["synchronised"] is False
    assert any(p.startswith("clock not synchronised (chrony") for p in answer["problems"]), answer["problems"]
    tools()
    assert client.get("/health").get_json()["clock"] == {
        **client.get("/health").get_json()["clock"],
        "synchronised": None,
        "source": "none",
    }


def test_the_strip_and_the_read_page_warn(settings, db, client, trained, tools):
    tools(chronyc=CHRONY_UNSYNCED)
    read = save(settings)
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    html = client.get("/live").get_data(as_text=True)
    assert 'id="clock-state"' in html and "NOT SYNCHRONISED" in html
    assert "clock is not synchronised" in html  # the banner
    state_purpose(client, PURPOSE["purpose"], PURPOSE["case_number"])
    page = client.get(f"/reads/{read.id}").get_data(as_text=True)
    assert 'id="clock-unsynced"' in page and "NOT synchronised" in page
    tools(chronyc=CHRONY_SYNCED)
    synced = save(settings)
    page = client.get(f"/reads/{synced.id}").get_data(as_text=True)
    assert 'id="clock-unsynced"' not in page and 'id="clock-unknown"' not in page
