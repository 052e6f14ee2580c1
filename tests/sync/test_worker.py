"""The post's background pusher, started by the service when sync.enabled."""

from __future__ import annotations

import threading
import time

from appliance.service import PostService
from sync import post
from tests.sync.conftest import add_reads, hq_reads, post_reads


def _enabled(settings):
    return settings.model_copy(
        update={
            "sync": settings.sync.model_copy(update={"enabled": True}),
            "web": settings.web.model_copy(update={"port": 0}),
        }
    )


def wait_for(check, timeout_s=15):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_the_service_pushes_in_the_background_when_enabled(settings, db, hq_server):
    add_reads(settings, 3)
    db.close()
    service = PostService(_enabled(settings), with_capture=False).start()
    try:
        assert service.pusher is not None
        assert wait_for(lambda: len(hq_reads(settings.post.id)) == 3)
    finally:
        service.stop()
    assert hq_reads(settings.post.id) == post_reads()


def test_the_service_starts_no_pusher_when_disabled(settings, db):
    db.close()
    service = PostService(
        settings.model_copy(update={"web": settings.web.model_copy(update={"port": 0})}), with_capture=False
    ).start()
    try:
        assert service.pusher is None and "sync" not in [t.name for t in service._threads]
    finally:
        service.stop()


def test_the_pusher_backs_off_while_headquarters_is_unreachable(settings, db):
    stop = threading.Event()
    pusher = post.Pusher(_enabled(settings), stop)
    waits = []
    stop.wait = lambda s: (waits.append(s), stop.set() if len(waits) >= 3 else None)
    db.close()
    pusher.run()
    assert pusher.failures == 3 and "did not answer" in pusher.last_error
    assert 2.5 <= waits[0] <= 5 and 5 <= waits[1] <= 10 and 10 <= waits[2] <= 20
