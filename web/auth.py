"""Sign-in, sign-out and password change."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from appliance import users
from appliance.models import User
from web.access import SESSION_VERSION, AccountUser, public, signed_in

bp = Blueprint("auth", __name__, url_prefix="/auth")


class SignInForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=40)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=256)])


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired()])
    new = PasswordField("New password", validators=[DataRequired(), Length(max=256)])
    confirm = PasswordField(
        "New password again", validators=[DataRequired(), EqualTo("new", "The two entries differ.")]
    )


class SignOutForm(FlaskForm):
    pass


def safe_next(target: str | None) -> str:
    """Only a path on this site: no scheme, no host, no protocol-relative //host, no backslashes."""
    if not target:
        return url_for("home.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("home.index")
    return target


def client_addr() -> str:
    """The client's address; behind web.trusted_proxy the one the proxy forwarded (ProxyFix), so
    sign-ins are throttled by the client, not the proxy."""
    return request.remote_addr or "unknown"


def failed_sign_ins() -> users.FailedSignIns:
    """The app's memory of failed sign-ins by address, shared by its threads. In memory: the server
    is one process; a restart forgets it (users.FailedSignIns)."""
    web = g.settings.web
    return current_app.extensions.setdefault(
        "waypost.failed_sign_ins",
        users.FailedSignIns(web.failed_logins_per_address, web.failed_login_window_minutes * 60),
    )


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    form = SignInForm()
    if form.validate_on_submit():
        try:
            user = users.authenticate(
                g.settings, form.username.data, form.password.data, client_addr(), failed_sign_ins()
            )
        except users.AddressThrottled as refused:
            flash(str(refused), "error")
            return render_template("auth/login.html", form=form), 429, {"Retry-After": str(refused.retry_after_s)}
        except users.SignInRefused as refused:
            flash(str(refused), "error")
            return render_template("auth/login.html", form=form), 401
        session.clear()
        session.permanent = True
        session[SESSION_VERSION] = user.session_version
        login_user(AccountUser(user))
        if user.must_change_password:
            return redirect(url_for("auth.password"))
        return redirect(safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@signed_in
def logout():
    form = SignOutForm()
    if form.validate_on_submit():
        # Ends every session of the account, not only this browser's: a copy of the cookie taken
        # earlier would otherwise stay valid.
        users.sign_out(users.actor_for(current_user.user, client_addr()), current_user.id)
        logout_user()
        session.clear()
        flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
@signed_in
def password():
    form = PasswordForm()
    if form.validate_on_submit():
        user = current_user.user
        wrong = users.check_current_password(g.settings, user.id, form.current.data, client_addr(), failed_sign_ins())
        if wrong and not users.session_current(User.get_by_id(user.id), session.get(SESSION_VERSION)):
            # the wrong password locked the account, which ended its sessions, this one too
            logout_user()
            session.clear()
            flash(wrong, "error")
            return redirect(url_for("auth.login"))
        if wrong:
            flash(wrong, "error")
        elif form.new.data == form.current.data:
            flash("Choose a new password that differs from the current one.", "error")
        else:
            try:
                changed = users.set_password(
                    users.actor_for(user, client_addr()),
                    user.username,
                    form.new.data,
                    g.settings.web.min_password_length,
                    must_change=False,
                    action="auth.password_change",
                )
            except users.UserError as exc:
                message = str(exc)  # never holds the password (users.password_problem)
                flash(message[:1].upper() + message[1:] + ".", "error")
            else:
                # Every other session of the account has ended; this one carries on under the new version.
                session[SESSION_VERSION] = changed.session_version
                flash("Your password is changed.", "info")
                return redirect(url_for("home.index"))
    return render_template("auth/password.html", form=form, min_length=g.settings.web.min_password_length)
