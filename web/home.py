"""The start page after sign-in, and the areas in the navigation bar.

Each account starts where its work is: officers and administrators who may see plate data on
the live view, dispatchers on the alerts. Everyone else (and anyone whose training is not current)
gets the start page, which says who they are, what their role allows, and why not if it doesn't.
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_login import current_user

from appliance.roles import PLATE_DATA, ROLES, allowed, permissions
from web.access import signed_in
from web.admin import PERMISSION_LABELS

bp = Blueprint("home", __name__)

# (key, label, endpoints, permission), in the order they appear in the bar; the first endpoint of
# the area that the app has is the link.
AREAS = (
    ("live", "Live", ("live.index",), "reads.view"),
    ("search", "Search", ("reads.search_form", "reads.search", "hq.search_form"), "reads.search"),
    ("posts", "Posts", ("hq.posts",), "health.view"),
    ("alerts", "Alerts", ("alerts.index",), "alerts.view"),
    ("holds", "Holds", ("holds.index",), "holds.request"),
    ("sharing", "Sharing", ("sharing.index",), "sharing.request"),
    ("audit", "Audit", ("audit.index",), "audit.view"),
    ("admin", "Accounts", ("admin.accounts",), "accounts.manage"),
)


@bp.get("/")
@signed_in
def index():
    user = current_user.user
    # The first place of work this app has (a post: live view, alerts; headquarters: search, posts).
    for endpoint, permission in (
        ("live.index", "reads.view"),
        ("hq.search_form", "reads.search"),
        ("alerts.index", "alerts.view"),
        ("hq.posts", "health.view"),
    ):
        if endpoint in current_app.view_functions and allowed(user, permission):
            return redirect(url_for(endpoint))
    needs_training = bool(permissions(user.role) & PLATE_DATA) and not user.training_current()
    # An account administrator records training, their own included (admin.account allows it).
    own_account_url = (
        url_for("admin.account", user_id=user.id)
        if "admin.account" in current_app.view_functions and allowed(user, "accounts.manage")
        else None
    )
    return render_template(
        "home/index.html",
        user=user,
        role=ROLES.get(user.role, {}),
        needs_training=needs_training,
        own_account_url=own_account_url,
        permissions=sorted(permissions(user.role)),
        permission_labels=PERMISSION_LABELS,
    )


@bp.app_context_processor
def _navigation():
    def nav_links() -> list[dict]:
        """The areas this account may use now; an area whose blueprint is not installed is left out."""
        if not current_user.is_authenticated:
            return []
        user = current_user.user
        links = []
        for key, label, endpoints, permission in AREAS:
            endpoint = next((e for e in endpoints if e in current_app.view_functions), None)
            if endpoint and allowed(user, permission):
                links.append(
                    {
                        "key": key,
                        "label": label,
                        "url": url_for(endpoint),
                        "current": request.blueprint == endpoint.partition(".")[0],
                    }
                )
        return links

    return {"nav_links": nav_links}
