"""/health and the live view's status strip say when the disk fills at the current rate
(issue 19): the real app with the post's service object, over a real store of reads."""

from __future__ import annotations

import shutil

from appliance.service import PostService
from tests.appliance.test_capacity import stored_over_days
from tests.conftest import make_settings
from tests.web.conftest import sign_in
from web import create_app


def app_for(settings):
    app = create_app(settings, service=PostService(settings, with_capture=False))
    app.config["TESTING"] = True
    return app


def test_health_and_strip_show_disk_full_in_days(settings, db, trained):
    stored_over_days(settings, {d: 2 for d in range(3)})
    client = app_for(settings).test_client()
    disk = client.get("/health").get_json()["disk"]
    assert disk["full_in_days"] > 0 and disk["bytes_per_day"] > 300_000 and not disk["fills_before_retention"]

    free_mb = shutil.disk_usage(settings.data_dir).free // 2**20
    tight = make_settings(settings.data_dir, storage__min_free_mb=free_mb - 2, retention__read_days=3650)
    client = app_for(tight).test_client()
    answer = client.get("/health").get_json()
    assert answer["status"] == "degraded" and answer["disk"]["fills_before_retention"] is True
    (problem,) = [p for p in answer["problems"] if p.startswith("disk full in")]
    assert "days at the current rate, before retention (3650 days) frees space" in problem

    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    html = client.get("/live").get_data(as_text=True)
    strip = html[html.index('id="disk-state"') : html.index("</span>", html.index('id="disk-state"'))]
    assert "state bad" in html[html.index('id="disk-state"') - 40 : html.index('id="disk-state"')]
    assert "days at the current rate, before retention (3650 days) frees space" in strip, strip
