"""The start page after sign-in, and the areas in the navigation bar.

Each account starts where its work is: officers on the live view, dispatchers on the alerts.
Everyone else (and anyone whose training is not current) gets the start page, which says who they
are, what their role allows, and why not if it doesn't. At a post the ALPR administrator starts
there too: it says when the quarterly audit and the account review are due (appliance/duties.py),
which no other page would tell them, and their places of work are in the bar above it.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from flask_login import current_user

from appliance import duties
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

# Where "/" sends an account, the first that the app has and the account may use (a post: the live
# view, the alerts; headquarters: the search, the posts).
PLACES_OF_WORK = (
    ("live.index", "reads.view"),
    ("hq.search_form", "reads.search"),
    ("alerts.index", "alerts.view"),
    ("hq.posts", "health.view"),
)


@bp.get("/")
@signed_in
def index():
    user = current_user.user
    # At a post (the app with a live view) an administrator starts here, with the duties this page
    # shows; everyone else, and headquarters' administrators, go to their first place of work.
    at_post = "live.index" in current_app.view_functions
    if not (at_post and allowed(user, "accounts.manage")):
        for endpoint, permission in PLACES_OF_WORK:
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
        duties=_duties(user),
    )


def _duties(user) -> dict:
    """The recurring duties of this account's role, with where each is done (a page this app has)."""
    own = permissions(user.role)
    found = {}
    if "audit.view" in own:
        duty = duties.quarterly_audit(g.settings)
        found["quarterly-audit"] = (duty, _url("audit.quarterly", label=duty.period))
    if "accounts.manage" in own:
        found["account-review"] = (duties.account_review(g.settings), _url("admin.review"))
    return found


def _url(endpoint: str, **values) -> str | None:
    return url_for(endpoint, **values) if endpoint in current_app.view_functions else None


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
