"""Every HTTP entry point. The post's web UI is create_app(settings), one blueprint per area
(module = blueprint = URL prefix), with the post's pull endpoint for headquarters (web/sync.py);
headquarters' app, pages and sync API are web/hq/; the server that runs either is web/server.py."""

from __future__ import annotations

import datetime as dt
import sqlite3

from flask import Flask, g, redirect, render_template, request, session, url_for
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFProtect
from peewee import OperationalError
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from appliance import db, users
from appliance.bootstrap import secret_key
from appliance.clock import zone_of
from appliance.config import Settings
from appliance.models import User
from sync.protocol import MAX_INT
from web import admin, alerts, audit, auth, clock, health, holds, home, live, policy, purpose, reads, sharing, sync
from web.access import SESSION_VERSION, AccountUser

csrf = CSRFProtect()

RETRY_AFTER_S = 5

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class BoundedIntegerConverter(IntegerConverter):
    """<int:...> in every route of both apps (bound_ids). The ids in URLs are row ids, which SQLite
    and PostgreSQL keep in a signed 64-bit integer (MAX_INT): a larger number is no route at all,
    404 before any view runs, where the database driver raised OverflowError (a 500 page)."""

    def __init__(self, map, *args, **kwargs) -> None:
        super().__init__(map, *args, **kwargs)
        self.max = MAX_INT if self.max is None else min(self.max, MAX_INT)


def bound_ids(app: Flask) -> None:
    """Register the bounded <int:...> converter; before any route is added (a rule takes its
    converter when it is added)."""
    app.url_map.converters["int"] = BoundedIntegerConverter


def create_app(settings: Settings, service=None) -> Flask:
    """`service` is the running PostService (live status, events); None in tests of pages alone."""
    app = base_app(settings, service)
    for area in (admin, alerts, auth, health, home, reads, live, holds, policy, purpose, sharing, audit, sync):
        app.register_blueprint(area.bp)
    return app


def base_app(settings: Settings, service=None) -> Flask:
    """The application without its areas: sessions, sign-in, CSRF, the accounts database, headers.
    The post (create_app) and headquarters (web.hq.create_hq_app) each add their blueprints."""
    app = Flask(__name__)
    bound_ids(app)
    app.config.update(
        SECRET_KEY=secret_key(settings),
        WAYPOST=settings,
        WAYPOST_SERVICE=service,
        SESSION_COOKIE_NAME="waypost_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.web.secure_cookies,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=settings.web.session_idle_minutes),
        SESSION_REFRESH_EACH_REQUEST=True,  # the lifetime counts from the last request: an idle timeout
        REMEMBER_COOKIE_DURATION=dt.timedelta(seconds=0),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        WAYPOST_ZONE=zone_of(settings),  # pages show times in it; everything is stored in UTC
    )
    if settings.web.trusted_proxy:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]  # Flask's documented middleware pattern
    db.open_database(settings)
    csrf.init_app(app)

    login = LoginManager(app)
    login.login_view = "auth.login"
    login.login_message = "Sign in to continue."
    login.session_protection = "strong"

    @login.user_loader
    def load_user(user_id: str):
        # A session signed in under an older session version (signed out, password changed or reset,
        # deactivated) is refused even though its cookie is still validly signed.
        user = User.get_or_none(User.id == int(user_id))
        return (
            AccountUser(user)
            if user is not None and users.session_current(user, session.get(SESSION_VERSION))
            else None
        )

    @app.before_request
    def _open_db():
        db.database.connect(reuse_if_open=True)
        g.settings = settings

    @app.before_request
    def _force_password_change():
        if (
            current_user.is_authenticated
            and current_user.must_change_password
            and request.endpoint not in ("auth.password", "auth.logout", "static", "health.index")
        ):
            return redirect(url_for("auth.password"))

    @app.teardown_request
    def _close_db(exc):
        if not db.database.is_closed():
            db.database.close()

    @app.after_request
    def _headers(resp):
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if request.endpoint != "static":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(OperationalError)
    @app.errorhandler(sqlite3.OperationalError)
    def _busy(exc):
        """A write lock held longer than the busy timeout (a large sync batch, a purge, an import):
        the transaction that would have read and recorded was never begun or was rolled back, so
        nothing was shown and nothing recorded. Say so, and when to try again; not a 500."""
        if not is_busy(exc):
            raise exc
        app.logger.warning("%s %s: the database stayed locked (%s); answered 503", request.method, request.path, exc)
        try:
            body = render_template("busy.html", retry_after_s=RETRY_AFTER_S)
        except Exception:  # the page itself needs the database (the signed-in account)
            app.logger.exception("rendering the busy page")
            body = f"The database is busy: try again in {RETRY_AFTER_S} seconds. Nothing was shown or recorded.\n"
        return body, 503, {"Retry-After": str(RETRY_AFTER_S)}

    app.add_template_filter(clock.localtime, "localtime")

    @app.context_processor
    def _globals():
        return {"post": settings.post, "time_zone": clock.zone_label(app.config["WAYPOST_ZONE"])}

    return app


def is_busy(exc: Exception) -> bool:
    """SQLite's SQLITE_BUSY ("database is locked") or SQLITE_LOCKED ("database table is locked")."""
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text or "database is busy" in text
