"""Fixtures shared by every test package: real settings, a real SQLite file, the real app."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from appliance import config, users
from appliance import db as dbmod
from appliance.audit import system_actor
from appliance.bootstrap import bootstrap
from appliance.cli.context import OPERATOR_ENV, PASSWORD_FILE_ENV
from appliance.models import User
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


OPERATOR_PASSWORD = "operator's own passphrase 2026"


def operator_env(settings: config.Settings, username: str = "op.admin", role: str = "admin", trained: bool = True):
    """The environment that names `username` as the operator of a `waypost` command (`--as`), with
    its password in a 0600 file, as a script would run it. The account is made (active, its own
    password, training current unless `trained` is false) in the settings' database if missing;
    the database must exist (bootstrap or `waypost init` first)."""
    dbmod.open_database(settings)
    with dbmod.connection():
        if User.get_or_none(User.username == username) is None:
            users.add(
                system_actor(settings),
                username=username,
                display_name=f"Operator {username}",
                organization=settings.post.agency,
                role=role,
                password=OPERATOR_PASSWORD,
                must_change_password=False,
            )
            if trained:
                today = dt.date.today()
                users.set_training(
                    system_actor(settings),
                    username,
                    today - dt.timedelta(days=30),
                    "ALPR policy course",
                    today + dt.timedelta(days=335),
                )
    secret = Path(settings.data_dir).parent / f"{username}.password"
    secret.write_text(OPERATOR_PASSWORD + "\n")
    os.chmod(secret, 0o600)
    return {OPERATOR_ENV: username, PASSWORD_FILE_ENV: str(secret)}
