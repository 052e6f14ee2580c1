"""Administration pages. The roles table is the one in appliance/roles.py, shown as it is."""
from __future__ import annotations

from flask import Blueprint, render_template

from appliance.roles import PLATE_DATA, ROLES
from web.access import requires

bp = Blueprint("admin", __name__, url_prefix="/admin")

PERMISSION_LABELS = {
    "reads.search": "Search reads by plate",
    "reads.view": "View reads, their images and the live view",
    "alerts.view": "See hotlist alerts",
    "alerts.acknowledge": "Acknowledge alerts (relay as unconfirmed)",
    "alerts.confirm": "Record the verification of an alert",
    "holds.request": "Place a legal hold",
    "holds.release": "Release a legal hold",
    "accounts.manage": "Accounts and training records",
    "settings.manage": "Settings",
    "audit.view": "Access log, audits and reports",
    "sharing.approve": "Approve data-sharing requests",
    "retention.manage": "Retention and purges",
    "hotlists.manage": "Hotlists and custom entries",
    "health.view": "Post health and maintenance",
}


@bp.get("/roles")
@requires("accounts.manage")
def roles():
    every = sorted({p for r in ROLES.values() for p in r["permissions"]},
                   key=lambda p: (p not in PLATE_DATA, p))
    return render_template("admin/roles.html", roles=ROLES, permissions=every, labels=PERMISSION_LABELS,
                           plate_data=PLATE_DATA)
