"""Accounts: creation, passwords (argon2id), training records, activation. Every change writes an
access record in the same transaction."""
from __future__ import annotations

import datetime as dt
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appliance import audit
from appliance.db import write
from appliance.models import User, utcnow
from appliance.roles import ROLES

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,39}$")


class UserError(ValueError):
    pass


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(user: User, password: str) -> bool:
    try:
        ok = _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if ok and _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        user.save(only=[User.password_hash])
    return ok


def password_problem(password: str, min_length: int, username: str = "") -> str | None:
    if len(password) < min_length:
        return f"the password must have at least {min_length} characters"
    if username and username.lower() in password.lower():
        return "the password must not contain the username"
    if len(set(password)) < 5:
        return "the password must use at least 5 different characters"
    return None


def generate_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, ~120 bits


def add(actor: audit.Actor, *, username: str, display_name: str, organization: str, role: str,
        password: str, job_title: str = "", min_password_length: int = 12,
        must_change_password: bool = True) -> User:
    if not USERNAME.match(username):
        raise UserError(f"username {username!r} must be 2-40 lower-case letters, digits, '.', '_' or '-', "
                        "starting with a letter")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    problem = password_problem(password, min_password_length, username)
    if problem:
        raise UserError(problem)
    with write():
        if User.select().where(User.username == username).exists():
            raise UserError(f"an account named {username!r} already exists")
        user = User.create(username=username, display_name=display_name or username, organization=organization,
                           job_title=job_title, role=role, password_hash=hash_password(password),
                           must_change_password=must_change_password)
        audit.record("user.add", actor, objects=[f"user:{user.id}"],
                     details={"username": username, "role": role, "organization": organization,
                              "job_title": job_title})
    return user


def get(username: str) -> User:
    user = User.get_or_none(User.username == username)
    if user is None:
        raise UserError(f"no account named {username!r}")
    return user


def set_active(actor: audit.Actor, username: str, active: bool) -> User:
    with write():
        user = get(username)
        user.active = active
        user.updated_at = utcnow()
        user.save()
        audit.record("user.enable" if active else "user.disable", actor, objects=[f"user:{user.id}"],
                     details={"username": username})
    return user


def set_training(actor: audit.Actor, username: str, completed_on: dt.date, course: str,
                 expires_on: dt.date | None) -> User:
    if expires_on is not None and expires_on <= completed_on:
        raise UserError("the training expiry date must be after the completion date")
    if completed_on > utcnow().date():
        raise UserError("the training completion date is in the future")
    with write():
        user = get(username)
        user.training_completed_on = completed_on
        user.training_expires_on = expires_on
        user.training_course = course
        user.updated_at = utcnow()
        user.save()
        audit.record("user.training", actor, objects=[f"user:{user.id}"],
                     details={"username": username, "course": course, "completed_on": completed_on.isoformat(),
                              "expires_on": expires_on.isoformat() if expires_on else None})
    return user


def set_password(actor: audit.Actor, username: str, password: str, min_length: int,
                 must_change: bool, action: str = "user.password_reset") -> User:
    with write():
        user = get(username)
        problem = password_problem(password, min_length, username)
        if problem:
            raise UserError(problem)
        user.password_hash = hash_password(password)
        user.must_change_password = must_change
        user.failed_logins = 0
        user.locked_until = None
        user.updated_at = utcnow()
        user.save()
        audit.record(action, actor, objects=[f"user:{user.id}"], details={"username": username})
    return user


class SignInRefused(Exception):
    """Why a sign-in failed, in words fit to show the person at the keyboard."""


def authenticate(settings, username: str, password: str, client_addr: str) -> User:
    """Check a sign-in, apply the lock-out rule and record the outcome. Returns the account or
    raises SignInRefused. Unknown names and wrong passwords get the same answer. The failure is
    recorded (committed) before the refusal is raised."""
    web = settings.web
    username = (username or "").strip().lower()
    now = utcnow()
    refusal = None
    with write():
        user = User.get_or_none(User.username == username)
        actor = audit.Actor(username or "(empty)", user.organization if user else "", client_addr)
        target = [f"user:{user.id}"] if user else []
        if user is None:
            audit.record("auth.login_failed", actor, details={"reason": "unknown user"})
            refusal = "Wrong username or password."
        elif user.locked_until and user.locked_until > now:
            audit.record("auth.login_failed", actor, objects=target, details={"reason": "locked"})
            refusal = (f"This account is locked after repeated failed sign-ins until "
                       f"{user.locked_until.strftime('%H:%M UTC')}. Ask the ALPR administrator if you need "
                       "access sooner.")
        elif not check_password(user, password):
            user.failed_logins += 1
            locked = user.failed_logins >= web.failed_logins_before_lockout
            if locked:
                user.locked_until = now + dt.timedelta(minutes=web.lockout_minutes)
                user.failed_logins = 0
            user.save()
            audit.record("auth.login_failed", actor, objects=target,
                         details={"reason": "wrong password" + ("; account locked" if locked else "")})
            if locked:
                audit.record("auth.lockout", actor, objects=target,
                             details={"until": user.locked_until.isoformat(timespec="seconds") + "Z"})
                refusal = f"Too many failed sign-ins: this account is locked for {web.lockout_minutes} minutes."
            else:
                refusal = "Wrong username or password."
        elif not user.active:
            audit.record("auth.login_failed", actor, objects=target, details={"reason": "inactive"})
            refusal = "This account is deactivated. Ask the ALPR administrator."
        else:
            user.failed_logins = 0
            user.locked_until = None
            user.last_login_at = now
            user.save()
            audit.record("auth.login", actor, objects=target)
    if refusal:
        raise SignInRefused(refusal)
    return user


def actor_for(user: User, client_addr: str) -> audit.Actor:
    return audit.Actor(user.username, user.organization, client_addr)
