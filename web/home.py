"""The start page after sign-in: who you are, what your role allows, and why not if it doesn't."""
from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from appliance.roles import PLATE_DATA, ROLES, permissions
from web.access import signed_in

bp = Blueprint("home", __name__)


@bp.get("/")
@signed_in
def index():
    user = current_user.user
    needs_training = bool(permissions(user.role) & PLATE_DATA) and not user.training_current()
    return render_template("home/index.html", user=user, role=ROLES.get(user.role, {}),
                           needs_training=needs_training, permissions=sorted(permissions(user.role)))
