"""Accounts: creation, passwords (argon2id), training records, activation. Every change writes an
access record in the same transaction."""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appliance import audit
from appliance.db import write
from appliance.models import User, utcnow
from appliance.roles import ROLES

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,39}$")
# NIST SP 800-63B 5.1.1.2: a chosen password is compared with values known to be common. The file
# says where its list comes from; it is package data (pyproject.toml), so an installed post has it.
COMMON_PASSWORDS_FILE = Path(__file__).resolve().parent / "common_passwords.txt"


class UserError(ValueError):
    """A refused change, in words fit to show. `field` names the input it is about, when one is
    (a form puts the message beside that field)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _hash_matches(password_hash: str, password: str) -> bool:
    """The one place a password is checked against a hash (argon2's verify: the slow part)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password nobody knows, with the current parameters: an unknown username
    or a locked account is checked against it, so the answer takes as long as for a real account."""
    return _hasher.hash(secrets.token_urlsafe(32))


def check_password(user: User, password: str) -> bool:
    ok = _hash_matches(user.password_hash, password)
    if ok and _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        user.save(only=[User.password_hash])
    return ok


def end_sessions(user: User) -> None:
    """Every session signed in to this account stops working at its next request (and an open live
    stream at its next check). The caller saves the row, inside its write transaction."""
    user.session_version += 1


def session_current(user: User | None, version) -> bool:
    """Whether a session signed in under `version` may still act for `user`."""
    return user is not None and user.active and version == user.session_version


def sign_out(actor: audit.Actor, user_id: int) -> None:
    """End every session of the account (a copy of the session cookie taken before would still be
    valid otherwise) and record the sign-out, in one transaction."""
    with write():
        user = User.get_by_id(user_id)
        end_sessions(user)
        user.save(only=[User.session_version])
        audit.record("auth.logout", actor, objects=[f"user:{user.id}"])


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list, lower-case, read once per process."""
    with open(COMMON_PASSWORDS_FILE, encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip() and not line.startswith("#"))


def password_problem(password: str, min_length: int, username: str = "") -> str | None:
    """Why a new password is refused, or None. The reason never repeats the password: it is shown
    on a page and may be flashed into the (signed, not encrypted) session cookie."""
    if len(password) < min_length:
        return f"the password must have at least {min_length} characters"
    if username and username.lower() in password.lower():
        return "the password must not be the username or contain it"
    if len(set(password)) < 5:
        return "the password must use at least 5 different characters"
    if password.lower() in common_passwords():
        return (
            "the password is one of the most common passwords (found in breached password lists, so "
            "guessed first): choose another, e.g. several unrelated words"
        )
    return None


def generate_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, ~120 bits


def add(
    actor: audit.Actor,
    *,
    username: str,
    display_name: str,
    organization: str,
    role: str,
    password: str,
    job_title: str = "",
    min_password_length: int = 12,
    must_change_password: bool = True,
) -> User:
    if not USERNAME.match(username):
        raise UserError(
            f"username {username!r} must be 2-40 lower-case letters, digits, '.', '_' or '-', starting with a letter"
        )
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    problem = password_problem(password, min_password_length, username)
    if problem:
        raise UserError(problem)
    with write():
        if User.select().where(User.username == username).exists():
            raise UserError(f"an account named {username!r} already exists")
        user = User.create(
            username=username,
            display_name=display_name or username,
            organization=organization,
            job_title=job_title,
            role=role,
            password_hash=hash_password(password),
            must_change_password=must_change_password,
        )
        audit.record(
            "user.add",
            actor,
            objects=[f"user:{user.id}"],
            details={"username": username, "role": role, "organization": organization, "job_title": job_title},
        )
    return user


def get(username: str) -> User:
    user = User.get_or_none(User.username == username)
    if user is None:
        raise UserError(f"no account named {username!r}")
    return user


def set_active(actor: audit.Actor, username: str, active: bool, reason: str = "") -> User:
    """Deactivate or reactivate. Nobody deactivates their own account (another administrator must),
    and the last active administrator stays: without one, nobody could create accounts or record
    training. Both are checked inside the transaction so two administrators cannot race past them."""
    with write():
        user = get(username)
        if not active and user.active:
            if actor.username == user.username:
                raise UserError("you cannot deactivate your own account; another administrator must do it")
            if user.role == "admin" and not (
                User.select()
                .where(
                    (User.role == "admin")
                    & (User.active == True)  # noqa: E712
                    & (User.id != user.id)
                )
                .exists()
            ):
                raise UserError(
                    f"{username!r} is the last active administrator; create or reactivate another "
                    "administrator account first"
                )
        if not active and user.active:
            end_sessions(user)
        user.active = active
        user.updated_at = utcnow()
        user.save()
        details = {"username": username}
        if reason:
            details["reason"] = reason
        audit.record("user.enable" if active else "user.disable", actor, objects=[f"user:{user.id}"], details=details)
    return user


COURSE_MIN_LENGTH = 5
TRAINING_VALID_YEARS = 2  # the longest a record may run before the course is taken again


def latest_expiry(completed_on: dt.date) -> dt.date:
    """The last day a training completed on `completed_on` may be recorded as valid."""
    year = completed_on.year + TRAINING_VALID_YEARS
    try:
        return completed_on.replace(year=year)
    except ValueError:  # 29 February, in a year without one
        return dt.date(year, 2, 28)


def training_problem(completed_on: dt.date, course: str, expires_on: dt.date | None) -> UserError | None:
    """Why a training record is refused, or None. A record is what lets an account reach plate
    data, so it must name a course someone can look up and lapse so that the course is taken again:
    "x" or "1" as a course, or an expiry decades away, would be training in name only."""
    if len(course) < COURSE_MIN_LENGTH:
        return UserError(
            f"the training course must have at least {COURSE_MIN_LENGTH} characters: give its name as in the "
            "training record, e.g. POST ALPR 101",
            "course",
        )
    if not any(c.isalpha() for c in course):
        return UserError(
            f"the training course {course!r} is only digits or punctuation: give its name as in the "
            "training record, e.g. POST ALPR 101",
            "course",
        )
    if completed_on > utcnow().date():
        return UserError("the training completion date is in the future", "completed_on")
    if expires_on is None:
        return UserError("the training expiry date is required", "expires_on")
    if expires_on <= completed_on:
        return UserError("the training expiry date must be after the completion date", "expires_on")
    if expires_on > latest_expiry(completed_on):
        return UserError(
            f"the training expiry date {expires_on} is more than two years after the completion date "
            f"{completed_on}: a record runs at most two years, so give {latest_expiry(completed_on)} or earlier",
            "expires_on",
        )
    return None


def set_training(
    actor: audit.Actor, username: str, completed_on: dt.date, course: str, expires_on: dt.date | None
) -> User:
    """Record an account's training (`expires_on` None is refused: every record lapses)."""
    course = course.strip()
    problem = training_problem(completed_on, course, expires_on)
    if problem:
        raise problem
    with write():
        user = get(username)
        user.training_completed_on = completed_on
        user.training_expires_on = expires_on
        user.training_course = course
        user.updated_at = utcnow()
        user.save()
        audit.record(
            "user.training",
            actor,
            objects=[f"user:{user.id}"],
            details={
                "username": username,
                "course": course,
                "completed_on": completed_on.isoformat(),
                "expires_on": expires_on.isoformat() if expires_on else None,
            },
        )
    return user


def set_password(
    actor: audit.Actor,
    username: str,
    password: str,
    min_length: int,
    must_change: bool,
    action: str = "user.password_reset",
) -> User:
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
        end_sessions(user)  # whoever knew the old password, or holds a session, is signed out
        user.save()
        audit.record(action, actor, objects=[f"user:{user.id}"], details={"username": username})
    return user


def one_time_password(username: str, min_length: int) -> str:
    """A generated password that passes password_problem() for this account (random text can
    contain a short username, so draw again when it does)."""
    while True:
        password = secrets.token_urlsafe(max(min_length, 20))[: max(min_length, 20)]
        if password_problem(password, min_length, username) is None:
            return password


def create(
    actor: audit.Actor,
    *,
    username: str,
    display_name: str,
    organization: str,
    role: str,
    job_title: str,
    min_password_length: int,
) -> tuple[User, str]:
    """A new account with a one-time password, returned for showing once; it must be changed at
    the first sign-in."""
    password = one_time_password(username, min_password_length)
    user = add(
        actor,
        username=username,
        display_name=display_name,
        organization=organization,
        role=role,
        password=password,
        job_title=job_title,
        min_password_length=min_password_length,
        must_change_password=True,
    )
    return user, password


def reset_password(actor: audit.Actor, username: str, min_length: int) -> tuple[User, str]:
    """A new one-time password (returned for showing once) that must be changed at the next sign-in;
    unlocks the account."""
    password = one_time_password(username, min_length)
    return set_password(actor, username, password, min_length, must_change=True), password


audit.register_action("user.unlock", False)


def unlock(actor: audit.Actor, username: str) -> User:
    """End an account's lock-out and forget its failed sign-ins, keeping its password: for a lock
    that was someone else's doing (every administrator locked out from the network). A password
    that may have been guessed is reset instead (reset_password), which unlocks too."""
    with write():
        user = get(username)
        now = utcnow()
        locked = user.locked_until is not None and user.locked_until > now
        if not locked and not user.failed_logins:
            raise UserError(
                f"{username!r} is not locked and has no failed sign-ins counted: there is nothing to unlock"
            )
        details: dict = {"username": username, "failed_logins": user.failed_logins}
        if locked:
            assert user.locked_until is not None  # checked just above
            details["was_locked_until"] = user.locked_until.isoformat(timespec="seconds") + "Z"
        user.failed_logins = 0
        user.locked_until = None
        user.updated_at = now
        user.save()
        audit.record("user.unlock", actor, objects=[f"user:{user.id}"], details=details)
    return user


# --- the account review (Barstow 466.6(d): accounts of people no longer authorized are deactivated)

STALE_AFTER_DAYS = 90
EXPIRING_WITHIN_DAYS = 30
audit.register_action("user.review", False)


def training_state(user: User, today: dt.date | None = None) -> str:
    """missing | expired | expiring (within EXPIRING_WITHIN_DAYS) | current."""
    today = today or utcnow().date()
    if user.training_completed_on is None:
        return "missing"
    if not user.training_current(today):
        return "expired"
    if user.training_expires_on and user.training_expires_on <= today + dt.timedelta(days=EXPIRING_WITHIN_DAYS):
        return "expiring"
    return "current"


def is_stale(user: User, now: dt.datetime | None = None) -> bool:
    """Not signed in for STALE_AFTER_DAYS, or never signed in and made longer ago than that."""
    cutoff = (now or utcnow()) - dt.timedelta(days=STALE_AFTER_DAYS)
    return (user.last_login_at or user.created_at) < cutoff


@dataclass
class Review:
    stale: list[User]
    training: list[User]
    admins: list[User]

    def usernames(self) -> dict[str, list[str]]:
        return {
            "stale": [u.username for u in self.stale],
            "training": [u.username for u in self.training],
            "admins": [u.username for u in self.admins],
        }


def review(actor: audit.Actor, now: dt.datetime | None = None) -> Review:
    """Active accounts to look at: unused, without current training, and every administrator.
    Looking is itself recorded (who reviewed which accounts, and when)."""
    now = now or utcnow()
    with write():
        active = list(User.select().where(User.active == True).order_by(User.username))  # noqa: E712
        found = Review(
            stale=[u for u in active if is_stale(u, now)],
            training=[u for u in active if training_state(u, now.date()) in ("missing", "expired")],
            admins=[u for u in active if u.role == "admin"],
        )
        audit.record(
            "user.review",
            actor,
            objects=[f"user:{u.id}" for u in active],
            result_count=len(active),
            details=found.usernames(),
        )
    return found


class SignInRefused(Exception):
    """Why a sign-in failed, in words fit to show the person at the keyboard."""


class AddressThrottled(SignInRefused):
    """The client address has failed too many sign-ins lately; `retry_after_s` says when it may try again."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


# One answer for an unknown name, a wrong password and a locked account: a different answer for a
# locked account would tell anyone that the name exists (lock it with five guesses, then look).
REFUSED = (
    "Wrong username or password, or the account is locked after too many failed sign-ins. "
    "Ask the ALPR administrator if you cannot sign in."
)


class FailedSignIns:
    """Failed sign-ins by client address, in this process's memory: the post's web server is one
    process and its threads share one of these (web/auth.py). A restart forgets them, which gives
    each address its allowance again and nothing more: the account lock-out is in the database.

    Only the last `limit` failures of an address are kept, and at most `max_addresses` addresses
    (the oldest forgotten first), so a flood from many addresses cannot grow it without bound."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        """The address's failures within the window (forgetting older ones); the caller holds the lock."""
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def wait_s(self, address: str) -> float:
        """Seconds until the address may try again; 0 when it may now."""
        with self._lock:
            now = self._clock()
            times = self._recent(address, now)
            if len(times) < self.limit:
                return 0.0
            return times[-self.limit] + self.window_s - now

    def has_failed(self, address: str) -> bool:
        """Whether the address has a failed sign-in within the window."""
        with self._lock:
            return bool(self._recent(address, self._clock()))

    def add(self, address: str) -> None:
        with self._lock:
            now = self._clock()
            times = self._failures.get(address)
            if times is None:
                if len(self._failures) >= self.max_addresses:
                    for other in list(self._failures):
                        self._recent(other, now)
                if len(self._failures) >= self.max_addresses:
                    del self._failures[min(self._failures, key=lambda a: self._failures[a][-1])]
                times = self._failures[address] = deque(maxlen=self.limit)
            times.append(now)


def _locked_out(user: User, now: dt.datetime, limit: int, address_failed: bool) -> bool:
    """Whether the account's lock refuses this attempt. The lock holds for every address that has
    failed a sign-in lately; one that has not may still try, so that nobody on the network can keep
    the account's owner out with five guesses from their own machine. `limit` failures more during
    the lock (someone trying from address after address) make it hold for every address."""
    if not (user.locked_until and user.locked_until > now):
        return False
    return address_failed or user.failed_logins >= limit


def _wrong_password(settings, user: User, actor: audit.Actor, reason: str, now: dt.datetime) -> bool:
    """Count a wrong password against the account, lock it at the limit, and record both. Inside the
    caller's write transaction. Returns whether this failure locked the account.

    Locking ends the account's sessions: whoever is guessing may already hold one (a session left
    open on a shared screen), and the owner signs in again from their own address."""
    web = settings.web
    target = [f"user:{user.id}"]
    if user.locked_until and user.locked_until <= now:  # a lock that has run out: counting starts again
        user.locked_until = None
        user.failed_logins = 0
    during_lock = user.locked_until is not None
    user.failed_logins += 1
    locked = user.failed_logins >= web.failed_logins_before_lockout
    if locked:
        user.locked_until = now + dt.timedelta(minutes=web.lockout_minutes)
        end_sessions(user)
        if not during_lock:
            user.failed_logins = 0  # failures from other addresses during the lock count from here
    user.save()
    if locked:
        reason += "; account locked for every address" if during_lock else "; account locked"
    audit.record("auth.login_failed", actor, objects=target, details={"reason": reason})
    if locked:
        assert user.locked_until is not None  # set above when locked
        audit.record(
            "auth.lockout",
            actor,
            objects=target,
            details={
                "until": user.locked_until.isoformat(timespec="seconds") + "Z",
                "addresses": "every address" if during_lock else "those with a failed sign-in",
            },
        )
    return locked


def authenticate(
    settings, username: str, password: str, client_addr: str, addresses: FailedSignIns | None = None
) -> User:
    """Check a sign-in, apply the lock-out rule and record the outcome. Returns the account or
    raises SignInRefused. Unknown names, wrong passwords and locked accounts get the same answer
    (REFUSED) after the same work: every attempt verifies one argon2 hash, a dummy one when there
    is no account or it is locked. Only the right password of a deactivated account is told so.
    The failure is recorded (committed) before the refusal is raised.

    `addresses` is the web server's memory of failed sign-ins by address: an address past
    web.failed_logins_per_address is refused (AddressThrottled) with an answer that depends on the
    address alone and no password checked, and a locked account signs in from an address without
    failures (_locked_out).
    Without it (the CLI: each command is a process of its own, with no memory of the last one) no
    address is throttled and a lock holds for every attempt."""
    username = (username or "").strip().lower()
    now = utcnow()
    limit = settings.web.failed_logins_before_lockout
    wait_s = addresses.wait_s(client_addr) if addresses is not None else 0.0
    address_failed = addresses is None or addresses.has_failed(client_addr)
    refusal: SignInRefused | None = None
    failed = False
    with write():
        user = User.get_or_none(User.username == username)
        actor = audit.Actor(username or "(empty)", user.organization if user else "", client_addr)
        target = [f"user:{user.id}"] if user else []
        if wait_s > 0:
            # The answer depends on the address alone, so it tells nothing about the name; no hash
            # is verified, so a flood from one address costs the post no argon2 work.
            audit.record("auth.login_failed", actor, objects=target, details={"reason": "address throttled"})
            minutes = math.ceil(wait_s / 60)
            refusal = AddressThrottled(
                f"Too many failed sign-ins from this address ({client_addr}): it may try again in {minutes} "
                f"minute{'s' if minutes != 1 else ''}. Sign in from another device meanwhile, and tell the ALPR "
                "administrator if the failed attempts were not yours.",
                math.ceil(wait_s),
            )
        elif user is None:
            _hash_matches(_dummy_hash(), password)
            audit.record("auth.login_failed", actor, details={"reason": "unknown user"})
            refusal, failed = SignInRefused(REFUSED), True
        elif _locked_out(user, now, limit, address_failed):
            _hash_matches(_dummy_hash(), password)
            audit.record("auth.login_failed", actor, objects=target, details={"reason": "locked"})
            refusal, failed = SignInRefused(REFUSED), True
        elif not check_password(user, password):
            _wrong_password(settings, user, actor, "wrong password", now)
            refusal, failed = SignInRefused(REFUSED), True
        elif not user.active:
            audit.record("auth.login_failed", actor, objects=target, details={"reason": "inactive"})
            refusal = SignInRefused("This account is deactivated. Ask the ALPR administrator.")
        else:
            details = None
            if user.locked_until and user.locked_until > now:
                details = {
                    "lock": f"locked until {user.locked_until.isoformat(timespec='seconds')}Z; signed in from an "
                    "address with no failed sign-in, which ends the lock"
                }
            user.failed_logins = 0
            user.locked_until = None
            user.last_login_at = now
            user.save()
            audit.record("auth.login", actor, objects=target, details=details)
    if failed and addresses is not None:
        addresses.add(client_addr)
    if refusal:
        raise refusal
    assert user is not None  # no account is refused above
    return user


def check_current_password(
    settings, user_id: int, password: str, client_addr: str, addresses: FailedSignIns | None = None
) -> str | None:
    """The current password asked for by a password change, held to the sign-in rules: a wrong one
    counts towards the lock-out (which ends this session too) and against the address (`addresses`,
    as at sign-in) and is recorded as a failed sign-in, and a locked account is not checked at all.
    Returns None when it is right, else what to tell the person."""
    now = utcnow()
    with write():
        user = User.get_by_id(user_id)
        actor = actor_for(user, client_addr)
        if user.locked_until and user.locked_until > now:
            _hash_matches(_dummy_hash(), password)
            audit.record(
                "auth.login_failed", actor, objects=[f"user:{user.id}"], details={"reason": "locked; password change"}
            )
            return (
                f"This account is locked after repeated wrong passwords until "
                f"{user.locked_until.strftime('%H:%M UTC')}. Ask the ALPR administrator if you need it sooner."
            )
        if check_password(user, password):
            return None
        locked = _wrong_password(settings, user, actor, "wrong current password at password change", now)
    if addresses is not None:
        addresses.add(client_addr)
    if locked:
        return (
            f"The current password is wrong. Too many wrong passwords: the account is locked for "
            f"{settings.web.lockout_minutes} minutes and signed out everywhere."
        )
    return "The current password is wrong."


def actor_for(user: User, client_addr: str) -> audit.Actor:
    return audit.Actor(user.username, user.organization, client_addr)
