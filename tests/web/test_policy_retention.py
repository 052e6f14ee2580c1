"""The public policy states the access-log retention the post really applies. Access records are not
purged (appliance/retention.py: deleting the start of the hash chain would leave it unverifiable), so
the page must not say they are kept for retention.audit_days and then destroyed: it says they are
kept at least that long and, for now, not deleted at all."""

import re

import pytest

from tests.conftest import make_settings


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data", retention__audit_days=2555)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_policy_does_not_promise_a_purge_of_access_records_the_post_does_not_make(app):
    html = app.test_client().get("/policy").get_data(as_text=True)
    text = _text(html)
    assert not re.search(r"Access records are kept for \d+ days", text), "a retention period the post does not apply"
    retention = _text(html[html.index('id="retention"') : html.index('id="figures"')])
    assert "Access records are not deleted" in retention and "at least 2555 days" in retention
    assert "hash chain" in retention  # and why
    monitoring = _text(html[html.index('id="monitoring"') : html.index('id="sharing"')])
    assert "2555 days" not in monitoring or "at least 2555 days" in monitoring
