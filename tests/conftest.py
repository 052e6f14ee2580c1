"""Fixtures shared by every test package: real settings, a real SQLite file, the real app."""

from __future__ import annotations

import pytest

from appliance import config
from appliance import db as dbmod
from appliance.bootstrap import bootstrap
from web import create_app
from web.server import WebServer


def make_settings(root, **overrides) -> config.Settings:
    env = {"WAYPOST_STORAGE__DATA_DIR": str(root), "WAYPOST_STORAGE__MIN_FREE_MB": "0"}
    for key, value in overrides.items():
        env[f"WAYPOST_{key.upper()}"] = str(value)
    return config.load(None, environ=env)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data")


@pytest.fixture
def db(settings):
    """A migrated database file with the post's identity, connection open for the test."""
    bootstrap(settings, create_admin=False)
    with dbmod.connection() as database:
        yield database


@pytest.fixture
def app(settings, db):
    application = create_app(settings)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def live_server(app):
    """The app served by waitress on 127.0.0.1, as `waypost run` serves it. Yields the base URL."""
    server = WebServer(app, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()
