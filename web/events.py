"""Server-sent events from the post's event bus, for the live view and the alerts page.

One loop serves both: it sends what `render(event)` makes of each bus event (None: not for this
viewer), and it ends, telling the page why, when the service stops, when the browser has left
(waitress request lookahead), when the session's idle time has passed (a page left open must not
outlive the idle sign-out) or when the account may no longer see what it streams or its session has
ended (checked every RECHECK_S seconds). `render` writes its access record before returning the text to send.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

from flask import Response, abort, current_app, g, request, session, stream_with_context
from flask_login import current_user

from appliance import users
from appliance.db import connection
from appliance.models import User
from appliance.roles import allowed
from web.access import SESSION_VERSION, actor

RECHECK_S = 15


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
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    return resp
