"""A read's `clock_synced` (issue 19) travels in its line and headquarters keeps it in the read's
data (no schema change); a post from before it sends no such field and is stored the same."""

from __future__ import annotations

import pytest

from appliance import clock
from sync import hq
from tests.appliance.test_clock_sync import CHRONY_UNSYNCED, replay_tools
from tests.sync.conftest import add_reads
from tests.sync.hq.test_hostile_batches import send
from tests.sync.hq.test_hostile_reads import signed_batch


@pytest.fixture
def tools(tmp_path, monkeypatch):
    yield from replay_tools(tmp_path, monkeypatch)


def stored_data() -> dict:
    with hq.hq_database.connection_context():
        (row,) = hq.HQRead.select()
        return row.data


@pytest.mark.parametrize("sent", ["false", "absent", "invalid"])
def test_a_batch_with_and_without_clock_synced(settings, hq_server, tools, sent):
    tools(chronyc=CHRONY_UNSYNCED)
    add_reads(settings, 1)
    clock.sync_watch.forget()

    def change(line):
        assert line["read"]["clock_synced"] is False  # as the post stored it
        if sent == "absent":
            del line["read"]["clock_synced"]
        elif sent == "invalid":
            line["read"]["clock_synced"] = "no"

    status, answer = send(hq_server, signed_batch(settings, change))
    if sent == "invalid":
        assert (status, answer["problem"]) == (400, "malformed"), answer
        assert "read field 'clock_synced' must be empty, true or false" in answer["message"]
        return
    assert (status, answer["status"], answer["reads"]) == (200, "stored", 1), answer
    data = stored_data()
    if sent == "absent":
        assert "clock_synced" not in data
    else:
        assert data["clock_synced"] is False
