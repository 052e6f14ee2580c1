"""Server-sent events from the post's event bus, for the live view and the alerts page.

One loop serves both: it sends what `render(event)` makes of each bus event (None: not for this
viewer), and it ends, telling the page why, when the service stops, when the browser has left
(waitress request lookahead), when the session's idle time has passed (a page left open must not
outlive the idle sign-out) or when the account may no longer see what it streams or its session has
ended (checked every RECHECK_S seconds). `render` writes its access record before returning the text to send.

Each open stream holds one of waitress's threads for as long as it runs (up to the session's idle
time), so streams are capped (StreamSlots): web.streams_per_account per account, and half of
web.threads for the post, leaving the other half for pages and sign-in whatever is open. One more
is answered 503 with Retry-After; live.js then tries again later, waiting longer each time. Caps
rather than serving streams outside waitress's pool: waitress has no way to hand a connection
to another loop, and the few streams a post's officers and dispatchers keep open fit in the pool.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

from flask import Response, abort, current_app, g, request, session, stream_with_context
from flask_login import current_user

from appliance import users
from appliance.db import connection
from appliance.models import User
from appliance.roles import allowed
from web.access import SESSION_VERSION, actor

RECHECK_S = 15
RETRY_AFTER_S = 15  # a stream ends when its page is closed or reloaded, or at the idle time: seconds to minutes


class StreamSlots:
    """The streams open now, per account and in all; one per app, shared by its threads."""

    def __init__(self, per_account: int, total: int):
        self.per_account = per_account
        self.total = total
        self._lock = threading.Lock()
        self._open: Counter[int] = Counter()

    def take(self, user_id: int) -> str | None:
        """A slot for the account: None when it has one, else why not (fit to show)."""
        with self._lock:
            if self._open[user_id] >= self.per_account:
                return (
                    f"this account already has {self.per_account} live pages open, the most one account may have "
                    "(web.streams_per_account): close one"
                )
            if self._open.total() >= self.total:
                return (
                    f"the post is serving {self.total} live pages, the most it serves at once (half of web.threads, "
                    "so that pages and sign-in keep the rest)"
                )
            self._open[user_id] += 1
            return None

    def give_back(self, user_id: int) -> None:
        with self._lock:
            self._open[user_id] -= 1
            if self._open[user_id] <= 0:
                del self._open[user_id]


def slots() -> StreamSlots:
    web = g.settings.web
    return current_app.extensions.setdefault(
        "waypost.stream_slots", StreamSlots(web.streams_per_account, max(1, web.threads // 2))
    )


def sse(event_id, kind: str, payload: str) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {payload}\n\n"


def stream(permission: str, render: Callable[[dict], str | None]) -> Response:
    service = current_app.config.get("WAYPOST_SERVICE")
    if service is None:
        abort(503)
    bus = service.bus
    stopping = getattr(service, "stop_event", None)
    who = actor()
    user_id = current_user.user.id
    session_version = session.get(SESSION_VERSION)
    idle_s = g.settings.web.session_idle_minutes * 60
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # werkzeug LocalProxy
    gone = request.environ.get("waitress.client_disconnected", lambda: False)
    capped = slots()
    refused = capped.take(user_id)
    if refused:
        app.logger.warning("live stream of %s refused: %s", who.username, refused)
        return Response(
            f"Live updates refused for now: {refused}. The page tries again by itself.\n",
            status=503,
            mimetype="text/plain",
            headers={"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"},
        )

    def still_allowed() -> bool:
        """Role, training and activity, and the session itself: a sign-out (in another tab), a
        password change or reset ends the stream too."""
        with connection():
            user = User.get_or_none(User.id == user_id)
            return users.session_current(user, session_version) and allowed(user, permission)

    @stream_with_context
    def events():
        q = bus.subscribe()
        started = last_check = time.monotonic()
        try:
            yield "retry: 3000\n\n"
            while (stopping is None or not stopping.is_set()) and not gone():  # shutdown waits for this thread
                try:
                    event = q.get(timeout=0.5)
                except queue.Empty:
                    event = None
                if event is not None:
                    text = render(event)
                    if text:
                        yield text
                now = time.monotonic()
                if now - started > idle_s:
                    yield 'event: end\ndata: {"reason": "idle"}\n\n'
                    return
                if now - last_check > RECHECK_S:
                    last_check = now
                    if not still_allowed():
                        yield 'event: end\ndata: {"reason": "access"}\n\n'
                        return
                    yield ": keep-alive\n\n"
        finally:
            bus.unsubscribe(q)
            app.logger.debug("event stream of %s closed", who.username)

    resp = Response(events(), mimetype="text/event-stream")  # type: ignore[call-arg]  # Flask's stubs: a stream_with_context function takes one argument
    # On close, not in the generator's finally: a response never iterated (a HEAD request, a
    # connection gone before the first byte) closes without running the generator at all.
    resp.call_on_close(lambda: capped.give_back(user_id))
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
