"""Who may reach a route. Every view declares its permission with @requires (or @public); a test
walks the URL map and fails on any route that declares neither."""

from __future__ import annotations

from functools import wraps

from flask import current_app, render_template, request
from flask_login import current_user, login_required

from appliance import audit
from appliance.models import User
from appliance.roles import PLATE_DATA, allowed, permissions

SESSION_VERSION = "session_version"  # the key in the session: the account's version at sign-in


def public(view):
    view.permission = None
    return view


def signed_in(view):
    """Any signed-in account (its own start page, password, sign-out): no ALPR data behind it."""
    wrapped = login_required(view)
    wrapped.permission = "signed-in"
    return wrapped


def requires(permission: str):
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not current_user.is_authenticated:
                return current_app.login_manager.unauthorized()
            user = current_user.user
            if not allowed(user, permission):
                reason = "role"
                if permission in permissions(user.role) and permission in PLATE_DATA:
                    reason = "training"
                return render_template("forbidden.html", permission=permission, reason=reason), 403
            return view(*args, **kwargs)

        wrapper.permission = permission
        return wrapper

    return decorate


def actor() -> audit.Actor:
    user = current_user.user
    return audit.Actor(user.username, user.organization, request.remote_addr or "unknown")


class AccountUser:
    """flask-login's view of an account: wraps the row, never caches permissions."""

    def __init__(self, user: User):
        self.user = user

    def __getattr__(self, name):
        return getattr(self.user, name)

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return str(self.user.id)
