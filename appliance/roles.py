"""Roles and what they may do: the one table every route and command checks against.

A permission that touches plate data is only granted to an account that is active AND whose
training record is current (Civil Code 1798.90.51(b); the policies' "no use before training").
"""

from __future__ import annotations

# Permissions that expose ALPR data (plates, images, reads, alerts).
# Sharing too: a request names the plate and period another agency wants, and its approval and
# export hand that data over, so only trained accounts record, review or export one. And the
# access log: each search's record holds the plate searched and its case number.
PLATE_DATA = frozenset(
    {
        "reads.search",
        "reads.view",
        "alerts.view",
        "alerts.acknowledge",
        "alerts.confirm",
        "holds.request",
        "sharing.request",
        "sharing.approve",
        "audit.view",
    }
)

ROLES: dict[str, dict] = {
    "admin": {
        "label": "ALPR administrator",
        "permissions": {
            "accounts.manage",
            "settings.manage",
            "audit.view",
            "sharing.request",
            "sharing.approve",
            "retention.manage",
            "hotlists.manage",
            "reads.search",
            "reads.view",
            "alerts.view",
            "alerts.acknowledge",
            "alerts.confirm",
            "holds.request",
            "holds.release",
            "health.view",
        },
    },
    "officer": {
        "label": "Officer",
        "permissions": {
            "reads.search",
            "reads.view",
            "alerts.view",
            "alerts.acknowledge",
            "alerts.confirm",
            "holds.request",
            "sharing.request",
        },
    },
    "dispatcher": {
        "label": "Dispatcher",
        "permissions": {"alerts.view", "alerts.acknowledge"},
    },
    "auditor": {
        "label": "Auditor",
        "permissions": {"audit.view"},
    },
    "technician": {
        "label": "Technician",
        "permissions": {"health.view"},
    },
}


def permissions(role: str) -> frozenset[str]:
    return frozenset(ROLES.get(role, {}).get("permissions", ()))


def allowed(user, permission: str, today=None) -> bool:
    """May this user (a models.User) exercise this permission now?"""
    if user is None or not user.active:
        return False
    if permission not in permissions(user.role):
        return False
    if permission in PLATE_DATA and not user.training_current(today):
        return False
    return True
