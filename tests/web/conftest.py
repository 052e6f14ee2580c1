import re

import pytest

from appliance import users
from appliance.service import system_actor

PASSWORD = "correct horse battery staple"


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or \
        re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def sign_in(client, username, password=PASSWORD, next_url=None):
    page = client.get("/auth/login")
    url = "/auth/login" + (f"?next={next_url}" if next_url else "")
    return client.post(url, data={"username": username, "password": password,
                                  "csrf_token": csrf(page.get_data(as_text=True))})


@pytest.fixture
def account(settings, db):
    """Make an account: account(username, role, must_change=False)."""
    def make(username="officer.lee", role="officer", must_change=False):
        return users.add(system_actor(settings), username=username, display_name=username.title(),
                         organization=settings.post.agency, role=role, password=PASSWORD,
                         must_change_password=must_change)
    return make


@pytest.fixture
def client(app):
    return app.test_client()
