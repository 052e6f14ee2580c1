"""The headquarters web application (`waypost hq serve`).

- The sync API (/hq/v1/..., web/hq/api.py): what the posts push to and ask for, signed by them.
- With `settings`: the people's side, on the post's own machinery (web.base_app: sign-in, roles,
  training, CSRF, the hash-chained access log in headquarters' accounts database under
  settings.data_dir): the posts page, the officers' search across every post (web/hq/pages.py),
  account administration and the access log pages.

Without settings the app is the API alone: tests that run a post in the same process use it, as
the accounts database of the post and of headquarters would otherwise share one binding.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, abort, redirect, request, url_for

from appliance.config import Settings
from sync import hq
from web import admin, audit, auth, base_app, bound_ids, csrf, health, home, policy, purpose
from web.access import public
from web.hq import api, pages
from web.server import BODY_TOO_LARGE


def create_hq_app(
    database: str,
    max_batch_bytes: int = hq.DEFAULT_MAX_BATCH_BYTES,
    settings: Settings | None = None,
    after_store: Callable[[], None] | None = None,
    refusals: hq.RefusalLog | None = None,
) -> Flask:
    """`database`: headquarters' SQLite file or postgresql:// URL. `settings`: the configuration
    whose data_dir holds the accounts database (made by `waypost init` or `waypost hq serve`).
    `after_store` runs between storing a batch and answering for it (a fault test's power cut).
    `refusals`: how refused batches are logged (default: folded, hq.RefusalLog())."""
    if settings is None:
        app = Flask("waypost_hq")
        bound_ids(app)  # base_app does it for the full app
    else:
        app = base_app(settings)
        for area in (auth, admin, audit, health, home, policy, purpose, pages):
            app.register_blueprint(area.bp)
    hq.open_hq(database)

    @app.before_request
    def _connect_hq():
        hq.hq_database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close_hq(exc):
        if not hq.hq_database.is_closed():
            hq.hq_database.close()

    @app.before_request
    def _body_too_large():
        # waitress refused the body unread (web/server.py): the batch endpoint answers for it itself
        if BODY_TOO_LARGE in request.environ and request.endpoint != "hq_api.batches":
            abort(413)

    sync_api = api.api_blueprint(max_batch_bytes, after_store, refusals or hq.RefusalLog())
    if settings is not None:
        csrf.exempt(sync_api)
    app.register_blueprint(sync_api)

    @app.get("/")
    @public
    def root():
        if settings is None:
            abort(404)
        return redirect(url_for("home.index"))

    return app
