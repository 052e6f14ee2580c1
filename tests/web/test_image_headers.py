"""The post's image routes (a read's, an alert's) answer as a JPEG no browser sniffs into something
else: image/jpeg, nosniff, and an inline Content-Disposition with a .jpg name."""

from __future__ import annotations

from tests.web.conftest import sign_in, state_purpose
from tests.web.test_alerts_web import alert  # noqa: F401 (fixture)
from tests.web.test_reads import officer, stored  # noqa: F401 (fixtures)


def assert_served_as_jpeg(resp, filename: str) -> None:
    assert resp.status_code == 200 and resp.data[:3] == b"\xff\xd8\xff"
    assert resp.headers["Content-Type"] == "image/jpeg"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers.get("Content-Disposition") == f'inline; filename="{filename}"'


def test_a_reads_images_are_served_as_inline_jpegs(client, stored, officer):  # noqa: F811
    read = stored["7ABC123"]
    sign_in(client, "officer.lee")
    state_purpose(client, "STOLEN-VEH", "2026-004512")
    for kind in ("crop", "frame"):
        assert_served_as_jpeg(client.get(f"/reads/{read.id}/image/{kind}"), f"read-{read.id}-{kind}.jpg")


def test_an_alerts_images_are_served_as_inline_jpegs(client, alert, trained):  # noqa: F811
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    assert_served_as_jpeg(client.get(f"/alerts/{alert.id}/image/crop"), f"read-{alert.read_id}-crop.jpg")
